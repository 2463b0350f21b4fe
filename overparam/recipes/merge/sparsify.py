"""Sparsification of task vectors (delta = fine-tuned - base), shared by TIES, DARE and breadcrumbs.

Each helper takes one tensor and returns a tensor of the same shape with some entries zeroed
(and, for random drops, the survivors rescaled). Keep/drop counts are exact: ties at a threshold
are broken by position, never by `>=` on a value that may repeat.
"""

from __future__ import annotations

import torch


def _rank_mask(values: torch.Tensor, count: int, largest: bool) -> torch.Tensor:
    """Boolean mask of the `count` largest (or smallest) entries of `values` (flat order breaks ties)."""
    flat = values.flatten()
    count = max(0, min(int(count), flat.numel()))
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=values.device)
    if count:
        order = torch.argsort(flat, descending=largest, stable=True)
        mask[order[:count]] = True
    return mask.reshape(values.shape)


def magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the round(density * n) entries of largest |delta| (TIES' trim step), zero the rest."""
    keep = int(round(float(density) * delta.numel()))
    return delta * _rank_mask(delta.abs(), keep, largest=True)


def random_drop(delta: torch.Tensor, drop: float, generator: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """Drop each entry with probability `drop`; rescale survivors by 1/(1-drop) (DARE)."""
    if drop <= 0:
        return delta.clone()
    if drop >= 1:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float64) >= drop
    kept = delta * keep.to(device=delta.device, dtype=delta.dtype)
    return kept / (1.0 - drop) if rescale else kept


def outliers(delta: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Drop the largest `beta` and the smallest `gamma` fraction of |delta| (model breadcrumbs)."""
    n = delta.numel()
    magnitudes = delta.abs()
    top = _rank_mask(magnitudes, int(round(float(beta) * n)), largest=True)
    bottom = _rank_mask(magnitudes, int(round(float(gamma) * n)), largest=False)
    return delta * ~(top | bottom)


def elect_sign(summed: torch.Tensor) -> torch.Tensor:
    """TIES' sign election: the sign of the summed (trimmed) task vectors; 0 where they cancel."""
    return torch.sign(summed)
