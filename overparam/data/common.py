"""Pieces the image loaders share: where files live, the offline error, uint8 -> normalized floats."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from overparam.errors import UserError


def dataset_root(data_dir: str, root: str | None, name: str) -> Path:
    """`root` when given, else `<data_dir>/<name>` (both with ~ expanded)."""
    return Path(root).expanduser() if root else Path(data_dir).expanduser() / name


def torchvision_download(name: str, root: Path, class_name: str, instead: str) -> None:
    """Fetch both splits with torchvision's dataset class; any failure is one line saying what to do."""
    import torchvision.datasets as tv_datasets

    try:
        for train in (True, False):
            getattr(tv_datasets, class_name)(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - any network/file failure becomes one clear line
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"dataset {name}: download into {root} failed ({text}); {instead}") from None


def missing_files_error(name: str, where: Path, what: str) -> UserError:
    """The one line an offline user sees: where the files go and the command that fetches them."""
    return UserError(
        f"dataset {name}: {what} not found under {where}; fetch them with "
        f"`runner train dataset={name} dataset.download=true` on a machine with internet "
        f"(same paths.data_dir or dataset.root), or copy them there")


def to_normalized_float(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1], then per-channel (x - mean) / std when given.

    One vectorized pass over the whole tensor, in place after the conversion.
    """
    x = images.to(torch.float32).div_(255.0)
    if mean is not None and std is not None:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
        x.div_(torch.tensor(std, dtype=torch.float32).view(shape))
    return x


def check_labels(labels: torch.Tensor, num_classes: int, name: str, count: int) -> None:
    """Labels must be one per image and lie in [0, num_classes)."""
    if labels.numel() != count:
        raise UserError(f"dataset {name}: {labels.numel()} labels for {count} images; the files are corrupt")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise UserError(f"dataset {name}: labels outside [0, {num_classes}); the files are corrupt")


def require_flags(**flags) -> None:
    """Each `dataset.<key>` given here must be true or false (a typo like `augment=yes` is refused)."""
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise UserError(f"dataset.{key}={value!r} must be true or false")
