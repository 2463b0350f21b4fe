"""LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, as used in the pruning literature."""

from __future__ import annotations

import math

import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.common import as_image_batch, image_shape, initialize


class LeNet5(nn.Module):
    """conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc_out."""

    output_layer = "fc_out"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, padding: int):
        super().__init__()
        channels = input_shape[0]
        self.conv0 = nn.Conv2d(channels, 6, 5, padding=padding)
        self.conv1 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        height, width = (((size + 2 * padding - 4) // 2 - 4) // 2 for size in input_shape[1:])
        if height < 1 or width < 1:
            raise UserError(f"model lenet5 cannot take inputs of shape {tuple(input_shape)} with padding {padding}: "
                            f"too small for two 5x5 convs and two 2x2 pools")
        self.fc0 = nn.Linear(16 * height * width, 120)
        self.fc1 = nn.Linear(120, 84)
        self.fc_out = nn.Linear(84, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv0(as_image_batch(x))))
        x = self.pool(torch.relu(self.conv1(x)))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._features(x)
        x = torch.relu(self.fc0(x))
        x = torch.relu(self.fc1(x))
        return self.fc_out(x)


def lenet5(input_shape, num_classes: int, padding: int | None = None, init: str = "torch") -> nn.Module:
    """LeNet-5. `padding=None` zero-pads inputs smaller than 32x32 in the first conv up to LeNet's
    32x32 (MNIST 28x28 -> padding 2, 61,706 parameters; CIFAR 3x32x32 -> padding 0, 62,006)."""
    shape = image_shape(input_shape, "lenet5")
    if padding is None:
        padding = max(0, math.ceil((32 - min(shape[1], shape[2])) / 2))
    return initialize(LeNet5(shape, int(num_classes), int(padding)), init)
