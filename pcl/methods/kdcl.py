"""KDCL: Knowledge Distillation via Collaborative Learning (Guo et al., CVPR 2020), from the KDCL paper.

K = `peers` full networks WITHOUT shared layers; network k trains on its OWN augmented view x_k of each image.
The soft target is an ensemble of the students' logits, a fixed (detached) target for everyone:

    naive:     t = 1/K sum_k z_k
    min_logit: t = min_k (z_k - z_k[y])   (elementwise over classes; KDCL's MinLogit: each network's logits are
               shifted so its target-class logit is 0, then the smallest value per class is kept, which keeps the
               target class at 0 and every wrong class at its most confident-against value)
    L = sum_k CE(z_k, y) + w(e) sum_k KD(z_k <- t),   KD at T (default 3).

KDCL has no ramp-up: `rampup_length` defaults to 0 (w = 1); from random initialisation at lr 0.1 this starts down the
path that collapses DML in short runs (see pcl/methods/dml.py): set `options.rampup_length=1` for them. Heads: net1..netK and `ensemble` (mean logits on the
test image). Deployed: net1, a plain backbone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pcl.declarations import Head, MethodSpec, Option
from pcl.losses import kd_loss
from pcl.methods.base import LogitDict, LossDict
from pcl.methods.common import ParallelNetworks, check_choice, check_positive, head_names


DECLARATION = MethodSpec(
    name="kdcl", display="KDCL", citation="Guo et al., CVPR 2020 (from the KDCL paper)",
    trains="{peers} full networks, each on its own view; the ensemble of their logits teaches each",
    deploys="network 1",
    heads=(Head("net{j}", "peer", "network j"), Head("ensemble", "ensemble", "mean logits of the networks")),
    deployed="net1",
    options=(
        Option("peers", 3, "number of networks K, each on its own view (top-level config key `peers`)", minimum=2),
        Option("temperature", 3.0, "softmax temperature T of the KD terms (each scaled by T^2)", minimum=0,
               exclusive_minimum=True),
        Option("ensemble", "naive", "the soft target: naive (mean logits) | min_logit (KDCL's MinLogit)",
               choices=("naive", "min_logit")),
        Option("rampup_length", 0, "epochs of the sigmoid ramp-up of the distillation weight (0: none, KDCL's)",
               minimum=0, time_constant="epochs"),
    ),
    views="peers", relative_cost=3.37, tables=("table2",), order=6,
)

ENSEMBLES = ("naive", "min_logit")


def min_logit_target(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """KDCL's MinLogit: min over networks of z_k - z_k[y] (per sample, per class)."""
    shifted = [z - z.gather(1, targets[:, None]) for z in logits]
    return torch.stack(shifted).amin(dim=0)


class KDCL(ParallelNetworks):
    declaration = DECLARATION

    def __init__(self, backbone: str, num_classes: int, *, peers: int, temperature: float, ensemble: str,
                 rampup_length: int, dropout: float | None = None):
        """peers: K >= 2 networks, each on its own view. ensemble: naive (mean logits) | min_logit."""
        super().__init__(backbone, num_classes, peers, rampup_length,
                         "the ensemble target needs at least two networks", dropout=dropout)
        self.temperature = check_positive("temperature", temperature)
        self.ensemble_kind = check_choice("ensemble", ensemble, ENSEMBLES)
        self.num_views = self.peers

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
