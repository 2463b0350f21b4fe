"""Small datasets written in the real on-disk formats (idx files, CIFAR python batches)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """An idx file: magic 0x0000 08 <ndim>, big-endian uint32 dims, then the uint8 data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def make_idx_dataset(root: Path, folder: str, n_train: int, n_test: int, gz: bool, seed: int = 0) -> dict:
    """MNIST-format files under <root>/<folder>/raw/; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(root / folder / "raw" / name, array, gz)
    return arrays


def write_cifar_batch(path: Path, data: np.ndarray, labels: dict[bytes, list[int]]) -> None:
    """A CIFAR python batch: a pickled dict with bytes keys, b'data' uint8 (N, 3072), label lists."""
    batch = {b"batch_label": b"testing batch", b"data": data,
             b"filenames": [b"img_%d.png" % i for i in range(len(data))]}
    batch.update(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def make_cifar10(root: Path, per_batch: int, n_test: int, seed: int = 0) -> dict:
    """cifar-10-batches-py/ with five train batches and a test batch; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    train = rng.integers(0, 256, (5 * per_batch, 3072), dtype=np.uint8)
    train_labels = (np.arange(5 * per_batch) % 10).tolist()
    for index in range(5):
        rows = slice(index * per_batch, (index + 1) * per_batch)
        write_cifar_batch(folder / f"data_batch_{index + 1}", train[rows], {b"labels": train_labels[rows]})
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_labels = ((np.arange(n_test) * 7) % 10).tolist()
    write_cifar_batch(folder / "test_batch", test, {b"labels": test_labels})
    return {"train": train, "train_labels": train_labels, "test": test, "test_labels": test_labels}


def make_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """cifar-100-python/{train,test} with fine and coarse labels; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    out = {}
    for split, count in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        fine = ((np.arange(count) * 13) % 100).tolist()
        coarse = [label // 5 for label in fine]
        write_cifar_batch(folder / split, data, {b"fine_labels": fine, b"coarse_labels": coarse})
        out[split] = (data, fine, coarse)
    return out


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every test here runs with the shared `single_thread` fixture."""
    yield


@pytest.fixture
def idx_files():
    return make_idx_dataset


@pytest.fixture
def cifar10_files():
    return make_cifar10


@pytest.fixture
def cifar100_files():
    return make_cifar100


@pytest.fixture
def cifar_batch_writer():
    return write_cifar_batch


@pytest.fixture
def idx_writer():
    return write_idx
