"""Artifacts that several jobs share (IMP levels, rewind checkpoints, teachers, ingredients), built once.

    from overparam.store.cache import produce_once

    def build(tmp):                      # write the artifact at `tmp` (a file or a directory)
        save_state(tmp, train_level_3())
    path = produce_once(cache_dir / "level_3.safetensors", build)

The first job takes a file lock beside the artifact and builds it; jobs that ask meanwhile
wait on the lock and then reuse the finished artifact. The artifact appears by one atomic
rename, so it either exists whole or not at all: a builder killed half-way leaves only a
temporary that the next builder removes, and its lock is released by the OS when it dies.
The lock is `filelock.FileLock` (flock): reliable between processes on one machine and on
local disks; on network filesystems without working flock use `SoftFileLock` semantics
(not provided here).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def shared_cache_dir(paths) -> Path:
    """The folder of artifacts jobs share: `paths.cache_dir`, else `<paths.output_dir>/.cache` (older configs)."""
    paths = paths or {}
    cache_dir = paths.get("cache_dir")
    return Path(str(cache_dir)) if cache_dir else Path(str(paths.get("output_dir") or "outputs")) / ".cache"


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file guarding `path` (`.<name>.lock` in the same folder)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def exclusive(path: str | os.PathLike, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the lock of `path` (blocking, or up to `timeout_s` seconds) for a read-check-write of your own."""
    from filelock import FileLock, Timeout

    from overparam.errors import UserError

    lock = FileLock(str(lock_path(path)), timeout=-1 if timeout_s is None else timeout_s)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"waited {timeout_s} s for another job to finish {path}; its lock is {lock_path(path)}") from None
    try:
        yield
    finally:
        lock.release()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def produce_once(path: str | os.PathLike, build: Callable[[Path], object], timeout_s: float | None = None) -> Path:
    """Return `path`, calling `build(tmp)` to create it first if no job has yet; concurrent callers build it once.

    `build` writes the artifact (a file or a whole directory) at the temporary path it is given;
    `produce_once` renames it to `path` when `build` returns. If `build` raises, nothing appears
    at `path` and the next caller tries again.
    """
    path = Path(path)
    if path.exists():  # the rename is atomic: an existing artifact is a finished one
        return path
    with exclusive(path, timeout_s):
        if path.exists():  # built by the job that held the lock before us
            return path
        # Debris of builders that were killed: we hold the lock, so no one else is writing these.
        for leftover in path.parent.glob(f".{path.name}.building-*"):
            _remove(leftover)
        tmp = path.with_name(f".{path.name}.building-{os.getpid()}")
        try:
            build(tmp)
            if not tmp.exists():
                raise FileNotFoundError(f"build function wrote nothing at {tmp}")
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise
    return path
