"""Fixtures of the fault routes: a finished run made once by the CLI, a scene per row, small mounts.

Helpers live in faults_helpers.py (a module of its own name: `from conftest import` would take whichever
folder's conftest pytest imported first).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from faults_helpers import TINY, Scene, runner, status_of


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One real finished run made by the CLI (with Hydra's .hydra files and train.log)."""
    root = tmp_path_factory.mktemp("faults-finished")
    done = runner(["train", *TINY, "hydra.run.dir=run"], cwd=root)
    assert done.returncode == 0, done.stderr
    assert status_of(root / "run") == "done"
    return root / "run"


@pytest.fixture
def scene(tmp_path, finished_run) -> Scene:
    return Scene(tmp_path, finished_run)


@pytest.fixture
def small_mount(tmp_path):
    """A tmpfs of a given size (root only); yields a function size -> mount point, unmounted after."""
    mounted: list[Path] = []

    def mount(size: str, name: str = "disk") -> Path:
        point = tmp_path / name
        point.mkdir(exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): "
                        "the disk-full and read-only routes need one")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
