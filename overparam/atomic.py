"""Atomic file writes: write a temporary file beside the target, fsync, then rename over it.

Below the store and the data loaders alike (a generated dataset's cache file is written this way too)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; run directories are shared, so apply the usual umask instead.
_UMASK = _current_umask()

# Fault injection for the kill-and-resume tests (tests/scaleout): OVERPARAM_KILL_IN_WRITE set to
# "<before|after>:<name part>:<n>[:<signal>]" sends SIGKILL (or the named signal, e.g. SIGTERM) to
# this process during the n-th atomic write of a file whose name contains <name part>, just before
# or just after its rename. Unset: no effect.
KILL_IN_WRITE_ENV = "OVERPARAM_KILL_IN_WRITE"
_kill_counts: dict[str, int] = {}


def _maybe_kill(path: Path, moment: str) -> None:
    spec = os.environ.get(KILL_IN_WRITE_ENV)
    if not spec:
        return
    when, name_part, nth, *which = spec.split(":")
    if when != moment or name_part not in path.name:
        return
    _kill_counts[spec] = _kill_counts.get(spec, 0) + 1
    if _kill_counts[spec] == int(nth):
        import signal

        os.kill(os.getpid(), getattr(signal, which[0]) if which else signal.SIGKILL)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # a full disk or a read-only folder: name the file that was being written
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        _maybe_kill(path, "before")
        os.replace(tmp, path)
        _maybe_kill(path, "after")
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not exc.filename:  # a failed write() names no file: say which
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomic write of a UTF-8 text file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
    # NaN and inf are not JSON; a diverged run must still write a valid file.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomic write of a JSON file (non-finite floats become strings)."""
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=True) + "\n")
