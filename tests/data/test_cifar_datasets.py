"""CIFAR-10/100 loaders on python batches written by the test, and the batched augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from overparam.data.augment import RandomCropFlip
from overparam.data.cifar import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, load_cifar100, read_batch
from overparam.errors import UserError


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Same shape and values within `atol` (torch.testing pulls in heavy modules on first use)."""
    assert actual.shape == expected.shape
    assert float((actual - expected).abs().max()) <= atol


def _expected(data: np.ndarray, mean, std) -> torch.Tensor:
    pixels = torch.from_numpy(data.astype(np.float32)).reshape(-1, 3, 32, 32) / 255
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_cifar10_reads_all_batches_in_order(tmp_path, cifar10_files):
    written = cifar10_files(tmp_path / "cifar10", per_batch=4, n_test=6)
    bundle = load_cifar10(data_dir=str(tmp_path))
    assert bundle.train_x.shape == (20, 3, 32, 32) and bundle.test_x.shape == (6, 3, 32, 32)
    assert bundle.train_x.dtype == torch.float32 and bundle.test_y.dtype == torch.int64
    assert bundle.num_classes == 10
    assert bundle.train_y.tolist() == written["train_labels"]
    assert bundle.test_y.tolist() == written["test_labels"]
    assert_close(bundle.train_x, _expected(written["train"], CIFAR10_MEAN, CIFAR10_STD))
    # Channel-major rows: byte 0 is red (0, 0), byte 1024 green (0, 0), byte 1025 green (0, 1).
    raw = load_cifar10(data_dir=str(tmp_path), normalize=False)
    first = written["train"][0]
    assert raw.train_x[0, 0, 0, 0] * 255 == pytest.approx(first[0])
    assert raw.train_x[0, 1, 0, 1] * 255 == pytest.approx(first[1025])
    assert raw.train_x[0, 2, 31, 31] * 255 == pytest.approx(first[3071])


def test_cifar100_fine_and_coarse_labels(tmp_path, cifar100_files):
    written = cifar100_files(tmp_path, n_train=8, n_test=5)
    fine = load_cifar100(data_dir="unused", root=str(tmp_path))
    assert fine.num_classes == 100 and fine.train_x.shape == (8, 3, 32, 32)
    assert fine.train_y.tolist() == written["train"][1]
    coarse = load_cifar100(data_dir="unused", root=str(tmp_path), labels="coarse")
    assert coarse.num_classes == 20 and coarse.test_y.tolist() == written["test"][2]
    with pytest.raises(UserError, match="dataset.labels='medium' is not allowed"):
        load_cifar100(data_dir="unused", root=str(tmp_path), labels="medium")
    with pytest.raises(UserError, match="dataset.augment='yes' must be true or false"):
        load_cifar100(data_dir="unused", root=str(tmp_path), augment="yes")


def test_cifar_batches_admit_only_numpy_arrays(tmp_path, cifar_batch_writer):
    good = tmp_path / "good"
    cifar_batch_writer(good, np.zeros((2, 3072), np.uint8), {b"labels": [0, 1]})
    assert set(read_batch(good)) == {b"batch_label", b"data", b"filenames", b"labels"}
    marker = tmp_path / "ran"

    class RunsCommand:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({b"data": RunsCommand()}, protocol=4))
    with pytest.raises(UserError, match=r"\.system is not allowed in a CIFAR batch"):
        read_batch(evil)
    assert not marker.exists()


def test_offline_without_files_says_where_and_how_to_fetch(tmp_path):
    with pytest.raises(UserError) as caught:
        load_cifar100(data_dir=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar100" / "cifar-100-python") in message
    assert "runner train dataset=cifar100 dataset.download=true" in message


def test_augmentation_keeps_shape_changes_the_batch_and_follows_the_global_seed(tmp_path, cifar10_files):
    cifar10_files(tmp_path, per_batch=8, n_test=2)
    bundle = load_cifar10(data_dir="unused", root=str(tmp_path))
    assert bundle.augment is not None
    x = bundle.train_x
    torch.manual_seed(0)
    first = bundle.augment(x, None)
    torch.manual_seed(0)
    again = bundle.augment(x, None)
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, again)
    assert not torch.equal(first, x)
    assert torch.equal(bundle.augment(x, torch.Generator().manual_seed(3)),
                       bundle.augment(x, torch.Generator().manual_seed(3)))
    assert load_cifar10(data_dir="unused", root=str(tmp_path), augment=False).augment is None


def test_crop_flip_is_an_exact_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    fill = (-1.0, -2.0, -3.0)
    augment = RandomCropFlip(padding=2, fill=fill, flip=True)
    padded = torch.tensor(fill).view(1, 3, 1, 1).repeat(2, 1, 10, 10)
    padded[:, :, 2:8, 2:8] = x
    windows = {(top, left, flip): padded[:, :, top:top + 6, left:left + 6].flip(-1) if flip
               else padded[:, :, top:top + 6, left:left + 6]
               for top in range(5) for left in range(5) for flip in (False, True)}
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        out = augment(x, generator)
        for sample in range(2):
            matches = [key for key, window in windows.items() if torch.equal(out[sample], window[sample])]
            assert len(matches) >= 1  # each output is some crop of the padded image, maybe flipped
            seen.update(matches)
    assert any(key[2] for key in seen) and any(not key[2] for key in seen)
    assert len({key[:2] for key in seen}) > 10  # many different offsets, not a fixed one


def test_padding_fill_is_the_normalized_black_pixel(tmp_path, cifar10_files):
    cifar10_files(tmp_path, per_batch=2, n_test=2)
    bundle = load_cifar10(data_dir="unused", root=str(tmp_path))
    black = torch.tensor([-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)])
    x = torch.full((64, 3, 32, 32), 5.0)
    torch.manual_seed(1)
    out = bundle.augment(x, None)
    filled = out != 5.0
    assert filled.any()  # some offsets pad
    channel_values = [set(out[:, c][filled[:, c]].tolist()) for c in range(3)]
    assert [len(v) for v in channel_values] == [1, 1, 1]
    assert_close(torch.tensor([v.pop() for v in channel_values]), black)
