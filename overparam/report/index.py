"""Index run directories: status, flattened config and summary rows, read from small files only.

A run directory is one that holds `run.json` or `.hydra/config.yaml`. The config comes from run.json's
`config` entry (the resolved config the store writes when a run opens: one JSON read per run); runs
written before that entry existed fall back to `.hydra/config.yaml`, read with PyYAML's safe loader.
Each run gives one or more
*records*, the unit a table cell aggregates:

- a run whose summary has `"levels": [...]` (a pruning run) gives one record per level;
- a run whose summary has `"rows": [...]` gives one record per row;
- any other finished run gives one record (its flat summary);
- a failed or unfinished run gives one record with no values, so tables can show it;
- an unreadable run (a damaged run.json, summary.json or .hydra file) gives none: it has no trustworthy
  config or values, so it stays out of every aggregate and layout, and listings name it with the reason.

A record's fields are looked up in this order: the row (level or row entry), the flat summary,
then the config (dotted keys; a config group such as `model` also answers to its `name`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from overparam.errors import UserError
from overparam.store.identity import flatten  # noqa: F401  (dotted keys of a config; used below and by callers)
from overparam.store import discover

# Keys over which a table cell aggregates (mean, std, n) instead of splitting.
SEED_KEYS = ("seed",)
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file of a run (Hydra's subset read directly, else PyYAML's safe loader); None if absent.

    Reads through `overparam.store.load.read_yaml`: no tags, no aliases, bounded size and nesting;
    anything else is one clear line (UserError).
    """
    from overparam.store.readers import read_yaml

    return read_yaml(path)


def _read_json(path: Path) -> Any:
    from overparam.store.readers import read_json_file

    return read_json_file(path)


def _typed(value: Any, kind: type, path: Path) -> Any:
    if value is not None and not isinstance(value, kind):
        raise UserError(f"{path}: expected a {'mapping' if kind is dict else 'list'}, got {type(value).__name__}")
    return value




def _resolve_references(flat: dict[str, Any]) -> dict[str, Any]:
    # Hydra saves config.yaml unresolved; plain `${other.key}` references are common and cheap to resolve.
    for _ in range(3):  # short chains of references
        for key, value in flat.items():
            match = _REFERENCE.match(value) if isinstance(value, str) else None
            if match and match.group(1) in flat:
                target = flat[match.group(1)]
                if not (isinstance(target, str) and target.startswith("${")):
                    flat[key] = target
    return flat


def is_identity_key(key: str) -> bool:
    """True for config keys that change what a run computes (store.identity's rule, the hash's own)."""
    from overparam.store.identity import is_identity_key as rule

    return rule(key)


@dataclass
class RunInfo:
    """One run directory as read from disk."""

    path: Path
    status: str  # done | failed | running | unknown | unreadable
    reason: str | None
    config: dict
    flat_config: dict
    summary: dict | None
    overrides: list[str] = field(default_factory=list)
    run_id: str | None = None  # run.json's lineage name (None for runs written before it existed)

    @property
    def finished(self) -> bool:
        return self.status == "done" and self.summary is not None


