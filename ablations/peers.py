"""Ablation of the number of peers m (reference numbers: analysis/paper.py, confidence C).

Reproduces the paper's study of m in {2, 3, 4, 5} (`peer_counts`): more peers help, with 4 still competitive.
The analysis reports the deployed model's error with the training-time parameter count of each m. Default
ResNet-32 on CIFAR-100 (not stated in the paper). The m=3 cell shares its run_key with table2's pcl cell.

    python ablations/peers.py with dataset=cifar100
    python ablations/peers.py with 'peer_counts=[2,4]'
"""
from __future__ import annotations


from experiments.cli import cli
from experiments.common import make_experiment, pcl_ablation_grid
from pcl.tracking import ConfigError


def grid(cfg: dict) -> list[dict]:
    counts = cfg["peer_counts"]
    if not isinstance(counts, list) or not counts or any(isinstance(m, bool) or not isinstance(m, int)
                                                          for m in counts):
        raise ConfigError(f"config key 'peer_counts'={counts!r} is invalid: must be a non-empty list of integers")
    return pcl_ablation_grid(cfg, {f"m={m}": {"peers": m} for m in counts})


ex = make_experiment("ablation_peers", grid, doc=__doc__, script=__file__,
                     defaults={"method": "pcl", "peer_counts": [2, 3, 4, 5]}, set_with={"peers": "peer_counts=[...]"})

if __name__ == "__main__":
    cli(ex)
