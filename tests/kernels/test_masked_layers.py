"""sparsify/densify round trips and state_dict compatibility of masked models."""

from __future__ import annotations

import copy

import torch
from torch import nn

from overparam import kernels
from overparam.models.masked import (MaskedConv2d, MaskedLinear, apply_masks, densify, masks_of, sparsify,
                                     sparsity_report)


def _random_masks(model, keep: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return {name: (torch.rand(m.shape, generator=generator) < keep).float() for name, m in masks_of(model).items()}


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.Flatten(),
                         nn.Linear(8 * 7 * 7, 10))


def test_sparsify_then_densify_round_trips_outputs_exactly():
    kernels.set_default_backend("torch")
    model = sparsify(_conv_net())
    apply_masks(model, _random_masks(model, keep=0.3))
    x = torch.randn(4, 3, 16, 16)
    masked_out = model(x)
    plain = densify(copy.deepcopy(model))
    assert not any(isinstance(m, (MaskedLinear, MaskedConv2d)) for m in plain.modules())
    assert torch.equal(plain(x), masked_out)
    # and back: the dense export sparsified again (masks from its zeros) gives the same outputs
    again = sparsify(plain)
    apply_masks(again, {name: (again.get_parameter(name) != 0).float() for name in masks_of(again)})
    assert torch.equal(again(x), masked_out)
    assert abs(sparsity_report(again)["sparsity"] - sparsity_report(model)["sparsity"]) < 1e-3


def test_sparsify_include_exclude_and_mask_keys():
    model = sparsify(_conv_net(), include=["*"], exclude=["4"])
    assert isinstance(model[0], MaskedConv2d) and isinstance(model[4], nn.Linear)
    assert set(masks_of(model)) == {"0.weight", "2.weight"}
    assert "0.weight_mask" in model.state_dict()


def test_sparsified_torchvision_resnet18_loads_its_original_state_dict():
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=10).eval()
    state = original.state_dict()
    torch.manual_seed(1)  # different initial weights: the load must overwrite them all
    masked = sparsify(torchvision.models.resnet18(num_classes=10)).eval()
    result = masked.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert isinstance(masked.fc, MaskedLinear) and isinstance(masked.conv1, MaskedConv2d)
    assert torch.all(masked.fc.weight_mask == 1)
    kernels.set_default_backend("torch")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(masked(x), original(x), atol=1e-5)
    # and the masked model's own state_dict (with masks) loads back into a fresh masked twin
    apply_masks(masked, _random_masks(masked, keep=0.5))
    twin = copy.deepcopy(masked)
    for module in twin.modules():
        if isinstance(module, (MaskedLinear, MaskedConv2d)):
            module.set_mask(torch.ones_like(module.weight_mask))
            torch.nn.init.normal_(module.weight)
    twin.load_state_dict(masked.state_dict())
    with torch.no_grad():
        assert torch.equal(twin(x), masked(x))
