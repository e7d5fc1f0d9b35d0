"""ONE: On-the-fly Native Ensemble (Lan, Zhu & Gong, NeurIPS 2018), as in the ONE and OKDDip codebases.

A multi-branch network (pcl.models.multibranch) on one view. A gate on the shared feature map (global average pool ->
FC(m) -> BN -> ReLU -> softmax, common.BranchGate) weighs the branches per sample; the gated ensemble is the teacher:

    g = gate(h) (rows sum to one),   z_t = sum_j g_j z_j,
    L = sum_j CE(z_j, y) + CE(z_t, y) + w(e) sum_j KD(z_j <- z_t),   z_t detached in KD, T = 3, ramp-up 80.

The teacher's CE trains the gate and, through z_t, every branch. Heads: branch1..branchm and `ensemble` (the
gated teacher). Deployed: branch 1 (shared layers + branch 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pcl.declarations import Head, MethodSpec, Option
from pcl.losses import kd_loss
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.methods.common import (
    BranchGate,
    branch_parameter_counts,
    check_count,
    check_positive,
    gated_logits,
    head_names,
    shared_channels,
)
from pcl.models import Backbone, MultiBranchNet, count_parameters


DECLARATION = MethodSpec(
    name="one", display="ONE", citation="Lan, Zhu & Gong, NeurIPS 2018 (as in the ONE and OKDDip codebases)",
    trains="{peers} branches on shared stem + stages 1-2 + a gate; the gated ensemble teaches every branch",
    deploys="shared + branch 1",
    heads=(Head("branch{j}", "peer", "branch j"), Head("ensemble", "ensemble", "the gated teacher: branches + gate")),
    deployed="branch1",
    options=(
        Option("peers", 3, "number of branches m (top-level config key `peers`; a gate over one is a constant)",
               minimum=2),
        Option("temperature", 3.0, "softmax temperature T of the KD terms (each scaled by T^2)", minimum=0,
               exclusive_minimum=True),
        Option("rampup_length", 80, "epochs of the sigmoid ramp-up w(e) = exp(-5(1 - e/L)^2) (0: none)",
               minimum=0, time_constant="epochs"),
    ),
    relative_cost=1.98, tables=("table2", "imagenet"), order=3,
)


class ONE(Method):
    declaration = DECLARATION

    def __init__(self, backbone: str, num_classes: int, *, peers: int, temperature: float, rampup_length: int,
                 dropout: float | None = None):
        """peers: m >= 2 branches (a gate over one branch would be a constant)."""
        super().__init__(backbone, num_classes, rampup_length=rampup_length, dropout=dropout)
        self.peers = check_count("one", "peers", peers, 2, "the gated ensemble needs at least two branches")
        self.temperature = check_positive("temperature", temperature)
        self.net = MultiBranchNet(backbone, num_classes, self.peers, dropout)
        self.gate = BranchGate(shared_channels(self.net), self.peers)

    @property
    def peer_heads(self) -> tuple[str, ...]:
        return tuple(head_names("branch", self.peers))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(gate weights [B, m], branch logits, gated teacher logits) on one batch."""
        shared = self.net.shared_features(x)
        weights = self.gate(shared)
        logits = [branch(shared)[1] for branch in self.net.branches]
        return weights, logits, gated_logits(weights, logits)

    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        _, logits, teacher = self.forward_all(views[0])
        losses: LossDict = {
            "ce": sum(F.cross_entropy(z, targets) for z in logits),
            "ce_teacher": F.cross_entropy(teacher, targets),
            "kd": sum(kd_loss(z, teacher, self.temperature) for z in logits),  # teacher detached in kd_loss
        }
        named: LogitDict = dict(zip(head_names("branch", self.peers), logits))
        named["ensemble"] = teacher
        return losses, named

    def loss_weights(self) -> dict[str, torch.Tensor]:
        return {"kd": self.distill_weight}

    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        _, logits, teacher = self.forward_all(x)
        heads: LogitDict = dict(zip(head_names("branch", self.peers), logits))
        heads["ensemble"] = teacher
        return heads

    def export_deployed(self) -> Backbone:
        return self.net.export_branch(0)

    def head_parameter_counts(self) -> dict[str, int]:
        """branch j: shared + branch j; ensemble (the gated teacher): shared + every branch + the gate."""
        return branch_parameter_counts(self.net, "branch") | {
            "ensemble": count_parameters(self.net) + count_parameters(self.gate)}
