"""`method=sparse_finetune`: fine-tune only a fixed subset of a model's weights.

The subset is a given mask (`sparse_finetune.mask`: a run `<dir>@level_<L>` whose masks name the
weights to train, or a safetensors file of {"<layer>.weight": 0/1}) or, per layer, the
`sparse_finetune.fraction` of weights with the smallest magnitude. Each layer computes
`base(x) + masked_matmul(x, delta, subset)`: the base is frozen, the trainable delta reaches the
output only through the masked kernel, so weights outside the subset cannot move (weight decay
included). At the end the delta is folded into the weights. A sparse base keeps its mask, and its
pruned weights are never in the subset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from overparam.engine import fit
from overparam.errors import UserError
from overparam.kernels import masked_matmul
from overparam.models.paths import modules_of_type, replace_module
from overparam.recipes.common import model_summary
from overparam.recipes.shared.source import load_from_run

TUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


class SparseDelta(nn.Module):
    """A frozen layer plus a trainable delta restricted to `subset` (a 0/1 tensor shaped like the weight)."""

    def __init__(self, base: nn.Module, subset: torch.Tensor):
        super().__init__()
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("subset", subset.to(base.weight.device, base.weight.dtype))
        self.delta = nn.Parameter(torch.zeros_like(base.weight))

    @property
    def delta_mask(self) -> torch.Tensor:
        """The entries of `delta` that train (named `<param>_mask` so parameter counts see it)."""
        return self.subset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, nn.Linear):
            return self.base(x) + masked_matmul(x, self.delta, self.subset)
        conv = F.conv1d if isinstance(self.base, nn.Conv1d) else F.conv2d
        b = self.base
        return b(x) + conv(x, self.delta * self.subset, None, b.stride, b.padding, b.dilation, b.groups)

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """The base layer with delta * subset added to its weight (trainable again)."""
        self.base.weight.add_(self.delta * self.subset)
        for parameter in self.base.parameters():
            parameter.requires_grad_(True)
        return self.base


def smallest_magnitude(weight: torch.Tensor, fraction: float, alive: torch.Tensor | None) -> torch.Tensor:
    """0/1 mask of the `fraction` of (unpruned) weights with the smallest |w| (ties by position)."""
    magnitude = weight.detach().abs().flatten().float()
    candidates = torch.ones_like(magnitude, dtype=torch.bool) if alive is None else alive.flatten().bool()
    count = int(round(fraction * int(candidates.sum())))
    order = torch.argsort(torch.where(candidates, magnitude, torch.full_like(magnitude, float("inf"))), stable=True)
    subset = torch.zeros_like(magnitude)
    subset[order[:count]] = 1.0
    return subset.view_as(weight)


def given_subset(spec: str, layer_names: list[str]) -> dict[str, torch.Tensor]:
    """{"<layer>.weight": 0/1} from a run reference (its masks) or a safetensors file."""
    from overparam.store.masks import load_masks

    try:
        state = load_masks(spec)
    except UserError as exc:
        raise UserError(f"sparse_finetune.mask={exc}") from None
    subsets = {k[: -len(".weight")]: v for k, v in state.items() if k.endswith(".weight")}
    unknown = sorted(set(subsets) - set(layer_names))
    if unknown:
        raise UserError(f"sparse_finetune.mask names layers the model does not have: {', '.join(unknown)}")
    return subsets


def run(params, context) -> dict:
    """Train only the chosen subset of `from`'s weights; save the folded model."""
    from overparam.models.masked import MASKED_TYPES

    settings, run = context.settings, context.run
    setup = context.prepare()
    mask, fraction = params["sparse_finetune.mask"], params["sparse_finetune.fraction"]
    model = load_from_run(params["from"], setup)
    layers = dict(modules_of_type(model, TUNABLE))
    given = given_subset(mask, list(layers)) if mask is not None else None
    wrapped = {}
    for name, layer in layers.items():
        alive = layer.weight_mask if isinstance(layer, MASKED_TYPES) else None
        if given is not None:
            if name not in given:
                continue
            subset = given[name].to(layer.weight.dtype)
            subset = subset * alive if alive is not None else subset
        else:
            subset = smallest_magnitude(layer.weight, float(fraction), alive)
        wrapped[name] = SparseDelta(layer, subset)
        replace_module(model, name, wrapped[name])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    deltas = [w.delta for w in wrapped.values()]
    for parameter in deltas:
        parameter.requires_grad_(True)
    trainable = int(sum(int(w.subset.sum()) for w in wrapped.values()))
    total = sum(layer.weight.numel() for layer in layers.values())
    result = fit(model, setup.data, run, tag="sparse_finetune", label="sparse_finetune", trainable=deltas,
                 **setup.fit_kwargs())
    for name, module in wrapped.items():
        replace_module(model, name, module.folded())
    run.save_checkpoint("model", model.state_dict())
    return {**result.flat(), **model_summary(model), "steps": result.steps, "trainable_weights": trainable,
            "trainable_parameters": trainable,
            "trainable_fraction": trainable / max(total, 1)}
