"""Group records into table cells: rows x columns of config keys, seeds pooled into mean, std and n."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

from overparam.errors import UserError
from overparam.report.index import Record, SEED_KEYS, is_identity_key, varying_keys
from overparam.report.readable import (PERCENT_REMAINING, SPARSITY_KEYS, bundle_columns, descending, has_key,
                                       header_keys, label_value, readable_layout, row_label_keys)

AGGREGATES = ("mean", "mean_std", "max")
# Short names a user may type for common metrics and keys.
METRIC_ALIASES = {"acc": "test_accuracy", "accuracy": "test_accuracy", "val_acc": "val_accuracy",
                  "loss": "test_loss", "ppl": "test_perplexity", "perplexity": "test_perplexity",
                  "bpb": "test_bits_per_byte", "bits_per_byte": "test_bits_per_byte"}
KEY_ALIASES = {"remaining": "remaining_fraction", "%remaining": PERCENT_REMAINING, "percent_remaining": PERCENT_REMAINING}


def resolve_metric(records: list[Record], name: str) -> str:
    """`name` itself when some record reports it (a row's `loss`), else its alias (`loss` -> `test_loss`)."""
    if name in METRIC_ALIASES and not any(r.value(name) is not None for r in records):
        return METRIC_ALIASES[name]
    return name


@dataclass
class Cell:
    """The runs behind one table cell and their statistics."""

    values: list[float] = field(default_factory=list)
    failed: int = 0
    unfinished: int = 0
    missing: int = 0  # finished runs that do not report the metric
    shared: int = 0  # records whose weights another record of the cell already counts (one lineage)
    lineages: set = field(default_factory=set)

    def add(self, record, metric: str) -> bool:
        """Count one record into the cell; False when its run has not finished (failed or running).

        n counts independent trainings: a record whose lineage (the run and phase that trained its
        weights, e.g. an IMP level shared by a sparsity sweep through the level cache) is already in
        the cell adds nothing, so the mean and std are over distinct lineages.
        """
        lineage = getattr(record, "lineage", None)
        if lineage is not None and record.run.finished:
            if lineage in self.lineages:
                self.shared += 1
                return True
            self.lineages.add(lineage)
        if not record.run.finished:
            if record.status == "failed":
                self.failed += 1
            else:
                self.unfinished += 1
            return False
        value = record.value(metric)
        if value is None or not math.isfinite(value):
            self.missing += 1
        else:
            self.values.append(value)
        return True

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over independent trainings (n-1); None with fewer than two values."""
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def max(self) -> float | None:
        return max(self.values) if self.values else None

    def marks(self) -> str:
        """`[1 failed, 2 unfinished]` when some runs did not give a value."""
        parts = [f"{count} {name}" for count, name in ((self.failed, "failed"), (self.unfinished, "unfinished"),
                                                          (self.missing, "missing")) if count]
        return f"[{', '.join(parts)}]" if parts else ""

    def text(self, agg: str = "mean_std", digits: int = 4) -> str:
        """The cell as a human reads it: `0.9123 ± 0.0040 (n=3)`, plus marks for failed runs."""
        if not self.values:
            body = "—"
        elif agg == "max":
            body = f"{self.max:.{digits}f}"
        elif agg == "mean":
            body = f"{self.mean:.{digits}f}"
        else:
            std = f" ± {self.std:.{digits}f}" if self.std is not None else ""
            body = f"{self.mean:.{digits}f}{std} (n={self.n})"
        marks = self.marks()
        if marks and not self.values:
            return marks.strip("[]")
        return f"{body} {marks}".strip()

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "max": self.max, "values": self.values,
                "failed": self.failed, "unfinished": self.unfinished, "missing": self.missing, "shared": self.shared}


@dataclass
class Table:
    """Aggregated metric by (row key values) x (column key values)."""

    metric: str
    row_keys: list[str]
    col_keys: list[str]
    rows: list[tuple]
    cols: list[tuple]
    cells: dict[tuple[tuple, tuple], Cell]
    pooled: list[str]  # keys that vary inside cells (besides seeds): the reader should know
    problems: list[tuple[str, str, str]]  # (run dir, status, reason) of failed / unfinished runs
    # The column key with the row keys constant within each of its columns, moved to it (see bundle_columns).
    bundle: list[str] = field(default_factory=list)

    def cell(self, row: tuple, col: tuple) -> Cell:
        return self.cells.get((row, col), Cell())

    def header_keys(self) -> tuple[list[str], list[str]]:
        """(column keys the headers name, column keys that differ but are left out of them)."""
        return header_keys(self.col_keys, self.cols, self.bundle)

    def col_label(self, col: tuple) -> str:
        """A column's header: `key=value` for the keys that tell columns apart (a bundled key's null left out)."""
        named, _ = self.header_keys()
        return ", ".join(f"{k}={display(v)}" for k, v in zip(self.col_keys, col)
                         if k in named and not (v is None and k in self.bundle))


def display(value: Any) -> str:
    """A config value as a table label."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(display(v) for v in value) + "]"
    return str(value)


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def parse_keys(text: str | None) -> list[str] | None:
    """`"method,sparsity"` -> ["method", "sparsity"]; None stays None (pick automatically)."""
    if text is None:
        return None
    keys = [KEY_ALIASES.get(k.strip(), k.strip()) for k in text.split(",") if k.strip()]
    return keys


