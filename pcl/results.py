"""Run records -> pandas, from MongoDB or a Sacred file store (or both): what the analysis and the launcher read.

A store is a file-store folder (str/Path), a MongoDB URL ("mongodb://..."), a pymongo Database, or a list of these
(read together; an attempt recorded in two of them, e.g. MongoDB and its file copy, counts once, in its most final
state). Every attempt of a run is a record; records of the same experiment share `run_key`. `load_runs` keeps, per
run_key, the latest COMPLETED attempt (else the latest attempt), so preempted-and-resumed runs count once.

Only pandas and (for MongoDB, lazily) pymongo are imported: no Sacred, no torch.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

COMPLETED = "COMPLETED"
PREEMPTED = "PREEMPTED"
FINAL_STATUSES = ("COMPLETED", "FAILED", "PREEMPTED", "INTERRUPTED", "TIMED_OUT")
#: run-config keys that get their own column (besides config.*)
CONFIG_COLUMNS = ("experiment", "label", "dataset", "backbone", "method", "seed", "peers", "epochs")
_PROJECTION = {"captured_out": 0, "experiment.sources": 0, "experiment.dependencies": 0}

StoreLike = Any  # str | os.PathLike | pymongo.database.Database | Sequence of these


def _is_database(obj: Any) -> bool:
    return type(obj).__name__ == "Database" and hasattr(obj, "client")


def _sources(store: StoreLike) -> list[tuple[str, Any]]:
    """[("mongo", Database) | ("file", Path)] for one store or a list of them."""
    if isinstance(store, (list, tuple)):
        out: list[tuple[str, Any]] = []
        for s in store:
            out += _sources(s)
        return out
    if _is_database(store):
        return [("mongo", store)]
    if isinstance(store, str) and re.match(r"mongodb(\+srv)?://", store):
        return [("mongo", connect(store))]
    return [("file", Path(store))]


def connect(url: str, db_name: str | None = None, timeout_s: float = 3.0):
    """A pymongo Database for `url` (its path's database, else db_name, else "pcl"), failing within seconds."""
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=int(timeout_s * 1000),
                                 connectTimeoutMS=int(timeout_s * 1000))
    match = re.match(r"mongodb(?:\+srv)?://[^/]*/([^?]+)", url)
    return client[db_name or (match.group(1) if match else None) or "pcl"]


def _source_name(kind: str, where: Any) -> str:
    return f"mongo:{where.name}" if kind == "mongo" else f"file:{where}"


def _file_run_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _file_record(run_dir: Path, with_info: bool = True) -> dict[str, Any] | None:
    if not (run_dir / "run.json").exists() or not (run_dir / "config.json").exists():
        return None  # a run being created right now (Sacred makes the folder first)
    try:
        run = _read_json(run_dir / "run.json")
        config = _read_json(run_dir / "config.json")
        info_path = run_dir / "info.json"
        info = _read_json(info_path) if with_info and info_path.exists() else {}
    except (OSError, ValueError) as err:  # a run starting right now, or a damaged folder
        warnings.warn(f"skipping unreadable run record {run_dir}: {err}", stacklevel=3)
        return None
    return {"run_id": run_dir.name, "status": run.get("status"), "config": config, "info": info,
            "result": run.get("result"), "meta": run.get("meta") or {}, "start_time": run.get("start_time"),
            "stop_time": run.get("stop_time"), "heartbeat": run.get("heartbeat"), "host": run.get("host") or {},
            "experiment": run.get("experiment") or {}, "fail_trace": run.get("fail_trace"),
            "path": str(run_dir)}


