"""Scores to masks: the one place where a prune method turns per-weight scores into 0/1 masks.

`select_masks` is the entry point every method uses (IMP's rounds, one-shot pruning, SNIP, GraSP,
SynFlow's rounds, SMS): it keeps exactly `keep` weights with the highest scores, over all layers
(`global`) or at one density per layer (`layerwise`), never revives a pruned weight, and prunes the
output layer at `output_rate` times the others' rate. The output layer's count follows one of two
laws: IMP's per-round law when `rate` (prune.rate) is given, a single step's otherwise.

Random masks (the lottery-ticket controls, random pruning at init) draw exact per-layer counts,
uniform or Erdos-Renyi-Kernel (ERK).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from overparam.errors import UserError
from overparam.recipes.shared.prunable import output_weight_name, weights_of
from overparam.recipes.shared.choices import DISTRIBUTIONS, SCOPES

# --- counts ---------------------------------------------------------------------------------------

def round_to_total(quotas: dict[str, float], total: int, caps: dict[str, int]) -> dict[str, int]:
    """Integer counts near `quotas` that sum exactly to `total` (largest remainders first), each <= its cap."""
    counts = {k: min(caps[k], max(0, int(math.floor(q)))) for k, q in quotas.items()}
    missing = total - sum(counts.values())
    order = sorted(quotas, key=lambda k: (-(quotas[k] - math.floor(quotas[k])), list(quotas).index(k)))
    while missing > 0:
        progressed = False
        for key in order:
            if missing == 0:
                break
            if counts[key] < caps[key]:
                counts[key] += 1
                missing -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"cannot place {total} weights in layers of {sum(caps.values())}")
    while missing < 0:
        for key in reversed(order):
            if missing == 0:
                break
            if counts[key] > 0:
                counts[key] -= 1
                missing += 1
    return counts



def uniform_counts(sizes: dict[str, int], total: int) -> dict[str, int]:
    """The same density in every layer, rounded so the counts sum exactly to `total`."""
    whole = sum(sizes.values())
    return round_to_total({k: n * total / whole for k, n in sizes.items()}, total, dict(sizes))



def erk_counts(shapes: dict[str, tuple[int, ...]], total: int) -> dict[str, int]:
    """Erdos-Renyi-Kernel: density of a layer proportional to sum(shape)/prod(shape), capped at 1, summing to `total`."""
    sizes = {k: int(math.prod(s)) for k, s in shapes.items()}
    raw = {k: sum(s) / math.prod(s) for k, s in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = total - sum(sizes[k] for k in dense)
        scalable = sum(raw[k] * sizes[k] for k in sizes if k not in dense)
        epsilon = budget / scalable if scalable else 0.0
        saturated = {k for k in sizes if k not in dense and epsilon * raw[k] > 1.0}
        if not saturated:
            break
        dense |= saturated
    quotas = {k: float(sizes[k]) if k in dense else epsilon * raw[k] * sizes[k] for k in sizes}
    return round_to_total(quotas, total, sizes)



# --- the output layer's count ---------------------------------------------------------------------

def output_keep(output_size: int, output_rate: float, rate: float, remaining_fraction: float) -> int:
    """Weights the output layer keeps when the whole net keeps `remaining_fraction`.

    IMP prunes the output layer at `rate * output_rate` per round while the others lose `rate`;
    after L rounds its density is (1 - rate*output_rate)^L where the net's is (1 - rate)^L. The same
    relation at any remaining fraction (a fractional number of rounds) gives the exact-target level.
    """
    if remaining_fraction >= 1.0:
        return output_size
    exponent = math.log(1.0 - rate * output_rate) / math.log(1.0 - rate)
    return max(1, min(output_size, int(math.floor(output_size * remaining_fraction ** exponent + 0.5))))




def output_count(output_size: int, keep: int, total: int, *, output_rate: float, rate: float | None = None,
                 sparsity: float | None = None) -> int:
    """Weights the output layer keeps when the net keeps `keep` of `total`.

    With `rate` (IMP's prune.rate): the per-round law of `output_keep`. Without it, a single step to
    `sparsity` (default 1 - keep/total) removes `sparsity * output_rate` of the output layer.
    """
    if rate is not None:
        return output_keep(output_size, output_rate, rate, keep / total)
    sparsity = 1.0 - keep / total if sparsity is None else sparsity
    return max(1, min(output_size, int(math.floor(output_size * (1 - sparsity * output_rate) + 0.5))))


# --- selection ------------------------------------------------------------------------------------

def top_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """0/1 mask keeping exactly `count` entries with the highest scores (ties: lower index first)."""
    flat = scores.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.float32)
    if count > 0:
        order = torch.argsort(flat, descending=True, stable=True)
        mask[order[:count]] = 1.0
    return mask.reshape(scores.shape)



def _select(scores: dict[str, torch.Tensor], total_keep: int, scope: str, fixed: dict[str, int] | None,
            alive: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Exactly `total_keep` highest scores, with the counts of the layers in `fixed` pinned."""
    fixed = dict(fixed or {})
    prepared = {}
    for name, score in scores.items():
        score = score.detach().double().cpu().clone()
        score[torch.isnan(score)] = -math.inf
        if alive is not None:
            score[alive[name].cpu() == 0] = -math.inf
        prepared[name] = score
    masks = {name: top_mask(prepared[name], count) for name, count in fixed.items()}
    rest = [name for name in prepared if name not in fixed]
    rest_keep = total_keep - sum(fixed.values())
    if rest_keep < 0:
        raise ValueError(f"fixed layer counts {sum(fixed.values())} exceed the {total_keep} weights kept")
    if not rest:
        return masks
    if scope == "layerwise":
        caps = {n: int((alive[n] != 0).sum()) if alive is not None else prepared[n].numel() for n in rest}
        original = {n: prepared[n].numel() for n in rest}
        # The same density of the original size everywhere (layerwise IMP prunes each layer at one rate).
        counts = round_to_total({n: original[n] * rest_keep / sum(original.values()) for n in rest}, rest_keep, caps)
        masks.update({n: top_mask(prepared[n], counts[n]) for n in rest})
    elif scope == "global":
        flat = torch.cat([prepared[n].reshape(-1) for n in rest])
        keep = top_mask(flat, rest_keep)
        offset = 0
        for name in rest:
            numel = prepared[name].numel()
            masks[name] = keep[offset:offset + numel].reshape(prepared[name].shape)
            offset += numel
    else:
        raise UserError(f"prune.scope={scope!r} is not one of: {', '.join(SCOPES)}")
    return {name: masks[name] for name in scores}




def select_masks(scores: dict[str, torch.Tensor], keep: int, *, scope: str = "global",
                 output_name: str | None = None, output_rate: float = 1.0, rate: float | None = None,
                 sparsity: float | None = None, alive: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
    """0/1 masks keeping exactly `keep` weights with the highest scores (NaN scores lowest).

    `scope`: `global` (one threshold over all layers) or `layerwise` (the same density of the
    original size in every layer). `alive` (the current masks) keeps pruned weights pruned.
    `output_name`/`output_rate`: the output layer is pruned at `output_rate` x the others' rate
    (1: like any other layer), by IMP's per-round law when `rate` is given, else in one step to
    `sparsity` (default 1 - keep/total); the other layers make up the exact total.
    """
    if output_name is None or output_rate == 1.0:
        return _select(scores, keep, scope, None, alive)
    total = sum(s.numel() for s in scores.values())
    out_count = output_count(scores[output_name].numel(), keep, total, output_rate=output_rate, rate=rate,
                             sparsity=sparsity)
    if rate is not None:
        if alive is not None:
            out_count = min(out_count, int((alive[output_name] != 0).sum()))
        other_capacity = sum(int((alive[n] != 0).sum()) if alive is not None else scores[n].numel()
                             for n in scores if n != output_name)
        # A tiny net whose other layers cannot absorb the rest keeps more output weights instead.
        out_count += max(0, keep - out_count - other_capacity)
        out_count = min(out_count, keep)
    else:
        others = total - scores[output_name].numel()
        out_count = min(max(out_count, keep - others), keep)
    return _select(scores, keep, scope, {output_name: out_count}, alive)


# --- random masks ---------------------------------------------------------------------------------

def random_masks(counts: dict[str, int], shapes: dict[str, tuple[int, ...]], generator: torch.Generator
                 ) -> dict[str, torch.Tensor]:
    """Masks with exactly `counts[name]` ones at uniformly random positions per layer."""
    masks = {}
    for name, count in counts.items():
        numel = int(math.prod(shapes[name]))
        mask = torch.zeros(numel)
        mask[torch.randperm(numel, generator=generator)[:count]] = 1.0
        masks[name] = mask.reshape(shapes[name])
    return masks




def distribution_counts(model: nn.Module, total_keep: int, distribution: str, output_rate: float,
                        sparsity: float) -> dict[str, int]:
    """Per-layer kept counts of a random pruning: `uniform` (the output layer at `output_rate` x the
    rate, in one step to `sparsity`) or `erk`; the counts always sum to `total_keep`."""
    shapes = {name: tuple(w.shape) for name, w in weights_of(model).items()}
    sizes = {name: int(math.prod(s)) for name, s in shapes.items()}
    if distribution == "erk":
        return erk_counts(shapes, total_keep)
    if distribution != "uniform":
        raise UserError(f"prune.distribution={distribution!r} is not one of: {', '.join(DISTRIBUTIONS)}")
    output_name = output_weight_name(model)
    if output_name is None or output_rate == 1.0:
        return uniform_counts(sizes, total_keep)
    out_count = output_count(sizes[output_name], total_keep, sum(sizes.values()), output_rate=output_rate,
                             sparsity=sparsity)
    out_count = min(out_count, total_keep)
    rest = {k: v for k, v in sizes.items() if k != output_name}
    others = min(total_keep - out_count, sum(rest.values()))
    counts = uniform_counts(rest, others)
    counts[output_name] = total_keep - others
    return {name: counts[name] for name in sizes}
