"""`method=breadcrumbs`: model breadcrumbs (Davari & Belilovsky 2024): per layer, drop the largest
`beta` and the smallest `gamma` fraction of |delta| of each task vector, then task arithmetic.

A preset of the task-vector merge (`task_vectors.py`): breadcrumbs sparsification per tensor (its
`gamma` is this preset's `beta`, and its density 1 - beta - gamma).
"""

from __future__ import annotations

from overparam.recipes.merge.task_vectors import TaskVectorMerge, run_merge, validate_inputs

PARAMS = "breadcrumbs"


def settings(params) -> TaskVectorMerge:
    beta, gamma = float(params["beta"]), float(params["gamma"])
    return TaskVectorMerge(sparsify="breadcrumbs", density=1.0 - beta - gamma, gamma=beta, smallest=gamma,
                           scale=float(params["lambda"]))


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match (the values: the Spec in merge/params.py)."""
    validate_inputs(params)


def run(params, context) -> dict:
    """Drop outliers and the smallest entries of each task vector, then add their scaled sum to the base."""
    how = settings(params[PARAMS])
    return run_merge(params, context, how, {"beta": float(params["breadcrumbs.beta"]),
                                            "gamma": float(params["breadcrumbs.gamma"]),
                                     "lambda": how.scale})
