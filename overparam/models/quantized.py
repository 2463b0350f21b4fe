"""Quantized weights stored as real integers: formats, bit packing, and the checkpoint codec.

A quantized weight (a Linear's (out, in) or a convolution's (out, in, *kernel), seen as rows x columns
with columns = everything but the output axis) is a matrix of integer codes plus, per row and per group
of `group` consecutive columns, a scale and (format `int`) a zero point:

- `int`  (b bits): value = (code - zero) * scale, codes in [0, 2^b - 1] (affine; symmetric grids have a
  fixed zero point). The same arithmetic as `torch.fake_quantize_per_channel_affine`.
- `nf4`, `fp4` (4 bits): value = TABLE[code] * scale with bitsandbytes' code books (scale = the group's
  absolute maximum): NormalFloat4 of QLoRA, and bitsandbytes' FP4 (E2M1, no infinities) divided by 12.

In a checkpoint the weight `<module>.weight` becomes four tensors (every value a tensor, so a state dict
stays a flat map of names to tensors):
  `<module>.weight.qcodes` uint8, the codes bit-packed (b bits each, most significant bit first, any b in
  1..8: 4-bit codes two per byte, 3-bit codes eight per three bytes, 2-bit codes four per byte);
  `<module>.weight.qscale` float32 (rows, groups); `<module>.weight.qzero` uint8 (rows, groups);
  `<module>.weight.qmeta` int64 [bits, group, format index, *weight shape].
A pruned layer's mask `<module>.weight_mask` is kept beside them as bool. `dequantize_state` turns such a state
back into the float state dict the model loads, bit for bit the weights the quantizing run evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FORMATS = ("int", "nf4", "fp4")
SUFFIXES = ("qcodes", "qscale", "qzero", "qmeta")

# bitsandbytes' NF4 code book (QLoRA, Dettmers et al. 2023; bitsandbytes.functional.get_4bit_type("nf4")).
NF4 = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0)


def _fp4_table() -> tuple[float, ...]:
    """bitsandbytes' FP4: bits sign|e1 e0|m, exponent bias 3, subnormal 0.0625, normalized by its maximum 12."""
    values = []
    for code in range(16):
        sign = -1.0 if code & 8 else 1.0
        exponent, mantissa = (code >> 1) & 3, code & 1
        if exponent == 0:
            magnitude = 0.0625 if mantissa else 0.0
        else:
            magnitude = 2.0 ** (4 - exponent) * (1.5 if mantissa else 1.0)
        values.append(sign * magnitude / 12.0)
    return tuple(values)


FP4 = _fp4_table()
TABLES = {"nf4": NF4, "fp4": FP4}


def table(fmt: str, device=None, dtype=torch.float32) -> torch.Tensor:
    """The 16 values of a 4-bit code book."""
    return torch.tensor(TABLES[fmt], device=device, dtype=dtype)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (uint8, each < 2^bits) as a bit stream of `bits` bits each, in bytes (uint8, 1-D)."""
    flat = codes.reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    if 8 % bits == 0:  # whole codes per byte (4 and 2 bits): the same stream, built byte-wise
        per = 8 // bits
        flat = torch.cat([flat, flat.new_zeros((-len(flat)) % per)]).view(-1, per).to(torch.int32)
        shifts = torch.arange(8 - bits, -1, -bits, dtype=torch.int32, device=flat.device)
        return (flat << shifts).sum(1).to(torch.uint8)
    shifts = torch.arange(bits - 1, -1, -1, dtype=torch.uint8, device=flat.device)
    stream = ((flat[:, None] >> shifts) & 1).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros((-len(stream)) % 8)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=flat.device)
    return (stream.view(-1, 8).to(torch.int32) * weights).sum(1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first `count` codes of a bit stream made by `pack` (uint8, 1-D)."""
    if bits == 8:
        return packed[:count].clone()
    if 8 % bits == 0:
        shifts = torch.arange(8 - bits, -1, -bits, dtype=torch.uint8, device=packed.device)
        return ((packed[:, None] >> shifts) & (2 ** bits - 1)).reshape(-1)[:count]
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    stream = ((packed[:, None] >> shifts) & 1).reshape(-1)[: count * bits]
    place = (2 ** torch.arange(bits - 1, -1, -1, device=packed.device)).to(torch.int32)
    return (stream.view(count, bits).to(torch.int32) * place).sum(1).to(torch.uint8)


