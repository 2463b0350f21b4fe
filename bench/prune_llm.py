"""Time to prune with SparseGPT and Wanda: overparam's implementation vs a direct transcription of the reference
code (tests/prune/oneshot_reference.py: IST-DASLab/sparsegpt `fasterprune`, locuslab/wanda `prune_wanda`) on the
same layers (not a test).

    python bench/prune_llm.py                          # layers 512x512, 2048x512, 512x2048; a 2-block gpt
    python bench/prune_llm.py --threads 2 --rounds 5 --device cuda

Per layer: the reconstruction / mask of one Linear from the same Hessian (or input norms), unstructured 50% and
2:4. In total: a gpt of `--blocks` blocks (width `--width`) pruned end to end from `--samples` calibration
sequences, by `layerwise.run_layerwise` vs the reference's loop (their per-block hooks, `add_batch`,
`fasterprune`, recomputed block outputs), transcribed onto the same blocks. Variants run in interleaved rounds
(a fresh order each round); the minimum over rounds (and the spread) is printed with the ratio
overparam/reference of the minima and of the medians (goal: within 1.2x). On a machine shared with other
work, one thread (the default) is the fair setting: two threads per tiny column update slow both ~10x. Peak memory: each end-to-end variant once more in a subprocess of its
own, its peak resident set size (CPU) or torch.cuda.max_memory_allocated (GPU), and that peak less what the
process held once the model and calibration set were built. The end-to-end reference feeds one sequence at a
time through each block, as their loop does; the driver feeds 16 (the same sums, fewer, larger matmuls).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "prune"))

from oneshot_reference import SparseGPTReference, WrappedGPT, wanda_mask  # noqa: E402

from overparam.models.gpt import gpt  # noqa: E402
from overparam.recipes.prune.sparsegpt import SparseGPT  # noqa: E402
from overparam.recipes.prune.wanda import SquaredNorms, Wanda  # noqa: E402
from overparam.recipes.shared.layerwise import run_layerwise  # noqa: E402
from overparam.recipes.shared.obs import Hessian, fasterprune  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def layer_cases(device: str, tokens: int, args_shapes):
    """(label, linear, calibration inputs) for the per-layer timings."""
    generator = torch.Generator().manual_seed(0)
    cases = []
    for rows, columns in args_shapes:
        layer = nn.Linear(columns, rows, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(rows, columns, generator=generator) * 0.02)
        x = torch.randn(1, tokens, columns, generator=generator) @ \
            (torch.eye(columns) + 0.1 * torch.randn(columns, columns, generator=generator))
        cases.append((f"{rows}x{columns}", layer.to(device), x.to(device)))
    return cases


def time_it(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def per_layer(args) -> list[dict]:
    results = []
    for label, layer, x in layer_cases(args.device, args.tokens, args.shapes):
        reference = SparseGPTReference(layer)
        reference.add_batch(x)
        hessian = reference.H.clone()
        ours_norms, their_norms = SquaredNorms(x.shape[-1], device=args.device), WrappedGPT(layer)
        ours_norms.add_batch(x)
        their_norms.add_batch(x, None)
        weight = layer.weight.data.clone()
        for pattern, (n, m) in (("50%", (0, 0)), ("2:4", (2, 4))):
            def ours_sparsegpt():
                fasterprune(weight, hessian, 0.5, prunen=m - n, prunem=m)

            def reference_sparsegpt():
                reference.layer.weight.data = weight.clone()
                reference.H = hessian.clone()
                reference.fasterprune(0.5, prunen=m - n, prunem=m)

            def ours_wanda():
                Wanda(0.5, (n, m) if n else None).prune("layer", layer, weight, ours_norms)

            def reference_wanda():
                wanda_mask(weight, their_norms.scaler_row, 0.5, prune_n=m - n if n else 0, prune_m=m)

            for method, ours, theirs in (("sparsegpt", ours_sparsegpt, reference_sparsegpt),
                                         ("wanda", ours_wanda, reference_wanda)):
                results.append(compare(f"{method} {pattern} {label}", ours, theirs, args))
                show(results[-1])
    return results


def compare(label: str, ours, theirs, args) -> dict:
    times = {"ours": [], "reference": []}
    variants = [("ours", ours), ("reference", theirs)]
    ours(), theirs()  # warm-up
    for _ in range(args.rounds):
        random.shuffle(variants)
        for name, fn in variants:
            times[name].append(time_it(fn, args.device))
    row = {"case": label, **{f"{k}_min_s": min(v) for k, v in times.items()},
           **{f"{k}_median_s": statistics.median(v) for k, v in times.items()},
           **{f"{k}_spread_s": (min(v), max(v)) for k, v in times.items()}}
    row["ratio"] = row["ours_min_s"] / row["reference_min_s"]
    row["median_ratio"] = row["ours_median_s"] / row["reference_median_s"]
    return row


def model_and_calibration(args):
    torch.manual_seed(0)
    model = gpt((args.seq_len,), 256, width=args.width, heads=4, layers=args.blocks).to(args.device).eval()
    calibration = torch.randint(0, 256, (args.samples, args.seq_len), device=args.device)
    return model, calibration


@torch.no_grad()
def reference_sequential(model, calibration) -> None:
    """Their prune_sparsegpt loop on our gpt's blocks: catch block 0's inputs, then per block hooks, add_batch
    one sequence at a time, fasterprune every Linear, recompute the block's outputs."""
    inps = []
    h = model.drop(model.token(calibration) + model.position(torch.arange(calibration.shape[1],
                                                                            device=calibration.device)))
    inps = [h[j:j + 1] for j in range(len(h))]
    for block in model.blocks:
        subset = {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}
        gpts = {name: SparseGPTReference(m) for name, m in subset.items()}
        handles = [m.register_forward_hook(lambda _m, inp, out, name=name: gpts[name].add_batch(inp[0].data))
                   for name, m in subset.items()]
        for j in range(len(inps)):
            block(inps[j])
        for handle in handles:
            handle.remove()
        for name in subset:
            gpts[name].fasterprune(0.5, blocksize=128, percdamp=0.01)
        inps = [block(inps[j]) for j in range(len(inps))]


