"""Datasets as tensors on the device: `load_dataset(cfg, ...)` -> `DataBundle`."""

from overparam.data.bundle import DataBundle, load_dataset, split_train_val

__all__ = ["DataBundle", "load_dataset", "split_train_val"]
