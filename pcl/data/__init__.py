"""Data: whole CIFAR/synthetic splits held on the training device with batched on-device augmentation, and an
ImageNet folder loader with the same contract (one view per peer: Wu & Gong 2021's multi-input augmentation).

The names below are loaded on first use (PEP 562), so that `pcl.data.fingerprint` (what identifies the data; no
torch) can be imported by planning commands without importing the loaders, which import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule that defines it
_EXPORTS = {
    "MEANS_STDS": "augment", "augment_views": "augment", "crop_flip": "augment", "normalize": "augment",
    "sample_crop_flip": "augment",
    "ArraySplit": "cifar", "load_cifar": "cifar",
    "resolve_data_root": "fingerprint",
    "DATASETS": "loaders", "NUM_CLASSES": "loaders", "DeviceLoader": "loaders", "build_loaders": "loaders",
    "make_synthetic": "synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pcl.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
