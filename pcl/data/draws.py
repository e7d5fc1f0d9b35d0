"""The seeded draws every loader shares (device-resident and ImageNet): the generator seed of an epoch and a seeded
train subset. Both are pure functions of their arguments, so data order and augmentation depend only on (seed, epoch)
and a resumed run sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import torch
from torch import Tensor

_EPOCH_SEED_STRIDE = 100_003


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch: a pure function of (seed, epoch)."""
    return seed * _EPOCH_SEED_STRIDE + epoch


def subset_indices(n: int, size: int, seed: int) -> Tensor:
    """A seeded random subset of ``range(n)`` (sorted), the same on every machine for a given seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:size].sort().values
