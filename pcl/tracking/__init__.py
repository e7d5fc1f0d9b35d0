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
package; reading records (pcl.results) needs neither this package nor torch.
"""
from pcl.schema import (INFRA_KEYS, KEY_SCHEMA, KEYS, RUN_KEYS, ConfigError, canonical_json, identity_config,
                        plain, run_key)
from pcl.tracking.cli import main
from pcl.tracking.data import data_fingerprint, normalize_run_config
from pcl.tracking.errors import Preempted, StoreUnavailable, UserError
from pcl.tracking.grid import GridReport, run_grid
from pcl.tracking.lifecycle import (FINAL_STATUSES, STOP_SIGNALS, LockUnsupported, RunLocked, check_locking,
                                    clear_stop, mongo_claim, redeliver, request_stop, stop_on_signals,
                                    stop_requested, stop_signal)
from pcl.tracking.ranks import lead_or_follow
from pcl.tracking.run import REPO_ROOT, TrackedRun, resolve_teacher_path, run_tracked
from pcl.secrets import MONGO_URL_ENV, redact, redact_url, resolve_mongo_url
from pcl.tracking.stores import DEFAULT_DB_NAME, FAILURE_DIR_NAME, MONGO_TIMEOUT_S, Store, open_store
from pcl.tracking.upload import UploadReport, upload

__all__ = [
    "ConfigError", "DEFAULT_DB_NAME", "FAILURE_DIR_NAME", "FINAL_STATUSES", "GridReport", "INFRA_KEYS", "KEYS",
    "KEY_SCHEMA", "LockUnsupported", "MONGO_TIMEOUT_S", "MONGO_URL_ENV", "Preempted", "REPO_ROOT", "RUN_KEYS",
    "RunLocked", "STOP_SIGNALS", "Store", "StoreUnavailable", "TrackedRun", "UploadReport", "UserError",
    "canonical_json", "check_locking", "clear_stop", "data_fingerprint", "identity_config", "lead_or_follow", "main", "mongo_claim",
    "normalize_run_config", "open_store", "plain", "redact", "redact_url", "redeliver", "request_stop",
    "resolve_mongo_url", "resolve_teacher_path", "run_grid", "run_key", "run_tracked", "stop_on_signals",
    "stop_requested", "stop_signal", "upload",
]
