"""Sparse convolution benchmark: masked conv layers and whole training steps, sparse vs dense (not a test).

    python bench/conv_sparse.py                         # conv4 + resnet20 layers and steps, 1 thread
    python bench/conv_sparse.py --part layers --threads 2
    python bench/conv_sparse.py --write-crossover       # also add the conv entries to overparam/kernels/crossover.json

Per layer: one training step of the layer (forward + backward for input and weight) or a forward
under no_grad, each backend's time divided by dense F.conv2d's, measured in the same process in
interleaved rounds (a fresh order each round), minimum over rounds; `spread` = median/min of the
dense baseline (above 1.5 the machine was busy). Per training step: a whole model (conv4 on
32x32x3 at batch 60, resnet20 at batch 64) sparsified with every conv/linear layer at the given
sparsity, one SGD step with hardware.kernel=torch vs sparse vs auto, ratio to a dense model.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name: (batch, in_channels, out_channels, size, kernel, stride, padding)
LAYERS = {
    "conv4.conv1": (60, 3, 64, 32, 3, 1, 1),
    "conv4.conv2": (60, 64, 64, 32, 3, 1, 1),
    "conv4.conv3": (60, 64, 128, 16, 3, 1, 1),
    "conv4.conv4": (60, 128, 128, 16, 3, 1, 1),
    "resnet20.s1": (64, 16, 16, 32, 3, 1, 1),
    "resnet20.s2": (64, 32, 32, 16, 3, 1, 1),
    "resnet20.s3": (64, 64, 64, 8, 3, 1, 1),
    "resnet20.down3": (64, 32, 64, 16, 3, 2, 1),
}
SPARSITIES = (0.0, 0.5, 0.9, 0.95, 0.98)


def time_rounds(contenders: dict, rounds: int) -> dict[str, float]:
    for fn in contenders.values():
        fn()
    times = {name: [] for name in contenders}
    shuffler = random.Random(0)
    for _ in range(rounds):
        for name in shuffler.sample(list(contenders), len(contenders)):
            tick = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - tick)
    result = {name: min(values) for name, values in times.items()}
    result["spread"] = statistics.median(times["dense"]) / min(times["dense"])
    return result


def random_mask(shape, sparsity: float, generator) -> torch.Tensor:
    numel = math.prod(shape)
    flat = torch.zeros(numel)
    flat[torch.randperm(numel, generator=generator)[:numel - int(round(sparsity * numel))]] = 1
    return flat.view(shape)


def bench_layers(args) -> list[dict]:
    from overparam.kernels.conv import masked_conv

    rows = []
    generator = torch.Generator().manual_seed(0)
    for name, (batch, cin, cout, size, kernel, stride, padding) in LAYERS.items():
        x = torch.randn(batch, cin, size, size, generator=generator)
        weight = torch.randn(cout, cin, kernel, kernel, generator=generator) / math.sqrt(cin * kernel * kernel)
        for sparsity in args.sparsities:
            mask = random_mask(weight.shape, sparsity, generator)
            for mode in ("train", "forward"):
                xs, ws = x.clone().requires_grad_(mode == "train"), weight.clone().requires_grad_(mode == "train")
                calls = {"dense": lambda: F.conv2d(xs, ws, None, stride, padding)}
                for backend in ("torch", "sparse", "auto"):
                    calls[backend] = (lambda backend=backend: masked_conv(xs, ws, mask, None, stride, padding, 1, 1,
                                                                          backend=backend))
                if mode == "train":
                    def step(fn):
                        def call():
                            xs.grad = ws.grad = None
                            fn().sum().backward()
                        return call
                    contenders = {k: step(fn) for k, fn in calls.items()}
                    seconds = time_rounds(contenders, args.rounds)
                else:
                    with torch.no_grad():
                        seconds = time_rounds(calls, args.rounds)
                rows.append({"layer": name, "sparsity": sparsity, "mode": mode, **seconds})
    return rows


def print_layers(rows: list[dict]) -> None:
    print(f"\nper layer: time / dense F.conv2d time (min of rounds; * = dense spread > 1.5, busy machine)")
    print(f"{'layer':<16} {'sparsity':>8} {'mode':>7} {'torch':>7} {'sparse':>7} {'auto':>7} {'dense ms':>9} "
          f"{'spread':>6}")
    for row in rows:
        mark = "*" if row["spread"] > 1.5 else " "
        print(f"{row['layer']:<16} {row['sparsity']:>8.2f} {row['mode']:>7} {row['torch'] / row['dense']:>7.2f} "
              f"{row['sparse'] / row['dense']:>7.2f} {row['auto'] / row['dense']:>7.2f} {1e3 * row['dense']:>9.2f} "
              f"{row['spread']:>5.2f}{mark}")


def _model(name: str):
    from overparam.models.conv import conv4
    from overparam.models.resnet import resnet20

    torch.manual_seed(0)
    if name == "conv4":
        return conv4((3, 32, 32), 10), 60
    return resnet20((3, 32, 32), 10), 64


def bench_steps(args) -> list[dict]:
    from overparam import kernels
    from overparam.models.masked import apply_masks, masks_of, sparsify

    rows = []
    for name in ("conv4", "resnet20"):
        dense, batch = _model(name)
        x = torch.randn(batch, 3, 32, 32)
        y = torch.randint(0, 10, (batch,))
        for sparsity in args.sparsities:
            masked, _ = _model(name)
            sparsify(masked)
            generator = torch.Generator().manual_seed(1)
            apply_masks(masked, {key: random_mask(mask.shape, sparsity, generator)
                                 for key, mask in masks_of(masked).items()})

            def step(model, backend=None):
                optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

                def call():
                    if backend is not None:
                        kernels.set_default_backend(backend)
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()
                return call
            contenders = {"dense": step(dense, "torch"), "torch": step(masked, "torch"),
                          "sparse": step(masked, "sparse"), "auto": step(masked, "auto")}
            seconds = time_rounds(contenders, args.step_rounds)
            rows.append({"model": name, "batch": batch, "sparsity": sparsity, **seconds})
    return rows


def print_steps(rows: list[dict]) -> None:
    print(f"\nper training step (SGD, whole model, every conv/linear layer at the sparsity): time / dense model's")
    print(f"{'model':<9} {'batch':>5} {'sparsity':>8} {'torch':>7} {'sparse':>7} {'auto':>7} {'dense ms':>9} "
          f"{'spread':>6}")
    for row in rows:
        mark = "*" if row["spread"] > 1.5 else " "
        print(f"{row['model']:<9} {row['batch']:>5} {row['sparsity']:>8.2f} {row['torch'] / row['dense']:>7.2f} "
              f"{row['sparse'] / row['dense']:>7.2f} {row['auto'] / row['dense']:>7.2f} {1e3 * row['dense']:>9.1f} "
              f"{row['spread']:>5.2f}{mark}")


def write_crossover(rows: list[dict], path: Path) -> None:
    """Add conv entries (train and forward, per layer) to the shipped crossover file."""
    from overparam.kernels import native
    from overparam.kernels.calibrate import crossover

    implementation = "native" if native.library() is not None else "torch_sparse"
    data = json.loads(path.read_text())
    new = []
    for layer, (batch, cin, cout, size, kernel, stride, padding) in LAYERS.items():
        out_size = (size + 2 * padding - kernel) // stride + 1
        for mode in ("train", "forward"):
            points = [(r["sparsity"], r["sparse"] / r["torch"]) for r in rows
                      if r["layer"] == layer and r["mode"] == mode and r["sparsity"] > 0]
            new.append({"op": "conv", "device": "cpu", "dtype": "float32", "implementation": implementation,
                        "mode": mode, "shape": layer, "batch": batch * out_size * out_size,
                        "in_features": cin * kernel * kernel, "out_features": cout,
                        "sparse_from": crossover(points), "sparse_over_torch": {str(s): round(r, 4) for s, r in points}})
    keys = {(e["shape"], e["mode"], e["implementation"]) for e in new}
    data["entries"] = [e for e in data["entries"] if (e["shape"], e["mode"], e["implementation"]) not in keys] + new
    path.write_text(json.dumps(data, indent=1) + "\n")
    from overparam.kernels.dispatch import load_crossover

    load_crossover.cache_clear()   # the per-step part below decides from what was just written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("layers", "steps", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step-rounds", type=int, default=3)
    parser.add_argument("--sparsities", type=lambda s: tuple(float(v) for v in s.split(",")), default=SPARSITIES)
    parser.add_argument("--write-crossover", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, load average at start {' '.join(load)}")
    if args.part in ("layers", "all"):
        rows = bench_layers(args)
        print_layers(rows)
        if args.write_crossover:
            write_crossover(rows, Path(__file__).resolve().parents[1] / "overparam" / "kernels" / "crossover.json")
            print("wrote the conv entries of overparam/kernels/crossover.json")
    if args.part in ("steps", "all"):
        print_steps(bench_steps(args))
    with open("/proc/loadavg") as handle:
        print(f"load average at end {' '.join(handle.read().split()[:3])}")


if __name__ == "__main__":
    main()
