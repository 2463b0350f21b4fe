"""`method=checkpoint_average`: average the last K checkpoints of one run, or the same checkpoint
across runs ("free lunch" averaging: the ingredients' `@tag`, e.g. `ingredients=[a@level_2,b@level_2]`).

With one run and `checkpoint_average.last=K`, its snapshots are the `checkpoints/step_<N>.safetensors`
and `level_<L>/model.safetensors` files, ordered by N (steps) or L (levels), and the last K are
averaged. With several runs, each run's named (or final) checkpoint is averaged.
"""

from __future__ import annotations

import re
from pathlib import Path

from overparam.errors import UserError
from overparam.recipes.merge import common
from overparam.recipes.merge.uniform_soup import soup_summary
from overparam.store.load import RunRef

PARAMS = "checkpoint_average"


def snapshots(root: Path) -> list[RunRef]:
    """A run's snapshots in training order: step_<N> checkpoints, else level_<L> models."""
    steps = []
    for path in (root / "checkpoints").glob("step_*.safetensors"):
        match = re.fullmatch(r"step_(\d+)", path.stem)
        if match:
            steps.append((int(match.group(1)), RunRef(root, path.stem)))
    if steps:
        return [ref for _, ref in sorted(steps, key=lambda item: item[0])]
    levels = []
    for path in root.glob("level_*/model.safetensors"):
        match = re.fullmatch(r"level_(\d+)", path.parent.name)
        if match:
            levels.append((int(match.group(1)), RunRef(root, path.parent.name)))
    return [ref for _, ref in sorted(levels, key=lambda item: item[0])]


def select(cfg) -> list[RunRef]:
    """The checkpoints to average."""
    refs = common.resolve_ingredients(cfg.get("ingredients"))
    last = (cfg.get(PARAMS) or {}).get("last")
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
    common.check_ingredients(select(cfg))


def run(params, context) -> dict:
    """Average the selected checkpoints (streamed); report the average and each checkpoint."""
    cfg, run = context.cfg, context.run
    refs = select(cfg)
    setup = common.prepare_merge(cfg, refs, common.check_ingredients(refs))
    rows = common.ingredient_rows(setup)
    average = common.weighted_average(common.stream(refs, setup.device))
    final = common.save_merged(run, setup, average)
    return soup_summary(setup, final, rows, "checkpoint_average")