def iter_records(store: StoreLike, query: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every record as a plain dict (config, info, result, status, times, meta, host, source, run_id).

    `query` is a MongoDB filter on top-level dotted fields (e.g. {"config.run_key": k, "status": "COMPLETED"});
    on a file store only equality filters are applied.
    """
    for kind, where in _sources(store):
        if kind == "mongo":
            for doc in where["runs"].find(query or {}, _PROJECTION):
                doc["run_id"] = doc.pop("_id")
                doc["source"] = _source_name(kind, where)
                doc["_db"] = where  # for load_metrics
                yield doc
        else:
            for run_dir in _file_run_dirs(where):
                record = _file_record(run_dir)
                if record is not None and _matches(record, query):
                    record["source"] = _source_name(kind, where)
                    yield record


def _get(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _matches(record: dict[str, Any], query: dict[str, Any] | None) -> bool:
    return all(_get(record, k) == v for k, v in (query or {}).items())


def _finality(record: dict[str, Any]) -> tuple:
    """Orders copies of one attempt: a final status beats RUNNING, then the later stop/heartbeat wins."""
    times = [pd.to_datetime(record.get(k), errors="coerce") for k in ("stop_time", "heartbeat", "start_time")]
    stamp = max((t for t in times if not pd.isna(t)), default=pd.Timestamp.min)
    return (record.get("status") in FINAL_STATUSES, stamp)


def unique_attempts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per attempt (meta.attempt_id) across stores, in its most final state."""
    best: dict[Any, dict[str, Any]] = {}
    order: list[Any] = []
    for record in records:
        attempt = (record.get("meta") or {}).get("attempt_id") or (record["source"], record["run_id"])
        if attempt not in best:
            order.append(attempt)
            best[attempt] = record
        elif _finality(record) > _finality(best[attempt]):
            best[attempt] = record
    return [best[a] for a in order]


def run_status(record: dict[str, Any]) -> str | None:
    """The suite's status of a record: PREEMPTED for both spellings of a preemption (records written since the
    Omniboard/incense fix say Sacred's INTERRUPTED with info.preempted=True, older ones say PREEMPTED); every other
    status as recorded (a Ctrl-C stays INTERRUPTED)."""
    status = record.get("status")
    if status == "INTERRUPTED" and (record.get("info") or {}).get("preempted"):
        return PREEMPTED
    return status


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _row(record: dict[str, Any]) -> dict[str, Any]:
    config = record.get("config") or {}
    info = record.get("info") or {}
    env = info.get("environment") or {}
    counts = info.get("parameter_counts") or {}
    row: dict[str, Any] = {
        "run_key": config.get("run_key") or info.get("run_key"),
        "status": run_status(record),
        "record_status": record.get("status"),
        "experiments": list(info.get("experiments") or []) or None,
        "attempt_id": (record.get("meta") or {}).get("attempt_id") or info.get("attempt_id"),
        "run_id": record.get("run_id"),
        "source": record.get("source"),
        **{k: config.get(k) for k in CONFIG_COLUMNS},
        "start_time": pd.to_datetime(record.get("start_time"), errors="coerce"),
        "stop_time": pd.to_datetime(record.get("stop_time"), errors="coerce"),
        "host": env.get("host") or (record.get("host") or {}).get("hostname"),
        "gpu": env.get("gpu"),
        "torch": env.get("torch"),
        "deployed_head": info.get("deployed_head"),
        "params_train": counts.get("params_train"),
        "params_deployed": counts.get("params_deployed"),
        "resumed_from_epoch": info.get("resumed_from_epoch"),
        "completed_epochs": info.get("completed_epochs"),
        "checkpoint_dir": info.get("checkpoint_dir"),
        "deployed_path": info.get("deployed_path"),
    }
    if not row["experiment"]:
        row["experiment"] = (record.get("experiment") or {}).get("name")
    flat: dict[str, Any] = {}
    _flat("config", config, flat)
    result = record.get("result")
    if isinstance(result, dict):
        for k, v in result.items():
            flat[f"result.{k}"] = v
    row.update(flat)
    return row


def dedupe_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run_key: the latest COMPLETED attempt, else the latest attempt; `attempts` counts them all."""
    if frame.empty:
        return frame.assign(attempts=pd.Series(dtype="int64"))
    frame = frame.copy()
    frame["attempts"] = frame.groupby("run_key", dropna=False)["run_key"].transform("size").astype("int64")
    frame["_completed"] = frame["status"].eq(COMPLETED)
    frame["_when"] = frame["stop_time"].fillna(frame["start_time"])
    frame = frame.sort_values(["_completed", "_when"], na_position="first", kind="stable")
    kept = frame.groupby("run_key", dropna=False, sort=False).tail(1)
    return kept.drop(columns=["_completed", "_when"]).sort_values(["start_time"], kind="stable").reset_index(
        drop=True)


def load_runs(store: StoreLike, *, dedupe: bool = True, statuses: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run_key (or per attempt with dedupe=False): key columns, config.*, result.* and info facts.

    `statuses` keeps only records with those statuses (before de-duplication; PREEMPTED matches both spellings,
    see run_status). The `status` column is run_status, `record_status` the status as stored.
    """
    records = unique_attempts(list(iter_records(store)))
    if statuses is not None:
        records = [r for r in records if run_status(r) in set(statuses)]
    frame = pd.DataFrame([_row(r) for r in records])
    if frame.empty:
        frame = pd.DataFrame(columns=["run_key", "status", "attempt_id", "run_id", "source", *CONFIG_COLUMNS,
                                      "start_time", "stop_time"])
        frame["start_time"] = pd.to_datetime(frame["start_time"])
        frame["stop_time"] = pd.to_datetime(frame["stop_time"])
    return dedupe_runs(frame) if dedupe else frame.reset_index(drop=True)


def completed_run_keys(store: StoreLike) -> set[str]:
    """run_keys with at least one COMPLETED record: what a launcher skips."""
    keys: set[str] = set()
    for kind, where in _sources(store):
        if kind == "mongo":
            keys.update(k for k in where["runs"].distinct("config.run_key", {"status": COMPLETED}) if k)
        else:
            for run_dir in _file_run_dirs(where):
                record = _file_record(run_dir, with_info=False)
                if record is not None and record["status"] == COMPLETED and record["config"].get("run_key"):
                    keys.add(record["config"]["run_key"])
    return keys


def find_completed(store: StoreLike, run_key: str) -> dict[str, Any] | None:
    """The latest COMPLETED record of `run_key` (a plain dict, as iter_records yields), or None."""
    records = list(iter_records(store, {"config.run_key": run_key, "status": COMPLETED}))
    if not records:
        return None
    return max(records, key=lambda r: _finality(r)[1])


def has_completed(store: StoreLike, run_key: str) -> bool:
    for kind, where in _sources(store):
        if kind == "mongo":
            if where["runs"].find_one({"config.run_key": run_key, "status": COMPLETED}, {"_id": 1}) is not None:
                return True
        else:
            for run_dir in _file_run_dirs(where):
                record = _file_record(run_dir, with_info=False)
                if record and record["status"] == COMPLETED and record["config"].get("run_key") == run_key:
                    return True
    return False


def load_metrics(store: StoreLike, attempt_ids: Sequence[str] | None = None,
                 names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-epoch metrics in long form: attempt_id, run_key, run_id, source, name, step, value."""
    wanted = set(attempt_ids) if attempt_ids is not None else None
    name_set = set(names) if names is not None else None
    rows: list[dict[str, Any]] = []
    for record in unique_attempts(list(iter_records(store))):
        attempt = (record.get("meta") or {}).get("attempt_id")
        if wanted is not None and attempt not in wanted:
            continue
        key = (record.get("config") or {}).get("run_key")
        for name, steps, values in _record_metrics(record, name_set):
            rows += [{"attempt_id": attempt, "run_key": key, "run_id": record["run_id"],
                      "source": record["source"], "name": name, "step": s, "value": v}
                     for s, v in zip(steps, values)]
    return pd.DataFrame(rows, columns=["attempt_id", "run_key", "run_id", "source", "name", "step", "value"])


def _record_metrics(record: dict[str, Any], names: set[str] | None) -> Iterator[tuple[str, list, list]]:
    source = record["source"]
    if source.startswith("file:"):
        path = Path(record["path"]) / "metrics.json"
        try:
            metrics = _read_json(path) if path.exists() else {}
        except (OSError, ValueError):
            metrics = {}
        for name, series in metrics.items():
            if names is None or name in names:
                yield name, series.get("steps", []), series.get("values", [])
        return
    db = record["_db"]
    query: dict[str, Any] = {"run_id": record["run_id"]}
    if names is not None:
        query["name"] = {"$in": sorted(names)}
    for doc in db["metrics"].find(query):
        yield doc["name"], doc.get("steps", []), doc.get("values", [])


__all__ = ["completed_run_keys", "connect", "dedupe_runs", "find_completed", "has_completed", "iter_records",
           "load_metrics", "load_runs", "run_status", "unique_attempts"]
