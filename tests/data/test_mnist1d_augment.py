"""`dataset.augment` for MNIST-1D: the generator's own transforms (shift, scale, noise, shear) redrawn for every
training batch from the run's seeded RNG; val and test stay as generated; bad values are one line, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from overparam.cli.train import compose_checked, train_in_process
from overparam.data.augment import SignalAugment
from overparam.data.mnist1d_settings import augment_settings
from overparam.errors import UserError

from tiny_runs import tiny


def _signals(n=64, length=40):
    return torch.randn(n, length, generator=torch.Generator().manual_seed(0))


def _draw(augment, x, seed=1):
    return augment(x, torch.Generator().manual_seed(seed))


def test_shift_is_a_circular_roll_of_each_signal_within_the_bound():
    x = _signals()
    out = _draw(SignalAugment(shift=3), x)
    shifts = []
    for row, rolled in zip(x, out):
        matches = [k for k in range(-3, 4) if torch.equal(torch.roll(row, k), rolled)]
        assert len(matches) == 1
        shifts.append(matches[0])
    assert set(shifts) == set(range(-3, 4))  # 64 signals draw every shift of the 7


def test_scale_multiplies_each_signal_by_one_factor_in_its_range():
    x = _signals()
    ratio = _draw(SignalAugment(scale=0.4), x) / x
    per_signal = ratio.mean(dim=1)
    assert torch.allclose(ratio, per_signal[:, None].expand_as(ratio), atol=1e-5)
    assert per_signal.min() >= 0.8 and per_signal.max() <= 1.2 and per_signal.std() > 0.05


def test_noise_and_shear_have_their_magnitudes_and_batches_of_any_rank():
    x = _signals(n=512)
    assert (_draw(SignalAugment(noise=0.1), x) - x).std().item() == pytest.approx(0.1, rel=0.05)
    sheared = _draw(SignalAugment(shear=1.0), x) - x  # a ramp from -c/2 to c/2 with |c| <= 0.5
    assert sheared.abs().max() <= 0.25 + 1e-6 and torch.allclose(sheared[:, 0], -sheared[:, -1], atol=1e-6)
    channels = _draw(SignalAugment(shift=2, noise=0.1), x[:8, None, :].repeat(1, 3, 1))
    assert channels.shape == (8, 3, 40)


def test_one_seed_one_draw_and_off_by_default():
    x = _signals()
    augment = SignalAugment(shift=4, scale=0.4, noise=0.05, shear=0.75)
    assert torch.equal(_draw(augment, x), _draw(augment, x)) and not torch.equal(_draw(augment, x), _draw(augment, x, 2))
    assert augment_settings(None) is None and augment_settings({}) is None and augment_settings({"shift": 0}) is None
    assert augment_settings({"shift": 4, "noise": 0.05}) == {"shift": 4, "scale": 0.0, "noise": 0.05, "shear": 0.0}


def test_a_run_trains_on_augmented_batches_reproducibly(tmp_path):
    overrides = tiny(30)
    plain = train_in_process(overrides, tmp_path / "plain")
    augmented = [train_in_process([*overrides, "dataset.augment={shift: 6, noise: 0.1}"], tmp_path / f"aug{i}")
                 for i in range(2)]
    assert augmented[0]["test_loss"] == augmented[1]["test_loss"]  # seeded: the same batches twice
    assert augmented[0]["test_loss"] != plain["test_loss"]


def test_the_data_is_as_generated_and_only_training_batches_are_augmented():
    import os

    from overparam.data.bundle import load_dataset

    cfg = compose_checked([])["dataset"]
    plain = load_dataset(cfg, os.environ["OVERPARAM_DATA_DIR"])
    augmented = load_dataset({**cfg, "augment": {"shift": 6, "noise": 0.1}}, os.environ["OVERPARAM_DATA_DIR"])
    assert plain.augment is None and repr(augmented.augment) == "SignalAugment(shift=6, scale=0.0, noise=0.1, shear=0.0)"
    for split in ("train_x", "val_x", "test_x"):
        assert torch.equal(getattr(plain, split), getattr(augmented, split))


@pytest.mark.parametrize("value, message", [
    ("{shift: -1}", "dataset.augment.shift=-1 must be a non-negative integer (positions)"),
    ("{shift: 2.5}", "dataset.augment.shift=2.5 must be a non-negative integer (positions)"),
    ("{noise: -0.1}", "dataset.augment.noise=-0.1 must be a number >= 0"),
    ("{rotate: 1}", "dataset.augment.rotate is not an MNIST-1D augmentation; one of shift, scale, noise, shear"),
    ("yes", "dataset.augment='yes' must be a mapping of shift, scale, noise, shear"),
])
def test_bad_augmentation_is_refused_before_anything_is_built(value, message):
    with pytest.raises(UserError) as error:
        compose_checked([f"dataset.augment={value}"])
    assert str(error.value).startswith(message)


def test_the_command_line_refuses_it_in_one_line_with_exit_2_and_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "overparam.cli.main", "train", "dataset.augment={shift: -1}",
                             f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "runner train: error: dataset.augment.shift=-1 must be a non-negative integer (positions)"]
    assert not (tmp_path / "run").exists()
