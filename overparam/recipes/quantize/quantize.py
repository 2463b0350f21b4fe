"""`method=quantize`: post-training quantization of a finished run's model, saved as packed integers.

The Linear/Conv layers named by `quant.layers` (the output layer only with `quant.output=true`) are put on a
grid (`quantizer.Grid`: bits, int/nf4/fp4, symmetric or not, per channel or per group of input columns) by
- `rtn`: round to nearest, every weight on its own;
- `gptq`: Frantar et al.'s column-by-column rounding with OBS updates of the remaining columns, layer by
  layer on the calibration inputs the already-quantized layers produce (`gptq.py`);
- `adaquant`: Hubara et al.'s per-layer optimization of the weights, bias and scales to match the float
  layer's output on those inputs (`adaquant.py`).
With `quant.avg_bits`, each layer's width comes from an integer program over `quant.mixed_bits` (`mixed.py`).
A pruned source keeps its mask: pruned weights are exact zeros on every grid (a code that decodes to 0).
The checkpoint `model.safetensors` holds the packed codes, scales and zero points (`overparam.models.quantized`);
loading the run (`from=`, `runner export`) dequantizes them into the exact weights evaluated here.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from overparam.errors import UserError
from overparam.recipes.quantize.common import Quantized, grid_of, output_kl
from overparam.recipes.quantize.layers import quantize_layers
from overparam.recipes.quantize.quantizer import Grid, rows_of

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def targets(model: nn.Module, params) -> dict[str, nn.Module]:
    """{name: layer} to quantize, in the model's order; UserError when none matches or a group does not fit."""
    from overparam.models import output_layer_name

    output = output_layer_name(model)
    patterns = list(params["quant.layers"])
    chosen = {name: module for name, module in model.named_modules() if isinstance(module, LAYER_TYPES)
              and any(fnmatch.fnmatchcase(name, p) for p in patterns) and (name != output or params["quant.output"])}
    if not chosen:
        raise UserError(f"quant.layers={patterns} match no Linear/Conv layer of the model"
                        + ("" if params["quant.output"] else f" (the output layer {output} is kept unless "
                                                             "quant.output=true)"))
    if params["quant.method"] != "rtn":
        _layerwise_fits(model, chosen, params["quant.method"])
    group = params["quant.group_size"]
    for name, module in chosen.items():
        columns = rows_of(module.weight).shape[1]
        if group is not None and columns % int(group):
            raise UserError(f"quant.group_size={group} does not divide layer {name}'s {columns} input columns")
    return chosen


def _layerwise_fits(model: nn.Module, chosen: dict[str, nn.Module], method: str) -> None:
    """GPTQ and AdaQuant go layer by layer (a language model block by block): their layers must fit that."""
    from overparam.recipes.shared.layerwise import transformer_blocks

    grouped = [name for name, module in chosen.items() if getattr(module, "groups", 1) != 1]
    if grouped:
        raise UserError(f"quant.method={method} needs groups=1 convolutions; {grouped[0]} is grouped "
                        f"(quant.method=rtn quantizes it, or leave it out of quant.layers)")
    if getattr(model, "language_model", False):
        found = transformer_blocks(model)
        outside = [name for name in chosen if found is None or not name.startswith(found[0] + ".")]
        if outside:
            raise UserError(f"quant.method={method} quantizes a language model block by block; {outside[0]} lies "
                            f"outside its transformer blocks (quant.method=rtn quantizes it, or leave it out)")


def _source_is_quantized(ref) -> bool:
    from overparam.store.checkpoint import tensor_shapes
    from overparam.store.load import run_info

    if (run_info(ref.root) or {}).get("method") == "quantize":
        return True
    return ref.has_weights() and any(key.endswith(".qmeta") for key in tensor_shapes(ref.weights))


def check(params, cfg: dict) -> None:
    """The source is not quantized already, and every chosen layer is divisible into groups."""
    from overparam.store.load import RunRef, load_run_model

    ref = RunRef.parse(str(params["from"]))
    if _source_is_quantized(ref):
        raise UserError(f"from={params['from']} is quantized already; quantize its float source instead")
    model, _ = load_run_model(ref, device="cpu")
    targets(model, params)


