"""Data: whole CIFAR/synthetic splits held on the training device with batched on-device augmentation, and an
ImageNet folder loader with the same contract (one view per peer: Wu & Gong 2021's multi-input augmentation).

Only torch, torchvision and numpy are imported (torchvision lazily, where it is needed).
"""
from .augment import MEANS_STDS, augment_views, crop_flip, normalize, sample_crop_flip
from .cifar import ArraySplit, load_cifar, resolve_data_root
from .loaders import DATASETS, NUM_CLASSES, DeviceLoader, build_loaders
from .synthetic import make_synthetic

__all__ = [
    "ArraySplit",
    "DATASETS",
    "DeviceLoader",
    "MEANS_STDS",
    "NUM_CLASSES",
    "augment_views",
    "build_loaders",
    "crop_flip",
    "load_cifar",
    "make_synthetic",
    "normalize",
    "resolve_data_root",
    "sample_crop_flip",
]
