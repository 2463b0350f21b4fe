"""The integer program's choice of bit-widths is optimal (equal to brute force) and within its budget; a 4-bit
layer's packed size is an eighth of its float size plus its scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from overparam.errors import UserError
from overparam.models.quantized import QuantizedWeight
from overparam.recipes.quantize.mixed import brute_force, solve
from overparam.recipes.quantize.quantizer import Grid


@pytest.mark.parametrize("seed", range(6))
def test_the_integer_program_equals_brute_force_on_4_layers_and_3_widths(seed):
    rng = np.random.default_rng(seed)
    widths = np.array([2.0, 4.0, 8.0])
    counts = rng.integers(100, 5000, size=4).astype(float)
    # loss falls with the width, at a rate of its own per layer (as measured losses do)
    loss = rng.uniform(0.1, 2.0, size=(4, 1)) * np.array([1.0, 0.2, 0.01])[None, :] * rng.uniform(0.5, 1.5, (4, 3))
    size = counts[:, None] * widths[None, :]
    for average in (2.5, 3.3, 4.0, 5.5, 7.9):
        budget = average * counts.sum()
        choice = solve(loss, size, budget)
        expected = brute_force(loss, size, budget)
        total = lambda c: sum(loss[i, j] for i, j in enumerate(c))  # noqa: E731
        assert total(choice) == pytest.approx(total(expected), rel=1e-9, abs=1e-12)
        assert sum(size[i, j] for i, j in enumerate(choice)) <= budget + 1e-6
    assert solve(loss, size, 8.0 * counts.sum()) == [2, 2, 2, 2]  # everything fits: the widest everywhere


def test_a_budget_below_the_smallest_model_is_refused():
    loss, size = np.ones((2, 2)), np.array([[2.0, 4.0], [2.0, 4.0]])
    with pytest.raises(UserError, match="no bit-widths fit the budget of 3 bits"):
        solve(loss, size, 3.0)


def test_a_4bit_layer_takes_an_eighth_of_its_float_bytes_plus_its_scales():
    weight = torch.randn(64, 256)
    float_bytes = weight.numel() * 4
    for group, overhead in ((None, 64 * 5), (128, 64 * 2 * 5)):
        grid = Grid(4, group_size=group)
        stored = grid.encode(*grid.rtn(weight))
        meta = 5 * 8  # bits, group, format, rows, columns
        assert stored.nbytes() == float_bytes // 8 + overhead + meta
        packed = stored.tensors("w")
        assert packed["w.qcodes"].numel() == weight.numel() // 2
    assert QuantizedWeight.from_tensors(packed, "w").codes.shape == (64, 256)
