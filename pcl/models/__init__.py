"""Backbones (the OKDDip/ONE CIFAR model zoo, torchvision on ImageNet) and PCL's multi-branch network.

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
    "DEFAULT_DROPOUT",
    "REVISIONS",
    "IMAGENET_BACKBONES",
    "Backbone",
    "Head",
    "MultiBranchNet",
    "build_backbone",
    "check_dropout",
    "count_parameters",
]

BACKBONES: dict[str, Callable[..., Backbone]] = {
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
#: Backbones with dropout layers and the zoo's dropout probability for each (used when ``dropout`` is None):
#: 0.5 in the classifier of the multi-branch VGGs of ONE/OKDDip. Every other backbone has no dropout layer.
DEFAULT_DROPOUT: dict[str, float] = {"vgg16": 0.5}
#: Revision of each backbone's definition (layers, initialisation); bump it when they change, so that the run_keys
#: of that backbone's runs change with it (pcl.schema). 2: the OKDDip/ONE zoo's initialisation (VGG-16 Linear
#: N(0, 0.01), dropout 0.5; DenseNet convolutions kaiming fan_in). Unlisted backbones are at revision 1.
REVISIONS: dict[str, int] = {"vgg16": 2, "densenet40_12": 2}


def check_dropout(name: str, dropout: object) -> float | None:
    """The dropout probability ``name`` is built with: the zoo's default for None, else the value, checked.

    Errors (ValueError, naming the key, the value and what is allowed): a value for a backbone without dropout
    layers; a value that is not a number in [0, 1).
    """
    if name not in DEFAULT_DROPOUT:
        if dropout is not None:
            raise ValueError(f"dropout={dropout!r} cannot be used with backbone {name!r}: it has no dropout layer; "
                             f"leave dropout unset (None), or use one of: {', '.join(sorted(DEFAULT_DROPOUT))}")
        return None
    if dropout is None:
        return DEFAULT_DROPOUT[name]
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1) (or None for the zoo's {DEFAULT_DROPOUT[name]} of "
                         f"{name}), got dropout={dropout!r}")
    return float(dropout)


def build_backbone(name: str, num_classes: int, dropout: float | None = None) -> Backbone:
    """Build a freshly (randomly) initialised backbone by name; fails loudly on a bad name, class count or dropout.

    dropout: probability of the backbone's dropout layers; None = the zoo's default for that backbone
    (:data:`DEFAULT_DROPOUT`: 0.5 for vgg16). Backbones without dropout layers refuse any other value than None.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    p = check_dropout(name, dropout)
    if p is None:
        return BACKBONES[name](int(num_classes))
    return BACKBONES[name](int(num_classes), dropout=p)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (sum of ``p.numel()``), the quantity of the reference counts in tests/test_models.py."""
    return sum(p.numel() for p in module.parameters())


from .multibranch import MultiBranchNet  # noqa: E402  (multibranch imports build_backbone from here)
