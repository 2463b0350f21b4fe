"""The pure-PyTorch masked matmul: the ground truth every other backend is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_matmul_reference(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch: F.linear(x, weight * mask, bias); autograd masks the weight gradient."""
    return F.linear(x, weight * mask.to(weight.dtype), bias)
