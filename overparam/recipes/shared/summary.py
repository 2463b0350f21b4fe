"""A merge's summary: one row per ingredient (val/test on the merge's data), the best and mean
ingredient figures, and the exact sparsity of a merged state."""

from __future__ import annotations

from overparam.recipes.shared.ingredients import ref_text
from overparam.recipes.shared.states import is_mask, load_weights
from overparam.store.load import RunRef


def ingredient_rows(setup, refs: list[RunRef] | None = None) -> list[dict]:
    """Val/test of every ingredient (loaded one at a time), evaluated on the merge's data."""
    rows = []
    for index, ref in enumerate(refs or setup.refs):
        metrics = setup.evaluate_state(load_weights(ref, setup.device), recalibrate=False)
        rows.append({"role": "ingredient", "ingredient": index, "name": ref_text(ref), **metrics})
    return rows


def ingredient_figures(rows: list[dict]) -> dict:
    """Best (by val) and mean ingredient figures, for comparing a merge with what went in."""
    if not rows:
        return {}
    select = "val_accuracy" if "val_accuracy" in rows[0] else "test_accuracy"
    best = max(rows, key=lambda r: r[select])
    out = {"ingredients": len(rows), "best_ingredient": best["name"]}
    for metric in ("val_accuracy", "test_accuracy", "val_loss", "test_loss"):
        if metric in best:
            out[f"best_ingredient_{metric}"] = best[metric]
            out[f"mean_ingredient_{metric}"] = sum(r[metric] for r in rows) / len(rows)
    return out


def masked_sparsity(state: dict) -> dict:
    """Exact sparsity over masked weights of a state (and the count of weights that are nonzero there)."""
    total, kept = 0, 0
    for k, v in state.items():
        if is_mask(k):
            total += v.numel()
            kept += int(v.count_nonzero())
    return {"sparsity": (1.0 - kept / total) if total else 0.0, "remaining_weights": kept} if total else {}


def soup_summary(setup, final: dict, rows: list[dict], name: str, extra: dict | None = None) -> dict:
    """Flat summary of a soup: its val/test, best and mean ingredient, and one row per model."""
    metrics = setup.evaluate_state(final, recalibrate=False)
    soup_row = {"role": "merged", "name": name, **metrics, **(extra or {})}
    return {**metrics, **ingredient_figures(rows), **masked_sparsity(final), **setup.notes,
            **(extra or {}), "rows": [soup_row, *rows]}
