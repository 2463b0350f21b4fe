"""What the quantize family's methods share: one layer's result, the grid the parameters name, and the output
distance (KL divergence from the float model) used to compare models on the calibration set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from overparam.recipes.quantize.quantizer import Grid


@dataclass
class Quantized:
    """One layer's result: the weight on its grid (layer shape), its scales and zero points, a new bias."""

    weight: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bias: torch.Tensor | None = None
    figures: dict | None = None


def grid_of(params, bits: int | None = None) -> Grid:
    """The grid the parameters name (`bits` overrides quant.bits, for mixed precision)."""
    return Grid(bits=int(bits or params["quant.bits"]), fmt=str(params["quant.format"]), sym=bool(params["quant.sym"]),
                group_size=params["quant.group_size"])


@torch.no_grad()
def output_kl(reference: nn.Module, model: nn.Module, calibration, batch_size: int = 32) -> float:
    """Mean KL(reference || model) of the output distributions on the calibration inputs (per example or token)."""
    total, count = 0.0, 0
    for batch in calibration.batches(batch_size):
        p = torch.log_softmax(reference(batch).float(), dim=-1)
        q = torch.log_softmax(model(batch).float(), dim=-1)
        kl = (p.exp() * (p - q)).sum(-1)
        total += float(kl.sum())
        count += kl.numel()
    return total / max(count, 1)
