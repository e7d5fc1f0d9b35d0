"""Ablation of the peer mean teacher (reference numbers: analysis/paper.py, confidence C).

Reproduces the paper's study of where L_pm's targets come from, all else PCL:
  * mean_others (PCL): each peer learns from the temporal means (EMA) of the OTHER peers;
  * live_others: from the live other peers (mutual learning, no temporal mean) - reported worse;
  * own_mean: from its own temporal mean;
  * ema_decay=1.0: the mean teacher as a plain uniform average of all past weights instead of the temporal
    (exponential) mean - reported worse.
Default ResNet-32 on CIFAR-100 (not stated in the paper). The PCL cell shares its run_key with table2's.

    python ablations/mean_teacher.py with dataset=cifar100
"""
from __future__ import annotations


from experiments.cli import cli
from experiments.common import make_experiment, pcl_ablation_grid

VARIANTS: dict[str, dict] = {
    "peer mean teachers of the others (PCL)": {"peer_teacher": "mean_others"},
    "live peers (mutual learning)": {"peer_teacher": "live_others"},
    "own mean teacher": {"peer_teacher": "own_mean"},
    "plain average (ema_decay=1.0)": {"peer_teacher": "mean_others", "ema_decay": 1.0},
}


def grid(cfg: dict) -> list[dict]:
    return pcl_ablation_grid(cfg, {name: {"options": options} for name, options in VARIANTS.items()})


ex = make_experiment("ablation_mean_teacher", grid, doc=__doc__, script=__file__, defaults={"method": "pcl"})

if __name__ == "__main__":
    cli(ex)
