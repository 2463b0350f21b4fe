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
    optimizer_class = resolve("optimizer", {"name": name}, trust=False)
    if name == "sgd":
        momentum = float(optim.get("momentum") or 0.0)
        return optimizer_class(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=bool(optim.get("nesterov")) and momentum > 0)
    betas = tuple(float(b) for b in optim.get("betas", (0.9, 0.999)))
    return optimizer_class(params, lr=lr, betas=betas, weight_decay=weight_decay)


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
