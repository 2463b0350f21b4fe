"""Operands and comparisons shared by the kernel tests."""

from __future__ import annotations

import torch

from overparam.kernels import masked_matmul, masked_matmul_reference

# Every implementation that runs on this CPU: (backend, sparse implementation or None).
CPU_VARIANTS = [("torch", None), ("sparse", "native"), ("sparse", "torch_sparse"), ("triton", None)]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 2e-2}


def make_mask(out_features: int, in_features: int, pattern: str, sparsity: float, generator: torch.Generator,
              tile: tuple[int, int] = (32, 32)) -> torch.Tensor:
    """A 0/1 float mask: all_zero, all_one, random (at `sparsity`), two_four, or zero_tiles."""
    if pattern == "all_zero":
        return torch.zeros(out_features, in_features)
    if pattern == "all_one":
        return torch.ones(out_features, in_features)
    if pattern == "random":
        return (torch.rand(out_features, in_features, generator=generator) >= sparsity).float()
    if pattern == "two_four":
        groups = torch.rand(out_features, -(-in_features // 4), 4, generator=generator)
        keep = torch.zeros_like(groups).scatter_(2, groups.topk(2, dim=2).indices, 1.0)
        return keep.reshape(out_features, -1)[:, :in_features].contiguous()
    if pattern == "zero_tiles":
        block_n, block_k = tile
        tiles = torch.rand(-(-out_features // block_n), -(-in_features // block_k), generator=generator) >= 0.5
        tiles[0, 0] = True
        inside = (torch.rand(out_features, in_features, generator=generator) >= sparsity).float()
        full = tiles.repeat_interleave(block_n, 0).repeat_interleave(block_k, 1)[:out_features, :in_features]
        return inside * full
    raise ValueError(pattern)


def run_backend(backend: str, implementation: str | None, x, weight, mask, bias):
    """Output of one backend (a specific sparse implementation when given)."""
    if implementation is not None:
        from overparam.kernels.sparse import masked_matmul_sparse

        return masked_matmul_sparse(x, weight, mask, bias, implementation=implementation)
    return masked_matmul(x, weight, mask, bias, backend=backend)


def forward_backward(fn, x, weight, bias, grad):
    """(output, grad_x, grad_weight, grad_bias) of fn() for fresh leaf copies of the operands."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, weight, bias)]
    out = fn(*leaves)
    out.backward(grad)
    return (out.detach(), *(t.grad if t is not None else None for t in leaves))


def assert_matches_reference(backend, implementation, x, weight, mask, bias, dtype=torch.float32):
    """Forward and all gradients of `backend` equal the reference's within the dtype's tolerance;
    the weight gradient is exactly zero wherever the mask is zero."""
    grad = torch.randn(*x.shape[:-1], weight.shape[0], dtype=dtype)
    got = forward_backward(lambda a, w, b: run_backend(backend, implementation, a, w, mask, b), x, weight, bias, grad)
    # The reference in float64 is the ground truth; compare in the backend's dtype tolerance.
    want = forward_backward(lambda a, w, b: masked_matmul_reference(a, w, mask.double(), b),
                            x.double(), weight.double(), None if bias is None else bias.double(), grad.double())
    tolerance = TOLERANCE[dtype]
    names = ("output", "grad_x", "grad_weight", "grad_bias")
    for name, g, w in zip(names, got, want):
        if w is None:
            assert g is None
            continue
        assert g.dtype == dtype and g.shape == w.shape, name
        scale = max(1.0, float(w.abs().max()))
        error = float((g.double() - w).abs().max()) if g.numel() else 0.0
        assert error <= tolerance * scale * max(1, x.shape[-1], weight.shape[0]) ** 0.5, (name, error)
    grad_weight = got[2]
    assert torch.all(grad_weight[mask == 0] == 0), "masked weight gradient is not exactly zero"
