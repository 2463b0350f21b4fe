"""`method=breadcrumbs`: model breadcrumbs (Davari & Belilovsky 2024): per layer, drop the largest
`beta` and the smallest `gamma` fraction of |delta| of each task vector, then task arithmetic."""

from __future__ import annotations

from typing import Callable, Iterator

from overparam.recipes.merge import task_arithmetic
from overparam.recipes.merge.sparsify import outliers

PARAMS = "breadcrumbs"


def merge_states(base: dict, ingredients: Callable[[], Iterator[dict]], beta: float, gamma: float, scale: float) -> dict:
    """base + scale * sum_i outliers(delta_i, beta, gamma), per tensor."""
    return task_arithmetic.combine(base, ingredients, scale, lambda key, delta, index: outliers(delta, beta, gamma))


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match (the values: SPECS in merge/params.py)."""
    from overparam.recipes.merge import common

    check = common.validate_refs(cfg)
    common.validate_base(cfg, check)


def run(params, context) -> dict:
    """Drop outliers and the smallest entries of each task vector, then add their scaled sum to the base."""
    cfg, run = context.cfg, context.run
    beta, gamma, scale = params["breadcrumbs.beta"], params["breadcrumbs.gamma"], params["breadcrumbs.lambda"]
    return task_arithmetic.run_task_vector_merge(
        cfg, run, lambda base, ingredients: merge_states(base, ingredients, beta, gamma, scale),
        {"beta": beta, "gamma": gamma, "lambda": scale})
