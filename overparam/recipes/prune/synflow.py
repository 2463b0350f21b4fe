"""`method=synflow`: Iterative Synaptic Flow Pruning (Tanaka et al. 2020): data-free, then train.

Each of `prune.rounds` rounds scores every weight by |w * dR/dw| with R = 1^T (prod_l |W_l|) 1 (the
network with absolute weights on an all-ones input, in float64) and prunes to the round's density on
an exponential schedule, density_k = (1 - sparsity)^(k / rounds).
"""

from __future__ import annotations

import copy
import math

import torch

from overparam.recipes.prune import common
from overparam.recipes.prune.at_init import run_at_init


def synflow_masks(model, input_shape, keep: int, sparsity: float, output_rate: float, scope: str,
                  rounds: int) -> dict[str, torch.Tensor]:
    """Masks after `rounds` rounds of SynFlow scoring and pruning down to exactly `keep` weights."""
    from overparam.models.masked import masks_of

    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in probe.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    total = sum(w.numel() for w in common.weights_of(probe).values())
    output_name = common.output_weight_name(probe)
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=next(probe.parameters()).device)
    masks = masks_of(probe)
    for round_index in range(1, rounds + 1):
        fraction = (1.0 - sparsity) ** (round_index / rounds)
        round_keep = keep if round_index == rounds else max(keep, int(math.floor(total * fraction + 0.5)))
        weights = common.weights_of(probe)
        probe.zero_grad(set_to_none=True)
        probe(ones).sum().backward()
        scores = {name: (w.grad * w).detach().abs().cpu() for name, w in weights.items()}
        round_sparsity = 1.0 - round_keep / total
        masks = common.oneshot_masks(scores, round_keep, scope=scope, output_name=output_name,
                                     output_rate=output_rate, sparsity=round_sparsity, alive=masks)
        common.apply_masks_by_name(probe, masks)
    return {name: mask.float() for name, mask in masks.items()}


def run(params, context) -> dict:
    """SynFlow masks to `sparsity` (no data), then training."""

    cfg, run = context.cfg, context.run
    def masks(model, setup, keep, sparsity, output_rate):
        return synflow_masks(model, setup.data.input_shape, keep, sparsity, output_rate, str(cfg.prune.scope),
                             int(cfg.prune.rounds))

    return run_at_init(cfg, run, masks)
