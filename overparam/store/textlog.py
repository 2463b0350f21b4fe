"""A run's human-readable log, `train.log`: plain lines a researcher follows with `tail -f` on a cluster."""

from __future__ import annotations

from pathlib import Path

LOG_NAME = "train.log"


def log_path(run) -> Path:
    """Where the plain log of `run` (a store.Run or anything with `.root`) lives."""
    return Path(run.root) / LOG_NAME


def append_line(path: str | Path, line: str) -> None:
    """Append one line; opened per line so a kill never loses more than the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
