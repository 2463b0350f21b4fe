"""Run directories, checkpoints, metrics and resume."""

from overparam.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from overparam.store.checkpoint import load_state, save_state
from overparam.store.run import Run

__all__ = [
    "Run",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_state",
    "read_json",
    "save_state",
]
