"""A grid of runs: validate every config and check the store first, then run each as its own tracked run; a
signal stops the grid after the current run is recorded."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from pcl.engine import MetricsCallback
from pcl.tracking.data import normalize_run_config
from pcl.tracking.errors import StoreUnavailable
from pcl.tracking.lifecycle import check_locking, clear_stop, stop_on_signals, stop_requested, stop_signal
from pcl.tracking.run import TrackedRun, describe_ids, run_tracked
from pcl.tracking.secrets import redact
from pcl.tracking.stores import open_store


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
        """0: all done; 1: some run FAILED/RECORD_FAILED/BLOCKED/LOCKED, or the grid stopped early; 128+N: stopped
        by signal N."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        bad = any(r.status in ("FAILED", "RECORD_FAILED", "BLOCKED", "LOCKED", "PREEMPTED") for r in self.runs)
        return 1 if bad or self.stopped_reason else 0

    def __str__(self) -> str:
        counts = {s: self.count(s) for s in ("COMPLETED", "SKIPPED", "PREEMPTED", "FAILED", "RECORD_FAILED", "BLOCKED",
                                               "LOCKED")}
        done = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
        stop = f"; stopped: {self.stopped_reason}" if self.stopped_reason else ""
        return f"{len(self.runs)}/{self.planned} runs visited ({done or 'none'}) in {self.store}{stop}"


def run_grid(run_configs: Sequence[Mapping[str, Any]], *, results_dir: str | os.PathLike = "results",
             mongo_url: str | None = None, db_name: str | None = None, experiment_name: str | None = None,
             source_files: Sequence[str | os.PathLike] = (), callbacks: Sequence[MetricsCallback] = (),
             log: Callable[[str], None] = print) -> GridReport:
    """Run configs in order, each a separate Sacred run; the grid itself records nothing.

    Every config is validated and the store is checked (MongoDB pinged) before the first run. A run that FAILS
    does not stop the grid; a signal does (after the current run is recorded PREEMPTED), and so does a MongoDB
    that stops answering between runs.
    """
    configs = [normalize_run_config(c) for c in run_configs]
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
            except StoreUnavailable as err:
                report.stopped_reason = str(err)
                log(f"stopping the grid: {err}")
                break
            report.runs.append(outcome)
            detail = ""
            if outcome.status == "COMPLETED":
                err = outcome.result.get("deployed/top1_err")
                detail = f" in {outcome.seconds:.1f}s" + (f", deployed top-1 error {err:.2f}%" if err is not None
                                                          else "")
            elif outcome.error:
                detail = f": {outcome.error.splitlines()[0][:300]}"
            if outcome.info.get("run_ids"):  # the attempt's record: MongoDB _id and file-store folder
                detail += f" ({describe_ids(outcome.info['run_ids'])})"
            log(redact(f"[{i}/{len(configs)}] {cfg['label'] or cfg['method']} seed={cfg['seed']} "
                       f"run_key={cfg['run_key']}: {outcome.status}{detail}"))
            if outcome.status == "PREEMPTED":
                report.stopped_reason = "run preempted"
                break
    report.stop_signal = stop_signal()
    store.close()
    log(str(report))
    return report


