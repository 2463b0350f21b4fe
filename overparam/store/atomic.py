"""The store's atomic writes (`overparam.atomic`, below the store and the data loaders) and its JSON reader."""

from __future__ import annotations

import os
from typing import Any

from overparam.atomic import KILL_IN_WRITE_ENV, atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["KILL_IN_WRITE_ENV", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "read_json"]


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read a JSON file, or return `default` when it does not exist (a special file or a malformed one: UserError)."""
    from overparam.store.readers import read_json_file

    value = read_json_file(path)
    return default if value is None else value
