"""CIFAR comparison, the paper's main table (called Table 2 in this project): top-1 error (%) of the deployed model.

Reproduces: baseline, DML, CL-ILR, ONE, FFL-S, OKDDip, KDCL and PCL with ResNet-32, ResNet-110, WRN-20-8, VGG-16 and
DenseNet-40-12 on CIFAR-10 or CIFAR-100 (`dataset=cifar10|cifar100`), mean +- std over `seeds` (
reference numbers: analysis/paper.py, confidence A; five Baseline cells, confidence Q). PCL-E is not a separate
run: both candidate heads of the pcl runs are recorded, `ensemble` (the ensemble teacher; most probably the paper's
PCL-E) and `pcl_e` (the mean of the temporal-mean peers), with their parameter counts; every other head too.

    python experiments/table2.py with dataset=cifar100                          # 8 methods x 5 backbones x 3 seeds
    python experiments/table2.py with quick                                     # 10 epochs on 5000 images
    python experiments/table2.py with method=pcl backbone=resnet32 seeds=[0]    # one cell
    python experiments/table2.py plan with dataset=cifar10                      # list the runs, train nothing
"""
from __future__ import annotations


from experiments.cli import cli
from experiments.common import axis, check_dataset, make_experiment
from pcl import registry
from pcl.declarations import GRID_TABLES

#: the default grid, from the declarations: the methods and backbones that list this table (pcl.registry)
TABLE_METHODS = registry.table_methods("table2")
TABLE_BACKBONES = registry.table_backbones("table2")


def grid(cfg: dict) -> list[dict]:
    check_dataset(cfg, GRID_TABLES["table2"])
    return [{"label": f"{method}/{backbone}", "method": method, "backbone": backbone}
            for backbone in axis(cfg["backbone"], TABLE_BACKBONES, "backbone")
            for method in axis(cfg["method"], TABLE_METHODS, "method")]


ex = make_experiment("table2", grid, doc=__doc__, script=__file__, defaults={"method": None, "backbone": None})

if __name__ == "__main__":
    cli(ex)
