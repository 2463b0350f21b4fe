"""A run's snapshots in training order, for merges that average a run's own checkpoints.

Snapshots are the `checkpoints/step_<N>.safetensors` files `train.snapshot_every` writes, else the
`level_<L>/model.safetensors` models of a level-by-level run (IMP, SMS). Only the store knows these names.
"""

from __future__ import annotations

import re
from pathlib import Path

from overparam.store.load import RunRef

_STEP = re.compile(r"step_(\d+)")
_LEVEL = re.compile(r"level_(\d+)")


def snapshots(root: str | Path) -> list[RunRef]:
    """References to a run's snapshots sorted by step (step_<N> checkpoints), else by level (level_<L>
    models); [] when it has neither."""
    root = Path(root)
    steps = [(int(match.group(1)), path.stem) for path in (root / "checkpoints").glob("step_*.safetensors")
             if (match := _STEP.fullmatch(path.stem))]
    if not steps:
        steps = [(int(match.group(1)), path.parent.name) for path in root.glob("level_*/model.safetensors")
                 if (match := _LEVEL.fullmatch(path.parent.name))]
    return [RunRef(root, tag) for _, tag in sorted(steps)]
