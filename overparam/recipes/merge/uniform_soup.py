"""`method=uniform_soup`: the mean of the ingredients' weights (Wortsman et al. 2022)."""

from __future__ import annotations

from overparam.recipes.merge import common


def check(params, cfg: dict) -> None:
    """Ingredients exist, finished, and share architecture, shapes and masks."""
    common.validate_refs(cfg)


def soup_summary(setup: common.MergeSetup, final: dict, rows: list[dict], name: str, extra: dict | None = None) -> dict:
    """Flat summary of a soup: its val/test, best and mean ingredient, and one row per model."""
    metrics = setup.evaluate_state(final, recalibrate=False)
    soup_row = {"role": "merged", "name": name, **metrics, **(extra or {})}
    return {**metrics, **common.ingredient_figures(rows), **common.masked_sparsity(final), **setup.notes,
            **(extra or {}), "rows": [soup_row, *rows]}


def run(params, context) -> dict:
    """Average every ingredient (streamed), evaluate the soup and each ingredient, save the soup."""
    cfg, run = context.cfg, context.run
    setup = common.open_merge(cfg)
    rows = common.ingredient_rows(setup)
    soup = common.weighted_average(common.stream(setup.refs, setup.device))
    final = common.save_merged(run, setup, soup)
    return soup_summary(setup, final, rows, "uniform_soup")
