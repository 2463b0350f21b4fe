"""Progress of a training phase: a rich bar on a terminal, plain lines elsewhere and in the run's train.log."""

from __future__ import annotations

import sys
import time


def plain_line(run, label: str, text: str) -> None:
    """One plain progress line: printed when stdout is not a terminal, and appended to the run's train.log."""
    stamped = f"{time.strftime('%H:%M:%S')} [{label}] {text}"
    if not sys.stdout.isatty():
        print(stamped, flush=True)
    if run is not None and getattr(run, "root", None) is not None:
        from overparam.store.textlog import append_line, log_path

        append_line(log_path(run), stamped)


class Progress:
    """A rich bar on a terminal; without one (Slurm, CI, nohup) a plain line per phase and per evaluation.

    The plain lines also go to the run's `train.log` (terminal or not), so a run can be followed with
    `tail -f` and its log says afterwards what happened when.
    """

    def __init__(self, label: str, total: int, start: int, run=None, trainable: str = "", resumed: bool = True):
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty()
        self.every = max(1, total // 200)
        self.t_start = time.perf_counter()
        self.run = run
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, completed=start, info="")
        started = f" ({'resumed' if resumed else 'starting'} at step {start})" if start else ""
        self.line(f"start: {total} steps{started}{trainable}")

    def line(self, text: str) -> None:
        """One plain line: stdout when it is not a terminal, and the run's train.log."""
        plain_line(self.run, self.label, text)

    def update(self, step: int, info: str | None = None) -> None:
        if self.enabled and (step % self.every == 0 or info is not None):
            fields = {"info": info} if info is not None else {}
            self.bar.update(self.task, completed=step, **fields)

    def evaluation(self, step: int, train_loss: float | None, results: dict) -> None:
        """The line of one evaluation: step, train loss, each split's accuracy and loss, seconds so far."""
        parts = [f"step {step}/{self.total}"]
        if train_loss is not None:
            parts.append(f"train_loss {train_loss:.4f}")
        for split, metrics in results.items():
            parts.extend(f"{split}_{name} {value:.4f}" for name, value in metrics.items())
        parts.append(f"{time.perf_counter() - self.t_start:.1f}s")
        self.line("  ".join(parts))

    def close(self, step: int | None = None) -> None:
        if self.enabled:
            self.bar.stop()
        if step is not None:
            self.line(f"done: {step}/{self.total} steps in {time.perf_counter() - self.t_start:.1f}s")
