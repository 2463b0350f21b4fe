"""`val_fraction` through `load_dataset`, and `runner train dataset=mnist` end to end on a fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from overparam.cli.paths import config_dir
from overparam.data import load_dataset

from saved_model import saved_accuracy


def _mnist_cfg(root, val_fraction: float):
    cfg = OmegaConf.load(config_dir() / "dataset" / "mnist.yaml")
    cfg.root = str(root)
    cfg.val_fraction = val_fraction
    return cfg


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


def test_val_fraction_splits_train_deterministically_and_disjointly(tmp_path, idx_files):
    idx_files(tmp_path, "MNIST", n_train=40, n_test=10, gz=False)
    full = load_dataset(_mnist_cfg(tmp_path, 0.0), "unused", seed=0)
    assert full.val_x is None and len(full.train_x) == 40
    split = load_dataset(_mnist_cfg(tmp_path, 0.25), "unused", seed=0)
    assert len(split.train_x) == 30 and len(split.val_x) == 10 and len(split.val_y) == 10
    assert len(split.test_x) == 10  # the test split is never touched
    train_rows, val_rows = _rows(split.train_x), _rows(split.val_x)
    assert len(train_rows) == 30 and len(val_rows) == 10
    assert not train_rows & val_rows
    assert train_rows | val_rows == _rows(full.train_x)
    # Labels travel with their images.
    label_of = {row.numpy().tobytes(): int(y) for row, y in zip(full.train_x.flatten(1), full.train_y)}
    assert [label_of[row.numpy().tobytes()] for row in split.val_x.flatten(1)] == split.val_y.tolist()
    again = load_dataset(_mnist_cfg(tmp_path, 0.25), "unused", seed=0)
    assert torch.equal(again.val_x, split.val_x) and torch.equal(again.train_y, split.train_y)
    # The split follows dataset.split_seed (fixed by default), not the run's seed: every run of a seed
    # sweep holds out the same examples.
    same = load_dataset(_mnist_cfg(tmp_path, 0.25), "unused", seed=1)
    assert _rows(same.val_x) == val_rows
    other_cfg = _mnist_cfg(tmp_path, 0.25)
    other_cfg.split_seed = 1
    assert _rows(load_dataset(other_cfg, "unused", seed=0).val_x) != val_rows
    # split_seed=null (configs written before it existed) keeps the old rule: the run's seed.
    legacy = _mnist_cfg(tmp_path, 0.25)
    legacy.split_seed = None
    assert _rows(load_dataset(legacy, "unused", seed=1).val_x) == _rows(load_dataset(other_cfg, "unused", seed=0).val_x)


def test_runner_trains_lenet300_100_on_an_mnist_fixture(tmp_path, idx_files):
    idx_files(tmp_path / "mnist", "MNIST", n_train=64, n_test=20, gz=True)
    run_dir = tmp_path / "run"
    env = dict(os.environ, OVERPARAM_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-m", "overparam.cli.main", "train", "dataset=mnist", f"dataset.root={tmp_path / 'mnist'}",
         "model=lenet300_100", "train.epochs=null", "train.steps=5", "train.batch_size=16", "hardware.threads=1",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["parameters"] == 266_610
    # Re-opened as any run is, the saved dataset.root is not used (a place on the machine that made the run):
    # the data folder given here holds mnist/MNIST/raw.
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(run_dir, data_dir=str(tmp_path)))
    assert "val_accuracy" in summary  # mnist's default val_fraction holds out part of train
    status = json.loads((run_dir / "run.json").read_text())["status"]
    assert status == "done"


@pytest.mark.slow
def test_runner_without_cifar_files_ends_with_the_fetch_command(tmp_path):
    env = dict(os.environ, OVERPARAM_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-m", "overparam.cli.main", "train", "dataset=cifar10", "model=conv2", "train.epochs=null", "train.steps=1",
         f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "runner train dataset=cifar10 dataset.download=true" in last
    assert str(tmp_path / "data" / "cifar10" / "cifar-10-batches-py") in last
    assert not (tmp_path / "run").exists()




def test_cifar_training_with_augmentation_repeats_exactly(tmp_path, cifar10_files):
    from overparam.cli.train import train_in_process

    cifar10_files(tmp_path / "cifar", per_batch=8, n_test=8)
    overrides = ["dataset=cifar10", f"dataset.root={tmp_path / 'cifar'}", "dataset.val_fraction=0.25", "model=lenet5",
                 "train.epochs=null", "train.steps=4", "train.batch_size=8", "train.eval_every=2",
                 f"paths.data_dir={tmp_path / 'data'}"]
    first = train_in_process(overrides, tmp_path / "first")
    second = train_in_process(overrides, tmp_path / "second")
    plain = train_in_process([*overrides, "dataset.augment=false"], tmp_path / "plain")
    assert first["test_loss"] == second["test_loss"] and first["val_loss"] == second["val_loss"]
    assert first["test_loss"] != plain["test_loss"]  # the augmented batches really differ
