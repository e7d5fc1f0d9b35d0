"""A grid of runs: validate every config, the device, the folders, the data and the store first (`check_grid`: one
mistake is one message before any run, record, checkpoint or lock), then run each as its own tracked run; a
signal stops the grid after the current run is recorded."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pcl import results
from pcl.fsio import folder_problem
from pcl.interrupts import MetricsCallback
from pcl.schema import KEYS, MONGO_DB_NAME_RULE, ConfigError
from pcl.tracking.data import normalize_run_config
from pcl.tracking.errors import StoreUnavailable
from pcl.tracking.lifecycle import check_locking, clear_stop, stop_on_signals, stop_requested, stop_signal
from pcl.tracking.run import TrackedRun, describe_ids, run_tracked
from pcl.secrets import redact, resolve_mongo_url
from pcl.tracking.stores import _url_database, open_store


@dataclass
class GridReport:
    """What a grid did; its str is a one-line summary (Sacred logs it as the driver's result)."""

    store: str
    runs: list[TrackedRun] = field(default_factory=list)
    planned: int = 0
    stop_signal: int | None = None
    stopped_reason: str | None = None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def exit_code(self) -> int:
        """0: every run is done, or the only ones not done are being trained by another live process (LOCKED: its
        lock is held, so that process runs and records them); 1: some run FAILED/RECORD_FAILED/BLOCKED/PREEMPTED,
        or the grid stopped early; 128+N: stopped by signal N."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        bad = any(r.status in ("FAILED", "RECORD_FAILED", "BLOCKED", "PREEMPTED") for r in self.runs)
        return 1 if bad or self.stopped_reason or len(self.runs) < self.planned else 0

    def __str__(self) -> str:
        counts = {s: self.count(s) for s in ("COMPLETED", "SKIPPED", "PREEMPTED", "FAILED", "RECORD_FAILED", "BLOCKED",
                                               "LOCKED")}
        done = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
        stop = f"; stopped: {self.stopped_reason}" if self.stopped_reason else ""
        locked = ""
        if counts["LOCKED"] and self.exit_code == 0:
            locked = (f"; the {counts['LOCKED']} locked run(s) are being trained by another live process, which "
                      "records them: nothing left to do here")
        return f"{len(self.runs)}/{self.planned} runs visited ({done or 'none'}) in {self.store}{stop}{locked}"


# ---- checks before the first run ---------------------------------------------------------------------------------
def check_device(name: str) -> None:
    """`device` must exist on this machine (ConfigError naming the allowed values here)."""
    if name in ("auto", "cpu"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(name.split(":", 1)[1]) if ":" in name else 0
    if index < count:
        return
    allowed = "auto, cpu" + (f", cuda, cuda:0..cuda:{count - 1}" if count else "")
    have = "no CUDA device is available" if not count else f"this machine has {count} CUDA device(s)"
    raise ConfigError(f"config key 'device'={name!r} is invalid: {have} on this machine; allowed here: {allowed}")


def check_data_parallel(configs: Sequence[Mapping[str, Any]]) -> None:
    """Every config's `gpus` is the number of processes this job has, and `batch_norm`='sync' has CUDA devices
    (ConfigError naming the key)."""
    from pcl.runner import check_world_size, resolve_device

    for cfg in configs:
        check_world_size(cfg["gpus"])
        if cfg["batch_norm"] == "sync" and resolve_device(cfg["device"]).type != "cuda":
            raise ConfigError(f"config key 'batch_norm'='sync' is invalid with device={cfg['device']!r} on this "
                              "machine: SyncBatchNorm has no CPU kernel; allowed here: local")


def check_writable_folder(key: str, path: str | os.PathLike, flag: str | None = None) -> None:
    """`path` must be a folder this process can create and write (pcl.fsio.folder_problem: tried without creating
    anything). ConfigError naming the config key, or the command's `flag` where it came from one, otherwise."""
    problem = folder_problem(path)
    if problem is not None:
        named = f"{flag} {str(path)!r}" if flag else f"config key {key!r}={str(path)!r}"
        raise ConfigError(f"{named} is invalid: {problem}; must be a folder this user can create and write")


def check_database_name(mongo_url: str | None, db_name: str | None) -> None:
    """`db_name` and the database named in the MongoDB URL must be legal MongoDB database names."""
    KEYS["db_name"].check(db_name)
    url = resolve_mongo_url(mongo_url)
    named = _url_database(url) if url else None
    if named is not None:
        try:
            KEYS["db_name"].check(named)
        except ConfigError:
            raise ConfigError(f"config key 'mongo_url' names the database {named!r}: must be "
                              f"{MONGO_DB_NAME_RULE}") from None


def check_grid(configs: Sequence[Mapping[str, Any]], results_dir: str | os.PathLike,
               mongo_url: str | None = None, db_name: str | None = None) -> None:
    """Everything a grid needs that can be checked before it starts, once: the device, the results and checkpoint
    folders, the database name and the data (read in full, once per dataset and folder), also values that are
    only wrong together with the data (train_subset or batch_size larger than an ImageNet folder's split).

    Raises ConfigError (one line: key, value, what is allowed) and leaves nothing behind.
    """
    from pcl.schema import NUM_CLASSES
    from pcl.data.check import DataError, check_data

    for device in sorted({c["device"] for c in configs}):
        check_device(device)
    check_data_parallel(configs)
    check_writable_folder("results_dir", results_dir)
    for root in sorted({str(c["checkpoint_root"]) for c in configs}):
        check_writable_folder("checkpoint_root", root)
    for cfg in configs:  # a run's checkpoint folder: something else in the way is named, not a traceback
        ckpt_dir = Path(cfg["checkpoint_root"]) / str(cfg.get("run_key") or "")
        # a link in its place would put the run's checkpoint, model and lock wherever it points
        if cfg.get("run_key") and (ckpt_dir.is_symlink() or (ckpt_dir.exists() and not ckpt_dir.is_dir())):
            raise ConfigError(f"config key 'checkpoint_root'={str(cfg['checkpoint_root'])!r}: {str(ckpt_dir)!r}, the "
                              f"checkpoint folder of run {cfg['run_key']}, is a file or a link in the way; "
                              "move or delete it, or set checkpoint_root to another folder")
    check_database_name(mongo_url, db_name)
    from pcl.methods import check_method_inputs  # imports torch: not at import (plan's result is checked here)

    check_method_inputs(configs)  # the files the methods read (kd's teacher model)
    facts = {}
    for cfg in configs:
        where = (cfg["dataset"], cfg["data_root"], cfg["download"])
        if where not in facts:
            facts[where] = check_data(*where)
        data = facts[where]
        if data is None:
            continue
        if data.num_classes != NUM_CLASSES[cfg["dataset"]]:
            raise DataError(f"config key 'data_root'={cfg['data_root']!r}: {cfg['dataset']} there has "
                            f"{data.num_classes} classes, expected {NUM_CLASSES[cfg['dataset']]}")
        if cfg["train_subset"] is not None and cfg["train_subset"] > data.train_images:
            raise ConfigError(f"config key 'train_subset'={cfg['train_subset']} is invalid: must be at most the "
                              f"{data.train_images} training images of {cfg['dataset']} under data_root")
        images = cfg["train_subset"] or data.train_images
        if cfg["batch_size"] > images:
            raise ConfigError(f"config key 'batch_size'={cfg['batch_size']} is invalid: must be at most the "
                              f"{images} images trained on; a step takes a full batch")


def _data_parallel_broken() -> bool:
    """A run with gpus > 1 failed on this process (pcl.distributed.broken): no further run can start with the
    others."""
    from pcl import distributed

    return distributed.broken() is not None


def _skipped_detail(store, key: str) -> str:
    """A skipped run's stored deployed error and where its record is ("" where it cannot be read now: the next
    run's store check says why)."""
    try:
        record = results.find_completed(store.sources(), key)
    except results.StoreError:
        return ""
    if record is None:
        return ""
    err = (record.get("result") or {}).get("deployed/top1_err")
    shown = f", deployed top-1 error {err:.2f}%" if isinstance(err, (int, float)) else ""
    source = str(record.get("source", ""))
    where = (record.get("path") if source.startswith("file:") and record.get("path")
             else f"MongoDB database {source.split(':', 1)[1]!r}, run {record.get('run_id')}")
    return f" (COMPLETED before{shown}; record {where}; force=True trains it again)"


def run_grid(run_configs: Sequence[Mapping[str, Any]], *, results_dir: str | os.PathLike = "results",
             mongo_url: str | None = None, db_name: str | None = None, experiment_name: str | None = None,
             source_files: Sequence[str | os.PathLike] = (), callbacks: Sequence[MetricsCallback] = (),
             log: Callable[[str], None] = print) -> GridReport:
    """Run configs in order, each a separate Sacred run; the grid itself records nothing.

    Every config is validated, the device, the number of processes (`gpus`), folders and data are checked
    (check_grid) and the store is checked
    (MongoDB pinged) before the first run. A run that FAILS
    does not stop the grid; a signal does (after the current run is recorded PREEMPTED), and so does a MongoDB
    that stops answering between runs.
    """
    configs = [normalize_run_config(c) for c in run_configs]
    check_grid(configs, results_dir, mongo_url, db_name)
    store = open_store(results_dir, mongo_url, db_name)
    if store.mongo_url is None:  # without MongoDB the file lock is the only guard: it must work
        for root in sorted({c["checkpoint_root"] for c in configs}):
            check_locking(root)
    report = GridReport(store=store.describe(), planned=len(configs))
    log(f"{len(configs)} run(s) -> {store.describe()}")
    clear_stop()
    with stop_on_signals():
        for i, cfg in enumerate(configs, 1):
            if stop_requested():
                report.stopped_reason = "stop signal"
                break
            try:
                store.check()
            except StoreUnavailable as err:
                report.stopped_reason = str(err)
                log(f"stopping the grid: {err}")
                break
            try:
                outcome = run_tracked(cfg, store, experiment_name=experiment_name, source_files=source_files,
                                      callbacks=callbacks)
            except (StoreUnavailable, results.StoreError) as err:  # e.g. MongoDB gone while has_completed read it
                report.stopped_reason = str(err)
                log(f"stopping the grid: {err}")
                break
            report.runs.append(outcome)
            detail = ""
            if outcome.status == "COMPLETED":
                err = outcome.result.get("deployed/top1_err")
                detail = f" in {outcome.seconds:.1f}s" + (f", deployed top-1 error {err:.2f}%" if err is not None
                                                          else "")
            elif outcome.status == "SKIPPED":
                detail = _skipped_detail(store, outcome.run_key)
            elif outcome.error:
                detail = f": {outcome.error.splitlines()[0][:300]}"
            if outcome.info.get("run_ids"):  # the attempt's record: MongoDB _id and file-store folder
                detail += f" ({describe_ids(outcome.info['run_ids'])})"
            log(redact(f"[{i}/{len(configs)}] {cfg['label'] or cfg['method']} seed={cfg['seed']} "
                       f"run_key={cfg['run_key']}: {outcome.status}{detail}"))
            if outcome.status == "PREEMPTED":
                report.stopped_reason = "run preempted"
                break
            if _data_parallel_broken():
                report.stopped_reason = "a data-parallel run failed on rank 0; its other processes cannot go on"
                log(f"stopping the grid: {report.stopped_reason}")
                break
    report.stop_signal = stop_signal()
    store.close()
    log(str(report))
    return report


