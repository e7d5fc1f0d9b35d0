"""What identifies a run's data: the fingerprint of the dataset files under `data_root` becomes the run config's
`data_identity` (part of the run_key), so a different copy of the data is a different run, whatever its path.

`data_identity` is None (neutral: run_keys as before the key existed) for the official CIFAR files (their md5 sums
equal torchvision's) and for synthetic data; otherwise it is a checksum of the files (CIFAR: md5 of each batch
file; ImageNet: the file list). It is computed when the config is normalized, before the run_key is needed (plan,
skip check); checksums are cached by path, size and mtime.
"""
from __future__ import annotations

from typing import Any, Mapping

from pcl import schema

#: datasets read from files under data_root
FILE_DATASETS = ("cifar10", "cifar100", "imagenet")


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
    try:
        fingerprint = data_fingerprint(cfg)
    except OSError:
        return cfg
    identity = fingerprint["identity"] if fingerprint is not None else None
    if identity == cfg["data_identity"]:
        return cfg
    return schema.normalize_run_config({**cfg, "data_identity": identity})