@dataclass
class Record:
    """One row a table aggregates: a run, or one level/row of a run."""

    run: RunInfo
    row: dict | None = None
    row_kind: str | None = None  # "level" | "row" | None

    @property
    def lineage(self) -> str | None:
        """The training this record's weights come from (`<run_id>/<phase>`); records that share one are
        one independent training, whatever the number of runs they appear in. None: unknown (unique)."""
        if self.row_kind == "level" and self.row is not None:
            value = self.row.get("lineage")
            if isinstance(value, dict):
                from overparam.store.run import lineage_id

                value = lineage_id(value)
            return value if isinstance(value, str) and value else None
        if self.row_kind is None and self.run.run_id:
            return f"{self.run.run_id}/run"
        return None

    @property
    def status(self) -> str:
        return self.run.status if self.run.finished else ("unfinished" if self.run.status in ("running", "unknown")
                                                            else self.run.status)

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the row, the summary, or the config (dotted), in that order."""
        if self.row is not None and key in self.row:
            return self.row[key]
        summary = self.run.summary or {}
        if key in summary and not isinstance(summary[key], (list, dict)):
            return summary[key]
        if key in self.run.flat_config:
            return self.run.flat_config[key]
        return default

    def has(self, key: str) -> bool:
        sentinel = object()
        return self.get(key, sentinel) is not sentinel

    def value(self, metric: str) -> float | None:
        """A numeric metric of this record, or None (missing, not finite, or an unfinished run)."""
        if not self.run.finished:
            return None
        if self.row is not None and metric in self.row:
            raw = self.row[metric]
        else:
            raw = (self.run.summary or {}).get(metric)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return None
        return float(raw)


def _saved_config(path: Path, info: dict) -> tuple[dict, bool]:
    """The run's config and whether it is resolved: run.json's `config`, else `.hydra/config.yaml` (unresolved)."""
    config = info.get("config")
    if isinstance(config, dict):
        return config, True
    config_path = path / ".hydra" / "config.yaml"
    config = load_yaml(config_path)
    if config is None:
        return {}, False
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is not a config (a YAML mapping); it holds a {type(config).__name__}")
    return config, False


def read_run(path: str | os.PathLike) -> RunInfo:
    """Read one run directory (run.json, summary.json; .hydra/ for what run.json does not hold)."""
    path = Path(path)
    info = _typed(_read_json(path / "run.json"), dict, path / "run.json") or {}
    config, resolved = _saved_config(path, info)
    flat_config = flatten(config) if resolved else _resolve_references(flatten(config))
    overrides = _typed(load_yaml(path / ".hydra" / "overrides.yaml"), list, path / ".hydra" / "overrides.yaml") or []
    summary = _typed(_read_json(path / "summary.json"), dict, path / "summary.json")
    status = str(info.get("status") or ("done" if summary is not None else "unknown"))
    return RunInfo(path=path, status=status, reason=info.get("reason"), config=config, flat_config=flat_config,
                   summary=summary, overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
                   run_id=info.get("run_id"))


UNREADABLE = "unreadable"


def read_run_or_unreadable(path: str | os.PathLike) -> RunInfo:
    """`read_run`, or a run with status `unreadable` whose reason is the one-line error (named from the run dir),
    so that one damaged run never hides the others from a listing."""
    path = Path(path)
    try:
        return read_run(path)
    except UserError as exc:
        return RunInfo(path=path, status=UNREADABLE, reason=unreadable_reason(path, exc), config={}, flat_config={},
                       summary=None)


def unreadable_reason(run_dir: str | os.PathLike, exc: UserError) -> str:
    """A reader's one-line error about a file of `run_dir`, named from the run dir (`run.json is not UTF-8 ...`)."""
    reason, prefix = str(exc), f"{run_dir}{os.sep}"
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def unreadable(runs: Iterable[RunInfo]) -> list[RunInfo]:
    """The runs that could not be read."""
    return [run for run in runs if run.status == UNREADABLE]


# Finding runs on disk belongs to store; these names stay importable from here.
is_run_dir, find_runs = discover.is_run_dir, discover.find_runs
_walk_runs, _natural_key = discover.walk_runs, discover.natural_key


def index_runs(paths: Iterable[str | os.PathLike]) -> list[RunInfo]:
    """Read every run directory under `paths` (a damaged one comes back `unreadable`); a UserError when there
    are none, or when none can be read."""
    paths = list(paths)
    run_dirs = find_runs(paths)
    if not run_dirs:
        raise UserError(f"no run directories under {', '.join(map(str, paths))} (looked for run.json or .hydra/)")
    runs = [read_run_or_unreadable(path) for path in run_dirs]
    damaged = unreadable(runs)
    if len(runs) == 1 and damaged:
        read_run(run_dirs[0])  # one run given: its own error, as it was
    if len(damaged) == len(runs):
        raise UserError(f"none of the {len(runs)} run(s) can be read; {damaged[0].path}: {damaged[0].reason}")
    return runs


def records_of(runs: Iterable[RunInfo]) -> list[Record]:
    """Expand runs into records: one per prune level, one per row, else one per run (none for an unreadable run)."""
    records: list[Record] = []
    for run in runs:
        if run.status == UNREADABLE:
            continue
        summary = run.summary or {}
        levels = summary.get("levels") if run.finished else None
        rows = summary.get("rows") if run.finished else None
        if isinstance(levels, list) and levels:
            records.extend(Record(run, dict(level), "level") for level in levels if isinstance(level, dict))
        elif isinstance(rows, list) and rows:
            records.extend(Record(run, {"row": i, **row}, "row") for i, row in enumerate(rows) if isinstance(row, dict))
        else:
            records.append(Record(run))
    return records


def varying_keys(records: list[Record], *, include_seed: bool = False) -> list[str]:
    """Config keys (and `level`) whose value differs between records, in a readable order."""
    runs = {id(r.run): r.run for r in records}.values()
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.flat_config))
    varying = []
    for key in keys:
        if not is_identity_key(key) or (not include_seed and key in SEED_KEYS):
            continue
        # A key a run lacks counts as null: the project's rule is that a null option has no effect.
        if len({_hashable(run.flat_config.get(key)) for run in runs}) > 1:
            varying.append(key)
    # A group that varies (model) already names its sub-keys' change (model.widths): keep the group only.
    varying = [key for key in varying if not any(key.startswith(f"{other}.") for other in varying)]
    if any(r.row_kind == "level" for r in records):
        levels = {r.row.get("level") for r in records if r.row_kind == "level"}
        if len(levels) > 1:
            varying.append("level")
    if any(r.row_kind == "row" for r in records):
        varying.append("row")
    order = {"method": 0, "model": 1, "dataset": 2, "sparsity": 3}
    return sorted(varying, key=lambda k: (order.get(k, 5), k.count("."), k) if k not in ("level", "row") else (9, 0, k))


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value
