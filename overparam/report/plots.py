"""Figures from run directories (matplotlib, Agg backend: no display needed).

- `lottery_figure`: accuracy vs fraction of weights remaining (log x axis), one line per
  method/control, error bars over seeds: the lottery-ticket figure.
- `path_figure`: loss and accuracy along an interpolation path (`lmc` rows with `alpha`), one line
  per variant (e.g. before/after alignment).
- `line_figure`: the metric against one numeric row key (a width sweep: double descent), one line
  per column, seed std as error bars; chosen instead of bars when the rows are such a key.
- `bar_figure`: one bar per table cell with seed error bars, for sweeps without a sparsity axis.
- `curves_figure`: per-level training curves of one pruning run, from its metrics.jsonl.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from overparam.errors import UserError
from overparam.report.aggregate import METRIC_ALIASES, Cell, Table, cell_records, display, resolve_metric
from overparam.report.index import Record, SEED_KEYS, varying_keys
from overparam.report.readable import spread_phrase
from overparam.store.metrics import MetricRows, metrics_file, read_metric_rows

PLOT_KINDS = ("auto", "lottery", "path", "bar")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def remaining_fraction(record: Record) -> float | None:
    """Fraction of prunable weights left: the level's own number, else 1 - sparsity (summary, then config)."""
    for key in ("remaining_fraction",):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    sparsity = record.get("sparsity")
    if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool):
        return 1.0 - float(sparsity)
    return None


def _series_keys(records: list[Record], exclude: set[str]) -> list[str]:
    return [k for k in varying_keys(records) if k not in exclude and k not in SEED_KEYS]


def _series_label(keys: list[str], values: tuple) -> str:
    if not keys:
        return "runs"
    if len(keys) == 1:
        return display(values[0])
    return ", ".join(f"{k}={display(v)}" for k, v in zip(keys, values))


def lottery_figure(records: list[Record], out: str | Path, metric: str = "test_accuracy",
                   series: list[str] | None = None, title: str | None = None) -> Path:
    """Accuracy vs percent of weights remaining (log x, 100% on the left), one line per series, seed error bars."""
    metric = resolve_metric(records, metric)
    finished = [r for r in records if r.run.finished and r.value(metric) is not None]
    if not finished:
        raise UserError(f"nothing to plot: no finished run reports {metric}")
    keys = series if series is not None else _series_keys(records, {"level", "sparsity", "remaining_fraction", "row"})
    groups: dict[tuple, dict[float, Cell]] = {}
    behind: dict[tuple, list[Record]] = {}  # the records behind each point, for the title's error-bar phrase
    for record in finished:
        remaining = remaining_fraction(record)
        if remaining is None or remaining <= 0:
            continue
        label = tuple(_hashable(record.get(k)) for k in keys)
        cell = groups.setdefault(label, {}).setdefault(round(remaining, 6), Cell())
        cell.add(record, metric)  # a level shared by several runs is one training: counted once
        behind.setdefault((label, round(remaining, 6)), []).append(record)
    if not groups:
        raise UserError("nothing to plot: no run has a sparsity or remaining_fraction")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = "osD^v<>ph*"
    for index, (label, points) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        xs = sorted(points, reverse=True)
        means = [points[x].mean for x in xs]
        stds = [points[x].std or 0.0 for x in xs]
        name = _series_label(keys, label)
        if len(xs) == 1 and xs[0] >= 0.999:  # a dense baseline: a reference line across the figure
            ax.axhline(means[0], linestyle="--", color="gray", linewidth=1, label=name if name == "dense" else f"{name} (dense)")
            if stds[0]:
                ax.axhspan(means[0] - stds[0], means[0] + stds[0], color="gray", alpha=0.15)
            continue
        ax.errorbar([100 * x for x in xs], means, yerr=stds, marker=markers[index % len(markers)], markersize=4,
                    capsize=3, linewidth=1.4, label=name)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = remaining_ticks([100 * x for points in groups.values() for x in points])
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:.3g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("percent of weights remaining (log scale)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric.replace('_', ' ')} vs weights remaining ({spread_phrase(records, behind.values())})",
                 fontsize=10)
    return _save(fig, out)


def remaining_ticks(percents: list[float], spacing: float = 1.4) -> list[float]:
    """x ticks where the points sit (percent remaining, largest first), dropping any closer than `spacing` times
    the previous tick on the log axis so labels do not overlap: 100, 50, 25 for a prune.rate=0.5 sweep."""
    ticks: list[float] = []
    for value in sorted({round(p, 6) for p in percents}, reverse=True):
        if not ticks or ticks[-1] / value >= spacing:
            ticks.append(value)
    return ticks


