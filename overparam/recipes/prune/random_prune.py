"""`method=random_prune`: random masks at initialization, uniform or ERK layer densities, then train.

Liu et al. 2022, "The Unreasonable Effectiveness of Random Pruning": with the right layer-wise
densities (ERK), a randomly pruned wide network trains to dense accuracy.
"""

from __future__ import annotations

import torch

from overparam.recipes.shared import prunable as common
from overparam.recipes.prune.at_init import run_at_init
from overparam.recipes.shared.masks import distribution_counts, random_masks


def random_init_masks(model, keep: int, sparsity: float, distribution: str, output_rate: float,
                      seed: int) -> dict[str, torch.Tensor]:
    """Random masks keeping exactly `keep` weights, per-layer counts from `distribution`."""
    counts = distribution_counts(model, keep, distribution, output_rate, sparsity)
    shapes = {name: tuple(w.shape) for name, w in common.weights_of(model).items()}
    generator = torch.Generator().manual_seed(common.derived_seed(seed, "random_prune"))
    return random_masks(counts, shapes, generator)


def run(params, context) -> dict:
    """Random pruning to `sparsity` at initialization, then ordinary training."""
    distribution = params["prune.distribution"]

    def masks(model, setup, keep, sparsity, output_rate):
        return random_init_masks(model, keep, sparsity, distribution, output_rate, context.seed)

    return run_at_init(params, context, masks)
