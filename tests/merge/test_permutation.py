"""Permutation specs leave every zoo model's outputs unchanged; weight matching undoes a permutation."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from overparam.cli.paths import config_dir
from overparam.errors import UserError
from overparam.models import build_model
from overparam.models.masked import apply_masks, masks_of, sparsify
from overparam.models.permutation import apply_permutation, random_permutations, spec_for, weight_matching

FAMILIES = [
    ("mlp", (40,), {"widths": [24, 16]}),
    ("cnn1d", (40,), {"channels": 8}),
    ("conv2", (3, 32, 32), {}),
    ("conv4", (3, 32, 32), {}),
    ("vgg11", (3, 32, 32), {}),
    ("resnet20", (3, 16, 16), {}),
]


def _model(name, input_shape, options, seed=0):
    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    cfg.update(options)
    return build_model(cfg, input_shape, 10, seed=seed)


@pytest.mark.parametrize("name,input_shape,options", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_permuted_model_computes_the_same_outputs(name, input_shape, options):
    model = _model(name, input_shape, options)
    spec = spec_for(model, input_shape, check=False)
    # Non-trivial BatchNorm statistics, so permuting them is checked too.
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    model.eval()
    x = torch.randn(4, *input_shape, generator=generator)
    perms = random_permutations(spec, generator)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(apply_permutation(spec, perms, model.state_dict()))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, permuted.state_dict()[k])]
    assert changed, "the permutation moved nothing"
    with torch.no_grad():
        expected, actual = model(x), permuted(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_masked_model_permutes_its_masks_too():
    model = sparsify(_model("mlp", (40,), {"widths": [24, 16]}))
    generator = torch.Generator().manual_seed(0)
    apply_masks(model, {k: (torch.rand(m.shape, generator=generator) < 0.5).float() for k, m in masks_of(model).items()})
    spec = spec_for(model, (40,))
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(apply_permutation(spec, random_permutations(spec, generator), model.state_dict()))
    x = torch.randn(5, 40, generator=generator)
    torch.testing.assert_close(permuted(x), model(x), rtol=1e-4, atol=1e-5)
    assert int(masks_of(permuted)["fc0.weight"].sum()) == int(masks_of(model)["fc0.weight"].sum())


@pytest.mark.parametrize("name,input_shape,options", [FAMILIES[0], FAMILIES[1], FAMILIES[2]],
                         ids=["mlp", "cnn1d", "conv2"])
def test_weight_matching_recovers_a_known_permutation_exactly(name, input_shape, options):
    model = _model(name, input_shape, options)
    spec = spec_for(model, input_shape, check=False)
    perms = random_permutations(spec, torch.Generator().manual_seed(11))
    permuted = apply_permutation(spec, perms, model.state_dict())
    found = weight_matching(spec, model.state_dict(), permuted)
    for group, perm in perms.items():
        # new unit i of `permuted` is old unit perm[i]; matching must put it back: found = perm^-1.
        assert torch.equal(found[group], torch.argsort(perm)), group
    restored = apply_permutation(spec, found, permuted)
    for key, value in model.state_dict().items():
        assert torch.equal(restored[key], value), key


def test_a_network_without_a_valid_spec_is_refused():
    # Option-A shortcuts zero-pad channels: no per-stage permutation of this kind leaves it unchanged.
    model = _model("resnet20", (3, 16, 16), {"shortcut": "A"})
    with pytest.raises(UserError, match="no valid permutation spec"):
        spec_for(model, (3, 16, 16))
