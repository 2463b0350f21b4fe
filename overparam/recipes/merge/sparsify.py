"""Sparsification of task vectors (delta = fine-tuned - base) and TIES' sign election.

Each sparsifier takes one tensor and returns a tensor of the same shape with some entries zeroed
(and, for random drops, the survivors rescaled). Keep/drop counts are exact: ties at a threshold
are broken by position, never by `>=` on a value that may repeat. `sparsify_deltas` applies one to a
whole task vector, per tensor (`scope=tensor`) or over all its tensors flattened into one (`global`).
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


def random_drop(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability `density`, rescale survivors by 1/density (DARE).

    An entry is dropped when its uniform draw is below 1 - density (the drop probability)."""
    if density >= 1:
        return delta.clone()
    if density <= 0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float64) >= 1.0 - density
    return delta * keep.to(device=delta.device, dtype=delta.dtype) / density


def breadcrumbs(delta: torch.Tensor, gamma: float, smallest: float) -> torch.Tensor:
    """Drop the round(gamma * n) entries of largest |delta| and the round(smallest * n) of smallest, keep the
    middle (model breadcrumbs; mergekit's magnitude_outliers with density = 1 - gamma - smallest)."""
    n = delta.numel()
    magnitudes = delta.abs()
    top = _rank_mask(magnitudes, int(round(float(gamma) * n)), largest=True)
    bottom = _rank_mask(magnitudes, int(round(float(smallest) * n)), largest=False)
    return delta * ~(top | bottom)


def _one(delta: torch.Tensor, mode: str, density: float, gamma: float, smallest: float) -> torch.Tensor:
    if mode == "magnitude":
        return magnitude(delta, density)
    if mode == "breadcrumbs":
        return breadcrumbs(delta, gamma, smallest)
    raise ValueError(f"unknown sparsify mode {mode!r}")


def sparsify_deltas(deltas: dict, mode: str, density: float = 1.0, gamma: float = 0.0, smallest: float = 0.0,
                    scope: str = "tensor", generator_of=None) -> dict:
    """One task vector ({key: delta}) sparsified by `mode`.

    magnitude and breadcrumbs rank |delta| within each tensor (`scope=tensor`) or over the whole task
    vector, its tensors concatenated in key order (`scope=global`, as the TIES paper's code does).
    random draws each tensor's entries from `generator_of(key)`; scope does not change it."""
    if mode == "none":
        return deltas
    if mode == "random":
        return {key: random_drop(delta, density, generator_of(key)) for key, delta in deltas.items()}
    if scope == "tensor" or not deltas:
        return {key: _one(delta, mode, density, gamma, smallest) for key, delta in deltas.items()}
    flat = _one(torch.cat([delta.flatten() for delta in deltas.values()]), mode, density, gamma, smallest)
    out, start = {}, 0
    for key, delta in deltas.items():
        out[key] = flat[start:start + delta.numel()].reshape(delta.shape)
        start += delta.numel()
    return out


def elect_signs(summed: dict, scope: str = "tensor") -> dict:
    """TIES' sign election: the sign of each entry of the summed (sparsified) task vectors. Where the sum
    is exactly zero, the majority sign of the elected signs within the scope (a tensor, or the whole task
    vector) takes its place, as in the paper's code (`resolve_zero_signs(..., "majority")`)."""
    signs = {key: torch.sign(value) for key, value in summed.items()}
    if scope == "global":
        majority = torch.sign(torch.stack([sign.sum() for sign in signs.values()]).sum()) if signs else None
        majorities = {key: majority for key in signs}
    else:
        majorities = {key: torch.sign(sign.sum()) for key, sign in signs.items()}
    return {key: torch.where(sign == 0, majorities[key].to(sign), sign) for key, sign in signs.items()}
