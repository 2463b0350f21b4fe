"""`method=greedy_soup`: Wortsman et al. 2022, recipe 1.

Sort the ingredients by held-out (val) accuracy, start from the best, and add each next one only if
the soup's val accuracy rises (`soup.accept=gt`) or does not fall (`ge`). The soup therefore never
scores below its best ingredient on val.
"""

from __future__ import annotations

from typing import Callable

from overparam.errors import UserError
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.states import finish_state, is_averaged, load_weights
from overparam.recipes.shared.summary import ingredient_rows, soup_summary


def check(params, cfg: dict) -> None:
    """Ingredients exist and match."""
    common.validate_refs(params)


def _mean(total: dict, count: int) -> dict:
    """The soup of `count` ingredients from their float64 sum (masks and counters as they are)."""
    import torch

    return finish_state({k: (v / count if v.dtype == torch.float64 else v) for k, v in total.items()})


def greedy(setup: common.MergeSetup, rows: list[dict], accept: str,
           load: Callable[[int], dict] | None = None) -> tuple[dict, list[int]]:
    """(soup state, indices of the ingredients kept), holding the soup sum and one ingredient at a time.

    `rows[i]["val_accuracy"]` orders the ingredients; `load(i)` gives ingredient i's state (default: the
    weights of `setup.refs[i]`). SMS soups its in-run copies with it too."""
    if load is None:
        load = lambda index: load_weights(setup.refs[index], setup.device)  # noqa: E731
    selection = "val_accuracy"
    order = sorted(range(len(rows)), key=lambda i: rows[i][selection], reverse=True)
    kept = [order[0]]
    total = {k: (v.double() if is_averaged(k, v) else v) for k, v in load(order[0]).items()}
    best = rows[order[0]][selection]
    if setup.recalibrate:
        best = setup.evaluate_state(_mean(total, 1))[selection]
    for index in order[1:]:
        state = load(index)
        candidate_total = {k: (total[k] + v.double() if is_averaged(k, v) else total[k]) for k, v in state.items()}
        del state
        score = setup.evaluate_state(_mean(candidate_total, len(kept) + 1))[selection]
        if score > best or (accept == "ge" and score == best):
            total, best = candidate_total, score
            kept.append(index)
    return _mean(total, len(kept)), kept


def run(params, context) -> dict:
    """Greedy soup of the ingredients; report the soup and every ingredient on val and test."""
    setup = common.open_merge(params, context.settings)
    if setup.data.val_x is None:
        raise UserError("greedy_soup selects on the val split: set dataset.val_fraction > 0")
    rows = ingredient_rows(setup)
    soup, kept = greedy(setup, rows, params["soup.accept"])
    for index, row in enumerate(rows):
        row["in_soup"] = int(index in kept)
    final = common.save_merged(context.run, setup, soup)
    return soup_summary(setup, final, rows, "greedy_soup", {"soup_size": len(kept)})
