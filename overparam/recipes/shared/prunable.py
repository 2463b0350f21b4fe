"""What the prune methods share: prunable models and their weights, target counts, derived seeds, installing
masks and masking optimizer state (scores to masks: masks.py; statistics: stats.py; parameters: params.py).

Masks are keyed by parameter name (`fc0.weight`), never by position. Only the weights of
Linear/Conv layers are prunable; biases and normalization layers are never masked. The output
layer is pruned at `prune.output_rate` times the others' rate (0 leaves it dense and outside the
masked layers altogether).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from overparam.errors import UserError


def target_count(total: int, sparsity: float) -> int:
    """Weights kept at `sparsity` out of `total` (nearest integer; at least one)."""
    kept = int(math.floor(total * (1.0 - float(sparsity)) + 0.5))
    if kept < 1:
        raise UserError(f"sparsity={sparsity} leaves no weight of the {total} prunable ones")
    return kept


# --- prunable models ------------------------------------------------------------------------------

def make_prunable(model: nn.Module, *, exclude_output: bool) -> nn.Module:
    """`sparsify` every Linear/Conv layer (the output layer too unless excluded); all masks start at one."""
    from overparam.models import output_layer_name
    from overparam.models.masked import sparsify

    exclude = [output_layer_name(model)] if exclude_output else None
    return sparsify(model, exclude=exclude)


def weight_names(model: nn.Module) -> list[str]:
    """Prunable parameter names (`<layer>.weight` of every masked layer), in registration order."""
    from overparam.models.masked import masked_modules

    return [f"{name}.weight" for name in masked_modules(model)]


def output_weight_name(model: nn.Module) -> str | None:
    """`<output layer>.weight` when the output layer is masked, else None."""
    from overparam.models import output_layer_name

    name = f"{output_layer_name(model)}.weight"
    return name if name in weight_names(model) else None


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.weight": weight} of the masked layers (live tensors)."""
    from overparam.models.masked import masked_modules

    return {f"{name}.weight": module.weight for name, module in masked_modules(model).items()}


def magnitude_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    """|w| of every prunable weight."""
    return {name: weight.detach().abs().float().cpu() for name, weight in weights_of(model).items()}


def derived_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A seed for a secondary random draw (a control's init, a random mask) that never equals the run's."""
    digest = hashlib.sha256(f"{int(seed)}/{purpose}/{int(index)}".encode()).hexdigest()
    return int(digest[:12], 16)


def apply_masks_by_name(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """`apply_masks` (installs masks and zeroes masked weights)."""
    from overparam.models.masked import apply_masks

    apply_masks(model, masks)


def mask_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Zero optimizer buffers (momentum, Adam moments) of masked weights, so a mask change mid-training
    cannot push a pruned weight away from zero."""
    from overparam.models.masked import masked_modules

    for module in masked_modules(model).values():
        state = optimizer.state.get(module.weight)
        if not state:
            continue
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            buffer = state.get(key)
            if isinstance(buffer, torch.Tensor) and buffer.shape == module.weight_mask.shape:
                buffer.mul_(module.weight_mask)
