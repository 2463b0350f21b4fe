"""`fit`: the training loop every recipe uses.

Exact resume without saving RNG streams: the data order of epoch e is a permutation drawn
from a generator seeded by (data_seed, e), and the global RNG (dropout, augmentation) is
reseeded from (seed, level, step) at the start and at every resume boundary. A run resumed from
any checkpoint therefore replays the same batches and random draws as an uninterrupted run, and
`fit(start_step=N)` (late rewinding) trains steps N..T exactly as a resume at N would.

Hooks for recipes: `loss_fn(model, x, y, step, index)` gets the batch's example indices into
`data.train_x` (so a teacher's logits are looked up, not recomputed); `on_eval(step, results)`
runs after every evaluation (per-term loss rows line up with fit's own); `step_hook(step, model,
optimizer)` after every optimizer step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from overparam.data.bundle import DataBundle
from overparam.engine.evaluate import cross_entropy, evaluate_splits
from overparam.engine.optim import build_optimizer, lr_at, total_steps
from overparam.engine.sharpness import Sharpness
from overparam.errors import UserError
from overparam.engine.progress import Progress, plain_line
from overparam.store import signals

__all__ = ["FitResult", "Schedule", "default_loss", "epoch_order", "fit", "plain_line", "setup_hardware"]

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
    # A language model applies every Linear at each of an example's tokens.
    tokens = int(input_shape[0]) if getattr(model, "language_model", False) else 1
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear):
            total += weight.numel() * tokens
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


def default_loss(model, x, y, step, index):
    """Cross-entropy of the model's logits (`step` and the example indices `index` are unused)."""
    return cross_entropy(model(x), y)


