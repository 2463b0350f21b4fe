"""Cost of sharpness-aware training: SAM and SAF vs the base optimizer, per training step.

    python bench/sam.py [--model mlp|cnn1d] [--steps 300] [--repeats 3] [--device cpu]

Trains the same model on mnist1d for `--steps` steps with optim.sam and optim.saf off, with
optim.sam=true, and with optim.saf=0.5; prints seconds per step (best of `--repeats`) and the ratio to
the base optimizer (SAM should be about 2x: two forward/backward passes; SAF about 1x).
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn1d", "lenet300_100"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (1 steadies a shared CPU)")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked
    from overparam.engine import fit
    from overparam.recipes.common import prepare

    os.environ.setdefault("OVERPARAM_DATA_DIR", "/tmp/overparam-bench-data")
    hardware = "cuda" if args.device.startswith("cuda") else "cpu"
    base = [f"model={args.model}", f"hardware={hardware}", "train.epochs=null", f"train.steps={args.steps}",
            # Evaluate once at the end: the bench times the training steps, not evaluation.
            f"train.eval_every={args.steps}"] + ([f"hardware.threads={args.threads}"] if args.threads else [])
    variants = {"base": [], "sam": ["optim.sam=true"], "saf": ["optim.saf=0.5"]}
    seconds = {}
    for name, extra in variants.items():
        cfg = OmegaConf.create(compose_checked(base + extra))
        setup = prepare(cfg)
        best = float("inf")
        for _ in range(args.repeats):
            model = setup.new_model()
            start = time.perf_counter()
            fit(model, setup.data, None, **setup.fit_kwargs())
            if setup.device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        seconds[name] = best / args.steps
    print(f"model={args.model} device={args.device} steps={args.steps} (best of {args.repeats})")
    for name, value in seconds.items():
        print(f"{name:5s} {value * 1e3:8.3f} ms/step   ratio to base {value / seconds['base']:.2f}x")


if __name__ == "__main__":
    main()
