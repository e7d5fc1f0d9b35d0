"""OKDDip: Online Knowledge Distillation with Diverse Peers (Chen et al., AAAI 2020), after the OKDDip code.

A multi-branch network (pcl.models.multibranch) with m + 1 branches on one view: m auxiliary peers (branches 1..m) and
one group leader (the last branch). Attention over the auxiliary peers, from their pooled features f_j:

    q_j = W_q f_j,  k_j = W_k f_j  (bias-free Linear, feature_dim -> feature_dim // projection_factor),
    A = softmax_l(q_j . k_l)       per sample, [B, m, m], each row sums to one (no 1/sqrt(d): OKDDip code),
    t_j = sum_l A_jl z_l           peer j's target,
    L = sum_{all m+1 branches} CE + w(e) [sum_j KD(z_j <- t_j) + KD(z_leader <- 1/m sum_j z_j)],  T = 3, ramp-up 80.

Gradients (as everywhere here, pcl.losses.kd_loss: targets carry no gradient into the logits): the peer logits inside
t_j and inside the leader's target are detached (`detach_targets`; the OKDDip code detaches nothing), while A keeps its
gradient (`attention_grad`), so W_q/W_k learn through the KD loss, which is the only loss that reaches them (as in the
code).
projection_factor 8 is the OKDDip code's `factor` (resnet32: 64 -> 8 dims; vgg16: 512 -> 64).
Heads: peer1..peerm, leader, `ensemble` (mean of the auxiliary peers). Deployed: the leader (shared + last branch).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pcl.declarations import Head, MethodSpec, Option
from pcl.losses import kd_loss
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.methods.common import branch_parameter_counts, check_bool, check_count, check_positive, head_names
from pcl.models import Backbone, MultiBranchNet, count_parameters


DECLARATION = MethodSpec(
    name="okddip", display="OKDDip", citation="Chen et al., AAAI 2020 (after the OKDDip code)",
    trains=("{peers} auxiliary peers + 1 group leader on shared stem + stages 1-2, query/key projections for the "
            "peers' attention"),
    deploys="shared + group leader",
    heads=(Head("peer{j}", "peer", "auxiliary peer j"), Head("leader", "network", "the group leader"),
           Head("ensemble", "ensemble", "mean logits of the auxiliary peers")),
    deployed="leader",
    options=(
        Option("peers", 3, "number of auxiliary peers m (m + 1 branches with the leader; top-level key `peers`)",
               minimum=2),
        Option("temperature", 3.0, "softmax temperature T of the KD terms (each scaled by T^2)", minimum=0,
               exclusive_minimum=True),
        Option("rampup_length", 80, "epochs of the sigmoid ramp-up w(e) = exp(-5(1 - e/L)^2) (0: none)",
               minimum=0, time_constant="epochs"),
        Option("projection_factor", 8, "q/k dimension is feature_dim // projection_factor (at least 1)", minimum=1),
        Option("scaled_attention", False, "divide q.k by sqrt(dimension) (the OKDDip code does not)",
               disagreement=(True, "False: q.k unscaled as the OKDDip code; True: divided by sqrt(d)")),
        Option("attention_grad", True, "the KD loss trains W_q/W_k through A (False: A is a fixed weighting)"),
        Option("detach_targets", True,
               "the peers' logits inside the targets carry no gradient (False: the OKDDip code's behaviour)",
               disagreement=(False, "True: the peers' logits inside the targets are fixed (as every KD target "
                                    "here); False: the OKDDip code, which detaches nothing")),
    ),
    relative_cost=2.42, tables=("table2", "imagenet"), order=5,
)


class PeerAttention(nn.Module):
    """Self-attention weights between peers from their pooled features: [B, m, F] -> [B, m, m], rows sum to one."""

    def __init__(self, feature_dim: int, projection_dim: int, scaled: bool = False):
        super().__init__()
        self.query = nn.Linear(feature_dim, projection_dim, bias=False)
        self.key = nn.Linear(feature_dim, projection_dim, bias=False)
        self.scale = 1.0 / math.sqrt(projection_dim) if scaled else 1.0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        energy = self.query(features) @ self.key(features).transpose(1, 2)
        return F.softmax(energy * self.scale, dim=-1)


class OKDDip(Method):
    declaration = DECLARATION

    def __init__(self, backbone: str, num_classes: int, *, peers: int, temperature: float, rampup_length: int,
                 projection_factor: int, scaled_attention: bool, attention_grad: bool, detach_targets: bool,
                 dropout: float | None = None):
        """
        peers: m >= 2 auxiliary peers (m + 1 branches with the leader). projection_factor: q/k dimension is
        feature_dim // projection_factor (at least 1). scaled_attention: divide q.k by sqrt(dimension) (the OKDDip
        code does not). attention_grad: the KD loss trains W_q/W_k through A (False: A is a fixed weighting).
        detach_targets: the peers' logits inside the targets carry no gradient (False: the OKDDip code's behaviour).
        """
        super().__init__(backbone, num_classes, rampup_length=rampup_length, dropout=dropout)
        self.peers = check_count("okddip", "peers", peers, 2, "attention-weighted targets need at least two peers")
        self.temperature = check_positive("temperature", temperature)
        factor = check_count("okddip", "projection_factor", projection_factor, 1)
        self.scaled_attention = check_bool("scaled_attention", scaled_attention)
        self.attention_grad = check_bool("attention_grad", attention_grad)
        self.detach_targets = check_bool("detach_targets", detach_targets)
        self.net = MultiBranchNet(backbone, num_classes, self.peers + 1, dropout)
        self.projection_dim = max(1, self.net.feature_dim // factor)
        self.attention = PeerAttention(self.net.feature_dim, self.projection_dim, self.scaled_attention)

    @property
    def peer_heads(self) -> tuple[str, ...]:
        """The auxiliary peers (the group leader learns from them but is not one of the diverse peers)."""
        return tuple(head_names("peer", self.peers))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(attention [B, m, m], auxiliary peers' logits, leader logits)."""
        outputs = self.net.forward_views([x])
        peer_outputs, (_, leader) = outputs[:-1], outputs[-1]
        attention = self.attention(torch.stack([f for f, _ in peer_outputs], dim=1))
        return attention, [z for _, z in peer_outputs], leader

    def peer_targets(self, attention: torch.Tensor, peer_logits: list[torch.Tensor]) -> torch.Tensor:
        """t_j = sum_l A_jl z_l for every peer: [B, m, C]."""
        values = torch.stack(peer_logits, dim=1)
        if self.detach_targets:
            values = values.detach()
        if not self.attention_grad:
            attention = attention.detach()
        return attention @ values

    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        attention, peer_logits, leader = self.forward_all(views[0])
        peer_targets = self.peer_targets(attention, peer_logits)
        peer_mean = torch.stack(peer_logits).mean(dim=0)
        losses: LossDict = {
            "ce": sum(F.cross_entropy(z, targets) for z in peer_logits) + F.cross_entropy(leader, targets),
            # detach_teacher=False: what must not carry gradient was detached in peer_targets; A keeps its own.
            "kd_peers": sum(kd_loss(z, peer_targets[:, j], self.temperature, detach_teacher=False)
                            for j, z in enumerate(peer_logits)),
            "kd_leader": kd_loss(leader, peer_mean, self.temperature, detach_teacher=self.detach_targets),
        }
        named: LogitDict = dict(zip(head_names("peer", self.peers), peer_logits))
        named["leader"] = leader
        return losses, named

    def loss_weights(self) -> dict[str, torch.Tensor]:
        return {"kd_peers": self.distill_weight, "kd_leader": self.distill_weight}

    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        outputs = self.net.forward_views([x])
        peer_logits = [z for _, z in outputs[:-1]]
        heads: LogitDict = dict(zip(head_names("peer", self.peers), peer_logits))
        heads["leader"] = outputs[-1][1]
        heads["ensemble"] = torch.stack(peer_logits).mean(dim=0)
        return heads

    def export_deployed(self) -> Backbone:
        """Shared layers + the leader branch."""
        return self.net.export_branch(self.peers)

    def head_parameter_counts(self) -> dict[str, int]:
        """peer j / leader: shared + that branch; ensemble (mean of the auxiliary peers): shared + the m peers.

        The attention's projections only shape the training targets: no head needs them at deployment.
        """
        counts = branch_parameter_counts(self.net, "peer", self.peers)
        shared = count_parameters(self.net.shared)
        counts["leader"] = shared + count_parameters(self.net.branches[self.peers])
        counts["ensemble"] = shared + sum(count_parameters(b) for b in self.net.branches[: self.peers])
        return counts
