"""MNIST and Fashion-MNIST read straight from their idx files into tensors.

Files are looked up where torchvision keeps them, `<root>/MNIST/raw/` (`<root>/FashionMNIST/raw/`),
then `<root>/raw/` and `<root>/`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each plain or `.gz`. torchvision is used
only to download (`download: true`).
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import torch

from overparam.data.bundle import DataBundle
from overparam.data.common import (check_labels, dataset_root, missing_files_error, require_flags,
                                   to_normalized_float, torchvision_download)
from overparam.errors import UserError

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
# Magic numbers: two zero bytes, 0x08 (unsigned byte data), then the number of dimensions.
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801

# Mean and std of the training pixels in [0, 1] (the values torchvision's examples use).
STATS = {
    "mnist": ("MNIST", (0.1307,), (0.3081,)),
    "fashion_mnist": ("FashionMNIST", (0.2860,), (0.3530,)),
}


def read_idx(path: Path, expected_magic: int) -> torch.Tensor:
    """An idx file (plain or gzip) as a uint8 tensor of the shape its header gives."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path} cannot be read ({exc})") from None
    if len(raw) < 4:
        raise UserError(f"{path} is not an idx file (too short)")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise UserError(f"{path}: idx magic number {magic:#010x}, expected {expected_magic:#010x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise UserError(f"{path}: {len(raw) - header} data bytes, the header says {math.prod(dims)}; file is truncated")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(dims)


def _candidate_dirs(root: Path, folder: str) -> list[Path]:
    return [root / folder / "raw", root / "raw", root]


def _find(root: Path, folder: str, stem: str) -> Path | None:
    for directory in _candidate_dirs(root, folder):
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def _download(name: str, root: Path) -> None:
    torchvision_download(name, root, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name],
                         f"copy the idx files to {root / STATS[name][0] / 'raw'} instead")


def load_idx_dataset(name: str, data_dir: str, root: str | None = None, download: bool = False,
                     normalize: bool = True) -> DataBundle:
    """MNIST-format data as (N, 1, 28, 28) float32 tensors, normalized with the standard mean/std."""
    require_flags(download=download, normalize=normalize)
    folder, mean, std = STATS[name]
    base = dataset_root(data_dir, root, name)
    paths = {key: _find(base, folder, stem) for key, stem in FILES.items()}
    if any(path is None for path in paths.values()) and download:
        _download(name, base)
        paths = {key: _find(base, folder, stem) for key, stem in FILES.items()}
    missing = [FILES[key] for key, path in paths.items() if path is None]
    if missing:
        raise missing_files_error(name, base / folder / "raw", f"idx files ({', '.join(missing)}[.gz])")
    tensors = {}
    for key, path in paths.items():
        tensors[key] = read_idx(path, IMAGE_MAGIC if key.endswith("_x") else LABEL_MAGIC)
    for split in ("train", "test"):
        images, labels = tensors[f"{split}_x"], tensors[f"{split}_y"]
        check_labels(labels, 10, name, images.shape[0])
    if not normalize:
        mean, std = None, None
    return DataBundle(
        name=name,
        train_x=to_normalized_float(tensors["train_x"].unsqueeze(1), mean, std),
        train_y=tensors["train_y"].long(),
        test_x=to_normalized_float(tensors["test_x"].unsqueeze(1), mean, std),
        test_y=tensors["test_y"].long(),
        num_classes=10,
    )


def load_mnist(data_dir: str, root: str | None = None, download: bool = False, normalize: bool = True) -> DataBundle:
    """MNIST: 60,000 train / 10,000 test 28x28 gray digits."""
    return load_idx_dataset("mnist", data_dir, root=root, download=download, normalize=normalize)


def load_fashion_mnist(data_dir: str, root: str | None = None, download: bool = False,
                       normalize: bool = True) -> DataBundle:
    """Fashion-MNIST: 60,000 train / 10,000 test 28x28 gray clothing images."""
    return load_idx_dataset("fashion_mnist", data_dir, root=root, download=download, normalize=normalize)
