"""Small fixed float64 inputs (no RNG) the mergekit pins were computed on (scripts/compare_mergekit.py --pins)."""

from __future__ import annotations


def inputs():
    """(base, [three fine-tuned]) state dicts: a 3x4 weight and a 4-entry bias."""
    import torch

    def grid(shape, phase):
        n = 1
        for s in shape:
            n *= s
        return torch.sin(torch.arange(n, dtype=torch.float64) * 1.7 + phase).reshape(shape)

    base = {"w": grid((3, 4), 0.0), "b": grid((4,), 0.5)}
    tuned = [{k: v + 0.3 * grid(v.shape, 1.0 + i) + 0.1 * grid(v.shape, 7.0) for k, v in base.items()}
             for i in range(3)]
    return base, tuned
