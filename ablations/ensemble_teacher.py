"""Ablation of the peer ensemble teacher's form (reference numbers: analysis/paper.py, confidence C).

Reproduces the paper's comparison of ensemble teachers, all else PCL:
  * concat_fc (PCL): one classifier on the concatenated pooled features of the peers;
  * logit_average: the mean of the peers' logits;
  * gate: ONE's gate (softmax weights from the shared feature) over the peers' logits.
Default ResNet-32 on CIFAR-100 (not stated in the paper). The PCL cell shares its run_key with table2's.

    python ablations/ensemble_teacher.py with dataset=cifar100
"""
from __future__ import annotations


from experiments.cli import cli
from experiments.common import make_experiment, pcl_ablation_grid

FORMS = ("concat_fc", "logit_average", "gate")


def grid(cfg: dict) -> list[dict]:
    return pcl_ablation_grid(cfg, {form: {"options": {"ensemble_form": form}} for form in FORMS})


ex = make_experiment("ablation_ensemble_teacher", grid, doc=__doc__, script=__file__, defaults={"method": "pcl"})

if __name__ == "__main__":
    cli(ex)
