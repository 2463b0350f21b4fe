"""Round-to-nearest grids: where each weight may land, per row and per group of input columns.

A `Grid` sets the bits, the format (`int` affine, or the 4-bit code books `nf4`/`fp4`), symmetric or
asymmetric, and the group size along the input (None: one group per output channel). `params(x)` finds a
row's scale and zero point from the values it will hold (min/max including 0, as IST-DASLab/gptq's
`Quantizer.find_params`; absolute maximum for the code books, as bitsandbytes), `fake(x, scale, zero)`
rounds to the grid (the arithmetic of `torch.fake_quantize_per_channel_affine`: clamp(round(x * (1/s)) + z)),
and `encode` turns weights already on the grid into the integers a checkpoint stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from overparam.models.quantized import QuantizedWeight, table

BITS = (2, 3, 4, 8)


def rows_of(weight: torch.Tensor) -> torch.Tensor:
    """A Linear's or convolution's weight as (out, in * kernel), the matrix a grid works on."""
    return weight.reshape(weight.shape[0], -1)


@dataclass(frozen=True)
class Grid:
    """bits, format, symmetric, group size along the input (None: per output channel)."""

    bits: int = 4
    fmt: str = "int"
    sym: bool = False
    group_size: int | None = None

    @property
    def maxq(self) -> int:
        return 2 ** self.bits - 1

    def group(self, columns: int) -> int:
        """Columns per group of a matrix with `columns` columns."""
        return int(self.group_size or columns)

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero) of each row of `x` (rows, n), from all n values."""
        if self.fmt != "int":
            absmax = x.abs().amax(1)
            return torch.where(absmax > 0, absmax, torch.ones_like(absmax)), torch.zeros_like(absmax)
        zeros = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        xmin, xmax = torch.minimum(x.amin(1), zeros), torch.maximum(x.amax(1), zeros)
        if self.sym:
            xmax = torch.maximum(xmin.abs(), xmax)
            xmin = torch.where(xmin < 0, -xmax, xmin)
        empty = (xmin == 0) & (xmax == 0)
        xmin, xmax = torch.where(empty, -1.0, xmin), torch.where(empty, 1.0, xmax)
        scale = (xmax - xmin) / self.maxq
        zero = torch.full_like(scale, (self.maxq + 1) // 2) if self.sym else torch.round(-xmin / scale)
        return scale, zero

    def codes(self, x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """Integer codes of `x` (rows, k) with per-row `scale`, `zero` ((rows,) or (rows, 1)), as floats."""
        scale, zero = scale.reshape(-1, 1), zero.reshape(-1, 1)
        if self.fmt != "int":
            book = table(self.fmt, x.device, x.dtype)
            return (x / scale).unsqueeze(-1).sub(book).abs().argmin(-1).to(x.dtype)
        return torch.clamp(torch.round(x * (1.0 / scale)) + zero, 0, self.maxq)

    def values(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """The grid values of codes (inverse of `codes`)."""
        scale, zero = scale.reshape(-1, 1), zero.reshape(-1, 1)
        if self.fmt != "int":
            return table(self.fmt, codes.device, scale.dtype)[codes.long()] * scale
        return (codes - zero) * scale

    def fake(self, x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """`x` rounded to the grid of per-row `scale`, `zero`."""
        return self.values(self.codes(x, scale, zero), scale, zero)

    def group_params(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero), each (rows, groups), of a (rows, columns) matrix."""
        rows, columns = matrix.shape
        group = self.group(columns)
        scale, zero = self.params(matrix.reshape(rows * (columns // group), group))
        return scale.view(rows, -1), zero.view(rows, -1)

    def rtn(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rounded weight, scale, zero) of round-to-nearest on `weight` (any layer shape)."""
        matrix = rows_of(weight)
        rows, columns = matrix.shape
        group = self.group(columns)
        scale, zero = self.group_params(matrix)
        flat = matrix.reshape(-1, group)
        rounded = self.fake(flat, scale.reshape(-1), zero.reshape(-1))
        return rounded.reshape(weight.shape), scale, zero

    def encode(self, weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> QuantizedWeight:
        """The stored form of a weight already on this grid (checked to a thousandth of a grid step; the
        stored form's `dequantize()` is then the weight the model uses)."""
        matrix = rows_of(weight).float()
        rows, columns = matrix.shape
        group = self.group(columns)
        scale, zero = scale.float().reshape(rows, -1), zero.float().reshape(rows, -1)
        flat = matrix.reshape(-1, group)
        codes = self.codes(flat, scale.reshape(-1), zero.reshape(-1))
        stored = QuantizedWeight(codes.to(torch.uint8).view(rows, columns), scale, zero.to(torch.uint8),
                                 self.bits, group, self.fmt, tuple(weight.shape))
        step = scale.repeat_interleave(group, dim=1) * (1.0 if self.fmt == "int" else 0.0625 / 12)
        off = (rows_of(stored.dequantize()) - matrix).abs() - 1e-3 * step
        if bool((off > 1e-12).any()):
            raise RuntimeError(f"weight is not on its grid (off by up to {float(off.max()):g} beyond tolerance)")
        return stored
