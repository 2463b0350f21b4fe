"""`fit`: the training loop every recipe uses.

Exact resume without saving RNG streams: the data order of epoch e is a permutation drawn
from a generator seeded by (data_seed, e), and the global RNG (dropout, augmentation) is
reseeded from (seed, level, step) at the start and at every checkpoint. A run resumed from
any checkpoint therefore replays the same batches and random draws as an uninterrupted run.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from overparam.data.bundle import DataBundle
from overparam.engine.evaluate import evaluate_splits
from overparam.engine.optim import build_optimizer, lr_at, total_steps
from overparam.engine.sharpness import Sharpness
from overparam.errors import UserError
from overparam.store import signals

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FitResult:
    """What a training phase ended with."""

    final: dict[str, dict[str, float]]
    steps: int
    best_step: int
    best: dict[str, dict[str, float]]
    seconds: float
    history: list = field(default_factory=list)

    def flat(self, prefix: str = "") -> dict[str, float]:
        """{"test_accuracy": ..., "val_loss": ..., "early_stop_step": ...} for summaries."""
        out = {f"{prefix}{split}_{name}": value for split, metrics in self.final.items() for name, value in metrics.items()}
        out[f"{prefix}early_stop_step"] = self.best_step
        for split, metrics in self.best.items():
            out[f"{prefix}{split}_accuracy_at_early_stop"] = metrics["accuracy"]
        out[f"{prefix}train_seconds"] = round(self.seconds, 3)
        return out


# Intra-op threads chosen for this process when hardware.threads is unset (see setup_hardware).
_chosen_threads: int | None = None


def forward_macs(model: torch.nn.Module, input_shape) -> int:
    """Multiply-adds of one example's forward, bounded above: a conv's taps times its input's positions."""
    positions = 1
    for size in tuple(input_shape)[1:]:
        positions *= int(size)
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear):
            total += weight.numel()
        elif isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            total += weight.numel() * positions
    return total


