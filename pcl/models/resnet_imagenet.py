"""ImageNet ResNet-18 / ResNet-34, re-using torchvision's modules.

The network is ``torchvision.models.resnet18/34(weights=None, num_classes=C)`` with its modules moved, not
copied or re-created, into the shared/head split, so its parameter count and initialisation are exactly
torchvision's (11,689,512 / 21,797,672 params for 1000 classes):

- shared = conv1 + bn1 + relu + maxpool + layer1 + layer2 + layer3;
- head.body = layer4; head.classifier = fc (512 -> C); torchvision's avgpool is replaced by the head's
  adaptive average pool (same operation, no parameters).

The split follows ONE's ImageNet multi-branch ResNet (ours, not stated in the paper).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

from pcl.declarations import BackboneSpec

if TYPE_CHECKING:  # imported where a network is built: torchvision's import costs ~2 s (its ops import
    # torch._dynamo), and every CIFAR run and test worker imported it through the backbone registry
    from torchvision.models import resnet as tv_resnet

from .base import Backbone, Head

DECLARATIONS = (
    BackboneSpec(name="resnet18", display="ResNet-18", builder="resnet18",
                 citation="He et al., CVPR 2016 (torchvision)",
                 datasets=("imagenet", "synthetic"), params={1000: 11_689_512},
                 split=("shared = conv1 + bn1 + maxpool + layer1-3; branch = layer4 + pool + fc "
                        "(ONE's ImageNet multi-branch ResNet; ours: the paper does not state it)"), init="torchvision's",
                 relative_cost=5.5, tables=("imagenet",), order=10),
    BackboneSpec(name="resnet34", display="ResNet-34", builder="resnet34",
                 citation="He et al., CVPR 2016 (torchvision)",
                 datasets=("imagenet", "synthetic"), params={1000: 21_797_672},
                 split=("shared = conv1 + bn1 + maxpool + layer1-3; branch = layer4 + pool + fc "
                        "(ONE's ImageNet multi-branch ResNet; ours: the paper does not state it)"), init="torchvision's",
                 relative_cost=10.0, order=11),
)

__all__ = ["from_torchvision_resnet", "resnet18", "resnet34"]


def from_torchvision_resnet(name: str, net: tv_resnet.ResNet, num_classes: int) -> Backbone:
    """Split a torchvision ResNet into shared (stem + layer1-3) and head (layer4 + pool + fc)."""
    shared = nn.Sequential()
    for key in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"):
        shared.add_module(key, getattr(net, key))
    head = Head(net.layer4, net.fc, net.fc.in_features)
    return Backbone(shared, head, name, num_classes)


def _build(name: str, num_classes: int) -> Backbone:
    from torchvision.models import resnet as tv_resnet

    ctor: Callable[..., tv_resnet.ResNet] = getattr(tv_resnet, name)
    return from_torchvision_resnet(name, ctor(weights=None, num_classes=num_classes), num_classes)


def resnet18(num_classes: int) -> Backbone:
    """torchvision ResNet-18 (BasicBlock [2, 2, 2, 2]), split before layer4."""
    return _build("resnet18", num_classes)


def resnet34(num_classes: int) -> Backbone:
    """torchvision ResNet-34 (BasicBlock [3, 4, 6, 3]), split before layer4."""
    return _build("resnet34", num_classes)
