"""Baseline: the plain backbone trained with cross-entropy only."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from pcl.methods.base import LogitDict, LossDict, Method
from pcl.models import Backbone, build_backbone


class Baseline(Method):
    name = "baseline"
    num_views = 1
    deployed_head = "net"
    distills = False

    def __init__(self, backbone: str, num_classes: int, *, dropout: float | None = None):
        super().__init__(backbone, num_classes, dropout=dropout)
        self.net = build_backbone(backbone, num_classes, dropout)

    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        logits = self.net(views[0])
        return {"ce": F.cross_entropy(logits, targets)}, {"net": logits}

    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        return {"net": self.net(x)}

    def export_deployed(self) -> Backbone:
        return copy.deepcopy(self.net)
