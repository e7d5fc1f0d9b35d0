"""Backbones (spec section 9) and the multi-branch network of PCL (spec section 2).

Every backbone is a :class:`Backbone`: shared low-level layers + a :class:`Head` (last stage, pool,
classifier). :class:`MultiBranchNet` shares one backbone's ``shared`` part across m independently initialised
heads (peers). Backbones are registered in an explicit dict so the set of valid names is visible in one place
and error messages can list it.
"""

from __future__ import annotations

import numbers
from typing import Callable

from torch import nn

from .base import Backbone, Head
from .densenet import densenet40_12
from .resnet_cifar import resnet32, resnet110, tiny_resnet8, wrn20_8
from .resnet_imagenet import resnet18, resnet34
from .vgg import vgg16

__all__ = [
    "BACKBONES",
    "CIFAR_BACKBONES",
    "IMAGENET_BACKBONES",
    "Backbone",
    "Head",
    "MultiBranchNet",
    "build_backbone",
    "count_parameters",
]

BACKBONES: dict[str, Callable[[int], Backbone]] = {
    "resnet32": resnet32,
    "resnet110": resnet110,
    "wrn20_8": wrn20_8,
    "vgg16": vgg16,
    "densenet40_12": densenet40_12,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "tiny_resnet8": tiny_resnet8,  # not in the paper: smoke runs and tests only
}
CIFAR_BACKBONES: tuple[str, ...] = ("resnet32", "resnet110", "wrn20_8", "vgg16", "densenet40_12")
IMAGENET_BACKBONES: tuple[str, ...] = ("resnet18", "resnet34")


def build_backbone(name: str, num_classes: int) -> Backbone:
    """Build a freshly (randomly) initialised backbone by name; fails loudly on a bad name or class count."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return BACKBONES[name](int(num_classes))


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (sum of ``p.numel()``), the quantity of the spec's table (section 9)."""
    return sum(p.numel() for p in module.parameters())


from .multibranch import MultiBranchNet  # noqa: E402  (multibranch imports build_backbone from here)