def setup_hardware(hardware) -> str:
    """Apply threads/determinism settings; return the device string (clear error if unavailable).

    Threads: `hardware.threads` when set; else the cores this process may use (affinity,
    SLURM_CPUS_PER_TASK), with hardware.deterministic=false only those other processes leave free
    now, never more than PyTorch's own default or a parallel launcher's share
    (`overparam.hardware.default_threads`). `fit` then runs tiny models on one thread.
    """
    global _chosen_threads
    from overparam import hardware as machine

    device = str(hardware.get("device", "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"hardware.device={device} but no CUDA GPU is available here; use hardware=cpu")
    threads = hardware.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
        _chosen_threads = None
    else:
        if _chosen_threads is None:
            # Bit-identical reruns need the same count every time: the load only counts when they are not asked for.
            chosen, _why = machine.default_threads(None, adaptive=not hardware.get("deterministic"))
            _chosen_threads = max(1, min(chosen, torch.get_num_threads()))
        torch.set_num_threads(_chosen_threads)
    if hardware.get("deterministic") and device.startswith("cuda"):
        # PyTorch's CPU kernels are already deterministic at a fixed thread count (the tests
        # check bit-identical CPU runs); the switch costs seconds of start-up, so CUDA only.
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = False
    elif device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _mix(*values: int) -> int:
    mixed = 0x9E3779B97F4A7C15
    for value in values:
        mixed = (mixed ^ (int(value) + 0x9E3779B97F4A7C15 + (mixed << 6) + (mixed >> 2))) & 0xFFFFFFFFFFFF
    return mixed


def epoch_order(num_examples: int, data_seed: int, epoch: int) -> torch.Tensor:
    """The permutation of training examples used in `epoch` (a pure function of its inputs)."""
    generator = torch.Generator().manual_seed(_mix(data_seed, epoch))
    return torch.randperm(num_examples, generator=generator)


def default_loss(model, x, y, step):
    """Cross-entropy of the model's logits."""
    return F.cross_entropy(model(x), y)


def _autocast_loss(loss_fn, model, x, y, step, device, autocast_dtype):
    """`loss_fn` under the run's autocast (SAM's second pass)."""
    if autocast_dtype is None:
        return loss_fn(model, x, y, step)
    with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
        return loss_fn(model, x, y, step)


def plain_line(run, label: str, text: str) -> None:
    """One plain progress line: printed when stdout is not a terminal, and appended to the run's train.log."""
    stamped = f"{time.strftime('%H:%M:%S')} [{label}] {text}"
    if not sys.stdout.isatty():
        print(stamped, flush=True)
    if run is not None and getattr(run, "root", None) is not None:
        from overparam.store.textlog import append_line, log_path

        append_line(log_path(run), stamped)


class _Progress:
    """A rich bar on a terminal; without one (Slurm, CI, nohup) a plain line per phase and per evaluation.

    The plain lines also go to the run's `train.log` (terminal or not), so a run can be followed with
    `tail -f` and its log says afterwards what happened when.
    """

    def __init__(self, label: str, total: int, start: int, run=None, trainable: str = ""):
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty()
        self.every = max(1, total // 200)
        self.t_start = time.perf_counter()
        self.run = run
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, completed=start, info="")
        resumed = f" (resumed at step {start})" if start else ""
        self.line(f"start: {total} steps{resumed}{trainable}")

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


def fit(model: torch.nn.Module, data: DataBundle, run=None, *, train, optim, hardware, seed: int,
        level: Optional[int] = None, tag: str = "train", data_seed: Optional[int] = None,
        loss_fn: Callable = default_loss, step_hook: Optional[Callable] = None,
        params=None, label: Optional[str] = None) -> FitResult:
    """Train `model` on `data` for `train.steps`/`train.epochs`, evaluating and checkpointing on schedule.

    `run` (a store.Run) receives metrics and resume checkpoints named `resume_<tag>` (two alternating
    slots, so a damaged one falls back to the previous); when one exists the phase continues from it.
    `step_hook(step, model, optimizer)` runs after
    every optimizer step (gradual pruning uses it). `params` restricts what the optimizer trains.
    """
    device = str(hardware.get("device", "cpu"))
    precision = str(hardware.get("precision", "fp32"))
    autocast_dtype = AUTOCAST[precision]
    data_seed = seed if data_seed is None else data_seed
    model.to(device)
    num_examples = len(data.train_x)
    total, steps_per_epoch = total_steps(train, num_examples)
    if total <= 0:
        raise UserError(f"training length must be positive, got {total} steps")
    batch_size = int(train["batch_size"])
    if train.get("eval_every"):
        eval_every = int(train["eval_every"])
    else:
        eval_every = max(1, int(round(float(train.get("eval_every_epochs") or 1) * steps_per_epoch)))
    # Resume points: every evaluation and every `checkpoint_every` steps. The RNG is reseeded at
    # each of them whether or not a checkpoint is written there, so how often checkpoints are
    # actually written (a step count, or wall time) never changes the numbers.
    checkpoint_every = int(train.get("checkpoint_every") or 0)
    checkpoint_seconds = float(train.get("checkpoint_seconds") or 0.0)
    # Weight snapshots (kept, unlike resume points) for checkpoint averaging: checkpoints/step_<N>
    # (level_<L>_step_<N> inside a level), the model's state_dict alone.
    snapshot_every = int(train.get("snapshot_every") or 0)
    last_checkpoint_time = time.perf_counter()
    grad_clip = train.get("grad_clip")
    stop_on_nonfinite = bool(train.get("stop_on_nonfinite", True))

    if not hardware.get("threads") and _chosen_threads is not None:
        from overparam import hardware as machine

        torch.set_num_threads(machine.threads_for_model(
            _chosen_threads, forward_macs(model, data.input_shape) * int(train["batch_size"])))
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    optimizer = build_optimizer(trainable, optim)
    scaler = torch.amp.GradScaler(device.split(":")[0]) if precision == "fp16" else None
    # optim.sam / optim.saf (null by default: then None and the loop below is unchanged).
    sharpness = Sharpness.from_config(model, optim, num_examples)
    if sharpness is not None and sharpness.sam and scaler is not None:
        raise UserError("optim.sam=true does not support hardware.precision=fp16; use bf16 or fp32")
    resume_name = f"resume_{tag}"
    step = 0
    best_step, best_loss, best = 0, math.inf, {}
    history: list = []
    elapsed = 0.0
    resumed_loss = (0.0, 0)

    # The newest intact of the phase's two resume slots (a damaged one is reported and skipped).
    state = run.load_resume_point(resume_name) if run is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        best_step, best_loss, best = int(state["best_step"]), float(state["best_loss"]), state["best"]
        history = state.get("history", [])
        elapsed = float(state.get("seconds", 0.0))
        resumed_loss = (float(state.get("running_loss", 0.0)), int(state.get("running_count", 0)))
        if sharpness is not None:
            sharpness.load_state_dict(state.get("sharpness"))
        run.truncate_metrics(level, step)

    def reseed(at_step: int) -> None:
        torch.manual_seed(_mix(seed, -1 if level is None else level, at_step, 17))

    def checkpoint(at_step: int) -> None:
        if run is None:
            return
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": at_step, "best_step": best_step, "best_loss": best_loss, "best": best,
            "history": history, "seconds": elapsed + time.perf_counter() - t_start,
            # The train loss logged at the next evaluation averages over steps on both sides of a resume.
            "running_loss": float(running_loss), "running_count": running_count,
        }
        if sharpness is not None:
            state["sharpness"] = sharpness.state_dict()
        run.save_resume_point(resume_name, state)

    last_results: dict = {}

    def evaluate_now(at_step: int, train_loss: float | None = None) -> dict:
        nonlocal best_step, best_loss, best, last_results
        results = evaluate_splits(model, data, autocast_dtype)
        selection = "val" if "val" in results else "test"
        if results[selection]["loss"] < best_loss:
            best_loss, best_step, best = results[selection]["loss"], at_step, results
        history.append({"step": at_step, **{f"{s}_{k}": v for s, m in results.items() for k, v in m.items()}})
        if run is not None:
            for split, metrics in results.items():
                run.log(at_step, split, metrics, level=level)
        last_results = results
        progress.evaluation(at_step, train_loss, results)
        return results

    t_start = time.perf_counter()
    from overparam.models.counting import effective_count

    trainable_count = effective_count(model, trainable)
    alive_count = effective_count(model, model.parameters())
    progress = _Progress(label or tag, total, step, run,
                         trainable=f", {trainable_count:,} of {alive_count:,} parameters trainable")
    model.train()
    reseed(step)
    if step == 0:
        evaluate_now(0)
    order = None
    order_epoch = -1
    running_loss = torch.full((), resumed_loss[0], device=device)
    running_count = resumed_loss[1]
    finished = False
    # SIGINT/SIGTERM during the loop wait for the end of the step (store.signals): a resume point is
    # written when that step is a resume boundary, then the run stops as `interrupted`.
    deferring = signals.deferred()
    deferring.__enter__()
    try:
        while step < total:
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order = epoch_order(num_examples, data_seed, epoch).to(data.train_x.device)
                order_epoch = epoch
            index = order[position * batch_size:(position + 1) * batch_size]
            x, y = data.train_x[index], data.train_y[index]
            if data.augment is not None:
                x = data.augment(x, None)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, optim)
            if autocast_dtype is not None:
                with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
                    loss = loss_fn(model, x, y, step)
            else:
                loss = loss_fn(model, x, y, step)
            if sharpness is not None:
                loss = sharpness.add_trajectory_term(loss, index, epoch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, float(grad_clip))
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if sharpness is not None:
                    sharpness.second_pass(trainable, lambda: _autocast_loss(loss_fn, model, x, y, step, device,
                                                                            autocast_dtype))
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, float(grad_clip))
                optimizer.step()
            step += 1
            if step_hook is not None:
                step_hook(step, model, optimizer)
            running_loss += loss.detach().float()
            running_count += 1
            progress.update(step)
            if snapshot_every and run is not None and step % snapshot_every == 0:
                prefix = "" if level is None else f"level_{level}_"
                run.save_checkpoint(f"{prefix}step_{step}", {k: v.detach() for k, v in model.state_dict().items()})
            if step % eval_every == 0 or step == total:
                mean_loss = float(running_loss) / max(running_count, 1)
                if stop_on_nonfinite and not math.isfinite(mean_loss):
                    raise FloatingPointError(f"training loss became {mean_loss} by step {step}")
                if run is not None:
                    run.log(step, "train", {"loss": mean_loss}, level=level)
                running_loss.zero_()
                running_count = 0
                results = evaluate_now(step, mean_loss)
                split = "val" if "val" in results else "test"
                progress.update(step, f"{split} acc {results[split]['accuracy']:.3f}")
            at_eval = step % eval_every == 0
            at_interval = bool(checkpoint_every) and step % checkpoint_every == 0
            if at_eval or at_interval or step == total:
                due = (at_interval or step == total or signals.pending() is not None
                       or time.perf_counter() - last_checkpoint_time >= checkpoint_seconds)
                if due:
                    checkpoint(step)
                    last_checkpoint_time = time.perf_counter()
                reseed(step)
            signals.stop_if_requested(False, lambda: None)  # a due resume point was written just above
        finished = True
    finally:
        deferring.__exit__(None, None, None)
        progress.close(step if finished else None)
        if sharpness is not None:
            sharpness.close()
    if not last_results:  # resumed from the final checkpoint: nothing was evaluated in this session
        last_results = evaluate_splits(model, data, autocast_dtype)
    final = {split: dict(metrics) for split, metrics in last_results.items()}
    seconds = elapsed + time.perf_counter() - t_start
    return FitResult(final=final, steps=step, best_step=best_step, best=best, seconds=seconds, history=history)
