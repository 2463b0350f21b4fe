"""The quantize family's parameters (post-training quantization of a finished run). Torch-free."""

from __future__ import annotations

from overparam.errors import UserError
from overparam.methods import declare
from overparam.params import Param, Params, Spec
from overparam.specs import CALIB

METHODS = ("rtn", "gptq", "adaquant")
FORMATS = ("int", "nf4", "fp4")
BITS = (2, 3, 4, 8)


def _bit_list(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in BITS


def _rules(params: Params, cfg: dict) -> None:
    if not params["from"]:
        raise UserError("method=quantize needs from=<run dir> (or <run dir>@level_<L>), the model to quantize")
    bits, fmt = params["quant.bits"], params["quant.format"]
    if bits not in BITS:
        raise UserError(f"quant.bits={bits} is not supported; one of {', '.join(map(str, BITS))}")
    if fmt != "int" and bits != 4:
        raise UserError(f"quant.format={fmt} is a 4-bit format; set quant.bits=4 (or quant.format=int)")
    if params["quant.act_order"] and params["quant.method"] != "gptq":
        raise UserError(f"quant.act_order applies to quant.method=gptq, not {params['quant.method']}")
    budget = params["quant.avg_bits"]
    if budget is not None:
        if fmt != "int":
            raise UserError(f"quant.avg_bits (mixed precision) chooses integer bit-widths; quant.format={fmt} "
                            f"has one width")
        candidates = sorted(set(params["quant.mixed_bits"]))
        if budget < candidates[0]:
            raise UserError(f"quant.avg_bits={budget:g} is below the smallest model quant.mixed_bits allows "
                            f"({candidates[0]} bits in every layer)")


QUANTIZE = Spec("quantize", [
    Param("from", "run", None, "the run to quantize: <run dir> or <run dir>@level_<L> (a pruned run keeps its "
          "zeros)", optional=True),
    Param("quant.method", "choice", "rtn", "rtn (round to nearest) | gptq (Frantar et al., OBS updates) | "
          "adaquant (Hubara et al., per-layer output matching)", choices=METHODS),
    Param("quant.bits", "int", 4, "bits per weight: 8, 4, 3 or 2"),
    Param("quant.format", "choice", "int", "int (affine integers) | nf4 | fp4 (bitsandbytes' 4-bit code books, "
          "absmax scale per group)", choices=FORMATS),
    Param("quant.group_size", "int", None, "input columns sharing one scale; null: one per output channel",
          low=1, optional=True),
    Param("quant.sym", "bool", False, "symmetric grid (zero point fixed at the middle)"),
    Param("quant.act_order", "bool", False, "gptq: quantize columns in order of decreasing Hessian diagonal"),
    Param("quant.damp", "float", 0.01, "gptq: dampening added to the Hessian diagonal, times its mean",
          low=0.0, low_open=True),
    Param("quant.block_size", "int", 128, "gptq: columns per lazy block update", low=1),
    Param("quant.steps", "int", 200, "adaquant: optimizer steps per layer", low=1),
    Param("quant.lr", "float", 1e-3, "adaquant: Adam learning rate (weights in grid steps, log-scales, bias)",
          low=0.0, low_open=True),
    Param("quant.batch_size", "int", 32, "adaquant: calibration inputs per step", low=1),
    Param("quant.bn_recalibrate", "bool", False, "re-estimate BatchNorm statistics on the calibration set "
          "after quantizing"),
    Param("quant.layers", "list", ["*"], "module-name patterns (fnmatch) of the layers to quantize",
          items="patterns", min_items=1, message="{key} must be a non-empty list of module-name patterns"),
    Param("quant.output", "bool", False, "also quantize the output layer (kept in float by default)"),
    Param("quant.avg_bits", "float", None, "mixed precision: average bits per quantized weight the integer "
          "program may spend; null: every layer at quant.bits", low=0.0, low_open=True, optional=True),
    Param("quant.mixed_bits", "list", [2, 3, 4, 8], "mixed precision: the bit-widths a layer may get",
          item=_bit_list, items="bit-widths among 2, 3, 4, 8", min_items=1),
], check=_rules, extends=(CALIB,), doc="Post-training quantization (RTN, GPTQ, AdaQuant; mixed precision), stored "
   "as packed integers.")

declare(QUANTIZE, "quantize", check=True)
