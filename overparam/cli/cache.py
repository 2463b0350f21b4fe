"""`runner cache ls|clean [OUTPUT_DIR]`: what the level cache holds, which runs use it, and removing it safely.

The cache lives in `<output_dir>/.cache/<kind>/<key>/level_<L>/` (IMP levels shared by the jobs
of a sweep). A run that took a level from the cache, or published one into it, holds its own
hard link to every file (`<run>/level_<L>/`, `<run>/ticket/level_<L>/`), so removing a cache
entry frees only the bytes no run links, and never changes a finished run. An entry whose level
lock a running job holds is kept. No torch import: this reads directories and file metadata only.

Nothing here follows a link: a `.cache`, kind or entry folder that is a symlink is refused in one
line (cleaning through it would remove folders elsewhere). An entry is renamed to
`.<key>.removing-<pid>` before it is removed; a clean killed meanwhile leaves that name, which
`cache ls` lists and the next clean removes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from overparam.errors import UserError

EPILOG = """examples:
  runner cache ls                    entries under outputs/.cache, their size and the runs using them
  runner cache clean --unused        remove the entries no run uses
  runner cache clean                 remove every entry not locked by a running job (runs keep their levels)
  runner cache clean --dry-run       say what would go, remove nothing
A run whose run.json cannot be read is listed as unreadable and judged by its level files alone (hard links
keep its levels whatever is cleaned); the exit code stays 0."""


@dataclass
class Entry:
    """One cache entry: `<kind>/<key>` with its levels."""

    path: Path
    kind: str
    key: str
    levels: list[int] = field(default_factory=list)
    files: dict[tuple[int, int], Path] = field(default_factory=dict)  # (device, inode) -> file
    bytes: int = 0
    bytes_only_here: int = 0  # files no run links: what removing the entry frees
    users: set[Path] = field(default_factory=set)


def _size(number: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if number < 1000 or unit == "GB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1000
    return f"{number} B"


def cache_root(output_dir: str | os.PathLike) -> Path:
    """Where the level cache of runs written under `output_dir` lives."""
    return Path(output_dir) / ".cache"


def _real_dirs(folder: Path) -> list[Path]:
    """The folders directly in `folder` (dot names left out), by lstat; a symlink among them is refused:
    listing or cleaning through it would reach outside the cache."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise UserError(f"{path} is a symlink; the cache holds only real folders, so it is not followed "
                            f"(remove the link yourself)")
        if stat.S_ISDIR(mode):
            found.append(path)
    return found


def _cache_root_checked(output_dir: str | os.PathLike) -> Path | None:
    """The cache folder when it is a real one, None when absent; a symlinked `.cache` is refused."""
    root = cache_root(output_dir)
    try:
        mode = root.lstat().st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        raise UserError(f"{root} is a symlink; the cache is not followed out of {output_dir} (remove the link "
                        f"yourself)")
    return root if stat.S_ISDIR(mode) else None


def scan_entries(output_dir: str | os.PathLike) -> list[Entry]:
    """Every cache entry with its files, sizes and levels (users filled by `find_users`)."""
    root = _cache_root_checked(output_dir)
    entries: list[Entry] = []
    if root is None:
        return entries
    for kind_dir in _real_dirs(root):
        for entry_dir in _real_dirs(kind_dir):
            entry = Entry(entry_dir, kind_dir.name, entry_dir.name)
            for dirpath, _, filenames in os.walk(entry_dir):  # does not descend into linked folders
                for name in filenames:
                    path = Path(dirpath) / name
                    stat_ = path.lstat()
                    entry.files[(stat_.st_dev, stat_.st_ino)] = path
                    entry.bytes += stat_.st_size
                    if stat_.st_nlink <= 1:
                        entry.bytes_only_here += stat_.st_size
            entry.levels = sorted(int(p.name.split("_")[1]) for p in entry_dir.glob("level_*")
                                  if p.is_dir() and not p.is_symlink() and p.name.split("_")[1].isdigit())
            entries.append(entry)
    return entries


def leftovers(output_dir: str | os.PathLike) -> list[Path]:
    """Entries a clean renamed for removal and did not finish (`.<key>.removing-<pid>`; killed mid-way)."""
    root = _cache_root_checked(output_dir)
    if root is None:
        return []
    return [path for kind_dir in _real_dirs(root) for path in sorted(kind_dir.glob(".*.removing-*"))]


