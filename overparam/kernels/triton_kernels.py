"""The `triton` backend: fused masked matmul kernels that skip all-zero mask tiles.

The weight (out=N, in=K) is cut into BLOCK_N x BLOCK_K tiles. Once per mask change (cached in
`cache.mask_cache`) we compute which tiles hold a nonzero, and for every row of tiles and every
column of tiles the list of its live tiles. Then:
- forward  y[M,N]  = x @ (W*M)^T : each (m, n) program loops over the live K-tiles of row n only;
- grad_x   [M,K]   = g @ (W*M)   : each (m, k) program loops over the live N-tiles of column k;
- grad_W   [N,K]   = (g^T x) * M : each (n, k) program runs its M loop only when its tile is live,
                                   and multiplies by the mask, so masked entries are exactly zero.
Masks are applied tile by tile inside the kernels (no W*M is materialized); a masked weight is
never used, whatever its value (even inf/nan). Accumulation is in
float32; `input_precision="ieee"` keeps float32 results at parity with the reference.

One fixed launch configuration per device (no autotuning: the tile grid of the liveness map
must match the kernels' tiles, and the CPU interpreter cannot autotune). On a CPU the kernels
run only under `TRITON_INTERPRET=1`, which must be set before this module is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from overparam.kernels.cache import mask_cache

try:  # triton is optional: the backend reports itself unavailable without it
    import triton
    import triton.language as tl
    _IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    _IMPORT_ERROR = f"triton cannot be imported ({exc})"

# triton.jit reads the flag when the kernels below are defined, so record it at the same moment.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages). The interpreter runs numpy per program, so
# small tiles there keep multi-tile behaviour testable on small shapes.
GPU_CONFIG = (64, 64, 32, 4, 3)
INTERPRETER_CONFIG = (16, 32, 32, 1, 1)


def unavailable_reason(device_type: str) -> str | None:
    """None when the kernels can run on tensors of `device_type`, else why not."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if device_type == "cuda":
        if INTERPRETED:
            return "TRITON_INTERPRET=1 runs kernels on the CPU only"
        if not torch.cuda.is_available():
            return "no CUDA device"
        return None
    if device_type == "cpu":
        return None if INTERPRETED else "on a CPU the triton kernels run only under TRITON_INTERPRET=1"
    return f"no triton kernels for device type {device_type!r}"


def tile_shape(device_type: str) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K): the weight's liveness tiles are BLOCK_N x BLOCK_K."""
    config = INTERPRETER_CONFIG if device_type == "cpu" else GPU_CONFIG
    return config[:3]


@dataclass(frozen=True)
class TileLiveness:
    """Per-tile liveness of one mask for one tile shape, with per-row and per-column live lists."""

    block_n: int
    block_k: int
    live: torch.Tensor          # (tiles_n, tiles_k) int32, 1 where the tile has a nonzero
    row_live: torch.Tensor      # (tiles_n, max(1, max_row)) int32, live k-tiles of each row, front-packed
    row_count: torch.Tensor     # (tiles_n,) int32
    col_live: torch.Tensor      # (tiles_k, max(1, max_col)) int32, live n-tiles of each column
    col_count: torch.Tensor     # (tiles_k,) int32
    # The mask converted to the weight's dtype and made contiguous, when it was not already so
    # (None otherwise: the cache must not hold the mask itself, or it would never be freed).
    converted_mask: torch.Tensor | None

    def kernel_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask as the kernels load it."""
        return mask if self.converted_mask is None else self.converted_mask

    @property
    def live_fraction(self) -> float:
        return float(self.live.float().mean()) if self.live.numel() else 0.0


def _packed_lists(live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a 0/1 matrix, the column indices of its ones packed to the front."""
    rows, cols = live.shape
    counts = live.sum(1).to(torch.int32)
    width = max(1, int(counts.max()) if rows else 1)
    # Stable sort puts live columns first, in increasing order.
    order = torch.argsort((live == 0).to(torch.int8), dim=1, stable=True)[:, :width]
    return order.to(torch.int32).contiguous(), counts.contiguous()


