"""Tiny runs of the prune methods: a 16-unit MLP on mnist1d, a dozen steps per training phase."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_runs import tiny

TINY = tiny(12, "hardware.threads=1", eval_every=6)


@pytest.fixture
def train_tiny(tmp_path):
    """train_tiny(run_name, *overrides) -> (summary, run dir); every run shares tmp_path as paths.output_dir."""
    from overparam.cli.train import train_in_process

    def _train(name: str, *overrides: str):
        out = Path(tmp_path) / name
        summary = train_in_process([*TINY, f"paths.output_dir={tmp_path}", *overrides], out)
        return summary, out

    return _train


@pytest.fixture
def compose_tiny(tmp_path):
    """compose_tiny(*overrides) -> (DictConfig, container) of a tiny run writing under tmp_path."""
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked

    def _compose(*overrides: str):
        container = compose_checked([*TINY, f"paths.output_dir={tmp_path}", *overrides])
        return OmegaConf.create(container), container

    return _compose