@dataclass
class QuantizedWeight:
    """A weight as codes (rows, columns; unpacked uint8), scales and zero points (rows, groups)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group: int
    fmt: str
    shape: tuple[int, ...]

    def dequantize(self) -> torch.Tensor:
        """The float weight (float32, its original shape)."""
        return decode(self.codes, self.scale, self.zero, self.group, self.fmt).reshape(self.shape)

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The checkpoint entries of weight `name` (packed codes, scales, zero points, meta)."""
        meta = [self.bits, self.group, FORMATS.index(self.fmt), *self.shape]
        return {f"{name}.qcodes": pack(self.codes, self.bits), f"{name}.qscale": self.scale.float().contiguous(),
                f"{name}.qzero": self.zero.to(torch.uint8).contiguous(),
                f"{name}.qmeta": torch.tensor(meta, dtype=torch.int64)}

    @classmethod
    def from_tensors(cls, state: dict, name: str) -> "QuantizedWeight":
        """The weight `name` read back from checkpoint entries."""
        meta = [int(v) for v in state[f"{name}.qmeta"].tolist()]
        bits, group, fmt, shape = meta[0], meta[1], FORMATS[meta[2]], tuple(meta[3:])
        rows = shape[0]
        columns = 1
        for size in shape[1:]:
            columns *= size
        codes = unpack(state[f"{name}.qcodes"], bits, rows * columns).view(rows, columns)
        return cls(codes, state[f"{name}.qscale"], state[f"{name}.qzero"], bits, group, fmt, shape)

    def nbytes(self) -> int:
        """Bytes of the packed form (codes, scales, zero points)."""
        return sum(t.numel() * t.element_size() for t in self.tensors("w").values())


def decode(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group: int, fmt: str) -> torch.Tensor:
    """Values (rows, columns) of codes with per-(row, group) scale and zero point."""
    rows, columns = codes.shape
    grouped = codes.view(rows, columns // group, group)
    if fmt == "int":
        values = (grouped.float() - zero.float()[..., None]) * scale.float()[..., None]
    else:
        values = table(fmt, codes.device)[grouped.long()] * scale.float()[..., None]
    return values.view(rows, columns)


def is_packed(state: dict) -> bool:
    """True when a state dict holds quantized weights."""
    return any(key.endswith(".qmeta") for key in state)


def packed_weights(state: dict) -> list[str]:
    """Names of the quantized weights in a state dict (`fc1.weight`, ...)."""
    return sorted(key[: -len(".qmeta")] for key in state if key.endswith(".qmeta"))


def quantize_state(state: dict, weights: dict[str, QuantizedWeight]) -> dict:
    """A float state dict with the weights in `weights` replaced by their packed entries (and their masks, a
    pruned source's `<weight>_mask`, stored as bool: a byte per weight instead of four)."""
    out = {k: v for k, v in state.items() if k not in weights}
    for name, weight in weights.items():
        out.update(weight.tensors(name))
        if f"{name}_mask" in out:
            out[f"{name}_mask"] = out[f"{name}_mask"].bool()
    return out


def dequantize_state(state: dict) -> dict:
    """The float state dict of a state holding quantized weights (others passed through)."""
    names = packed_weights(state)
    out = {k: v for k, v in state.items() if k.rpartition(".")[2] not in SUFFIXES or k.rpartition(".")[0] not in names}
    for name in names:
        out[name] = QuantizedWeight.from_tensors(state, name).dequantize()
        if out.get(f"{name}_mask") is not None and out[f"{name}_mask"].dtype == torch.bool:
            out[f"{name}_mask"] = out[f"{name}_mask"].to(out[name].dtype)
    return out
