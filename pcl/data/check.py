"""Checking a run's data before anything trains: present, readable, the right shape (a driver calls this once per
dataset of a grid, so one missing or corrupt file is one message, not one failed run per grid cell).

A problem is a DataError (a pcl.schema.ConfigError): its one-line message names the config key (`data_root` or
`download`), the folder or file, what is wrong and what would fix it. A failed download removes what it added
to the data folder (and the folder itself when it created it).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pcl.schema import ConfigError

from .cifar import DataFileError, load_cifar
from .fingerprint import _LAYOUT, resolve_data_root


class DataError(ConfigError):
    """The data of a run is missing, unreadable or malformed; raised before any run, record or checkpoint."""


@dataclass(frozen=True)
class DataFacts:
    """What the data holds: images in the train and test split and the number of classes."""

    train_images: int
    test_images: int
    num_classes: int


def check_data(dataset: str, data_root: str | os.PathLike | None = None, download: bool = False) -> DataFacts | None:
    """Read and check the data of `dataset` under `data_root` (CIFAR: every batch file is read in full; ImageNet:
    the train/val class folders are scanned). Returns its DataFacts (None for the synthetic dataset, which is made
    in memory). `download=True` fetches missing CIFAR files first.

    Raises DataError naming the key, the folder or file and the fix.
    """
    if dataset == "synthetic":
        return None
    root = resolve_data_root(data_root)
    shown = f"config key 'data_root'={None if data_root is None else str(data_root)!r} (folder {str(root)!r})"
    if dataset in _LAYOUT:
        return _check_cifar(dataset, root, download, shown)
    if dataset == "imagenet":
        return _check_imagenet(data_root, shown)
    raise DataError(f"config key 'dataset'={dataset!r}: no data check for it")


def _check_cifar(dataset: str, root: Path, download: bool, shown: str) -> DataFacts:
    existed = root.exists()
    before = set(os.listdir(root)) if existed and root.is_dir() else set()
    try:
        train, test, num_classes = load_cifar(dataset, root, download=download)
    except FileNotFoundError as err:
        raise DataError(f"{shown}: {_one_line(err)}") from None
    except DataFileError as err:
        raise DataError(f"{shown}: {_one_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - a failed download: network, disk, a server's answer
        if not download:
            raise
        _undo_download(root, existed, before)
        raise DataError(f"config key 'download'=True: fetching {dataset} into {str(root)!r} failed "
                        f"({type(err).__name__}: {_one_line(err)[:200]}); nothing was kept. Copy the python-version "
                        "files there by hand, or set data_root to a folder that has them") from None
    return DataFacts(len(train), len(test), num_classes)


def _undo_download(root: Path, existed: bool, before: set[str]) -> None:
    """Remove what a failed download added: the data folder if it created it, else the entries it added."""
    if not existed:
        shutil.rmtree(root, ignore_errors=True)
        return
    for name in set(os.listdir(root)) - before:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _check_imagenet(data_root: str | os.PathLike | None, shown: str) -> DataFacts:
    from .fingerprint import find_imagenet_root, scan_imagenet

    try:  # the listing the fingerprint and the loader use: links that leave the root or loop, nested folders,
        root = find_imagenet_root(data_root)  # special or empty files, classes without images: one line each
        scanned = scan_imagenet(root)
    except OSError as err:  # FileNotFoundError, ImageFolderError
        raise DataError(f"{shown}: {_one_line(err)}") from None
    (train_classes, train), (val_classes, val) = scanned["train"], scanned["val"]
    if train_classes != val_classes:
        raise DataError(f"{shown}: ImageNet train/ and val/ under {str(root)!r} have different class folders "
                        f"({len(train_classes)} vs {len(val_classes)})")
    return DataFacts(len(train), len(val), len(train_classes))


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
