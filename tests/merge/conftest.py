"""Ingredient runs for the merge tests, trained once per session (tiny MLPs, a few hundred steps in all)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tiny_runs import tiny

TINY = tiny(30)


def masked_copy(source: Path, target: Path, density: float = 0.5, seed: int = 0) -> Path:
    """A copy of a finished run whose weights carry fixed random masks (masked entries zeroed)."""
    import torch

    from overparam.store.checkpoint import load_state, save_state

    shutil.copytree(source, target)
    weights = target / "checkpoints" / "model.safetensors"
    state = load_state(weights)
    generator = torch.Generator().manual_seed(seed)
    for key in [k for k in state if k.endswith(".weight")]:
        mask = (torch.rand(state[key].shape, generator=generator) < density).to(state[key].dtype)
        state[f"{key}_mask"] = mask
        state[key] = state[key] * mask
    save_state(weights, state)
    return target


@pytest.fixture
def tiny() -> list[str]:
    """Overrides that make a training run take a second."""
    return list(TINY)


@pytest.fixture(scope="session")
def ingredients(tmp_path_factory) -> dict[str, Path]:
    """Three dense runs of one architecture (different lr), one of another width, two masked twins."""
    from overparam.cli.train import train_in_process

    root = tmp_path_factory.mktemp("ingredients")
    runs = {}
    for name, lr in (("a", 0.05), ("b", 0.1), ("c", 0.2)):
        train_in_process(TINY + [f"optim.lr={lr}"], root / "sweep" / name)
        runs[name] = root / "sweep" / name
    train_in_process([o if not o.startswith("model.widths") else "model.widths=[24]" for o in TINY], root / "wide")
    runs["wide"] = root / "wide"
    runs["masked_a"] = masked_copy(runs["a"], root / "masked_a", seed=7)
    runs["masked_b"] = masked_copy(runs["b"], root / "masked_b", seed=7)
    runs["masked_other"] = masked_copy(runs["b"], root / "masked_other", seed=8)
    runs["sweep"] = root / "sweep"
    return runs
