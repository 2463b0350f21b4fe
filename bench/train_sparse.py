"""Training speed of a 90%-sparse LeNet-300-100: `hardware.kernel=sparse` vs dense masked training.

    python bench/train_sparse.py                        # ~1 min on 2 cores
    python bench/train_sparse.py --steps 400 --rounds 5 --sparsity 0.95 --optimizer adam --batch-size 60

Training settings are open_lth's for LeNet-300-100 (SGD, lr 0.1, batch 128) unless overridden.

IMP-style: the masks are layer-wise magnitude masks of the trained-then-rewound network as in the
lottery-ticket recipe (hidden layers at `--sparsity`, the output layer at half that rate); then
the same masked network trains with `engine.fit` once per backend, alternating backends over
`--rounds` rounds so a burst of load on a shared machine hits both alike. Steps per second are
timed between the first and last optimizer step of each run (the evaluations `fit` runs at its
start and end are outside that window); the best round per backend is reported. Data are random
MNIST-shaped tensors (28x28, 10 classes): the speed of a step does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def magnitude_masks(model, sparsity: float, output_layer: str) -> dict[str, torch.Tensor]:
    """Per-layer masks keeping the largest-magnitude weights (output layer pruned at half the rate)."""
    from overparam.models.masked import masks_of

    masks = {}
    for name in masks_of(model):
        weight = model.get_parameter(name).detach().abs()
        rate = sparsity / 2 if name.startswith(output_layer + ".") else sparsity
        drop = int(round(rate * weight.numel()))
        threshold = weight.flatten().kthvalue(drop).values if drop else -1.0
        masks[name] = (weight > threshold).float()
    return masks


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="open_lth's LeNet-300-100 batch size")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"),
                        help="sgd: open_lth's LeNet-300-100 (lr 0.1); adam: the lottery-ticket paper's (lr 1.2e-3)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backends", default="sparse,auto", help="backends compared with dense masked (torch)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from omegaconf import OmegaConf

    from overparam import kernels
    from overparam.data.bundle import DataBundle
    from overparam.engine.fit import fit
    from overparam.models.masked import apply_masks, sparsify, sparsity_report
    from overparam.models.registry import build_model

    generator = torch.Generator().manual_seed(0)
    examples = args.batch_size * 100
    data = DataBundle(name="mnist_shaped", train_x=torch.rand(examples, 1, 28, 28, generator=generator),
                      train_y=torch.randint(0, 10, (examples,), generator=generator),
                      test_x=torch.rand(1000, 1, 28, 28, generator=generator),
                      test_y=torch.randint(0, 10, (1000,), generator=generator), num_classes=10)
    model_cfg = OmegaConf.create({"name": "lenet300_100", "_target_": "overparam.models.zoo.mlp", "widths": [300, 100]})
    train = OmegaConf.create({"steps": args.steps, "epochs": None, "batch_size": args.batch_size,
                              "eval_every": args.steps, "checkpoint_every": None, "grad_clip": None})
    optim = OmegaConf.create({"name": args.optimizer, "lr": 0.1 if args.optimizer == "sgd" else 1.2e-3,
                              "weight_decay": 0.0, "momentum": 0.0, "warmup_steps": 0, "schedule": "constant"})
    hardware = OmegaConf.create({"device": "cpu", "precision": "fp32", "kernel": "auto"})

    # IMP, one round compressed to one shot: train dense, take magnitude masks, rewind to init.
    init = sparsify(build_model(model_cfg, (1, 28, 28), 10, seed=0))
    trained = copy.deepcopy(init)
    kernels.set_default_backend("torch")
    fit(trained, data, None, train=OmegaConf.merge(train, {"steps": 200, "eval_every": 200}), optim=optim,
        hardware=hardware, seed=0)
    masks = magnitude_masks(trained, args.sparsity, "fc_out")
    ticket = copy.deepcopy(init)
    apply_masks(ticket, masks)
    report = sparsity_report(ticket)
    print(f"LeNet-300-100, {report['remaining_weights']}/{report['prunable_weights']} weights kept "
          f"(sparsity {report['sparsity']:.3f}; " + ", ".join(f"{k} {v:.2f}" for k, v in report["layer_sparsity"].items())
          + f"), batch {args.batch_size}, {args.optimizer}, {torch.get_num_threads()} threads")

    compared = args.backends.split(",")
    results: dict[str, list[float]] = {backend: [] for backend in ["torch", *compared]}
    finals = {}
    for round_index in range(args.rounds):
        for backend in results:
            model = copy.deepcopy(ticket)
            kernels.set_default_backend(backend)
            stamps: list[float] = []
            outcome = fit(model, data, None, train=train, optim=optim, hardware=OmegaConf.merge(hardware, {"kernel": backend}),
                          seed=0, step_hook=lambda step, m, o: stamps.append(time.perf_counter()))
            results[backend].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
            finals[backend] = outcome.final["test"]["loss"]
            for name, mask in masks.items():
                assert torch.all(model.get_parameter(name)[mask == 0] == 0), "a masked weight revived"
    kernels.set_default_backend("auto")
    dense = max(results["torch"])
    print(f"{'backend':>8} {'steps/s (best)':>15} {'vs torch':>9} {'all rounds':>30} {'final test loss':>16}")
    for backend, values in results.items():
        print(f"{backend:>8} {max(values):>15.1f} {max(values) / dense:>8.2f}x {', '.join(f'{v:.1f}' for v in values):>30}"
              f" {finals[backend]:>16.5f}")
    for backend in compared:
        print(f"speed-up {backend} / dense masked (torch): {max(results[backend]) / dense:.2f}x  (target for sparse: >= 1.5x)")


if __name__ == "__main__":
    main()
