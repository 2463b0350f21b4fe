"""Channel surgery on a chain of masked layers (each layer's outputs are the next one's inputs): the chain,
a physically narrower copy holding only the kept channels, and writing a narrow model back into the full one.

Used by structured (channel) pruning and by `runner export --shrink`.
"""

from __future__ import annotations

import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.paths import replace_module


def chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The prunable layers in order, checked to form a chain (each one's outputs are the next one's inputs)."""
    from overparam.models.masked import masked_modules

    layers = list(masked_modules(model).items())
    for (name, layer), (next_name, following) in zip(layers, layers[1:]):
        produced = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        consumed = following.in_features if isinstance(following, nn.Linear) else following.in_channels
        if produced != consumed or getattr(following, "groups", 1) != 1:
            raise UserError(f"channel pruning needs a chain of layers; {name} ({produced} outputs) does not feed "
                            f"{next_name} ({consumed} inputs)")
    return layers


def shrink(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """Replace the chain's layers by narrower plain layers holding only the kept channels (in place)."""
    layers = chain(model)
    kept_inputs = None
    for name, layer in layers:
        rows = keep.get(name)
        weight = layer.weight.detach() * layer.weight_mask
        if rows is not None:
            weight = weight[rows.to(weight.device)]
        if kept_inputs is not None:
            weight = weight[:, kept_inputs.to(weight.device)]
        bias = layer.bias.detach()[rows.to(weight.device)] if (layer.bias is not None and rows is not None) else \
            (layer.bias.detach() if layer.bias is not None else None)
        if isinstance(layer, nn.Linear):
            small = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device)
        else:
            base = nn.Conv1d if weight.dim() == 3 else nn.Conv2d
            small = base(weight.shape[1], weight.shape[0], layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, bias=bias is not None,
                         padding_mode=layer.padding_mode, device=weight.device)
        with torch.no_grad():
            small.weight.copy_(weight)
            if bias is not None:
                small.bias.copy_(bias)
        replace_module(model, name, small)
        kept_inputs = rows
    return model


def expand_into(full: nn.Module, small: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """Write a shrunk model's weights back into the full-size masked model (removed entries stay zero)."""
    layers = chain(full)
    small_modules = dict(small.named_modules())
    kept_inputs = None
    with torch.no_grad():
        for name, layer in layers:
            rows = keep.get(name, torch.ones(layer.weight.shape[0], dtype=torch.bool))
            cols = kept_inputs if kept_inputs is not None else torch.ones(layer.weight.shape[1], dtype=torch.bool)
            source = small_modules[name]
            weight = torch.zeros_like(layer.weight)
            row_index = rows.nonzero().flatten().to(weight.device)
            col_index = cols.nonzero().flatten().to(weight.device)
            weight[row_index.view(-1, 1), col_index.view(1, -1)] = source.weight
            layer.weight.copy_(weight * layer.weight_mask)
            if layer.bias is not None:
                layer.bias[row_index] = source.bias
            kept_inputs = rows if name in keep else None
