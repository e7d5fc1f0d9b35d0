"""KDCL: Knowledge Distillation via Collaborative Learning (Guo et al., CVPR 2020), spec §10.

K = `peers` full networks WITHOUT shared layers; network k trains on its OWN augmented view x_k of each image.
The soft target is an ensemble of the students' logits, a fixed (detached) target for everyone:

    naive:     t = 1/K sum_k z_k
    min_logit: t = min_k (z_k - z_k[y])   (elementwise over classes; KDCL's MinLogit: each network's logits are
               shifted so its target-class logit is 0, then the smallest value per class is kept, which keeps the
               target class at 0 and every wrong class at its most confident-against value)
    L = sum_k CE(z_k, y) + w(e) sum_k KD(z_k <- t),   KD at T (default 3).

KDCL has no ramp-up: `rampup_length` defaults to 0 (w = 1). Heads: net1..netK and `ensemble` (mean logits on the
test image). Deployed: net1, a plain backbone.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pcl.losses import kd_loss
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.methods.common import check_choice, check_count, check_positive, head_names
from pcl.models import Backbone, build_backbone

ENSEMBLES = ("naive", "min_logit")


def min_logit_target(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """KDCL's MinLogit: min over networks of z_k - z_k[y] (per sample, per class)."""
    shifted = [z - z.gather(1, targets[:, None]) for z in logits]
    return torch.stack(shifted).amin(dim=0)


class KDCL(Method):
    name = "kdcl"
    deployed_head = "net1"

    def __init__(self, backbone: str, num_classes: int, peers: int = 3, temperature: float = 3.0,
                 ensemble: str = "naive", rampup_length: int = 0):
        """peers: K >= 2 networks, each on its own view. ensemble: naive (mean logits) | min_logit."""
        super().__init__(backbone, num_classes, rampup_length=rampup_length)
        self.peers = check_count("kdcl", "peers", peers, 2, "the ensemble target needs at least two networks")
        self.temperature = check_positive("temperature", temperature)
        self.ensemble_kind = check_choice("ensemble", ensemble, ENSEMBLES)
        self.num_views = self.peers
        self.nets = nn.ModuleList([build_backbone(backbone, num_classes) for _ in range(self.peers)])

    def ensemble_target(self, logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """The (detached) soft target every network distils from."""
        with torch.no_grad():
            if self.ensemble_kind == "min_logit":
                return min_logit_target(logits, targets)
            return torch.stack(logits).mean(dim=0)

    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        logits = [net(v) for net, v in zip(self.nets, views)]  # network k on view k
        target = self.ensemble_target(logits, targets)
        losses: LossDict = {
            "ce": sum(F.cross_entropy(z, targets) for z in logits),
            "kd": sum(kd_loss(z, target, self.temperature) for z in logits),
        }
        return losses, dict(zip(head_names("net", self.peers), logits))

    def loss_weights(self) -> dict[str, torch.Tensor]:
        return {"kd": self.distill_weight}

    def scalars(self) -> dict[str, torch.Tensor]:
        return {"rampup_weight": self.distill_weight}

    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        logits = [net(x) for net in self.nets]
        heads: LogitDict = dict(zip(head_names("net", self.peers), logits))
        heads["ensemble"] = torch.stack(logits).mean(dim=0)
        return heads

    def export_deployed(self) -> Backbone:
        return copy.deepcopy(self.nets[0])
