"""Masked matmul: `masked_matmul(x, weight, mask, bias=None, backend="auto")` = x @ (weight*mask).T + bias.

Backends share one contract (DESIGN.md, "Kernels"); `torch` is the reference and ground truth.
Gradients with respect to the weight are exactly zero where the mask is zero.
- `torch`   plain PyTorch (`reference.py`), any device and dtype.
- `triton`  tile-skipping fused kernels (`triton_kernels.py`): CUDA, or CPU under TRITON_INTERPRET=1.
- `sparse`  CSR at the mask's nonzeros on CPU, 2:4 semi-structured on CUDA (`sparse.py`).
- `auto`    `sparse` where the measured crossover says it is faster, else `torch` (`dispatch.py`).
Derived mask data (tile liveness, CSR structure) is built once per mask change (`cache.py`).
Convolutions have their own entry point with the same backends, `conv.masked_conv` (`sparse`: a
direct CSR convolution on the CPU; `triton` has no convolution kernel and runs the reference).
"""

from __future__ import annotations

import torch

from overparam.kernels.reference import masked_matmul_reference

BACKENDS = ("auto", "torch", "triton", "sparse")
_default_backend = "auto"

__all__ = ["BACKENDS", "masked_matmul", "masked_matmul_reference", "set_default_backend", "get_default_backend",
           "backend_unavailable_reason", "available_backends", "resolve_backend"]


def backend_unavailable_reason(backend: str, device_type: str = "cpu") -> str | None:
    """None when `backend` can run on `device_type` here, else one line saying why not."""
    if backend not in BACKENDS:
        return f"unknown kernel backend {backend!r}; choose one of: {', '.join(BACKENDS)}"
    if backend == "triton":
        from overparam.kernels import triton_kernels

        return triton_kernels.unavailable_reason(device_type)
    return None


def available_backends(device_type: str = "cpu") -> list[str]:
    """Backends (besides `auto`) that can run on `device_type` in this process."""
    return [b for b in BACKENDS if b != "auto" and backend_unavailable_reason(b, device_type) is None]


def set_default_backend(backend: str, device_type: str | None = None) -> None:
    """Backend used by masked layers whose own `backend` is None (`hardware.kernel` sets this).

    `triton` is refused (UserError) where it cannot run on `device_type` (default: any device here).
    On a CPU that means without TRITON_INTERPRET=1: the interpreter runs a training step in seconds,
    so it runs only when the user turned it on explicitly.
    """
    global _default_backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "triton":
        from overparam.errors import UserError

        devices = (device_type,) if device_type else ("cuda", "cpu")
        reasons = {device: backend_unavailable_reason("triton", device) for device in devices}
        if all(reasons.values()):
            if device_type in (None, "cpu") and not torch.cuda.is_available():
                raise UserError("hardware.kernel=triton needs a CUDA GPU and none is here; on a CPU use "
                                "hardware.kernel=sparse or auto (set TRITON_INTERPRET=1 to run triton's slow "
                                "CPU interpreter on purpose)")
            if device_type == "cpu" and not backend_unavailable_reason("triton", "cuda"):
                raise UserError("hardware.kernel=triton runs on the GPU, but hardware.device=cpu; use hardware=cuda, "
                                "or hardware.kernel=sparse or auto on the CPU")
            raise UserError(f"hardware.kernel=triton is unavailable here: {'; '.join(reasons.values())}; use "
                            "hardware.kernel=sparse or auto")
    _default_backend = backend


def get_default_backend() -> str:
    """The backend masked layers use when they name none."""
    return _default_backend


def resolve_backend(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, backend: str | None = None) -> str:
    """The concrete backend (`torch`, `triton` or `sparse`) a call with these operands runs."""
    backend = backend or _default_backend
    if backend == "auto":
        from overparam.kernels.dispatch import choose_backend

        return choose_backend(x, weight, mask)
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return backend


def resolve_conv_backend(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, stride, padding, dilation,
                         groups: int, backend: str | None = None) -> str:
    """The backend a masked convolution with these operands runs; `auto` decides here, above conv.py."""
    backend = backend or _default_backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        from overparam.kernels.dispatch import choose_conv_backend

        return choose_conv_backend(x, weight, mask, stride, padding, dilation, groups)
    return backend


def masked_matmul(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None,
                  backend: str | None = None) -> torch.Tensor:
    """x @ (weight * mask).T + bias for inputs of any leading batch shape."""
    backend = resolve_backend(x, weight, mask, backend)
    if backend == "torch":
        return masked_matmul_reference(x, weight, mask, bias)
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        # The kernels take one dtype: under autocast use its dtype, as F.linear would.
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return masked_matmul(x.to(dtype), weight.to(dtype), mask, None if bias is None else bias.to(dtype),
                                 backend=backend)
    if backend == "sparse":
        from overparam.kernels.sparse import masked_matmul_sparse

        return masked_matmul_sparse(x, weight, mask, bias)
    from overparam.kernels.triton_kernels import masked_matmul_triton

    return masked_matmul_triton(x, weight, mask, bias)
