"""Engine vs a minimal hand-written PyTorch loop: same model, data, batches, optimizer, evaluations.

    python bench/train_loop.py            # default model (mlp on mnist1d) and LeNet-300-100 on MNIST-sized data
    python bench/train_loop.py --repeats 5

Prints seconds for each and the ratio engine/minimal (target <= 1.15). The engine is timed twice:
bare (`run=None`) and as `runner train` uses it (metrics.jsonl and resume checkpoints written).

    python bench/train_loop.py --fresh --rounds 5     # each side in its own fresh process

`--fresh`: the minimal loop in a process with PyTorch's own defaults (no OpenMP variables, one
thread per core) against the engine in a process started as `runner train` starts
(`hardware.openmp_defaults()` before torch, the CPU default's thread count), LeNet-300-100 on
MNIST-shaped data (4,000 train / 1,000 test, batch 128, the SGD of OPTIM); rounds interleaved in a fresh
order, ratio per round, median and range printed with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "--child=engine" in sys.argv:  # as the CLI does, before the OpenMP runtime loads with torch
    sys.path.insert(0, str(ROOT))
    from overparam.hardware import openmp_defaults

    openmp_defaults()

import torch
import torch.nn.functional as F

from overparam.data import DataBundle, load_dataset
from overparam.engine import fit
from overparam.engine.fit import epoch_order
from overparam.engine.optim import lr_at
from overparam.models import build_model
from overparam.store import Run

OPTIM = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
         "schedule": "cosine", "warmup_steps": 0}
HARDWARE = {"device": "cpu", "precision": "fp32"}


def minimal_loop(model, data: DataBundle, epochs: int, batch_size: int, seed: int) -> float:
    """The same training written as plainly as possible; returns the final test accuracy."""
    optimizer = torch.optim.SGD(model.parameters(), lr=OPTIM["lr"], momentum=0.9, weight_decay=5e-4)
    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch

    def evaluate():
        model.eval()
        with torch.no_grad():
            for x, y in ((data.val_x, data.val_y), (data.test_x, data.test_y)):
                logits = model(x)
                F.cross_entropy(logits, y)
                accuracy = (logits.argmax(1) == y).float().mean().item()
        model.train()
        return accuracy

    evaluate()
    step = 0
    for epoch in range(epochs):
        order = epoch_order(n, seed, epoch)
        for position in range(steps_per_epoch):
            index = order[position * batch_size:(position + 1) * batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, OPTIM)
            loss = F.cross_entropy(model(data.train_x[index]), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        accuracy = evaluate()
    return accuracy


def time_pair(name, model_cfg, data, epochs, batch_size, repeats):
    """Median seconds of minimal loop, bare engine and engine with a run directory."""
    train = {"epochs": epochs, "steps": None, "batch_size": batch_size, "eval_every_epochs": 1}
    times = {"minimal": [], "engine": [], "engine+run": []}
    for repeat in range(repeats):
        for kind in times:
            model = build_model(model_cfg, data.input_shape, data.num_classes, seed=0)
            start = time.perf_counter()
            if kind == "minimal":
                minimal_loop(model, data, epochs, batch_size, seed=0)
            elif kind == "engine":
                fit(model, data, None, train=train, optim=OPTIM, hardware=HARDWARE, seed=0)
            else:
                with tempfile.TemporaryDirectory() as folder:
                    run = Run(folder, {"bench": name, "repeat": repeat}).start()
                    fit(model, data, run, train=train, optim=OPTIM, hardware=HARDWARE, seed=0)
                    run.finish("done")
            times[kind].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"{name:<34} minimal {medians['minimal']:7.2f}s   engine {medians['engine']:7.2f}s "
          f"(x{medians['engine'] / medians['minimal']:.3f})   engine+run dir {medians['engine+run']:7.2f}s "
          f"(x{medians['engine+run'] / medians['minimal']:.3f})")
    return medians


OPENMP_KEYS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def lenet_mnist_shaped(train: int = 4000, test: int = 1000) -> DataBundle:
    generator = torch.Generator().manual_seed(0)
    images = lambda n: torch.rand(n, 1, 28, 28, generator=generator)  # noqa: E731
    labels = lambda n: torch.randint(0, 10, (n,), generator=generator)  # noqa: E731
    return DataBundle(name="mnist-shaped", num_classes=10, train_x=images(train), train_y=labels(train),
                      val_x=images(test), val_y=labels(test), test_x=images(test), test_y=labels(test))


def child(kind: str, epochs: int) -> None:
    """One side of `--fresh`: prints {"seconds", "threads"} as JSON."""
    from omegaconf import OmegaConf

    data = lenet_mnist_shaped()
    lenet = OmegaConf.create({"_target_": "overparam.models.zoo.mlp", "widths": [300, 100]})
    model = build_model(lenet, data.input_shape, data.num_classes, seed=0)
    start = time.perf_counter()
    if kind == "minimal":
        minimal_loop(model, data, epochs, 128, seed=0)
    else:
        train = {"epochs": epochs, "steps": None, "batch_size": 128, "eval_every_epochs": 1}
        fit(model, data, None, train=train, optim=OPTIM, hardware=dict(HARDWARE, deterministic=True), seed=0)
    print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))


def fresh(rounds: int, epochs: int) -> None:
    """Engine (as `runner train` starts) vs minimal loop (PyTorch's defaults), each in fresh processes."""
    from overparam.hardware import describe_cpu

    env = {k: v for k, v in os.environ.items() if k not in OPENMP_KEYS}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    times = {"minimal": [], "engine": []}
    threads = {}
    shuffler = random.Random(0)
    load_before = open("/proc/loadavg").read().split()[0]
    for _ in range(rounds):
        for kind in shuffler.sample(list(times), 2):
            out = subprocess.run([sys.executable, __file__, f"--child={kind}", f"--epochs={epochs}"], env=env,
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            times[kind].append(result["seconds"])
            threads[kind] = result["threads"]
    ratios = [e / m for e, m in zip(times["engine"], times["minimal"])]
    print(describe_cpu())
    print(f"LeNet-300-100, MNIST-shaped 4k/1k, batch 128, {epochs} epochs; {rounds} interleaved rounds; "
          f"load {load_before}/{open('/proc/loadavg').read().split()[0]}")
    for kind, values in times.items():
        print(f"  {kind:<8} {threads[kind]} threads  median {statistics.median(values):6.2f}s  "
              f"range {min(values):.2f}-{max(values):.2f}s")
    print(f"  engine/minimal per round: median x{statistics.median(ratios):.2f}, "
          f"range x{min(ratios):.2f}-x{max(ratios):.2f} (goal <= 1.05)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--fresh", action="store_true", help="engine vs minimal loop in fresh processes")
    parser.add_argument("--rounds", type=int, default=3, help="with --fresh")
    parser.add_argument("--child", choices=("minimal", "engine"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.epochs)
    if args.fresh:
        return fresh(args.rounds, args.epochs)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats}")
    from omegaconf import OmegaConf

    mnist1d = load_dataset(OmegaConf.create({"_target_": "overparam.data.mnist1d.load", "val_fraction": 0.1}),
                           data_dir=tempfile.gettempdir() + "/overparam-bench-data")
    mlp = OmegaConf.create({"_target_": "overparam.models.zoo.mlp", "widths": [256, 256]})
    time_pair("mlp 256-256 / mnist1d (default)", mlp, mnist1d, args.epochs * 4, 128, args.repeats)
    # MNIST-sized data (60k train 28x28, 10k test) with random pixels: the loop cost, not the accuracy.
    generator = torch.Generator().manual_seed(0)
    mnist_sized = DataBundle(
        name="mnist-sized", num_classes=10,
        train_x=torch.rand(54000, 1, 28, 28, generator=generator), train_y=torch.randint(0, 10, (54000,), generator=generator),
        val_x=torch.rand(6000, 1, 28, 28, generator=generator), val_y=torch.randint(0, 10, (6000,), generator=generator),
        test_x=torch.rand(10000, 1, 28, 28, generator=generator), test_y=torch.randint(0, 10, (10000,), generator=generator),
    )
    lenet = OmegaConf.create({"_target_": "overparam.models.zoo.mlp", "widths": [300, 100]})
    time_pair("lenet300_100 / MNIST-sized", lenet, mnist_sized, args.epochs, 60, args.repeats)


if __name__ == "__main__":
    main()