def masks_of(layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """{name: 0/1 mask} of the pruned layers among `layers`."""
    return {name: layer.weight_mask for name, layer in layers.items()
            if isinstance(getattr(layer, "weight_mask", None), torch.Tensor)}


@torch.no_grad()
def install(model: nn.Module, results: dict[str, Quantized], grids: dict[str, Grid]) -> dict:
    """Put each layer's stored weight (decoded from its integers) and new bias into the model; returns
    {"<name>.weight": QuantizedWeight} for the checkpoint."""
    stored = {}
    for name, result in results.items():
        layer = model.get_submodule(name)
        weight = result.weight
        mask = getattr(layer, "weight_mask", None)
        if mask is not None:
            weight = weight * mask
        packed = grids[name].encode(weight.to(torch.float32).reshape(layer.weight.shape), result.scale,
                                    result.zero)
        layer.weight.copy_(packed.dequantize().to(layer.weight.dtype))
        if result.bias is not None and layer.bias is not None:
            layer.bias.copy_(result.bias)
        stored[f"{name}.weight"] = packed
    return stored


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, calibration, batch_size: int = 64) -> int:
    """Re-estimate every BatchNorm's running statistics on the calibration inputs (cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    for batch in calibration.batches(batch_size):
        model(batch)
    model.eval()
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return len(norms)


def _flat(metrics: dict, prefix: str = "") -> dict:
    return {f"{prefix}{split}_{name}": value for split, values in metrics.items() for name, value in values.items()}


def run(params, context) -> dict:
    """Load `from`, quantize the chosen layers, evaluate, and save the packed model."""
    import copy

    from overparam.engine.evaluate import evaluate_splits
    from overparam.models.quantized import quantize_state
    from overparam.recipes.shared.calibration import from_params
    from overparam.recipes.shared.source import load_from_run

    run = context.run
    setup = context.prepare()
    model = load_from_run(params["from"], setup).eval()
    layers = targets(model, params)
    calibration = from_params(params, setup.data, run)
    before = evaluate_splits(model, setup.data)
    float_model = copy.deepcopy(model)
    extra: dict = {}
    if params["quant.avg_bits"] is not None:
        from overparam.recipes.quantize.mixed import mixed_precision

        results, grids, extra = mixed_precision(model, layers, calibration, params)
    else:
        grid = grid_of(params)
        results = quantize_layers(model, layers, grid, calibration, params)
        grids = {name: grid for name in layers}
    stored = install(model, results, grids)
    per_layer = {name: r.figures for name, r in results.items() if r.figures}
    if per_layer:
        extra["layer_fit"] = per_layer
    if params["quant.bn_recalibrate"]:
        extra["bn_recalibrated"] = recalibrate_batchnorm(model, calibration)
    after = evaluate_splits(model, setup.data)
    state = quantize_state({k: v.detach().cpu() for k, v in model.state_dict().items()},
                           {k: _cpu(v) for k, v in stored.items()})
    path = run.save_checkpoint("model", state)
    float_bytes = sum(layer.weight.numel() * layer.weight.element_size() for layer in layers.values())
    packed_bytes = sum(v.nbytes() for v in stored.values())
    quantized_weights = sum(layer.weight.numel() for layer in layers.values())
    summary = {**_flat(after), **_flat(before, "float_"),
               "quant_method": params["quant.method"], "bits": params["quant.bits"], "format": params["quant.format"],
               "group_size": params["quant.group_size"], "layers_quantized": len(layers),
               "quantized_weights": quantized_weights,
               "avg_bits": sum(grids[n].bits * layers[n].weight.numel() for n in layers) / quantized_weights,
               "quantized_layer_bytes": packed_bytes, "float_layer_bytes": float_bytes,
               "checkpoint_bytes": path.stat().st_size, "output_kl": output_kl(float_model, model, calibration),
               **extra}
    from overparam.models.masked import masked_modules, sparsity_report

    if masked_modules(model):
        summary["sparsity"] = sparsity_report(model)["sparsity"]
    return summary


def _cpu(weight):
    from overparam.models.quantized import QuantizedWeight

    return QuantizedWeight(weight.codes.cpu(), weight.scale.cpu(), weight.zero.cpu(), weight.bits, weight.group,
                           weight.fmt, weight.shape)
