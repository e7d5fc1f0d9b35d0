"""CL-ILR: Collaborative Learning with Intermediate-Level Representation sharing (Song & Chai, NeurIPS 2018),
as in the OKDDip codebase (its ONE script with `--avg --bpscale`).

A multi-branch network (pcl.models.multibranch) on one view. The shared output h passes through the ILR layer before the
m branches: identity forward, gradient divided by m backward ("backprop rescaling"), so the shared layers receive the
MEAN of the branches' gradients instead of their sum. Branch j learns from the mean of the OTHER branches (detached):

    L = sum_j CE(z_j, y) + w(e) sum_j KD(z_j <- 1/(m-1) sum_{l != j} z_l),   T = 3, ramp-up 80 epochs.

`detach_target` (the reference codes disagree): True (default, as everywhere here, pcl.losses.kd_loss: a KD target
carries no gradient) or False (the target's gradient flows back into the other branches too, as in code that does not
detach its targets).

Heads: branch1..branchm and `ensemble` (mean logits). Deployed: branch 1 (shared layers + branch 1).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pcl.declarations import Head, MethodSpec, Option
from pcl.losses import kd_loss
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.methods.common import (
    branch_parameter_counts,
    check_bool,
    check_count,
    check_positive,
    head_names,
    mean_of_others,
)
from pcl.models import Backbone, MultiBranchNet, count_parameters


DECLARATION = MethodSpec(
    name="cl_ilr", display="CL-ILR", citation="Song & Chai, NeurIPS 2018 (as in the OKDDip codebase)",
    trains=("{peers} branches on shared stem + stages 1-2 (shared gradient divided by {peers}), each distils from "
            "the mean of the others"),
    deploys="shared + branch 1",
    heads=(Head("branch{j}", "peer", "branch j"), Head("ensemble", "ensemble", "mean logits of the branches")),
    deployed="branch1",
    options=(
        Option("peers", 3, "number of branches m (top-level config key `peers`)", minimum=2),
        Option("temperature", 3.0, "softmax temperature T of the KD terms (each scaled by T^2)", minimum=0,
               exclusive_minimum=True),
        Option("rampup_length", 80, "epochs of the sigmoid ramp-up w(e) = exp(-5(1 - e/L)^2) (0: none)",
               minimum=0, time_constant="epochs"),
        Option("gradient_rescale", True, "divide the shared layers' gradient by m (ILR); False = plain CL"),
        Option("detach_target", True, "the mean of the other branches is a fixed target (False: it carries gradient)",
               neutral=True,
               disagreement=(False, "True: the mean of the other branches is a fixed target (as every KD target "
                                    "here); False: it carries gradient into them")),
    ),
    relative_cost=2.38, tables=("table2",), order=2,
)


class GradientRescale(torch.autograd.Function):
    """Identity forward; backward divides the incoming gradient by `scale` (CL-ILR's backprop rescaling)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = float(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output / ctx.scale, None


def rescale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    return GradientRescale.apply(x, scale)


class CLILR(Method):
    declaration = DECLARATION

    def __init__(self, backbone: str, num_classes: int, *, peers: int, temperature: float, rampup_length: int,
                 gradient_rescale: bool, detach_target: bool, dropout: float | None = None):
        """peers: m >= 2 branches. gradient_rescale: divide the shared layers' gradient by m (ILR); False = plain CL.
        detach_target: the mean of the other branches is a fixed target (False: it carries gradient)."""
        super().__init__(backbone, num_classes, rampup_length=rampup_length, dropout=dropout)
        self.peers = check_count("cl_ilr", "peers", peers, 2, "each branch learns from the other branches")
        self.temperature = check_positive("temperature", temperature)
        self.gradient_rescale = check_bool("gradient_rescale", gradient_rescale)
        self.detach_target = check_bool("detach_target", detach_target)
        self.net = MultiBranchNet(backbone, num_classes, self.peers, dropout)

    @property
    def peer_heads(self) -> tuple[str, ...]:
        return tuple(head_names("branch", self.peers))

    def branch_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        shared = self.net.shared_features(x)
        if self.gradient_rescale:
            shared = rescale_gradient(shared, self.peers)
        return [branch(shared)[1] for branch in self.net.branches]

    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        logits = self.branch_logits(views[0])
        others = mean_of_others(logits)
        losses: LossDict = {
            "ce": sum(F.cross_entropy(z, targets) for z in logits),
            "kd": sum(kd_loss(z, t, self.temperature, detach_teacher=self.detach_target)
                      for z, t in zip(logits, others)),
        }
        return losses, dict(zip(head_names("branch", self.peers), logits))

    def loss_weights(self) -> dict[str, torch.Tensor]:
        return {"kd": self.distill_weight}

    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        logits = self.branch_logits(x)
        heads: LogitDict = dict(zip(head_names("branch", self.peers), logits))
        heads["ensemble"] = torch.stack(logits).mean(dim=0)
        return heads

    def export_deployed(self) -> Backbone:
        return self.net.export_branch(0)

    def head_parameter_counts(self) -> dict[str, int]:
        """branch j: shared + branch j; ensemble: shared + every branch."""
        return branch_parameter_counts(self.net, "branch") | {"ensemble": count_parameters(self.net)}
