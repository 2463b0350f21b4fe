"""`auto`: choose a backend per device, dtype, shape and sparsity from measured crossover points.

`crossover.json` (beside this file) holds what `bench/kernels.py --write-crossover` measured on a
machine: for each (op, device, dtype, implementation, mode) and each benchmarked layer shape, the
sparsity from which the `sparse` backend beats the reference (`sparse_from`, null when it never
did). `op` is `linear` (the default) or `conv`, whose shape is its im2col product (batch x output
positions, in*kh*kw, out). On a CPU the machine's own measurements come first: taken briefly at
first use and kept in the user's cache (`calibrate.py`, `overparam.hardware`); the shipped file
fills in what they do not cover. A call uses the entry whose shape is nearest in multiply-adds;
with no entry for its device/dtype/implementation, or far smaller than every measured shape, it
uses `torch`. The decision is cached per mask change and shape.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch

from overparam.kernels.cache import mask_cache, mask_density

CROSSOVER_PATH = Path(__file__).with_name("crossover.json")
# Calls with fewer multiply-adds than the smallest measured shape divided by this use `torch`.
SMALLEST_MEASURED_FACTOR = 4


@functools.lru_cache(maxsize=None)
def load_crossover(path: str | None = None) -> dict:
    """The measured crossover data ({} when the file is missing)."""
    file = Path(path) if path else CROSSOVER_PATH
    if not file.exists():
        return {}
    return json.loads(file.read_text())


def _group(entry: dict) -> tuple:
    return (entry.get("op", "linear"), entry["device"], entry["dtype"], entry["implementation"], entry["mode"])


def merged(machine: dict | None, shipped: dict) -> dict:
    """The machine's entries, plus the shipped ones of every shape it did not measure (large layers, other ops)."""
    if not machine:
        return shipped
    covered = {(_group(e), e.get("shape")) for e in machine.get("entries", [])}
    entries = list(machine.get("entries", [])) + [e for e in shipped.get("entries", [])
                                                  if (_group(e), e.get("shape")) not in covered]
    return {**shipped, "entries": entries, "machine": machine.get("path")}


def crossover_data(device_type: str = "cpu") -> dict:
    """What `auto` decides from: this machine's measurements (measured at first use on a CPU) over the shipped file."""
    shipped = load_crossover()
    if device_type != "cpu":
        return shipped
    from overparam.kernels import calibrate

    return merged(calibrate.machine_crossover(), shipped)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def sparse_threshold(device_type: str, dtype: torch.dtype, implementation: str, mode: str,
                     batch: int, in_features: int, out_features: int, data: dict | None = None,
                     op: str = "linear") -> float | None:
    """Sparsity from which `sparse` is faster for this shape, or None when no entry says it ever is."""
    data = crossover_data(device_type) if data is None else data
    entries = [e for e in data.get("entries", [])
               if _group(e) == (op, device_type, _dtype_name(dtype), implementation, mode)]
    if not entries:
        return None
    size = batch * in_features * out_features
    sizes = [e["batch"] * e["in_features"] * e["out_features"] for e in entries]
    if size < min(sizes) / SMALLEST_MEASURED_FACTOR:
        # Far below every measured shape the per-call overhead decides, which nothing measured: torch.
        return None
    nearest = min(zip(sizes, entries), key=lambda pair: abs(math.log(pair[0]) - math.log(max(1, size))))[1]
    return nearest["sparse_from"]


def choose_backend(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> str:
    """The backend `auto` runs for these operands: `sparse` above the measured crossover, else `torch`."""
    if weight.dim() != 2 or x.dtype != weight.dtype:
        return "torch"
    training = torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)
    batch = x.numel() // max(1, x.shape[-1])
    # Batches of similar size share a decision (a power-of-two bucket), so a last short batch
    # does not cost a fresh lookup.
    bucket = 1 << max(0, (batch - 1).bit_length())
    key = ("auto", x.device.type, weight.dtype, tuple(weight.shape), bucket, training)
    return mask_cache.get(mask, key, lambda m: _decide(x, weight, m, bucket, training))


def _decide(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, batch: int, training: bool) -> str:
    from overparam.kernels import sparse

    implementation = sparse.default_implementation(x, weight, mask)
    out_features, in_features = weight.shape
    threshold = sparse_threshold(x.device.type, weight.dtype, implementation, "train" if training else "forward",
                                 batch, in_features, out_features)
    if threshold is None:
        return "torch"
    return "sparse" if 1.0 - mask_density(mask) >= threshold else "torch"


def choose_conv_backend(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, stride, padding, dilation,
                        groups: int) -> str:
    """The backend `auto` runs for a masked convolution: `sparse` above the measured crossover, else `torch`."""
    from overparam.kernels.conv import conv_geometry, sparse_supported

    if not sparse_supported(weight, padding, groups) or x.dtype != weight.dtype:
        return "torch"
    training = torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)
    batch, positions, in_features, out_features = conv_geometry(x, weight, stride, padding, dilation)
    rows = batch * positions
    bucket = 1 << max(0, (rows - 1).bit_length())
    key = ("auto_conv", x.device.type, weight.dtype, tuple(weight.shape), bucket, training)

    def decide(m: torch.Tensor) -> str:
        from overparam.kernels import sparse

        implementation = sparse.default_implementation(x, weight.reshape(weight.shape[0], -1), m)
        threshold = sparse_threshold(x.device.type, weight.dtype, implementation, "train" if training else "forward",
                                     bucket, in_features, out_features, op="conv")
        if threshold is None:
            return "torch"
        return "sparse" if 1.0 - mask_density(m) >= threshold else "torch"

    return mask_cache.get(mask, key, decide)