@dataclass(frozen=True)
class Schedule:
    """When a phase of `total` steps evaluates and where its resume boundaries are (from the `train` config).

    Resume boundaries are every evaluation, every `checkpoint_every` steps and the last step. The RNG
    is reseeded at each of them whether or not a checkpoint is written there, so how often
    checkpoints are actually written (a step count, or wall time) never changes the numbers.
    """

    total: int
    steps_per_epoch: int
    batch_size: int
    eval_every: int
    checkpoint_every: int = 0

    @classmethod
    def of(cls, train, num_examples: int) -> "Schedule":
        total, steps_per_epoch = total_steps(train, num_examples)
        if total <= 0:
            raise UserError(f"training length must be positive, got {total} steps")
        if train.get("eval_every"):
            eval_every = int(train["eval_every"])
        else:
            eval_every = max(1, int(round(float(train.get("eval_every_epochs") or 1) * steps_per_epoch)))
        return cls(total=total, steps_per_epoch=steps_per_epoch, batch_size=int(train["batch_size"]),
                   eval_every=eval_every, checkpoint_every=int(train.get("checkpoint_every") or 0))

    def evaluates(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.total

    def at_interval(self, step: int) -> bool:
        return bool(self.checkpoint_every) and step % self.checkpoint_every == 0

    def boundary(self, step: int) -> bool:
        return step % self.eval_every == 0 or self.at_interval(step) or step == self.total


class _Loop:
    """One training phase: its settings, the state a resume point holds, and the steps that change it."""

    def __init__(self, model: torch.nn.Module, data: DataBundle, run, *, train, optim, hardware, seed: int,
                 level: Optional[int], tag: str, data_seed: Optional[int], loss_fn: Callable,
                 step_hook: Optional[Callable], on_eval: Optional[Callable], trainable, label: Optional[str]):
        self.model, self.data, self.run = model, data, run
        self.device = str(hardware.get("device", "cpu"))
        precision = str(hardware.get("precision", "fp32"))
        self.autocast_dtype = AUTOCAST[precision]
        self.seed, self.level, self.tag, self.label = seed, level, tag, label or tag
        self.data_seed = seed if data_seed is None else data_seed
        self.loss_fn, self.step_hook, self.on_eval = loss_fn, step_hook, on_eval
        model.to(self.device)
        self.num_examples = len(data.train_x)
        self.schedule = Schedule.of(train, self.num_examples)
        self.checkpoint_seconds = float(train.get("checkpoint_seconds") or 0.0)
        # Weight snapshots (kept, unlike resume points) for checkpoint averaging: checkpoints/step_<N>
        # (level_<L>_step_<N> inside a level), the model's state_dict alone.
        self.snapshot_every = int(train.get("snapshot_every") or 0)
        self.grad_clip = train.get("grad_clip")
        self.stop_on_nonfinite = bool(train.get("stop_on_nonfinite", True))
        self.resume_name = f"resume_{tag}"

        if not hardware.get("threads") and _chosen_threads is not None:
            from overparam import hardware as machine

            torch.set_num_threads(machine.threads_for_model(
                _chosen_threads, forward_macs(model, data.input_shape) * self.schedule.batch_size))
        self.trainable = [p for p in (trainable if trainable is not None else model.parameters()) if p.requires_grad]
        self.optimizer = build_optimizer(self.trainable, optim)
        self.optim = optim
        self.scaler = torch.amp.GradScaler(self.device.split(":")[0]) if precision == "fp16" else None
        # optim.sam / optim.saf (null by default: then None and the step is plain).
        self.sharpness = Sharpness.from_config(model, optim, self.num_examples)
        if self.sharpness is not None and self.sharpness.sam and self.scaler is not None:
            raise UserError("optim.sam=true does not support hardware.precision=fp16; use bf16 or fp32")

        # What a resume point holds.
        self.step = 0
        self.best_step, self.best_loss, self.best = 0, math.inf, {}
        self.history: list = []
        self.elapsed = 0.0
        # Sum and count of the train losses since the last evaluation (a tensor: no sync per step).
        self.running_loss = torch.zeros((), device=self.device)
        self.running_count = 0
        self.last_results: dict = {}
        self._order_epoch, self._order = -1, None
        self.resumed = False

    # --- starting point ---------------------------------------------------------------------------
    def resume(self, start_step: int) -> None:
        """Continue from the newest intact resume slot of the phase; without one, start at `start_step`.

        Starting at N is a resume at N without a file: the fresh optimizer's state, no best yet.
        """
        state = self.run.load_resume_point(self.resume_name) if self.run is not None else None
        if state is None:
            if not 0 <= start_step < self.schedule.total:
                raise UserError(f"start step {start_step} is not within the {self.schedule.total} steps of training")
            self.step = self.best_step = int(start_step)
            return
        self.resumed = True
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_step, self.best_loss, self.best = int(state["best_step"]), float(state["best_loss"]), state["best"]
        self.history = state.get("history", [])
        self.elapsed = float(state.get("seconds", 0.0))
        self.running_loss.fill_(float(state.get("running_loss", 0.0)))
        self.running_count = int(state.get("running_count", 0))
        if self.sharpness is not None:
            self.sharpness.load_state_dict(state.get("sharpness"))
        self.run.truncate_metrics(self.level, self.step)

    def reseed(self, at_step: int) -> None:
        torch.manual_seed(_mix(self.seed, -1 if self.level is None else self.level, at_step, 17))

    # --- one step ---------------------------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(x, y, example indices, epoch) of the current step: the epoch's permutation, sliced."""
        schedule = self.schedule
        epoch, position = divmod(self.step, schedule.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order = epoch_order(self.num_examples, self.data_seed, epoch).to(self.data.train_x.device)
            self._order_epoch = epoch
        index = self._order[position * schedule.batch_size:(position + 1) * schedule.batch_size]
        x, y = self.data.train_x[index], self.data.train_y[index]
        if self.data.augment is not None:
            x = self.data.augment(x, None)
        return x, y, index, epoch

    def loss(self, x, y, index) -> torch.Tensor:
        """`loss_fn` under the run's autocast."""
        if self.autocast_dtype is None:
            return self.loss_fn(self.model, x, y, self.step, index)
        with torch.autocast(device_type=self.device.split(":")[0], dtype=self.autocast_dtype):
            return self.loss_fn(self.model, x, y, self.step, index)

    def train_step(self) -> None:
        """One optimizer step (SAM/SAF, the fp16 scaler and gradient clipping included); advances `step`."""
        x, y, index, epoch = self.batch()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.schedule.total, self.optim)
        loss = self.loss(x, y, index)
        if self.sharpness is not None:
            loss = self.sharpness.add_trajectory_term(loss, index, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable, float(self.grad_clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.sharpness is not None:
                self.sharpness.second_pass(self.trainable, lambda: self.loss(x, y, index))
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.trainable, float(self.grad_clip))
            self.optimizer.step()
        self.step += 1
        if self.step_hook is not None:
            self.step_hook(self.step, self.model, self.optimizer)
        self.running_loss += loss.detach().float()
        self.running_count += 1

    # --- evaluation, snapshots, resume points -----------------------------------------------------
    def evaluate(self, train_loss: float | None = None) -> dict:
        """Evaluate every split, log the rows, keep the best (val loss, else test), then `on_eval`."""
        at_step = self.step
        results = evaluate_splits(self.model, self.data, self.autocast_dtype)
        selection = "val" if "val" in results else "test"
        if results[selection]["loss"] < self.best_loss:
            self.best_loss, self.best_step, self.best = results[selection]["loss"], at_step, results
        self.history.append({"step": at_step, **{f"{s}_{k}": v for s, m in results.items() for k, v in m.items()}})
        if self.run is not None:
            for split, metrics in results.items():
                self.run.log(at_step, split, metrics, level=self.level)
        self.last_results = results
        self.progress.evaluation(at_step, train_loss, results)
        if self.on_eval is not None:
            self.on_eval(at_step, results)
        return results

    def log_train_and_evaluate(self) -> None:
        """At an evaluation step: the mean train loss since the last one (nonfinite stops the run), then evaluate."""
        mean_loss = float(self.running_loss) / max(self.running_count, 1)
        if self.stop_on_nonfinite and not math.isfinite(mean_loss):
            raise FloatingPointError(f"training loss became {mean_loss} by step {self.step}")
        if self.run is not None:
            self.run.log(self.step, "train", {"loss": mean_loss}, level=self.level)
        self.running_loss.zero_()
        self.running_count = 0
        results = self.evaluate(mean_loss)
        split = "val" if "val" in results else "test"
        self.progress.update(self.step, f"{split} acc {results[split]['accuracy']:.3f}")

    def snapshot(self) -> None:
        prefix = "" if self.level is None else f"level_{self.level}_"
        self.run.save_checkpoint(f"{prefix}step_{self.step}", {k: v.detach() for k, v in self.model.state_dict().items()})

    def checkpoint(self) -> None:
        """Save the phase's resume point at the current step (a no-op without a run)."""
        if self.run is None:
            return
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step, "best_step": self.best_step, "best_loss": self.best_loss, "best": self.best,
            "history": self.history, "seconds": self.seconds(),
            # The train loss logged at the next evaluation averages over steps on both sides of a resume.
            "running_loss": float(self.running_loss), "running_count": self.running_count,
        }
        if self.sharpness is not None:
            state["sharpness"] = self.sharpness.state_dict()
        self.run.save_resume_point(self.resume_name, state)

    def seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.t_start

    # --- the phase --------------------------------------------------------------------------------
    def train(self) -> FitResult:
        """Train from `step` to the end of the schedule; returns what the phase ended with."""
        from overparam.models.counting import effective_count

        schedule = self.schedule
        self.t_start = time.perf_counter()
        last_checkpoint_time = time.perf_counter()
        trainable_count = effective_count(self.model, self.trainable)
        alive_count = effective_count(self.model, self.model.parameters())
        self.progress = Progress(self.label, schedule.total, self.step, self.run, resumed=self.resumed,
                                 trainable=f", {trainable_count:,} of {alive_count:,} parameters trainable")
        self.model.train()
        self.reseed(self.step)
        if self.step == 0:
            self.evaluate()
        finished = False
        # SIGINT/SIGTERM during the loop wait for the end of the step (store.signals): a resume point is
        # written when that step is a resume boundary, then the run stops as `interrupted`.
        try:
            with signals.deferred():
                while self.step < schedule.total:
                    self.train_step()
                    step = self.step
                    self.progress.update(step)
                    if self.snapshot_every and self.run is not None and step % self.snapshot_every == 0:
                        self.snapshot()
                    if schedule.evaluates(step):
                        self.log_train_and_evaluate()
                    if schedule.boundary(step):
                        due = (schedule.at_interval(step) or step == schedule.total or signals.pending() is not None
                               or time.perf_counter() - last_checkpoint_time >= self.checkpoint_seconds)
                        if due:
                            self.checkpoint()
                            last_checkpoint_time = time.perf_counter()
                        self.reseed(step)
                    signals.stop_if_requested(False, lambda: None)  # a due resume point was written just above
                finished = True
        finally:
            self.progress.close(self.step if finished else None)
            if self.sharpness is not None:
                self.sharpness.close()
        if not self.last_results:  # resumed from the final checkpoint: nothing was evaluated in this session
            self.last_results = evaluate_splits(self.model, self.data, self.autocast_dtype)
        final = {split: dict(metrics) for split, metrics in self.last_results.items()}
        return FitResult(final=final, steps=self.step, best_step=self.best_step, best=self.best,
                         seconds=self.seconds(), history=self.history)


def fit(model: torch.nn.Module, data: DataBundle, run=None, *, train, optim, hardware, seed: int,
        level: Optional[int] = None, tag: str = "train", data_seed: Optional[int] = None,
        loss_fn: Callable = default_loss, step_hook: Optional[Callable] = None,
        on_eval: Optional[Callable] = None, start_step: int = 0,
        trainable=None, label: Optional[str] = None) -> FitResult:
    """Train `model` on `data` for `train.steps`/`train.epochs`, evaluating and checkpointing on schedule.

    `run` (a store.Run) receives metrics and resume checkpoints named `resume_<tag>` (two alternating
    slots, so a damaged one falls back to the previous); when one exists the phase continues from it.
    `start_step=N` otherwise starts the schedule (learning rate, data order, reseeding, evaluation and
    checkpoint boundaries) at step N as a resume at N would, with a fresh optimizer and no file written.
    `loss_fn(model, x, y, step, index)` gives the loss of a batch (`index`: its rows of `data.train_x`);
    `on_eval(step, results)` runs after every evaluation; `step_hook(step, model, optimizer)` after every
    optimizer step (gradual pruning uses it). `trainable` (torch parameters) restricts what the optimizer trains.
    """
    loop = _Loop(model, data, run, train=train, optim=optim, hardware=hardware, seed=seed, level=level, tag=tag,
                 data_seed=data_seed, loss_fn=loss_fn, step_hook=step_hook, on_eval=on_eval, trainable=trainable,
                 label=label)
    loop.resume(int(start_step))
    return loop.train()
