"""`method=task_arithmetic`: base + lambda * sum of task vectors (Ilharco et al. 2023).

A preset of the task-vector merge (`task_vectors.py`): no sparsification, no sign consensus.
"""

from __future__ import annotations

from overparam.checks import number
from overparam.recipes.merge.task_vectors import TaskVectorMerge, run_merge, validate_inputs

PARAMS = "task_arithmetic"


def settings(params) -> TaskVectorMerge:
    return TaskVectorMerge(scale=float(params["lambda"]))


def validate(cfg: dict) -> None:
    """Ingredients and base exist and match; lambda is a number."""
    number(cfg, f"{PARAMS}.lambda")
    validate_inputs(cfg)


def run(cfg, run) -> dict:
    """Add lambda times the sum of the ingredients' task vectors to the base."""
    how = settings(cfg[PARAMS])
    return run_merge(cfg, run, how, {"lambda": how.scale})
