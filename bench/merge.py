"""Merge benchmarks: a uniform soup's peak memory and time for 16 ingredients vs 2, and weight matching time.

    python bench/merge.py [--soup-width 2048] [--match-width 1024] [--depth 3] [--ingredients 16]

The soup streams its ingredients, so its peak memory should barely grow with their number (ratio near
1); each soup runs in a fresh process (peak RSS is per process) against a baseline process that does
everything but the merge. Weight matching aligns two independently initialized depth x width MLPs.
Ingredients are random-weight runs written straight into a temporary folder (no training).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, out, refs = sys.argv[1], sys.argv[2], sys.argv[3:]
from overparam.cli.train import train_in_process
import torch
from overparam.store.load import load_run_model
load_run_model(refs[0])  # imports, dataset and one model: the baseline every soup has
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "soup":
    train_in_process(["method=uniform_soup", "ingredients=[" + ",".join(refs) + "]"], out)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak / 1024, "baseline_mib": before / 1024, "seconds": seconds}))
"""


def make_ingredients(root: Path, count: int, widths: list[int]) -> list[str]:
    """`count` finished runs of one MLP with weights from different seeds."""
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked
    from overparam.data import load_dataset
    from overparam.models import build_model
    from overparam.store import Run
    from overparam.store.atomic import atomic_write_text

    overrides = [f"model.widths=[{','.join(map(str, widths))}]"]
    container = compose_checked(overrides)
    cfg = OmegaConf.create(container)
    data = load_dataset(cfg.dataset, cfg.paths.data_dir, seed=0)
    refs = []
    for index in range(count):
        out = root / f"ingredient_{index}"
        atomic_write_text(out / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
        run = Run(out, container).start()
        model = build_model(cfg.model, data.input_shape, data.num_classes, seed=index)
        run.save_checkpoint("model", model.state_dict())
        run.finish("done", summary={"method": "dense"})
        refs.append(str(out))
    return refs


def child(mode: str, out: Path, refs: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(out), *refs], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soup-width", type=int, default=2048,
                        help="hidden width of the soup's MLPs (wide enough that weights dominate memory)")
    parser.add_argument("--match-width", type=int, default=1024, help="hidden width of the matched MLPs")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--ingredients", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("OVERPARAM_DATA_DIR", str(Path(tempfile.gettempdir()) / "overparam-bench-data"))
    widths = [args.soup_width] * args.depth
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        refs = make_ingredients(root, args.ingredients, widths)
        model_mib = (root / "ingredient_0" / "checkpoints" / "model.safetensors").stat().st_size / 2**20
        baseline = child("baseline", root / "none", refs[:1])
        small = child("soup", root / "soup_2", refs[:2])
        large = child("soup", root / "soup_n", refs)
    small_extra = small["peak_mib"] - baseline["peak_mib"]
    large_extra = large["peak_mib"] - baseline["peak_mib"]
    print(f"uniform soup, MLP {args.depth}x{args.soup_width} ({model_mib:.1f} MiB of weights per ingredient)")
    print(f"  baseline process (imports, data, one model): peak {baseline['peak_mib']:.0f} MiB")
    print(f"  2 ingredients:  peak {small['peak_mib']:.0f} MiB (+{small_extra:.0f} over baseline), {small['seconds']:.2f} s")
    print(f"  {args.ingredients} ingredients: peak {large['peak_mib']:.0f} MiB (+{large_extra:.0f} over baseline), "
          f"{large['seconds']:.2f} s")
    print(f"  peak memory ratio {args.ingredients} vs 2: {large['peak_mib'] / small['peak_mib']:.3f} "
          f"(extra over baseline: {large_extra / max(small_extra, 1e-9):.2f}x; all {args.ingredients} "
          f"in memory would add {args.ingredients * model_mib:.0f} MiB)")
    print(f"  time ratio {args.ingredients} vs 2: {large['seconds'] / small['seconds']:.2f}")

    import torch

    from overparam.models.permutation import spec_for, weight_matching
    from overparam.models.zoo import mlp

    widths = [args.match_width] * args.depth
    a, b = mlp((784,), 10, widths), mlp((784,), 10, widths)
    spec = spec_for(a, (784,))
    start = time.perf_counter()
    perms = weight_matching(spec, a.state_dict(), b.state_dict())
    seconds = time.perf_counter() - start
    moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms.values())
    print(f"weight matching, MLP 784-{'-'.join(map(str, widths))}-10: {seconds:.2f} s "
          f"({len(perms)} permutation groups, {moved} units moved)")


if __name__ == "__main__":
    main()
