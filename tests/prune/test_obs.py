"""SparseGPT's OBS reconstruction (recipes/shared/obs.py) against a direct transcription of IST-DASLab/sparsegpt's
`fasterprune` (tests/prune/oneshot_reference.py) and IST-DASLab/gptq's `fasterquant` (tests/gptq_reference.py), in
float64."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gptq_reference import Quantizer, fasterquant  # noqa: E402
from oneshot_reference import SparseGPTReference  # noqa: E402

from overparam.recipes.shared.obs import Hessian, fasterprune  # noqa: E402

ROWS, COLUMNS = 24, 80


def _layer_and_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(COLUMNS, ROWS, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(ROWS, COLUMNS, generator=generator, dtype=torch.float64))
    # Correlated inputs with one dead feature (always zero), in batches of (sequences, tokens, features).
    mixing = torch.randn(COLUMNS, COLUMNS, generator=generator, dtype=torch.float64) / COLUMNS ** 0.5
    batches = []
    for _ in range(3):
        x = torch.randn(4, 10, COLUMNS, generator=generator, dtype=torch.float64) @ mixing
        x[..., 7] = 0
        batches.append(x)
    return layer, batches


def _reference(layer, batches, **kwargs):
    copy = nn.Linear(COLUMNS, ROWS, bias=False).double()
    copy.weight.data = layer.weight.data.clone()
    reference = SparseGPTReference(copy, dtype=torch.float64)
    for x in batches:
        reference.add_batch(x)
    hessian = reference.H.clone()
    reference.fasterprune(**kwargs)
    return copy.weight.data, hessian, reference.error


def _ours(layer, batches):
    hessian = Hessian(COLUMNS, dtype=torch.float64)
    for x in batches:
        hessian.add_batch(x)
    return hessian


@pytest.mark.parametrize("kwargs", [dict(sparsity=0.5), dict(sparsity=0.7, blocksize=32),
                                    dict(sparsity=0.5, prunen=2, prunem=4), dict(sparsity=0.5, prunen=4, prunem=8,
                                                                                  blocksize=16)],
                         ids=["unstructured50", "unstructured70_block32", "2:4", "4:8_block16"])
def test_fasterprune_equals_the_reference(kwargs):
    layer, batches = _layer_and_inputs()
    expected, reference_hessian, error = _reference(layer, batches, **kwargs)
    hessian = _ours(layer, batches)
    assert torch.allclose(hessian.matrix, reference_hessian, rtol=0, atol=1e-12)
    result = fasterprune(layer.weight.data, hessian.matrix, kwargs.pop("sparsity"), **kwargs)
    difference = (result.weight - expected).abs().max().item()
    assert difference < 1e-5, difference
    # The mask is where the reference's weights are zero (a kept weight is never exactly zero here), and the
    # weight is zero wherever the mask prunes.
    assert torch.equal(result.mask, expected != 0)
    assert torch.all(result.weight[~result.mask] == 0)
    assert result.loss.sum().item() == pytest.approx(error, rel=1e-9)
    if kwargs.get("prunen"):
        groups = result.mask.reshape(ROWS, -1, kwargs["prunem"]).sum(-1)
        assert torch.all(groups == kwargs["prunem"] - kwargs["prunen"])
    # The reconstruction beats zeroing the same weights without updating the others (the point of OBS).
    x = torch.cat([b.reshape(-1, COLUMNS) for b in batches])
    dense = x @ layer.weight.data.T
    masked_only = x @ (layer.weight.data * result.mask).T
    assert ((x @ result.weight.T - dense) ** 2).sum() < 0.8 * ((masked_only - dense) ** 2).sum()


def test_inputs_and_weight_are_left_alone_and_float32_is_close():
    layer, batches = _layer_and_inputs(1)
    hessian = _ours(layer, batches)
    before_w, before_h = layer.weight.data.clone(), hessian.matrix.clone()
    result64 = fasterprune(layer.weight.data, hessian.matrix, 0.5)
    assert torch.equal(layer.weight.data, before_w) and torch.equal(hessian.matrix, before_h)
    result32 = fasterprune(layer.weight.data.float(), hessian.matrix.float(), 0.5)
    assert result32.weight.dtype == torch.float32
    assert (result32.weight.double() - result64.weight).abs().max() < 1e-3


@pytest.mark.parametrize("groupsize,actorder,static", [(-1, False, False), (16, False, False), (16, True, True),
                                                       (-1, True, False)],
                         ids=["per_row", "groups16", "groups16_actorder_static", "actorder"])
def test_quantizer_hook_with_nothing_pruned_is_gptq(groupsize, actorder, static):
    layer, batches = _layer_and_inputs(2)
    hessian = _ours(layer, batches)

    def quantizer():
        q = Quantizer()
        q.configure(3, perchannel=True, sym=False)
        return q

    expected, _ = fasterquant(layer.weight.data, hessian.matrix, quantizer(), blocksize=32, groupsize=groupsize,
                              actorder=actorder, static_groups=static)
    result = fasterprune(layer.weight.data, hessian.matrix, 0.0, blocksize=32, quantizer=quantizer(),
                         groupsize=groupsize, actorder=actorder, static_groups=static)
    assert (result.weight - expected).abs().max().item() < 1e-9
    assert bool(result.mask.all())
    # 3 bits: at most 8 distinct values per row (per group with groups).
    width = groupsize if groupsize > 0 else COLUMNS
    assert max(len(torch.unique(row[i:i + width])) for row in result.weight for i in range(0, COLUMNS, width)) <= 8


def test_pruned_and_quantized_keeps_zeros():
    layer, batches = _layer_and_inputs(3)
    hessian = _ours(layer, batches)
    q = Quantizer()
    q.configure(4)
    result = fasterprune(layer.weight.data, hessian.matrix, 0.0, prunen=2, prunem=4, quantizer=q, groupsize=16)
    assert torch.all(result.weight[~result.mask] == 0)
    assert float(result.mask.double().mean()) == 0.5


def test_nm_must_divide_the_row():
    layer, batches = _layer_and_inputs()
    with pytest.raises(ValueError, match="divisible by 3"):
        fasterprune(layer.weight.data[:, :79], _ours(layer, batches).matrix[:79, :79], prunen=2, prunem=3)
