"""Shared by the fault tables of this folder: run the real CLI with a timeout, digest folders without following
links or opening special files, and assert one refusal.

A plain module (not a conftest): `tests` is not a package, and each test file puts this folder on `sys.path`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tiny_runs import tiny

# A few steps of a small MLP on MNIST-1D: enough for a finished run with weights, metrics and a summary.
TINY = tiny(4, eval_every=2, batch_size=None)
SHORT = ["train.epochs=null", "train.steps=2"]
# A refusal is quick; a hang (a FIFO read, an 8 GB file) would run into this.
TIMEOUT_S = 120
# Files above this size are digested by size, mtime and inode (a rewrite changes them) instead of their bytes.
BIG_FILE = 64 * 1024 * 1024


def runner(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`runner <args>` in a subprocess; TimeoutExpired (a test failure) if it hangs."""
    return subprocess.run([sys.executable, "-m", "overparam.cli.main", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=TIMEOUT_S)


def digest(root: Path) -> str:
    """sha256 over every entry under `root` by lstat: names, kinds, link targets and file bytes (see BIG_FILE).
    Links are not followed and FIFOs, sockets and devices are not opened, so planting them cannot make this hang."""
    h = hashlib.sha256()
    if not os.path.lexists(root):
        return "absent"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            h.update(f"{path.relative_to(root)}\0{stat.S_IFMT(mode)}\0".encode())
            if stat.S_ISLNK(mode):
                h.update(os.readlink(path).encode())
            elif stat.S_ISREG(mode) and path.lstat().st_size > BIG_FILE:  # a planted sparse file: not read whole
                status = path.lstat()
                h.update(f"{status.st_size}\0{status.st_mtime_ns}\0{status.st_ino}".encode())
            elif stat.S_ISREG(mode):
                h.update(path.read_bytes())
    return h.hexdigest()


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_refused(result: subprocess.CompletedProcess, command: str, *, contains: str = "") -> str:
    """Exit 2 and exactly one line on stderr, `runner <command>: error: ...` holding `contains`."""
    lines = stderr_lines(result)
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr[-600:]}"
    assert len(lines) == 1, f"expected one line on stderr, got {lines[-8:]}"
    assert lines[0].startswith(f"runner {command}: error: "), lines[0]
    assert contains in lines[0], lines[0]
    return lines[0]


def finished_run(folder: Path) -> Path:
    """One real finished run at `folder`/good (trained in this process: a few seconds)."""
    from overparam.cli.train import train_in_process

    run = folder / "good"
    train_in_process(TINY, run)
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    return run
