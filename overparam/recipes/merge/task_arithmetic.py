"""`method=task_arithmetic`: base + lambda * sum of task vectors (Ilharco et al. 2023).

Also the shared driver of TIES, DARE and breadcrumbs: each only changes how a task vector is
sparsified before it is added (`overparam.recipes.merge.sparsify`).
"""

from __future__ import annotations

from typing import Callable, Iterator

from overparam.recipes.merge import common

PARAMS = "task_arithmetic"


def combine(base: dict, ingredients: Callable[[], Iterator[dict]], scale: float,
            transform: Callable[[str, object, int], object] | None = None) -> dict:
    """base + scale * sum_i transform(delta_i), streaming the ingredients once (float64 sums).

    Masks, integer buffers and tensors that are not floating point come from the first ingredient.
    """
    total: dict = {}
    carried: dict = {}
    for index, state in enumerate(ingredients()):
        for key, value in state.items():
            if not common.is_averaged(key, value):
                carried.setdefault(key, value.clone())
                continue
            delta = value.double() - base[key].double().to(value.device)
            if transform is not None:
                delta = transform(key, delta, index)
            total[key] = delta if key not in total else total[key] + delta
    merged = {key: base[key].double().to(delta.device) + scale * delta for key, delta in total.items()}
    merged.update(carried)
    return common.finish_state(merged, like=base)


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match."""
    check = common.validate_refs(cfg)
    common.validate_base(cfg, check)


def run_task_vector_merge(cfg, run, merge_states: Callable[[dict, Callable[[], Iterator[dict]]], dict],
                          extra: dict | None = None) -> dict:
    """Shared recipe body: check, load base, merge the streamed ingredients, evaluate, save."""
    setup = common.open_merge(cfg)
    base_ref = common.validate_base(cfg, setup.check)
    base = common.load_weights(base_ref, setup.device)
    rows = common.ingredient_rows(setup)
    base_metrics = setup.evaluate_state(base, recalibrate=False)
    merged = merge_states(base, lambda: common.stream(setup.refs, setup.device))
    final = common.save_merged(run, setup, merged)
    metrics = setup.evaluate_state(final, recalibrate=False)
    merged_row = {"role": "merged", "name": cfg.method.name, **metrics}
    base_row = {"role": "base", "name": common.ref_text(base_ref), **base_metrics}
    rows = setup.normalize([merged_row, base_row] + rows)
    # With merge.tasks: the merged and base models' normalized accuracy (TIES paper, Table 1) in the summary.
    tasks = {(("base_" + k) if row is base_row else k): row[k] for row in (merged_row, base_row)
             for k in ("normalized_accuracy", "task_mean_accuracy") if k in row}
    return {**metrics, **{f"base_{k}": v for k, v in base_metrics.items()}, **common.ingredient_figures(rows[2:]),
            **tasks,
            **common.masked_sparsity(final), **setup.notes, **(extra or {}), "rows": rows}


def run(params, context) -> dict:
    """Add lambda times the sum of the ingredients' task vectors to the base."""
    cfg, run = context.cfg, context.run
    scale = float(cfg[PARAMS]["lambda"])
    return run_task_vector_merge(cfg, run, lambda base, ingredients: combine(base, ingredients, scale),
                                 {"lambda": scale})
