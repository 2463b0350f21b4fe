"""Inference time of a GPT with blocks removed (method=layer_drop) against the full model (not a test).

    python bench/layer_drop.py                         # width 64, 6 blocks, blocks of 64 tokens, 2 threads
    python bench/layer_drop.py --run outputs/drop2 --full outputs/dense6   # two finished runs instead
    python bench/layer_drop.py --layers 12 --width 128 --threads 1 --rounds 15

The full model and copies with 1..k of its blocks removed (`keep_blocks`, what layer_drop saves) run the
same batch of test tokens in eval mode, forward only, in interleaved rounds (a fresh random order each
round). Reported: the median forward time of each and its ratio to the full model's (with the spread over
rounds, lowest to highest ratio), and the ratio of their block counts, which the time ratio approaches when
the embeddings and the output head are a small part of the work.

Measured (1 thread, 16x64 tokens, 21 rounds, a shared 2-core CPU at load 6-7, so single rounds spread widely):
time ratio 0.822 / 0.686 / 0.514 / 0.358 with 1 / 2 / 3 / 4 of 6 blocks removed (block ratio 0.833 / 0.667 /
0.500 / 0.333); the llm_layer_drop FinerCut run with 8 sublayers removed (3 blocks and 2 attentions) 0.427.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from overparam.models.blocks import decoder_blocks, keep_blocks  # noqa: E402
from overparam.models.gpt import gpt  # noqa: E402


def _time(model, x, repeats: int) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        return (time.perf_counter() - start) / repeats


def _models(args) -> dict[str, torch.nn.Module]:
    if args.run:
        from overparam.store.load import load_run_model

        full = load_run_model(args.full)[0].eval()
        return {"full": full, "dropped": load_run_model(args.run)[0].eval()}
    torch.manual_seed(0)
    full = gpt((args.block,), 256, width=args.width, heads=args.heads, layers=args.layers).eval()
    models = {"full": full}
    for k in range(1, args.drop + 1):
        models[f"-{k}"] = keep_blocks(copy.deepcopy(full), list(range(args.layers - k)))
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--drop", type=int, default=3, help="compare copies with 1..drop blocks removed")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=5, help="forward passes per timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", help="a finished layer_drop run (with --full: the run it started from)")
    parser.add_argument("--full")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = _models(args)
    x = torch.randint(0, 256, (args.batch, args.block), generator=torch.Generator().manual_seed(1))
    for model in models.values():  # warm-up
        _time(model, x, 1)
    times: dict[str, list[float]] = {name: [] for name in models}
    ratios: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for round_index in range(args.rounds):
        random.Random(round_index).shuffle(order)
        measured = {name: _time(models[name], x, args.repeats) for name in order}
        for name, seconds in measured.items():
            times[name].append(seconds)
            ratios[name].append(seconds / measured["full"])
    full_blocks = len(decoder_blocks(models["full"]))
    print(f"forward of {args.batch}x{args.block} tokens, {args.threads} threads, {args.rounds} interleaved rounds "
          f"of {args.repeats} passes; median time, ratio to the full model (median, min-max over rounds)")
    for name in models:
        blocks = len(decoder_blocks(models[name]))
        params = sum(p.numel() for p in models[name].parameters())
        print(f"  {name:>8}: {blocks} blocks, {params:,} parameters, {statistics.median(times[name]) * 1e3:7.2f} ms, "
              f"ratio {statistics.median(ratios[name]):.3f} ({min(ratios[name]):.3f}-{max(ratios[name]):.3f}), "
              f"block ratio {blocks / full_blocks:.3f}")


if __name__ == "__main__":
    main()
