"""ImageNet (ILSVRC-2012) with ResNet-18: top-1 error (%) of the deployed model.

Reproduces the paper's ImageNet result. Only PCL vs the plain network is known here (analysis/paper.py, confidence
C: PCL 29.58 % top-1 error, about 0.9 points better than the baseline); the grid also runs DML, ONE and OKDDip, the
online-distillation methods the paper compares on CIFAR whose ImageNet numbers are unknown here (their cells stay
"unknown" in the analysis, never invented). Recipe [ours]: 90 epochs, batch 256, lr 0.1 x0.1 at 30/60,
weight decay 1e-4, RandomResizedCrop 224 + flip. `data_root` must hold the ImageNet folders.

    python experiments/imagenet.py with data_root=/data/imagenet
    python experiments/imagenet.py with data_root=/data/imagenet method=pcl seeds=[0]
    torchrun --nproc_per_node=4 experiments/imagenet.py with data_root=/data/imagenet gpus=4   # 4 GPUs per run

`gpus` (data-parallel processes; batch_size stays the global 256) and `batch_norm` (local|sync) are run keys: a
4-GPU run is another run than a 1-GPU one. On SLURM: `python slurm/launch_all.py --datasets imagenet --set gpus=4`.
"""
from __future__ import annotations


from experiments.cli import cli
from experiments.common import axis, check_dataset, make_experiment
from pcl import registry
from pcl.declarations import GRID_TABLES

#: the default grid, from the declarations: the methods and backbones that list this table (pcl.registry)
TABLE_METHODS = registry.table_methods("imagenet")
TABLE_BACKBONES = registry.table_backbones("imagenet")


def grid(cfg: dict) -> list[dict]:
    check_dataset(cfg, GRID_TABLES["imagenet"])
    return [{"label": f"{method}/{backbone}", "method": method, "backbone": backbone}
            for backbone in axis(cfg["backbone"], TABLE_BACKBONES, "backbone")
            for method in axis(cfg["method"], TABLE_METHODS, "method")]


ex = make_experiment("imagenet", grid, doc=__doc__, script=__file__,
                     defaults={"dataset": "imagenet", "backbone": "resnet18", "method": None})

if __name__ == "__main__":
    cli(ex)
