"""`method=task_vectors`: the one task-vector merge (mergekit's generalized task arithmetic).

Every ingredient's task vector (delta = ingredient - base) is sparsified (`sparsify`: none | magnitude:
keep the `density` fraction of largest |delta| | random: keep each entry with probability `density` and
rescale by 1/density (DARE) | breadcrumbs: drop the `gamma` fraction of largest |delta| and the
1 - density - gamma fraction of smallest, keep the middle), then combined (`consensus`: none: their sum | sign: TIES' sign election and the mean
of the entries that agree with it). merged = base + lambda * combined.

`task_arithmetic` (Ilharco et al. 2023: no sparsification, no consensus), `ties` (Yadav et al. 2023: trim
to the top `density` by |delta|, ranked over the whole task vector as the paper's code does or per tensor,
elect signs, disjoint mean), `dare` (Yu et al. 2024: drop each entry with probability p, rescale by 1/(1-p))
and `breadcrumbs` (Davari & Belilovsky 2024: per layer drop the largest `beta` and the smallest `gamma`
fraction) are rows of `PRESETS`: each maps its own keys to a `TaskVectorMerge` and the figures it reports.
The ingredients are streamed: one pass without consensus, two with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator

from overparam.recipes.shared import merging as common
from overparam.recipes.shared.ingredients import ref_text, validate_base
from overparam.recipes.shared.states import finish_state, is_averaged, load_weights, stream
from overparam.recipes.shared.summary import ingredient_figures, ingredient_rows, masked_sparsity
from overparam.recipes.merge.sparsify import elect_signs, sparsify_deltas

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
    run = context.run
    setup = common.open_merge(params, context.settings)
    base_ref = validate_base(params, setup.check)
    base = load_weights(base_ref, setup.device)
    rows = ingredient_rows(setup)
    base_metrics = setup.evaluate_state(base, recalibrate=False)
    merged = merge(base, lambda: stream(setup.refs, setup.device), how)
    final = common.save_merged(run, setup, merged)
    metrics = setup.evaluate_state(final, recalibrate=False)
    merged_row = {"role": "merged", "name": context.settings.method.name, **metrics}
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


def _general(p, seed: int) -> TaskVectorMerge:
    density, gamma = float(p["density"]), float(p["gamma"])
    smallest = max(0.0, 1.0 - density - gamma) if str(p["sparsify"]) == "breadcrumbs" else 0.0
    return TaskVectorMerge(sparsify=str(p["sparsify"]), density=density, gamma=gamma, smallest=smallest,
                           consensus=str(p["consensus"]), scope=str(p["scope"]), scale=float(p["lambda"]),
                           seed=int(seed))


def _breadcrumbs(p, seed: int) -> TaskVectorMerge:
    # breadcrumbs' `beta` is the general merge's `gamma` (largest dropped), its `gamma` the smallest dropped.
    beta, gamma = float(p["beta"]), float(p["gamma"])
    return TaskVectorMerge(sparsify="breadcrumbs", density=1.0 - beta - gamma, gamma=beta, smallest=gamma,
                           scale=float(p["lambda"]))


@dataclass(frozen=True)
class Preset:
    """A method of this merge: its keys (`p`, the method's own section) as settings, and the figures it reports."""

    settings: Callable[..., TaskVectorMerge]
    figures: Callable[..., dict]


# method name -> its row; the drop pattern of dare's ingredient i and tensor k is seeded by (seed, i, k).
PRESETS = {
    "task_vectors": Preset(_general, lambda p, how: {
        **{k: v for k, v in asdict(how).items() if k not in ("scale", "seed", "smallest")}, "lambda": how.scale}),
    "task_arithmetic": Preset(lambda p, seed: TaskVectorMerge(scale=float(p["lambda"])),
                              lambda p, how: {"lambda": how.scale}),
    "ties": Preset(lambda p, seed: TaskVectorMerge(sparsify="magnitude", density=float(p["density"]), consensus="sign",
                                                   scope=str(p.get("scope") or "global"), scale=float(p["lambda"])),
                   lambda p, how: {"density": how.density, "scope": how.scope, "lambda": how.scale}),
    "dare": Preset(lambda p, seed: TaskVectorMerge(sparsify="random", density=1.0 - float(p["drop"]),
                                                   scale=float(p["lambda"]), seed=int(seed)),
                   lambda p, how: {"drop": float(p["drop"]), "lambda": how.scale}),
    "breadcrumbs": Preset(_breadcrumbs, lambda p, how: {"beta": float(p["beta"]), "gamma": float(p["gamma"]),
                                                         "lambda": how.scale}),
}


def settings(preset: str, p, seed: int = 0) -> TaskVectorMerge:
    """The merge `preset` (a method name) makes of its own keys `p`."""
    return PRESETS[preset].settings(p, seed)


def check(params, cfg: dict) -> None:
    """Ingredients and base exist and match (the values: the Spec in merge/params.py)."""
    validate_inputs(params)


def run(params, context, preset: str) -> dict:
    """Sparsify every task vector, combine them, add lambda times the result to the base."""
    own = params[preset]
    how = settings(preset, own, context.seed)
    return run_merge(params, context, how, PRESETS[preset].figures(own, how))
