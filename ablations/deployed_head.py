"""Which model to deploy: a peer, its temporal mean, the peer ensemble, or PCL-E (Wu & Gong 2021).

Reproduces the paper's comparison of PCL's heads and of PCL-E with the other methods' ensembles: ONE grid of PCL
runs (the same run_keys as table2's pcl cells, so nothing is trained twice), whose records already hold every
head's per-epoch and final error: `peer1` (a live peer), `mean_peer1` (its temporal mean: the deployed model),
`ensemble` (the peer ensemble teacher) and `pcl_e` (the ensemble of the temporal means), with training and
deployment parameter counts. The analysis compares those heads from the same runs.

    python ablations/deployed_head.py with dataset=cifar100 'backbone=["resnet32","resnet110"]'
"""
from __future__ import annotations


from experiments.cli import cli
from experiments.common import make_experiment, pcl_ablation_grid

HEADS = ("peer1", "mean_peer1", "ensemble", "pcl_e")  # what the analysis compares (result keys last/top1_err/HEAD)


def grid(cfg: dict) -> list[dict]:
    return pcl_ablation_grid(cfg, {"pcl": {}})


ex = make_experiment("ablation_deployed_head", grid, doc=__doc__, script=__file__, defaults={"method": "pcl"})

if __name__ == "__main__":
    cli(ex)
