"""CIFAR ResNets (He et al. 2016, sec. 4.2): depth 6n+2, three stages of n basic blocks.

Stage widths are 16/32/64 times `width`. The shortcut where the shape changes is a 1x1
convolution + BatchNorm (`shortcut: projection`, the default, as open_lth's cifar_resnet) or
the paper's parameter-free option A (`shortcut: A`: subsample and zero-pad the channels).
ResNet-20 on CIFAR-10 has 272,474 parameters with projections, 269,722 with option A.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from overparam.errors import UserError
from overparam.models.common import as_image_batch, image_shape, initialize

SHORTCUTS = ("projection", "A")


class PadShortcut(nn.Module):
    """Option A: take every `stride`-th pixel and zero-pad the channels from `in_channels` to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.front = (out_channels - in_channels) // 2
        self.back = out_channels - in_channels - self.front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.front, self.back))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv3x3-BN-ReLU, stages layer1..layer3, global average pooling, linear `fc_out`."""

    output_layer = "fc_out"

    def __init__(self, in_channels: int, num_classes: int, blocks_per_stage: int, width: int, shortcut: str):
        super().__init__()
        widths = [16 * width, 32 * width, 64 * width]
        self.conv0 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(widths[0])
        previous = widths[0]
        stages = []
        for stage, channels in enumerate(widths):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(previous, channels, stride, shortcut))
                previous = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc_out = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.conv0(as_image_batch(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc_out(x.mean(dim=(2, 3)))


def cifar_resnet(input_shape, num_classes: int, depth: int = 20, width: int = 1, shortcut: str = "projection",
                 init: str = "kaiming_normal") -> nn.Module:
    """A CIFAR ResNet of `depth` = 6n+2 layers (20, 32, 44, 56, 110, ...) and channel multiplier `width`."""
    shape = image_shape(input_shape, f"resnet{depth}")
    if int(depth) < 8 or (int(depth) - 2) % 6:
        raise UserError(f"model.depth={depth} is not allowed; a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110)")
    if int(width) < 1 or int(width) != width:
        raise UserError(f"model.width={width} must be a positive integer")
    if shortcut not in SHORTCUTS:
        raise UserError(f"model.shortcut={shortcut!r} is not allowed; choose one of: {', '.join(SHORTCUTS)}")
    model = CifarResNet(shape[0], int(num_classes), (int(depth) - 2) // 6, int(width), shortcut)
    return initialize(model, init)


def resnet20(input_shape, num_classes: int, width: int = 1, shortcut: str = "projection",
             init: str = "kaiming_normal") -> nn.Module:
    """ResNet-20 for CIFAR (3 stages of 3 basic blocks, 16/32/64 x `width` channels)."""
    return cifar_resnet(input_shape, num_classes, depth=20, width=width, shortcut=shortcut, init=init)
