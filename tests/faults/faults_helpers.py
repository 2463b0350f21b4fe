"""Helpers of the fault routes: the real CLI in a subprocess, tree digests, a finished run, small mounts.

Every route runs `runner` as a user would (a subprocess, with a timeout so a hang fails the row) in a
scene folder holding a planted user folder and a finished run; the row then checks that every byte
outside the directories the command was asked to create is as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from tiny_runs import tiny

# A run of a few seconds: 12 steps of a 16-unit MLP, evaluated twice, resume points every 4 steps.
TINY = tiny(12, "train.checkpoint_every=4", "hardware.threads=1", eval_every=6)
TIMEOUT = 120
# A run of a second or two; a test that needs it still running when a second process comes pauses it
# (SIGSTOP: it keeps its lock) instead of relying on its length.
MEDIUM = tiny(600, "train.checkpoint_every=100", "hardware.threads=1", eval_every=200)


def runner_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "overparam.cli.main", *args]


def runner(args: list[str], cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`runner <args>` to its end; a hang fails the test (TimeoutExpired) instead of blocking the suite."""
    return subprocess.run(runner_command(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`runner <args>` in the background (for concurrency and signal rows)."""
    return subprocess.Popen(runner_command(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy())


def wait_for(condition, timeout: float = 60.0, what: str = "a condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (FileNotFoundError, ValueError):
        return None


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def digest(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """{relative path: file type, mode and content (or link target)} of everything under `root`, links not
    followed; `skip`: directories the command was asked to create (their contents may change)."""
    result = {}
    skip = tuple(Path(s).resolve() for s in skip)
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = [d for d in dirs if (here / d).resolve() not in skip]
        for name in [*dirs, *files]:
            path = here / name
            info = os.lstat(path)
            key = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                result[key] = f"link {os.readlink(path)}"
            elif stat.S_ISREG(info.st_mode):
                result[key] = f"{oct(info.st_mode)} {hashlib.sha256(path.read_bytes()).hexdigest()}"
            else:
                result[key] = oct(info.st_mode)
    return result


class Scene:
    """A folder holding a user's folder (`user/`) and a copy of a finished run (`finished/`)."""

    def __init__(self, root: Path, finished_run: Path):
        self.root = root
        self.user = root / "user"
        (self.user / "notes").mkdir(parents=True)
        (self.user / "notes" / "week1.md").write_text("weeks of work\n")
        (self.user / "data.csv").write_text("a,b\n1,2\n")
        os.symlink("data.csv", self.user / "latest")
        self.finished = root / "finished"
        shutil.copytree(finished_run, self.finished, symlinks=True)
        self.empty = root / "empty"  # a data dir without the files a dataset needs
        self.empty.mkdir()


def remount(point: Path, options: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,{options}", str(point)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def has_resume_point(run: Path) -> bool:
    try:
        info = json.loads((run / "run.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return info.get("status") == "running" and any(k.startswith("resume_") for k in info.get("checkpoints", {}))