def _remover_alive(path: Path) -> bool:
    """True when the clean that renamed `path` still runs (it is removing it now)."""
    pid = path.name.rpartition("-")[2]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_renamed(path: Path) -> None:
    """Remove a renamed entry; a link is unlinked (never followed), a folder removed without following links."""
    if stat.S_ISDIR(path.lstat().st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _level_files(run_dir: Path):
    for pattern in ("level_*", "ticket/level_*"):
        for level_dir in run_dir.glob(pattern):
            yield level_dir
            if level_dir.is_dir():
                yield from level_dir.iterdir()


def find_users(output_dir: str | os.PathLike, entries: list[Entry]) -> list[tuple[Path, str]]:
    """Fill each entry's `users`: runs whose level files are hard links to it (or that run.json names it).

    Returns the runs whose run.json cannot be read, with the reason: their use is judged by their files alone.
    """
    from overparam.report.index import find_runs, unreadable_reason
    from overparam.store.load import run_info

    damaged: list[tuple[Path, str]] = []
    if not entries:
        return damaged
    by_inode = {inode: entry for entry in entries for inode in entry.files}
    by_path = {entry.path.resolve(): entry for entry in entries}
    for run_dir in find_runs([output_dir]):  # the walk skips dot folders such as .cache
        try:
            recorded = (run_info(run_dir) or {}).get("level_cache")
        except UserError as exc:
            damaged.append((run_dir, unreadable_reason(run_dir, exc)))
            recorded = None
        if recorded and Path(recorded).resolve() in by_path:
            by_path[Path(recorded).resolve()].users.add(run_dir)
        for path in _level_files(run_dir):
            if path.is_symlink():  # no code makes these; a hand-made link into the cache pins the entry
                target = path.resolve()
                for entry_path, entry in by_path.items():
                    if entry_path in target.parents or target == entry_path:
                        entry.users.add(run_dir)
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            entry = by_inode.get((stat.st_dev, stat.st_ino))
            if entry is not None:
                entry.users.add(run_dir)
    return damaged


def _locked(entry: Entry) -> bool:
    """True when a job holds one of the entry's level locks (it is producing or linking a level)."""
    from filelock import FileLock, Timeout

    for lock_file in entry.path.glob("level_*.lock"):
        lock = FileLock(str(lock_file), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return True
        lock.release()
    return False


def _pinned(entry: Entry) -> bool:
    """True when some run reaches the entry's files only through a symlink (removing them would break it)."""
    for run_dir in entry.users:
        for path in _level_files(run_dir):
            if path.is_symlink():
                target = path.resolve()
                if entry.path.resolve() in target.parents or target == entry.path.resolve():
                    return True
    return False


def ls(output_dir: str) -> int:
    """Print each entry: kind/key, levels, size, what cleaning frees, the runs using it."""
    entries = scan_entries(output_dir)
    unfinished = leftovers(output_dir)
    for path in unfinished:
        state = "being removed by a running clean" if _remover_alive(path) else \
            "left by an interrupted clean; the next `runner cache clean` removes it"
        print(f"{path.parent.name}/{path.name}  {state}")
    if not entries:
        print(f"{cache_root(output_dir)}: empty (no level cache)")
        return 0
    damaged = find_users(output_dir, entries)
    for entry in entries:
        levels = f"levels {entry.levels[0]}-{entry.levels[-1]}" if len(entry.levels) > 1 else \
            f"level {entry.levels[0]}" if entry.levels else "no levels"
        print(f"{entry.kind}/{entry.key}  {levels}  {_size(entry.bytes)} ({_size(entry.bytes_only_here)} only here)  "
              f"used by {len(entry.users)} run(s)")
        for run_dir in sorted(entry.users):
            print(f"    {run_dir}")
    total = sum(e.bytes for e in entries)
    free = sum(e.bytes_only_here for e in entries)
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_size(total)} in {cache_root(output_dir)}; "
          f"removing all would free {_size(free)} (the rest is linked from runs, which keep it)")
    for run_dir, reason in damaged:
        print(f"unreadable run {run_dir}: {reason} (its use of the cache judged by its level files alone)")
    return 0


def clean(output_dir: str, *, unused_only: bool = False, dry_run: bool = False) -> int:
    """Remove entries (all, or those no run uses); runs keep their own links; locked entries stay."""
    entries = scan_entries(output_dir)
    find_users(output_dir, entries)
    freed = removed = 0
    for path in leftovers(output_dir):
        if _remover_alive(path):
            print(f"kept    {path.parent.name}/{path.name}: a running clean is removing it")
            continue
        print(f"{'would finish' if dry_run else 'finished'} removing {path.parent.name}/{path.name} "
              f"(left by an interrupted clean)")
        if not dry_run:
            _remove_renamed(path)
    for entry in entries:
        name = f"{entry.kind}/{entry.key}"
        if unused_only and entry.users:
            print(f"kept    {name}: used by {len(entry.users)} run(s)")
            continue
        if _pinned(entry):
            print(f"kept    {name}: a run reaches it through a symlink")
            continue
        if _locked(entry):
            print(f"kept    {name}: a running job holds its lock")
            continue
        verb = "would remove" if dry_run else "removed"
        print(f"{verb} {name} ({_size(entry.bytes_only_here)} freed; {len(entry.users)} run(s) keep their levels)")
        if not dry_run:
            # Renamed first, so a job looking for the entry sees it whole or not at all.
            doomed = entry.path.with_name(f".{entry.path.name}.removing-{os.getpid()}")
            os.rename(entry.path, doomed)
            _remove_renamed(doomed)
        freed += entry.bytes_only_here
        removed += 1
    verb = "would free" if dry_run else "freed"
    print(f"{removed} entr{'y' if removed == 1 else 'ies'} {'to remove' if dry_run else 'removed'}, {verb} "
          f"{_size(freed)}")
    return 0


def main(argv: list[str]) -> int:
    """`runner cache ls|clean [OUTPUT_DIR]`."""
    parser = argparse.ArgumentParser(prog="runner cache", description="Inspect or clean the level cache "
                                     "(OUTPUT_DIR/.cache).", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("ls", "clean"))
    parser.add_argument("output_dir", nargs="?", default="outputs", help="where runs land (default: outputs)")
    parser.add_argument("--unused", action="store_true", help="clean: only entries no run uses")
    parser.add_argument("--dry-run", action="store_true", help="clean: say what would be removed")
    args = parser.parse_args(argv)
    if not Path(args.output_dir).is_dir():
        raise UserError(f"{args.output_dir} does not exist")
    if args.action == "ls":
        if args.unused or args.dry_run:
            raise UserError("--unused and --dry-run go with `runner cache clean`")
        return ls(args.output_dir)
    sys.stdout.flush()
    return clean(args.output_dir, unused_only=args.unused, dry_run=args.dry_run)
