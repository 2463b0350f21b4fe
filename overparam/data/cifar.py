"""CIFAR-10 and CIFAR-100 read from the official python batches into tensors.

Files: `<root>/cifar-10-batches-py/{data_batch_1..5, test_batch}` and
`<root>/cifar-100-python/{train, test}`, exactly as the official archives (and torchvision's
download) unpack them. The batches are Python pickles: they are read only from those paths,
with an unpickler that admits nothing but numpy arrays (and the dicts, lists and bytes around
them). torchvision is used only to download (`download: true`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from overparam.data.augment import RandomCropFlip
from overparam.data.bundle import DataBundle
from overparam.data.common import (check_labels, dataset_root, missing_files_error, require_flags,
                                   to_normalized_float, torchvision_download)
from overparam.errors import UserError

# Per-channel mean and std of the training pixels in [0, 1].
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": ("cifar-100-python", ["train"], ["test"]),
}
LABEL_SETS = {"fine": (b"fine_labels", 100), "coarse": (b"coarse_labels", 20)}


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers only; any other global is refused.

    `_codecs.encode` is how a protocol-2 pickle written by Python 3 stores bytes (str -> bytes).
    """

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        if module == "numpy.core.multiarray":  # written by numpy 1; numpy 2 keeps it in numpy._core
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_batch(path: Path) -> dict:
    """One CIFAR python batch: a dict with bytes keys (b"data", b"labels" / b"fine_labels", ...)."""
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a CIFAR python batch ({exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise UserError(f"{path} is not a CIFAR python batch (no b'data' entry)")
    return batch


def _images(batches: list[dict], path_hint: Path) -> torch.Tensor:
    arrays = [np.asarray(b[b"data"]) for b in batches]
    for array in arrays:
        if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != 3 * 32 * 32:
            raise UserError(f"{path_hint}: b'data' must be uint8 of shape (N, 3072), got {array.dtype} {array.shape}")
    # Rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major: (N, 3, 32, 32) directly.
    return torch.from_numpy(np.concatenate(arrays)).reshape(-1, 3, 32, 32)


def _labels(batches: list[dict], key: bytes, path_hint: Path) -> torch.Tensor:
    if any(key not in b for b in batches):
        raise UserError(f"{path_hint}: batch has no {key!r} entry")
    return torch.cat([torch.as_tensor(np.asarray(b[key], dtype=np.int64)) for b in batches])


def _download(name: str, root: Path) -> None:
    torchvision_download(name, root, {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}[name],
                         f"copy the official python batches to {root / LAYOUT[name][0]} instead")


def load_cifar(name: str, data_dir: str, root: str | None = None, download: bool = False, augment: bool = True,
               normalize: bool = True, labels: str = "fine") -> DataBundle:
    """CIFAR as (N, 3, 32, 32) float32 tensors; `augment` adds batched random crop (pad 4) + flip for training."""
    require_flags(download=download, augment=augment, normalize=normalize)
    if name == "cifar100" and labels not in LABEL_SETS:
        raise UserError(f"dataset.labels={labels!r} is not allowed; choose one of: {', '.join(LABEL_SETS)}")
    folder, train_files, test_files = LAYOUT[name]
    base = dataset_root(data_dir, root, name)
    directory = base / folder

    def missing() -> list[str]:
        return [f for f in train_files + test_files if not (directory / f).is_file()]

    if missing() and download:
        _download(name, base)
    if missing():
        raise missing_files_error(name, directory, f"python batches ({', '.join(missing())})")
    label_key, num_classes = (b"labels", 10) if name == "cifar10" else LABEL_SETS[labels]
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    if not normalize:
        mean, std = None, None
    splits = {}
    for split, files in (("train", train_files), ("test", test_files)):
        batches = [read_batch(directory / f) for f in files]
        images = _images(batches, directory / files[0])
        targets = _labels(batches, label_key, directory / files[0])
        check_labels(targets, num_classes, name, images.shape[0])
        splits[split] = (to_normalized_float(images, mean, std), targets)
    augmentation = None
    if augment:
        # Pad with the normalized value of a black pixel, as padding the raw image with zeros would.
        fill = None if mean is None else [-m / s for m, s in zip(mean, std)]
        augmentation = RandomCropFlip(padding=4, fill=fill, flip=True)
    return DataBundle(name=name, train_x=splits["train"][0], train_y=splits["train"][1],
                      test_x=splits["test"][0], test_y=splits["test"][1], num_classes=num_classes,
                      augment=augmentation)


def load_cifar10(data_dir: str, root: str | None = None, download: bool = False, augment: bool = True,
                 normalize: bool = True) -> DataBundle:
    """CIFAR-10: 50,000 train / 10,000 test 32x32 colour images, 10 classes."""
    return load_cifar("cifar10", data_dir, root=root, download=download, augment=augment, normalize=normalize)


def load_cifar100(data_dir: str, root: str | None = None, download: bool = False, augment: bool = True,
                  normalize: bool = True, labels: str = "fine") -> DataBundle:
    """CIFAR-100: 50,000 train / 10,000 test 32x32 colour images, 100 fine (or 20 coarse) classes."""
    return load_cifar("cifar100", data_dir, root=root, download=download, augment=augment, normalize=normalize,
                      labels=labels)
