"""CIFAR VGG-16 with BatchNorm of the OKDDip/ONE model zoo.

Definition, matched to the zoo's parameter counts to the unit (15,253,578 / 15,299,748 params for C = 10 / 100):

- 13 conv3x3 (padding 1) WITH bias, each followed by BN + ReLU, in five blocks
  64x2, 128x2, 256x3, 512x3, 512x3, each block ending in MaxPool2d(2) (32x32 input -> 1x1x512);
- classifier: Linear(512, 512) + ReLU + Dropout(p) + Linear(512, 512) + ReLU + Dropout(p) + Linear(512, C), all
  with bias. p = 0.5 by default: the dropout of the zoo's multi-branch VGGs (ONE's and OKDDip's ``vgg_one`` /
  ``vgg_GL``); its single-network VGG defaults to 0.0. Every method gets the same p, so the comparison stays fair
  (``build_backbone(..., dropout=...)``, the run's ``dropout`` key). The Dropout layers are always present (p = 0
  makes them the identity), so state-dict keys do not depend on p. Dropout has no parameters: the counts cannot
  tell. Under PCL's temporal mean with ``ema_buffers='forward'`` the mean network runs in train mode, so its
  dropout is active too, as in Mean Teacher, whose teacher sees noise like the student.

Initialisation, the zoo's VGG rule: conv kaiming-normal fan_out (ReLU) with zero bias, BN weight 1 / bias 0, every
Linear N(0, 0.01) with zero bias.

The conv biases are what make the count match: without them the total is 4,224 smaller.

Split (last stage; reconstructed, not stated in the paper: README, "What is the paper's and what is ours"): shared = the
first four blocks (through 512x3 + pool); head.body = the last 512x3 + pool block; head.classifier = the 512-512-C MLP.
The head's global average pool is a no-op reshape on the 1x1 map of a 32x32 input and keeps the net usable on other
sizes.
"""

from __future__ import annotations

from torch import nn

from pcl.declarations import BackboneSpec

from .base import Backbone, Head, init_weights

DECLARATIONS = (
    BackboneSpec(name="vgg16", display="VGG-16", builder="vgg16",
                 citation="Simonyan & Zisserman, ICLR 2015, with BatchNorm (OKDDip/ONE zoo)",
                 datasets=("cifar10", "cifar100", "synthetic"), params={10: 15_253_578, 100: 15_299_748},
                 split=("shared = the first four conv blocks; branch = the last 512x3 block + pool + the 512-512-C "
                        "MLP (ours: the paper does not state it)"),
                 init="conv kaiming-normal fan_out (ReLU) with zero bias, BN 1 / 0, every Linear N(0, 0.01)",
                 dropout=0.5, revision=2, relative_cost=1.53, tables=("table2",), order=3),
)

__all__ = ["vgg16"]


def _conv_block(in_channels: int, out_channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` x (conv3x3 with bias + BN + ReLU), then a 2x2 max-pool."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg16(num_classes: int, dropout: float = 0.5) -> Backbone:
    """CIFAR VGG-16 (BN, conv biases, 512-512-C classifier with dropout p), split before the last conv block."""
    shared = nn.Sequential(
        _conv_block(3, 64, 2),
        _conv_block(64, 128, 2),
        _conv_block(128, 256, 3),
        _conv_block(256, 512, 3),
    )
    body = _conv_block(512, 512, 3)
    mlp = nn.Sequential(
        nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(512, num_classes),
    )
    head = Head(body, mlp, 512)
    net = Backbone(shared, head, "vgg16", num_classes)
    init_weights(net, conv_mode="fan_out", linear_std=0.01, linear_zero_bias=True)
    return net
