"""Experiment tracking: one training run = one Sacred run with a complete record that survives crashes.

A table of the paper is hundreds of GPU-hours split into runs that get preempted, requeued, restarted by hand and
sometimes lose their database. This package gives every run a record per attempt (config, host, versions,
parameter counts, per-epoch metrics of every head, the final result) in a Sacred file store and, with a URL, in
MongoDB; it skips COMPLETED run_keys, resumes preempted ones and never shows a password. Its rooms:

| module        | owns                                                                                        |
|---------------|---------------------------------------------------------------------------------------------|
| pcl.schema    | (core) the run config: keys, defaults, validation, the run_key                              |
| pcl.secrets   | URL redaction: no password in any message or record (stdlib only)                           |
| data.py       | what identifies a run's data: the files' fingerprint -> `data_identity` -> the run_key      |
| stores.py     | the file store and MongoDB, their Sacred observers, failing fast on an unreachable server    |
| lifecycle.py  | stop signals -> preempted (INTERRUPTED + info.preempted), final statuses, the per-run_key lock and MongoDB claim, checkpoints |
| run.py        | one tracked run (skip / resume / record)                                                     |
| grid.py       | a grid of runs                                                                               |
| ranks.py      | data-parallel jobs (`gpus` > 1): rank 0 runs the tracked entry point, the other ranks follow  |
| upload.py     | file-store records into MongoDB                                                              |
| cli.py        | `python -m pcl.tracking upload RESULTS_DIR` and `python -m pcl.tracking ping`                |

Checkpoints never go into MongoDB/GridFS. The core (models, methods, data, engine, runner) never imports this
package; reading records (pcl.results) needs neither this package nor torch. The names below are loaded on first
use (PEP 562): `pcl.tracking.normalize_run_config` for `plan` imports no torch; `run_grid` (training) does.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("INFRA_KEYS", "KEY_SCHEMA", "KEYS", "RUN_KEYS", "ConfigError", "canonical_json",
                     "identity_config", "plain", "run_key"), "pcl.schema"),
    "main": "pcl.tracking.cli",
    **dict.fromkeys(("data_fingerprint", "normalize_run_config"), "pcl.tracking.data"),
    **dict.fromkeys(("Preempted", "StoreUnavailable", "UserError"), "pcl.tracking.errors"),
    **dict.fromkeys(("GridReport", "run_grid"), "pcl.tracking.grid"),
    **dict.fromkeys(("FINAL_STATUSES", "STOP_SIGNALS", "LockUnsupported", "RunLocked", "check_locking", "clear_stop",
                     "mongo_claim", "redeliver", "request_stop", "stop_on_signals", "stop_requested",
                     "stop_signal"), "pcl.tracking.lifecycle"),
    "lead_or_follow": "pcl.tracking.ranks",
    **dict.fromkeys(("REPO_ROOT", "TrackedRun", "resolve_teacher_path", "run_tracked"), "pcl.tracking.run"),
    **dict.fromkeys(("MONGO_URL_ENV", "redact", "redact_url", "resolve_mongo_url"), "pcl.secrets"),
    **dict.fromkeys(("DEFAULT_DB_NAME", "FAILURE_DIR_NAME", "MONGO_TIMEOUT_S", "Store", "open_store"),
                    "pcl.tracking.stores"),
}
# `upload` is both a submodule and its function: importing the submodule anywhere would bind the module to the
# package's name `upload`, so the function is bound here, after that import (torch-free: the store and Sacred).
from pcl.tracking.upload import UploadReport, upload  # noqa: E402

__all__ = sorted([*_EXPORTS, "UploadReport", "upload"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pcl.tracking' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
