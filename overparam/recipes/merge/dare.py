"""`method=dare`: DARE (Yu et al. 2024): drop each task-vector entry with probability p, rescale
the survivors by 1/(1-p), then add lambda * their sum to the base (task arithmetic).

A preset of the task-vector merge (`task_vectors.py`): random sparsification at density 1 - p.
"""

from __future__ import annotations

from overparam.recipes.merge.task_vectors import TaskVectorMerge, run_merge, validate_inputs

PARAMS = "dare"


def settings(params, seed: int) -> TaskVectorMerge:
    """The drop pattern of ingredient i and tensor k is seeded by (seed, i, k)."""
    return TaskVectorMerge(sparsify="random", density=1.0 - float(params["drop"]), scale=float(params["lambda"]),
                           seed=int(seed))


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match (the values: the Spec in merge/params.py)."""
    validate_inputs(params)


def run(params, context) -> dict:
    """Drop-and-rescale every task vector, then add their scaled sum to the base."""
    how = settings(params[PARAMS], context.seed)
    return run_merge(params, context, how, {"drop": float(params["dare.drop"]), "lambda": how.scale})
