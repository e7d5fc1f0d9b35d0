"""One tracked run: a run config trained as one Sacred run with its own complete record (skip if COMPLETED, and tag
it with the reusing script; resume from a checkpoint, PREEMPTED on a stop signal, FAILED with its trace).

A preemption keeps the suite's meaning (the run stops cleanly and resumes from its checkpoint next time) but is
recorded with Sacred's standard status INTERRUPTED and `info.preempted = True`: Omniboard, incense and every
status filter know INTERRUPTED, while a status of our own (PREEMPTED) showed without colour and fell out of
every filter. A Ctrl-C is INTERRUPTED without `info.preempted`. pcl.results reads both spellings.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sacred import Experiment
from sacred.metrics_logger import ScalarMetricLogEntry
from sacred.utils import apply_backspaces_and_linefeeds

import pcl
from pcl import results
from pcl.interrupts import MetricsCallback, TrainingInterrupted
from pcl.schema import TEACHER_PATH_OPTION, plain, record_config
from pcl.tracking.data import data_fingerprint, normalize_run_config
from pcl.tracking.errors import Preempted
from pcl.tracking.lifecycle import (RunLocked, _run_lock, inspect_checkpoint, mongo_claim, move_aside,
                                    stop_on_signals, stop_requested, stop_signal)
from pcl.secrets import MONGO_URL_ENV, redact, redact_url
from pcl.tracking.stores import Store, _FileObserver, _MongoObserver, tag_reused

#: next to checkpoint.pt: when each epoch was first logged ({"1": ISO time, ...}, UTC); a resumed run re-logs the
#: checkpoint's epochs with these original timestamps
EPOCH_TIMES_FILE = "epoch_times.json"


def _source_base_dir() -> Path:
    """Sacred records the sources of local modules under this folder: the checkout when pcl runs from one, else
    the pcl package itself (never a site-packages folder, whose every imported module would count as local)."""
    package = Path(pcl.__file__).resolve().parent
    return package.parent if (package.parent / "pyproject.toml").is_file() else package


REPO_ROOT = _source_base_dir()


class _QuietRunLog(logging.Filter):
    """Drops Sacred's "Aborted after ..." (a preempted run is reported PREEMPTED by the grid, with its checkpoint)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Aborted after")


_RUN_LOG_HANDLER = logging.StreamHandler(sys.stderr)
_RUN_LOG_HANDLER.setFormatter(logging.Formatter("%(levelname)s - %(message)s"))
_RUN_LOG_HANDLER.addFilter(_QuietRunLog())


def _run_logger() -> logging.Logger:
    """Each run's Sacred logger: warnings only (an observer that fails); the run prints its own lines, and the
    result dict is in the record, not on the screen."""
    logger = logging.getLogger("pcl.run")
    if _RUN_LOG_HANDLER not in logger.handlers:
        logger.addHandler(_RUN_LOG_HANDLER)
        logger.propagate = False
        logger.setLevel(logging.WARNING)
    # the current stderr (a test's capture, a redirected stream); not setStream: it flushes the old one, which may
    # be closed
    _RUN_LOG_HANDLER.stream = sys.stderr
    return logger


@dataclass
class TrackedRun:
    """What happened to one run config: status (a record's status, or SKIPPED / LOCKED / BLOCKED, which leave no
    record), its ids and result."""

    run_key: str
    status: str
    run_id: Any = None
    result: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    label: str = ""


def resolve_teacher_path(store: Store, teacher_key: str, checkpoint_root: str | os.PathLike) -> str:
    """The deployed model of the COMPLETED run `teacher_key` (two-stage KD's stage 1): the file where the suite
    writes it, `checkpoint_root/teacher_key/deployed.pt`. The record's `deployed_path` is not followed: a record
    is untrusted, and the teacher's path is no part of the student's run_key (a record naming another file would
    change the student's result under the same key)."""
    record = results.find_completed(store.sources(), teacher_key)
    if record is None:
        raise LookupError(f"teacher run {teacher_key} has no COMPLETED record in {store.describe()}; "
                          "run the teacher stage first")
    path = Path(checkpoint_root) / teacher_key / "deployed.pt"
    if path.is_symlink() or not path.is_file():
        raise LookupError(f"teacher run {teacher_key} is COMPLETED but its deployed model is not a file at {path} "
                          "(checkpoint_root of this grid): run the teacher stage with the same checkpoint_root, "
                          "or force=True to train it again")
    return str(path.resolve())


