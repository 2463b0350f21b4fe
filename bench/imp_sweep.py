"""IMP benchmarks: what the level cache saves in a sparsity sweep, and what the runner costs over a bare loop.

1. Wall time of `runner train -m method=imp sparsity=0.5,0.8,0.9` against `runner train method=imp
   sparsity=0.9` alone (two real CLI commands, fresh output folders). The sweep's jobs share their
   canonical levels, so it should cost little more than its largest job (target: <= 1.2x).
2. One IMP run (`method=imp sparsity=0.9`, in-process, checkpoints, metrics and level files included)
   against the same work in a minimal hand-written PyTorch loop: same model, data, batches, SGD and
   cosine schedule, per-epoch evaluation, layerwise-free global magnitude pruning at 20% per round
   to exactly 90%, rewinding to the initial weights (target: <= 1.15x).

    python bench/imp_sweep.py [--epochs 5] [--threads 1] [--repeats 1]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli_seconds(args: list[str], output_dir: Path) -> float:
    """Wall time of one `runner train ...` command."""
    command = [sys.executable, "-m", "overparam.cli.main", "train", *args, f"paths.output_dir={output_dir}",
               f"hydra.run.dir={output_dir}/run", f"hydra.sweep.dir={output_dir}/sweep"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def hand_written_imp(epochs: int, threads: int, sparsity: float = 0.9, rate: float = 0.2) -> float:
    """Seconds of a minimal IMP loop doing the runner's work (no checkpoints, no files)."""
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked
    from overparam.data import load_dataset
    from overparam.engine.fit import epoch_order
    from overparam.models import build_model

    cfg = OmegaConf.create(compose_checked([]))
    torch.set_num_threads(threads)
    data = load_dataset(cfg.dataset, cfg.paths.data_dir, seed=0)
    start = time.perf_counter()
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    masks = [torch.ones_like(w) for w in weights]
    total = sum(w.numel() for w in weights)
    target = math.floor(total * (1 - sparsity) + 0.5)
    counts, level = [total], 0
    while counts[-1] > target:
        level += 1
        counts.append(max(target, min(counts[-1] - 1, math.floor(total * (1 - rate) ** level + 0.5))))
    n, batch = len(data.train_x), 128
    per_epoch = math.ceil(n / batch)
    steps = epochs * per_epoch
    for keep in counts:
        if keep < total:  # prune the trained weights by global magnitude, then rewind to init
            scores = torch.cat([(w.detach().abs() * m).flatten() for w, m in zip(weights, masks)])
            flat = torch.zeros_like(scores)
            flat[torch.argsort(scores, descending=True, stable=True)[:keep]] = 1
            offset = 0
            for index, w in enumerate(weights):
                masks[index] = flat[offset:offset + w.numel()].view_as(w)
                offset += w.numel()
            model.load_state_dict(init)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        for step in range(steps):
            epoch, position = divmod(step, per_epoch)
            if position == 0:
                order = epoch_order(n, 0, epoch)
            index = order[position * batch:(position + 1) * batch]
            for group in optimizer.param_groups:
                group["lr"] = 0.1 * 0.5 * (1 + math.cos(math.pi * step / steps))
            with torch.no_grad():
                for w, m in zip(weights, masks):
                    w.mul_(m)
            loss = F.cross_entropy(model(data.train_x[index]), data.train_y[index])
            optimizer.zero_grad()
            loss.backward()
            for w, m in zip(weights, masks):
                w.grad.mul_(m)
            optimizer.step()
            if (step + 1) % per_epoch == 0:
                with torch.no_grad():
                    for x, y in ((data.val_x, data.val_y), (data.test_x, data.test_y)):
                        F.cross_entropy(model(x), y)
    return time.perf_counter() - start


def runner_imp(epochs: int, threads: int, folder: Path) -> float:
    """Seconds of `method=imp sparsity=0.9` run in-process (data loading excluded, as in the loop)."""
    from overparam.cli.train import train_in_process

    start = time.perf_counter()
    train_in_process(["method=imp", "sparsity=0.9", f"train.epochs={epochs}", f"hardware.threads={threads}",
                      f"paths.output_dir={folder}"], folder / "imp")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per level (default 5; the runner's default is 20)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="take the fastest of this many repeats")
    args = parser.parse_args()
    os.environ.setdefault("OVERPARAM_DATA_DIR", os.path.join(tempfile.gettempdir(), "opdata"))
    common = [f"train.epochs={args.epochs}", f"hardware.threads={args.threads}", "method=imp"]

    # One-time costs of a process (importing torch, Hydra, the recipes; `hardware.deterministic`, the
    # default, imports torch._dynamo) are paid before the in-process timings, so both sides of the
    # second ratio run warm and under the same deterministic settings.
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked
    from overparam.engine import setup_hardware

    setup_hardware(OmegaConf.create(compose_checked(["method=imp"])).hardware)

    single, sweep, loop, runner = [], [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            single.append(cli_seconds([*common, "sparsity=0.9"], Path(tmp) / "single"))
            sweep.append(cli_seconds(["-m", *common, "sparsity=0.5,0.8,0.9"], Path(tmp) / "sweep"))
            runner.append(runner_imp(args.epochs, args.threads, Path(tmp) / "inproc"))
        loop.append(hand_written_imp(args.epochs, args.threads))
    print(f"imp sweep (epochs/level={args.epochs}, threads={args.threads}, best of {args.repeats})")
    print(f"  runner train method=imp sparsity=0.9           {min(single):8.2f} s")
    print(f"  runner train -m method=imp sparsity=0.5,0.8,0.9 {min(sweep):8.2f} s")
    print(f"  sweep / single = {min(sweep) / min(single):.3f}x   (target <= 1.2x)")
    print(f"  IMP to 0.9 through the runner (in-process)     {min(runner):8.2f} s")
    print(f"  the same work in a hand-written loop           {min(loop):8.2f} s")
    print(f"  runner / hand-written = {min(runner) / min(loop):.3f}x   (target <= 1.15x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
