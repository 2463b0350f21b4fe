"""The runner's training step of model=gpt vs a minimal hand-written loop (not a test).

    python bench/lm.py                     # default gpt on the default text corpus, 2 threads
    python bench/lm.py --threads 1 --steps 100 --rounds 5

Same model (default model=gpt: width 64, 2 layers, blocks of 64 bytes), same data, batches, AdamW and
learning-rate schedule; evaluation is left out of both (one evaluation at the end of `fit` is
subtracted by timing it alone). The two are run in interleaved rounds (a fresh order each round); the
minimum over rounds is reported, with the ratio engine/minimal (goal: within 1.1x) and tokens per second.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from overparam.data.text import load  # noqa: E402
from overparam.engine import fit  # noqa: E402
from overparam.engine.evaluate import evaluate_splits  # noqa: E402
from overparam.engine.fit import epoch_order  # noqa: E402
from overparam.engine.optim import lr_at  # noqa: E402
from overparam.models.gpt import gpt  # noqa: E402

OPTIM = {"name": "adamw", "lr": 0.003, "betas": [0.9, 0.999], "weight_decay": 0.01, "schedule": "cosine",
         "warmup_steps": 0, "momentum": 0.9, "nesterov": False}


def minimal(model, data, steps: int, batch: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=OPTIM["lr"], betas=(0.9, 0.999), weight_decay=0.01)
    order = epoch_order(len(data.train_x), 0, 0)
    for step in range(steps):
        index = order[step * batch:(step + 1) * batch]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, OPTIM)
        logits = model(data.train_x[index])
        loss = F.cross_entropy(logits.flatten(0, 1), data.train_y[index].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load("unused", block_size=64)
    tokens = args.steps * args.batch * 64
    train = {"steps": args.steps, "epochs": None, "batch_size": args.batch, "eval_every": 10 ** 9}
    hardware = {"device": "cpu", "precision": "fp32", "threads": args.threads}

    def fresh():
        return gpt((64,), 256)

    def run_minimal():
        minimal(fresh(), data, args.steps, args.batch)

    def run_engine():
        fit(fresh(), data, None, train=train, optim=OPTIM, hardware=hardware, seed=0)

    def run_evaluation():  # fit evaluates at step 0 and at the end; the minimal loop does not
        model = fresh()
        evaluate_splits(model, data)
        evaluate_splits(model, data)

    contenders = {"minimal": run_minimal, "engine": run_engine, "evaluation": run_evaluation}
    times = {name: [] for name in contenders}
    shuffler = random.Random(0)
    for _ in range(args.rounds):
        names = list(contenders)
        shuffler.shuffle(names)
        for name in names:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    engine_steps = best["engine"] - best["evaluation"]
    from overparam import hardware

    spread = {name: f"{min(v):.2f}-{max(v):.2f}s" for name, v in times.items() if name != "evaluation"}
    print(hardware.describe_cpu(), "| load", open("/proc/loadavg").read().split()[0])
    print(f"spread over rounds: {spread}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps of {args.batch}x64 "
          f"tokens, min of {args.rounds} interleaved rounds")
    print(f"minimal loop {best['minimal']:.2f}s ({tokens / best['minimal']:,.0f} tokens/s)   "
          f"engine {engine_steps:.2f}s without its 2 evaluations ({tokens / engine_steps:,.0f} tokens/s)   "
          f"ratio x{engine_steps / best['minimal']:.3f}")


if __name__ == "__main__":
    main()
