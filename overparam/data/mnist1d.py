"""MNIST-1D (Greydanus 2020), generated locally: the package's standard arguments, or a shifted copy.

The generator's own settings are dataset config keys (`dataset.corr_noise_scale=0.5`), and
`dataset.variant` names a set of them (VARIANTS); null keys keep the standard value, so the default
dataset (and its cached bytes) is exactly the published one. Each setting is cached under its own
file, keyed by every generator argument.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from overparam.data.mnist1d_settings import augment_settings, generator_args
from overparam.atomic import atomic_write_bytes


def load(data_dir: str, variant: str | None = None, augment: dict | None = None, **settings):
    """MNIST-1D (4,000 train / 1,000 test, length 40 with the standard arguments); cached on disk.

    `variant` names a set of generator settings (see VARIANTS); a key given here overrides it. `augment`
    ({shift, scale, noise, shear}) redraws the generator's own transforms for every training batch.
    """
    import torch

    from overparam.data.augment import SignalAugment
    from overparam.data.bundle import DataBundle

    args = generator_args(variant, **settings)
    augmentation = augment_settings(augment)
    key = "-".join(str(v).replace(" ", "") for v in args.values())
    cache = Path(data_dir).expanduser() / "mnist1d" / f"mnist1d-{abs(hash_text(key)):x}.npz"
    if cache.exists():
        with np.load(cache) as arrays:
            data = {k: arrays[k] for k in arrays.files}
    else:
        from mnist1d.data import get_dataset_args, make_dataset

        dataset_args = get_dataset_args(as_dict=False)
        for name, value in args.items():
            setattr(dataset_args, name, value)
        made = make_dataset(dataset_args)
        data = {k: np.asarray(made[k]) for k in ("x", "y", "x_test", "y_test")}
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **data)
        atomic_write_bytes(cache, buffer.getvalue())
    return DataBundle(
        name="mnist1d",
        train_x=torch.as_tensor(data["x"], dtype=torch.float32),
        train_y=torch.as_tensor(data["y"], dtype=torch.long),
        test_x=torch.as_tensor(data["x_test"], dtype=torch.float32),
        test_y=torch.as_tensor(data["y_test"], dtype=torch.long),
        num_classes=10,
        augment=SignalAugment(**augmentation) if augmentation else None,
    )


def hash_text(text: str) -> int:
    """A stable (process-independent) hash of a string."""
    import hashlib

    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)
