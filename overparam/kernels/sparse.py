"""The `sparse` backend: compute only at the mask's nonzeros.

CPU (and CUDA masks that are not 2:4): the mask's CSR structure, and that of its transpose, are
built once per mask change (`cache.mask_cache`); each call reads the current weight values at
those positions (weights change every optimizer step, the structure does not). Masks are 0/1:
any nonzero mask entry counts as 1.
- forward   y      = x @ (W*M)^T      CSR(W) times x
- grad_x    g @ (W*M)                 CSR(W^T) times g (the transposed product)
- grad_W    (g^T x) * M               dot products at the nonzeros only (SDDMM), scattered into a
                                      dense zero gradient, so masked entries are exactly zero.
float32 on CPU runs the compiled loops of `native.py`; other dtypes/devices (or no compiler) use
`torch.sparse` (`mm` on CSR tensors and `sampled_addmm`). float16/bfloat16 on CPU compute in float32.

CUDA with a 2:4 mask (at most two nonzeros in every group of four along a row), fp16/bf16 and a
GPU of compute capability >= 8.0: the forward multiplies by `to_sparse_semi_structured(W*M)`,
compressed once per (mask, weight) change; the backward is dense and masked.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from overparam.kernels import native
from overparam.kernels.cache import mask_cache

IMPLEMENTATIONS = ("native", "torch_sparse", "semi_structured")


@dataclass(frozen=True)
class CSRStructure:
    """Where the nonzeros of an (out, in) mask are, for W and for W^T, in CSR order."""

    shape: tuple[int, int]
    crow: torch.Tensor          # (out+1,) int64
    cols: torch.Tensor          # (nnz,) int64, input-feature index of each nonzero
    flat: torch.Tensor          # (nnz,) int64, position of each nonzero in W.reshape(-1)
    crow_t: torch.Tensor        # (in+1,) for W^T
    cols_t: torch.Tensor        # (nnz,) output-feature index
    flat_t: torch.Tensor        # (nnz,) position in W.reshape(-1), in CSR order of W^T
    nnz: int

    def pattern(self, dtype) -> torch.Tensor:
        """The mask as a CSR tensor of ones (the sampling pattern of `sampled_addmm`)."""
        ones = torch.ones(self.nnz, dtype=dtype, device=self.crow.device)
        return _csr(self.crow, self.cols, ones, self.shape)


def _csr(crow, cols, values, shape) -> torch.Tensor:
    """A CSR tensor from indices we built ourselves (valid by construction: no invariant check)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def _build_structure(mask: torch.Tensor) -> CSRStructure:
    # A convolution's (out, in, kh, kw) mask is the (out, in*kh*kw) matrix of its im2col product.
    mask = mask.reshape(mask.shape[0], -1)
    out_features, in_features = mask.shape
    nonzero = mask.reshape(-1).nonzero().squeeze(1)          # row-major order == CSR order of W
    rows = nonzero // in_features
    cols = nonzero % in_features
    crow = torch.zeros(out_features + 1, dtype=torch.int64, device=mask.device)
    crow[1:] = torch.bincount(rows, minlength=out_features).cumsum(0)
    nonzero_t = mask.t().contiguous().reshape(-1).nonzero().squeeze(1)   # CSR order of W^T
    rows_t = nonzero_t // out_features                          # input feature
    cols_t = nonzero_t % out_features                           # output feature
    crow_t = torch.zeros(in_features + 1, dtype=torch.int64, device=mask.device)
    crow_t[1:] = torch.bincount(rows_t, minlength=in_features).cumsum(0)
    flat_t = cols_t * in_features + rows_t
    return CSRStructure((out_features, in_features), crow, cols.contiguous(), nonzero, crow_t,
                        cols_t.contiguous(), flat_t, int(nonzero.numel()))


def csr_structure(mask: torch.Tensor) -> CSRStructure:
    """The mask's CSR structure, rebuilt only when the mask changes."""
    return mask_cache.get(mask, "csr", _build_structure)


def is_two_four(mask: torch.Tensor) -> bool:
    """True when every group of four consecutive entries along a row has at most two nonzeros."""
    def build(m):
        if m.dim() != 2 or m.shape[1] % 4:
            return False
        return bool(((m != 0).reshape(m.shape[0], -1, 4).sum(-1) <= 2).all())
    return mask_cache.get(mask, "two_four", build)


def _semi_structured_supported(x, weight, mask) -> bool:
    if not (weight.is_cuda and weight.dtype in (torch.float16, torch.bfloat16)):
        return False
    if torch.cuda.get_device_capability(weight.device) < (8, 0):
        return False
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return False
    out_features, in_features = weight.shape
    # cuSPARSELt/CUTLASS tile constraints on the compressed operand.
    if out_features % 64 or in_features % 64:
        return False
    return is_two_four(mask)


