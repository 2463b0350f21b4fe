"""`method=synflow`: Iterative Synaptic Flow Pruning (Tanaka et al. 2020): data-free, then train.

Each of `prune.rounds` rounds scores every weight by |w * dR/dw| with R = 1^T (prod_l |W_l|) 1 (the
network with absolute weights on an all-ones input, in float64) and prunes to the round's density on
an exponential schedule, density_k = (1 - sparsity)^(k / rounds).
"""

from __future__ import annotations

import copy
import math

import torch

from overparam.recipes.shared import prunable as common
from overparam.recipes.prune.at_init import run_at_init
from overparam.recipes.shared.masks import select_masks


def synflow_probe(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of `model` with every floating-point parameter and buffer replaced by its |value|."""
    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in probe.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    return probe


def synflow_scores(probe: torch.nn.Module, input_shape) -> dict[str, torch.Tensor]:
    """|w * dR/dw| of every prunable weight of `probe` (see `synflow_probe`), R = sum of its outputs on
    an all-ones input."""
    weights = common.weights_of(probe)
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=next(probe.parameters()).device)
    probe.zero_grad(set_to_none=True)
    probe(ones).sum().backward()
    return {name: (w.grad * w).detach().abs().cpu() for name, w in weights.items()}


def synflow_masks(model, input_shape, keep: int, sparsity: float, output_rate: float, scope: str,
                  rounds: int) -> dict[str, torch.Tensor]:
    """Masks after `rounds` rounds of SynFlow scoring and pruning down to exactly `keep` weights."""
    from overparam.models.masked import masks_of

    probe = synflow_probe(model)
    total = sum(w.numel() for w in common.weights_of(probe).values())
    output_name = common.output_weight_name(probe)
    masks = masks_of(probe)
    for round_index in range(1, rounds + 1):
        fraction = (1.0 - sparsity) ** (round_index / rounds)
        round_keep = keep if round_index == rounds else max(keep, int(math.floor(total * fraction + 0.5)))
        scores = synflow_scores(probe, input_shape)
        round_sparsity = 1.0 - round_keep / total
        masks = select_masks(scores, round_keep, scope=scope, output_name=output_name, output_rate=output_rate,
                             sparsity=round_sparsity, alive=masks)
        common.apply_masks_by_name(probe, masks)
    return {name: mask.float() for name, mask in masks.items()}


def run(params, context) -> dict:
    """SynFlow masks to `sparsity` (no data), then training."""

    def masks(model, setup, keep, sparsity, output_rate):
        return synflow_masks(model, setup.data.input_shape, keep, sparsity, output_rate, params["prune.scope"],
                             params["prune.rounds"])

    return run_at_init(params, context, masks)
