"""AdaQuant (Hubara et al. 2021, "Accurate Post Training Quantization With Small Calibration Sets"): per layer,
the weights, the bias and the grid's scales are optimized so that the quantized layer's output on its
calibration inputs matches the float layer's, rounding through a straight-through estimator.

Sequential, as the paper's sequential AdaQuant: the layers are taken in order by the shared layer-wise driver,
so each layer's inputs are those the already-quantized layers produce, while its target is the float model's
output of that layer on the float model's own inputs; a layer can then also correct the error it inherits. The
optimized bias is the paper's bias correction folded in. A layer whose optimized result has a larger
calibration error than round-to-nearest keeps round-to-nearest (reported per layer).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from overparam.engine.optim import without_dynamo
from overparam.models.quantized import table
from overparam.recipes.quantize.quantizer import Grid, rows_of


def ste_values(grid: Grid, weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The grid values of `weight` (rows, columns) with per-(row, group) scale/zero, differentiable through
    the rounding (straight-through) in the weight and the scale."""
    rows, columns = weight.shape
    group = grid.group(columns)
    w = weight.reshape(rows, columns // group, group)
    s, z = scale[..., None], zero[..., None]
    if grid.fmt != "int":
        book = table(grid.fmt, weight.device, weight.dtype)
        normalized = w / s
        nearest = book[(normalized.unsqueeze(-1) - book).abs().argmin(-1)]
        return ((normalized + (nearest - normalized).detach()) * s).reshape(rows, columns)
    # x * (1/s), as Grid.fake and torch's fake quantization (a symmetric grid's extremes sit on exact ties); the
    # gradient passes wherever the unrounded position lies on the grid's range, also where it rounds to an end
    position = w * (1.0 / s)
    hard = torch.clamp(torch.round(position) + z, 0, grid.maxq)
    soft = torch.clamp(position + z, 0, grid.maxq)
    q = soft + (hard - soft).detach()
    return ((q - z) * s).reshape(rows, columns)


class _Inputs:
    """A collector keeping a layer's inputs as rows (float32)."""

    def __init__(self):
        self.rows: list[torch.Tensor] = []

    def add_batch(self, inputs: torch.Tensor) -> None:
        self.rows.append(inputs.reshape(-1, inputs.shape[-1]).float())

    def matrix(self) -> torch.Tensor:
        return torch.cat(self.rows)


def optimize_layer(weight: torch.Tensor, bias: torch.Tensor | None, inputs: torch.Tensor, target: torch.Tensor,
                   grid: Grid, *, mask: torch.Tensor | None = None, steps: int = 200, lr: float = 1e-3,
                   batch_rows: int = 1024, seed: int = 0) -> tuple:
    """(weight on the grid, scale, zero, bias, figures) minimizing ||inputs @ Q(W)^T + b - target||^2."""
    rows, columns = weight.shape
    rounded, scale0, zero = grid.rtn(weight)
    if mask is not None:
        rounded = rounded * mask

    def error(w, b) -> float:
        out = inputs @ w.T + (b if b is not None else 0)
        return float(((out - target) ** 2).mean())

    rtn_error = error(rounded, bias)
    # The weights move in units of their initial grid step (so one learning rate serves every bit-width and
    # layer), the scales on a log scale, the bias in the output's units.
    step = scale0.repeat_interleave(grid.group(columns), dim=1)
    units = (weight / step).clone().requires_grad_(True)
    log_scale = scale0.log().clone().requires_grad_(True)
    trained_bias = bias.clone().requires_grad_(True) if bias is not None else None
    groups = [{"params": [units], "lr": lr}, {"params": [log_scale], "lr": lr}]
    if trained_bias is not None:
        groups.append({"params": [trained_bias], "lr": lr})
    optimizer = without_dynamo(torch.optim.Adam)(groups)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(len(inputs), (min(batch_rows, len(inputs)),), generator=generator).to(inputs.device)
        w = ste_values(grid, units * step, log_scale.exp(), zero)
        if mask is not None:
            w = w * mask
        out = inputs[index] @ w.T + (trained_bias if trained_bias is not None else 0)
        loss = ((out - target[index]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    values = (units * step).detach()
    with torch.no_grad():
        scale = log_scale.exp()
        final = grid.fake(values.reshape(-1, grid.group(columns)), scale.reshape(-1), zero.reshape(-1))
        final = final.reshape(rows, columns)
        if mask is not None:
            final = final * mask
        new_bias = trained_bias.detach() if trained_bias is not None else None
        adaquant_error = error(final, new_bias)
    if adaquant_error > rtn_error:
        return rounded, scale0, zero, bias, {"rtn_mse": rtn_error, "adaquant_mse": adaquant_error, "kept": "rtn"}
    return final, scale, zero, new_bias, {"rtn_mse": rtn_error, "adaquant_mse": adaquant_error, "kept": "adaquant"}


class AdaQuantMethod:
    """The layer-wise driver's method: inputs collected per layer, then `optimize_layer` against float targets."""

    def __init__(self, grids: dict[str, Grid], params, float_inputs: dict[str, torch.Tensor],
                 float_model: nn.Module):
        self.grids, self.float_inputs, self.float_model = grids, float_inputs, float_model
        self.steps, self.lr = int(params["quant.steps"]), float(params["quant.lr"])
        self.samples = int(params["calib.samples"])
        self.batch_size, self.seed = int(params["quant.batch_size"]), int(params["calib.seed"])
        self.results: dict = {}

    def collector(self, name: str, module: nn.Module, columns: int):
        return _Inputs()

    def prune(self, name: str, module: nn.Module, weight: torch.Tensor, collector):
        from overparam.recipes.quantize.common import Quantized

        float_layer = self.float_model.get_submodule(name)
        inputs = collector.matrix()
        float_bias = float_layer.bias.detach().float() if float_layer.bias is not None else None
        target = self.float_inputs.pop(name) @ rows_of(float_layer.weight.detach().float()).T
        if float_bias is not None:
            target = target + float_bias
        mask = getattr(module, "weight_mask", None)
        bias = module.bias.detach().float() if module.bias is not None else None
        with torch.enable_grad():
            quantized, scale, zero, new_bias, figures = optimize_layer(
                weight, bias, inputs, target, self.grids[name], mask=None if mask is None else mask.flatten(1).float(),
                steps=self.steps, lr=self.lr, batch_rows=max(1, len(inputs) * self.batch_size // self.samples),
                seed=self.seed)
        if new_bias is not None:
            with torch.no_grad():
                module.bias.copy_(new_bias)
        self.results[name] = Quantized(quantized.reshape(module.weight.shape), scale, zero, new_bias, figures)
        return quantized, torch.ones_like(weight, dtype=torch.bool)


@torch.no_grad()
def float_layer_inputs(model: nn.Module, names: list[str], inputs: torch.Tensor, batch_size: int) -> dict:
    """{name: the float model's inputs of that layer as rows}, batch by batch in the driver's order."""
    from overparam.recipes.shared.layerwise import layer_inputs

    kept = {name: _Inputs() for name in names}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda module, args, _out, name=name: kept[name].add_batch(layer_inputs(module, args[0].detach())))
        for name in names]
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return {name: collected.matrix() for name, collected in kept.items()}


def adaquant_model(model: nn.Module, grids: dict[str, Grid], calibration, params) -> dict:
    """{name: Quantized} of sequential AdaQuant on the layers `grids` names, each on its grid, on a copy of
    `model` (the model itself is left as it is)."""
    from overparam.recipes.shared.layerwise import run_layerwise

    batch_size = 8
    model.eval()
    names = list(grids)
    targets = float_layer_inputs(model, names, calibration.inputs, batch_size)
    work = copy.deepcopy(model)
    method = AdaQuantMethod(grids, params, targets, model)
    run_layerwise(work, calibration.inputs, method, targets=names, batch_size=batch_size)
    return method.results
