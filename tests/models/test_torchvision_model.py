"""`model=torchvision`: any torchvision classifier by name, adapted to the dataset's shape."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from overparam.cli.paths import config_dir
from overparam.errors import UserError
from overparam.models import build_model, count_parameters, output_layer_name


def tv_cfg(**overrides):
    cfg = OmegaConf.load(config_dir() / "model" / "torchvision.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_resnet18_with_ten_classes_runs_on_cifar_sized_batches():
    model = build_model(tv_cfg(), (3, 32, 32), 10, seed=0)
    # torchvision's resnet18 has 11,689,512 parameters with 1000 classes; the head 512x1000+1000
    # becomes 512x10+10: 11,689,512 - 513,000 + 5,130.
    assert count_parameters(model) == 11_181_642
    assert output_layer_name(model) == "fc"
    model.train()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    out.sum().backward()

    # Seeded like every model: the same seed gives the same initial weights, another seed others.
    same = build_model(tv_cfg(), (3, 32, 32), 10, seed=0)
    other = build_model(tv_cfg(), (3, 32, 32), 10, seed=1)
    initial = same.state_dict()
    model_state = model.state_dict()
    assert all(torch.equal(model_state[k], initial[k]) for k in initial if k.endswith("weight"))
    assert not torch.equal(other.fc.weight, same.fc.weight) and not torch.equal(other.conv1.weight, same.conv1.weight)


def test_gray_inputs_small_stem_and_clear_errors():
    gray = build_model(tv_cfg(small_input_stem=True), (1, 28, 28), 10, seed=0)
    assert gray.conv1.in_channels == 1 and gray.conv1.kernel_size == (3, 3) and gray.conv1.stride == (1, 1)
    assert isinstance(gray.maxpool, torch.nn.Identity)
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(UserError, match="model.arch='resnet_18' is not a torchvision classification model"):
        build_model(tv_cfg(arch="resnet_18"), (3, 32, 32), 10, seed=0)
    with pytest.raises(UserError, match="small_input_stem=true works for the ResNet family"):
        build_model(tv_cfg(arch="squeezenet1_1", small_input_stem=True), (3, 32, 32), 10, seed=0)