def _path_rows(records: list[Record]) -> list[Record]:
    return [r for r in records if r.run.finished and r.row_kind == "row" and isinstance(r.row.get("alpha"), (int, float))]


def path_figure(records: list[Record], out: str | Path, title: str | None = None) -> Path:
    """Loss and accuracy along an interpolation path, one line per variant (before/after alignment)."""
    rows = _path_rows(records)
    if not rows:
        raise UserError("nothing to plot: no run has rows with an alpha (an interpolation path)")
    # Variant = the rows' non-numeric fields (e.g. aligned: true/false, split) plus what differs between runs.
    variant_fields = sorted({k for r in rows for k, v in r.row.items()
                             if k not in ("alpha", "row") and not (isinstance(v, (int, float)) and not isinstance(v, bool))})
    run_keys = [k for k in varying_keys(rows) if k not in ("row", "level")]
    metric_fields = sorted({k for r in rows for k, v in r.row.items() if k not in ("alpha", "row")
                            and isinstance(v, (int, float)) and not isinstance(v, bool)})
    panels = [("loss", [f for f in metric_fields if "loss" in f]), ("accuracy", [f for f in metric_fields if "acc" in f])]
    panels = [(name, fields) for name, fields in panels if fields]
    if not panels:
        raise UserError("nothing to plot: the path rows have no loss or accuracy fields")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (panel, fields) in zip(axes[0], panels):
        lines: dict[tuple, dict[float, Cell]] = {}
        behind: dict[tuple, list[Record]] = {}
        for record in rows:
            # A list value (model.widths=[64,64,64]) becomes a tuple: the line's key must be hashable.
            variant = tuple(_hashable(record.row.get(f)) for f in variant_fields) + tuple(
                _hashable(record.get(k)) for k in run_keys)
            for field_name in fields:
                value = record.row.get(field_name)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    key = variant + ((field_name,) if len(fields) > 1 else ())
                    lines.setdefault(key, {}).setdefault(float(record.row["alpha"]), Cell()).values.append(float(value))
                    behind.setdefault((key, float(record.row["alpha"])), []).append(record)
        names = variant_fields + run_keys + (["metric"] if len(fields) > 1 else [])
        for key, points in sorted(lines.items(), key=lambda kv: str(kv[0])):
            xs = sorted(points)
            ax.errorbar(xs, [points[x].mean for x in xs], yerr=[points[x].std or 0.0 for x in xs], marker="o",
                        markersize=3, capsize=2, label=", ".join(f"{n}={display(v)}" for n, v in zip(names, key)) or panel)
        ax.set_xlabel("interpolation coefficient alpha (0 = model A, 1 = model B)")
        ax.set_ylabel(panel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"interpolation path ({spread_phrase(records, behind.values())})", fontsize=10)
    return _save(fig, out)


def bar_figure(table: Table, out: str | Path, title: str | None = None, records: list[Record] | None = None) -> Path:
    """One bar per table cell (rows grouped, columns side by side), std over the cell's runs as error bars.

    `records` (those the table was built from) let the title say what the error bars are over.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(table.rows) * max(1, len(table.cols))), 3.8))
    width = 0.8 / max(1, len(table.cols))
    top = 0.0
    for j, col in enumerate(table.cols):
        xs, means, stds = [], [], []
        for i, row in enumerate(table.rows):
            cell = table.cell(row, col)
            if cell.values:
                xs.append(i + (j - (len(table.cols) - 1) / 2) * width)
                means.append(cell.mean)
                stds.append(cell.std or 0.0)
        if not xs:
            continue
        label = table.col_label(col) or None
        bars = ax.bar(xs, means, width=width * 0.95, yerr=stds, capsize=4, label=label, color=f"C{j % 10}")
        top = max([top] + [m + s for m, s in zip(means, stds)])
        for bar, mean in zip(bars, means):
            ax.annotate(f"{mean:.3f}", (bar.get_x() + bar.get_width() / 2, mean), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 3), textcoords="offset points")
    ax.set_xticks(range(len(table.rows)))
    ax.set_xticklabels([", ".join(display(v) for v in row) for row in table.rows])
    ax.set_xlabel(" / ".join(table.row_keys))
    ax.set_ylabel(table.metric.replace("_", " "))
    ax.set_ylim(0, top * 1.18 if top > 0 else 1)  # headroom for the value labels
    if any(table.col_keys):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    if records is not None:
        phrase = spread_phrase(records, cell_records(table, records).values())
    else:
        largest = max((cell.n for cell in table.cells.values()), default=0)
        phrase = "one run per bar, no error bars" if largest < 2 else f"mean ± std over up to {largest} runs"
    ax.set_title(title or f"{table.metric.replace('_', ' ')} ({phrase})", fontsize=10)
    return _save(fig, out)


def numeric_axis(table: Table) -> bool:
    """True when the rows are one numeric key with at least 3 values (a sweep to draw as a curve)."""
    if len(table.row_keys) != 1 or len(table.rows) < 3:
        return False
    return all(isinstance(row[0], (int, float)) and not isinstance(row[0], bool) for row in table.rows)


def line_figure(table: Table, out: str | Path, title: str | None = None) -> Path:
    """The metric against the numeric row key (log x when it spans more than 20x), one line per column."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    xs_all = [float(row[0]) for row in table.rows]
    for j, col in enumerate(table.cols):
        points = [(float(row[0]), table.cell(row, col)) for row in table.rows]
        points = [(x, cell) for x, cell in points if cell.values]
        if not points:
            continue
        label = table.col_label(col) or None
        ax.errorbar([x for x, _ in points], [c.mean for _, c in points], yerr=[c.std or 0.0 for _, c in points],
                    marker="o", markersize=3, capsize=2, label=label, color=f"C{j % 10}")
    if min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(table.row_keys[0])
    ax.set_ylabel(table.metric.replace("_", " "))
    if any(table.col_keys):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{table.metric.replace('_', ' ')} vs {table.row_keys[0]} (mean ± std over seeds)", fontsize=10)
    return _save(fig, out)


