"""A dataset held as tensors: train/val/test splits, shapes and the batched augmentation."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch

from overparam.errors import UserError


@dataclass
class DataBundle:
    """Train/val/test tensors on one device; `augment(x, generator)` runs batched on a batch."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    val_x: Optional[torch.Tensor] = None
    val_y: Optional[torch.Tensor] = None
    augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = field(default=None, repr=False)
    # What was done to the labels (label noise: fraction, seed, labels replaced and changed), for summaries.
    notes: dict = field(default_factory=dict)
    # Text only: UTF-8 bytes per token of the corpus; evaluation then adds perplexity and bits per byte.
    bytes_per_token: Optional[float] = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: str | torch.device) -> "DataBundle":
        """The same bundle on another device."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            train_x=move(self.train_x), train_y=move(self.train_y),
            test_x=move(self.test_x), test_y=move(self.test_y),
            val_x=move(self.val_x), val_y=move(self.val_y),
        )

    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Evaluation splits present: val (when split off) and test."""
        out = {}
        if self.val_x is not None:
            out["val"] = (self.val_x, self.val_y)
        out["test"] = (self.test_x, self.test_y)
        return out

    def subset_train(self, indices: torch.Tensor) -> "DataBundle":
        """Keep only these training examples (data pruning)."""
        return replace(self, train_x=self.train_x[indices], train_y=self.train_y[indices])


LABEL_NOISE_KEYS = ("label_noise", "label_noise_seed")


def split_train_val(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int):
    """Seeded split of train into (train, val); the same seed always gives the same split."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"dataset.val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(x) * val_fraction))
    if n_val == 0:
        return x, y, None, None
    generator = torch.Generator().manual_seed(int(seed) + 7919)
    order = torch.randperm(len(x), generator=generator)
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def add_label_noise(y: torch.Tensor, fraction: float, num_classes: int, seed: int) -> tuple[torch.Tensor, dict]:
    """(labels, notes): round(fraction * n) labels, chosen by `seed`, replaced by uniformly random classes.

    A replaced label may draw its own class again (the convention of Zhang et al. 2017 and Nakkiran et
    al. 2020), so about fraction * (1 - 1/classes) of the labels actually change; notes count both.
    """
    if not 0.0 <= fraction <= 1.0:
        raise UserError(f"dataset.label_noise must be in [0, 1], got {fraction}")
    count = int(round(len(y) * fraction))
    generator = torch.Generator().manual_seed(int(seed) + 15485863)
    chosen = torch.randperm(len(y), generator=generator)[:count]
    random_classes = torch.randint(0, int(num_classes), (count,), generator=generator, dtype=y.dtype)
    noisy = y.clone()
    noisy[chosen.to(y.device)] = random_classes.to(y.device)
    notes = {"label_noise": float(fraction), "label_noise_seed": int(seed), "labels_replaced": count,
             "labels_changed": int((noisy != y).sum())}
    return noisy, notes


def effective_split_seed(dataset_cfg, seed: int) -> int:
    """The seed of the val split: `dataset.split_seed` when set, else the run's `seed` (configs older than it)."""
    split_seed = (dataset_cfg or {}).get("split_seed")
    return int(seed if split_seed is None else split_seed)


def split_identity(dataset_cfg, seed: int) -> dict:
    """What decides which examples a run held out: the dataset config, its val_fraction and the split seed.

    Two runs with equal split identities trained on exactly the same examples and held out the same
    val split; a run with another one may have trained on examples the other validates on.
    """
    # A null key is an option at its default: a run saved before the option existed has the same split.
    dataset = {k: v for k, v in dict(dataset_cfg or {}).items()
               if k not in ("split_seed", "_target_", *LABEL_NOISE_KEYS) and v is not None}
    fraction = float(dataset.pop("val_fraction", 0.0) or 0.0)
    return {"dataset": dataset, "val_fraction": fraction,
            "split_seed": effective_split_seed(dataset_cfg, seed) if fraction else None}


def load_dataset(cfg, data_dir: str, seed: int = 0, device: str = "cpu", trust: bool | None = None,
                 extra: dict | None = None) -> DataBundle:
    """Build the registered dataset a `dataset` config names, split val off train (seeded by
    `dataset.split_seed`, else by `seed`), move it to `device`. `extra`: more loader options (the
    tokenizer a model brings)."""
    from overparam.components import resolve

    loader = resolve("dataset", cfg, trust=trust)
    options = {k: v for k, v in cfg.items()
               if k not in ("_target_", "name", "val_fraction", "split_seed", *LABEL_NOISE_KEYS)}
    if getattr(inspect.getmodule(loader), "owns_split", False):
        if cfg.get("label_noise"):
            raise UserError(f"dataset.label_noise={cfg.get('label_noise')} is for classifiers: a text dataset's "
                            f"targets are the next tokens; drop it")
        # Text splits spans of one token stream; the loader draws them itself.
        options.update(val_fraction=float(cfg.get("val_fraction") or 0.0), split_seed=effective_split_seed(cfg, seed))
    options.update(extra or {})
    bundle: DataBundle = loader(data_dir=data_dir, **options)
    val_fraction = float(cfg.get("val_fraction", 0.0) or 0.0)
    if val_fraction and bundle.val_x is None:
        tx, ty, vx, vy = split_train_val(bundle.train_x, bundle.train_y, val_fraction,
                                         effective_split_seed(cfg, seed))
        bundle = replace(bundle, train_x=tx, train_y=ty, val_x=vx, val_y=vy)
    # Noise goes into the training labels only, after val is split off: val and test stay clean.
    # Its own seed (not the run's) lets runs of several seeds or widths share one noisy training set.
    fraction = float(cfg.get("label_noise") or 0.0)
    if fraction:
        noisy, notes = add_label_noise(bundle.train_y, fraction, bundle.num_classes, int(cfg.get("label_noise_seed") or 0))
        bundle = replace(bundle, train_y=noisy, notes={**bundle.notes, **notes})
    return bundle.to(device)
