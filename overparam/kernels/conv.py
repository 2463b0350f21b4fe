"""Masked convolution: `masked_conv(x, weight, mask, bias, stride, padding, dilation, groups, backend)`.

conv(x, weight * mask) + bias for Conv1d (x: B,C,L) and Conv2d (x: B,C,H,W), with weight gradients
that are exactly zero where the mask is zero. Backends:
- `torch`   F.conv1d/F.conv2d with `weight * mask` (the reference; any device, dtype, groups, padding).
- `sparse`  the mask's CSR structure as an (out, in*kh*kw) matrix. float32 on CPU convolves
            directly (`native.py`, no im2col buffer): each output row sums shifted input rows over
            the nonzeros of its channel, the input gradient scatters back tap by tap, the weight
            gradient is computed at the nonzeros only (exactly zero elsewhere). Other dtypes or
            devices use im2col (`F.unfold`) and `torch.sparse`. Grouped convolutions and string padding ('same') have no sparse path:
            they run the reference whatever the backend.
- `triton`  has no convolution kernel: convolutions run the reference.
- `auto`    `sparse` where the measured crossover for convolutions says it is faster (`dispatch.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from overparam.kernels import native
from overparam.kernels.cache import mask_cache
from overparam.kernels.sparse import _TorchCSR, csr_structure, default_implementation

__all__ = ["masked_conv", "masked_conv_reference", "masked_conv_sparse", "sparse_supported", "conv_geometry"]


def _pair(value, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value)


def masked_conv_reference(x, weight, mask, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Plain PyTorch: F.conv{1,2}d(x, weight * mask, bias, ...); autograd masks the weight gradient."""
    conv = F.conv1d if weight.dim() == 3 else F.conv2d
    return conv(x, weight * mask.to(weight.dtype), bias, stride, padding, dilation, groups)


def sparse_supported(weight: torch.Tensor, padding, groups: int) -> bool:
    """True when the sparse path can compute this convolution (2-D or 1-D, one group, numeric padding)."""
    return weight.dim() in (3, 4) and groups == 1 and not isinstance(padding, str)


