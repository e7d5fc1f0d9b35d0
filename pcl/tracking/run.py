"""One tracked run: a run config trained as one Sacred run with its own complete record (skip if COMPLETED,
resume from a checkpoint, PREEMPTED on a stop signal, FAILED with its trace)."""
from __future__ import annotations

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
from sacred.utils import apply_backspaces_and_linefeeds

import pcl
from pcl import results
from pcl.engine import MetricsCallback, TrainingInterrupted
from pcl.schema import TEACHER_PATH_OPTION, normalize_run_config, plain, record_config
from pcl.tracking.errors import Preempted
from pcl.tracking.lifecycle import (RunLocked, _peek_checkpoint, _run_lock, stop_on_signals, stop_requested,
                                    stop_signal)
from pcl.tracking.secrets import MONGO_URL_ENV, redact, redact_url
from pcl.tracking.stores import Store, _FileObserver, _MongoObserver


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




def resolve_teacher_path(store: Store, teacher_key: str) -> str:
    """The deployed model of the latest COMPLETED run with `teacher_key` (two-stage KD's stage 1)."""
    record = results.find_completed(store.sources(), teacher_key)
    if record is None:
        raise LookupError(f"teacher run {teacher_key} has no COMPLETED record in {store.describe()}; "
                          "run the teacher stage first")
    path = (record.get("info") or {}).get("deployed_path")
    if not path or not Path(path).is_file():
        raise LookupError(f"teacher run {teacher_key} is COMPLETED but its deployed model {path!r} is not on this "
                          "machine's disk (checkpoint_root)")
    return str(path)


def run_tracked(config: Mapping[str, Any], store: Store, *, experiment_name: str | None = None,
                source_files: Sequence[str | os.PathLike] = (), callbacks: Sequence[MetricsCallback] = (),
                log: Callable[[str], None] | None = None) -> TrackedRun:
    """Train one run config as one Sacred run with its own record (unless its run_key is COMPLETED already).

    Statuses: COMPLETED, FAILED, PREEMPTED (stopped by a signal or request_stop; resumes next time),
    INTERRUPTED (Ctrl-C, re-raised), SKIPPED (a COMPLETED record exists and force is off), LOCKED (another process
    trains this run_key now), BLOCKED (a two-stage student whose teacher is not COMPLETED). The last three leave no
    record. `callbacks` receive (epoch, metrics) after every epoch, like the runner's.
    """
    cfg = normalize_run_config(config, check_build=False)
    key = cfg["run_key"]
    name = experiment_name or cfg["experiment"] or "pcl"
    started = time.perf_counter()
    if not cfg["force"] and results.has_completed(store.sources(), key):
        return TrackedRun(key, "SKIPPED", label=cfg["label"])
    if cfg["teacher_run_key"] is not None:
        try:
            cfg["options"][TEACHER_PATH_OPTION] = resolve_teacher_path(store, cfg["teacher_run_key"])
        except LookupError as err:
            return TrackedRun(key, "BLOCKED", error=str(err), label=cfg["label"])
    ckpt_dir = Path(cfg["checkpoint_root"]) / key
    try:
        with _run_lock(ckpt_dir), stop_on_signals():
            return _run_sacred(cfg, store, name, ckpt_dir, source_files, callbacks, started, log)
    except RunLocked as err:
        return TrackedRun(key, "LOCKED", error=str(err), label=cfg["label"])


def _run_sacred(cfg: dict[str, Any], store: Store, name: str, ckpt_dir: Path,
                source_files: Sequence[str | os.PathLike], callbacks: Sequence[MetricsCallback], started: float,
                log: Callable[[str], None] | None) -> TrackedRun:
    from pcl.runner import run as train_run

    key = cfg["run_key"]
    ckpt_path = ckpt_dir / "checkpoint.pt"
    done_epochs, history = _peek_checkpoint(ckpt_path)
    resume = True
    if cfg["force"] and done_epochs >= cfg["epochs"]:
        resume, done_epochs, history = False, 0, []  # force: a finished run trains again from scratch
    attempt_id = uuid.uuid4().hex
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
    ex.logger = _run_logger()
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    ex.add_config(record_config(cfg))
    for path in source_files:
        if Path(path).is_file():
            ex.add_source_file(str(path))
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
        info.update(run_key=key, attempt_id=attempt_id, experiment=name, label=cfg["label"],
                    checkpoint_dir=str(ckpt_dir.resolve()), resumed_from_epoch=done_epochs,
                    pcl_version=pcl.__version__, teacher_run_key=cfg["teacher_run_key"],
                    teacher_path=cfg["options"].get(TEACHER_PATH_OPTION))
        where = file_observer.dir + (f" + {mongo_observer.where}" if mongo_observer else "")
        print(redact(f"run {key} ({cfg['label'] or cfg['method']}, seed {cfg['seed']}): {start}; record {where}"))
        # a resumed attempt re-logs the epochs of its checkpoint: its record holds the whole curve
        for epoch, metrics in enumerate(history):
            log_epoch(epoch, metrics)

        def on_start(facts: dict[str, Any]) -> None:
            info.update({k: plain(facts[k]) for k in ("parameter_counts", "heads", "deployed_head",
                                                           "determinism", "num_classes", "num_views",
                                                           "environment", "recipe") if k in facts})

        try:
            outcome = train_run(cfg, checkpoint_dir=ckpt_dir, resume=resume,
                                callbacks=[log_epoch, *callbacks], progress=cfg["progress"],
                                should_stop=stop_requested, on_start=on_start)
        except TrainingInterrupted as err:
            sig = stop_signal()
            info.update(completed_epochs=err.completed_epochs,
                        checkpoint_path=str(ckpt_path.resolve()) if ckpt_path.exists() else None,
                        stop_signal=signal.Signals(sig).name if sig else "request_stop")
            raise Preempted(f"run {key} preempted after {err.completed_epochs} completed epoch(s); the checkpoint "
                            f"{ckpt_path} stays and the next start resumes from it") from None
        info.update(completed_epochs=int(outcome.result.history[-1]["epoch"]) if outcome.result.history else 0,
                    resumed_from_epoch=outcome.result.resumed_from_epoch,
                    checkpoint_path=str(Path(outcome.result.checkpoint_path).resolve()),
                    deployed_path=str(Path(outcome.deployed_path).resolve()),
                    deployed_head=outcome.deployed_head)
        return {k: float(v) for k, v in outcome.result.summary.items()}

    def log_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
        run = ex.current_run
        for metric, value in metrics.items():
            if metric != "epoch":
                run.log_scalar(metric, float(value), epoch + 1)

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
        print(redact("".join(traceback.format_exception(err))), file=sys.stderr)
    run = ex.current_run
    run_id = getattr(run, "_id", None)
    info = dict(getattr(run, "info", {}) or {})
    if mongo_observer is not None and mongo_observer.failed:
        message = (f"MongoDB failed during run {key} (status {status}); the complete record is in the file store "
                   f"{file_observer.dir}: upload it later with `python -m pcl.tracking upload "
                   f"{store.results_dir}` (URL from {MONGO_URL_ENV} or --mongo-url)")
        print(redact(message), file=sys.stderr)
        info["mongo_failed"] = True
    if log is not None:
        log(redact(f"run {key} {cfg['label'] or ''}: {status}"))
    return TrackedRun(key, status, run_id=run_id, result=result, info=info, error=error,
                      seconds=time.perf_counter() - started, label=cfg["label"])


