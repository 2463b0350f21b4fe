"""Mixed precision by integer programming (Hubara et al. 2021, section 4): a bit-width per layer that minimizes
the summed loss increase under a size budget.

Each layer is quantized alone at every candidate width (`quant.mixed_bits`, by `quant.method`, on the float
model's inputs); the loss increase of layer l at width b is measured on the calibration set with only that
layer quantized (the KL divergence of the model's output distribution from the float model's, so no labels
are needed; per example, or per token of a language model), and assumed additive over layers, as in the
paper. The program

    minimize sum_l,b  dL[l, b] x[l, b]   s.t.  sum_b x[l, b] = 1 (each l),  sum_l,b  n_l b x[l, b] <= budget,
    x binary,  budget = quant.avg_bits * sum_l n_l  (n_l: the layer's weights; scales not counted)

is solved exactly with `scipy.optimize.milp` (HiGHS branch and bound). The chosen widths are then quantized
together, in sequence as the method does (GPTQ and AdaQuant see the inputs the chosen precisions produce).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from overparam.errors import UserError


def solve(loss: np.ndarray, size: np.ndarray, budget: float) -> list[int]:
    """Per row (layer) the column (width) chosen: minimum total `loss` with total `size` <= `budget`."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    layers, widths = loss.shape
    one_each = np.kron(np.eye(layers), np.ones(widths))
    constraints = [LinearConstraint(one_each, 1, 1), LinearConstraint(size.reshape(1, -1), -np.inf, budget)]
    result = milp(loss.reshape(-1), constraints=constraints, integrality=np.ones(layers * widths),
                  bounds=Bounds(0, 1))
    if result.status != 0 or result.x is None:
        smallest = size.min(1).sum()
        raise UserError(f"no bit-widths fit the budget of {budget:g} bits (the smallest model takes {smallest:g})")
    return [int(i) for i in np.round(result.x).reshape(layers, widths).argmax(1)]


def brute_force(loss: np.ndarray, size: np.ndarray, budget: float) -> list[int] | None:
    """The same choice by trying every assignment (for checking `solve` on small cases)."""
    best, best_loss = None, np.inf
    rows = range(loss.shape[0])
    for choice in itertools.product(range(loss.shape[1]), repeat=loss.shape[0]):
        if sum(size[r, c] for r, c in zip(rows, choice)) <= budget + 1e-9:
            total = sum(loss[r, c] for r, c in zip(rows, choice))
            if total < best_loss:
                best, best_loss = list(choice), total
    return best


@torch.no_grad()
def _with_layer(model: nn.Module, name: str, result, measure) -> float:
    layer = model.get_submodule(name)
    weight = layer.weight.detach().clone()
    bias = layer.bias.detach().clone() if layer.bias is not None else None
    layer.weight.copy_(result.weight.reshape(weight.shape).to(weight.dtype))
    if result.bias is not None and bias is not None:
        layer.bias.copy_(result.bias)
    try:
        return measure()
    finally:
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)


def mixed_precision(model: nn.Module, layers: dict[str, nn.Module], calibration, params):
    """(results, grids, summary figures) of the integer program's choice of widths."""
    import copy

    from overparam.recipes.quantize.common import grid_of, output_kl
    from overparam.recipes.quantize.layers import quantize_layers

    widths = sorted(set(params["quant.mixed_bits"]))
    names = list(layers)
    reference = copy.deepcopy(model)

    def increase(name: str, bits: int) -> float:
        alone = quantize_layers(model, {name: layers[name]}, grid_of(params, bits), calibration, params)[name]
        return _with_layer(model, name, alone, lambda: output_kl(reference, model, calibration))

    loss = np.array([[increase(name, bits) for bits in widths] for name in names])
    counts = np.array([layers[name].weight.numel() for name in names], dtype=float)
    size = counts[:, None] * np.array(widths, dtype=float)[None, :]
    budget = float(params["quant.avg_bits"]) * counts.sum()
    choice = solve(loss, size, budget)
    chosen = {name: widths[c] for name, c in zip(names, choice)}
    grids = {name: grid_of(params, chosen[name]) for name in names}
    results = quantize_layers(model, layers, grids, calibration, params)
    figures = {"mixed_bits_chosen": chosen, "mixed_budget_avg_bits": float(params["quant.avg_bits"]),
               "mixed_predicted_kl": float(sum(loss[i, c] for i, c in enumerate(choice))),
               "mixed_layer_kl": {name: {str(b): float(loss[i, j]) for j, b in enumerate(widths)}
                                  for i, name in enumerate(names)}}
    return results, grids, figures
