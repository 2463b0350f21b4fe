"""GPTQ on the shared OBS loop equals a transcription of IST-DASLab/gptq's fasterquant in float64."""

from __future__ import annotations

import pytest
import torch

import gptq_reference as reference

from overparam.recipes.quantize.gptq import gptq_layer
from overparam.recipes.quantize.quantizer import Grid

ROWS, COLUMNS = 16, 64


def layer_and_hessian(seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(ROWS, COLUMNS, generator=generator, dtype=torch.float64)
    mixing = torch.randn(COLUMNS, COLUMNS, generator=generator, dtype=torch.float64) / COLUMNS ** 0.5
    hessian, samples = torch.zeros(COLUMNS, COLUMNS, dtype=torch.float64), 0
    batches = []
    for _ in range(3):
        x = torch.randn(4, 12, COLUMNS, generator=generator, dtype=torch.float64) @ mixing
        x = x * torch.linspace(0.2, 3.0, COLUMNS, dtype=torch.float64)  # unequal column scales: act-order matters
        x[..., 5] = 0  # a dead input
        hessian, samples = reference.add_batch(hessian, samples, x)
        batches.append(x.reshape(-1, COLUMNS))
    return weight, hessian, torch.cat(batches)


CASES = [dict(bits=4), dict(bits=3, sym=True), dict(bits=2, blocksize=16), dict(bits=4, groupsize=16),
         dict(bits=4, groupsize=16, blocksize=8), dict(bits=4, actorder=True),
         dict(bits=3, actorder=True, groupsize=16, static_groups=True), dict(bits=8, blocksize=32)]


@pytest.mark.parametrize("case", CASES, ids=["4bit", "3bit_sym", "2bit_block16", "4bit_g16", "4bit_g16_block8",
                                             "4bit_actorder", "3bit_actorder_g16_static", "8bit_block32"])
def test_gptq_equals_the_transcription_of_fasterquant(case):
    weight, hessian, x = layer_and_hessian()
    bits, sym = case["bits"], case.get("sym", False)
    quantizer = reference.Quantizer()
    quantizer.configure(bits, perchannel=True, sym=sym)
    expected, _ = reference.fasterquant(weight, hessian, quantizer, blocksize=case.get("blocksize", 128),
                                        groupsize=case.get("groupsize", -1), actorder=case.get("actorder", False),
                                        static_groups=case.get("static_groups", False))
    grid = Grid(bits=bits, sym=sym, group_size=case.get("groupsize"))
    ours, scale, zero = gptq_layer(weight, hessian, grid, block_size=case.get("blocksize", 128),
                                   act_order=case.get("actorder", False))
    assert (ours - expected).abs().max().item() < 1e-5
    # the recorded scales and zero points are those the columns were rounded with: stored and decoded, the
    # float32 weight is the float64 result to float32 precision
    stored = grid.encode(ours.float(), scale, zero)
    assert (stored.dequantize().double() - ours).abs().max().item() < 1e-5
    assert stored.codes.max() <= 2 ** bits - 1
    if bits <= 4:
        # and GPTQ beats round-to-nearest on the layer's outputs
        rtn, _, _ = grid.rtn(weight)
        dense = x @ weight.T
        assert ((x @ ours.T - dense) ** 2).sum() < 0.9 * ((x @ rtn.T - dense) ** 2).sum()


def test_a_pruned_weight_stays_zero_and_the_others_absorb_its_error():
    weight, hessian, x = layer_and_hessian(1)
    mask = torch.rand(ROWS, COLUMNS, generator=torch.Generator().manual_seed(3)) > 0.5
    weight = weight * mask
    grid = Grid(4)
    ours, scale, zero = gptq_layer(weight, hessian, grid, mask=mask)
    assert torch.all(ours[~mask] == 0)
    rtn, _, _ = grid.rtn(weight)
    dense = x @ weight.T
    assert ((x @ ours.T - dense) ** 2).sum() < ((x @ rtn.T - dense) ** 2).sum()
    assert torch.all(grid.encode(ours.float(), scale, zero).dequantize()[~mask] == 0)