def build_liveness(mask: torch.Tensor, dtype: torch.dtype, block_n: int, block_k: int) -> TileLiveness:
    """Compute the tile liveness of `mask` (out, in) for BLOCK_N x BLOCK_K tiles."""
    out_features, in_features = mask.shape
    tiles_n = triton_cdiv(out_features, block_n)
    tiles_k = triton_cdiv(in_features, block_k)
    padded = torch.zeros(tiles_n * block_n, tiles_k * block_k, dtype=torch.bool, device=mask.device)
    padded[:out_features, :in_features] = mask != 0
    live = padded.reshape(tiles_n, block_n, tiles_k, block_k).any(dim=3).any(dim=1).to(torch.int32)
    row_live, row_count = _packed_lists(live)
    col_live, col_count = _packed_lists(live.t().contiguous())
    converted = mask.to(dtype).contiguous()
    return TileLiveness(block_n, block_k, live, row_live, row_count, col_live, col_count,
                        None if converted is mask else converted)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def liveness(mask: torch.Tensor, dtype: torch.dtype) -> TileLiveness:
    """The cached liveness of `mask` for this device's tiles (rebuilt only when the mask changes)."""
    _, block_n, block_k = tile_shape(mask.device.type)
    return mask_cache.get(mask, ("triton_tiles", block_n, block_k, dtype),
                          lambda m: build_liveness(m, dtype, block_n, block_k))


