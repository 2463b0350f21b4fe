"""What the prune methods share: prunable models, scores to masks, ERK, levels, the level cache.

Masks are keyed by parameter name (`fc0.weight`), never by position. Only the weights of
Linear/Conv layers are prunable; biases and normalization layers are never masked. The output
layer is pruned at `prune.output_rate` times the others' rate (0 leaves it dense and outside the
masked layers altogether).
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable

import torch
from torch import nn

from overparam.errors import UserError

from overparam.checks import get  # dotted-key reads, shared with the global checks
# Statistics and printing have a module of their own; recipes call them through `common`.
from overparam.recipes.prune.stats import (  # noqa: F401
    LEVEL_ROW_KEYS, flops_per_example, level_row, mask_statistics, print_level_table)

# The values a config may take are declared with the parameters (torch-free); the recipes read them here.
from overparam.recipes.prune.params import DISTRIBUTIONS, REWIND_PATTERN, SCOPES, parse_rewind  # noqa: F401,E402


def target_count(total: int, sparsity: float) -> int:
    """Weights kept at `sparsity` out of `total` (nearest integer; at least one)."""
    kept = int(math.floor(total * (1.0 - float(sparsity)) + 0.5))
    if kept < 1:
        raise UserError(f"sparsity={sparsity} leaves no weight of the {total} prunable ones")
    return kept


# --- prunable models ------------------------------------------------------------------------------

def output_excluded(cfg) -> bool:
    """True when `prune.output_rate` is 0: the output layer stays dense and is not masked at all."""
    prune = cfg.get("prune") or {}
    rate = prune.get("output_rate", 1.0)
    return rate is not None and float(rate) == 0.0


def make_prunable(model: nn.Module, *, exclude_output: bool) -> nn.Module:
    """`sparsify` every Linear/Conv layer (the output layer too unless excluded); all masks start at one."""
    from overparam.models import output_layer_name
    from overparam.models.masked import sparsify

    exclude = [output_layer_name(model)] if exclude_output else None
    return sparsify(model, exclude=exclude)


def weight_names(model: nn.Module) -> list[str]:
    """Prunable parameter names (`<layer>.weight` of every masked layer), in registration order."""
    from overparam.models.masked import masked_modules

    return [f"{name}.weight" for name in masked_modules(model)]


def output_weight_name(model: nn.Module) -> str | None:
    """`<output layer>.weight` when the output layer is masked, else None."""
    from overparam.models import output_layer_name

    name = f"{output_layer_name(model)}.weight"
    return name if name in weight_names(model) else None


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.weight": weight} of the masked layers (live tensors)."""
    from overparam.models.masked import masked_modules

    return {f"{name}.weight": module.weight for name, module in masked_modules(model).items()}


def magnitude_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    """|w| of every prunable weight."""
    return {name: weight.detach().abs().float().cpu() for name, weight in weights_of(model).items()}


