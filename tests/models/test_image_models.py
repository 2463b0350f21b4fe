"""The image models of the zoo: forward shapes, exact parameter counts, seeded initialization.

Expected counts are computed by hand from the architectures (weights + biases + BatchNorm
affine parameters) and agree with the published figures:
- LeNet-300-100 on 784 inputs: 784*300+300 + 300*100+100 + 100*10+10 = 266,610 (Frankle & Carbin 2019).
- LeNet-5 on 1x28x28 (padding 2): 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706 (LeCun et al. 1998).
- Conv-2/4/6 on CIFAR-10: 4,301,642 / 2,425,930 / 2,262,602 (Frankle & Carbin 2019, appendix, fig. 2).
- ResNet-20: 269,722 with option-A shortcuts (He et al. 2016: 0.27M); projections add
  16*32 + 2*32 + 32*64 + 2*64 = 2,752 -> 272,474 (open_lth's cifar_resnet_20).
- VGG-16 (open_lth): 14,714,688 conv + 8,448 BatchNorm + 5,130 linear = 14,728,266 (~14.7M).
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from overparam.cli.paths import config_dir
from overparam.errors import UserError
from overparam.models import build_model, count_parameters, output_layer_name

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)


def model_cfg(name: str, **overrides):
    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


_BUILT: dict = {}


def built(name: str, shape=CIFAR, num_classes: int = 10, seed: int = 0, **overrides) -> torch.nn.Module:
    """Each (model, shape, classes, seed, options) built once per session: the big ones take a while."""
    key = (name, shape, num_classes, seed, tuple(sorted(overrides.items())))
    if key not in _BUILT:
        _BUILT[key] = build_model(model_cfg(name, **overrides), shape, num_classes, seed=seed)
    return _BUILT[key]


@pytest.mark.parametrize("name, shape, expected", [
    ("lenet300_100", MNIST, 266_610),
    ("lenet5", MNIST, 61_706),
    ("lenet5", CIFAR, 62_006),
    ("conv2", CIFAR, 4_301_642),
    ("conv4", CIFAR, 2_425_930),
    ("conv6", CIFAR, 2_262_602),
    ("resnet20", CIFAR, 272_474),
    ("vgg11", CIFAR, 9_231_114),
    ("vgg16", CIFAR, 14_728_266),
])
def test_parameter_counts_match_the_published_numbers(name, shape, expected):
    assert count_parameters(built(name, shape)) == expected


def test_resnet20_option_a_and_width():
    assert count_parameters(built("resnet20", shortcut="A")) == 269_722
    # Width 2 doubles every channel count: convs x4, BatchNorm and the classifier's inputs x2.
    conv_weights = 3 * 9 * 32 + 9 * 32 * 32 * 6 + 9 * 32 * 64 + 9 * 64 * 64 * 5 + 9 * 64 * 128 + 9 * 128 * 128 * 5
    batchnorm = 2 * (32 * 7 + 64 * 6 + 128 * 6)
    assert count_parameters(built("resnet20", shortcut="A", width=2)) == conv_weights + batchnorm + 128 * 10 + 10


def test_conv_nets_take_gray_28x28_inputs():
    # After one/two/three 2x2 pools a 28x28 map is 14x14 / 7x7 / 3x3.
    head = 256 * 256 + 256 + 256 * 10 + 10
    assert count_parameters(built("conv2", MNIST)) == 640 + 36_928 + 14 * 14 * 64 * 256 + 256 + head
    assert count_parameters(built("conv4", MNIST)) == 640 + 36_928 + 73_856 + 147_584 + 7 * 7 * 128 * 256 + 256 + head
    convs6 = 640 + 36_928 + 73_856 + 147_584 + 295_168 + 590_080
    assert count_parameters(built("conv6", MNIST)) == convs6 + 3 * 3 * 256 * 256 + 256 + head


@pytest.mark.parametrize("name", ["lenet5", "conv2", "conv4", "conv6", "resnet20", "vgg11", "vgg16"])
@pytest.mark.parametrize("shape", [CIFAR, MNIST])
def test_forward_gives_one_logit_per_class(name, shape):
    model = built(name, shape)
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    head = model.get_submodule(model.output_layer)
    assert output_layer_name(model) == "fc_out" and isinstance(head, torch.nn.Linear) and head.out_features == 10


def test_three_dimensional_batches_count_as_one_channel():
    model = built("conv2", MNIST)
    x = torch.randn(2, 28, 28)
    assert torch.equal(model(x), model(x.unsqueeze(1)))


@pytest.mark.parametrize("name", ["lenet5", "conv2", "resnet20"])
def test_same_seed_same_weights_other_seed_other_weights(name):
    first = build_model(model_cfg(name), CIFAR, 10, seed=3).state_dict()
    again = build_model(model_cfg(name), CIFAR, 10, seed=3).state_dict()
    other = build_model(model_cfg(name), CIFAR, 10, seed=4).state_dict()
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    weights = [k for k in first if k.endswith("weight") and first[k].dim() > 1]
    assert weights and all(not torch.equal(first[k], other[k]) for k in weights)


def test_building_leaves_the_global_rng_and_batchnorm_statistics_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    model = build_model(model_cfg("vgg11"), (3, 16, 16), 10, seed=0)  # 16x16: the smallest map four pools take
    assert torch.equal(torch.rand(3), expected)
    # The build-time dry run (to size the layers) must not have touched the running statistics.
    assert int(model.features.bn0.num_batches_tracked) == 0
    assert torch.equal(model.features.bn0.running_mean, torch.zeros(64))


def test_init_schemes_follow_their_formulas():
    glorot = built("conv2", seed=5)  # xavier_normal by default: std = sqrt(2 / (fan_in + fan_out))
    weight = glorot.fc0.weight.detach()
    expected_std = (2.0 / (weight.shape[0] + weight.shape[1])) ** 0.5
    assert float(weight.std()) == pytest.approx(expected_std, rel=0.02)
    assert float(glorot.fc0.bias.detach().abs().max()) == 0.0
    he = built("resnet20", seed=5)  # kaiming_normal: std = sqrt(2 / fan_in)
    conv = he.layer3[1].conv1.weight.detach()
    assert float(conv.std()) == pytest.approx((2.0 / (64 * 9)) ** 0.5, rel=0.03)
    with pytest.raises(UserError, match="init='orthogonal' is not allowed"):
        built("conv2", init="orthogonal")


def test_bad_options_and_inputs_are_user_errors():
    with pytest.raises(UserError, match="needs image inputs"):
        build_model(model_cfg("conv2"), (784,), 10, seed=0)
    with pytest.raises(UserError, match="shortcut='B' is not allowed"):
        build_model(model_cfg("resnet20", shortcut="B"), CIFAR, 10, seed=0)
    with pytest.raises(UserError, match="cannot take inputs of shape"):
        build_model(model_cfg("lenet5", padding=0), (1, 8, 8), 10, seed=0)
