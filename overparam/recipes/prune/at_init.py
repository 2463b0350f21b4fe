"""Pruning at initialization, shared by random_prune, snip, grasp and synflow: mask, then train once."""

from __future__ import annotations

from typing import Callable

import torch

from overparam.recipes.shared import prunable as common
from overparam.recipes.shared.level_stats import mask_statistics


def score_batch(data, context, batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batches` training batches of the seeded first-epoch order: the data a saliency score sees."""
    from overparam.engine.fit import epoch_order

    count = min(len(data.train_x), int(batches) * int(context.settings.train.batch_size))
    order = epoch_order(len(data.train_x), context.seed, 0)[:count].to(data.train_x.device)
    return data.train_x[order], data.train_y[order]


def run_at_init(params, context, masks_fn: Callable) -> dict:
    """Build the model, `masks_fn(model, setup, keep, sparsity, output_rate)` -> masks, install them, train.

    `params["prune.output_rate"]` (0: the output layer stays dense and unmasked) is the method's own key;
    `context` gives the run and the shared keys (sparsity, the method's name).

    Masks are a pure function of the seed (and the data), so a resumed run recomputes the same ones
    before `fit` continues from its checkpoint.
    """
    from overparam.engine import fit

    settings, run = context.settings, context.run
    setup = context.prepare()
    output_rate = params["prune.output_rate"]
    model = common.make_prunable(setup.new_model(), exclude_output=output_rate == 0.0)
    total = sum(w.numel() for w in common.weights_of(model).values())
    sparsity = float(settings.sparsity)
    keep = common.target_count(total, sparsity)
    if keep < total:
        masks = masks_fn(model, setup, keep, sparsity, output_rate)
        common.apply_masks_by_name(model, masks)
    from overparam.models.masked import masks_of

    run.save_checkpoint("mask", masks_of(model))
    result = fit(model, setup.data, run, tag="train", label=str(settings.method.name), **setup.fit_kwargs())
    run.save_checkpoint("model", model.state_dict())
    stats = mask_statistics(model, setup.data.input_shape, setup.device)
    return {**result.flat(), **stats, "steps": result.steps}