if triton is not None:

    @triton.jit
    def _forward_kernel(x_ptr, w_ptr, m_ptr, bias_ptr, y_ptr, row_live_ptr, row_count_ptr,
                        M, N, K, stride_xm, stride_xk, stride_wn, stride_wk, stride_mn, stride_mk,
                        stride_ym, stride_yn, live_stride,
                        HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        count = tl.load(row_count_ptr + pid_n)
        for index in range(0, count):
            k_tile = tl.load(row_live_ptr + pid_n * live_stride + index)
            offs_k = k_tile * BLOCK_K + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
            in_bounds = (offs_k[:, None] < K) & (offs_n[None, :] < N)
            # (BLOCK_K, BLOCK_N) tile of W^T and of the mask
            w = tl.load(w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn, mask=in_bounds, other=0.0)
            m = tl.load(m_ptr + offs_k[:, None] * stride_mk + offs_n[None, :] * stride_mn, mask=in_bounds, other=0.0)
            acc = tl.dot(x, tl.where(m != 0, w, 0.0), acc, input_precision=PRECISION)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)
            acc += bias.to(tl.float32)[None, :]
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
                 acc.to(y_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))

    @triton.jit
    def _grad_x_kernel(g_ptr, w_ptr, m_ptr, gx_ptr, col_live_ptr, col_count_ptr,
                       M, N, K, stride_gm, stride_gn, stride_wn, stride_wk, stride_mn, stride_mk,
                       stride_xm, stride_xk, live_stride,
                       PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_k = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        count = tl.load(col_count_ptr + pid_k)
        for index in range(0, count):
            n_tile = tl.load(col_live_ptr + pid_k * live_stride + index)
            offs_n = n_tile * BLOCK_N + tl.arange(0, BLOCK_N)
            g = tl.load(g_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn,
                        mask=(offs_m[:, None] < M) & (offs_n[None, :] < N), other=0.0)
            in_bounds = (offs_n[:, None] < N) & (offs_k[None, :] < K)
            w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk, mask=in_bounds, other=0.0)
            m = tl.load(m_ptr + offs_n[:, None] * stride_mn + offs_k[None, :] * stride_mk, mask=in_bounds, other=0.0)
            acc = tl.dot(g, tl.where(m != 0, w, 0.0), acc, input_precision=PRECISION)
        tl.store(gx_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                 acc.to(gx_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_k[None, :] < K))

    @triton.jit
    def _grad_w_kernel(g_ptr, x_ptr, m_ptr, gw_ptr, live_ptr,
                       M, N, K, stride_gm, stride_gn, stride_xm, stride_xk, stride_mn, stride_mk,
                       stride_wn, stride_wk, tiles_k,
                       PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        # A dead tile runs no M loop at all; its output is zeros.
        steps = tl.load(live_ptr + pid_n * tiles_k + pid_k) * tl.cdiv(M, BLOCK_M)
        for step in range(0, steps):
            offs_m = step * BLOCK_M + tl.arange(0, BLOCK_M)
            # (BLOCK_N, BLOCK_M) tile of g^T and (BLOCK_M, BLOCK_K) tile of x
            g_t = tl.load(g_ptr + offs_n[:, None] * stride_gn + offs_m[None, :] * stride_gm,
                          mask=(offs_n[:, None] < N) & (offs_m[None, :] < M), other=0.0)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
            acc = tl.dot(g_t, x, acc, input_precision=PRECISION)
        in_bounds = (offs_n[:, None] < N) & (offs_k[None, :] < K)
        m = tl.load(m_ptr + offs_n[:, None] * stride_mn + offs_k[None, :] * stride_mk, mask=in_bounds, other=0.0)
        # where(), not a product: masked entries are exactly +0.0 even if the sum is inf or nan.
        result = tl.where(m != 0, acc * m.to(tl.float32), 0.0)
        tl.store(gw_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk,
                 result.to(gw_ptr.dtype.element_ty), mask=in_bounds)


def _config(device_type: str):
    return INTERPRETER_CONFIG if device_type == "cpu" else GPU_CONFIG


def _precision(tensor: torch.Tensor) -> str:
    # Follow the reference: float32 matmuls on CUDA use TF32 only where PyTorch is allowed to.
    if tensor.is_cuda and tensor.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def forward(x2d: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, tiles: TileLiveness,
            bias: torch.Tensor | None) -> torch.Tensor:
    """y = x2d @ (W*M)^T + bias with dead tiles skipped."""
    block_m, block_n, block_k, warps, stages = _config(x2d.device.type)
    batch, in_features = x2d.shape
    out_features = weight.shape[0]
    y = torch.empty(batch, out_features, dtype=x2d.dtype, device=x2d.device)
    mask = tiles.kernel_mask(mask)
    grid = (triton_cdiv(batch, block_m), triton_cdiv(out_features, block_n))
    _forward_kernel[grid](
        x2d, weight, mask, bias if bias is not None else weight, y, tiles.row_live, tiles.row_count,
        batch, out_features, in_features, x2d.stride(0), x2d.stride(1), weight.stride(0), weight.stride(1),
        mask.stride(0), mask.stride(1), y.stride(0), y.stride(1), tiles.row_live.stride(0),
        HAS_BIAS=bias is not None, PRECISION=_precision(x2d),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages)
    return y


def grad_input(grad: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, tiles: TileLiveness) -> torch.Tensor:
    """grad @ (W*M) with dead tiles skipped."""
    block_m, block_n, block_k, warps, stages = _config(grad.device.type)
    batch, out_features = grad.shape
    in_features = weight.shape[1]
    grad_x = torch.empty(batch, in_features, dtype=grad.dtype, device=grad.device)
    mask = tiles.kernel_mask(mask)
    grid = (triton_cdiv(batch, block_m), triton_cdiv(in_features, block_k))
    _grad_x_kernel[grid](
        grad, weight, mask, grad_x, tiles.col_live, tiles.col_count,
        batch, out_features, in_features, grad.stride(0), grad.stride(1), weight.stride(0), weight.stride(1),
        mask.stride(0), mask.stride(1), grad_x.stride(0), grad_x.stride(1), tiles.col_live.stride(0),
        PRECISION=_precision(grad), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps, num_stages=stages)
    return grad_x


def grad_weight(grad: torch.Tensor, x2d: torch.Tensor, mask: torch.Tensor, tiles: TileLiveness,
                dtype: torch.dtype) -> torch.Tensor:
    """(grad^T @ x2d) * M, computing only live tiles."""
    block_m, block_n, block_k, warps, stages = _config(grad.device.type)
    batch, out_features = grad.shape
    in_features = x2d.shape[1]
    grad_w = torch.empty(out_features, in_features, dtype=dtype, device=grad.device)
    mask = tiles.kernel_mask(mask)
    grid = (triton_cdiv(out_features, block_n), triton_cdiv(in_features, block_k))
    _grad_w_kernel[grid](
        grad, x2d, mask, grad_w, tiles.live,
        batch, out_features, in_features, grad.stride(0), grad.stride(1), x2d.stride(0), x2d.stride(1),
        mask.stride(0), mask.stride(1), grad_w.stride(0), grad_w.stride(1), tiles.live.shape[1],
        PRECISION=_precision(grad), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps, num_stages=stages)
    return grad_w


class _TritonMaskedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d, weight, mask, bias):
        tiles = liveness(mask, weight.dtype)
        ctx.save_for_backward(x2d, weight, mask)
        ctx.tiles = tiles
        ctx.has_bias = bias is not None
        return forward(x2d, weight, mask, tiles, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x2d, weight, mask = ctx.saved_tensors
        tiles: TileLiveness = ctx.tiles
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_input(grad_out, weight, mask, tiles)
        if ctx.needs_input_grad[1]:
            grad_w = grad_weight(grad_out, x2d, mask, tiles, weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, None, grad_b


def masked_matmul_triton(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ (weight*mask)^T + bias through the tile-skipping kernels."""
    reason = unavailable_reason(x.device.type)
    if reason is not None:
        raise RuntimeError(f"the triton backend is unavailable: {reason}")
    if weight.dim() != 2:
        raise ValueError(f"the triton backend needs a 2-D weight, got shape {tuple(weight.shape)}")
    if not (x.dtype == weight.dtype and (bias is None or bias.dtype == weight.dtype)):
        raise ValueError(f"the triton backend needs one dtype, got x {x.dtype}, weight {weight.dtype}")
    leading = x.shape[:-1]
    x2d = x.reshape(-1, x.shape[-1])
    out = _TritonMaskedMatmul.apply(x2d, weight, mask, bias)
    return out.reshape(*leading, weight.shape[0])
