"""`method=ties`: TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean.

1. trim: keep the top `ties.density` fraction of each task vector's entries by |delta| (per tensor);
2. elect: the sign of each entry is the sign of the summed trimmed task vectors;
3. disjoint mean: average only the trimmed entries that agree with the elected sign.
merged = base + lambda * disjoint mean. Two streaming passes over the ingredients.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from overparam.recipes.merge import common
from overparam.recipes.merge.sparsify import elect_sign, magnitude
from overparam.recipes.merge.task_arithmetic import run_task_vector_merge

PARAMS = "ties"


def _trimmed(base: dict, state: dict, density: float) -> Iterator[tuple[str, torch.Tensor]]:
    for key, value in state.items():
        if common.is_averaged(key, value):
            yield key, magnitude(value.double() - base[key].double().to(value.device), density)


def merge_states(base: dict, ingredients: Callable[[], Iterator[dict]], density: float, scale: float) -> dict:
    """TIES merge of streamed ingredients onto `base`."""
    summed: dict = {}
    carried: dict = {}
    for state in ingredients():
        carried.update({k: v.clone() for k, v in state.items() if not common.is_averaged(k, v) and k not in carried})
        for key, delta in _trimmed(base, state, density):
            summed[key] = delta if key not in summed else summed[key] + delta
    signs = {key: elect_sign(value) for key, value in summed.items()}
    del summed
    agreeing_sum: dict = {}
    agreeing_count: dict = {}
    for state in ingredients():
        for key, delta in _trimmed(base, state, density):
            agrees = (torch.sign(delta) == signs[key]) & (delta != 0)
            part = delta * agrees
            agreeing_sum[key] = part if key not in agreeing_sum else agreeing_sum[key] + part
            agreeing_count[key] = agrees.double() if key not in agreeing_count else agreeing_count[key] + agrees
    merged = {}
    for key, total in agreeing_sum.items():
        mean = total / agreeing_count[key].clamp(min=1)
        merged[key] = base[key].double().to(mean.device) + scale * mean
    merged.update(carried)
    return common.finish_state(merged, like=base)


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match."""
    check = common.validate_refs(cfg)
    common.validate_base(cfg, check)


def run(params, context) -> dict:
    """TIES-merge the ingredients' task vectors onto the base."""
    cfg, run = context.cfg, context.run
    density, scale = params["ties.density"], params["ties.lambda"]
    return run_task_vector_merge(cfg, run, lambda base, ingredients: merge_states(base, ingredients, density, scale),
                                 {"density": density, "lambda": scale})
