"""Quantized linear layers on this CPU: int8 kernels and the 4-bit packed path against float (not a test).

    python bench/quant.py                      # 1 thread, batch 1 and 64, width 1024 (a transformer MLP's shapes)
    python bench/quant.py --threads 2 --width 512 --rounds 30

Weights are quantized by the package (`overparam.recipes.quantize.quantizer.Grid`, 8 bits per channel, or 4 bits
in groups of 128) and run through:
- `float`: F.linear with the dequantized float32 weight (what a quantize run evaluates; the baseline);
- `int8_fbgemm`: PyTorch's dynamic-quantized linear (fbgemm: activations quantized per tensor at run time,
  int8 x int8 -> int32, per-channel weight scales), its packed weight built from the stored 8-bit codes;
- `int8_int_mm`: torch._int_mm on int8 activations (quantized per row at run time, symmetric) and the 8-bit
  symmetric codes, int32 accumulated, rescaled to float;
- `int4_unpack`: the packed 4-bit codes unpacked and dequantized at every call, then F.linear: an eighth of the
  weight memory, paid for in time.
Times are the minimum over interleaved rounds (a fresh order each round) of a three-layer MLP block
(width -> 4 width -> width, as a transformer's), ratio = contender / float in the same run; `spread` is
median/min of the float baseline (above 1.5 the machine was busy). `max_rel_err` compares each output with
float's on the same quantized weights (the int8 kernels also round the activations).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from overparam.models.quantized import QuantizedWeight, decode, unpack  # noqa: E402
from overparam.recipes.quantize.quantizer import Grid  # noqa: E402


def quantized_layers(width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(4 * width, width), (width, 4 * width)]
    layers = []
    for rows, columns in shapes:
        weight = torch.randn(rows, columns, generator=generator) / columns ** 0.5
        bias = torch.randn(rows, generator=generator) * 0.01
        grid8 = Grid(8, sym=True)
        int8 = grid8.encode(*grid8.rtn(weight))
        grid4 = Grid(4, group_size=128)
        int4 = grid4.encode(*grid4.rtn(weight))
        layers.append({"int8": int8, "int4": int4, "bias": bias})
    return layers


def float_path(layers, key):
    weights = [(layer[key].dequantize(), layer["bias"]) for layer in layers]

    def run(x):
        h = F.gelu(F.linear(x, *weights[0]))
        return F.linear(h, *weights[1])
    return run, sum(w.numel() * 4 for w, _ in weights)


def fbgemm_path(layers):
    packed = []
    for layer in layers:
        stored: QuantizedWeight = layer["int8"]
        # fbgemm's qint8 is signed: the stored unsigned code c with zero point z is c - 128 with z - 128
        signed = (stored.codes.to(torch.int16) - 128).to(torch.int8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(signed, stored.scale[:, 0].double(),
                                                               (stored.zero[:, 0].long() - 128), 0)
        packed.append(torch.ops.quantized.linear_prepack(qweight, layer["bias"]))

    def run(x):
        h = F.gelu(torch.ops.quantized.linear_dynamic(x, packed[0]))
        return torch.ops.quantized.linear_dynamic(h, packed[1])
    return run, sum(layer["int8"].codes.numel() for layer in layers)


def int_mm_path(layers):
    prepared = []
    for layer in layers:
        stored = layer["int8"]
        signed = (stored.codes.to(torch.int16) - stored.zero.to(torch.int16)).to(torch.int8)  # symmetric: z=128
        prepared.append((signed.t().contiguous(), stored.scale[:, 0], layer["bias"]))

    def linear(x, weight_t, scale, bias):
        rows = x.shape[0]
        x_scale = x.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127
        xq = torch.round(x / x_scale).to(torch.int8)
        if rows <= 16:  # torch._int_mm wants more than 16 rows: pad (the cost is part of the path)
            xq = torch.cat([xq, xq.new_zeros(17 - rows, xq.shape[1])])
        out = torch._int_mm(xq, weight_t)[:rows]
        return out.float() * x_scale * scale + bias

    def run(x):
        return linear(F.gelu(linear(x, *prepared[0])), *prepared[1])
    return run, sum(layer["int8"].codes.numel() for layer in layers)


def int4_path(layers):
    packed = [(layer["int4"].tensors("w"), layer["int4"], layer["bias"]) for layer in layers]

    def weight(tensors, stored):
        rows, columns = stored.shape
        codes = unpack(tensors["w.qcodes"], 4, rows * columns).view(rows, columns)
        return decode(codes, tensors["w.qscale"], tensors["w.qzero"], stored.group, "int")

    def run(x):
        h = F.gelu(F.linear(x, weight(*packed[0][:2]), packed[0][2]))
        return F.linear(h, weight(*packed[1][:2]), packed[1][2])
    return run, sum(sum(t.numel() * t.element_size() for t in p[0].values()) for p in packed)


def measure(width: int, batch: int, rounds: int) -> list[dict]:
    layers = quantized_layers(width)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(1))
    float8, float_bytes = float_path(layers, "int8")
    float4, _ = float_path(layers, "int4")
    contenders = {"float": (float8, float_bytes, float8), "int8_fbgemm": (*fbgemm_path(layers), float8),
                  "int8_int_mm": (*int_mm_path(layers), float8), "int4_unpack": (*int4_path(layers), float4)}
    with torch.no_grad():
        for run, _, _ in contenders.values():
            run(x)
        times = {name: [] for name in contenders}
        shuffler = random.Random(0)
        for _ in range(rounds):
            for name in shuffler.sample(list(contenders), len(contenders)):
                tick = time.perf_counter()
                contenders[name][0](x)
                times[name].append(time.perf_counter() - tick)
        base = min(times["float"])
        spread = statistics.median(times["float"]) / base
        rows = []
        for name, (run, nbytes, reference) in contenders.items():
            expected = reference(x)
            error = float((run(x) - expected).abs().max() / expected.abs().max())
            rows.append({"batch": batch, "path": name, "ms": min(times[name]) * 1e3, "ratio": min(times[name]) / base,
                         "weight_bytes": nbytes, "max_rel_err": error, "spread": spread})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from overparam import hardware

    print(hardware.describe_cpu(), "| load", open("/proc/loadavg").read().split()[0])
    print(f"torch {torch.__version__}, {args.threads} thread(s), quantized engine {torch.backends.quantized.engine}, "
          f"MLP block {args.width} -> {4 * args.width} -> {args.width}, {args.rounds} interleaved rounds")
    print(f"{'batch':>5} {'path':<12} {'ms':>8} {'ratio':>6} {'weight MB':>9} {'max_rel_err':>11} {'spread':>6}")
    for batch in args.batches:
        for row in measure(args.width, batch, args.rounds):
            print(f"{row['batch']:>5} {row['path']:<12} {row['ms']:>8.3f} {row['ratio']:>6.2f} "
                  f"{row['weight_bytes'] / 2 ** 20:>9.2f} {row['max_rel_err']:>11.2e} {row['spread']:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
