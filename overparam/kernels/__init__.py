"""Masked matmul: `masked_matmul(x, weight, mask, bias=None, backend="auto")` = x @ (weight*mask).T + bias.

Backends share one contract (DESIGN.md, "Kernels"); `torch` is the reference and ground truth.
Gradients with respect to the weight are exactly zero where the mask is zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "torch", "triton", "sparse")
_default_backend = "auto"


def set_default_backend(backend: str) -> None:
    """Backend used by masked layers whose own `backend` is None (`hardware.kernel` sets this)."""
    global _default_backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    _default_backend = backend


def get_default_backend() -> str:
    return _default_backend


def masked_matmul_reference(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch: F.linear(x, weight * mask, bias); autograd masks the weight gradient."""
    return F.linear(x, weight * mask.to(weight.dtype), bias)


def masked_matmul(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None,
                  backend: str | None = None) -> torch.Tensor:
    """x @ (weight * mask).T + bias for inputs of any leading batch shape."""
    backend = backend or _default_backend
    if backend in ("torch", "auto"):
        return masked_matmul_reference(x, weight, mask, bias)
    raise ValueError(f"kernel backend {backend!r} is not available")
