"""`method=snip`: prune at initialization by connection sensitivity |g * w| (Lee et al. 2019), then train."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from overparam.recipes.shared import prunable as common
from overparam.recipes.prune.at_init import run_at_init, score_batch
from overparam.recipes.shared.masks import select_masks


def snip_scores(model, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """|dL/dw * w| for every prunable weight, on the batch (x, y)."""
    weights = common.weights_of(model)
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(weights.values()))
    return {name: (g * w).detach().abs().cpu() for (name, w), g in zip(weights.items(), grads)}


def run(params, context) -> dict:
    """SNIP masks to `sparsity` from `prune.score_batches` batches at initialization, then training."""

    def masks(model, setup, keep, sparsity, output_rate):
        x, y = score_batch(setup.data, context, params["prune.score_batches"])
        return select_masks(snip_scores(model, x, y), keep, scope=params["prune.scope"],
                            output_name=common.output_weight_name(model), output_rate=output_rate, sparsity=sparsity)

    return run_at_init(params, context, masks)
