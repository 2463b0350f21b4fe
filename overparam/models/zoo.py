"""Architectures of the zoo. Each factory takes `input_shape` and `num_classes` plus its options."""

from __future__ import annotations

import math

import torch
from torch import nn

from overparam.errors import UserError


def _flat_size(input_shape) -> int:
    return int(math.prod(input_shape))


class MLP(nn.Sequential):
    """Flatten, then Linear+ReLU per hidden width, then a Linear classifier named `fc_out`.

    `residual=True` adds each hidden layer's input to its output where the widths agree (h + relu(fc(h))),
    as the MNIST-1D paper's MLPBase does for its second layer.
    """

    output_layer = "fc_out"

    def __init__(self, in_features: int, widths, num_classes: int, residual: bool = False):
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        previous = in_features
        for index, width in enumerate(widths):
            layers += [(f"fc{index}", nn.Linear(previous, int(width))), (f"relu{index}", nn.ReLU())]
            previous = int(width)
        layers.append(("fc_out", nn.Linear(previous, num_classes)))
        from collections import OrderedDict

        super().__init__(OrderedDict(layers))
        self.residual = bool(residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return super().forward(x)
        h = self.flatten(x)
        index = 0
        while hasattr(self, f"fc{index}"):
            out = torch.relu(getattr(self, f"fc{index}")(h))
            h = h + out if index > 0 and out.shape == h.shape else out
            index += 1
        return self.fc_out(h)


def mlp(input_shape, num_classes: int, widths=(256, 256), residual: bool = False) -> nn.Module:
    """Fully-connected ReLU network (`widths=[300, 100]` is LeNet-300-100; `widths=[]` is logistic regression)."""
    return MLP(_flat_size(input_shape), list(widths), num_classes, residual=residual)


def logreg(input_shape, num_classes: int) -> nn.Module:
    """Logistic regression: one Linear layer `fc_out` on the flattened input (an MLP without hidden layers)."""
    return MLP(_flat_size(input_shape), [], num_classes)


def mlp_mnist1d(input_shape, num_classes: int, hidden: int = 100) -> nn.Module:
    """The MNIST-1D paper's MLPBase: two hidden layers of `hidden` units, the second residual."""
    return mlp(input_shape, num_classes, widths=(hidden, hidden), residual=True)


class CNN1d(nn.Module):
    """Three 1-D conv layers (kernel 5 then 3, stride 2) with ReLU, then global average pooling (`pool=mean`)
    or the flattened feature map (`pool=flatten`, the MNIST-1D paper's ConvBase), linear head."""

    output_layer = "fc_out"

    def __init__(self, in_channels: int, channels: int, num_classes: int, length: int = 40, padding: int = 2,
                 pool: str = "mean"):
        super().__init__()
        if pool not in ("mean", "flatten"):
            raise UserError(f"cnn1d: pool must be mean or flatten, not {pool!r}")
        self.pool = pool
        self.conv0 = nn.Conv1d(in_channels, channels, 5, stride=2, padding=padding)
        self.conv1 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        out_length = (length + 2 * padding - 5) // 2 + 1
        for _ in range(2):
            out_length = (out_length + 2 - 3) // 2 + 1
        self.fc_out = nn.Linear(channels * (out_length if pool == "flatten" else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        x = torch.relu(self.conv0(x))
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc_out(x.flatten(1) if self.pool == "flatten" else x.mean(dim=-1))


def cnn1d(input_shape, num_classes: int, channels: int = 32, padding: int = 2, pool: str = "mean") -> nn.Module:
    """1-D CNN for sequence data such as mnist1d (input (N, L) or (N, C, L))."""
    in_channels = 1 if len(input_shape) == 1 else int(input_shape[0])
    return CNN1d(in_channels, int(channels), num_classes, length=int(input_shape[-1]), padding=int(padding),
                 pool=str(pool))


def cnn1d_mnist1d(input_shape, num_classes: int, channels: int = 25) -> nn.Module:
    """The MNIST-1D paper's ConvBase: cnn1d with first-conv padding 1 and the flattened feature map into the head."""
    return cnn1d(input_shape, num_classes, channels=channels, padding=1, pool="flatten")
