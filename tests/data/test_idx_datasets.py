"""MNIST / Fashion-MNIST loaders on idx files written by the test (gz and plain)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from overparam.data.mnist import load_fashion_mnist, load_mnist, read_idx
from overparam.errors import UserError


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Same shape and values within `atol` (torch.testing pulls in heavy modules on first use)."""
    assert actual.shape == expected.shape
    assert float((actual - expected).abs().max()) <= atol


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files_into_normalized_tensors(tmp_path, idx_files, gz):
    written = idx_files(tmp_path / "mnist", "MNIST", n_train=30, n_test=12, gz=gz)
    bundle = load_mnist(data_dir=str(tmp_path))  # root null -> <data_dir>/mnist
    assert bundle.train_x.shape == (30, 1, 28, 28) and bundle.test_x.shape == (12, 1, 28, 28)
    assert bundle.train_x.dtype == torch.float32 and bundle.train_y.dtype == torch.int64
    assert bundle.num_classes == 10 and bundle.input_shape == (1, 28, 28)
    assert bundle.train_y.tolist() == [i % 10 for i in range(30)]
    assert bundle.test_y.tolist() == [(3 * i) % 10 for i in range(12)]
    pixels = torch.from_numpy(written["train-images-idx3-ubyte"].astype(np.float32)) / 255
    assert_close(bundle.train_x[:, 0], (pixels - 0.1307) / 0.3081)
    # A black pixel maps to -mean/std, a white one to (1-mean)/std.
    assert float(bundle.train_x.min()) == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    assert float(bundle.train_x.max()) == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)
    assert bundle.augment is None


def test_fashion_mnist_uses_its_own_folder_and_statistics(tmp_path, idx_files):
    written = idx_files(tmp_path / "fm", "FashionMNIST", n_train=20, n_test=10, gz=True)
    bundle = load_fashion_mnist(data_dir="unused", root=str(tmp_path / "fm"))
    pixels = torch.from_numpy(written["t10k-images-idx3-ubyte"].astype(np.float32)) / 255
    assert_close(bundle.test_x[:, 0], (pixels - 0.2860) / 0.3530)
    raw = load_fashion_mnist(data_dir="unused", root=str(tmp_path / "fm"), normalize=False)
    assert_close(raw.test_x[:, 0], pixels)


def test_read_idx_checks_magic_and_length(tmp_path, idx_writer):
    images = idx_writer(tmp_path / "images", np.zeros((2, 3, 4), np.uint8), gz=False)
    assert images.read_bytes()[:4] == bytes([0, 0, 8, 3])
    assert read_idx(images, 0x803).shape == (2, 3, 4)
    with pytest.raises(UserError, match="magic number 0x00000803, expected 0x00000801"):
        read_idx(images, 0x801)
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated"):
        read_idx(images, 0x803)


def test_offline_without_files_says_where_and_how_to_fetch(tmp_path):
    with pytest.raises(UserError) as caught:
        load_mnist(data_dir=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "mnist" / "MNIST" / "raw") in message
    assert "runner train dataset=mnist dataset.download=true" in message
    assert "train-images-idx3-ubyte" in message


def test_labels_out_of_range_are_refused(tmp_path, idx_files, idx_writer):
    idx_files(tmp_path, "MNIST", n_train=10, n_test=10, gz=False)
    idx_writer(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.full(10, 11, np.uint8), gz=False)
    with pytest.raises(UserError, match=r"labels outside \[0, 10\)"):
        load_mnist(data_dir="unused", root=str(tmp_path))
