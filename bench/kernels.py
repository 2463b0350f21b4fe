"""Masked-matmul benchmark: time of each backend relative to dense F.linear (not a test).

    python bench/kernels.py                                  # all shapes, CPU, float32 (~3 min on 2 cores)
    python bench/kernels.py --shapes lenet --repeats 30      # one shape, more rounds
    python bench/kernels.py --write-crossover                # also rewrite overparam/kernels/crossover.json
    python bench/kernels.py --device cuda --dtype float16 --pattern block    # GPU: triton on tile-aligned blocks
    python bench/kernels.py --device cuda --dtype float16 --pattern two_four # GPU: 2:4 via `sparse`

Every cell is (backend time) / (dense F.linear time) measured in the same process, same shapes,
in interleaved rounds (each round times every contender once, in a fresh random order, so a burst of
load on a shared machine hits them alike); a contender's time is the minimum (or `--stat median`)
over rounds.
Below 1.00 the backend is faster than dense; speed-up = 1 / ratio. `train` = forward+backward
(input and weight both need gradients), `forward` = inference under no_grad.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

# Runs from a checkout without installing (python bench/kernels.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {  # name: (batch, in_features, out_features, what it is)
    "lenet": (128, 784, 300, "LeNet-300-100 first layer"),
    "lenet_hidden": (128, 300, 100, "LeNet-300-100 second layer"),
    "classifier": (128, 2048, 1000, "ResNet-50 classifier (fc)"),
    "square1024": (256, 1024, 1024, "1024x1024"),
    "square4096": (256, 4096, 4096, "4096x4096"),
}
SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98)
NOISY_SPREAD = 1.5  # median/min of the dense baseline above this: other load disturbed the measurement


def make_mask(out_features: int, in_features: int, sparsity: float, pattern: str, device, dtype,
              generator: torch.Generator) -> torch.Tensor:
    """A 0/1 mask with exactly round(sparsity * numel) zeros in the given pattern."""
    numel = out_features * in_features
    if pattern == "random":
        keep = numel - int(round(sparsity * numel))
        flat = torch.zeros(numel, dtype=dtype)
        flat[torch.randperm(numel, generator=generator)[:keep]] = 1
        return flat.view(out_features, in_features).to(device)
    if pattern == "block":
        from overparam.kernels.triton_kernels import tile_shape

        _, block_n, block_k = tile_shape(torch.device(device).type)
        tiles_n, tiles_k = -(-out_features // block_n), -(-in_features // block_k)
        tiles = make_mask(tiles_n, tiles_k, sparsity, "random", "cpu", dtype, generator)
        full = tiles.repeat_interleave(block_n, 0).repeat_interleave(block_k, 1)
        return full[:out_features, :in_features].contiguous().to(device)
    if pattern == "two_four":
        # two of every four along a row, then whole groups dropped to reach sparsities above 50%
        groups = torch.rand(out_features, in_features // 4, 4, generator=generator)
        keep = torch.zeros_like(groups).scatter_(2, groups.topk(2, dim=2).indices, 1.0)
        extra = max(0.0, (sparsity - 0.5) / 0.5)
        drop = torch.rand(out_features, in_features // 4, 1, generator=generator) < extra
        return (keep * ~drop).reshape(out_features, in_features).to(device=device, dtype=dtype)
    raise ValueError(f"unknown pattern {pattern!r}")


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_rounds(contenders: dict, rounds: int, device: str, min_seconds: float, stat: str) -> dict[str, float]:
    """Seconds per call of each contender: every round calls each once (after one warm-up call)."""
    for fn in contenders.values():
        fn()
    _synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    start = time.perf_counter()
    done = 0
    names = list(contenders)
    shuffler = random.Random(0)
    while done < rounds or (time.perf_counter() - start < min_seconds and done < 50 * rounds):
        # A fresh order each round: a contender timed right after one that used the same operands
        # finds them in cache, so none may always follow the same neighbour.
        order = shuffler.sample(names, len(names))
        for name in order:
            fn = contenders[name]
            _synchronize(device)
            tick = time.perf_counter()
            fn()
            _synchronize(device)
            times[name].append(time.perf_counter() - tick)
        done += 1
    reduce = min if stat == "min" else statistics.median
    result = {name: reduce(values) for name, values in times.items()}
    # How much the dense baseline wandered between rounds: a busy shared machine shows up here.
    result["spread"] = statistics.median(times["dense"]) / min(times["dense"])
    return result


def _train_step(fn, x, weight, bias, grad):
    def step():
        x.grad = weight.grad = bias.grad = None
        fn().backward(grad)
    return step


def bench_shape(name: str, args, backends: list[str]) -> list[dict]:
    """Rows {shape, sparsity, mode, backend, ratio, seconds} for one shape at every sparsity."""
    from overparam.kernels import masked_matmul

    batch, in_features, out_features, _ = SHAPES[name]
    dtype = getattr(torch, args.dtype)
    device = args.device
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_features, generator=generator).to(device=device, dtype=dtype)
    weight = (torch.randn(out_features, in_features, generator=generator) / math.sqrt(in_features)).to(device, dtype)
    bias = torch.zeros(out_features, device=device, dtype=dtype)
    grad = torch.randn(batch, out_features, generator=generator).to(device=device, dtype=dtype)
    rounds = args.repeats if batch * in_features * out_features < 1e9 else max(3, args.repeats // 3)
    rows = []
    from overparam.kernels.sparse import default_implementation

    for sparsity in args.sparsities:
        mask = make_mask(out_features, in_features, sparsity, args.pattern, device, dtype, generator)
        implementation = default_implementation(x, weight, mask)
        for mode in args.modes:
            if mode == "train":
                xs, ws, bs = (t.detach().clone().requires_grad_(True) for t in (x, weight, bias))
                contenders = {"dense": _train_step(lambda: F.linear(xs, ws, bs), xs, ws, bs, grad)}
                for backend in backends:
                    contenders[backend] = _train_step(
                        lambda backend=backend: masked_matmul(xs, ws, mask, bs, backend=backend), xs, ws, bs, grad)
                seconds = time_rounds(contenders, rounds, device, args.min_seconds, args.stat)
            else:
                with torch.no_grad():
                    contenders = {"dense": lambda: F.linear(x, weight, bias)}
                    for backend in backends:
                        contenders[backend] = lambda backend=backend: masked_matmul(x, weight, mask, bias,
                                                                                    backend=backend)
                    seconds = time_rounds(contenders, rounds, device, args.min_seconds, args.stat)
            for backend in backends:
                rows.append({"shape": name, "sparsity": sparsity, "mode": mode, "backend": backend,
                             "ratio": seconds[backend] / seconds["dense"], "seconds": seconds[backend],
                             "dense_seconds": seconds["dense"], "noisy": seconds["spread"] > NOISY_SPREAD,
                             "implementation": implementation})
    return rows


def crossover(rows: list[dict], shape: str, mode: str) -> float | None:
    """Sparsity from which `sparse` beats `torch` for good (log-linear between measured points)."""
    points = []
    for sparsity in sorted({r["sparsity"] for r in rows if r["shape"] == shape and r["mode"] == mode}):
        by_backend = {r["backend"]: r["seconds"] for r in rows
                      if r["shape"] == shape and r["mode"] == mode and r["sparsity"] == sparsity}
        if "sparse" in by_backend and "torch" in by_backend:
            points.append((sparsity, by_backend["sparse"] / by_backend["torch"]))
    if not points:
        return None
    from overparam.kernels.calibrate import crossover

    return crossover(points)


def write_crossover(rows: list[dict], args, path: Path) -> dict:
    """Merge this run's crossover points into `path` (entries for other devices/dtypes are kept)."""
    from overparam.kernels.dispatch import load_crossover

    data = json.loads(path.read_text()) if path.exists() else {}
    device_type = torch.device(args.device).type
    if args.pattern == "block":
        raise SystemExit("crossover points come from random (CSR) or two_four (2:4) masks, not --pattern block")
    new = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        batch, in_features, out_features, _ = SHAPES[shape]
        # the implementation `sparse` used at the highest measured sparsity (2:4 where it applied)
        implementation = [r["implementation"] for r in rows if r["shape"] == shape][-1]
        for mode in args.modes:
            ratios = {str(r["sparsity"]): round(r["seconds"] / next(
                q["seconds"] for q in rows if q["shape"] == shape and q["mode"] == mode
                and q["sparsity"] == r["sparsity"] and q["backend"] == "torch"), 4)
                for r in rows if r["shape"] == shape and r["mode"] == mode and r["backend"] == "sparse"}
            new.append({"device": device_type, "dtype": args.dtype, "implementation": implementation, "mode": mode,
                        "shape": shape, "batch": batch, "in_features": in_features, "out_features": out_features,
                        "sparse_from": crossover(rows, shape, mode), "sparse_over_torch": ratios})
    replaced = {(e["device"], e["dtype"], e["implementation"], e["mode"], e["shape"]) for e in new}
    kept = [e for e in data.get("entries", [])
            if (e["device"], e["dtype"], e["implementation"], e["mode"], e["shape"]) not in replaced]
    data = {
        "about": "Sparsity from which the `sparse` backend beats `torch` (sparse_from; null = never), per "
                 "device/dtype/implementation/mode and benchmarked shape; `auto` uses the nearest shape.",
        "command": " ".join(["python bench/kernels.py", *args.argv]),
        "measured_on": {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "entries": kept + new,
    }
    path.write_text(json.dumps(data, indent=1) + "\n")
    load_crossover.cache_clear()
    return data


def print_table(rows: list[dict], backends: list[str], modes: list[str]) -> None:
    for shape in dict.fromkeys(r["shape"] for r in rows):
        batch, in_features, out_features, what = SHAPES[shape]
        print(f"\n{what}: batch {batch}, {in_features} -> {out_features}   (time / dense F.linear time)")
        header = f"{'sparsity':>8} " + " ".join(f"{m + ':' + b:>16}" for m in modes for b in backends)
        header += " " + " ".join(f"{'dense ms ' + m:>16}" for m in modes)
        print(header)
        for sparsity in dict.fromkeys(r["sparsity"] for r in rows if r["shape"] == shape):
            cells, dense = [], []
            for mode in modes:
                for backend in backends:
                    row = next(r for r in rows if r["shape"] == shape and r["sparsity"] == sparsity
                               and r["mode"] == mode and r["backend"] == backend)
                    cells.append(f"{row['ratio']:>15.2f}{'*' if row['noisy'] else 'x'}")
                dense.append(f"{1e3 * row['dense_seconds']:>16.3f}")
            print(f"{sparsity:>8.2f} " + " ".join(cells) + " " + " ".join(dense))
        if any(r["noisy"] for r in rows if r["shape"] == shape):
            print(f"  * the dense baseline's median was over {NOISY_SPREAD}x its minimum: the machine was busy, "
                  "treat that cell with care (or rerun with --threads 1)")


def print_auto(rows: list[dict], args, data: dict | None = None) -> None:
    """What `auto` picks at each measured point (from `data`, default the package's crossover.json),
    against the faster of torch/sparse measured in this run."""
    from overparam.kernels.dispatch import sparse_threshold

    device_type = torch.device(args.device).type
    dtype = getattr(torch, args.dtype)
    print("\nauto (crossover data) vs the faster of torch/sparse measured in this run")
    print(f"{'shape':>11} {'mode':>8} {'sparsity':>8} {'auto picks':>10} {'faster here':>11} {'agree':>5}")
    agree = total = 0
    for shape in dict.fromkeys(r["shape"] for r in rows):
        batch, in_features, out_features, _ = SHAPES[shape]
        implementation = [r["implementation"] for r in rows if r["shape"] == shape][-1]
        for mode in args.modes:
            threshold = sparse_threshold(device_type, dtype, implementation, mode, batch, in_features, out_features,
                                         data=data)
            for sparsity in args.sparsities:
                seconds = {r["backend"]: r["seconds"] for r in rows if r["shape"] == shape and r["mode"] == mode
                           and r["sparsity"] == sparsity}
                picks = "sparse" if threshold is not None and sparsity >= threshold else "torch"
                faster = "sparse" if seconds["sparse"] < seconds["torch"] else "torch"
                agree += picks == faster
                total += 1
                print(f"{shape:>11} {mode:>8} {sparsity:>8.2f} {picks:>10} {faster:>11} {'yes' if picks == faster else 'NO':>5}")
    print(f"auto agrees with this run's faster backend at {agree}/{total} points")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument("--sparsities", default=",".join(map(str, SPARSITIES)))
    parser.add_argument("--backends", default=None, help="comma list (default: torch,sparse,auto on CPU; +triton on GPU)")
    parser.add_argument("--modes", default="train,forward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--pattern", default="random", choices=("random", "block", "two_four"))
    parser.add_argument("--repeats", type=int, default=15, help="rounds per measurement (a third for 4096x4096)")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="keep adding rounds until this much time")
    parser.add_argument("--stat", default="min", choices=("min", "median"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write-crossover", nargs="?", const="overparam/kernels/crossover.json", default=None,
                        metavar="PATH", help="rewrite the crossover data `auto` reads (default path in the package)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.sparsities = [float(s) for s in args.sparsities.split(",")]
    args.modes = args.modes.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    from overparam.kernels import backend_unavailable_reason

    device_type = torch.device(args.device).type
    if args.backends:
        backends = args.backends.split(",")
    else:
        backends = ["torch", "sparse", "auto"] + (["triton"] if device_type == "cuda" else [])
    for backend in backends:
        reason = backend_unavailable_reason(backend, device_type)
        if reason:
            raise SystemExit(f"backend {backend}: {reason}")
    if "triton" not in backends and device_type == "cpu":
        print("triton: not timed on CPU (it runs there only under the interpreter, a correctness tool)")
    print(f"torch {torch.__version__}, {args.device}, {args.dtype}, {torch.get_num_threads()} threads, "
          f"pattern {args.pattern}, stat {args.stat}")
    if "sparse" in backends and device_type == "cpu":
        from overparam.kernels import native

        print(f"sparse on CPU: {'compiled CSR kernels' if native.library() else 'torch.sparse (' + str(native.load_error()) + ')'}")
    start = time.perf_counter()
    rows = []
    for shape in args.shapes.split(","):
        if shape not in SHAPES:
            raise SystemExit(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
        rows += bench_shape(shape, args, backends)
        print_table([r for r in rows if r["shape"] == shape], backends, args.modes)
        sys.stdout.flush()
    data = None
    if args.write_crossover:
        path = Path(args.write_crossover)
        data = write_crossover(rows, args, path)
        print(f"\nwrote {path}")
    if "sparse" in backends and "torch" in backends and args.pattern == "random":
        print_auto(rows, args, data)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
