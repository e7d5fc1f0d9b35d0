"""CIFAR ResNets of the OKDDip/ONE model zoo: resnet32, resnet110 and wrn20_8.

Definition (torchvision-style blocks on a CIFAR stem), matched to the zoo's parameter counts to the unit:

- stem: conv3x3(3 -> 16, stride 1, no bias) + BN + ReLU (no max-pool; inputs are 32x32);
- three stages of ``planes`` 16 / 32 / 64, strides 1 / 2 / 2;
- every conv has no bias; a block whose input and output shapes differ gets a projection shortcut
  conv1x1(stride) + BN (option B, not the zero-padding option A);
- BasicBlock: conv3x3 + BN + ReLU + conv3x3 + BN, expansion 1;
- Bottleneck: conv1x1 (-> width) + BN + ReLU + conv3x3(stride) (width) + BN + ReLU + conv1x1 (-> 4*planes) + BN,
  with ``width = planes * width_per_group / 64`` (torchvision's wide bottleneck);
- global average pool + Linear(planes[-1] * expansion -> C) with bias.

Networks:

- resnet32  = BasicBlock [5, 5, 5]                              466,906 / 472,756 params (C = 10 / 100)
- resnet110 = Bottleneck [12, 12, 12], width_per_group 64       1,147,738 / 1,170,868
- wrn20_8   = Bottleneck [2, 2, 2], width_per_group 64*8        6,848,090 / 6,871,220
  (so inner widths 128 / 256 / 512, outputs 64 / 128 / 256).

Initialisation, the zoo's ResNet rule: conv kaiming-normal fan_out (ReLU), BN weight 1 / bias 0, the classifier
PyTorch's default (the zoo's ResNets do not touch their Linear).

Split (last stage; reconstructed, not stated in the paper: README, "What is the paper's and what is ours"): shared =
stem + stage1 + stage2; head.body = stage3.
"""

from __future__ import annotations

from torch import Tensor, nn

from pcl.declarations import BackboneSpec

from .base import Backbone, Head, init_weights

DECLARATIONS = (
    BackboneSpec(name="resnet32", display="ResNet-32", builder="resnet32",
                 citation="He et al., CVPR 2016 (OKDDip/ONE zoo)",
                 datasets=("cifar10", "cifar100", "synthetic"), params={10: 466_906, 100: 472_756},
                 split='shared = stem + stage1 + stage2; branch = stage3 + pool + classifier (ours: the paper does not state it)', init="conv kaiming-normal fan_out (ReLU), BN weight 1 / bias 0, the classifier PyTorch's default (the zoo's rule)", relative_cost=1.0, tables=("table2",), order=0),
    BackboneSpec(name="resnet110", display="ResNet-110", builder="resnet110",
                 citation="He et al., CVPR 2016 (OKDDip/ONE zoo: Bottleneck [12, 12, 12])",
                 datasets=("cifar10", "cifar100", "synthetic"), params={10: 1_147_738, 100: 1_170_868},
                 split='shared = stem + stage1 + stage2; branch = stage3 + pool + classifier (ours: the paper does not state it)', init="conv kaiming-normal fan_out (ReLU), BN weight 1 / bias 0, the classifier PyTorch's default (the zoo's rule)", relative_cost=3.45, tables=("table2",), order=1),
    BackboneSpec(name="wrn20_8", display="WRN-20-8", builder="wrn20_8",
                 citation="Zagoruyko & Komodakis, BMVC 2016 (OKDDip zoo: Bottleneck [2, 2, 2], width 64*8)",
                 datasets=("cifar10", "cifar100", "synthetic"), params={10: 6_848_090, 100: 6_871_220},
                 split='shared = stem + stage1 + stage2; branch = stage3 + pool + classifier (ours: the paper does not state it)', init="conv kaiming-normal fan_out (ReLU), BN weight 1 / bias 0, the classifier PyTorch's default (the zoo's rule)", relative_cost=1.26, tables=("table2",), order=2),
    BackboneSpec(name="tiny_resnet8", display="tiny ResNet-8", builder="tiny_resnet8",
                 citation="not in the paper: BasicBlock [1, 1, 1], widths 4/8/16, smoke runs and tests on a CPU",
                 datasets=("cifar10", "cifar100", "synthetic"), params={10: 5_214, 100: 6_744},
                 split='shared = stem + stage1 + stage2; branch = stage3 + pool + classifier (ours: the paper does not state it)', init="conv kaiming-normal fan_out (ReLU), BN weight 1 / bias 0, the classifier PyTorch's default (the zoo's rule)", relative_cost=0.2, in_paper=False, order=90),
)

