"""Tables and figures a person reads: pruning sweeps by `% remaining`, merge rows by name, honest error bars.

- A pruning sweep (records that are levels) is laid out with one row per `% remaining` (100, 80,
  64, ...; levels of different runs with the same remaining fraction share a row), not the per-level
  sparsity floats against level columns.
- Runs whose summary has `rows` (merges, interpolation paths, generations) are labeled by the row
  fields that tell them apart (`role`, `name`, `aligned`, `alpha`, `generation`, ...), not `row=0..4`.
- `spread_phrase` says what a figure's error bars are over: seeds, other pooled keys, or nothing.
"""

from __future__ import annotations

from typing import Any, Iterable

from overparam.report.index import SEED_KEYS, Record, varying_keys

PERCENT_REMAINING = "% remaining"
# Fields of a summary row that identify it, in the order they label it.
ROW_LABEL_FIELDS = ("role", "name", "aligned", "alpha", "generation", "seed", "ingredient")
# Config keys a `% remaining` row already accounts for.
SPARSITY_KEYS = ("sparsity", "level", "remaining_fraction", PERCENT_REMAINING)


def percent_remaining(record: Record) -> float | None:
    """Percent of prunable weights left, at the level's nominal fraction when the counts only round it.

    Each model rounds its own weight counts (IMP level L keeps round(N * (1-rate)^L) of its N weights), so
    two models of one sweep report 63.99% and 64.0% for one level; the nominal fraction makes them one row.
    """
    value = record.get("remaining_fraction")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        sparsity = record.get("sparsity")
        if not _number(sparsity):
            return None
        value = 1.0 - float(sparsity)
    return round(100.0 * _nominal(record, float(value)), 2)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _nominal(record: Record, actual: float) -> float:
    """The nominal remaining fraction `actual` rounds, else `actual`: a level's (1-rate)^L or the target 1-sparsity.

    A count is off its nominal by half a weight at most; a fraction further away than that (and than 0.1%,
    for runs that do not report their count) is a real difference and keeps its own row.
    """
    config = record.run.flat_config
    nominals = []
    if _number(config.get("sparsity")):
        nominals.append(1.0 - float(config["sparsity"]))
    level, rate = (record.row or {}).get("level"), config.get("prune.rate")
    if record.row_kind == "level" and _number(level) and _number(rate) and 0.0 < rate < 1.0:
        nominals.append((1.0 - float(rate)) ** int(level))
    if not nominals or actual <= 0.0:
        return actual
    nominal = min(nominals, key=lambda n: abs(n - actual))
    count = record.get("remaining_weights")
    tolerance = max(1e-3, 1.0 / count) if _number(count) and count > 0 else 1e-3
    return nominal if abs(nominal - actual) <= tolerance * actual else actual


def is_pruning_sweep(records: Iterable[Record]) -> bool:
    """True when some records are pruning levels with more than one remaining fraction."""
    levels = {percent_remaining(r) for r in records if r.row_kind == "level"}
    return len(levels) > 1


def row_label_keys(records: list[Record]) -> list[str]:
    """The fewest row fields (in ROW_LABEL_FIELDS order) that tell the rows of one run apart."""
    rows = [r for r in records if r.row_kind == "row"]
    if not rows:
        return []
    chosen: list[str] = []

    def distinct(keys: list[str]) -> int:
        return len({(id(r.run), *(_hashable(r.row.get(k)) for k in keys)) for r in rows})

    target = len({(id(r.run), r.row.get("row")) for r in rows})
    for key in ROW_LABEL_FIELDS:
        if not any(key in r.row for r in rows):
            continue
        if distinct(chosen + [key]) > distinct(chosen):
            chosen.append(key)
        if distinct(chosen) == target:
            return chosen
    return chosen + ["row"]  # rows that no field tells apart keep their number


def readable_layout(records: list[Record], varying: list[str]) -> list[str]:
    """The keys that vary, with `level`/`sparsity` replaced by `% remaining` and `row` by the row's own labels."""
    keys = list(varying)
    if is_pruning_sweep(records):
        keys = [PERCENT_REMAINING] + [k for k in keys if k not in SPARSITY_KEYS]
    if "row" in keys:
        index = keys.index("row")
        keys[index:index + 1] = [k for k in row_label_keys(records) if k not in keys]
    return keys


# Keys a column header names at most; the others that tell columns apart are said in a note.
MAX_HEADER_KEYS = 4


