"""Runs of a plan: a script's planned run_keys looked up in the store(s), one row per planned run with its status
and, when COMPLETED, its number. Reading records needs pandas and pymongo only (pcl.results); expanding a plan
imports the experiment scripts (Sacred, torch) lazily, so building a table from a given plan needs no torch.

A run a script needs may have been trained by another script (default PCL on ResNet-32 is a cell of table2 and of
every ablation): runs are matched by run_key, never by the experiment name that recorded them.
"""
from __future__ import annotations

import functools
import os
import re
import weakref
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pcl import results
from pcl.secrets import MONGO_URL_ENV, redact_url, resolve_mongo_url
#: a planned run's status in a table: the latest COMPLETED attempt counts; else the latest attempt's status
STATUSES = ("completed", "running", "failed", "preempted", "missing")
_RAW_TO_STATUS = {"COMPLETED": "completed", "RUNNING": "running", "QUEUED": "running", "FAILED": "failed",
                  **dict.fromkeys(results.RESUMABLE_STATUSES, "preempted")}  # a Ctrl-C resumes too


class AnalysisError(Exception):
    """Bad input to the analysis (store, table name, filters, no runs): one line for the user, exit code 2."""


def is_mongo(store: Any) -> bool:
    return isinstance(store, str) and re.match(r"mongodb(\+srv)?://", store) is not None


def default_stores() -> list[str]:
    """The stores read when none is given: the file store `results` (when it exists or there is no MongoDB) and
    $PCL_MONGO_URL when set."""
    url = os.environ.get(MONGO_URL_ENV)
    stores = ["results"] if Path("results").is_dir() or not url else []
    return stores + ([url] if url else [])


def describe_stores(stores: Sequence[Any]) -> str:
    """'file store results + MongoDB mongodb://user:***@host/db' (passwords redacted)."""
    parts = []
    for s in stores:
        if is_mongo(s):
            parts.append(f"MongoDB {redact_url(s)}")
        elif type(s).__name__ == "Database":
            parts.append(f"MongoDB database {s.name!r}")
        else:
            parts.append(f"file store {s}")
    return " + ".join(parts) or "no store"


def _normal_status(record: Mapping[str, Any]) -> str:
    return _RAW_TO_STATUS.get(record.get("status"), "failed")


