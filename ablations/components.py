"""Ablation of PCL's components (reference numbers: analysis/paper.py, confidence C).

Reproduces the paper's component study, adding one piece at a time to multi-branch training:
  1. multi-branch CE only          (ensemble_teacher=False, mean_teacher=False, multi_input=False)
  2. + multi-input augmentation    (each peer on its own view)
  3. + peer ensemble teacher       (L_pe; the paper reports about +2.6 points)
  4. + peer mean teacher = PCL     (L_pm; about +1.1 more)
  5. PCL without multi-input       (about -0.7)
The paper does not state backbone and dataset here; the default is ResNet-32 on CIFAR-100 (`backbone=...`,
`dataset=...` change it). The PCL cell has the same run_key as table2's pcl cell: done once, used by both.

    python ablations/components.py with dataset=cifar100
"""
from __future__ import annotations


from experiments.cli import cli
from experiments.common import make_experiment, pcl_ablation_grid

VARIANTS: dict[str, dict] = {
    "multi-branch CE": {"ensemble_teacher": False, "mean_teacher": False, "multi_input": False},
    "+ multi-input": {"ensemble_teacher": False, "mean_teacher": False, "multi_input": True},
    "+ peer ensemble teacher": {"ensemble_teacher": True, "mean_teacher": False, "multi_input": True},
    "+ peer mean teacher (PCL)": {"ensemble_teacher": True, "mean_teacher": True, "multi_input": True},
    "PCL w/o multi-input": {"ensemble_teacher": True, "mean_teacher": True, "multi_input": False},
}


def grid(cfg: dict) -> list[dict]:
    return pcl_ablation_grid(cfg, {name: {"options": options} for name, options in VARIANTS.items()})


ex = make_experiment("ablation_components", grid, doc=__doc__, script=__file__, defaults={"method": "pcl"})

if __name__ == "__main__":
    cli(ex)
