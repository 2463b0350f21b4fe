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


def _count(fraction: float, n: int, kept: str) -> int:
    """round(fraction * n), or mergekit's int(fraction * n) with `kept=floor`."""
    return int(float(fraction) * n) if kept == "floor" else int(round(float(fraction) * n))


def rescale_l1(delta: torch.Tensor, kept: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """The kept entries scaled so the tensor keeps its L1 norm (mergekit's `rescale`); unscaled when either
    norm is below `eps`."""
    before, after = delta.abs().sum(), kept.abs().sum()
    return kept if before < eps or after < eps else kept * (before / after)


def magnitude(delta: torch.Tensor, density: float, kept: str = "round") -> torch.Tensor:
    """Keep the round(density * n) entries of largest |delta| (TIES' trim step), zero the rest; `kept=floor`:
    int(density * n) and at least one, as mergekit."""
    if kept == "floor":
        if density >= 1:
            return delta.clone()
        keep = max(1, int(float(density) * delta.numel())) if density > 0 and delta.numel() else 0
    else:
        keep = _count(density, delta.numel(), kept)
    return delta * _rank_mask(delta.abs(), keep, largest=True)


def random_drop(delta: torch.Tensor, density: float, generator: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """Keep each entry with probability `density`, rescale survivors by 1/density (DARE; `rescale=False`: not).

    An entry is dropped when its uniform draw is below 1 - density (the drop probability)."""
    if density >= 1:
        return delta.clone()
    if density <= 0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float64) >= 1.0 - density
    kept = delta * keep.to(device=delta.device, dtype=delta.dtype)
    return kept / density if rescale else kept


def breadcrumbs(delta: torch.Tensor, gamma: float, smallest: float, kept: str = "round") -> torch.Tensor:
    """Drop the round(gamma * n) entries of largest |delta| and the round(smallest * n) of smallest, keep the
    middle (model breadcrumbs; mergekit's magnitude_outliers with density = 1 - gamma - smallest). `kept=floor`:
    mergekit's counts, int(gamma * n) largest dropped and int(density * n) kept above the rest."""
    n = delta.numel()
    magnitudes = delta.abs()
    if kept == "floor":
        density = 1.0 - float(gamma) - float(smallest)
        if density >= 1:
            return delta.clone()
        top_count = int(float(gamma) * n)
        bottom_count = max(0, n - int(density * n) - top_count)
    else:
        top_count, bottom_count = _count(gamma, n, kept), _count(smallest, n, kept)
    top = _rank_mask(magnitudes, top_count, largest=True)
    bottom = _rank_mask(magnitudes, bottom_count, largest=False)
    return delta * ~(top | bottom)


def della(delta: torch.Tensor, density: float, epsilon: float, generator: torch.Generator,
          rescale: str = "inverse") -> torch.Tensor:
    """DELLA's MagPrune (Deep et al. 2024): within each row (the first axis's slices; a vector is one row) the
    entry of magnitude rank r (1 = smallest) of L is kept with probability p = density - epsilon +
    2 epsilon (r - 1) / (L - 1) (a row of one entry: density - epsilon), drawn as uniform < p; survivors
    rescaled by 1/p (`inverse`, the paper), to the tensor's L1 norm (`l1`, mergekit) or not (`none`)."""
    if density >= 1:
        return delta.clone()
    if density <= 0:
        return torch.zeros_like(delta)
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta
    order = torch.argsort(rows.abs(), dim=1, stable=True)
    ranks = torch.argsort(order, dim=1, stable=True).to(torch.float64)
    length = rows.shape[1]
    spread = ranks / (length - 1) if length > 1 else torch.zeros_like(ranks)
    probs = (float(density) - float(epsilon)) + spread * 2 * float(epsilon)
    keep = torch.rand(rows.shape, generator=generator, dtype=torch.float64) < probs.cpu()
    keep = keep.to(device=delta.device, dtype=delta.dtype)
    kept = rows * keep
    if rescale == "inverse":
        kept = kept / probs.to(delta.dtype)
    elif rescale == "l1":
        kept = rescale_l1(rows, kept)
    return kept.reshape(delta.shape)


def _one(delta: torch.Tensor, mode: str, density: float, gamma: float, smallest: float, kept: str,
         rescale: str) -> torch.Tensor:
    if mode == "magnitude":
        out = magnitude(delta, density, kept)
    elif mode == "breadcrumbs":
        out = breadcrumbs(delta, gamma, smallest, kept)
    else:
        raise ValueError(f"unknown sparsify mode {mode!r}")
    return rescale_l1(delta, out) if rescale == "l1" else out


def sparsify_deltas(deltas: dict, mode: str, density: float = 1.0, gamma: float = 0.0, smallest: float = 0.0,
                    scope: str = "tensor", generator_of=None, kept: str = "round", rescale: str = "auto",
                    epsilon: float = 0.0) -> dict:
    """One task vector ({key: delta}) sparsified by `mode`.

    magnitude and breadcrumbs rank |delta| within each tensor (`scope=tensor`) or over the whole task
    vector, its tensors concatenated in key order (`scope=global`, as the TIES paper's code does).
    random and della draw each tensor's entries from `generator_of(key)`; scope does not change them.
    `rescale`: auto (random: 1/density, della: 1/p, the others none) | none | inverse | l1 (the tensor's,
    or with scope=global the whole vector's, L1 norm kept, as mergekit)."""
    if mode == "none":
        return deltas
    if mode == "random":
        if rescale in ("auto", "inverse"):
            return {key: random_drop(delta, density, generator_of(key)) for key, delta in deltas.items()}
        out = {key: random_drop(delta, density, generator_of(key), rescale=False) for key, delta in deltas.items()}
        return {key: rescale_l1(deltas[key], value) for key, value in out.items()} if rescale == "l1" else out
    if mode == "della":
        return {key: della(delta, density, epsilon, generator_of(key), "inverse" if rescale == "auto" else rescale)
                for key, delta in deltas.items()}
    rescale = "none" if rescale in ("auto", "inverse") else rescale
    if scope == "tensor" or not deltas:
        return {key: _one(delta, mode, density, gamma, smallest, kept, rescale) for key, delta in deltas.items()}
    flat = _one(torch.cat([delta.flatten() for delta in deltas.values()]), mode, density, gamma, smallest, kept,
                rescale)
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
