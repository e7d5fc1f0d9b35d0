"""PCL: Peer Collaborative Learning (Wu & Gong, AAAI 2021: multi-branch network, multi-input augmentation, peer
ensemble teacher, peer mean teacher, Algorithm 1).

m peers share the low-level layers; peer j trains on its own augmented view x_j. A peer ensemble teacher (one
linear classifier on the concatenated pooled peer features) is trained by CE and distilled into every peer
(L_pe). A temporal mean (EMA) of the whole multi-branch network provides peer mean teachers: mean peer l runs on
view l, and each peer learns from the mean teachers of the OTHER peers with weight 1/(m-1) (L_pm).

    L = sum_j CE(z_j, y) + CE(z_e, y) + w(e) (L_pe + L_pm),    deployed: peer 1 of the mean network.

Every switch below is what one ablation changes; the defaults are PCL as the paper describes it, with the details it
does not state reconstructed from the ONE/OKDDip codebases (README, "What is the paper's and what is ours").

Two candidate PCL-E heads are logged: `ensemble` (the peer ensemble teacher, a Linear on the live peers' features;
its classifier is the paper's "0.01-0.08M extra parameters", so most probably the paper's PCL-E) and `pcl_e` (the
mean of the temporal-mean peers' logits, Algorithm 1's "ensemble model {theta_l, theta_h,j}", no extra
parameters). `head_parameter_counts()` gives each one's parameters at deployment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pcl.declarations import Head, MethodSpec, Option
from pcl.ema import BUFFER_MODES, TemporalMean
from pcl.losses import kd_loss
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.methods.common import (BranchGate, branch_parameter_counts, check_bool, check_choice, check_count,
                                check_positive, gated_logits, head_names, kd_from_others, shared_channels)
from pcl.models import Backbone, MultiBranchNet, count_parameters


DECLARATION = MethodSpec(
    name="pcl", display="PCL", citation="Wu & Gong, AAAI 2021",
    trains=("{peers} peers on shared stem + stages 1-2, peer j on its own view; concat-FC ensemble teacher; peer "
            "mean teachers from a temporal mean (EMA, not trained)"),
    deploys="shared + peer 1 of the temporal mean",
    heads=(Head("peer{j}", "peer", "live peer j"),
           Head("mean_peer{j}", "temporal_mean", "the temporal mean of peer j", mean_of="peer{j}"),
           Head("ensemble", "ensemble",
                "the peer ensemble teacher, a Linear on the live peers' concatenated features; its classifier is "
                "the paper's '0.01-0.08M extra parameters', so most probably the paper's PCL-E"),
           Head("pcl_e", "ensemble",
                "the mean of the temporal-mean peers' logits, Algorithm 1's ensemble model "
                "{theta_l, theta_h,j}: no extra parameters")),
    deployed="mean_peer1",
    options=(
        Option("peers", 3, "number of peers m (top-level config key `peers`)", minimum=2),
        Option("temperature", 3.0, "softmax temperature T of every KD term (each scaled by T^2)", minimum=0,
               exclusive_minimum=True, acts_only_with=({"ensemble_teacher": (True,)}, {"mean_teacher": (True,)})),
        Option("rampup_length", 80, "epochs of the sigmoid ramp-up w(e) = exp(-5(1 - e/L)^2) (0: none)",
               minimum=0, time_constant="epochs"),
        # the temporal mean exists only when L_pm reads it (not with live_others: the live peer 1 is deployed then)
        Option("ema_decay", 0.999, "cap of the temporal mean's decay a_t (1.0 = plain uniform average)", minimum=0,
               maximum=1, time_constant="ema_decay",
               acts_only_with=({"mean_teacher": (True,), "peer_teacher": ("mean_others", "own_mean")},)),
        Option("ema_buffers", "forward", "how the mean network's BN buffers are kept",
               choices=("forward", "copy", "average"),
               acts_only_with=({"mean_teacher": (True,), "peer_teacher": ("mean_others", "own_mean")},)),
        Option("multi_input", True, "each peer on its own view (False: every peer sees the same view)"),
        Option("ensemble_teacher", True, "the peer ensemble teacher's terms (CE and L_pe) on or off"),
        Option("ensemble_form", "concat_fc", "the ensemble teacher: concat_fc (PCL) | logit_average | gate (ONE's)",
               choices=("concat_fc", "logit_average", "gate"), acts_only_with=({"ensemble_teacher": (True,)},)),
        Option("detach_ensemble", True, "the ensemble's logits are a fixed target in L_pe",
               acts_only_with=({"ensemble_teacher": (True,)},)),
        Option("mean_teacher", True, "the peer mean teacher term L_pm on or off"),
        Option("peer_teacher", "mean_others",
               "where L_pm's targets come from: mean_others (PCL) | live_others (mutual learning between live peers) "
               "| own_mean (each peer's own mean teacher)", choices=("mean_others", "live_others", "own_mean"),
               acts_only_with=({"mean_teacher": (True,)},)),
    ),
    views="peers", relative_cost=5.15, tables=("table2", "imagenet", "two_stage"), order=7,
    frozen_note="the temporal-mean network",
)

ENSEMBLE_FORMS = ("concat_fc", "logit_average", "gate")
PEER_TEACHERS = ("mean_others", "live_others", "own_mean")


class PCL(Method):
    declaration = DECLARATION

    def __init__(self, backbone: str, num_classes: int, *, peers: int, temperature: float, rampup_length: int,
                 ema_decay: float, ema_buffers: str, multi_input: bool, ensemble_teacher: bool, ensemble_form: str,
                 detach_ensemble: bool, mean_teacher: bool, peer_teacher: str, dropout: float | None = None):
        """
        peers: m >= 2. temperature: T of every KD term. rampup_length: epochs of w(e)'s sigmoid ramp-up.
        ema_decay: cap of a_t (1.0 = plain uniform average of all past weights). ema_buffers: how the mean
        network's BN buffers are kept (forward | copy | average). multi_input: each peer on its own view
        (False: every peer sees the same view). ensemble_teacher / mean_teacher: the L_pe / L_pm terms on or
        off. ensemble_form: concat_fc (PCL) | logit_average | gate (ONE-style). detach_ensemble: the ensemble's
        logits are a fixed target in L_pe. peer_teacher: where L_pm's targets come from: mean_others (PCL) |
        live_others (mutual learning between live peers) | own_mean (each peer's own mean teacher).
        """
        super().__init__(backbone, num_classes, rampup_length=rampup_length, dropout=dropout)
        self.peers = check_count("pcl", "peers", peers, 2, "it distils between peers")
        self.temperature = check_positive("temperature", temperature)
        self.ensemble_form = check_choice("ensemble_form", ensemble_form, ENSEMBLE_FORMS)
        self.peer_teacher = check_choice("peer_teacher", peer_teacher, PEER_TEACHERS)
        check_choice("ema_buffers", ema_buffers, BUFFER_MODES)
        if isinstance(ema_decay, bool) or not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1] (1 = plain uniform average), got ema_decay={ema_decay!r}")
        self.multi_input = check_bool("multi_input", multi_input)
        self.ensemble_teacher = check_bool("ensemble_teacher", ensemble_teacher)
        self.detach_ensemble = check_bool("detach_ensemble", detach_ensemble)
        self.mean_teacher = check_bool("mean_teacher", mean_teacher)
        self.num_views = self.peers if multi_input else 1

        self.net = MultiBranchNet(backbone, num_classes, self.peers, dropout)
        if ensemble_teacher and ensemble_form == "concat_fc":
            self.ensemble = nn.Linear(peers * self.net.feature_dim, num_classes)
        elif ensemble_teacher and ensemble_form == "gate":
            self.ensemble = BranchGate(shared_channels(self.net), peers)
        # The temporal mean exists when L_pm reads it; without it the live peer 1 is deployed.
        self.uses_mean_network = mean_teacher and peer_teacher != "live_others"
        if self.uses_mean_network:
            self.temporal_mean = TemporalMean(self.net, decay=ema_decay, buffer_mode=ema_buffers)
        self.deployed_head = "mean_peer1" if self.uses_mean_network else "peer1"

    # ---- pieces ---------------------------------------------------------------------------------------
    def _ensemble_logits(self, features: list[torch.Tensor], logits: list[torch.Tensor],
                         views: list[torch.Tensor]) -> torch.Tensor:
        if self.ensemble_form == "concat_fc":
            return self.ensemble(torch.cat(features, dim=1))
        if self.ensemble_form == "logit_average":
            return torch.stack(logits).mean(dim=0)
        # gate: ONE's gate on the shared feature; with several views, the gate sees their average.
        shared = torch.stack([self.net.shared_features(v) for v in views]).mean(dim=0)
        return gated_logits(self.ensemble(shared), logits)

    @property
    def peer_heads(self) -> tuple[str, ...]:
        """The live peers (the networks being trained; their temporal means follow them)."""
        return tuple(head_names("peer", self.peers))

    @property
    def mean_net(self) -> MultiBranchNet:
        return self.temporal_mean.mean

    # ---- the step -------------------------------------------------------------------------------------
    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        outputs = self.net.forward_views(views)
        features = [f for f, _ in outputs]
        logits = [z for _, z in outputs]
        losses: LossDict = {"ce_peers": sum(F.cross_entropy(z, targets) for z in logits)}
        named_logits: LogitDict = dict(zip(head_names("peer", self.peers), logits))
        if self.ensemble_teacher:
            ensemble_logits = self._ensemble_logits(features, logits, views)
            losses["ce_ensemble"] = F.cross_entropy(ensemble_logits, targets)
            losses["pe"] = sum(kd_loss(z, ensemble_logits, self.temperature, detach_teacher=self.detach_ensemble)
                               for z in logits)
            named_logits["ensemble"] = ensemble_logits
        if self.mean_teacher:
            losses["pm"] = self._peer_mean_loss(views, logits)
        return losses, named_logits

    def _peer_mean_loss(self, views: list[torch.Tensor], logits: list[torch.Tensor]) -> torch.Tensor:
        if self.peer_teacher == "live_others":
            return kd_from_others(logits, [z.detach() for z in logits], self.temperature)
        with torch.no_grad():
            mean_logits = [z for _, z in self.mean_net.forward_views(views)]  # mean peer l on view l
        if self.peer_teacher == "mean_others":
            return kd_from_others(logits, mean_logits, self.temperature)
        return sum(kd_loss(z, t, self.temperature) for z, t in zip(logits, mean_logits))  # own_mean

    def loss_weights(self) -> dict[str, torch.Tensor]:
        return {"pe": self.distill_weight, "pm": self.distill_weight}

    def after_optimizer_step(self) -> None:
        if self.uses_mean_network:
            self.temporal_mean.update(self.net)

    # ---- evaluation and deployment --------------------------------------------------------------------
    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        outputs = self.net.forward_views([x])
        logits = [z for _, z in outputs]
        heads: LogitDict = dict(zip(head_names("peer", self.peers), logits))
        if self.ensemble_teacher:
            heads["ensemble"] = self._ensemble_logits([f for f, _ in outputs], logits, [x])
        if self.uses_mean_network:
            mean_logits = [z for _, z in self.mean_net.forward_views([x])]
            heads.update(zip(head_names("mean_peer", self.peers), mean_logits))
            heads["pcl_e"] = torch.stack(mean_logits).mean(dim=0)
        return heads

    def export_deployed(self) -> Backbone:
        """Shared layers + peer 1 of the mean network (of the live network when there is none)."""
        source = self.mean_net if self.uses_mean_network else self.net
        return source.export_branch(0)

    def head_parameter_counts(self) -> dict[str, int]:
        """Parameters at deployment of every head.

        peer j / mean_peer j: shared + branch j. ensemble: shared + every live branch + the ensemble teacher's
        module (concat_fc: Linear(m * feature_dim, C); gate: the gate; logit_average: nothing). pcl_e: shared +
        every branch of the temporal mean (no extra module). So ensemble - pcl_e is the ensemble teacher's size.
        """
        counts = branch_parameter_counts(self.net, "peer")
        if self.ensemble_teacher:
            extra = count_parameters(self.ensemble) if hasattr(self, "ensemble") else 0
            counts["ensemble"] = count_parameters(self.net) + extra
        if self.uses_mean_network:
            counts |= branch_parameter_counts(self.mean_net, "mean_peer")
            counts["pcl_e"] = count_parameters(self.mean_net)
        return counts
