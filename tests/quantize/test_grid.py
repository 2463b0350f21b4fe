"""Round-to-nearest grids equal PyTorch's fake quantization; packed codes come back bit for bit."""

from __future__ import annotations

import pytest
import torch

from overparam.models.quantized import FP4, NF4, QuantizedWeight, dequantize_state, pack, quantize_state, unpack
from overparam.recipes.quantize.quantizer import Grid


def weight(rows=12, columns=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, columns, generator=generator) * torch.linspace(0.1, 2.0, rows)[:, None]


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("group_size", [None, 8])
def test_rtn_equals_torch_fake_quantize_per_channel_and_per_group(bits, sym, group_size):
    w = weight()
    grid = Grid(bits=bits, sym=sym, group_size=group_size)
    rounded, scale, zero = grid.rtn(w)
    # The per-group grid is the per-channel one on the matrix cut into rows of `group` columns.
    group = group_size or w.shape[1]
    flat = w.reshape(-1, group)
    expected = torch.fake_quantize_per_channel_affine(flat, scale.reshape(-1), zero.reshape(-1).to(torch.int32),
                                                      0, 0, 2 ** bits - 1).reshape(w.shape)
    assert torch.equal(rounded, expected)
    assert rounded.unique().numel() > 2 ** bits // 2  # a real grid, not a constant
    if group_size is None:
        per_channel = torch.fake_quantize_per_channel_affine(w, scale[:, 0], zero[:, 0].to(torch.int32), 0, 0,
                                                             2 ** bits - 1)
        assert torch.equal(rounded, per_channel)
    # at most half a step away, except where clamped at the grid's ends
    step = scale.repeat_interleave(group, 1)
    assert bool(((rounded - w).abs() <= step * 0.5 + 1e-6).float().mean() > 0.9)


def test_symmetric_zero_point_is_the_middle_and_zeros_stay_exact():
    w = weight()
    w[:, ::3] = 0.0
    for grid in (Grid(4, sym=True), Grid(4), Grid(3, group_size=8), Grid(4, "nf4", group_size=16), Grid(4, "fp4")):
        rounded, _, zero = grid.rtn(w)
        assert torch.equal(rounded[:, ::3], torch.zeros_like(rounded[:, ::3])), grid
        if grid.sym:
            assert torch.equal(zero, torch.full_like(zero, 8))


@pytest.mark.parametrize("fmt,book", [("nf4", NF4), ("fp4", FP4)])
def test_four_bit_formats_round_to_the_nearest_entry_of_bitsandbytes_code_book(fmt, book):
    assert len(set(book)) >= 15 and max(book) == 1.0 and min(book) == -1.0
    w = weight(4, 64)
    rounded, scale, _ = Grid(4, fmt, group_size=64).rtn(w)
    normalized = w / w.abs().amax(1, keepdim=True)
    values = torch.tensor(book)
    nearest = values[(normalized[..., None] - values).abs().argmin(-1)]
    assert torch.equal(rounded, nearest * scale)
    assert torch.equal(scale[:, 0], w.abs().amax(1))


def test_fp4_code_book_is_bitsandbytes_e2m1():
    # bitsandbytes' dequantization tree (0b0000..0b0111) before the division by 12
    assert [round(v * 12, 6) for v in FP4[:8]] == [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]
    assert FP4[8:] == tuple(-v for v in FP4[:8])


@pytest.mark.parametrize("bits", [8, 4, 3, 2, 1, 5])
def test_packing_is_exact_and_takes_bits_over_eight_bytes_per_code(bits):
    codes = torch.randint(0, 2 ** bits, (101,), dtype=torch.uint8, generator=torch.Generator().manual_seed(bits))
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and len(packed) == -(-101 * bits // 8)
    assert torch.equal(unpack(packed, bits, 101), codes)
    if bits == 4:  # two codes per byte, the first in the high nibble
        assert int(packed[0]) == int(codes[0]) * 16 + int(codes[1])


@pytest.mark.parametrize("grid", [Grid(4), Grid(3, group_size=8), Grid(2, sym=True), Grid(8, group_size=16),
                                  Grid(4, "nf4", group_size=8), Grid(4, "fp4")])
def test_a_state_with_packed_weights_loads_back_exactly(grid):
    conv = torch.randn(6, 4, 4)  # a convolution's weight: rows = out channels, columns = in x kernel
    state = {"fc.weight": weight(), "fc.bias": torch.randn(12), "conv.weight": conv}
    stored = {}
    for name in ("fc.weight", "conv.weight"):
        rounded, scale, zero = grid.rtn(state[name])
        stored[name] = grid.encode(rounded, scale, zero)
        assert torch.equal(stored[name].dequantize(), rounded)
    packed = quantize_state(state, stored)
    assert "fc.weight" not in packed and packed["fc.weight.qcodes"].dtype == torch.uint8
    columns_bytes = -(-12 * 32 * grid.bits // 8)
    assert packed["fc.weight.qcodes"].numel() == columns_bytes
    back = dequantize_state(packed)
    assert sorted(back) == sorted(state)
    assert torch.equal(back["fc.bias"], state["fc.bias"])
    for name in stored:
        assert torch.equal(back[name], grid.rtn(state[name])[0])
    again = QuantizedWeight.from_tensors(packed, "fc.weight")
    assert torch.equal(again.codes, stored["fc.weight"].codes)


def test_encode_refuses_a_weight_off_its_grid():
    w = weight()
    rounded, scale, zero = Grid(4).rtn(w)
    with pytest.raises(RuntimeError, match="not on its grid"):
        Grid(4).encode(rounded + scale[:, :1] * 0.3, scale, zero)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_packed_bytes_are_the_codes_bit_stream_most_significant_bit_first(bits):
    codes = torch.randint(0, 2 ** bits, (37,), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    stream = "".join(format(int(c), f"0{bits}b") for c in codes)
    stream += "0" * (-len(stream) % 8)
    expected = [int(stream[i:i + 8], 2) for i in range(0, len(stream), 8)]
    assert pack(codes, bits).tolist() == expected


@pytest.mark.parametrize("grid", [Grid(3), Grid(4, sym=True, group_size=8), Grid(4, "nf4", group_size=16)])
def test_adaquants_straight_through_values_are_the_grids_rounding_with_identity_gradients(grid):
    from overparam.recipes.quantize.adaquant import ste_values

    w = weight().requires_grad_(True)
    rounded, scale, zero = grid.rtn(w.detach())
    values = ste_values(grid, w, scale, zero)
    assert torch.allclose(values, rounded, atol=1e-6)
    values.sum().backward()
    # straight through: gradient 1 wherever the grid's integer range holds the weight, 0 where it is clamped
    group = grid.group(32)
    expanded = lambda t: t.repeat_interleave(group, 1)  # noqa: E731
    if grid.fmt == "int":
        position = w.detach() * (1.0 / expanded(scale)) + expanded(zero)
        inside = (position >= 0) & (position <= grid.maxq)
    else:
        inside = torch.ones_like(w, dtype=torch.bool)
    assert inside.float().mean() > 0.8
    assert torch.allclose(w.grad[inside], torch.ones_like(w.grad[inside]))
    assert torch.all(w.grad[~inside] == 0)
