"""FFL-S: Feature Fusion Learning, sub-network result (Kim et al., ICPR 2020), after the official FFL code.

m sub-networks as a multi-branch network (pcl.models.multibranch) on one view. A fusion module runs on the CONCATENATED
last feature maps of the branches (their head.body outputs, m*C channels):

    u = cat_j body_j(h)                                   [B, m*C, H, W]
    u = ReLU(BN(depthwise conv3x3(u)))                    groups = m*C
    u = ReLU(BN(pointwise conv1x1(u)))                    m*C -> C
    z_f = Linear(GAP(u))                                  the fused classifier

The sub-networks' averaged logits teach the fused classifier and the fused classifier teaches every sub-network,
both targets detached:

    L = sum_j CE(z_j, y) + CE(z_f, y) + w(e) [KD(z_f <- 1/m sum_j z_j) + sum_j KD(z_j <- z_f)],  T = 3, ramp-up 80.

The feature maps are not detached: the fused classifier's CE also trains the sub-networks (as in the FFL code).
Heads: branch1..branchm and `fused`. Deployed: branch 1, since the paper's number is FFL-S, a sub-network.

Where the reference codes disagree: the official FFL code trains 2 sub-networks (`peers=2`); the default stays m = 3
like every other method (ours). It also decays the fusion module's weights less (1e-5, network 1e-4):
`fusion_weight_decay` sets the fusion module's weight decay (None, the default: the recipe's, like every other
parameter), through `param_groups`.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from pcl.declarations import Head, MethodSpec, Option
from pcl.losses import kd_loss
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.methods.common import branch_parameter_counts, check_count, check_positive, head_names
from pcl.models import Backbone, MultiBranchNet, count_parameters
from pcl.models.base import init_weights


DECLARATION = MethodSpec(
    name="ffl", display="FFL-S", citation="Kim et al., ICPR 2020 (after the official FFL code)",
    trains=("{peers} sub-network branches on shared stem + stages 1-2 + fusion module (depthwise/pointwise conv) "
            "+ fused classifier"),
    deploys="shared + sub-network 1 (FFL-S)",
    heads=(Head("branch{j}", "peer", "sub-network j"),
           Head("fused", "ensemble", "the fused classifier: branch bodies + fusion module")),
    deployed="branch1",
    options=(
        Option("peers", 3, "number of sub-networks m (top-level config key `peers`)", minimum=2,
               disagreement=(2, "number of sub-networks: m = 3 like every method (ours); the official FFL code "
                                "uses 2")),
        Option("temperature", 3.0, "softmax temperature T of the KD terms (each scaled by T^2)", minimum=0,
               exclusive_minimum=True),
        Option("rampup_length", 80, "epochs of the sigmoid ramp-up w(e) = exp(-5(1 - e/L)^2) (0: none)",
               minimum=0, time_constant="epochs"),
        Option("fusion_weight_decay", None, "weight decay of the fusion module (None: the recipe's)", kind="float",
               minimum=0, neutral=None,
               disagreement=(1e-5, "weight decay of the fusion module: None = the recipe's (like every parameter); "
                                   "the official code uses 1e-5 (its network 1e-4)")),
    ),
    relative_cost=2.41, tables=("table2",), order=4,
)


class FusionModule(nn.Module):
    """Depthwise conv3x3 + BN + ReLU, pointwise conv1x1 (m*C -> C) + BN + ReLU, global average pool, Linear(C, K)."""

    def __init__(self, channels: int, num_branches: int, num_classes: int):
        super().__init__()
        total = channels * num_branches
        self.depthwise = nn.Conv2d(total, total, kernel_size=3, padding=1, groups=total, bias=False)
        self.bn1 = nn.BatchNorm2d(total)
        self.pointwise = nn.Conv2d(total, channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, feature_maps: list[torch.Tensor]) -> torch.Tensor:
        u = torch.cat(feature_maps, dim=1)
        u = F.relu(self.bn1(self.depthwise(u)))
        u = F.relu(self.bn2(self.pointwise(u)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(u, 1), 1))


class FFL(Method):
    declaration = DECLARATION

    def __init__(self, backbone: str, num_classes: int, *, peers: int, temperature: float, rampup_length: int,
                 fusion_weight_decay: float | None, dropout: float | None = None):
        """peers: m >= 2 sub-networks (fusing one feature map would be no fusion; the official code uses 2).
        fusion_weight_decay: weight decay of the fusion module (None: the recipe's; the official code: 1e-5)."""
        super().__init__(backbone, num_classes, rampup_length=rampup_length, dropout=dropout)
        self.peers = check_count("ffl", "peers", peers, 2, "the fusion module fuses at least two sub-networks")
        self.temperature = check_positive("temperature", temperature)
        if fusion_weight_decay is not None and (isinstance(fusion_weight_decay, bool) or not isinstance(
                fusion_weight_decay, numbers.Real) or not fusion_weight_decay >= 0):
            raise ValueError(f"fusion_weight_decay must be a number >= 0 or None (the recipe's weight decay), "
                             f"got fusion_weight_decay={fusion_weight_decay!r}")
        self.fusion_weight_decay = None if fusion_weight_decay is None else float(fusion_weight_decay)
        self.net = MultiBranchNet(backbone, num_classes, self.peers, dropout)
        # head.body's output has feature_dim channels: Head.forward pools it straight into the classifier.
        self.fusion = FusionModule(self.net.feature_dim, self.peers, num_classes)

    @property
    def peer_heads(self) -> tuple[str, ...]:
        return tuple(head_names("branch", self.peers))

    def param_groups(self, weight_decay: float) -> list[dict[str, object]]:
        """One group with the recipe's weight decay, or two when `fusion_weight_decay` is set: the sub-networks
        (recipe's) and the fusion module (fusion_weight_decay)."""
        if self.fusion_weight_decay is None:
            return super().param_groups(weight_decay)
        fusion = {id(p) for p in self.fusion.parameters()}
        return [{"params": [p for p in self.trainable_parameters() if id(p) not in fusion],
                 "weight_decay": weight_decay},
                {"params": [p for p in self.fusion.parameters() if p.requires_grad],
                 "weight_decay": self.fusion_weight_decay}]

    def forward_all(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(sub-network logits, fused logits); each branch's feature map goes both to its classifier and the fusion."""
        shared = self.net.shared_features(x)
        maps = [branch.body(shared) for branch in self.net.branches]
        logits = [branch.classifier(branch.pool(u)) for branch, u in zip(self.net.branches, maps)]
        return logits, self.fusion(maps)

    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        logits, fused = self.forward_all(views[0])
        mean_logits = torch.stack(logits).mean(dim=0)
        losses: LossDict = {
            "ce": sum(F.cross_entropy(z, targets) for z in logits),
            "ce_fused": F.cross_entropy(fused, targets),
            "kd_fused": kd_loss(fused, mean_logits, self.temperature),
            "kd_branches": sum(kd_loss(z, fused, self.temperature) for z in logits),
        }
        named: LogitDict = dict(zip(head_names("branch", self.peers), logits))
        named["fused"] = fused
        return losses, named

    def loss_weights(self) -> dict[str, torch.Tensor]:
        return {"kd_fused": self.distill_weight, "kd_branches": self.distill_weight}

    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        logits, fused = self.forward_all(x)
        heads: LogitDict = dict(zip(head_names("branch", self.peers), logits))
        heads["fused"] = fused
        return heads

    def export_deployed(self) -> Backbone:
        return self.net.export_branch(0)

    def head_parameter_counts(self) -> dict[str, int]:
        """branch j: shared + branch j; fused: shared + every branch's body (not their classifiers) + fusion."""
        bodies = sum(count_parameters(b.body) for b in self.net.branches)
        return branch_parameter_counts(self.net, "branch") | {
            "fused": count_parameters(self.net.shared) + bodies + count_parameters(self.fusion)}
