"""`method=uniform_soup`: the mean of the ingredients' weights (Wortsman et al. 2022)."""

from __future__ import annotations

from overparam.recipes.shared import merging as common
from overparam.recipes.shared.states import stream, weighted_average
from overparam.recipes.shared.summary import ingredient_rows, soup_summary


def check(params, cfg: dict) -> None:
    """Ingredients exist, finished, and share architecture, shapes and masks."""
    common.validate_refs(params)


def run(params, context) -> dict:
    """Average every ingredient (streamed), evaluate the soup and each ingredient, save the soup."""
    setup = common.open_merge(params, context.settings)
    rows = ingredient_rows(setup)
    soup = weighted_average(stream(setup.refs, setup.device))
    final = common.save_merged(context.run, setup, soup)
    return soup_summary(setup, final, rows, "uniform_soup")
