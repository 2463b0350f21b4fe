"""GPTQ (Frantar et al. 2023, IST-DASLab/gptq): each layer's columns rounded one at a time, the rounding error
spread over the columns still to come through the Cholesky factor of the dampened inverse Hessian of the
layer's calibration inputs. The loop is the shared OBS reconstruction (`recipes/shared/obs.fasterprune` with
nothing pruned and a quantizer), the layer order and inputs the shared layer-wise driver's (a language model
block by block, a classifier layer by layer, each layer seeing the quantized layers' outputs).

`GridQuantizer` is the quantizer hook the loop calls: it fits a `Grid` to a weight slice (per row), rounds a
column to it, keeps a pruned source's zeros at zero (a pruned weight is then part of the error the other
columns absorb, as SparseGPT treats the weights it prunes), and records the scale and zero point of every
group it fitted, which is what the checkpoint stores. With `act_order` and groups the groups are static (fitted
on the weight before any update, IST-DASLab/gptq's `--static-groups`), so that a group is a run of consecutive
input columns whatever the processing order.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from overparam.recipes.quantize.quantizer import Grid


class GridQuantizer:
    """The quantizer hook of `fasterprune` (ready/find_params/quantize) on a `Grid`, recording group params."""

    def __init__(self, grid: Grid, mask: torch.Tensor | None = None, order: torch.Tensor | None = None):
        self.grid, self.mask, self.order = grid, mask, order
        self.scale = self.zero = None
        self.fitted: list[tuple[torch.Tensor, torch.Tensor]] = []  # shared by the copies made for static groups
        self.column = [0]  # columns quantized so far (shared with the copies: one stream of columns)

    def __deepcopy__(self, memo):
        return copy.copy(self)  # a static group's own scale and zero, the same record and column count

    def ready(self) -> bool:
        return self.scale is not None

    def find_params(self, x: torch.Tensor, weight: bool = True) -> None:
        self.scale, self.zero = self.grid.params(x.flatten(1))
        self.fitted.append((self.scale, self.zero))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        column = self.column[0]
        self.column[0] += 1
        q = self.grid.fake(x, self.scale, self.zero)
        if self.mask is not None:
            index = int(self.order[column]) if self.order is not None else column
            q = q * self.mask[:, index:index + 1].to(q.dtype)
        return q

    def group_params(self, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero), each (rows, groups), of the last `groups` fits (the groups, in column order)."""
        chosen = self.fitted[-groups:]
        return torch.stack([s for s, _ in chosen], 1), torch.stack([z for _, z in chosen], 1)


def processing_order(hessian: torch.Tensor, act_order: bool) -> torch.Tensor | None:
    """The column order `fasterprune` uses: by decreasing Hessian diagonal (dead columns counted as 1)."""
    if not act_order:
        return None
    diagonal = torch.diag(hessian).clone()
    diagonal[diagonal == 0] = 1
    return torch.argsort(diagonal, descending=True)


def gptq_layer(weight: torch.Tensor, hessian: torch.Tensor, grid: Grid, *, mask: torch.Tensor | None = None,
               block_size: int = 128, damp: float = 0.01, act_order: bool = False):
    """(quantized weight, scale, zero) of one layer's (rows, columns) weight given its Hessian."""
    from overparam.recipes.shared.obs import fasterprune

    rows, columns = weight.shape
    group = grid.group(columns)
    grouped = grid.group_size is not None and group < columns
    static = bool(grouped and act_order)
    order = processing_order(hessian, act_order)
    hook = GridQuantizer(grid, None if mask is None else mask.reshape(rows, columns), order)
    result = fasterprune(weight, hessian, 0.0, blocksize=block_size, percdamp=damp, quantizer=hook,
                         groupsize=group if grouped else -1, actorder=act_order, static_groups=static)
    scale, zero = hook.group_params(columns // group)
    return result.weight, scale, zero


class GPTQMethod:
    """The layer-wise driver's method: a Hessian per layer, then `gptq_layer`; results kept by layer name."""

    def __init__(self, grids: dict[str, Grid], params):
        self.grids = grids
        self.block_size, self.damp = int(params["quant.block_size"]), float(params["quant.damp"])
        self.act_order = bool(params["quant.act_order"])
        self.results: dict = {}

    def collector(self, name: str, module: nn.Module, columns: int):
        from overparam.recipes.shared.obs import Hessian

        return Hessian(columns, device=module.weight.device)

    def prune(self, name: str, module: nn.Module, weight: torch.Tensor, collector):
        from overparam.recipes.quantize.common import Quantized

        mask = getattr(module, "weight_mask", None)
        quantized, scale, zero = gptq_layer(weight, collector.matrix, self.grids[name],
                                            mask=None if mask is None else mask.flatten(1),
                                            block_size=self.block_size, damp=self.damp, act_order=self.act_order)
        self.results[name] = Quantized(quantized.reshape(module.weight.shape), scale, zero)
        return quantized, torch.ones_like(weight, dtype=torch.bool)


def gptq_model(model: nn.Module, grids: dict[str, Grid], calibration, params) -> dict:
    """{name: Quantized} of GPTQ on the layers `grids` names, each on its grid, on a copy of `model` (the model
    itself is left as it is)."""
    from overparam.recipes.shared.layerwise import run_layerwise

    work = copy.deepcopy(model)
    method = GPTQMethod(grids, params)
    run_layerwise(work, calibration.inputs, method, targets=list(grids), batch_size=8)
    return method.results
