"""`method=task_vectors`: the one task-vector merge (mergekit's generalized task arithmetic).

Every ingredient's task vector (delta = ingredient - base) is sparsified (`sparsify`: none | magnitude:
keep the `density` fraction of largest |delta| | random: keep each entry with probability `density` and
rescale by 1/density (DARE) | breadcrumbs: drop the `gamma` fraction of largest |delta| and the
1 - density - gamma fraction of smallest, keep the middle | della: keep each entry with a probability that
grows with its magnitude rank in its row, density +- epsilon), multiplied by its ingredient's weight, then
combined (`consensus`: none: their sum | sign: TIES' sign election (a zero sum takes the majority sign) and
the mean of the entries that agree with it | sum, count: mergekit's election, the sign of the weighted sum or
of the count of signs, a zero total counting as positive). merged = base + lambda * combined.

Conventions are settings: `kept=round` rounds kept counts (the papers), `kept=floor` truncates as mergekit
(magnitude keeps at least one); `rescale=l1` rescales survivors to the tensor's L1 norm (mergekit's
`rescale`), `inverse` by 1/keep-probability (the DARE and DELLA papers). Entries are ranked in float64, ties
broken by position (mergekit ranks |delta| in float32, unstably); random drops come from a generator seeded
by (seed, ingredient, tensor) (mergekit draws from the global RNG), so the same draws give the same merge.

`task_arithmetic` (Ilharco et al. 2023: no sparsification, no consensus), `ties` (Yadav et al. 2023: trim
to the top `density` by |delta|, ranked over the whole task vector as the paper's code does or per tensor,
elect signs, disjoint mean), `dare` (Yu et al. 2024: drop each entry with probability p, rescale by 1/(1-p)),
`breadcrumbs` (Davari & Belilovsky 2024: per layer drop the largest `beta` and the smallest `gamma`
fraction) and `della` / `della_linear` (Deep et al. 2024: MagPrune, then mergekit's sum election and
weighted mean, or the weighted sum) are rows of `PRESETS`: each maps its own keys to a `TaskVectorMerge`
and the figures it reports. The ingredients are streamed: one pass without consensus, two with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator

from overparam.errors import UserError
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.ingredients import ref_text, validate_base
from overparam.recipes.shared.states import finish_state, is_averaged, load_weights, stream
from overparam.recipes.shared.summary import ingredient_figures, ingredient_rows, masked_sparsity
from overparam.recipes.merge import gradients
from overparam.recipes.merge.sparsify import elect_signs, sparsify_deltas

@dataclass(frozen=True)
class TaskVectorMerge:
    """How task vectors are sparsified, weighted and combined (see the module doc). breadcrumbs drops the
    `gamma` fraction of largest and the `smallest` fraction of smallest |delta| (`density` = the rest).
    `weights`: one per ingredient (None: 1 each), multiplied into its sparsified task vector; `normalize`:
    divide the combination by the sum of the weights (of the agreeing entries' models, with consensus);
    None: with consensus only. `kept`, `rescale`, `epsilon`: see sparsify.py."""

    sparsify: str = "none"
    density: float = 1.0
    gamma: float = 0.0
    smallest: float = 0.0
    consensus: str = "none"
    scope: str = "tensor"
    scale: float = 1.0
    seed: int = 0
    weights: tuple | None = None
    normalize: bool | None = None
    rescale: str = "auto"
    kept: str = "round"
    epsilon: float = 0.0


def merge(base: dict, ingredients: Callable[[], Iterator[dict]], how: TaskVectorMerge) -> dict:
    """base + scale * combine(weight_i * sparsify(delta_i)), over streamed ingredients (float64 sums).

    Masks, integer buffers and tensors that are not floating point come from the first ingredient.
    The random drop of ingredient i's tensor k is seeded by (seed, i, k), so both passes draw alike."""
    import torch

    order = {key: index for index, key in enumerate(sorted(base))}
    where = gradients.positions(base)

    def weight(index: int, key: str) -> float:
        """Ingredient `index`'s weight for tensor `key` (a number, a gradient across blocks or name filters)."""
        if how.weights is None:
            return 1.0
        if index >= len(how.weights):
            raise UserError(f"{len(how.weights)} weights for more ingredients: give one weight per ingredient")
        value = gradients.value_at(how.weights[index], key, where.get(key, 0.0))
        return 0.0 if value is None else value  # no filter matches: the model adds nothing there (mergekit)

    def task_vector(index: int, state: dict) -> dict:
        deltas = {key: value.double() - base[key].double().to(value.device)
                  for key, value in state.items() if is_averaged(key, value)}
        sparse = sparsify_deltas(deltas, how.sparsify, how.density, how.gamma, how.smallest, how.scope,
                                 lambda key: torch.Generator().manual_seed(
                                     int(how.seed) * 1_000_003 + index * 10_007 + order.get(key, 0)),
                                 kept=how.kept, rescale=how.rescale, epsilon=how.epsilon)
        return sparse if how.weights is None else {key: delta * weight(index, key) for key, delta in sparse.items()}

    summed: dict = {}
    carried: dict = {}
    total_weight: dict = {}
    count = 0
    for index, state in enumerate(ingredients()):
        for key, value in state.items():
            if not is_averaged(key, value):
                carried.setdefault(key, value.clone())
        for key, delta in task_vector(index, state).items():
            part = torch.sign(delta) if how.consensus == "count" else delta
            summed[key] = part if key not in summed else summed[key] + part
            total_weight[key] = total_weight.get(key, 0.0) + weight(index, key)
        count = index + 1
    if how.weights is not None and len(how.weights) != count:
        raise UserError(f"{len(how.weights)} weights for {count} ingredients: give one weight per ingredient")
    normalize = how.consensus != "none" if how.normalize is None else how.normalize
    if how.consensus == "none":
        combined = {key: total / (total_weight[key] if abs(total_weight[key]) >= 1e-8 else 1.0)
                    for key, total in summed.items()} if normalize else summed
    else:
        if how.consensus == "sign":
            signs = elect_signs(summed, how.scope)
        else:  # mergekit's get_mask: the sign of the (weighted) sum or of the count of signs; zero is positive
            signs = {key: (total >= 0).to(total.dtype) * 2 - 1 for key, total in summed.items()}
        del summed
        agreeing: dict = {}
        weights: dict = {}
        for index, state in enumerate(ingredients()):
            for key, delta in task_vector(index, state).items():
                agrees = (torch.sign(delta) == signs[key]) & (delta != 0)
                part = delta * agrees
                agreeing[key] = part if key not in agreeing else agreeing[key] + part
                share = agrees.double() * weight(index, key) if how.weights is not None else agrees.double()
                weights[key] = share if key not in weights else weights[key] + share
        combined = {key: total / torch.where(weights[key] == 0, 1.0, weights[key]) if normalize else total
                    for key, total in agreeing.items()}
    merged = {key: base[key].double().to(delta.device) + how.scale * delta for key, delta in combined.items()}
    merged.update(carried)
    return finish_state(merged, like=base)


def run_merge(params, context, merged_of: Callable, extra: dict, base_required: bool = True) -> dict:
    """The recipe body every merge of a base and ingredients shares: check, load the base (if any), merge
    (`merged_of(base or None, setup)`), evaluate, save."""
    settings, run = context.settings, context.run
    setup = common.open_merge(params, settings)
    base_ref = validate_base(params, setup.check, required=base_required)
    base = load_weights(base_ref, setup.device) if base_ref is not None else None
    rows = ingredient_rows(setup)
    base_metrics = setup.evaluate_state(base, recalibrate=False) if base is not None else {}
    merged = merged_of(base, setup)
    final = common.save_merged(run, setup, merged)
    metrics = setup.evaluate_state(final, recalibrate=False)
    merged_row = {"role": "merged", "name": settings.method.name, **metrics}
    base_row = {"role": "base", "name": ref_text(base_ref), **base_metrics} if base is not None else None
    rows = setup.normalize([merged_row] + ([base_row] if base_row else []) + rows)
    # With merge.tasks: the merged and base models' normalized accuracy (TIES paper, Table 1) in the summary.
    tasks = {(("base_" + k) if row is base_row else k): row[k] for row in (merged_row, base_row) if row
             for k in ("normalized_accuracy", "task_mean_accuracy") if k in row}
    first = 2 if base_row else 1
    return {**metrics, **{f"base_{k}": v for k, v in base_metrics.items()}, **ingredient_figures(rows[first:]),
            **tasks, **masked_sparsity(final), **setup.notes, **extra, "rows": rows}


def validate_inputs(params) -> None:
    """Every preset's shared check: the ingredients and the base exist and match."""
    check = common.validate_refs(params)
    validate_base(params, check)


def _weights(p) -> tuple | None:
    """One setting per ingredient: a number, a gradient list or name filters (mergekit's per-model `weight`)."""
    weights = p.get("weights")
    if weights is None:
        return None
    return tuple(float(w) if isinstance(w, (int, float)) else w for w in weights)


def _general(p, seed: int) -> TaskVectorMerge:
    density, gamma = float(p["density"]), float(p["gamma"])
    smallest = max(0.0, 1.0 - density - gamma) if str(p["sparsify"]) == "breadcrumbs" else 0.0
    normalize = p.get("normalize")
    return TaskVectorMerge(sparsify=str(p["sparsify"]), density=density, gamma=gamma, smallest=smallest,
                           consensus=str(p["consensus"]), scope=str(p["scope"]), scale=float(p["lambda"]),
                           seed=int(seed), weights=_weights(p), normalize=None if normalize is None else bool(normalize),
                           rescale=str(p.get("rescale") or "auto"), kept=str(p.get("kept") or "round"),
                           epsilon=float(p.get("epsilon") or 0.0))


def _breadcrumbs(p, seed: int) -> TaskVectorMerge:
    # breadcrumbs' `beta` is the general merge's `gamma` (largest dropped), its `gamma` the smallest dropped.
    beta, gamma = float(p["beta"]), float(p["gamma"])
    return TaskVectorMerge(sparsify="breadcrumbs", density=1.0 - beta - gamma, gamma=beta, smallest=gamma,
                           scale=float(p["lambda"]))


def _ties(p, seed: int) -> TaskVectorMerge:
    return TaskVectorMerge(sparsify="magnitude", density=float(p["density"]), consensus=str(p.get("consensus") or "sign"),
                           scope=str(p.get("scope") or "global"), scale=float(p["lambda"]), weights=_weights(p),
                           kept=str(p.get("kept") or "round"))


def _dare(p, seed: int) -> TaskVectorMerge:
    # With an election, agreeing entries are summed, not averaged (mergekit's dare_ties); rescale null: 1/(1-p).
    consensus = str(p.get("consensus") or "none")
    return TaskVectorMerge(sparsify="random", density=1.0 - float(p["drop"]), scale=float(p["lambda"]), seed=int(seed),
                           consensus=consensus, normalize=None if consensus == "none" else False,
                           rescale=str(p.get("rescale") or "auto"), weights=_weights(p))


def _della(consensus: str):
    def settings(p, seed: int) -> TaskVectorMerge:
        return TaskVectorMerge(sparsify="della", density=float(p["density"]), epsilon=float(p["epsilon"]),
                               consensus=consensus, normalize=bool(p["normalize"]), rescale=str(p["rescale"]),
                               scale=float(p["lambda"]), weights=_weights(p), seed=int(seed))
    return settings


@dataclass(frozen=True)
class Preset:
    """A method of this merge: its keys (`p`, the method's own section) as settings, and the figures it reports."""

    settings: Callable[..., TaskVectorMerge]
    figures: Callable[..., dict]


def _della_figures(p, how: TaskVectorMerge) -> dict:
    return {"density": how.density, "epsilon": how.epsilon, "rescale": how.rescale, "normalize": how.normalize,
            "lambda": how.scale}


# method name -> its row; the drop pattern of dare's (and della's) ingredient i and tensor k is seeded by (seed, i, k).
PRESETS = {
    "task_vectors": Preset(_general, lambda p, how: {
        **{k: v for k, v in asdict(how).items() if k not in ("scale", "seed", "smallest")}, "lambda": how.scale}),
    "task_arithmetic": Preset(lambda p, seed: TaskVectorMerge(scale=float(p["lambda"])),
                              lambda p, how: {"lambda": how.scale}),
    "ties": Preset(_ties, lambda p, how: {"density": how.density, "scope": how.scope, "consensus": how.consensus,
                                          "kept": how.kept, "lambda": how.scale}),
    "dare": Preset(_dare, lambda p, how: {"drop": float(p["drop"]), "consensus": how.consensus,
                                          "rescale": how.rescale, "lambda": how.scale}),
    "breadcrumbs": Preset(_breadcrumbs, lambda p, how: {"beta": float(p["beta"]), "gamma": float(p["gamma"]),
                                                         "lambda": how.scale}),
    "della": Preset(_della("sum"), _della_figures),
    "della_linear": Preset(_della("none"), _della_figures),
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
    return run_merge(params, context, lambda base, setup: merge(base, lambda: stream(setup.refs, setup.device), how),
                     PRESETS[preset].figures(own, how))
