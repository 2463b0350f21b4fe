"""MNIST-1D generator settings in the dataset config: named variants and the generator's own keys."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from overparam.data import mnist1d
from overparam.data.bundle import load_dataset, split_identity
from overparam.data.mnist1d_settings import generator_args
from overparam.errors import UserError

# The standard dataset's cache file name, as before generator settings became config keys (runs and
# caches made earlier keep finding it).
STANDARD_FILE = "mnist1d-9b2873b78b35.npz"


def standard_digest() -> str:
    """sha256 of the arrays the mnist1d package itself makes with its default arguments on this machine
    (the bytes depend on the numpy/scipy versions, so they are computed here, not pinned)."""
    from mnist1d.data import get_dataset_args, make_dataset

    made = make_dataset(get_dataset_args(as_dict=False))
    digest = hashlib.sha256()
    for key in ("x", "y", "x_test", "y_test"):
        digest.update(np.ascontiguousarray(np.asarray(made[key])).tobytes())
    return digest.hexdigest()


def array_digest(path) -> str:
    digest = hashlib.sha256()
    with np.load(path) as arrays:
        for key in ("x", "y", "x_test", "y_test"):
            digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()


def test_default_is_unchanged_and_a_variant_differs_and_is_cached(tmp_path, monkeypatch):
    default = mnist1d.load(str(tmp_path))
    files = sorted(p.name for p in (tmp_path / "mnist1d").iterdir())
    assert files == [STANDARD_FILE]
    assert array_digest(tmp_path / "mnist1d" / STANDARD_FILE) == standard_digest()
    # Null settings (the config's defaults) are the standard dataset, from the same file.
    assert mnist1d.load(str(tmp_path), variant=None, corr_noise_scale=None).train_x.equal(default.train_x)

    noisy = mnist1d.load(str(tmp_path), variant="noisy")
    files = sorted(p.name for p in (tmp_path / "mnist1d").iterdir())
    assert len(files) == 2 and STANDARD_FILE in files
    # Same labels (same generator seed), other signals.
    assert noisy.train_y.equal(default.train_y)
    assert (noisy.train_x - default.train_x).abs().mean() > 0.1
    # Cached: a second load never calls the generator.
    import mnist1d.data as package

    monkeypatch.setattr(package, "make_dataset", lambda *a, **k: pytest.fail("generated again instead of cached"))
    assert mnist1d.load(str(tmp_path), variant="noisy").train_x.equal(noisy.train_x)
    # An explicit key is the same setting as the variant that names it: one file.
    assert mnist1d.load(str(tmp_path), corr_noise_scale=0.5, iid_noise_scale=0.1).test_x.equal(noisy.test_x)
    assert len(list((tmp_path / "mnist1d").iterdir())) == 2
    monkeypatch.undo()
    # A key overrides the variant's value: another dataset, its own file.
    shifted = mnist1d.load(str(tmp_path), variant="noisy", iid_noise_scale=0.0)
    assert not shifted.train_x.equal(noisy.train_x)
    assert len(list((tmp_path / "mnist1d").iterdir())) == 3


def test_dataset_config_keys_reach_the_generator(tmp_path):
    cfg = {"name": "mnist1d", "_target_": "overparam.data.mnist1d.load", "val_fraction": 0.1, "split_seed": 0,
           "variant": "clean", "scale_coeff": None, "max_translation": None, "corr_noise_scale": None,
           "iid_noise_scale": None, "shear_scale": None, "generator_seed": None, "label_noise": None}
    clean = load_dataset(cfg, str(tmp_path))
    standard = load_dataset({**cfg, "variant": None}, str(tmp_path))
    assert clean.val_y.equal(standard.val_y) and not clean.val_x.equal(standard.val_x)
    # The split identity tells the two apart, and ignores null keys (runs saved before they existed).
    assert split_identity(cfg, 0) != split_identity({**cfg, "variant": None}, 0)
    old = {k: v for k, v in cfg.items() if v is not None and k != "variant"}
    assert split_identity({**cfg, "variant": None}, 0) == split_identity(old, 0)


@pytest.mark.parametrize("settings, message", [
    ({"variant": "rotated"}, "not an MNIST-1D variant"),
    ({"corr_noise_scale": -1.0}, "must be a number >= 0"),
    ({"max_translation": 2.5}, "non-negative integer"),
    ({"warp": 1.0}, "not an MNIST-1D generator setting"),
])
def test_bad_settings_are_one_clear_error(settings, message):
    with pytest.raises(UserError, match=message):
        generator_args(**settings)


def test_runner_refuses_a_bad_variant_before_writing(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "overparam.cli.main", "train", "dataset.variant=rotated", "train.epochs=null",
         "train.steps=1", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "dataset.variant='rotated' is not an MNIST-1D variant" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()
