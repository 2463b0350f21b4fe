"""A tiny sweep for the analysis tests: 2 learning rates x 2 widths of a one-hidden-layer MLP (30 steps each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_runs import tiny

TINY = tiny(30, "hardware.threads=1", width=None)


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Run each analysis test on one thread (the machine is shared)."""
    yield


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> Path:
    """A multirun-like directory of 4 finished jobs: optim.lr in (0.05, 0.2) x model.widths in ([8], [16])."""
    from overparam.cli.train import train_in_process

    root = tmp_path_factory.mktemp("analysis") / "sweep"
    job = 0
    for width in (8, 16):
        for lr in (0.05, 0.2):
            train_in_process(TINY + [f"model.widths=[{width}]", f"optim.lr={lr}"], root / str(job))
            job += 1
    return root
