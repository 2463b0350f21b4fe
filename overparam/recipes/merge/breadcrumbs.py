"""`method=breadcrumbs`: model breadcrumbs (Davari & Belilovsky 2024): per layer, drop the largest
`beta` and the smallest `gamma` fraction of |delta| of each task vector, then task arithmetic."""

from __future__ import annotations

from typing import Callable, Iterator

from overparam.checks import number
from overparam.recipes.merge import task_arithmetic
from overparam.recipes.merge.sparsify import outliers

PARAMS = "breadcrumbs"


def merge_states(base: dict, ingredients: Callable[[], Iterator[dict]], beta: float, gamma: float, scale: float) -> dict:
    """base + scale * sum_i outliers(delta_i, beta, gamma), per tensor."""
    return task_arithmetic.combine(base, ingredients, scale, lambda key, delta, index: outliers(delta, beta, gamma))


def validate(cfg: dict) -> None:
    """Ingredients and base exist and match; beta + gamma < 1."""
    number(cfg, f"{PARAMS}.beta", low=0.0, high=1.0, high_open=True)
    number(cfg, f"{PARAMS}.gamma", low=0.0, high=1.0, high_open=True)
    number(cfg, f"{PARAMS}.lambda")
    from overparam.errors import UserError

    if float(cfg[PARAMS]["beta"]) + float(cfg[PARAMS]["gamma"]) >= 1.0:
        raise UserError(f"{PARAMS}.beta + {PARAMS}.gamma must be below 1 (they would drop every entry)")
    from overparam.recipes.merge import common

    check = common.validate_refs(cfg)
    common.validate_base(cfg, check)


def run(cfg, run) -> dict:
    """Drop outliers and the smallest entries of each task vector, then add their scaled sum to the base."""
    params = cfg[PARAMS]
    beta, gamma, scale = float(params.beta), float(params.gamma), float(params["lambda"])
    return task_arithmetic.run_task_vector_merge(
        cfg, run, lambda base, ingredients: merge_states(base, ingredients, beta, gamma, scale),
        {"beta": beta, "gamma": gamma, "lambda": scale})
