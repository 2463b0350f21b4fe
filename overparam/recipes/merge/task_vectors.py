"""`method=task_vectors`: the one task-vector merge (mergekit's generalized task arithmetic).

Every ingredient's task vector (delta = ingredient - base) is sparsified (`sparsify`: none | magnitude:
keep the `density` fraction of largest |delta| | random: keep each entry with probability `density` and
rescale by 1/density (DARE) | breadcrumbs: drop the `gamma` fraction of largest |delta| and the
1 - density - gamma fraction of smallest, keep the middle), then combined (`consensus`: none: their sum | sign: TIES' sign election and the mean
of the entries that agree with it). merged = base + lambda * combined.

`task_arithmetic`, `ties`, `dare` and `breadcrumbs` are presets of it (their modules map their keys to a
`TaskVectorMerge`). The ingredients are streamed: one pass without consensus, two with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator

from overparam.recipes.merge import common
from overparam.recipes.merge.ingredients import ref_text, validate_base
from overparam.recipes.merge.states import finish_state, is_averaged, load_weights, stream
from overparam.recipes.merge.summary import ingredient_figures, ingredient_rows, masked_sparsity
from overparam.recipes.merge.sparsify import elect_signs, sparsify_deltas

PARAMS = "task_vectors"


@dataclass(frozen=True)
class TaskVectorMerge:
    """How task vectors are sparsified and combined (see the module doc). breadcrumbs drops the `gamma`
    fraction of largest and the `smallest` fraction of smallest |delta| (`density` is not used there)."""

    sparsify: str = "none"
    density: float = 1.0
    gamma: float = 0.0
    smallest: float = 0.0
    consensus: str = "none"
    scope: str = "tensor"
    scale: float = 1.0
    seed: int = 0


def merge(base: dict, ingredients: Callable[[], Iterator[dict]], how: TaskVectorMerge) -> dict:
    """base + scale * combine(sparsify(delta_i)), over streamed ingredients (float64 sums).

    Masks, integer buffers and tensors that are not floating point come from the first ingredient.
    The random drop of ingredient i's tensor k is seeded by (seed, i, k), so both passes draw alike."""
    import torch

    order = {key: index for index, key in enumerate(sorted(base))}

    def task_vector(index: int, state: dict) -> dict:
        deltas = {key: value.double() - base[key].double().to(value.device)
                  for key, value in state.items() if is_averaged(key, value)}
        return sparsify_deltas(deltas, how.sparsify, how.density, how.gamma, how.smallest, how.scope, lambda key: torch.Generator(
            ).manual_seed(int(how.seed) * 1_000_003 + index * 10_007 + order.get(key, 0)))

    summed: dict = {}
    carried: dict = {}
    for index, state in enumerate(ingredients()):
        for key, value in state.items():
            if not is_averaged(key, value):
                carried.setdefault(key, value.clone())
        for key, delta in task_vector(index, state).items():
            summed[key] = delta if key not in summed else summed[key] + delta
    if how.consensus == "none":
        combined = summed
    else:
        signs = elect_signs(summed, how.scope)
        del summed
        agreeing: dict = {}
        counts: dict = {}
        for index, state in enumerate(ingredients()):
            for key, delta in task_vector(index, state).items():
                agrees = (torch.sign(delta) == signs[key]) & (delta != 0)
                part = delta * agrees
                agreeing[key] = part if key not in agreeing else agreeing[key] + part
                counts[key] = agrees.double() if key not in counts else counts[key] + agrees
        combined = {key: total / counts[key].clamp(min=1) for key, total in agreeing.items()}
    merged = {key: base[key].double().to(delta.device) + how.scale * delta for key, delta in combined.items()}
    merged.update(carried)
    return finish_state(merged, like=base)


def run_merge(params, context, how: TaskVectorMerge, extra: dict) -> dict:
    """The recipe body every preset shares: check, load base, merge the streamed ingredients, evaluate, save."""
    cfg, run = context.cfg, context.run
    setup = common.open_merge(params, cfg)
    base_ref = validate_base(params, setup.check)
    base = load_weights(base_ref, setup.device)
    rows = ingredient_rows(setup)
    base_metrics = setup.evaluate_state(base, recalibrate=False)
    merged = merge(base, lambda: stream(setup.refs, setup.device), how)
    final = common.save_merged(run, setup, merged)
    metrics = setup.evaluate_state(final, recalibrate=False)
    merged_row = {"role": "merged", "name": cfg.method.name, **metrics}
    base_row = {"role": "base", "name": ref_text(base_ref), **base_metrics}
    rows = setup.normalize([merged_row, base_row] + rows)
    # With merge.tasks: the merged and base models' normalized accuracy (TIES paper, Table 1) in the summary.
    tasks = {(("base_" + k) if row is base_row else k): row[k] for row in (merged_row, base_row)
             for k in ("normalized_accuracy", "task_mean_accuracy") if k in row}
    return {**metrics, **{f"base_{k}": v for k, v in base_metrics.items()}, **ingredient_figures(rows[2:]),
            **tasks, **masked_sparsity(final), **setup.notes, **extra, "rows": rows}


def validate_inputs(params) -> None:
    """Every preset's shared check: the ingredients and the base exist and match."""
    check = common.validate_refs(params)
    validate_base(params, check)


def settings(params, seed: int) -> TaskVectorMerge:
    params = params[PARAMS]
    density, gamma = float(params.density), float(params.gamma)
    smallest = max(0.0, 1.0 - density - gamma) if str(params.sparsify) == "breadcrumbs" else 0.0
    return TaskVectorMerge(sparsify=str(params.sparsify), density=density, gamma=gamma, smallest=smallest,
                           consensus=str(params.consensus), scope=str(params.scope), scale=float(params["lambda"]),
                           seed=int(seed))


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match (the values: the Spec in merge/params.py)."""
    validate_inputs(params)


def run(params, context) -> dict:
    """Sparsify every task vector, combine them, add lambda times the result to the base."""
    how = settings(params, context.seed)
    extra = {k: v for k, v in asdict(how).items() if k not in ("scale", "seed", "smallest")}
    return run_merge(params, context, how, {**extra, "lambda": how.scale})