def derived_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A seed for a secondary random draw (a control's init, a random mask) that never equals the run's."""
    digest = hashlib.sha256(f"{int(seed)}/{purpose}/{int(index)}".encode()).hexdigest()
    return int(digest[:12], 16)


# --- counts and selection -------------------------------------------------------------------------

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


def top_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """0/1 mask keeping exactly `count` entries with the highest scores (ties: lower index first)."""
    flat = scores.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.float32)
    if count > 0:
        order = torch.argsort(flat, descending=True, stable=True)
        mask[order[:count]] = 1.0
    return mask.reshape(scores.shape)


def select_masks(scores: dict[str, torch.Tensor], total_keep: int, *, scope: str = "global",
                 fixed: dict[str, int] | None = None, alive: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
    """Masks keeping exactly `total_keep` weights with the highest scores.

    `global`: one threshold over all layers; `layerwise`: the same density in every layer.
    `fixed` pins the count of some layers (the output layer under `prune.output_rate`); `alive`
    (the current masks) keeps pruned weights pruned: a weight is never revived.
    """
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


def masks_for_total(scores: dict[str, torch.Tensor], total_keep: int, *, scope: str, output_name: str | None,
                    output_rate: float, rate: float, alive: dict[str, torch.Tensor] | None = None
                    ) -> dict[str, torch.Tensor]:
    """`select_masks` with the output layer handled by `prune.output_rate` (1: like any other layer)."""
    fixed = None
    if output_name is not None and output_rate != 1.0:
        total = sum(s.numel() for s in scores.values())
        out_size = scores[output_name].numel()
        out_count = output_keep(out_size, output_rate, rate, total_keep / total)
        if alive is not None:
            out_count = min(out_count, int((alive[output_name] != 0).sum()))
        others = total_keep - out_count
        other_capacity = sum(int((alive[n] != 0).sum()) if alive is not None else scores[n].numel()
                             for n in scores if n != output_name)
        # A tiny net whose other layers cannot absorb the rest keeps more output weights instead.
        out_count += max(0, others - other_capacity)
        out_count = min(out_count, total_keep)
        fixed = {output_name: out_count}
    return select_masks(scores, total_keep, scope=scope, fixed=fixed, alive=alive)


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
    """Per-layer kept counts of a random pruning at init: `uniform` (output layer at `output_rate` x the
    rate) or `erk`; the counts always sum to `total_keep`."""
    shapes = {name: tuple(w.shape) for name, w in weights_of(model).items()}
    sizes = {name: int(math.prod(s)) for name, s in shapes.items()}
    if distribution == "erk":
        return erk_counts(shapes, total_keep)
    if distribution != "uniform":
        raise UserError(f"prune.distribution={distribution!r} is not one of: {', '.join(DISTRIBUTIONS)}")
    output_name = output_weight_name(model)
    if output_name is None or output_rate == 1.0:
        return uniform_counts(sizes, total_keep)
    out_count = max(1, min(sizes[output_name], int(math.floor(sizes[output_name] * (1 - sparsity * output_rate) + 0.5))))
    out_count = min(out_count, total_keep)
    rest = {k: v for k, v in sizes.items() if k != output_name}
    others = min(total_keep - out_count, sum(rest.values()))
    counts = uniform_counts(rest, others)
    counts[output_name] = total_keep - others
    return {name: counts[name] for name in sizes}


def apply_masks_by_name(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """`apply_masks` (installs masks and zeroes masked weights)."""
    from overparam.models.masked import apply_masks

    apply_masks(model, masks)


def mask_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Zero optimizer buffers (momentum, Adam moments) of masked weights, so a mask change mid-training
    cannot push a pruned weight away from zero."""
    from overparam.models.masked import masked_modules

    for module in masked_modules(model).values():
        state = optimizer.state.get(module.weight)
        if not state:
            continue
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            buffer = state.get(key)
            if isinstance(buffer, torch.Tensor) and buffer.shape == module.weight_mask.shape:
                buffer.mul_(module.weight_mask)


# --- levels on disk and the level cache: owned by store (re-exported for the recipes) -------------

from overparam.store.levels import (  # noqa: E402,F401
    LEVEL_FILES,
    LevelCache,
    copy_level,
    level_complete,
    level_dir,
    load_level_masks,
    load_level_state,
    read_level_summary,
    read_metric_rows,
    record_level_lineage,
    replay_metrics,
    write_level,
)


def cache_key(config: dict, *, drop: Iterable[str] = ()) -> str:
    """Identity of a level lineage (store.identity's rule: the config hash without `sparsity`)."""
    from overparam.store.identity import level_cache_key

    return level_cache_key(config, drop=drop)


def oneshot_masks(scores: dict[str, torch.Tensor], keep: int, *, scope: str, output_name: str | None,
                  output_rate: float, sparsity: float, alive: dict[str, torch.Tensor] | None = None
                  ) -> dict[str, torch.Tensor]:
    """Masks of a single pruning step to `keep` weights; the output layer loses `sparsity * output_rate`
    of its weights when `output_rate` is not 1, the other layers make up the exact total."""
    if output_name is None or output_rate == 1.0:
        return select_masks(scores, keep, scope=scope, alive=alive)
    out_size = scores[output_name].numel()
    out_count = max(1, min(out_size, int(math.floor(out_size * (1 - sparsity * output_rate) + 0.5))))
    others = sum(s.numel() for n, s in scores.items() if n != output_name)
    out_count = min(max(out_count, keep - others), keep)
    return select_masks(scores, keep, scope=scope, fixed={output_name: out_count}, alive=alive)
