"""Backbones (the OKDDip/ONE CIFAR model zoo, torchvision on ImageNet) and PCL's multi-branch network.

Every backbone is a :class:`Backbone`: shared low-level layers + a :class:`Head` (last stage, pool,
classifier). :class:`MultiBranchNet` shares one backbone's ``shared`` part across m independently initialised
heads (peers). A backbone declares itself in its file (``DECLARATIONS = (BackboneSpec(...), ...)``, read by
``pcl.registry`` without torch); ``BACKBONES`` maps each declared name to its file's builder.
"""

from __future__ import annotations

import importlib
import numbers
from typing import Callable

from torch import nn

from pcl import registry
from pcl.registry import check_dropout

from .base import Backbone, Head

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

#: every declared backbone -> its builder (the function its declaration names, in its own file)
BACKBONES: dict[str, Callable[..., Backbone]] = {
    name: getattr(importlib.import_module(registry.backbone_module(name)), spec.builder)
    for name, spec in registry.backbones().items()}
#: the rows of the paper's CIFAR and ImageNet tables (declared `tables`)
CIFAR_BACKBONES: tuple[str, ...] = registry.table_backbones("table2")
IMAGENET_BACKBONES: tuple[str, ...] = registry.dataset_backbones("imagenet")
#: Backbones with dropout layers and the zoo's dropout probability for each (declared `dropout`)
DEFAULT_DROPOUT: dict[str, float] = registry.default_dropout()
#: Revision of each backbone's definition (declared `revision`; unlisted backbones are at revision 1)
REVISIONS: dict[str, int] = {n: s.revision for n, s in registry.backbones().items() if s.revision != 1}


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
