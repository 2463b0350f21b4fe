"""`method=rebasin`: weight matching (Ainsworth et al. 2023), then merge or hand the aligned model on.

Every ingredient after the first is permuted to match the first (`overparam.models.permutation`),
then `rebasin.output=average` saves the mean of the aligned models and `aligned` saves the second
ingredient aligned to the first (for `lmc`, or any later merge). The naive average is reported
beside the aligned one.
"""

from __future__ import annotations

from overparam.errors import UserError
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.states import load_weights, stream, weighted_average
from overparam.recipes.shared.summary import ingredient_figures, ingredient_rows

PARAMS = "rebasin"


def aligned_states(setup: common.MergeSetup, max_iterations: int = 100):
    """The first ingredient, then every other one permuted to match it (streamed); also the perms' change."""
    import torch

    from overparam.models.permutation import apply_permutation, spec_for, weight_matching

    spec = spec_for(setup.model, setup.data.input_shape)
    reference = load_weights(setup.refs[0], setup.device)
    yield reference, 0
    for index, ref in enumerate(setup.refs[1:], start=1):
        state = load_weights(ref, setup.device)
        perms = weight_matching(spec, reference, state, max_iterations=max_iterations, seed=int(setup.settings.seed) + index)
        moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms.values())
        yield apply_permutation(spec, perms, state), moved


def check(params, cfg: dict) -> None:
    """Two or more ingredients of one architecture that has a permutation spec."""
    check = common.validate_refs(params, minimum=2)
    if params["rebasin.output"] == "aligned" and len(check.refs) != 2:
        raise UserError(f"{PARAMS}.output=aligned needs exactly two ingredients, got {len(check.refs)}")


def run(params, context) -> dict:
    """Align, average (or keep the aligned model), and compare with the naive average."""
    settings, run = context.settings, context.run
    setup = common.open_merge(params, settings, minimum=2)
    rows = ingredient_rows(setup)
    naive = weighted_average(stream(setup.refs, setup.device))
    naive_metrics = setup.evaluate_state(naive)
    del naive
    moved_units = []

    def aligned():
        for state, moved in aligned_states(setup, params["rebasin.max_iterations"]):
            moved_units.append(moved)
            yield state

    output = params["rebasin.output"]
    if output == "average":
        result = weighted_average(aligned())
    else:
        result = list(aligned())[1]
    final = common.save_merged(run, setup, result)
    metrics = setup.evaluate_state(final, recalibrate=False)
    merged_row = {"role": "merged", "name": f"rebasin_{output}", "aligned": True, **metrics}
    naive_row = {"role": "naive_average", "name": "naive_average", "aligned": False, **naive_metrics}
    return {**metrics, **{f"naive_{k}": v for k, v in naive_metrics.items()}, **ingredient_figures(rows),
            "permuted_units": sum(moved_units), **setup.notes, "rows": [merged_row, naive_row, *rows]}
