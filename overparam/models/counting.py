"""Honest parameter counts: a weight entry that a mask holds at zero is neither alive nor trainable."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def _masks_by_parameter(model: nn.Module) -> dict[int, torch.Tensor]:
    # A layer keeps the mask of its parameter `<name>` as `<name>_mask` (MaskedLinear's weight_mask,
    # SparseDelta's delta_mask): keyed by name, never by position, as everywhere in the project.
    masks: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            mask = getattr(module, f"{name}_mask", None)
            if isinstance(mask, torch.Tensor) and mask.shape == parameter.shape:
                masks[id(parameter)] = mask
    return masks


def effective_count(model: nn.Module, params: Iterable[nn.Parameter]) -> int:
    """Entries of `params` that can change: a masked parameter counts its mask's nonzeros, others all entries."""
    masks = _masks_by_parameter(model)
    total = 0
    seen: set[int] = set()
    for parameter in params:
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        mask = masks.get(id(parameter))
        total += int(mask.count_nonzero()) if mask is not None else parameter.numel()
    return total


def trainable_summary(model: nn.Module, params: Iterable[nn.Parameter] | None = None) -> dict[str, int]:
    """{"trainable_parameters": what the optimizer can move, "parameters_alive": every unmasked entry}."""
    chosen = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    return {"trainable_parameters": effective_count(model, chosen),
            "parameters_alive": effective_count(model, model.parameters())}