def read_attempts(stores: Sequence[Any]) -> pd.DataFrame:
    """Every attempt in the stores (an attempt in two stores counts once): one row each with run_key, status
    (one of STATUSES but 'missing'), raw_status, experiment, dataset, backbone, method, seed, time, deployed_head,
    params_train, params_deployed, num_classes, result (dict), run_id, source, attempt_id and `record`.

    Raises AnalysisError for a missing folder or an unreachable MongoDB (password redacted).
    """
    records: list[dict[str, Any]] = []
    for store in stores:
        if isinstance(store, (str, os.PathLike)) and not str(store).strip():  # Path("") is the current folder
            raise AnalysisError(f"store {str(store)!r} names no store (give a results folder or a mongodb:// URL with "
                                "--store)")
        if not is_mongo(store) and type(store).__name__ != "Database" and not Path(store).is_dir():
            what = "is not a folder" if os.path.lexists(store) else "does not exist"
            raise AnalysisError(f"store folder {store!r} {what} (give a results folder or a mongodb:// URL with "
                                f"--store)")
        if is_mongo(store):
            resolve_mongo_url(store)  # its password is removed from any message below
        try:
            records += list(results.iter_records(store))
        except results.StoreError as err:  # already one line naming the store
            raise AnalysisError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - e.g. a bad URL (pymongo refuses it before any read)
            raise AnalysisError(f"cannot read {describe_stores([store])}: {type(err).__name__}: "
                                f"{results.error_reason(err)}") from None
    rows = []
    for rec in results.unique_attempts(records):
        config, info = rec.get("config") or {}, rec.get("info") or {}
        counts = info.get("parameter_counts") or {}
        when = rec.get("stop_time") or rec.get("heartbeat") or rec.get("start_time")  # parsed below, at once
        rows.append({
            "run_key": config.get("run_key") or info.get("run_key"), "status": _normal_status(rec),
            "raw_status": rec.get("status"), "experiment": config.get("experiment"),
            "dataset": config.get("dataset"), "backbone": config.get("backbone"), "method": config.get("method"),
            "label": config.get("label"), "seed": config.get("seed"), "time": when,
            "deployed_head": info.get("deployed_head"), "params_train": counts.get("params_train"),
            "params_deployed": counts.get("params_deployed"), "parameter_counts": counts,
            "num_classes": info.get("num_classes"), "result": rec.get("result") if isinstance(
                rec.get("result"), dict) else {},
            "run_id": rec.get("run_id"), "source": rec.get("source"),
            "attempt_id": (rec.get("meta") or {}).get("attempt_id") or info.get("attempt_id"), "record": rec})
    columns = ["run_key", "status", "raw_status", "experiment", "dataset", "backbone", "method", "label", "seed",
               "time", "deployed_head", "params_train", "params_deployed", "parameter_counts", "num_classes",
               "result", "run_id", "source", "attempt_id", "record"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["time"] = results.time_column(frame["time"])
    return frame


def metric_series(record: Mapping[str, Any], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-epoch metrics of one record in long form: name, step (epoch, 1-based), value (pcl.results' reader)."""
    parts = list(results._record_metrics(dict(record), None if names is None else set(names)))  # noqa: SLF001
    if not parts:
        return pd.DataFrame(columns=["name", "step", "value"])
    return pd.DataFrame({"name": np.concatenate([np.repeat(np.array([n], dtype=object), len(s)) for n, s, _ in parts]),
                         "step": np.concatenate([s for _, s, _ in parts]),
                         "value": np.concatenate([v for _, _, v in parts])})


def metric_arrays(record: Mapping[str, Any], prefix: str | tuple[str, ...] = "", documents: list[Any] | None = None,
                  names: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The per-epoch metrics of one record whose names start with `prefix` (or one of several), only those in
    `names` when given: name -> (steps, values) as arrays (pcl.results' checked reader: only those series are
    checked, on MongoDB only those fetched; None is NaN). `documents`: a MongoDB record's metric documents fetched
    already (pcl.results.metric_documents)."""
    return {n: (steps, values) for n, steps, values in
            results._record_metrics(dict(record), None if names is None else set(names), prefix,  # noqa: SLF001
                                    documents)}


def metric_value(record: Mapping[str, Any], name: str) -> float | None:
    """The last logged value of metric `name` of one record (None when it was not logged)."""
    series = metric_series(record, [name])
    return None if series.empty else float(series.sort_values("step")["value"].iloc[-1])


def result_lookup(attempt: Mapping[str, Any], head: str | None, select: str) -> float | None:
    """Top-1 error (%) of one COMPLETED attempt: the deployed head (head None) or `head`, at the last epoch
    (select="last") or at its best epoch on the test set (select="best"); None when the run has no such head,
    NaN when it recorded NaN (a diverged run: not the same as a head it does not have).

    Keys read: result `deployed/top1_err` (or metric `test/top1_err/deployed`), `last/top1_err/HEAD`,
    `best_on_test/top1_err/HEAD`, else the last value of metric `test/top1_err/HEAD`.
    """
    result = attempt.get("result") or {}
    name = head or attempt.get("deployed_head")
    if select == "best":
        value = result.get(f"best_on_test/top1_err/{name}")
        return None if value is None else float(value)
    if head is None and result.get("deployed/top1_err") is not None:
        return float(result["deployed/top1_err"])
    if result.get(f"last/top1_err/{name}") is not None:
        return float(result[f"last/top1_err/{name}"])
    for metric in (["test/top1_err/deployed"] if head is None else []) + [f"test/top1_err/{name}"]:
        value = metric_value(attempt["record"], metric)
        if value is not None:
            return value
    return None


def result_value(attempt: Mapping[str, Any], head: str | None, select: str) -> float:
    """result_lookup with NaN for a head the run does not have."""
    value = result_lookup(attempt, head, select)
    return float("nan") if value is None else value


@functools.lru_cache(maxsize=None)
def config_keys(name: str, named_configs: tuple[str, ...] = ()) -> frozenset[str]:
    """The top-level config keys of script `name` (what `--set KEY=VALUE` may set for it)."""
    from experiments import registry

    try:
        return frozenset(registry.resolved_config(name, {}, list(named_configs)))
    except Exception as err:  # noqa: BLE001 - an unknown named config: Sacred's error, one line
        raise AnalysisError(f"table {name}: invalid config: {str(err).splitlines()[0] if str(err) else err!r}") \
            from None


def plan_runs(name: str, updates: Mapping[str, Any] | None = None,
              named_configs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The run configs of script `name`'s plan (experiments.registry.plan; imports the scripts, Sacred, torch).

    Raises AnalysisError for an unknown script or an invalid config (the message names the key).
    """
    from experiments import registry

    if name not in registry.SCRIPTS:
        raise AnalysisError(f"unknown table {name!r}; known: {', '.join(registry.SCRIPTS)}")
    try:
        return registry.plan(name, dict(updates or {}), list(named_configs))
    except Exception as err:  # noqa: BLE001 - ConfigError and Sacred's config errors: one line for the user
        raise AnalysisError(f"table {name}: invalid config: {str(err).splitlines()[0] if str(err) else err!r}") \
            from None


#: id of an attempts frame -> (a weak reference to it, its latest attempts): computed once per frame, for every table
_LATEST: dict[int, tuple[Any, tuple[dict[str, Any], dict[str, Any], dict[str, int]]]] = {}


def _latest_attempts(attempts: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """(latest COMPLETED attempt per run_key, latest attempt per run_key, attempts per run_key), computed once per
    attempts frame (sorted once, then dictionary lookups: linear in the store, not tables x runs)."""
    cached = _LATEST.get(id(attempts))
    if cached is not None and cached[0]() is attempts:
        return cached[1]
    ordered = attempts.sort_values("time", na_position="first", kind="stable")
    rows = ordered.to_dict("records")
    latest: dict[str, Any] = {}
    latest_done: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for row in rows:
        key = row["run_key"]
        if not isinstance(key, str):
            continue
        latest[key] = row
        counts[key] = counts.get(key, 0) + 1
        if row["status"] == "completed":
            latest_done[key] = row
    # not in attempts.attrs: pandas deep-copies attrs on every column selection (records hold database handles)
    _LATEST[id(attempts)] = (weakref.ref(attempts), (latest_done, latest, counts))
    weakref.finalize(attempts, _LATEST.pop, id(attempts), None)
    return latest_done, latest, counts


def planned_status(plan: Sequence[Mapping[str, Any]], attempts: pd.DataFrame, *, head: str | None = None,
                   select: str = "last") -> pd.DataFrame:
    """One row per planned run: the plan's run config keys (run_key, label, method, backbone, dataset, seed,
    peers, options) + status (STATUSES), attempts (how many records), value (top-1 error %, NaN unless
    completed), deployed_head, params_train, params_deployed, num_classes, attempt_id, the chosen `attempt`, and
    `newer` (the status of a later attempt the cell does not use, e.g. "failed" or "running"; None).

    The latest COMPLETED attempt of a run_key counts; without one, the latest attempt's status.
    """
    latest_done, latest, counts = _latest_attempts(attempts) if len(attempts) else ({}, {}, {})
    rows = []
    for run in plan:
        row = {k: run.get(k) for k in ("run_key", "label", "method", "backbone", "dataset", "seed", "peers",
                                        "experiment")}
        row["options"] = run.get("options") or {}
        key = run["run_key"]
        chosen = latest_done.get(key) or latest.get(key)
        newest = latest.get(key)
        row["newer"] = (newest["status"] if newest is not None and chosen is not None
                        and newest["attempt_id"] != chosen["attempt_id"] else None)
        if chosen is None:
            row.update(status="missing", attempts=0)
        else:
            row.update(status=chosen["status"], attempts=counts[key])
        value, row["nan_result"] = float("nan"), False
        if chosen is not None and chosen["status"] == "completed":
            found = result_lookup(chosen, head, select)
            value = float("nan") if found is None else found
            row["nan_result"] = found is not None and found != found  # recorded NaN (diverged), not "no head"
        for name in ("deployed_head", "params_train", "params_deployed", "num_classes", "attempt_id", "source",
                     "experiment"):
            if chosen is not None and chosen[name] is not None and not (name == "experiment" and row.get(name)):
                row[name] = chosen[name]
        for name in ("deployed_head", "params_train", "params_deployed", "num_classes", "attempt_id", "source"):
            row.setdefault(name, None)  # a record of an older version (no info.json) has none of them
        row["recorded_by"] = None if chosen is None else chosen["experiment"]
        row["value"] = value
        row["attempt"] = None if chosen is None else dict(chosen)
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["AnalysisError", "STATUSES", "default_stores", "describe_stores", "plan_runs", "planned_status",
           "read_attempts", "redact_url", "result_value"]