def conv_geometry(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation):
    """(batch, output positions, in*kh*kw, out): the shape of the im2col product of this convolution."""
    dims = weight.dim() - 2
    spatial = x.shape[-dims:]
    kernel, stride, padding, dilation = (_pair(v, dims) for v in (weight.shape[2:], stride, padding, dilation))
    positions = 1
    for size, k, s, p, d in zip(spatial, kernel, stride, padding, dilation):
        positions *= max(0, (size + 2 * p - d * (k - 1) - 1) // s + 1)
    batch = x.shape[0] if x.dim() == dims + 2 else 1
    return batch, positions, weight[0].numel(), weight.shape[0]


def _offsets(mask: torch.Tensor, padded_height: int, padded_width: int, dilation: tuple[int, int]) -> torch.Tensor:
    """Where each nonzero's receptive field starts in one padded image: (c*Hp + kh*dh)*Wp + kw*dw, in CSR order."""
    def build(m):
        _, _, kernel_h, kernel_w = m.shape
        cols = csr_structure(m).cols
        channel, tap = cols // (kernel_h * kernel_w), cols % (kernel_h * kernel_w)
        row, column = tap // kernel_w, tap % kernel_w
        return ((channel * padded_height + row * dilation[0]) * padded_width + column * dilation[1]).contiguous()
    return mask_cache.get(mask, ("conv_offsets", padded_height, padded_width, dilation), build)


class _NativeDirectConv(torch.autograd.Function):
    """Direct sparse convolution of a zero-padded float32 CPU input (B, C, Hp, Wp): no im2col buffer.

    Each output row is accumulated in registers over the nonzeros of its channel's mask (the
    compiled loops of `native.py`); the input gradient is scattered back tap by tap, and the weight
    gradient is computed at the nonzeros only.
    """

    @staticmethod
    def forward(ctx, padded, weight, bias, mask, stride, dilation):
        lib = native.library()
        structure = csr_structure(mask)
        batch, channels, padded_height, padded_width = padded.shape
        out_channels, _, kernel_h, kernel_w = weight.shape
        out_h = (padded_height - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
        out_w = (padded_width - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
        offsets = _offsets(mask, padded_height, padded_width, dilation)
        padded_c, weight_c = padded.contiguous(), weight.contiguous()
        bias_c = bias.contiguous() if bias is not None else None
        out = torch.empty(batch, out_channels, out_h, out_w, dtype=padded.dtype)
        k = weight[0].numel()
        lib.overparam_conv_fwd_f32(batch, channels, padded_height, padded_width, padded_c.data_ptr(), out_channels,
                                   out_h, out_w, stride[0], stride[1], structure.crow.data_ptr(),
                                   structure.cols.data_ptr(), offsets.data_ptr(), weight_c.data_ptr(), k,
                                   None if bias_c is None else bias_c.data_ptr(), out.data_ptr())
        ctx.save_for_backward(padded_c, weight_c)
        ctx.structure, ctx.offsets, ctx.stride = structure, offsets, stride
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        lib = native.library()
        padded, weight = ctx.saved_tensors
        structure, offsets, stride = ctx.structure, ctx.offsets, ctx.stride
        batch, channels, padded_height, padded_width = padded.shape
        out_channels = weight.shape[0]
        k = weight[0].numel()
        grad = grad_out.contiguous()
        out_h, out_w = grad.shape[2:]
        common = (batch, channels, padded_height, padded_width)
        geometry = (out_channels, out_h, out_w, stride[0], stride[1], structure.crow.data_ptr(),
                    structure.cols.data_ptr(), offsets.data_ptr())
        grad_padded = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_padded = torch.zeros_like(padded)
            lib.overparam_conv_grad_input_f32(*common, grad_padded.data_ptr(), *geometry, weight.data_ptr(), k,
                                              grad.data_ptr())
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)
            lib.overparam_conv_grad_weight_f32(*common, padded.data_ptr(), *geometry, grad.data_ptr(),
                                               grad_w.data_ptr(), k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_padded, grad_w, grad_b, None, None, None


def masked_conv_sparse(x, weight, mask, bias=None, stride=1, padding=0, dilation=1, implementation=None):
    """conv(x, weight*mask) + bias from the mask's nonzeros (see the module docstring); groups must be 1."""
    if weight.dim() not in (3, 4) or isinstance(padding, str):
        raise ValueError("the sparse convolution takes Conv1d/Conv2d weights with numeric padding")
    if weight.device.type == "cpu" and weight.dtype in (torch.float16, torch.bfloat16):
        # CPU sparse kernels have no half types: compute in float32, return the dtype.
        out = masked_conv_sparse(x.float(), weight.float(), mask, None if bias is None else bias.float(), stride,
                                 padding, dilation, implementation)
        return out.to(weight.dtype)
    if weight.dim() == 3:
        # A 1-D convolution is a 2-D one over a height of 1.
        out = masked_conv_sparse(x.unsqueeze(-2), weight.unsqueeze(-2), mask.unsqueeze(-2), bias,
                                 (1, *_pair(stride, 1)), (0, *_pair(padding, 1)), (1, *_pair(dilation, 1)),
                                 implementation)
        return out.squeeze(-2)
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    if implementation is None:
        implementation = default_implementation(x, weight.reshape(weight.shape[0], -1), mask)
        if implementation == "semi_structured":
            implementation = "torch_sparse"
    kernel = weight.shape[2:]
    stride, padding, dilation = (_pair(v, 2) for v in (stride, padding, dilation))
    height = (x.shape[2] + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    width = (x.shape[3] + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    if implementation == "native":
        if native.library() is None:
            raise RuntimeError(f"native sparse kernels unavailable: {native.load_error()}")
        if weight.device.type != "cpu" or any(t is not None and t.dtype != torch.float32 for t in (x, weight, bias)):
            raise ValueError("the native sparse kernels take float32 CPU tensors")
        # Autograd of F.pad crops the padded input's gradient back to the input's.
        padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else x
        out = _NativeDirectConv.apply(padded, weight, bias, mask, stride, dilation)
    elif implementation == "torch_sparse":
        cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)   # (B, C*kh*kw, L)
        batch, features, positions = cols.shape
        x2d = cols.transpose(1, 2).reshape(batch * positions, features)
        out = _TorchCSR.apply(x2d, weight.reshape(weight.shape[0], -1), bias, csr_structure(mask))
        out = out.reshape(batch, positions, -1).transpose(1, 2)
    else:
        raise ValueError(f"unknown sparse implementation {implementation!r} for convolutions")
    out = out.reshape(x.shape[0], weight.shape[0], height, width)
    return out.squeeze(0) if unbatched else out


def masked_conv(x, weight, mask, bias=None, stride=1, padding=0, dilation=1, groups=1, backend: str | None = None):
    """conv(x, weight * mask) + bias with the backend `hardware.kernel` (or `backend`) selects."""
    from overparam.kernels import resolve_conv_backend

    backend = resolve_conv_backend(x, weight, mask, stride, padding, dilation, groups, backend)
    if backend != "sparse" or not sparse_supported(weight, padding, groups):
        return masked_conv_reference(x, weight, mask, bias, stride, padding, dilation, groups)
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return masked_conv_sparse(x.to(dtype), weight.to(dtype), mask, None if bias is None else bias.to(dtype),
                                      stride, padding, dilation)
    return masked_conv_sparse(x, weight, mask, bias, stride, padding, dilation)