def _say(message: str, log: Callable[[str], None] | None) -> None:
    """A message about a run (not part of the training output): to `log`, else to stderr."""
    message = redact(message)
    if log is not None:
        log(message)
    else:
        print(f"[pcl.tracking] {message}", file=sys.stderr, flush=True)


def run_tracked(config: Mapping[str, Any], store: Store, *, experiment_name: str | None = None,
                source_files: Sequence[str | os.PathLike] = (), callbacks: Sequence[MetricsCallback] = (),
                log: Callable[[str], None] | None = None) -> TrackedRun:
    """Train one run config as one Sacred run with its own record (unless its run_key is COMPLETED already).

    Statuses: COMPLETED, FAILED, PREEMPTED (stopped by a signal or request_stop; resumes next time; its record
    says INTERRUPTED with info.preempted=True), RECORD_FAILED (trained, but a store could not write its record: a
    full disk, MongoDB gone; the message says which and how it is repaired), INTERRUPTED (Ctrl-C, re-raised),
    SKIPPED (a COMPLETED record exists and force is off; that record is tagged with this experiment), LOCKED
    (another process trains this run_key now: the file lock in checkpoint_root, or with MongoDB the claim in its
    `claims` collection), BLOCKED (a two-stage student whose teacher is not COMPLETED). The last three leave no
    record. `callbacks` receive (epoch, metrics) after every epoch, like the runner's.
    """
    cfg = normalize_run_config(config)  # data_identity from the files on disk
    key = cfg["run_key"]
    name = experiment_name or cfg["experiment"] or "pcl"
    started = time.perf_counter()
    if not cfg["force"] and results.has_completed(store.sources(), key):
        try:
            tagged = tag_reused(store, key, name)
        except Exception as err:  # noqa: BLE001 - the run is done; a missing tag is reported, not fatal
            tagged = []
            print(redact(f"Warning: could not tag the COMPLETED record of run {key} with experiment {name!r}: "
                         f"{type(err).__name__}: {err}"), file=sys.stderr)
        return TrackedRun(key, "SKIPPED", label=cfg["label"], info={"tagged": tagged})
    if cfg["teacher_run_key"] is not None:
        try:
            cfg["options"][TEACHER_PATH_OPTION] = resolve_teacher_path(store, cfg["teacher_run_key"],
                                                                       cfg["checkpoint_root"])
        except LookupError as err:
            return TrackedRun(key, "BLOCKED", error=str(err), label=cfg["label"])
    ckpt_dir = Path(cfg["checkpoint_root"]) / key
    attempt_id = uuid.uuid4().hex
    db = store.database()
    try:
        with contextlib.ExitStack() as held:
            if db is not None:  # where runs of different machines meet: claimed before the node-local file lock
                held.enter_context(mongo_claim(db, key, attempt_id, log=lambda m: _say(m, log)))
            held.enter_context(_run_lock(ckpt_dir, required=db is None))
            # checked again now that this process holds the run_key: another one may have completed it meanwhile
            if not cfg["force"] and results.has_completed(store.sources(), key):
                return TrackedRun(key, "SKIPPED", label=cfg["label"])
            held.enter_context(stop_on_signals())
            return _run_sacred(cfg, store, name, ckpt_dir, source_files, callbacks, started, log, attempt_id)
    except RunLocked as err:
        return TrackedRun(key, "LOCKED", error=str(err), label=cfg["label"])


