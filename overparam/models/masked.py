"""Masked layers and `sparsify`/`densify`.

A masked layer keeps its dense twin's parameter names (`weight`, `bias`) and adds a
`weight_mask` buffer (0/1, same dtype as the weight), so a sparsified model still loads
the original `state_dict` (missing masks default to all ones) and saves by name.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from overparam.kernels import masked_matmul
from overparam.kernels.conv import masked_conv
from overparam.models.paths import modules_of_type, replace_module


class _MaskMixin:
    """Mask bookkeeping shared by the masked layers: built like the dense layer, plus an all-ones mask."""

    weight: nn.Parameter
    weight_mask: torch.Tensor

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("weight_mask", torch.ones_like(self.weight, dtype=self.weight.dtype))
        self.backend: str | None = None

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Install a new mask and zero the masked weights (they stay exactly zero from now on)."""
        mask = mask.to(device=self.weight.device, dtype=self.weight.dtype)
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight {tuple(self.weight.shape)}")
        self.weight_mask.copy_(mask)
        self.weight.mul_(self.weight_mask)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # A dense checkpoint has no mask: treat it as all ones instead of a missing key.
        key = prefix + "weight_mask"
        if key not in state_dict and prefix + "weight" in state_dict:
            state_dict = dict(state_dict)
            state_dict[key] = torch.ones_like(state_dict[prefix + "weight"])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def density(self) -> float:
        return float(self.weight_mask.float().mean())


class MaskedLinear(_MaskMixin, nn.Linear):
    """nn.Linear whose forward is `masked_matmul` (weights outside the mask never contribute)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_matmul(x, self.weight, self.weight_mask, self.bias, backend=self.backend)


class _MaskedConv(_MaskMixin):
    """A convolution of any dimension (the nn.Conv*d it is mixed with) through `masked_conv`, which convolves
    with `weight * weight_mask`; the backend (`hardware.kernel`) may compute only at the mask's nonzeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            # Non-zero padding modes pad first and convolve unpadded, as nn.Conv*d does.
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return masked_conv(x, self.weight, self.weight_mask, self.bias, self.stride, padding, self.dilation,
                           self.groups, backend=self.backend)


class MaskedConv1d(_MaskedConv, nn.Conv1d):
    """nn.Conv1d convolving with `weight * weight_mask`."""


class MaskedConv2d(_MaskedConv, nn.Conv2d):
    """nn.Conv2d convolving with `weight * weight_mask`."""


MASKED_TWINS = {nn.Linear: MaskedLinear, nn.Conv2d: MaskedConv2d, nn.Conv1d: MaskedConv1d}
MASKED_TYPES = tuple(MASKED_TWINS.values())


def _layer_like(cls: type[nn.Module], module: nn.Module) -> nn.Module:
    """A new `cls` layer (Linear or Conv*d, masked or plain) with `module`'s shape, options, device and dtype."""
    options = dict(bias=module.bias is not None, device=module.weight.device, dtype=module.weight.dtype)
    if isinstance(module, nn.Linear):
        return cls(module.in_features, module.out_features, **options)
    return cls(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
               padding=module.padding, dilation=module.dilation, groups=module.groups,
               padding_mode=module.padding_mode, **options)


def _matches(name: str, patterns: Iterable[str] | None) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns or ())


def _twin(module: nn.Module) -> nn.Module:
    twin = _layer_like(MASKED_TWINS[type(module)], module)
    # Share the same Parameter objects: an optimizer built before sparsify still trains them.
    twin.weight = module.weight
    if module.bias is not None:
        twin.bias = module.bias
    twin.weight_mask = torch.ones_like(module.weight)
    twin.train(module.training)
    return twin


def sparsify(model: nn.Module, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> nn.Module:
    """Swap Linear/Conv1d/Conv2d modules (names matching `include`, default all; not `exclude`) for masked twins."""
    for name, module in modules_of_type(model, tuple(MASKED_TWINS), exact=True):
        if include is not None and not _matches(name, include):
            continue
        if _matches(name, exclude):
            continue
        replace_module(model, name, _twin(module))
    return model


def densify(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight and swap masked layers back to plain nn layers (for export)."""
    plain_of = {v: k for k, v in MASKED_TWINS.items()}
    for name, module in modules_of_type(model, MASKED_TYPES):
        plain = _layer_like(plain_of[type(module)], module)
        with torch.no_grad():
            plain.weight.copy_(module.weight * module.weight_mask)
            if module.bias is not None:
                plain.bias.copy_(module.bias)
        plain.train(module.training)
        replace_module(model, name, plain)
    return model


def masked_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{name: masked layer} in registration order."""
    return dict(modules_of_type(model, MASKED_TYPES))


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.weight": mask} keyed by parameter name, never by position."""
    return {f"{name}.weight": m.weight_mask.detach().clone() for name, m in masked_modules(model).items()}


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Install masks keyed by parameter name (`<layer>.weight`)."""
    layers = masked_modules(model)
    for key, mask in masks.items():
        layer = key[: -len(".weight")] if key.endswith(".weight") else key
        if layer not in layers:
            raise KeyError(f"no masked layer named {layer!r}")
        layers[layer].set_mask(mask)


def sparsity_report(model: nn.Module) -> dict:
    """Per-layer and total sparsity over masked layers, plus remaining weights."""
    per_layer, total, kept = {}, 0, 0
    for name, module in masked_modules(model).items():
        numel = module.weight_mask.numel()
        alive = int(module.weight_mask.count_nonzero())
        per_layer[name] = 1.0 - alive / numel
        total += numel
        kept += alive
    return {"sparsity": (1.0 - kept / total) if total else 0.0, "remaining_weights": kept, "prunable_weights": total,
            "layer_sparsity": per_layer}
