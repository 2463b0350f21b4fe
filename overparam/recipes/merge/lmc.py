"""`method=lmc`: linear mode connectivity of two models (Frankle et al. 2020; Ainsworth et al. 2023).

Loss and accuracy along theta(alpha) = (1 - alpha) theta_A + alpha theta_B at `lmc.points` evenly
spaced alphas, before and (with `lmc.align=true`) after weight matching B to A. The barrier is the
largest rise of the path's loss above the straight line between the endpoints' losses
(and the same for error). With `lmc.from=<run dir>@<tag>` the two models are trained here, from
that checkpoint, with different data orders: the instability analysis behind late rewinding.
"""

from __future__ import annotations

from overparam.errors import UserError
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.ingredients import IngredientCheck, check_ingredients
from overparam.recipes.shared.states import load_weights
from overparam.store.load import RunRef

PARAMS = "lmc"


def barrier(values: list[float]) -> float:
    """max over the path of value(alpha) - ((1 - alpha) value(0) + alpha value(1)); evenly spaced alphas."""
    count = len(values)
    if count < 2:
        return 0.0
    first, last = values[0], values[-1]
    return max(v - ((1 - i / (count - 1)) * first + (i / (count - 1)) * last) for i, v in enumerate(values))


def path(setup: common.MergeSetup, a: dict, b: dict, points: int, split: str) -> list[dict]:
    """Metrics at each alpha of the straight line from a to b (BN recalibrated per point if set)."""
    from overparam.engine.evaluate import evaluate
    from overparam.recipes.merge.wise_ft import interpolate

    rows = []
    for i in range(points):
        alpha = i / (points - 1)
        metrics = setup.evaluate_state(interpolate(a, b, alpha))
        if split == "train":
            train = evaluate(setup.model, setup.data.train_x, setup.data.train_y)
            metrics.update({"train_loss": train["loss"], "train_accuracy": train["accuracy"]})
        rows.append({"alpha": round(alpha, 10), **metrics})
    return rows


