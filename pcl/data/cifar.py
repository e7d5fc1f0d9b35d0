"""CIFAR-10/100 from the original python-version files, read straight into uint8 tensors.

Why not torchvision's dataset classes: they keep HWC numpy arrays for per-sample PIL transforms and verify md5
sums; we want the whole split as one ``[N, 3, 32, 32]`` uint8 tensor to put on the device once, and we must
accept files whose checksums differ from the originals (e.g. a re-encoded stand-in copy used for pipeline sanity runs, bench/gpu_sanity.py).
torchvision is used only to download when asked to.

The files are (Python 2) pickles; they are read with pcl.safe_pickle's restricted unpickler, which resolves only
the exact (module, name) pairs of the few numpy globals an array needs (no dotted names), each a checked stand-in
(pcl.data.numpy_pickle: arrays and scalars of numbers from the file's own bytes), so a tampered data file can
neither run code nor hand numpy's C code a state it did not check.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pcl.safe_pickle import DamagedPickleError, UnsafePickleError, restricted_loads

from . import numpy_pickle
from .fingerprint import _DATA_ROOT_ENV, _LAYOUT, _MD5_CACHE, _stat_key, resolve_data_root


@dataclass
class ArraySplit:
    """A whole split in memory: ``images`` uint8 ``[N, C, H, W]``, ``labels`` int64 ``[N]``."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must be [N] with N = {self.images.shape[0]}, got shape {tuple(self.labels.shape)}"
            )
        if self.labels.dtype != torch.int64:
            self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: Tensor) -> ArraySplit:
        """The images/labels at ``indices`` (a copy)."""
        indices = torch.as_tensor(indices, dtype=torch.int64, device=self.images.device)
        return ArraySplit(self.images.index_select(0, indices), self.labels.index_select(0, indices))

    def to(self, device: torch.device | str) -> ArraySplit:
        return ArraySplit(self.images.to(device), self.labels.to(device))


class DataFileError(ValueError):
    """A data file that is present but cannot be used (truncated, corrupt, wrong content); the message names the
    file, what is wrong with it and how to replace it."""


class UnsafeDataFileError(DataFileError, UnsafePickleError):
    """A data file that asks to run code (a pickle global other than numpy's array rebuilders): never loaded."""


_WHAT = "a CIFAR batch file only holds numpy arrays and lists"


def _read_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read()
            key = _stat_key(path, os.fstat(f.fileno()))
        # the bytes actually read are what the run's recorded fingerprint describes
        _MD5_CACHE[key] = hashlib.md5(data, usedforsecurity=False).hexdigest()
        # latin1 is what the Python 2 originals need for their array bytes; keys may then be str or bytes.
        raw = restricted_loads(data, numpy_pickle.GLOBALS, _WHAT, encoding="latin1")
        raw = numpy_pickle.unwrap(raw)
    except UnsafePickleError as err:
        raise UnsafeDataFileError(f"{path}: {err}") from None
    except (DamagedPickleError, OSError) as err:
        # a truncated, overwritten or hand-made pickle (BUILD on an odd object, a bad opcode, ...), or no read
        named = str(err) if isinstance(err, DamagedPickleError) else f"{type(err).__name__}: {err}"
        reason = " ".join(named.split())[:300]
        raise DataFileError(f"{path}: not a readable CIFAR batch file ({reason}); it is truncated or corrupt: "
                            "delete it and fetch the files again (download=True)") from None
    if not isinstance(raw, dict):
        raise DataFileError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    if not all(isinstance(k, (str, bytes)) for k in raw):  # a key is only ever named: never made text whatever it is
        raise DataFileError(f"{path}: a CIFAR batch's keys are names (text), found a "
                            f"{next(type(k).__name__ for k in raw if not isinstance(k, (str, bytes)))}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _read_split(directory: Path, files: tuple[str, ...], label_key: str, num_classes: int) -> ArraySplit:
    images, labels = [], []
    for name in files:
        path = directory / name
        batch = _read_batch(path)
        if "data" not in batch or label_key not in batch:
            found = ", ".join(repr(k[:40]) for k in sorted(batch)[:8])
            raise DataFileError(f"{path}: missing key 'data' or {label_key!r} (found {found or 'none'})")
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:  # a list (ragged or not) is no CIFAR file
            shown = f"an array of {data.dtype}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
            raise DataFileError(f"{path}: 'data' must be a uint8 array, got {shown}")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataFileError(f"{path}: 'data' must be [N, 3072] (R, G, B planes of 32x32), got {data.shape}")
        y = _labels(path, label_key, batch[label_key])
        if y.shape[0] != data.shape[0]:
            raise DataFileError(f"{path}: {data.shape[0]} images but {y.shape[0]} labels")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise DataFileError(f"{path}: labels outside 0..{num_classes - 1} (min {y.min()}, max {y.max()})")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    if not sum(len(y) for y in labels):
        raise DataFileError(f"{directory}: {', '.join(files)} hold no images: the files are damaged or not CIFAR's; "
                            "delete them and fetch the files again (download=True)")
    return ArraySplit(
        torch.from_numpy(np.ascontiguousarray(np.concatenate(images))),
        torch.from_numpy(np.concatenate(labels)),
    )


def _labels(path: Path, key: str, value: Any) -> np.ndarray:
    """A batch's labels as int64: a list of integers (the originals) or a 1-D integer array, never a cast of
    floats, text or booleans (8.9 would silently be class 8)."""
    if isinstance(value, np.ndarray):
        ok = value.ndim == 1 and value.dtype.kind in "iu"
    else:
        ok = isinstance(value, list) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                             for v in value)
    if ok:
        try:
            return np.asarray(value, dtype=np.int64)
        except OverflowError:
            pass
    shown = f"{type(value).__name__}" + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else "")
    raise DataFileError(f"{path}: {key!r} must be a list of integer class labels, got a {shown} (or integers "
                        "beyond 64 bits): the file is damaged or not CIFAR's")


def _download(name: str, root: Path) -> None:
    import torchvision  # noqa: PLC0415 - only needed for the optional download

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    cls(root=str(root), train=True, download=True)


def load_cifar(
    name: str, root: str | os.PathLike | None = None, download: bool = False
) -> tuple[ArraySplit, ArraySplit, int]:
    """Load CIFAR-10 or CIFAR-100 (``name`` in {"cifar10", "cifar100"}) as ``(train, test, num_classes)``.

    ``root`` is the folder containing ``cifar-10-batches-py/`` or ``cifar-100-python/`` (default
    ``$PCL_DATA_ROOT``, then ``./data``). CIFAR-100 uses the 100 fine labels. No checksum is verified here.
    """
    if name not in _LAYOUT:
        raise ValueError(f"unknown CIFAR dataset {name!r}; expected one of {sorted(_LAYOUT)}")
    dirname, train_files, test_files, label_key, num_classes, display = _LAYOUT[name]
    root = resolve_data_root(root)
    directory = root / dirname
    needed = train_files + test_files
    missing = [f for f in needed if not (directory / f).is_file()]
    if missing and download:
        _download(name, root)
        missing = [f for f in needed if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{display} not found under data root {str(root)!r}: expected directory {str(directory)!r} "
            f"with the python-version files {', '.join(needed)} (missing: {', '.join(missing)}). "
            f"Set download=True (python -m pcl.distributed: --download) to fetch and extract them there with "
            f"torchvision, or set data_root "
            f"(or the {_DATA_ROOT_ENV} environment variable) to the folder that contains {dirname}/."
        )
    train = _read_split(directory, train_files, label_key, num_classes)
    test = _read_split(directory, test_files, label_key, num_classes)
    return train, test, num_classes