def choose_kind(records: list[Record]) -> str:
    """`path` for runs with alpha rows, `lottery` when sparsity/levels vary, else `bar`."""
    if _path_rows(records):
        return "path"
    finished = [r for r in records if r.run.finished]
    fractions = {round(f, 6) for f in (remaining_fraction(r) for r in finished) if f is not None}
    if any(r.row_kind == "level" for r in finished) or len(fractions) > 1:
        return "lottery"
    return "bar"


def read_metrics(run_dir: str | Path) -> MetricRows:
    """Rows of a run's metrics.jsonl (`store.metrics`: a torn last line, from a killed run, is left out)."""
    if not metrics_file(run_dir).exists():  # a FIFO or device there is refused by the reader, not called absent
        raise UserError(f"{run_dir} has no metrics.jsonl")
    return read_metric_rows(run_dir)


def curves_figure(run_dir: str | Path, out: str | Path, metric: str = "test_accuracy") -> Path:
    """Training curves of one run, one line per prune level, read from metrics.jsonl."""
    metric = METRIC_ALIASES.get(metric, metric)
    split, _, name = metric.partition("_")
    if not name:
        raise UserError(f"--metric {metric}: curves need <split>_<metric>, e.g. test_accuracy or val_loss")
    all_rows = read_metrics(run_dir)
    if all_rows.torn:
        print(f"note: {metrics_file(run_dir)} ends in a line cut short (a killed run?); it is left out",
              file=sys.stderr)
    rows = [r for r in all_rows if r.get("split") == split and r.get("metric") == name
            and isinstance(r.get("value"), (int, float)) and (r.get("level") is None or type(r["level"]) is int)]
    if not rows:
        raise UserError(f"{run_dir}/metrics.jsonl has no rows with split={split} metric={name}")
    by_level: dict[Any, list[tuple[int, float]]] = {}
    for row in rows:
        by_level.setdefault(row.get("level"), []).append((int(row["step"]), float(row["value"])))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    levels = sorted(by_level, key=lambda level: -1 if level is None else level)
    colormap = plt.get_cmap("viridis")
    summary_levels = {}
    from overparam.store.load import saved_summary

    summary = saved_summary(run_dir)
    if summary is not None:
        levels_saved = summary.get("levels")
        summary_levels = {lv.get("level"): lv for lv in (levels_saved if isinstance(levels_saved, list) else [])
                          if isinstance(lv, dict)}
    for index, level in enumerate(levels):
        points = sorted(dict(by_level[level]).items())  # a resumed phase may log a step twice: keep the last
        label = "dense" if level is None else f"level {level}"
        remaining = summary_levels.get(level, {}).get("remaining_fraction")
        if isinstance(remaining, (int, float)):
            label += f" ({100 * remaining:.1f}% left)"
        ax.plot([p[0] for p in points], [p[1] for p in points], color=colormap(index / max(1, len(levels) - 1)),
                linewidth=1.3, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(levels) > 6 else 1)
    ax.set_title(f"{Path(run_dir).name}: {metric.replace('_', ' ')} per level", fontsize=10)
    return _save(fig, out)


def _hashable(value):
    """Lists (and lists in lists) as tuples, so a config value can be part of a dictionary key."""
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value
