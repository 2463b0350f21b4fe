"""`method=checkpoint_average`: average the last K checkpoints of one run, or the same checkpoint
across runs ("free lunch" averaging: the ingredients' `@tag`, e.g. `ingredients=[a@level_2,b@level_2]`).

With one run and `checkpoint_average.last=K`, its snapshots (listed by `store.snapshots`: the
`step_<N>` checkpoints, else the `level_<L>` models, in order) are found and the last K are averaged. With several runs, each run's named (or final) checkpoint is averaged.
"""

from __future__ import annotations

from overparam.errors import UserError
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.ingredients import check_ingredients, resolve_ingredients
from overparam.recipes.shared.states import stream, weighted_average
from overparam.recipes.shared.summary import ingredient_rows, soup_summary
from overparam.store.load import RunRef
from overparam.store.snapshots import snapshots

PARAMS = "checkpoint_average"


def select(params) -> list[RunRef]:
    """The checkpoints to average: the `ingredients`, or the last `checkpoint_average.last` snapshots of one."""
    refs = resolve_ingredients(params.ingredients)
    last = params["checkpoint_average.last"]
    if last is None:
        if len(refs) < 2:
            raise UserError(f"one ingredient: set {PARAMS}.last=K to average its last K checkpoints, "
                            "or give several runs")
        return refs
    if len(refs) != 1 or refs[0].tag is not None:
        raise UserError(f"{PARAMS}.last averages the snapshots of one run: give exactly one run directory")
    found = snapshots(refs[0].root)
    if len(found) < int(last):
        raise UserError(f"{refs[0].root} has {len(found)} snapshot(s) (step_<N> checkpoints or level_<L> models), "
                        f"fewer than {PARAMS}.last={last}")
    return found[-int(last):]


def check(params, cfg: dict) -> None:
    """The checkpoints exist and match."""
    check_ingredients(select(params))


def run(params, context) -> dict:
    """Average the selected checkpoints (streamed); report the average and each checkpoint."""
    settings, run = context.settings, context.run
    refs = select(params)
    setup = common.prepare_merge(params, settings, refs, check_ingredients(refs))
    rows = ingredient_rows(setup)
    average = weighted_average(stream(refs, setup.device))
    final = common.save_merged(run, setup, average)
    return soup_summary(setup, final, rows, "checkpoint_average")
