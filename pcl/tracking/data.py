"""What identifies a run's data: the fingerprint of the dataset files under `data_root` becomes the run config's
`data_identity` (part of the run_key), so a different copy of the data is a different run, whatever its path.

`data_identity` is None (neutral: run_keys as before the key existed) for the official CIFAR files (their md5 sums
equal torchvision's) and for synthetic data; otherwise it is a checksum of the files (CIFAR: md5 of each batch
file; ImageNet: the file list). It is computed when the config is normalized, before the run_key is needed (plan,
skip check); checksums are cached by path, size and mtime.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Mapping

from pcl import schema

#: datasets read from files under data_root
FILE_DATASETS = ("cifar10", "cifar100", "imagenet")
_READ_FILES = object()
#: the data identity every config normalized now takes instead of reading the files (recorded_identity)
_RECORDED: contextvars.ContextVar[Any] = contextvars.ContextVar("recorded_identity", default=_READ_FILES)


@contextlib.contextmanager
def recorded_identity(identity: str | None) -> Iterator[None]:
    """Inside, a run config on file data takes `identity` as its data_identity, and no data file is read: for the
    analysis, which rebuilds plans from records. A record's data_root is a path on the machine that trained it,
    or any path a record names (a FIFO there would hang the command, a file anywhere would be read); the identity
    the record holds is the one its run_key was made with."""
    token = _RECORDED.set(identity)
    try:
        yield
    finally:
        _RECORDED.reset(token)


def data_fingerprint(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fingerprint of the data a run config reads ({"dataset", "identity", "official", ...}: cifar.py's
    cifar_fingerprint, imagenet.py's imagenet_fingerprint), or None for synthetic data. FileNotFoundError (or
    OSError) when the files are not there."""
    dataset = cfg["dataset"]
    if dataset not in FILE_DATASETS:
        return None
    if dataset == "imagenet":
        from pcl.data.fingerprint import imagenet_fingerprint

        return imagenet_fingerprint(cfg.get("data_root"))
    from pcl.data.fingerprint import cifar_fingerprint

    return cifar_fingerprint(dataset, cfg.get("data_root"))


def normalize_run_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """pcl.schema.normalize_run_config, with `data_identity` (and so the run_key) taken from the data on disk.

    When the data cannot be read here (not downloaded yet, `plan` on another machine) the given value stays (None:
    the official files are assumed); the tracked run computes it again before it checks for a COMPLETED record.
    """
    cfg = schema.normalize_run_config(raw)
    identity = _RECORDED.get()
    if cfg["dataset"] not in FILE_DATASETS:
        identity = None
    elif identity is _READ_FILES:
        try:
            fingerprint = data_fingerprint(cfg)
        except OSError:
            return cfg
        identity = fingerprint["identity"] if fingerprint is not None else None
    if identity == cfg["data_identity"]:
        return cfg
    return schema.normalize_run_config({**cfg, "data_identity": identity})
