"""Batched data augmentation: whole batches at once, on their device, with torch ops only."""

from __future__ import annotations

from typing import Optional, Sequence

import torch


class RandomCropFlip:
    """Random crop after zero-padding by `padding` pixels, and a horizontal flip with probability 1/2.

    The CIFAR recipe of He et al. 2016 (torchvision's `RandomCrop(32, padding=4)` +
    `RandomHorizontalFlip()`), for a whole (N, C, H, W) batch in one gather. The data is already
    normalized, so the padding takes `fill` per channel: the normalized value of a black pixel,
    exactly what padding the raw image with zeros gives. Randomness comes from `generator`, or
    from the torch global RNG of the batch's device when it is None (the engine reseeds it).
    """

    def __init__(self, padding: int = 4, fill: Optional[Sequence[float]] = None, flip: bool = True):
        self.padding = int(padding)
        self.fill = None if fill is None else tuple(float(v) for v in fill)
        self.flip = bool(flip)

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        device = x.device
        fill = self.fill if self.fill is not None else (0.0,) * c
        padded = torch.tensor(fill, dtype=x.dtype, device=device).view(1, c, 1, 1).repeat(n, 1, h + 2 * p, w + 2 * p)
        padded[:, :, p:p + h, p:p + w] = x
        top = torch.randint(0, 2 * p + 1, (n,), device=device, generator=generator)
        left = torch.randint(0, 2 * p + 1, (n,), device=device, generator=generator)
        rows = top[:, None] + torch.arange(h, device=device)  # (N, H)
        columns = torch.arange(w, device=device).expand(n, w)
        if self.flip:
            flipped = torch.rand(n, device=device, generator=generator) < 0.5
            columns = torch.where(flipped[:, None], columns.flip(1), columns)
        columns = left[:, None] + columns  # (N, W), reversed for flipped rows: crop and flip in one gather
        # One gather over the flattened padded image: an order of magnitude faster on CPU than
        # four-tensor advanced indexing, and the same values.
        index = (rows[:, :, None] * (w + 2 * p) + columns[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        return padded.view(n, c, -1).gather(2, index).view(n, c, h, w)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"