def path_barriers(rows: list[dict], split: str, prefix: str = "") -> dict:
    """Loss and error barriers of a path on `split`."""
    losses = [r[f"{split}_loss"] for r in rows]
    errors = [1.0 - r[f"{split}_accuracy"] for r in rows]
    return {f"{prefix}barrier_loss": barrier(losses), f"{prefix}barrier_error": barrier(errors),
            f"{prefix}midpoint_{split}_accuracy": rows[len(rows) // 2][f"{split}_accuracy"]}


def check(params, cfg: dict) -> None:
    """Two ingredients, or one checkpoint in lmc.from, or two different seeds."""
    origin, seeds = params["lmc.from"], params["lmc.seeds"]
    if sum(bool(x) for x in (origin, seeds, params.ingredients)) > 1:
        raise UserError(f"give one of ingredients, {PARAMS}.from and {PARAMS}.seeds")
    if seeds is not None:
        if len(seeds) != 2 or seeds[0] == seeds[1]:
            raise UserError(f"{PARAMS}.seeds takes two different seeds, got {list(seeds)}")
    elif origin:
        ref = RunRef.parse(origin)
        check_ingredients([ref], key=f"{PARAMS}.from")
    else:
        common.validate_refs(params, minimum=2, maximum=2)


def train_copies(settings, run, setup: common.MergeSetup, origin: RunRef) -> tuple[dict, dict, dict]:
    """Two copies trained from `origin` with data orders seed+1 and seed+2 (each resumes on its own)."""
    from overparam.engine import fit

    start = load_weights(origin, setup.device)
    copies, figures = [], {}
    for copy in range(2):
        phase = run.phase(f"copy_{copy}", level=copy)
        name = phase.name
        if phase.saved:
            copies.append(phase.load(device=setup.device))
            continue
        setup.model.load_state_dict(start)
        result = fit(setup.model, setup.data, run, train=settings.train.to_dict(), optim=settings.optim.to_dict(),
                     hardware=settings.hardware.to_dict(), seed=int(settings.seed),
                     data_seed=int(settings.seed) + 1 + copy, tag=name, label=name, level=copy)
        state = setup.current_state()
        phase.save(state)
        figures[f"{name}_train_seconds"] = round(result.seconds, 3)
        copies.append(state)
    return copies[0], copies[1], figures


def train_from_seeds(params, context, seeds: list[int]) -> tuple[common.MergeSetup, dict, dict, dict]:
    """Two models of `settings.model` trained here from the init (and data order) of each seed."""
    from overparam.data.bundle import effective_split_seed
    from overparam.engine import fit

    settings, run = context.settings, context.run
    prepared = context.prepare()
    states, figures = [], {}
    for index, seed in enumerate(seeds):
        phase = run.phase(f"seed_{seed}", level=index)
        name = phase.name
        model = prepared.new_model(seed)
        if phase.saved:
            model.load_state_dict(phase.load(device=prepared.device))
        else:
            result = fit(model, prepared.data, run, tag=name, label=name, level=index,
                         **prepared.fit_kwargs(seed=seed))
            phase.save(model.state_dict())
            figures[f"{name}_train_seconds"] = round(result.seconds, 3)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    check = IngredientCheck(refs=[], model=settings.model.to_dict(), dataset=settings.dataset.to_dict(),
                            seeds=list(seeds), shapes={})
    setup = common.MergeSetup(settings=settings, device=prepared.device, data=prepared.data, model=model, refs=[],
                              check=check, notes={"val_split_seed": effective_split_seed(settings.dataset.to_dict(),
                                                                                          int(settings.seed))},
                              **common.recalibration(params))
    figures["seeds"] = ",".join(str(s) for s in seeds)
    return setup, states[0], states[1], figures


def run(params, context) -> dict:
    """Evaluate the path before and after alignment; report the barriers."""
    settings, run = context.settings, context.run
    points, split = params["lmc.points"], params["lmc.split"]
    origin = params["lmc.from"]
    seeds = None if params["lmc.seeds"] is None else [int(s) for s in params["lmc.seeds"]]
    if seeds is not None:
        setup, a, b, extra = train_from_seeds(params, context, seeds)
    elif origin:
        ref = RunRef.parse(origin)
        setup = common.prepare_merge(params, settings, [ref], check_ingredients([ref], key=f"{PARAMS}.from"))
        a, b, extra = train_copies(settings, run, setup, ref)
        extra["from"] = origin
    else:
        setup = common.open_merge(params, settings, minimum=2, maximum=2)
        a, b = (load_weights(r, setup.device) for r in setup.refs)
        extra = {}
    if split == "val" and setup.data.val_x is None:
        raise UserError(f"{PARAMS}.split=val needs dataset.val_fraction > 0")
    rows = [{"aligned": False, **r} for r in path(setup, a, b, points, split)]
    summary = {**path_barriers(rows, split), **extra}
    if params["lmc.align"]:
        from overparam.models.permutation import align, spec_for

        spec = spec_for(setup.model, setup.data.input_shape)
        b_aligned = align(spec, a, b, seed=int(settings.seed))
        aligned_rows = [{"aligned": True, **r} for r in path(setup, a, b_aligned, points, split)]
        summary.update(path_barriers(aligned_rows, split, prefix="aligned_"))
        rows += aligned_rows
        midpoint = aligned_rows[len(aligned_rows) // 2]
    else:
        midpoint = rows[len(rows) // 2]
    # The run's model is the midpoint of the (aligned, if aligned) path: the merge this analysis is about.
    from overparam.recipes.merge.wise_ft import interpolate

    final = common.save_merged(run, setup, interpolate(a, b_aligned if params["lmc.align"] else b, 0.5))
    del final
    summary.update({k: v for k, v in midpoint.items() if k.endswith(("_accuracy", "_loss"))})
    summary.update({"points": points, "split": split, **setup.notes})
    for endpoint, row in (("a", rows[0]), ("b", rows[points - 1])):
        summary[f"endpoint_{endpoint}_{split}_accuracy"] = row[f"{split}_accuracy"]
    summary["rows"] = rows
    return summary
