"""`method=dare`: DARE (Yu et al. 2024): drop each task-vector entry with probability p, rescale
the survivors by 1/(1-p), then add lambda * their sum to the base (task arithmetic)."""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from overparam.recipes.merge import task_arithmetic
from overparam.recipes.merge.sparsify import random_drop

PARAMS = "dare"


def merge_states(base: dict, ingredients: Callable[[], Iterator[dict]], drop: float, scale: float, seed: int) -> dict:
    """DARE merge: the drop pattern of ingredient i and tensor k is seeded by (seed, i, k)."""
    keys = {key: index for index, key in enumerate(sorted(base))}

    def transform(key: str, delta: torch.Tensor, ingredient: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + ingredient * 10_007 + keys.get(key, 0))
        return random_drop(delta, drop, generator)

    return task_arithmetic.combine(base, ingredients, scale, transform)


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match."""
    from overparam.recipes.merge import common

    check = common.validate_refs(cfg)
    common.validate_base(cfg, check)


def run(params, context) -> dict:
    """Drop-and-rescale every task vector, then add their scaled sum to the base."""
    cfg, run = context.cfg, context.run
    drop, scale = params["dare.drop"], params["dare.lambda"]
    return task_arithmetic.run_task_vector_merge(
        cfg, run, lambda base, ingredients: merge_states(base, ingredients, drop, scale, int(cfg.seed)),
        {"drop": drop, "lambda": scale})
