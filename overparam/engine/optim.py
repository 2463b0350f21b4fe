"""Optimizers and learning-rate schedules (a pure function of the step: nothing to checkpoint)."""

from __future__ import annotations

import math

import torch

from overparam.errors import UserError


def total_steps(train, num_examples: int) -> tuple[int, int]:
    """(total steps, steps per epoch) from `train.steps` or `train.epochs`."""
    batch_size = int(train["batch_size"])
    steps_per_epoch = max(1, math.ceil(num_examples / batch_size))
    if train.get("steps") is not None:
        return int(train["steps"]), steps_per_epoch
    return int(round(float(train["epochs"]) * steps_per_epoch)), steps_per_epoch


def build_optimizer(params, optim) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW from an `optim` config."""
    name = str(optim["name"]).lower()
    lr = float(optim["lr"])
    weight_decay = float(optim.get("weight_decay") or 0.0)
    from overparam.components import REGISTRIES, resolve

    if name not in REGISTRIES["optimizer"]:
        raise UserError(f"optim.name={name!r} is not one of: {', '.join(REGISTRIES['optimizer'])}")
    # By name only: an optimizer config has no _target_ to follow.
    optimizer_class = without_dynamo(resolve("optimizer", {"name": name}, trust=False))
    if name == "sgd":
        momentum = float(optim.get("momentum") or 0.0)
        return optimizer_class(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=bool(optim.get("nesterov")) and momentum > 0)
    betas = tuple(float(b) for b in optim.get("betas", (0.9, 0.999)))
    return optimizer_class(params, lr=lr, betas=betas, weight_decay=weight_decay)


_EAGER_CLASSES: dict[type, type] = {}
# Optimizer methods torch wraps so that torch.compile does not trace into them; the wrapper
# imports torch._dynamo at its first call (about 1.4 s, a third of a short run's start-up).
_DYNAMO_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def without_dynamo(optimizer_class: type) -> type:
    """`optimizer_class` with the same methods minus their torch._dynamo import: same numbers, same state.

    Outside torch.compile (this project compiles nothing) torch's wrappers only import torch._dynamo
    and call the method; `step`'s wrapper also turns gradients off (unless `differentiable=True`,
    which keeps torch's own step). Step hooks and the profiler label are kept: torch.optim adds them
    to any subclass. The class keeps its name, so messages and profiles read as before.
    """
    import inspect

    if optimizer_class in _EAGER_CLASSES:
        return _EAGER_CLASSES[optimizer_class]
    body = {name: inspect.unwrap(getattr(optimizer_class, name)) for name in _DYNAMO_GUARDED}
    plain_step = inspect.unwrap(optimizer_class.step)

    def step(self, closure=None):
        if self.defaults.get("differentiable"):
            return optimizer_class.step(self, closure)
        with torch.no_grad():
            return plain_step(self, closure)

    body.update(step=step, __module__=optimizer_class.__module__, __qualname__=optimizer_class.__qualname__,
                __doc__=optimizer_class.__doc__)
    _EAGER_CLASSES[optimizer_class] = type(optimizer_class.__name__, (optimizer_class,), body)
    return _EAGER_CLASSES[optimizer_class]


def lr_at(step: int, total: int, optim) -> float:
    """Learning rate at `step` of `total`: linear warm-up, then constant/step/cosine/linear decay."""
    base = float(optim["lr"])
    warmup = int(optim.get("warmup_steps") or 0)
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    schedule = str(optim.get("schedule") or "constant")
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return base * (1.0 - progress)
    if schedule == "step":
        factor = 1.0
        for milestone in optim.get("milestones") or ():
            if progress >= float(milestone):
                factor *= float(optim.get("gamma", 0.1))
        return base * factor
    raise UserError(f"optim.schedule={schedule!r} is not one of: constant, step, cosine, linear")
