"""CIFAR VGG with BatchNorm and one linear classifier, as in open_lth (Frankle et al.).

3x3 convolutions (padding 1, with bias) each followed by BatchNorm and ReLU, 2x2 max-pooling
at each 'M', global average pooling, then `fc_out`. open_lth averages the final 2x2 map of a
32x32 input with AvgPool2d(2); global average pooling is the same there and also accepts 28x28
inputs (whose final map is 1x1). VGG-16 on CIFAR-10 has 14,728,266 parameters, VGG-11 9,231,114.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.common import as_image_batch, flat_features, image_shape, initialize

PLANS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    """`features` (conv/BN/ReLU and pools, named conv<i>, bn<i>, relu<i>, pool<j>), then `fc_out`."""

    output_layer = "fc_out"

    def __init__(self, name: str, input_shape: tuple[int, int, int], plan, num_classes: int):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        previous, conv_index, pool_index = input_shape[0], 0, 0
        for entry in plan:
            if entry == "M":
                layers.append((f"pool{pool_index}", nn.MaxPool2d(2)))
                pool_index += 1
                continue
            layers += [(f"conv{conv_index}", nn.Conv2d(previous, int(entry), 3, padding=1)),
                       (f"bn{conv_index}", nn.BatchNorm2d(int(entry))),
                       (f"relu{conv_index}", nn.ReLU())]
            previous, conv_index = int(entry), conv_index + 1
        self.features = nn.Sequential(OrderedDict(layers))
        flat_features(self.features, input_shape, name)  # a clear error for inputs the pools shrink to nothing
        self.fc_out = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(as_image_batch(x))
        return self.fc_out(x.mean(dim=(2, 3)))


def vgg(input_shape, num_classes: int, depth: int = 16, init: str = "kaiming_normal") -> nn.Module:
    """CIFAR VGG-`depth` (11, 13, 16 or 19) with BatchNorm."""
    name = f"vgg{depth}"
    if name not in PLANS:
        raise UserError(f"model.depth={depth} is not allowed; choose one of: 11, 13, 16, 19")
    shape = image_shape(input_shape, name)
    return initialize(VGG(name, shape, PLANS[name], int(num_classes)), init)


def vgg11(input_shape, num_classes: int, init: str = "kaiming_normal") -> nn.Module:
    """VGG-11 for CIFAR with BatchNorm (9,231,114 parameters on CIFAR-10)."""
    return vgg(input_shape, num_classes, depth=11, init=init)


def vgg16(input_shape, num_classes: int, init: str = "kaiming_normal") -> nn.Module:
    """VGG-16 for CIFAR with BatchNorm (14,728,266 parameters on CIFAR-10)."""
    return vgg(input_shape, num_classes, depth=16, init=init)
