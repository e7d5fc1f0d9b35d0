"""The common shape of every backbone: shared low-level layers followed by a head.

PCL (Wu & Gong 2021's multi-branch network) shares a backbone's low-level layers and copies its last stage (the split
point: reconstructed, not stated in the paper) into m peers. Every backbone is therefore written once, already split at
that point, so the multi-branch network can take the ``shared`` part of one build and the ``head`` of m independent
builds, and a single peer can be exported back into a plain :class:`Backbone` by loading state dicts (keys ``shared.*``,
``head.body.*``, ``head.classifier.*``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Head", "Backbone", "init_weights"]


class Head(nn.Module):
    """The last stage + global average pool + classifier: the part copied into every peer."""

    def __init__(self, body: nn.Module, classifier: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.body = body
        self.classifier = classifier
        self.feature_dim = int(feature_dim)

    def pool(self, feature_map: Tensor) -> Tensor:
        """Global average pool to 1x1 and flatten: ``[B, C, h, w] -> [B, C]``."""
        return torch.flatten(F.adaptive_avg_pool2d(feature_map, 1), 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(pooled feature, logits)``; the feature is what peer-ensemble teachers consume."""
        feature = self.pool(self.body(x))
        return feature, self.classifier(feature)


class Backbone(nn.Module):
    """A classifier split at its last stage into shared low-level layers and a head."""

    def __init__(self, shared: nn.Module, head: Head, name: str, num_classes: int) -> None:
        super().__init__()
        self.shared = shared
        self.head = head
        self.name = name
        self.num_classes = int(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the plain (single-branch) network."""
        return self.head(self.shared(x))[1]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}"


def init_weights(module: nn.Module, *, conv_mode: str = "fan_out", linear_std: float | None = None,
                 linear_zero_bias: bool = False) -> None:
    """Initialise ``module`` in place by the rule of the OKDDip/ONE model zoo's network it reproduces.

    - ``nn.Conv2d``: kaiming-normal for ReLU, std = sqrt(2 / fan), fan = ``conv_mode`` ("fan_out": out_channels *
      k*k, the zoo's ResNets and VGG; "fan_in": in_channels * k*k, the zoo's DenseNet, whose code calls
      ``kaiming_normal_(w)`` with PyTorch's default mode); conv biases zero.
    - ``nn.BatchNorm2d`` / ``nn.GroupNorm``: weight 1, bias 0.
    - ``nn.Linear``: N(0, ``linear_std``) weights when given (the zoo's VGG: 0.01), else PyTorch's default
      (the zoo's ResNets and DenseNet); bias zero when ``linear_zero_bias`` (VGG, DenseNet), else PyTorch's default.

    Each backbone file states which rule it uses; a test compares the resulting statistics per layer type.
    """
    if conv_mode not in ("fan_in", "fan_out"):
        raise ValueError(f"conv_mode must be 'fan_in' or 'fan_out', got {conv_mode!r}")
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if linear_zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
