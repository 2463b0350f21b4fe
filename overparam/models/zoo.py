"""Architectures of the zoo. Each factory takes `input_shape` and `num_classes` plus its options."""

from __future__ import annotations

import math

import torch
from torch import nn


def _flat_size(input_shape) -> int:
    return int(math.prod(input_shape))


class MLP(nn.Sequential):
    """Flatten, then Linear+ReLU per hidden width, then a Linear classifier named `fc_out`."""

    output_layer = "fc_out"

    def __init__(self, in_features: int, widths, num_classes: int):
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        previous = in_features
        for index, width in enumerate(widths):
            layers += [(f"fc{index}", nn.Linear(previous, int(width))), (f"relu{index}", nn.ReLU())]
            previous = int(width)
        layers.append(("fc_out", nn.Linear(previous, num_classes)))
        from collections import OrderedDict

        super().__init__(OrderedDict(layers))


def mlp(input_shape, num_classes: int, widths=(256, 256)) -> nn.Module:
    """Fully-connected ReLU network (`widths=[300, 100]` is LeNet-300-100)."""
    return MLP(_flat_size(input_shape), list(widths), num_classes)


class CNN1d(nn.Module):
    """Three 1-D conv layers (kernel 5, stride 2) with ReLU, global average pooling, linear head."""

    output_layer = "fc_out"

    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.conv0 = nn.Conv1d(in_channels, channels, 5, stride=2, padding=2)
        self.conv1 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.fc_out = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        x = torch.relu(self.conv0(x))
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc_out(x.mean(dim=-1))


def cnn1d(input_shape, num_classes: int, channels: int = 32) -> nn.Module:
    """1-D CNN for sequence data such as mnist1d (input (N, L) or (N, C, L))."""
    in_channels = 1 if len(input_shape) == 1 else int(input_shape[0])
    return CNN1d(in_channels, int(channels), num_classes)