def _expected_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint of this run config says it is (pcl.checkpoint.checkpoint_identity)."""
    from pcl.recipes import run_classes

    return {"method": cfg["method"], "backbone": cfg["backbone"], "num_classes": run_classes(cfg)}


def _without_credentials(ex: Experiment) -> None:
    """Sacred records each source repository's remote URL, and with it any token in it
    (https://bot:TOKEN@host/...): record only the commit and the dirty flag."""
    original = ex.get_experiment_info

    def experiment_info() -> dict[str, Any]:
        info = original()
        info["repositories"] = [{"commit": r.get("commit"), "dirty": r.get("dirty")}
                                for r in info.get("repositories") or []]
        return info

    ex.get_experiment_info = experiment_info


def _run_sacred(cfg: dict[str, Any], store: Store, name: str, ckpt_dir: Path,
                source_files: Sequence[str | os.PathLike], callbacks: Sequence[MetricsCallback], started: float,
                log: Callable[[str], None] | None, attempt_id: str) -> TrackedRun:
    from pcl.checkpoint import CheckpointError
    from pcl.runner import run as train_run

    key = cfg["run_key"]
    ckpt_path = ckpt_dir / "checkpoint.pt"
    done_epochs, history, problem = inspect_checkpoint(ckpt_path, _expected_identity(cfg), cfg["epochs"])
    damaged = None
    if problem is not None:  # never blocks the run: kept for inspection, and the run starts over
        aside = move_aside(ckpt_path)
        damaged = {"path": str(aside), "problem": problem}
        _say(f"run {key}: checkpoint {ckpt_path} is unusable: {problem}. Moved to {aside} (kept for inspection); "
             "the run starts over from epoch 0", log)
    resume = True
    if cfg["force"] and done_epochs >= cfg["epochs"]:
        resume, done_epochs, history = False, 0, []  # force: a finished run trains again from scratch
    if resume and done_epochs >= cfg["epochs"]:
        start = (f"its record is missing but checkpoint {ckpt_path} is final ({done_epochs} epochs): restoring the "
                 "record from the checkpoint, no training")
    elif resume and done_epochs > 0:
        start = f"resuming at epoch {done_epochs + 1}/{cfg['epochs']} from checkpoint {ckpt_path}"
    elif cfg["force"] and ckpt_path.exists():
        start = f"force=True: training from scratch, epochs 1-{cfg['epochs']} (checkpoint {ckpt_path} is replaced)"
    else:
        start = f"training from scratch, epochs 1-{cfg['epochs']}"

    ex = Experiment(name, base_dir=str(REPO_ROOT), save_git_info=True)
    _without_credentials(ex)
    ex.logger = _run_logger()
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    _add_dependencies(ex)
    ex.add_config(record_config(cfg))
    _add_sources(ex, source_files)
    file_observer = _FileObserver(str(store.results_dir))
    ex.observers.append(file_observer)
    mongo_observer = None
    if store.mongo_url:
        mongo_observer = _MongoObserver(client=store.database().client, db_name=store.db_name,
                                        failure_dir=str(store.failure_dir))
        mongo_observer.where = f"MongoDB {redact_url(store.mongo_url)}"
        ex.observers.append(mongo_observer)

    def main(_run):
        info = _run.info
        info.update(run_key=key, attempt_id=attempt_id, experiment=name, experiments=[name], label=cfg["label"],
                    checkpoint_dir=str(ckpt_dir.resolve()), resumed_from_epoch=done_epochs,
                    pcl_version=pcl.__version__, teacher_run_key=cfg["teacher_run_key"],
                    teacher_path=cfg["options"].get(TEACHER_PATH_OPTION),
                    run_ids=_run_ids(file_observer, mongo_observer))
        if damaged is not None:
            info["damaged_checkpoint"] = damaged
        where = file_observer.dir + (f" + {mongo_observer.where}" if mongo_observer else "")
        print(redact(f"run {key} ({cfg['label'] or cfg['method']}, seed {cfg['seed']}): {start}; record {where}"))
        # a resumed attempt re-logs the epochs of its checkpoint, with their original timestamps: its record holds
        # the whole curve
        fallback = _utc(ckpt_path.stat().st_mtime) if history and ckpt_path.exists() else None
        for epoch, metrics in enumerate(history):
            stamp = epoch_times.get(str(epoch + 1))
            log_epoch(epoch, metrics, dt.datetime.fromisoformat(stamp) if stamp else fallback)

        def on_start(facts: dict[str, Any]) -> None:
            info.update({k: plain(facts[k]) for k in ("parameter_counts", "heads", "deployed_head",
                                                           "determinism", "num_classes", "num_views",
                                                           "environment", "recipe") if k in facts})
            _record_data(cfg, info)

        try:
            outcome = train_run(cfg, checkpoint_dir=ckpt_dir, resume=resume,
                                callbacks=[log_epoch, *callbacks], progress=cfg["progress"],
                                should_stop=stop_requested, on_start=on_start)
        except CheckpointError as err:  # passed inspection but does not load: kept aside, the next start anew
            aside = move_aside(ckpt_path) if ckpt_path.exists() else None
            info["damaged_checkpoint"] = {"path": str(aside), "problem": err.problem}
            raise CheckpointError(ckpt_path, f"{err.problem}. Moved to {aside} (kept for inspection); the next "
                                             "start trains from epoch 1") from None
        except TrainingInterrupted as err:
            sig = stop_signal()
            info.update(completed_epochs=err.completed_epochs, preempted=True,
                        checkpoint_path=str(ckpt_path.resolve()) if ckpt_path.exists() else None,
                        stop_signal=signal.Signals(sig).name if sig else "request_stop")
            if ckpt_path.exists():  # say only what is on disk
                after = (f"the checkpoint {ckpt_path} (epoch {err.completed_epochs}) stays and the next start "
                         "resumes from it")
            else:
                after = "no checkpoint was written yet (the first epoch did not end): the next start begins anew"
            raise Preempted(f"run {key} preempted after {err.completed_epochs} completed epoch(s); {after}") from None
        info.update(completed_epochs=int(outcome.result.history[-1]["epoch"]) if outcome.result.history else 0,
                    resumed_from_epoch=outcome.result.resumed_from_epoch,
                    checkpoint_path=str(Path(outcome.result.checkpoint_path).resolve()),
                    deployed_path=str(Path(outcome.deployed_path).resolve()),
                    deployed_head=outcome.deployed_head)
        return {k: float(v) for k, v in outcome.result.summary.items()}

    epoch_times = _read_epoch_times(ckpt_dir) if resume else {}

    def log_epoch(epoch: int, metrics: Mapping[str, float], stamp: dt.datetime | None = None) -> None:
        """Log one epoch's metrics at step epoch+1, all with one timestamp: `stamp` (a re-logged epoch's original
        time) or now, which is kept in EPOCH_TIMES_FILE for later resumes (a checkpoint's epoch without one falls
        back to the checkpoint file's time)."""
        if stamp is None:
            stamp = _utc(time.time())
            epoch_times[str(epoch + 1)] = stamp.isoformat()
            _write_epoch_times(ckpt_dir, epoch_times)
        queue = ex.current_run._metrics._logged_metrics  # Sacred's log_scalar always stamps "now"
        for metric, value in metrics.items():
            if metric != "epoch":
                queue.put(ScalarMetricLogEntry(metric, epoch + 1, stamp, float(value)))

    ex.main(main)
    status, error, result = "COMPLETED", None, {}
    try:
        run = ex.run(options={"--capture": "sys"}, meta_info={"attempt_id": attempt_id, "run_key": key})
        result = dict(run.result or {})
    except Preempted as err:
        status, error = "PREEMPTED", str(err)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - recorded as FAILED by Sacred; the grid goes on
        status, error = "FAILED", redact(f"{type(err).__name__}: {err}")
        if isinstance(err, CheckpointError):  # a known fault, said in one line
            _say(f"run {key}: {err}", log)
        else:
            print(redact("".join(traceback.format_exception(err))), file=sys.stderr)
    run = ex.current_run
    run_id = getattr(run, "_id", None)
    info = dict(getattr(run, "info", {}) or {})
    record_errors = []
    if file_observer.error is not None:
        if mongo_observer is not None and not mongo_observer.failed:
            remedy = "MongoDB holds the complete record; the file store's copy is marked incomplete"
        else:
            remedy = "free the space and start again: the next start restores the record from the checkpoint"
        record_errors.append(f"the file store {store.results_dir} could not write the record of run {key} "
                             f"({file_observer.error}); {remedy}")
    if mongo_observer is not None and mongo_observer.failed:
        record_errors.append(f"MongoDB failed during run {key} (training {status}); the complete record is in the "
                             f"file store {file_observer.dir}: upload it later with `python -m pcl.tracking upload "
                             f"{store.results_dir}` (URL from {MONGO_URL_ENV} or --mongo-url)")
        info["mongo_failed"] = True
    if record_errors:
        info["record_errors"] = [redact(e) for e in record_errors]
        for message in record_errors:
            _say(message, None)
        if status == "COMPLETED":
            status = "RECORD_FAILED"
        error = redact("; ".join(([error] if error else []) + record_errors))
    if log is not None:
        log(redact(f"run {key} {cfg['label'] or ''}: {status} ({describe_ids(info.get('run_ids'))})"))
    return TrackedRun(key, status, run_id=run_id, result=result, info=info, error=error,
                      seconds=time.perf_counter() - started, label=cfg["label"])


def _add_sources(ex: Experiment, paths: Sequence[str | os.PathLike]) -> None:
    """Each file (those that exist) as a source of the run, as Sacred's add_source_file records it (its digest,
    repository, commit and dirty flag), with git asked once per repository instead of twice per file: a smoke
    grid's 8 runs of 80 sources each started 2,210 git processes, 8.6 of its 33 s."""
    from sacred.dependencies import Source, get_commit_if_possible, get_digest, get_py_file_if_possible

    facts: dict[str | None, Any] = {}  # repository root -> (url, commit, dirty)
    for path in paths:
        if not Path(path).is_file():
            continue
        main = get_py_file_if_possible(os.path.abspath(path))
        root = next((str(f) for f in Path(main).resolve().parents if (f / ".git").exists()), None)
        if root not in facts:
            facts[root] = get_commit_if_possible(main, ex.save_git_info)
        ex.sources.add(Source(main, get_digest(main), *facts[root]))


def _record_data(cfg: Mapping[str, Any], info: dict[str, Any]) -> None:
    """Record the fingerprint of the data the runner has just read; fail the run when it is not the data whose
    identity is in the run_key (the files changed between planning and reading)."""
    fingerprint = data_fingerprint(cfg)
    if fingerprint is None:
        return
    info["data"] = plain(fingerprint)
    if fingerprint["identity"] != cfg["data_identity"]:
        raise RuntimeError(f"the {cfg['dataset']} files under data_root changed after the run_key was computed "
                           f"(data identity {fingerprint['identity']!r}, expected {cfg['data_identity']!r}); start "
                           "again: the run_key follows the data")


def _utc(seconds: float) -> dt.datetime:
    """POSIX seconds -> naive UTC datetime (what Sacred stamps metrics with)."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def _add_dependencies(ex: Experiment) -> None:
    """torch and torchvision in experiment.dependencies (Sacred finds only the packages it imports itself)."""
    from sacred.dependencies import PackageDependency

    from pcl.runner import package_version

    # not add_package_dependency: its PEP 440 check rejects local versions such as 2.14.1+cu130
    for name in ("torch", "torchvision"):
        ex.dependencies.add(PackageDependency(name, package_version(name)))


def _run_ids(file_observer: _FileObserver, mongo_observer: _MongoObserver | None) -> dict[str, Any]:
    """This attempt's ids side by side: its file-store folder name and MongoDB `_id` (the same number unless
    that folder was taken)."""
    ids: dict[str, Any] = {"file": Path(file_observer.dir).name if file_observer.dir else None}
    if mongo_observer is not None and mongo_observer.run_entry is not None:
        ids["mongo"] = mongo_observer.run_entry.get("_id")
    return ids


def describe_ids(ids: Mapping[str, Any] | None) -> str:
    """'record 13 in MongoDB, 13 in the file store' for info.run_ids (what a log line says about an attempt)."""
    ids = dict(ids or {})
    if "mongo" in ids:
        return f"record {ids['mongo']} in MongoDB, {ids.get('file')} in the file store"
    return f"record {ids.get('file')} in the file store"


def _read_epoch_times(ckpt_dir: Path) -> dict[str, str]:
    """The kept epoch times ({epoch: ISO time}) of a checkpoint folder, read like a record's file (a regular file,
    no link, bounded size, never a FIFO's wait); a damaged file or entry is left out (the checkpoint file's time
    stands in for those epochs)."""
    try:
        times = results.read_json(ckpt_dir, EPOCH_TIMES_FILE)
    except (OSError, ValueError):  # RecordError: not a regular file, too big, not JSON
        return {}
    kept = {}
    for epoch, stamp in (times.items() if isinstance(times, dict) else ()):
        if isinstance(stamp, str) and results.run_number(str(epoch)) is not None:
            try:
                dt.datetime.fromisoformat(stamp)
            except ValueError:
                continue
            kept[str(epoch)] = stamp
    return kept


def _write_epoch_times(ckpt_dir: Path, times: Mapping[str, str]) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".{EPOCH_TIMES_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(dict(times), sort_keys=True))
    os.replace(tmp, ckpt_dir / EPOCH_TIMES_FILE)
