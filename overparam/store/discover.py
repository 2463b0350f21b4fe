"""Finding runs on disk: run directories, sweeps and their jobs, and run references given by the user.

- `find_runs(paths)`: every run directory under run dirs, sweep dirs, folders or glob patterns
  (`runner ls/table/reproduce`, the cache commands).
- `sweep_jobs(sweep_dir)`: the jobs of one sweep, in job order (0, 1, ..., 10).
- `expand_refs(value, key)`: run references (`dir`, `dir@level_L`, a sweep dir = its finished jobs, a glob)
  as a merge or an analysis takes them, a UserError naming `key` when one matches nothing.

Torch-free: `runner ls` imports this.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from overparam.errors import UserError

GLOB_CHARS = "*?["


def is_run_dir(path: Path) -> bool:
    """A run directory holds run.json or a Hydra-saved config."""
    return (path / "run.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def natural_key(name: str) -> tuple:
    """Sort key under which job dirs 0..N sort numerically (2 before 10)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def job_sort_key(path: Path):
    """A sweep's jobs in job order; named (non-numeric) folders after them."""
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def walk_runs(root: Path) -> Iterator[Path]:
    """Run directories at or under `root`, never entering a run or a hidden folder (.hydra, .cache)."""
    if is_run_dir(root):
        yield root
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: natural_key(e.name))
    except (NotADirectoryError, PermissionError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            yield from walk_runs(Path(entry.path))


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories under the given run dirs, multirun dirs, folders or glob patterns (each once)."""
    found: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        text = str(given)
        matches = sorted(glob.glob(text), key=natural_key) if any(c in text for c in GLOB_CHARS) else [text]
        if not matches:
            raise UserError(f"no files match {text}")
        for match in matches:
            root = Path(match)
            if not root.exists():
                raise UserError(f"{root} does not exist")
            for run_dir in walk_runs(root):
                resolved = run_dir.resolve()
                if resolved not in seen:
                    seen.add(resolved)
                    found.append(run_dir)
    return found


def is_sweep_dir(path: Path) -> bool:
    """A sweep directory: no run of its own, jobs in sub-directories."""
    if (path / "run.json").exists() or (path / ".hydra" / "config.yaml").exists():
        return False
    return (path / "multirun.yaml").exists() or any((child / "run.json").exists() for child in path.iterdir()
                                                     if child.is_dir())


def sweep_jobs(sweep_dir: str | os.PathLike) -> list[Path]:
    """The job directories of a sweep (its sub-folders that are runs), in job order."""
    root = Path(sweep_dir)
    if not root.is_dir():
        return []
    return sorted((c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".") and is_run_dir(c)),
                  key=job_sort_key)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if hasattr(value, "__iter__"):  # a list or a tuple
        return [str(v) for v in value]
    return [str(value)]


def _finished(path: Path) -> bool:
    from overparam.store.load import check_finished

    try:
        check_finished(path)
    except UserError:
        return False
    return True


def expand_refs(value: Any, key: str = "ingredients") -> list:
    """Expand run dirs, multirun dirs (their finished jobs) and globs into `RunRef`s, in order.

    A glob keeps the directories holding run.json; a sweep directory its finished jobs; a run
    directory (with its `@tag`) is taken as given and checked later by whoever loads it.
    """
    from overparam.store.load import RunRef

    items = _as_list(value)
    if not items:
        raise UserError(f"{key} is empty: give run directories, a multirun directory or a glob ({key}=outputs/multirun/...)")
    refs: list = []
    for item in items:
        ref = RunRef.parse(item)
        text = str(ref.root)
        if any(char in text for char in GLOB_CHARS):
            matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_dir())
            runs = [m for m in matches if (m / "run.json").exists()]
            if not runs:
                raise UserError(f"{key}: {item} matches no run directory")
            refs.extend(RunRef(m, ref.tag) for m in runs)
        elif ref.root.is_dir() and is_sweep_dir(ref.root):
            jobs = sorted((c for c in ref.root.iterdir() if c.is_dir() and (c / "run.json").exists()), key=job_sort_key)
            finished = [job for job in jobs if _finished(job)]
            if not finished:
                raise UserError(f"{key}: multirun {ref.root} has no finished job")
            refs.extend(RunRef(job, ref.tag) for job in finished)
        else:
            refs.append(ref)
    return refs
