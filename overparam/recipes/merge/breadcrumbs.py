"""`method=breadcrumbs`: model breadcrumbs (Davari & Belilovsky 2024): per layer, drop the largest
`beta` and the smallest `gamma` fraction of |delta| of each task vector, then task arithmetic.

A preset of the task-vector merge (`task_vectors.py`): breadcrumbs sparsification per tensor (its
`gamma` is this preset's `beta`, and its density 1 - beta - gamma).
"""

from __future__ import annotations

from overparam.checks import number
from overparam.errors import UserError
from overparam.recipes.merge.task_vectors import TaskVectorMerge, run_merge, validate_inputs

PARAMS = "breadcrumbs"


def settings(params) -> TaskVectorMerge:
    beta, gamma = float(params["beta"]), float(params["gamma"])
    return TaskVectorMerge(sparsify="breadcrumbs", density=1.0 - beta - gamma, gamma=beta, smallest=gamma,
                           scale=float(params["lambda"]))


def validate(cfg: dict) -> None:
    """Ingredients and base exist and match; beta + gamma < 1."""
    number(cfg, f"{PARAMS}.beta", low=0.0, high=1.0, high_open=True)
    number(cfg, f"{PARAMS}.gamma", low=0.0, high=1.0, high_open=True)
    number(cfg, f"{PARAMS}.lambda")
    if float(cfg[PARAMS]["beta"]) + float(cfg[PARAMS]["gamma"]) >= 1.0:
        raise UserError(f"{PARAMS}.beta + {PARAMS}.gamma must be below 1 (they would drop every entry)")
    validate_inputs(cfg)


def run(cfg, run) -> dict:
    """Drop outliers and the smallest entries of each task vector, then add their scaled sum to the base."""
    params = cfg[PARAMS]
    how = settings(params)
    return run_merge(cfg, run, how, {"beta": float(params.beta), "gamma": float(params.gamma), "lambda": how.scale})
