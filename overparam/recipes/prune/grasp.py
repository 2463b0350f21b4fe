"""`method=grasp`: Gradient Signal Preservation at initialization (Wang et al. 2020), then train.

Score S = -w * (H g); removing the weights with the largest S preserves (or raises) the gradient
norm after pruning, so the kept weights are those with the largest w * (H g). As in the authors'
code (alecwangcq/GraSP, pruner/GraSP.py), both passes, the gradient g and the Hessian-gradient
product, are taken on logits divided by the temperature T (200 there). Their code sums g over the
two halves of a batch and H g over the same halves; with equal halves that is 4 H g of the whole
batch, a positive factor that leaves the ranking (and so the mask) unchanged. Their optional Xavier
re-initialization of Linear layers is not done: the run's own initialization is scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from overparam.recipes.shared import prunable as common
from overparam.recipes.prune.at_init import run_at_init, score_batch
from overparam.recipes.shared.masks import select_masks


def grasp_scores(model, x: torch.Tensor, y: torch.Tensor, temperature: float = 200.0) -> dict[str, torch.Tensor]:
    """w * (H g) per prunable weight (higher = keep); g and H of the loss on logits / `temperature`."""
    weights = common.weights_of(model)
    params = list(weights.values())
    model.zero_grad(set_to_none=True)
    grads = torch.autograd.grad(F.cross_entropy(model(x) / temperature, y), params)
    grads = [g.detach() for g in grads]
    second = torch.autograd.grad(F.cross_entropy(model(x) / temperature, y), params, create_graph=True)
    inner = sum((g2 * g).sum() for g2, g in zip(second, grads))
    hessian_grad = torch.autograd.grad(inner, params)
    return {name: (w * hg).detach().cpu() for (name, w), hg in zip(weights.items(), hessian_grad)}


def run(params, context) -> dict:
    """GraSP masks to `sparsity` at initialization, then training."""

    def masks(model, setup, keep, sparsity, output_rate):
        x, y = score_batch(setup.data, context, params["prune.score_batches"])
        scores = grasp_scores(model, x, y, params["prune.temperature"])
        return select_masks(scores, keep, scope=params["prune.scope"], output_name=common.output_weight_name(model),
                            output_rate=output_rate, sparsity=sparsity)

    return run_at_init(params, context, masks)