def default_implementation(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> str:
    """Which implementation `masked_matmul_sparse` uses for these operands."""
    if _semi_structured_supported(x, weight, mask):
        return "semi_structured"
    if weight.device.type == "cpu" and weight.dtype == torch.float32 and native.library() is not None:
        return "native"
    return "torch_sparse"


# --- CSR, compiled CPU loops --------------------------------------------------------------------

def _ptr(tensor: torch.Tensor | None):
    return None if tensor is None else tensor.data_ptr()


class _NativeCSR(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d, weight, bias, structure: CSRStructure):
        lib = native.library()
        batch = x2d.shape[0]
        out_features, in_features = structure.shape
        weight_c = weight.contiguous()
        x_t = native.transposed_padded(x2d)
        bias_c = bias.contiguous() if bias is not None else None
        out_t = torch.empty(out_features, x_t.shape[1], dtype=x2d.dtype)
        lib.overparam_spmm_t_f32(out_features, x_t.shape[1], _ptr(structure.crow), _ptr(structure.cols),
                                 _ptr(weight_c), in_features, 1, _ptr(x_t), _ptr(bias_c), _ptr(out_t))
        out = native.untransposed(out_t, batch)
        # x^T is what both backward products read; keep it rather than x.
        ctx.save_for_backward(x_t, weight_c)
        ctx.structure = structure
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        lib = native.library()
        x_t, weight = ctx.saved_tensors
        structure: CSRStructure = ctx.structure
        out_features, in_features = structure.shape
        batch, ldx = grad_out.shape[0], x_t.shape[1]
        grad_t = native.transposed_padded(grad_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x_t = torch.empty(in_features, ldx, dtype=grad_out.dtype)
            lib.overparam_spmm_t_f32(in_features, ldx, _ptr(structure.crow_t), _ptr(structure.cols_t),
                                     _ptr(weight), 1, in_features, _ptr(grad_t), None, _ptr(grad_x_t))
            grad_x = native.untransposed(grad_x_t, batch)
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty(out_features, in_features, dtype=grad_out.dtype)   # zeroed by the kernel
            lib.overparam_sddmm_f32(out_features, ldx, _ptr(structure.crow), _ptr(structure.cols), _ptr(grad_t),
                                    _ptr(x_t), _ptr(grad_w), in_features)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, grad_b, None


# --- CSR through torch.sparse (any device/dtype torch.sparse supports) -----------------------------

class _TorchCSR(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d, weight, bias, structure: CSRStructure):
        values = weight.reshape(-1)[structure.flat]
        w_csr = _csr(structure.crow, structure.cols, values, structure.shape)
        out = (w_csr @ x2d.t()).t()
        if bias is not None:
            out = out + bias
        ctx.save_for_backward(x2d, weight)
        ctx.structure = structure
        ctx.has_bias = bias is not None
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        x2d, weight = ctx.saved_tensors
        structure: CSRStructure = ctx.structure
        out_features, in_features = structure.shape
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            values_t = weight.reshape(-1)[structure.flat_t]
            w_t_csr = _csr(structure.crow_t, structure.cols_t, values_t, (in_features, out_features))
            grad_x = (w_t_csr @ grad_out.t()).t().contiguous()
        if ctx.needs_input_grad[1]:
            sampled = torch.sparse.sampled_addmm(structure.pattern(grad_out.dtype), grad_out.t().contiguous(),
                                                 x2d.contiguous(), beta=0.0, alpha=1.0)
            grad_w = torch.zeros(out_features * in_features, dtype=grad_out.dtype, device=grad_out.device)
            grad_w[structure.flat] = sampled.values()
            grad_w = grad_w.view(out_features, in_features)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, grad_b, None


# --- 2:4 semi-structured (CUDA) --------------------------------------------------------------------

def _semi_structured_weight(weight: torch.Tensor, mask: torch.Tensor):
    """W*M compressed to 2:4: the holder lives as long as the mask version; the values are
    recompressed only when the weight changes (every optimizer step in training, never in inference)."""
    from torch.sparse import to_sparse_semi_structured

    holder = mask_cache.get(mask, ("semi_structured", id(weight)), lambda _mask: {})
    stamp = (weight._version, weight.data_ptr())
    if holder.get("stamp") != stamp:
        holder["compressed"] = to_sparse_semi_structured((weight * mask).detach())
        holder["stamp"] = stamp
    return holder["compressed"]


class _SemiStructured(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d, weight, mask, bias):
        compressed = _semi_structured_weight(weight, mask)
        out = torch.nn.functional.linear(x2d, compressed, bias)
        ctx.save_for_backward(x2d, weight, mask)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x2d, weight, mask = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ (weight * mask)
        if ctx.needs_input_grad[1]:
            grad_w = (grad_out.t() @ x2d) * mask
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, None, grad_b


def masked_matmul_sparse(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None,
                         implementation: str | None = None) -> torch.Tensor:
    """x @ (weight*mask)^T + bias computed from the mask's nonzeros (see the module docstring)."""
    if weight.dim() != 2:
        raise ValueError(f"the sparse backend needs a 2-D weight, got shape {tuple(weight.shape)}")
    if implementation is None:
        implementation = default_implementation(x, weight, mask)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown sparse implementation {implementation!r}; choose one of {IMPLEMENTATIONS}")
    if weight.device.type == "cpu" and weight.dtype in (torch.float16, torch.bfloat16):
        # CPU sparse kernels (MKL and ours) have no half types: compute in float32, return the dtype.
        upcast = masked_matmul_sparse(x.float(), weight.float(), mask, None if bias is None else bias.float(),
                                      implementation if implementation != "torch_sparse" else None)
        return upcast.to(weight.dtype)
    leading = x.shape[:-1]
    x2d = x.reshape(-1, x.shape[-1])
    if implementation == "semi_structured":
        out = _SemiStructured.apply(x2d, weight, mask, bias)
    else:
        structure = csr_structure(mask)
        if implementation == "native":
            if native.library() is None:
                raise RuntimeError(f"native sparse kernels unavailable: {native.load_error()}")
            if weight.device.type != "cpu" or any(t is not None and t.dtype != torch.float32 for t in (x, weight, bias)):
                raise ValueError("the native sparse kernels take float32 CPU tensors")
            out = _NativeCSR.apply(x2d, weight, bias, structure)
        else:
            out = _TorchCSR.apply(x2d, weight, bias, structure)
    return out.reshape(*leading, weight.shape[0])
