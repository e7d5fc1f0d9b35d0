"""Pieces several methods share: the ONE-style gate, distillation from the other branches, option checks."""
from __future__ import annotations

import copy
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from pcl.losses import kd_loss
from pcl.methods.base import Method
from pcl.models import Backbone, MultiBranchNet, build_backbone, count_parameters


class BranchGate(nn.Module):
    """ONE's gate: pooled feature -> FC(m) -> BN -> ReLU -> softmax over the m branches (weights sum to one)."""

    def __init__(self, in_features: int, num_branches: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_branches)
        self.bn = nn.BatchNorm1d(num_branches)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(feature_map, 1).flatten(1)
        return F.softmax(F.relu(self.bn(self.fc(pooled))), dim=1)


def gated_logits(gate_weights: torch.Tensor, logits: list[torch.Tensor]) -> torch.Tensor:
    """sum_j g_j z_j per sample: [B, m] x m * [B, C] -> [B, C]."""
    return torch.einsum("bm,mbc->bc", gate_weights, torch.stack(logits))


def kd_from_others(student_logits: list[torch.Tensor], teacher_logits: list[torch.Tensor],
                   temperature: float) -> torch.Tensor:
    """sum_j 1/(m-1) sum_{l != j} KD(z_j <- t_l): every branch learns from the teachers of the OTHER branches."""
    m = len(student_logits)
    if m < 2:
        raise ValueError(f"distillation from the other branches needs at least 2 branches, got {m}")
    total = student_logits[0].new_zeros(())
    for j, student in enumerate(student_logits):
        for l, teacher in enumerate(teacher_logits):
            if l != j:
                total = total + kd_loss(student, teacher, temperature) / (m - 1)
    return total


class ParallelNetworks(Method):
    """K full networks without shared layers (DML, KDCL): heads net1..netK + their mean; net1 is deployed."""


    def __init__(self, backbone: str, num_classes: int, peers: int, rampup_length: int, why: str,
                 dropout: float | None = None):
        super().__init__(backbone, num_classes, rampup_length=rampup_length, dropout=dropout)
        self.peers = check_count(self.name, "peers", peers, 2, why)
        self.nets = nn.ModuleList([build_backbone(backbone, num_classes, dropout) for _ in range(self.peers)])

    @property
    def peer_heads(self) -> tuple[str, ...]:
        return tuple(head_names("net", self.peers))

    def head_parameter_counts(self) -> dict[str, int]:
        """net k: one network; ensemble: all K networks (their mean logits)."""
        counts = {name: count_parameters(net) for name, net in zip(head_names("net", self.peers), self.nets)}
        counts["ensemble"] = sum(counts.values())
        return counts

    def loss_weights(self) -> dict[str, torch.Tensor]:
        return {"kd": self.distill_weight}

    def eval_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = [net(x) for net in self.nets]
        heads = dict(zip(head_names("net", self.peers), logits))
        heads["ensemble"] = torch.stack(logits).mean(dim=0)
        return heads

    def export_deployed(self) -> Backbone:
        return copy.deepcopy(self.nets[0])


def head_names(prefix: str, count: int) -> list[str]:
    """prefix1..prefixN: heads are numbered from 1 in every record, as in the paper."""
    return [f"{prefix}{i + 1}" for i in range(count)]


def branch_parameter_counts(net: MultiBranchNet, prefix: str, count: int | None = None) -> dict[str, int]:
    """prefix j -> parameters of the shared layers + branch j (what exporting that branch deploys).

    count: how many branches to name (the first ones; default all).
    """
    shared = count_parameters(net.shared)
    branches = net.branches[: net.num_branches if count is None else count]
    return {name: shared + count_parameters(b) for name, b in zip(head_names(prefix, len(branches)), branches)}


def mean_of_others(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    """For each branch j, the mean of the OTHER branches' logits, 1/(m-1) sum_{l != j} z_l (CL-ILR's target)."""
    m = len(logits)
    if m < 2:
        raise ValueError(f"the mean of the other branches needs at least 2 branches, got {m}")
    return [torch.stack([z for l, z in enumerate(logits) if l != j]).mean(dim=0) for j in range(m)]


def shared_channels(net: nn.Module, image_size: int = 32) -> int:
    """Channels of a MultiBranchNet's shared output, probed with one zero image (no attribute records it)."""
    ref = next(net.parameters())
    was_training = net.training
    net.eval()
    with torch.no_grad():
        channels = net.shared_features(ref.new_zeros(1, 3, image_size, image_size)).shape[1]
    net.train(was_training)
    return int(channels)


# ---- option validation: a bad value fails at construction, naming the option and what it may be ------------------
def check_count(method: str, option: str, value: object, minimum: int, why: str = "") -> int:
    """An integer option >= minimum (bools are refused: True is not a peer count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{method} needs {option} to be an integer >= {minimum}{reason}, got {option}={value!r}")
    return int(value)


def check_positive(option: str, value: object) -> float:
    """A real option > 0 (temperatures, weights)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{option} must be a number > 0, got {option}={value!r}")
    return float(value)


def check_bool(option: str, value: object) -> bool:
    """A switch must be a real bool: the string 'False' from a config file would silently mean True."""
    if not isinstance(value, bool):
        raise ValueError(f"{option} must be True or False, got {option}={value!r}")
    return value


def check_choice(option: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {option} {value!r}; allowed: {', '.join(allowed)}")
    return str(value)
