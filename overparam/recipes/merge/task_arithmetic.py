"""`method=task_arithmetic`: base + lambda * sum of task vectors (Ilharco et al. 2023).

A preset of the task-vector merge (`task_vectors.py`): no sparsification, no sign consensus.
"""

from __future__ import annotations

from overparam.recipes.merge.task_vectors import TaskVectorMerge, run_merge, validate_inputs

PARAMS = "task_arithmetic"


def settings(params) -> TaskVectorMerge:
    return TaskVectorMerge(scale=float(params["lambda"]))


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match (the values: the Spec in merge/params.py)."""
    validate_inputs(params)


def run(params, context) -> dict:
    """Add lambda times the sum of the ingredients' task vectors to the base."""
    how = settings(params[PARAMS])
    return run_merge(params, context, how, {"lambda": how.scale})