def total(args) -> dict:
    def ours():
        model, calibration = model_and_calibration(args)
        run_layerwise(model, calibration, SparseGPT(0.5, None), batch_size=16)

    def theirs():
        model, calibration = model_and_calibration(args)
        reference_sequential(model, calibration)

    return compare(f"sparsegpt 50% gpt width {args.width}, {args.blocks} blocks, {args.samples}x{args.seq_len}",
                   ours, theirs, args)


def resident_mib() -> float:
    """This process's resident set size now (Linux), MiB."""
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_memory(args, variant: str) -> dict:
    """{peak_mib, before_mib}: one end-to-end prune in a fresh process (peak, and what it held before pruning)."""
    command = [sys.executable, __file__, "--memory", variant, "--threads", str(args.threads), "--device",
               args.device, "--width", str(args.width), "--blocks", str(args.blocks), "--samples",
               str(args.samples), "--seq-len", str(args.seq_len)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def show(row: dict) -> None:
    print(f"{row['case']:58s} {row['ours_min_s']:9.4f} {row['reference_min_s']:9.4f} {row['ratio']:6.2f} "
          f"{row['median_ratio']:6.2f}   {row['ours_spread_s'][0]:.4f}-{row['ours_spread_s'][1]:.4f} | "
          f"{row['reference_spread_s'][0]:.4f}-{row['reference_spread_s'][1]:.4f}", flush=True)


def shape(text: str) -> tuple[int, int]:
    rows, columns = text.lower().split("x")
    return int(rows), int(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    # One thread: on a shared, loaded machine two threads per tiny column update make SparseGPT ~10x slower.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", type=shape, nargs="+", default=[(512, 512), (2048, 512), (512, 2048)],
                        help="per-layer cases, rows x columns (e.g. 4096x4096 11008x4096 on a GPU)")
    parser.add_argument("--tokens", type=int, default=2048, help="calibration tokens of the per-layer cases")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--memory", choices=("ours", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-layers", action="store_true", help="only the end-to-end timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory:
        model, calibration = model_and_calibration(args)
        before = resident_mib()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 2 ** 20
        if args.memory == "ours":
            run_layerwise(model, calibration, SparseGPT(0.5, None), batch_size=16)
        else:
            reference_sequential(model, calibration)
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if args.device.startswith("cuda") else \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_mib": peak, "before_mib": before}))
        return
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"device: {name}; rounds: {args.rounds}; torch {torch.__version__}", flush=True)
    print(f"{'case (min over rounds; ratio of minima, of medians)':58s} {'ours s':>9s} {'ref s':>9s} {'ratio':>6s} "
          f"{'median':>6s}   spread ours | ref", flush=True)
    rows = [] if args.skip_layers else per_layer(args)
    rows.append(total(args))
    show(rows[-1])
    layers = args.blocks * 6
    print(f"end to end: {rows[-1]['ours_min_s'] / layers:.4f} s per layer (ours), "
          f"{rows[-1]['reference_min_s'] / layers:.4f} (reference), {layers} layers")
    for variant in ("ours", "reference"):
        memory = peak_memory(args, variant)
        print(f"peak memory of {variant}, end to end, in a process of its own: {memory['peak_mib']:.0f} MiB, "
              f"{memory['peak_mib'] - memory['before_mib']:.0f} MiB above what it held before pruning")


if __name__ == "__main__":
    main()
