"""`dataset.label_noise`: a seeded fraction of training labels replaced, val and test never touched."""

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
from overparam.data.bundle import add_label_noise
from overparam.errors import UserError


def _mnist_cfg(root, val_fraction: float, noise=None, noise_seed=None):
    cfg = OmegaConf.load(config_dir() / "dataset" / "mnist.yaml")
    cfg.root = str(root)
    cfg.val_fraction = val_fraction
    cfg.label_noise = noise
    cfg.label_noise_seed = noise_seed
    return cfg


def test_add_label_noise_replaces_exactly_the_fraction_and_is_seeded():
    y = torch.arange(1000) % 10
    noisy, notes = add_label_noise(y, 0.3, 10, seed=5)
    assert notes["labels_replaced"] == 300
    changed = int((noisy != y).sum())
    assert notes["labels_changed"] == changed
    # A replaced label redraws its own class 1 time in 10: about 270 change, never more than 300.
    assert 240 <= changed <= 300
    assert int(noisy.min()) >= 0 and int(noisy.max()) <= 9
    again, _ = add_label_noise(y, 0.3, 10, seed=5)
    other, _ = add_label_noise(y, 0.3, 10, seed=6)
    assert torch.equal(again, noisy) and not torch.equal(other, noisy)
    assert torch.equal(add_label_noise(y, 0.0, 10, seed=5)[0], y)
    assert torch.equal(y, torch.arange(1000) % 10)  # the input is not modified
    with pytest.raises(UserError, match="label_noise"):
        add_label_noise(y, 1.5, 10, seed=0)


def test_noise_touches_train_labels_only_and_ignores_the_run_seed(tmp_path, idx_files):
    idx_files(tmp_path, "MNIST", n_train=400, n_test=50, gz=False)
    clean = load_dataset(_mnist_cfg(tmp_path, 0.25), "unused", seed=0)
    noisy = load_dataset(_mnist_cfg(tmp_path, 0.25, noise=0.5), "unused", seed=0)
    assert torch.equal(noisy.train_x, clean.train_x) and torch.equal(noisy.val_x, clean.val_x)
    assert torch.equal(noisy.val_y, clean.val_y) and torch.equal(noisy.test_y, clean.test_y)
    changed = int((noisy.train_y != clean.train_y).sum())
    assert noisy.notes["labels_replaced"] == 150 and noisy.notes["labels_changed"] == changed
    assert 110 <= changed <= 150
    assert clean.notes == {}
    # Without a val split the training set does not depend on the run's seed, and neither does the noise.
    a = load_dataset(_mnist_cfg(tmp_path, 0.0, noise=0.2), "unused", seed=0)
    b = load_dataset(_mnist_cfg(tmp_path, 0.0, noise=0.2), "unused", seed=7)
    c = load_dataset(_mnist_cfg(tmp_path, 0.0, noise=0.2, noise_seed=1), "unused", seed=0)
    assert torch.equal(a.train_y, b.train_y) and not torch.equal(a.train_y, c.train_y)


def _train(tmp_path, *overrides):
    env = dict(os.environ, OVERPARAM_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-m", "overparam.cli.main", "train", "dataset=mnist", f"dataset.root={tmp_path / 'mnist'}",
         "model=mlp", "model.widths=[8]", "train.epochs=null", "train.steps=3", "train.batch_size=16",
         "hardware.threads=1", *overrides],
        capture_output=True, text=True, env=env, timeout=120)


def test_runner_records_label_noise_in_the_summary_and_refuses_a_bad_fraction(tmp_path, idx_files):
    idx_files(tmp_path / "mnist", "MNIST", n_train=100, n_test=20, gz=False)
    run_dir = tmp_path / "run"
    result = _train(tmp_path, "dataset.label_noise=0.2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["label_noise"] == 0.2 and summary["label_noise_seed"] == 0
    assert summary["labels_replaced"] == 18  # 0.2 of the 90 training images left after the val split
    bad = _train(tmp_path, "dataset.label_noise=1.5", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "dataset.label_noise" in bad.stderr
    assert not (tmp_path / "bad").exists()