def _constant_within(records: list[Record], col_keys: list[str], keys: list[str]) -> list[str]:
    """The keys with one value within every column that `col_keys` make."""
    columns: dict[tuple, list[Record]] = {}
    for record in records:
        columns.setdefault(tuple(_hashable(label_value(record, k)) for k in col_keys), []).append(record)
    return [key for key in keys
            if all(len({_hashable(label_value(r, key)) for r in group}) == 1 for group in columns.values())]


def bundle_columns(records: list[Record], row_keys: list[str], col_keys: list[str]) -> tuple[list, list, list]:
    """Row keys that are constant within every column move into the columns: two sweeps that differ in many
    keys give rows that vary (`% remaining`) and one column per sweep, not a row label of every value.

    The column is the chosen one, or the row key under which the most row keys move (a key that tells the
    sweeps apart). Returns (row keys, column keys, the bundle: the column key and the keys moved to it); nothing
    moves when no row key would be left.
    """
    if len(col_keys) != 1 or not records:
        return row_keys, col_keys, []
    best, most = (row_keys, col_keys, []), 0
    order = {key: index for index, key in enumerate(row_keys + col_keys)}
    for column in [*col_keys, *row_keys]:
        rows = [k for k in row_keys + col_keys if k != column]
        moved = _constant_within(records, [column], rows)
        if most < len(moved) < len(rows):
            bundle = sorted([column, *moved], key=order.__getitem__)
            best, most = ([k for k in rows if k not in moved], bundle, bundle), len(moved)
    return best


def header_keys(col_keys: list[str], cols: list[tuple], bundle: list[str]) -> tuple[list[str], list[str]]:
    """(keys a column header names, bundled keys that differ between columns but are left out of the header).

    Column keys outside a bundle (asked for, or one chosen key) are always named. Of a bundle's keys, one with
    one value in every column tells nothing apart and is dropped; keys set in every column come before those
    only some columns have (a method's own keys, null elsewhere); headers name at most MAX_HEADER_KEYS keys.
    """
    candidates = []
    for index, key in enumerate(col_keys):
        values = {_hashable(col[index]) for col in cols}
        if key in bundle and len(values) > 1:
            candidates.append((None in values, index, key))
    ranked = [key for _, _, key in sorted(candidates)]
    room = max(0, MAX_HEADER_KEYS - (len(col_keys) - len(bundle)))
    named = set(ranked[:room]) | {key for key in col_keys if key not in bundle}
    return [key for key in col_keys if key in named], ranked[room:]


def label_value(record: Record, key: str) -> Any:
    """A record's value for a table key, derived keys included."""
    if key == PERCENT_REMAINING:
        return percent_remaining(record)
    return record.get(key)


def has_key(record: Record, key: str) -> bool:
    """True when the record answers to `key` (derived keys included)."""
    if key == PERCENT_REMAINING:
        return percent_remaining(record) is not None
    return record.has(key)


def descending(key: str) -> bool:
    """Keys whose rows read best from the largest value down (dense first in a pruning table)."""
    return key == PERCENT_REMAINING


def spread_phrase(records: list[Record], groups: Iterable[list[Record]]) -> str:
    """What error bars over `groups` (the records behind each point) are over, for a figure's title."""
    groups = [g for g in groups if g]
    if not groups or max(len(g) for g in groups) < 2:
        return "one run per point, no error bars"
    pooled: list[str] = []
    seeds = set()
    for group in groups:
        seeds.update(_hashable(r.get(key)) for r in group for key in SEED_KEYS)
    for key in varying_keys(records, include_seed=True):
        if key in SEED_KEYS or key in SPARSITY_KEYS or key == "row":
            continue
        if any(len({_hashable(r.get(key)) for r in group}) > 1 for group in groups):
            pooled.append(key)
    seed_varies = any(len({_hashable(r.get(k)) for r in g for k in SEED_KEYS}) > 1 for g in groups)
    largest = max(len(g) for g in groups)
    if seed_varies and not pooled:
        count = len({_hashable(r.get("seed")) for g in groups for r in g})
        return f"mean ± std over {count} seeds"
    if seed_varies:
        return f"mean ± std over seeds and {', '.join(pooled)}"
    if pooled:
        return f"mean ± std over {', '.join(pooled)} (one seed)"
    return f"mean ± std over up to {largest} runs of one config (same seed)"


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return repr(value)
    return value
