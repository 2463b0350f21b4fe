"""Build a model from its config; initialization depends on the seed alone."""

from __future__ import annotations

import torch
from torch import nn


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int, seed: int,
                trust: bool | None = None) -> nn.Module:
    """Build the registered model `cfg.name` (`factory(input_shape=..., num_classes=..., **options)`) under a seed.

    The factory comes from `overparam.components` by name; `cfg._target_` only has to agree with it
    (an unregistered one needs `trust`, the `--trust` flag by default).
    """
    from overparam.components import resolve

    factory = resolve("model", cfg, trust=trust)
    options = {k: v for k, v in cfg.items() if k not in ("_target_", "name")}
    # fork_rng keeps the caller's global RNG untouched: building a model never shifts data order.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = factory(input_shape=tuple(input_shape), num_classes=int(num_classes), **options)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def output_layer_name(model: nn.Module) -> str:
    """Name of the classifier layer (the last Linear/Conv module), which pruning may treat apart."""
    name = getattr(model, "output_layer", None)
    if name:
        return name
    last = None
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            last = module_name
    if last is None:
        raise ValueError("model has no Linear or Conv layer")
    return last
