"""A run directory's whole life: adopt, lock, check, start, finish, interrupt, refuse.

What a `runner train` invocation may do to its directory, in this order:

1. `lock()`: one process per run directory. The lock is `flock` on the directory itself (no file is
   written; the kernel releases it when the process dies, kill -9 included). A second process waits
   for a holder running the same config, and refuses in one line, naming the holder's pid, one that
   runs another config.
2. `check()`: a directory holding another config's run is refused; nothing has been written.
3. `finished()`: the same config already done: its summary, and nothing is written.
4. `start(files)`: only now are bytes written: the `.hydra` files, run.json (`running`), the rest.
5. `finish()` / `interrupt()` / `fail()` / `fault()`: run.json never stays `running` when the process
   lives to write it; a full disk or a read-only folder leaves the run `interrupted`, resumable.
6. `refuse()`: a run refused at run time removes what this process created (entries that did not
   exist before it started, then the directories it created, when empty), and nothing else.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable

from overparam.errors import UserError
from overparam.store.atomic import atomic_write_text, read_json
from overparam.store.identity import config_hash
from overparam.store.run import Run

# errno values of a storage fault: the run stops as `interrupted` and resumes once the cause is gone.
STORAGE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
# flock on a directory is refused on some network filesystems (NFS emulates it with POSIX locks).
NO_DIRECTORY_LOCK = (errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP)
FALLBACK_LOCK = ".lock"


class RunFault(Exception):
    """A storage fault stopped a started run; it is marked `interrupted` (the message: one line)."""


def storage_fault(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_FAULTS


def holder_pid(fd: int) -> int | None:
    """The pid holding an flock on the file behind `fd`, from /proc/locks (Linux), or None."""
    st = os.fstat(fd)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read(1 << 20).splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or "->" in parts or parts[1] != "FLOCK":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino):
                return int(parts[4])
        except ValueError:
            continue
    return None


class RunLife:
    """One invocation's hold on a run directory (a context manager: the lock is held inside)."""

    def __init__(self, root: str | os.PathLike, config: dict, *, device: str = "cpu", precision: str = "fp32",
                 created: Iterable[str | os.PathLike] = ()):
        self.root = Path(root)
        self.config = config
        self.device, self.precision = device, precision
        self.hash = config_hash(config)
        # Directories this process created for the run, deepest first (the run dir, new parents).
        self.created = [Path(p) for p in created]
        self.fd: int | None = None
        self.before: set[str] | None = None
        self.fresh = False
        self.run: Run | None = None

    def __enter__(self) -> "RunLife":
        self.lock()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # --- 1. the lock --------------------------------------------------------------------------
    def lock(self) -> None:
        while True:
            fd = self._open_lock_target()
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._busy(holder_pid(fd))
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            # The holder we waited for may have removed the directory it had created (a refused run).
            try:
                same = os.stat(self._lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)

    def _open_lock_target(self) -> int:
        if not self.root.is_dir():
            made = [p for p in (self.root, *self.root.parents) if not p.exists()]
            self.root.mkdir(parents=True, exist_ok=True)
            self.created += [p for p in made if p not in self.created]
        self._lock_path = self.root
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # probe: does this filesystem lock directories?
            fcntl.flock(fd, fcntl.LOCK_UN)
            return fd
        except BlockingIOError:
            return fd
        except OSError as exc:
            os.close(fd)
            if exc.errno not in NO_DIRECTORY_LOCK:
                raise
        self._lock_path = self.root / FALLBACK_LOCK
        return os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)

    def _busy(self, pid: int | None) -> None:
        """Another process holds the directory: refuse when it runs another config, else say so and wait."""
        holder = f"pid {pid}" if pid else "another process"
        previous = self._previous()
        if previous is not None and previous.get("config_hash") != self.hash:
            raise UserError(f"{self.root} is in use by {holder}, running another config (hash "
                            f"{previous.get('config_hash')}, this one {self.hash}); choose another hydra.run.dir")
        print(f"runner train: {self.root} is in use by {holder} running this config; waiting for it to end",
              file=sys.stderr, flush=True)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    # --- 2, 3. checks before any byte is written ------------------------------------------------
    def _previous(self) -> dict | None:
        try:
            previous = read_json(self.root / "run.json")
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"{self.root / 'run.json'} is not valid JSON; choose another hydra.run.dir") from None
        except OSError as exc:
            raise UserError(f"cannot read {self.root / 'run.json'}: {exc.strerror}") from None
        if previous is not None and not isinstance(previous, dict):
            raise UserError(f"{self.root / 'run.json'} is not a run's record; choose another hydra.run.dir")
        return previous

    def check(self) -> None:
        previous = self._previous()
        if previous is not None and previous.get("config_hash") != self.hash:
            raise UserError(f"{self.root} holds a run with another config (hash {previous.get('config_hash')}, "
                            f"this one {self.hash}); choose another hydra.run.dir")

    def finished(self) -> dict | None:
        """The summary of this config's run when it is already done here (then nothing is to be written)."""
        previous = self._previous() or {}
        if previous.get("status") != "done" or previous.get("completed_hash") != self.hash:
            return None
        try:
            summary = read_json(self.root / "summary.json")
        except (ValueError, UnicodeDecodeError, OSError):
            return None
        return summary if isinstance(summary, dict) else None

    # --- 4. start -------------------------------------------------------------------------------
    def start(self, files: dict[str, str] | None = None) -> Run:
        """Write `files` (relative path -> text: the `.hydra` files) and open the run as `running`."""
        self.before = set(os.listdir(self.root))
        self.fresh = "run.json" not in self.before
        for name, text in (files or {}).items():
            atomic_write_text(self.root / name, text)
        run = Run(self.root, self.config, device=self.device, precision=self.precision).start()
        self.run = run
        return run

    # --- 5. the end -------------------------------------------------------------------------------
    def interrupt(self, signal_name: str, reason: str, requeued: bool = False) -> None:
        self.run.info.setdefault("interruptions", []).append(
            {"signal": signal_name, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "requeued": requeued})
        self.run.finish("interrupted", reason=reason)

    def fault(self, exc: OSError, command: str) -> str:
        """Mark the run `interrupted` after a storage fault; returns the one line that says what happened."""
        where = exc.filename or self.root
        cause = f"{(exc.strerror or type(exc).__name__).lower()} writing {where}"
        if self.run is None:  # refused while starting: what it wrote goes
            self.refuse()
            return f"{cause}; nothing was started"
        reason = f"{cause}; resume with: {command}"
        try:
            self.interrupt("fault", reason)
        except OSError:
            if not self._write_info_in_place():
                return f"{cause}; {self.run.run_json} could not be updated either (it may say running)"
        return f"{cause}; {self.root} is marked interrupted; free the space or fix the folder, then resume with: " \
               f"{command}"

    def _write_info_in_place(self) -> bool:
        """run.json rewritten over its own blocks: a full disk has no room for the temporary copy."""
        import json

        try:
            text = json.dumps(self.run.info, indent=2, sort_keys=True, default=str) + "\n"
            with open(self.run.run_json, "r+b") as handle:
                handle.write(text.encode("utf-8"))
                handle.truncate()
            return True
        except OSError:
            return False

    # --- 6. refuse ---------------------------------------------------------------------------------
    def refuse(self) -> None:
        """Remove what this process added to the directory, then the directories it created when empty."""
        if self.run is not None:
            self.run.close_handles()
        if self.before is not None:
            for name in set(os.listdir(self.root)) - self.before:
                path = self.root / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if self._lock_path != self.root and self.root in self.created:
            Path(self._lock_path).unlink(missing_ok=True)
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break