def default_layout(records: list[Record], rows: list[str] | None, cols: list[str] | None) -> tuple[list[str], list[str]]:
    """Row and column keys: those given, else the keys that vary (last one as columns)."""
    if rows is not None and cols is not None:
        return rows, cols
    varying = [k for k in readable_layout(records, varying_keys(records))
               if k not in (rows or []) and k not in (cols or [])]
    if rows is None and cols is None:
        labels = [k for k in varying if k in row_label_keys(records)]
        if labels:  # a run's own rows (a merge's models, a path's points) stay rows; a varying config key is columns
            others = [k for k in varying if k not in labels]
            return labels + others[:-1], others[-1:]
        if len(varying) >= 2:
            return varying[:-1], varying[-1:]
        return (varying or ["method"]), []
    if rows is None:
        return (varying or ["method"]), cols or []
    # Rows named by the user already tell a run's rows apart (`--rows measure`): no `row` column then.
    varying = [k for k in varying if k != "row"]
    return rows, (varying[-1:] if varying and len(varying) == 1 else [])


def build_table(records: list[Record], *, metric: str = "test_accuracy", rows: list[str] | None = None,
                cols: list[str] | None = None, warn=None, skipped=()) -> Table:
    """Aggregate `metric` over seeds into a rows x cols table; failed/unfinished runs are counted, not dropped.

    `skipped`: unreadable runs (RunInfo), listed among the runs without results and in no cell."""
    metric = resolve_metric(records, metric)
    row_keys, col_keys = default_layout(records, rows, cols)
    bundle: list[str] = []
    if rows is None and cols is None:
        row_keys, col_keys, bundle = bundle_columns(records, row_keys, col_keys)
    finished = [r for r in records if r.run.finished]
    if finished and not any(r.value(metric) is not None for r in finished):
        available = sorted({k for r in finished for k, v in {**(r.run.summary or {}), **(r.row or {})}.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        reasons = sorted({str(why) for r in finished for key, why in
                          ((r.run.summary or {}).get("missing_metrics") or {}).items() if key == metric})
        if reasons:  # the run said why it has no such number
            raise UserError(f"no run reports the metric {metric!r}: {'; '.join(reasons)}")
        raise UserError(f"no run reports the metric {metric!r}; available: {', '.join(available)}")
    for key in row_keys + col_keys:
        if not any(has_key(r, key) for r in records):
            raise UserError(f"no run has the key {key!r} (use a dotted config key such as method, sparsity, "
                            f"model.widths, or level)")
    cells: dict[tuple[tuple, tuple], Cell] = {}
    row_values: dict[tuple, None] = {}
    col_values: dict[tuple, None] = {}
    problems: list[tuple[str, str, str]] = []
    seen_problem_runs: set[int] = set()
    for record in records:
        row = tuple(_label_value(record, key) for key in row_keys)
        col = tuple(_label_value(record, key) for key in col_keys)
        row_values.setdefault(row)
        col_values.setdefault(col)
        cell = cells.setdefault((row, col), Cell())
        if not cell.add(record, metric) and id(record.run) not in seen_problem_runs:
            seen_problem_runs.add(id(record.run))
            problems.append((str(record.run.path), record.status, record.run.reason or ""))
    problems += [(str(run.path), run.status, run.reason or "") for run in skipped]
    pooled = _pooled_keys(records, set(row_keys) | set(col_keys))
    if pooled and warn is not None:
        warn(f"cells pool runs that differ in {', '.join(pooled)} (add them to --rows/--cols to split)")
    table = Table(metric=metric, row_keys=row_keys, col_keys=col_keys,
                  rows=_sorted_labels(row_values, row_keys), cols=_sorted_labels(col_values, col_keys),
                  cells=cells, pooled=pooled, problems=problems, bundle=bundle)
    unnamed = table.header_keys()[1]
    if unnamed and warn is not None:
        warn(f"columns also differ in {', '.join(unnamed)} (--format csv or json gives every key)")
    return table


def cell_records(table: Table, records: list[Record]) -> dict[tuple[tuple, tuple], list[Record]]:
    """The finished records behind each cell of `table` (built from `records`)."""
    out: dict[tuple[tuple, tuple], list[Record]] = {}
    for record in records:
        if not record.run.finished or record.value(table.metric) is None:
            continue
        row = tuple(_label_value(record, key) for key in table.row_keys)
        col = tuple(_label_value(record, key) for key in table.col_keys)
        out.setdefault((row, col), []).append(record)
    return out


def _sorted_labels(values, keys: list[str]) -> list[tuple]:
    """Label tuples in reading order: numbers ascending, `% remaining` from 100 down."""
    def key_of(label: tuple) -> tuple:
        parts = []
        for key, value in zip(keys, label):
            part = _sort_key(value)
            if descending(key) and part[0] == 1:
                part = (1, -part[1], "")
            parts.append(part)
        return tuple(parts)

    return sorted(values, key=key_of)


def _label_value(record: Record, key: str) -> Any:
    value = label_value(record, key)
    if isinstance(value, list):
        return display(value)
    return value


def _pooled_keys(records: list[Record], shown: set[str]) -> list[str]:
    """Keys that vary within at least one cell although they are neither shown nor seeds."""
    by_level = PERCENT_REMAINING in shown  # the remaining fraction stands for sparsity and level
    return [key for key in varying_keys(records) if key not in shown and key not in SEED_KEYS
            and is_identity_key(key) and not any(key.startswith(f"{s}.") for s in shown)
            and not (by_level and key in SPARSITY_KEYS) and key != "row"]


def stderr_warn(message: str) -> None:
    """Print a warning line for the table's reader."""
    print(f"runner table: note: {message}", file=sys.stderr)
