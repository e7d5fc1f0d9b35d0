"""Shared fixtures: tiny synthetic runs that take seconds on a 2-core CPU."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_loaders():
    """Factory: (train_loader, test_loader, num_classes) on synthetic data for a number of views."""
    from pcl.data import build_loaders

    def make(num_views: int = 1, *, classes: int = 4, train_size: int = 256, test_size: int = 128,
             batch_size: int = 64, seed: int = 0):
        return build_loaders("synthetic", batch_size=batch_size, num_views=num_views, device="cpu", seed=seed,
                             synthetic_classes=classes, synthetic_train_size=train_size,
                             synthetic_test_size=test_size)

    return make
