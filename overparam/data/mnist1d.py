"""MNIST-1D (Greydanus 2020), generated locally with the package's standard arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from overparam.data.bundle import DataBundle
from overparam.store.atomic import atomic_write_bytes


def load(data_dir: str, num_samples: int = 5000, train_split: float = 0.8, template_len: int = 12,
         padding: tuple = (36, 60), scale_coeff: float = 0.4, max_translation: int = 48,
         corr_noise_scale: float = 0.25, iid_noise_scale: float = 2e-2, shear_scale: float = 0.75,
         final_seq_length: int = 40, generator_seed: int = 42) -> DataBundle:
    """MNIST-1D with the standard arguments (4,000 train / 1,000 test, length 40); cached on disk."""
    args = dict(num_samples=num_samples, train_split=train_split, template_len=template_len,
                padding=list(padding), scale_coeff=scale_coeff, max_translation=max_translation,
                corr_noise_scale=corr_noise_scale, iid_noise_scale=iid_noise_scale,
                shear_scale=shear_scale, final_seq_length=final_seq_length, seed=generator_seed)
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
    )


def hash_text(text: str) -> int:
    """A stable (process-independent) hash of a string."""
    import hashlib

    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)
