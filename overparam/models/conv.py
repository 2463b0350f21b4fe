"""Conv-2/4/6: the CIFAR-10 conv nets of the lottery-ticket paper (Frankle & Carbin 2019, fig. 2).

3x3 convolutions (padding 1, with bias) in pairs, 2x2 max-pooling after each pair, then
fully-connected 256-256 and the classifier, ReLU throughout. Layers are named conv0.., fc0,
fc1, fc_out so masks and pruning rates can address them by name.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from overparam.models.common import as_image_batch, flat_features, image_shape, initialize

PLANS = {
    "conv2": (64, 64),
    "conv4": (64, 64, 128, 128),
    "conv6": (64, 64, 128, 128, 256, 256),
}
HIDDEN = (256, 256)


class ConvNet(nn.Sequential):
    """Conv pairs with max-pooling, then an MLP head; input (N, C, H, W) or (N, H, W)."""

    output_layer = "fc_out"

    def __init__(self, name: str, input_shape: tuple[int, int, int], channels, hidden, num_classes: int):
        layers: list[tuple[str, nn.Module]] = []
        previous = input_shape[0]
        for index, width in enumerate(channels):
            layers += [(f"conv{index}", nn.Conv2d(previous, int(width), 3, padding=1)), (f"relu{index}", nn.ReLU())]
            if index % 2 == 1:
                layers.append((f"pool{index // 2}", nn.MaxPool2d(2)))
            previous = int(width)
        layers.append(("flatten", nn.Flatten()))
        features = flat_features(nn.Sequential(OrderedDict(layers)), input_shape, name)
        for index, width in enumerate(hidden):
            layers += [(f"fc{index}", nn.Linear(features, int(width))), (f"fc_relu{index}", nn.ReLU())]
            features = int(width)
        layers.append(("fc_out", nn.Linear(features, num_classes)))
        super().__init__(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(as_image_batch(x))


def _conv(name: str, input_shape, num_classes: int, init: str) -> nn.Module:
    shape = image_shape(input_shape, name)
    return initialize(ConvNet(name, shape, PLANS[name], HIDDEN, int(num_classes)), init)


def conv2(input_shape, num_classes: int, init: str = "xavier_normal") -> nn.Module:
    """Conv-2: 64-64, pool, FC 256-256 (4,301,642 parameters on CIFAR-10)."""
    return _conv("conv2", input_shape, num_classes, init)


def conv4(input_shape, num_classes: int, init: str = "xavier_normal") -> nn.Module:
    """Conv-4: 64-64, pool, 128-128, pool, FC 256-256 (2,425,930 parameters on CIFAR-10)."""
    return _conv("conv4", input_shape, num_classes, init)


def conv6(input_shape, num_classes: int, init: str = "xavier_normal") -> nn.Module:
    """Conv-6: 64-64, pool, 128-128, pool, 256-256, pool, FC 256-256 (2,262,602 parameters on CIFAR-10)."""
    return _conv("conv6", input_shape, num_classes, init)
