"""`method=ties`: TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean.

1. trim: keep the top `ties.density` fraction of each task vector's entries by |delta|, ranked over the
   whole task vector (`ties.scope=global`, as the paper's code does) or within each tensor (`tensor`);
2. elect: the sign of each entry is the sign of the summed trimmed task vectors (a zero sum takes the
   majority sign of the scope);
3. disjoint mean: average only the trimmed entries that agree with the elected sign.
merged = base + lambda * disjoint mean. A preset of the task-vector merge (`task_vectors.py`).
"""

from __future__ import annotations

from overparam.recipes.merge.task_vectors import TaskVectorMerge, run_merge, validate_inputs

PARAMS = "ties"


def settings(params) -> TaskVectorMerge:
    return TaskVectorMerge(sparsify="magnitude", density=float(params["density"]), consensus="sign",
                           scope=str(params.get("scope") or "global"), scale=float(params["lambda"]))


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match (the values: the Spec in merge/params.py)."""
    validate_inputs(params)


def run(params, context) -> dict:
    """TIES-merge the ingredients' task vectors onto the base."""
    how = settings(params[PARAMS])
    return run_merge(params, context, how, {"density": how.density, "scope": how.scope, "lambda": how.scale})
