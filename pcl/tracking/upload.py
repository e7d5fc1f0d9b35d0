"""Upload: file-store records (and Sacred failure entries) into MongoDB, matched by attempt id; idempotent."""
from __future__ import annotations

import datetime as dt
import json
import numbers
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sacred.observers import MongoObserver

from pcl.tracking.errors import StoreUnavailable
from pcl.tracking.lifecycle import FINAL_STATUSES
from pcl.tracking.secrets import MONGO_URL_ENV, redact_url
from pcl.tracking.stores import FAILURE_DIR_NAME, open_store


@dataclass
class UploadReport:
    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped_running: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{len(self.inserted)} inserted, {len(self.updated)} updated, {len(self.unchanged)} already "
                f"there, {len(self.skipped_running)} still RUNNING (left alone), {len(self.unreadable)} unreadable")


def _parse_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _file_run_document(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MongoObserver-shaped run document without _id, metrics by name) of one file-store run."""
    run = json.loads((run_dir / "run.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    info_path, metrics_path, cout_path = run_dir / "info.json", run_dir / "metrics.json", run_dir / "cout.txt"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    experiment = dict(run.get("experiment") or {})
    experiment["sources"] = [[name, None] for name, *_ in experiment.get("sources", [])]  # not re-uploaded
    doc = {
        "experiment": experiment, "format": MongoObserver.VERSION, "command": run.get("command"),
        "host": run.get("host", {}), "start_time": _parse_time(run.get("start_time")), "config": config,
        "meta": run.get("meta", {}), "status": run.get("status"), "resources": run.get("resources", []),
        "artifacts": [], "captured_out": cout_path.read_text(errors="replace") if cout_path.exists() else "",
        "info": {k: v for k, v in info.items() if k != "metrics"}, "heartbeat": _parse_time(run.get("heartbeat")),
        "result": run.get("result"), "stop_time": _parse_time(run.get("stop_time")),
    }
    if "fail_trace" in run:
        doc["fail_trace"] = run["fail_trace"]
    doc["info"]["uploaded_from"] = str(run_dir.resolve())
    return doc, metrics


class _EntryUnpickler(pickle.Unpickler):
    """Sacred failure entries hold only plain containers, datetimes and ObjectIds: nothing else is loaded."""

    ALLOWED = {("datetime", "datetime"), ("datetime", "timezone"), ("datetime", "timedelta"),
               ("bson.objectid", "ObjectId"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a failure entry")
        return super().find_class(module, name)


def _next_run_id(runs) -> int:
    last = runs.find_one({}, {"_id": 1}, sort=[("_id", -1)])
    return int(last["_id"]) + 1 if last and isinstance(last["_id"], numbers.Integral) else 1


def _insert_run(db, doc: dict[str, Any]) -> int:
    import pymongo.errors

    while True:
        doc["_id"] = _next_run_id(db["runs"])
        try:
            db["runs"].insert_one(doc)
            return doc["_id"]
        except pymongo.errors.DuplicateKeyError:
            continue  # another writer took that id: take the next


def _write_metrics(db, run_id: Any, metrics: Mapping[str, Mapping[str, list]]) -> list[dict[str, str]]:
    db["metrics"].delete_many({"run_id": run_id})
    refs = []
    for name, series in metrics.items():
        res = db["metrics"].insert_one({"run_id": run_id, "name": name, "steps": list(series.get("steps", [])),
                                        "values": list(series.get("values", [])),
                                        "timestamps": [_parse_time(t) for t in series.get("timestamps", [])]})
        refs.append({"name": name, "id": str(res.inserted_id)})
    return refs


def upload(results_dir: str | os.PathLike, mongo_url: str | None = None, db_name: str | None = None,
           include_running: bool = False, log: Callable[[str], None] = print) -> UploadReport:
    """Copy file-store records that MongoDB lacks, or holds in an older state, into MongoDB; idempotent.

    Records are matched by their attempt id (meta.attempt_id). A Mongo record left RUNNING by a server that went
    away is replaced by the file copy's final state and metrics. Sacred failure entries (failure_dir pickles) are
    used for attempts that have no file copy. RUNNING file records are left alone unless `include_running`.
    """
    store = open_store(results_dir, mongo_url, db_name)
    db = store.database()
    if db is None:
        raise StoreUnavailable(f"upload needs a MongoDB URL (--mongo-url or {MONGO_URL_ENV})")
    report = UploadReport()
    seen: set[str] = set()
    root = Path(results_dir)
    run_dirs = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) \
        if root.is_dir() else []
    for run_dir in run_dirs:
        try:
            doc, metrics = _file_run_document(run_dir)
        except (OSError, ValueError) as err:
            report.unreadable.append(f"{run_dir}: {err}")
            continue
        attempt = (doc.get("meta") or {}).get("attempt_id") or f"file:{run_dir.resolve()}"
        doc.setdefault("meta", {})["attempt_id"] = attempt
        seen.add(attempt)
        _upload_one(db, doc, metrics, attempt, str(run_dir), include_running, report)
    failure_dir = root / FAILURE_DIR_NAME
    for path in sorted(failure_dir.glob("*.pickle")) if failure_dir.is_dir() else []:
        try:
            with open(path, "rb") as f:
                entry = _EntryUnpickler(f).load()
        except Exception as err:  # noqa: BLE001
            report.unreadable.append(f"{path}: {err}")
            continue
        attempt = (entry.get("meta") or {}).get("attempt_id")
        if not attempt or attempt in seen:
            continue  # the file copy (with metrics) was uploaded above
        seen.add(attempt)
        entry.pop("_id", None)
        _upload_one(db, entry, None, attempt, str(path), include_running, report)
    store.close()
    log(f"upload {root} -> MongoDB {redact_url(store.mongo_url)} (database {store.db_name!r}): {report}")
    return report


def _upload_one(db, doc: dict[str, Any], metrics: Mapping[str, Any] | None, attempt: str, where: str,
                include_running: bool, report: UploadReport) -> None:
    status = doc.get("status")
    if status not in FINAL_STATUSES and not include_running:
        report.skipped_running.append(where)
        return
    existing = db["runs"].find_one({"meta.attempt_id": attempt}, {"_id": 1, "status": 1, "stop_time": 1})
    if existing is not None and existing.get("status") == status and existing.get("status") in FINAL_STATUSES:
        report.unchanged.append(where)
        return
    if existing is None:
        doc["info"]["metrics"] = []
        run_id = _insert_run(db, doc)
        report.inserted.append(where)
    else:
        run_id = existing["_id"]
        doc.pop("_id", None)
        if metrics is None:  # a failure entry: keep the metrics the server already has
            doc["info"].pop("metrics", None)
        db["runs"].update_one({"_id": run_id}, {"$set": doc})
        report.updated.append(where)
    if metrics is not None:
        refs = _write_metrics(db, run_id, metrics)
        db["runs"].update_one({"_id": run_id}, {"$set": {"info.metrics": refs}})


