"""`method=wise_ft`: WiSE-FT (Wortsman et al. 2022): (1 - alpha) * base + alpha * fine-tuned, one row
per alpha in `wise_ft.alphas`. The saved model is the alpha with the best val accuracy
(`wise_ft.save_alpha` picks one instead). With `merge.shift` every alpha is also evaluated on the test
split of a shifted copy of the dataset (`shift_accuracy`): the paper's robustness columns."""

from __future__ import annotations

from overparam.errors import UserError
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.evaluation import shift_settings
from overparam.recipes.shared.ingredients import validate_base
from overparam.recipes.shared.states import finish_state, is_averaged, load_weights

PARAMS = "wise_ft"


def interpolate(base: dict, tuned: dict, alpha: float) -> dict:
    """(1 - alpha) * base + alpha * tuned on floating tensors; masks and counters from `tuned`."""
    mixed = {k: ((1 - alpha) * base[k].double() + alpha * v.double() if is_averaged(k, v) else v.clone())
             for k, v in tuned.items()}
    return finish_state(mixed, like=tuned)


def _alphas(params) -> list[float]:
    alphas = params["wise_ft.alphas"]
    if isinstance(alphas, str) or not hasattr(alphas, "__len__") or not len(alphas):
        raise UserError(f"{PARAMS}.alphas must be a non-empty list of numbers, e.g. [0,0.25,0.5,0.75,1]")
    try:
        return [float(a) for a in alphas]
    except (TypeError, ValueError):
        raise UserError(f"{PARAMS}.alphas={list(alphas)!r} must be numbers") from None


def check(params, cfg: dict) -> None:
    """One fine-tuned ingredient, its base; the alphas are numbers and save_alpha one of them."""
    _alphas(params)
    save = params["wise_ft.save_alpha"]
    if save is not None and save not in _alphas(params):
        raise UserError(f"{PARAMS}.save_alpha={save} is not one of {PARAMS}.alphas")
    shift = shift_settings(params)
    from overparam.data.mnist1d_settings import STANDARD, generator_args

    if "variant" in shift or set(shift) & set(STANDARD):
        generator_args(shift.get("variant"), **{k: v for k, v in shift.items() if k in STANDARD})
    check = common.validate_refs(params, minimum=1, maximum=1)
    validate_base(params, check)


def run(params, context) -> dict:
    """Evaluate every alpha; save the chosen one as the run's model."""
    settings, run = context.settings, context.run
    setup = common.open_merge(params, settings, minimum=1, maximum=1)
    base_ref = validate_base(params, setup.check)
    base = load_weights(base_ref, setup.device)
    tuned = load_weights(setup.refs[0], setup.device)
    rows = []
    for alpha in _alphas(params):
        rows.append({"alpha": alpha, **setup.evaluate_state(interpolate(base, tuned, alpha))})
    save = params["wise_ft.save_alpha"]
    select = "val_accuracy" if "val_accuracy" in rows[0] else "test_accuracy"
    chosen = float(save) if save is not None else max(rows, key=lambda r: r[select])["alpha"]
    final = common.save_merged(run, setup, interpolate(base, tuned, chosen))
    metrics = setup.evaluate_state(final, recalibrate=False)
    return {**metrics, "alpha": chosen, **setup.notes, "rows": rows}
