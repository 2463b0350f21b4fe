"""Quantize a set of layers by `quant.method`: round to nearest here, GPTQ and AdaQuant in their modules."""

from __future__ import annotations

from torch import nn

from overparam.recipes.quantize.common import Quantized
from overparam.recipes.quantize.quantizer import Grid


def rtn(layers: dict[str, nn.Module], grids: dict[str, Grid]) -> dict[str, Quantized]:
    """Round to nearest, layer by layer (no data)."""
    out = {}
    for name, layer in layers.items():
        grid = grids[name]
        weight = layer.weight.detach().float()
        mask = getattr(layer, "weight_mask", None)
        if mask is not None:
            weight = weight * mask
        rounded, scale, zero = grid.rtn(weight)
        out[name] = Quantized(rounded, scale, zero)
    return out


def quantize_layers(model: nn.Module, layers: dict[str, nn.Module], grid: Grid | dict[str, Grid], calibration,
                    params) -> dict[str, Quantized]:
    """Every layer of `layers` on `grid` (one for all, or {name: grid}) by quant.method, in the model's order
    (the model itself is left as it is)."""
    grids = grid if isinstance(grid, dict) else {name: grid for name in layers}
    method = params["quant.method"]
    if method == "rtn":
        return rtn(layers, grids)
    if method == "gptq":
        from overparam.recipes.quantize.gptq import gptq_model

        return gptq_model(model, grids, calibration, params)
    from overparam.recipes.quantize.adaquant import adaquant_model

    return adaquant_model(model, grids, calibration, params)