__all__ = ["BasicBlock", "Bottleneck", "cifar_resnet", "resnet32", "resnet110", "wrn20_8"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (expansion 1)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, base_width: int = 64
    ) -> None:
        super().__init__()
        if base_width != 64:
            raise ValueError(f"BasicBlock only supports width_per_group=64, got {base_width}")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (expansion 4), stride on the 3x3 conv, width scaled by base_width/64."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, base_width: int = 64
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_stage(
    block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int, stride: int, base_width: int
) -> tuple[nn.Sequential, int]:
    """One stage of ``blocks`` blocks; returns it and its output channel count."""
    out_planes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = nn.Sequential(conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
    layers: list[nn.Module] = [block(inplanes, planes, stride, downsample, base_width)]
    layers += [block(out_planes, planes, 1, None, base_width) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out_planes


def cifar_resnet(
    name: str,
    block: type[BasicBlock] | type[Bottleneck],
    layers: tuple[int, int, int],
    num_classes: int,
    width_per_group: int = 64,
    widths: tuple[int, int, int] = (16, 32, 64),
) -> Backbone:
    """Build a CIFAR ResNet already split into shared (stem + stages 1-2) and head (stage 3 + pool + FC)."""
    stem = nn.Sequential(conv3x3(3, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
    stage1, c = _make_stage(block, widths[0], widths[0], layers[0], 1, width_per_group)
    stage2, c = _make_stage(block, c, widths[1], layers[1], 2, width_per_group)
    stage3, c = _make_stage(block, c, widths[2], layers[2], 2, width_per_group)
    shared = nn.Sequential()
    shared.add_module("stem", stem)
    shared.add_module("layer1", stage1)
    shared.add_module("layer2", stage2)
    head = Head(stage3, nn.Linear(c, num_classes), c)
    net = Backbone(shared, head, name, num_classes)
    init_weights(net, conv_mode="fan_out")
    return net


def resnet32(num_classes: int) -> Backbone:
    """ResNet-32: BasicBlock [5, 5, 5], widths 16/32/64 (466,906 params for 10 classes)."""
    return cifar_resnet("resnet32", BasicBlock, (5, 5, 5), num_classes)


def resnet110(num_classes: int) -> Backbone:
    """ResNet-110 of the OKDDip zoo: Bottleneck [12, 12, 12] (1,147,738 params for 10 classes).

    Not the 1.73M BasicBlock ResNet-110 of other repos.
    """
    return cifar_resnet("resnet110", Bottleneck, (12, 12, 12), num_classes)


def wrn20_8(num_classes: int) -> Backbone:
    """WRN-20-8 of the OKDDip zoo: Bottleneck [2, 2, 2], width_per_group 64*8 (6,848,090 params for 10 classes)."""
    return cifar_resnet("wrn20_8", Bottleneck, (2, 2, 2), num_classes, width_per_group=64 * 8)


def tiny_resnet8(num_classes: int) -> Backbone:
    """Not in the paper: BasicBlock [1, 1, 1], widths 4/8/16, for smoke runs and tests on a CPU (seconds)."""
    return cifar_resnet("tiny_resnet8", BasicBlock, (1, 1, 1), num_classes, widths=(4, 8, 16))
