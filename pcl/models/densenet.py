"""CIFAR DenseNet-40-12 (BC) of the OKDDip/ONE model zoo.

Definition, matched to the zoo's parameter counts to the unit (176,122 / 188,092 params for C = 10 / 100):

- conv0: conv3x3(3 -> 24 = 2 * growth, no bias); no BN/pool after it (CIFAR stem);
- three dense blocks of 6 bottleneck layers each (depth 40 = 3 * 6 * 2 + 4), growth rate 12;
  a layer is BN + ReLU + conv1x1(-> bn_size*growth = 48, no bias) + BN + ReLU + conv3x3(-> 12, no bias),
  its output concatenated to its input; no dropout;
- transitions (after blocks 1 and 2): BN + ReLU + conv1x1(c -> floor(c * 0.5), no bias) + AvgPool2d(2);
  channels 24 -> 96 -> 48 -> 120 -> 60 -> 132;
- final BN + ReLU, global average pool, Linear(132 -> C) with bias.

Initialisation, the zoo's DenseNet rule: convolutions kaiming-normal with fan_in (std sqrt(2 / (in_channels * k*k)),
PyTorch's default mode, which the zoo's ``nn.init.kaiming_normal_(m.weight)`` uses), BN weight 1 / bias 0, the
classifier's weight PyTorch's default and its bias 0.

Split (last stage; reconstructed, not stated in the paper: README, "What is the paper's and what is ours"): shared =
conv0 + block1 + transition1 + block2 + transition2; head.body = block3 + final BN + ReLU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pcl.declarations import BackboneSpec

from .base import Backbone, Head, init_weights

DECLARATIONS = (
    BackboneSpec(name="densenet40_12", display="DenseNet-40-12", builder="densenet40_12",
                 citation="Huang et al., CVPR 2017, BC variant (OKDDip/ONE zoo)",
                 datasets=("cifar10", "cifar100", "synthetic"), params={10: 176_122, 100: 188_092},
                 split=("shared = conv0 + block1 + transition1 + block2 + transition2; branch = block3 + BN + ReLU "
                        "+ pool + classifier (ours: the paper does not state it)"),
                 init="conv kaiming-normal fan_in, BN 1 / 0, classifier PyTorch's default weight and zero bias",
                 revision=2, relative_cost=3.07, tables=("table2",), order=4),
)

__all__ = ["DenseLayer", "DenseBlock", "Transition", "densenet_bc", "densenet40_12"]


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3 producing ``growth_rate`` new channels, concatenated to the input."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        inter = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, inter, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, growth_rate, kernel_size=3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        # No inplace ReLU directly on x: x is also part of the concatenated output.
        out = self.conv1(torch.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        return torch.cat([x, out], dim=1)


class DenseBlock(nn.Sequential):
    """``num_layers`` dense layers; output has ``in_channels + num_layers * growth_rate`` channels."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__(
            *[DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size) for i in range(num_layers)]
        )


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compression) + 2x2 average pool between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )


def densenet_bc(
    name: str,
    num_classes: int,
    growth_rate: int = 12,
    block_config: tuple[int, int, int] = (6, 6, 6),
    compression: float = 0.5,
    num_init_features: int = 24,
    bn_size: int = 4,
) -> Backbone:
    """Build a CIFAR DenseNet-BC, split before the last dense block."""
    c = num_init_features
    shared = nn.Sequential()
    shared.add_module("conv0", nn.Conv2d(3, c, kernel_size=3, padding=1, bias=False))
    for i, n in enumerate(block_config[:-1]):
        shared.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth_rate, bn_size))
        c += n * growth_rate
        out = int(c * compression)
        shared.add_module(f"transition{i + 1}", Transition(c, out))
        c = out
    body = nn.Sequential()
    body.add_module(f"denseblock{len(block_config)}", DenseBlock(block_config[-1], c, growth_rate, bn_size))
    c += block_config[-1] * growth_rate
    body.add_module("norm", nn.BatchNorm2d(c))
    body.add_module("relu", nn.ReLU(inplace=True))
    head = Head(body, nn.Linear(c, num_classes), c)
    net = Backbone(shared, head, name, num_classes)
    init_weights(net, conv_mode="fan_in", linear_zero_bias=True)
    return net


def densenet40_12(num_classes: int) -> Backbone:
    """DenseNet-40-12 BC: growth 12, blocks [6, 6, 6], compression 0.5 (176,122 params for 10 classes)."""
    return densenet_bc("densenet40_12", num_classes)
