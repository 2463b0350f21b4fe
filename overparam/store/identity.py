"""The one rule that decides which config keys make two runs the same run.

The config hash (run.json's `config_hash`, checked when a run directory is resumed), the level
cache key (levels shared by a sparsity sweep), the table's grouping of runs into cells and
`runner reproduce`'s config comparison all ask this module; nothing else lists identity keys.

A key is *not* part of a run's identity when it says where or how a run is observed, judged or
scheduled, never what it computes:

- top-level `paths`, `logger`, `hydra`, `experiment_name`, `claims`, `stages`, `report`, `objective`;
- `train.checkpoint_seconds`, `train.checkpoint_every`: the RNG is reseeded at every resume point,
  written or not, so how often checkpoints are written never changes the numbers;
- `hardware.threads`: a finished sweep resumes (and its runs group) under another thread count;
- `prune.cache`: whether levels are shared between jobs, not what a level computes;
- `merge.allow_val_overlap`: an opt-in to a check, not a change of the merge;
- `dataset.root`, `dataset.cache_dir`: where a dataset's files or download cache lie on one machine (a run
  from elsewhere is read and reproduced from this machine's data folder).

And a key set to null is dropped: the project's rule is that a new option defaults to a value
that removes its effect, so adding one never changes the hash of existing runs.

The level cache key additionally ignores `sparsity` (IMP levels are a prefix sequence that does
not depend on the target) and whatever the caller drops (a control's name).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

# Top-level keys that never belong to a run's identity.
NON_IDENTITY_KEYS = ("paths", "logger", "hydra", "experiment_name", "claims", "stages", "report", "objective")
# Dotted keys below the top level that never belong to it either.
NON_IDENTITY_NESTED = ("train.checkpoint_seconds", "train.checkpoint_every", "hardware.threads", "prune.cache",
                       "merge.allow_val_overlap", "dataset.root", "dataset.cache_dir")
# Keys a level lineage does not depend on (on top of the above).
LEVEL_INDEPENDENT_KEYS = ("sparsity",)


def is_identity_key(dotted: str) -> bool:
    """True for a dotted config key (`optim.lr`, `hardware.threads`) that changes what a run computes."""
    top = dotted.split(".", 1)[0]
    if top in NON_IDENTITY_KEYS:
        return False
    return not any(dotted == key or dotted.startswith(f"{key}.") for key in NON_IDENTITY_NESTED)


def _strip(value: Any, prefix: str = "") -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in sorted(value.items(), key=lambda kv: str(kv[0])):
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if item is None or not is_identity_key(dotted):
                continue
            stripped = _strip(item, dotted)
            if isinstance(item, dict) and item and not stripped:
                continue  # a section holding only observation keys is no section at all
            out[str(key)] = stripped
        return out
    if isinstance(value, (list, tuple)):
        return [_strip(v, prefix) for v in value]
    return value


def identity(config: dict, *, drop: Iterable[str] = ()) -> dict:
    """The part of a resolved config that makes a run what it is (also without the top-level keys `drop`)."""
    dropped = set(drop)
    return _strip({k: v for k, v in config.items() if k not in dropped})


def _digest(tree: Any) -> str:
    payload = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def config_hash(config: dict) -> str:
    """A run's identity: sha256 (16 hex digits) over `identity(config)`."""
    return _digest(identity(config))


def level_cache_key(config: dict, *, drop: Iterable[str] = ()) -> str:
    """Identity of a level lineage: the config hash without `sparsity` (and the top-level keys `drop`)."""
    return _digest(identity(config, drop=(*LEVEL_INDEPENDENT_KEYS, *drop)))


def identity_differences(left: dict, right: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, left value, right value) of every identity key whose values differ."""
    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(tree, dict) and tree:
            out: dict[str, Any] = {}
            for key, value in tree.items():
                out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
            return out
        return {prefix: tree} if prefix else {}

    a, b = flat(identity(left)), flat(identity(right))
    return [(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": "mlp", "model.widths": [256, 256], ...}: dotted keys; a group node also maps to its name."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        if prefix and "name" in tree and not isinstance(tree["name"], (dict, list)):
            out[prefix] = tree["name"]
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif prefix:
        out[prefix] = tree
    return out
