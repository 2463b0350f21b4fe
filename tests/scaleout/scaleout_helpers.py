"""Shared by the scale-out tests: run the real CLI, hash directory trees, compare summaries."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tiny_runs import tiny

# A few seconds of training: enough steps for several checkpoints to kill between.
TINY = tiny(30, "train.checkpoint_every=5", "optim.name=adam", "optim.lr=0.01", eval_every=5, batch_size=None, width=32)


def runner(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`runner <args>` in a subprocess (the console script's own code path)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "overparam.cli.main", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def tree_digest(root: Path) -> str:
    """sha256 over every path, file mode and file content under `root` (empty string hashed if absent)."""
    digest = hashlib.sha256()
    if not root.exists():
        return digest.hexdigest()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def metrics_of(summary):
    """A summary without its timings and lineage (the only keys that differ between equal runs: when, and which
    run trained the weights), also inside rows/levels."""
    if isinstance(summary, dict):
        return {k: metrics_of(v) for k, v in summary.items() if not k.endswith("_seconds") and k != "lineage"}
    if isinstance(summary, list):
        return [metrics_of(v) for v in summary]
    return summary


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
