"""Baseline: the plain backbone trained with cross-entropy only."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from pcl.declarations import Head, MethodSpec
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.models import Backbone, build_backbone


DECLARATION = MethodSpec(
    name="baseline", display="Baseline", citation="the plain backbone, cross-entropy only",
    trains="one {backbone}, CE only", deploys="the network",
    heads=(Head("net", "network", "the network"),), deployed="net",
    relative_cost=1.0, tables=("table2", "imagenet", "two_stage"), order=0, distills=False,
)


class Baseline(Method):
    declaration = DECLARATION

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
