"""Upload: file-store records (and Sacred failure entries) into MongoDB, one run document per attempt, idempotent
and atomic per run, in the layout of Sacred's MongoObserver (sources in GridFS) so Omniboard and incense read them.

Per attempt (meta.attempt_id, unique in `runs` through an index that upload creates) the order is: sources into
GridFS, the run document without its final status (RUNNING), every metric series (documents with ids derived
from the attempt and the metric name, so a repeated or concurrent upload replaces instead of adding), and only
then the final status, result and `info.metrics`. An upload killed at any point leaves the attempt non-final
(never COMPLETED with missing metrics) and the next upload completes it; uploads running at once give each
attempt exactly once. Each upload also repairs what older versions wrote: duplicate documents of one attempt,
sources without content (`[name, null]`), and the status PREEMPTED (-> INTERRUPTED with info.preempted=True).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

from sacred.observers import MongoObserver

from pcl import results
from pcl.safe_pickle import PROTOCOL2_BYTES, restricted_loads
from pcl.tracking.errors import StoreUnavailable, UserError
from pcl.tracking.lifecycle import FINAL_STATUSES
from pcl.secrets import MONGO_URL_ENV, redact_url
from pcl.tracking.stores import FAILURE_DIR_NAME, next_run_id, open_store

#: the status a run document has while upload writes its metrics (non-final: never skipped, always re-uploaded)
PENDING_STATUS = "RUNNING"
#: the unique index that makes one document per attempt
ATTEMPT_INDEX = "pcl_attempt_id_unique"
_FINAL_FIELDS = ("status", "stop_time", "result", "fail_trace")


@dataclass
class UploadReport:
    """What an upload did, by file-store folder or failure entry; its str is the one-line summary."""

    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped_running: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    migrated: int = 0
    duplicates_removed: int = 0
    missing_sources: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        repaired = ""
        if self.migrated or self.duplicates_removed:
            repaired = (f"; repaired: {self.migrated} PREEMPTED -> INTERRUPTED (info.preempted), "
                        f"{self.duplicates_removed} duplicate run document(s) removed")
        missing = f"; {len(self.missing_sources)} source file(s) without content" if self.missing_sources else ""
        return (f"{len(self.inserted)} inserted, {len(self.updated)} updated, {len(self.unchanged)} already "
                f"there, {len(self.skipped_running)} still RUNNING (left alone), {len(self.unreadable)} "
                f"unreadable{repaired}{missing}")


def _parse_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def migrate_status(doc: dict[str, Any]) -> dict[str, Any]:
    """A record's status in today's spelling: PREEMPTED -> Sacred's INTERRUPTED with info.preempted=True."""
    if doc.get("status") == "PREEMPTED":
        doc["status"] = "INTERRUPTED"
        doc.setdefault("info", {})["preempted"] = True
    return doc


def _experiment_names(doc: Mapping[str, Any]) -> list[str]:
    """Every experiment that uses the run: info.experiments, Omniboard's tags, else the one that trained it."""
    names = list((doc.get("info") or {}).get("experiments") or [])
    names += list((doc.get("omniboard") or {}).get("tags") or [])
    names.append((doc.get("config") or {}).get("experiment") or (doc.get("experiment") or {}).get("name"))
    return list(dict.fromkeys(n for n in names if n))


class _BeingCreated(Exception):
    """A run folder without run.json or config.json yet: a run starting right now (left alone, like RUNNING)."""


#: where Sacred's file store archives the sources of its runs (relative to the store)
SOURCES_DIR = "_sources"


def _archived_source(store_root: Path, stored: Any) -> bytes:
    """The content of a source the run archived in its file store: `_sources/NAME` inside the store, a regular
    file reached without links (pcl.results.read_file). A record that points anywhere else (an absolute path,
    `..`, a link, another folder of the store) is not followed: RecordError."""
    parts = PurePosixPath(stored).parts if isinstance(stored, str) else ()
    if len(parts) != 2 or parts[0] != SOURCES_DIR:
        raise results.RecordError(f"{stored!r} is not a file the run archived in {SOURCES_DIR}/")
    data = results.read_file(store_root, stored)
    if data is None:
        raise results.RecordError(f"{stored} is missing")
    return data


def _file_run_document(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, bytes | None]],
                                                 list[str]]:
    """(MongoObserver-shaped run document without _id, metrics by name, [(source name, archived content)],
    [why a source has no content]) of one file-store run.

    Every file is read inside the run's folder, or for sources inside the store's `_sources/`, through
    pcl.results (no links, no path that leaves them; the record's base_dir is never read). RecordError (a
    ValueError) for a damaged, half-written, foreign or older record."""
    files = results.read_run_files(run_dir)
    if files is None:
        raise _BeingCreated(run_dir)
    run, config, info = files
    results.check_record({"status": run.get("status"), "config": config, "info": dict(info),
                          "result": run.get("result"), "meta": run.get("meta"), "host": run.get("host"),
                          "experiment": run.get("experiment"), "start_time": run.get("start_time"),
                          "stop_time": run.get("stop_time"), "heartbeat": run.get("heartbeat")})
    metrics = results.check_metrics(results.read_json(run_dir, "metrics.json") or {})
    cout = results.read_file(run_dir, "cout.txt")
    experiment = dict(run.get("experiment") or {})
    listed = experiment.get("sources") or []
    if not isinstance(listed, list) or not all(isinstance(s, (list, tuple)) and len(s) >= 2
                                               and isinstance(s[0], str) for s in listed):
        raise results.RecordError("experiment.sources is not a list of [name, stored copy]")
    sources, missing = [], []
    for name, stored, *_ in listed:
        try:
            sources.append((name, _archived_source(run_dir.parent, stored)))
        except results.RecordError as err:
            sources.append((name, None))
            missing.append(f"{name} ({err})")
    omniboard = run.get("omniboard") if isinstance(run.get("omniboard"), dict) else {}
    tags = omniboard.get("tags") if isinstance(omniboard.get("tags"), list) else []
    doc = {
        "experiment": experiment, "format": MongoObserver.VERSION, "command": run.get("command"),
        "host": run.get("host") or {}, "start_time": _parse_time(run.get("start_time")), "config": config,
        "meta": dict(run.get("meta") or {}), "status": run.get("status"),
        "resources": run.get("resources") if isinstance(run.get("resources"), list) else [],
        "artifacts": [], "captured_out": cout.decode("utf-8", errors="replace") if cout is not None else "",
        "info": {k: v for k, v in info.items() if k != "metrics"}, "heartbeat": _parse_time(run.get("heartbeat")),
        "result": _headline_first(run.get("result")), "stop_time": _parse_time(run.get("stop_time")),
    }
    if "fail_trace" in run:
        doc["fail_trace"] = run["fail_trace"]
    names = _experiment_names({**doc, "omniboard": {"tags": [t for t in tags if isinstance(t, str)]}})
    doc["omniboard"] = {"tags": names}
    doc["info"]["experiments"] = names
    doc["info"]["uploaded_from"] = str(run_dir.resolve())
    run_ids = doc["info"].get("run_ids")
    doc["info"]["run_ids"] = dict(run_ids) if isinstance(run_ids, dict) else {}
    doc["info"]["run_ids"]["file"] = run_dir.name
    return migrate_status(doc), metrics, sources, missing


def _headline_first(result: Any) -> Any:
    """The result with the deployed figures first, as the run returned it (the file store sorts JSON keys;
    Omniboard shows the result cut at its start)."""
    if not isinstance(result, dict):
        return result
    return {**{k: v for k, v in result.items() if k.startswith("deployed/")}, **result}


#: Sacred failure entries hold only plain containers, datetimes and ObjectIds: nothing else is loaded
#: (pcl.safe_pickle: exact pairs, no dotted names)
_ENTRY_GLOBALS = {**dict.fromkeys([("datetime", "datetime"), ("datetime", "timezone"), ("datetime", "timedelta"),
                                    ("bson.objectid", "ObjectId"), ("collections", "OrderedDict")]),
                  **PROTOCOL2_BYTES}  # how protocol 2 spells bytes (latin1 only: another codec can grow a string)


#: what a failure entry may hold once its shared references are counted each time they occur (a pickle's memo can
#: make a few hundred bytes a document of 10^9 strings when BSON-encodes it: 2 GB and 17 s before the size error)
_ENTRY_NODES = 1_000_000
_ENTRY_DEPTH = 100
#: MongoDB's largest document: an entry's text once written out is counted against it before BSON writes it (a 5 KB
#: pickle of lists of one shared 1 KB string was 2 GB of BSON)
_ENTRY_BYTES = 16 << 20
#: the objects a failure entry's pickle may build (a real one: a few thousand); an allowed callable's work can grow
#: with the square of what it is given (an OrderedDict of colliding keys: 12 s at 1.8 million)
_ENTRY_OBJECTS = 100_000


def _read_failure_entry(path: Path) -> dict[str, Any]:
    """A failure entry, read as a record's file is (pcl.results.read_file: no link, no FIFO, bounded) and
    unpickled with the globals of a run document only (no code runs)."""
    data = results.read_file(path.parent, path.name)
    if data is None:
        raise ValueError("it is gone")
    entry = restricted_loads(data, _ENTRY_GLOBALS, "a failure entry holds only a run document", limit=_ENTRY_OBJECTS)
    if not isinstance(entry, dict):
        raise ValueError(f"expected a run document (a dict), got {type(entry).__name__}")
    return entry


# ---- the database: one document per attempt -------------------------------------------------------------------
def _prepare(db, report: UploadReport) -> None:
    """Migrate PREEMPTED records, remove duplicate documents of one attempt, create the unique attempt index."""
    import pymongo.errors

    res = db["runs"].update_many({"status": "PREEMPTED"},
                                 {"$set": {"status": "INTERRUPTED", "info.preempted": True}})
    report.migrated += res.modified_count
    for attempt in range(3):
        try:
            db["runs"].create_index([("meta.attempt_id", 1)], unique=True, sparse=True, name=ATTEMPT_INDEX)
            return
        except pymongo.errors.OperationFailure as err:
            if err.code in (85, 86):  # IndexOptionsConflict / IndexKeySpecsConflict: that index exists already
                unique = any(ix.get("unique") and list(ix["key"]) == ["meta.attempt_id"]
                             for ix in db["runs"].list_indexes())
                if unique:
                    return
                raise
            if attempt == 2:
                raise
            report.duplicates_removed += _remove_duplicates(db)  # duplicates from older uploads: keep one each


def _remove_duplicates(db) -> int:
    """Keep one document per meta.attempt_id (a final status first, then the lowest _id); delete the others and
    their metrics. Returns how many were deleted."""
    by_attempt: dict[str, list[dict[str, Any]]] = {}
    for doc in db["runs"].find({"meta.attempt_id": {"$exists": True}}, {"_id": 1, "status": 1,
                                                                         "meta.attempt_id": 1}):
        attempt = doc["meta"].get("attempt_id") if isinstance(doc.get("meta"), dict) else None
        if isinstance(attempt, str):  # another project's document may hold anything there
            by_attempt.setdefault(attempt, []).append(doc)
    removed = 0
    for docs in by_attempt.values():
        if len(docs) < 2:
            continue
        docs.sort(key=lambda d: (d.get("status") not in FINAL_STATUSES, str(d["_id"])))
        for doc in docs[1:]:
            db["metrics"].delete_many({"run_id": doc["_id"]})
            removed += db["runs"].delete_one({"_id": doc["_id"]}).deleted_count
    return removed


def _next_run_id(runs) -> int:
    return next_run_id(runs)  # integer ids only: another project's ObjectId _id is passed over


def _insert_run(db, doc: dict[str, Any], attempt: str, preferred_id: int | None) -> tuple[int, bool]:
    """Insert `doc` under the preferred id (the file-store folder's number) when free, else the next free one.
    Returns (_id, inserted); inserted is False when another upload inserted this attempt first."""
    import pymongo.errors

    candidate = preferred_id
    for _ in range(1000):
        doc["_id"] = candidate if candidate is not None else _next_run_id(db["runs"])
        doc["info"].setdefault("run_ids", {})["mongo"] = doc["_id"]
        try:
            db["runs"].insert_one(doc)
            return doc["_id"], True
        except pymongo.errors.DuplicateKeyError:
            existing = db["runs"].find_one({"meta.attempt_id": attempt}, {"_id": 1})
            if existing is not None:
                return existing["_id"], False
            candidate = None  # that _id belongs to another attempt: take the next free one
    raise StoreUnavailable(f"MongoDB: no free run id for attempt {attempt} after 1000 tries")


def _metric_id(attempt: str, name: str):
    """The ObjectId of one metric series of one attempt: the same in every upload, so a write replaces."""
    from bson import ObjectId

    return ObjectId(hashlib.sha1(f"{attempt}\0{name}".encode()).digest()[:12])


def _write_metrics(db, run_id: Any, attempt: str, metrics: Mapping[str, Mapping[str, list]]) -> list[dict]:
    """Every series of the attempt as one metrics document (Sacred's layout), written in one bulk request (not a
    round trip per series); documents of the run that are not among them (a live run's partial series) are
    deleted. Returns the `info.metrics` references."""
    import pymongo
    import pymongo.errors

    refs, ids, writes = [], [], []
    for name, series in metrics.items():
        oid = _metric_id(attempt, name)
        body = {"run_id": run_id, "name": name, "steps": list(series.get("steps", [])),
                "values": list(series.get("values", [])),
                "timestamps": [_parse_time(t) for t in series.get("timestamps", [])]}
        writes.append(pymongo.ReplaceOne({"_id": oid}, body, upsert=True))
        refs.append({"name": name, "id": str(oid)})
        ids.append(oid)
    for attempt_left in range(3):
        try:
            if writes:
                db["metrics"].bulk_write(writes, ordered=False)
            break
        except pymongo.errors.BulkWriteError as err:  # a concurrent upsert inserted one first: replace again
            if attempt_left == 2 or any(e.get("code") != 11000 for e in err.details.get("writeErrors", [])):
                raise
    db["metrics"].delete_many({"run_id": run_id, "_id": {"$nin": ids}})
    return refs


def _store_sources(fs, doc: dict[str, Any], sources: list[tuple[str, bytes | None]],
                   report: UploadReport, where: str, known: dict[tuple[str, str], Any]) -> list[list[Any]]:
    """[[name, GridFS id]] as Sacred's MongoObserver.save_sources writes them (filename: base_dir/name, found
    again by filename and md5). Content comes only from the copy the run archived in its file store (never
    from base_dir, a path the record names); without it the id stays None and the report says so."""
    base_dir = (doc.get("experiment") or {}).get("base_dir")
    base_dir = base_dir if isinstance(base_dir, str) else ""
    out = []
    for name, data in sources:
        abs_path = os.path.join(base_dir, name)  # a name in GridFS only: nothing is read from it
        if data is None:
            report.missing_sources.append(f"{where}: {name}")
            out.append([name, None])
            continue
        md5 = hashlib.md5(data).hexdigest()
        key = (abs_path, md5)  # runs share their sources: one look-up per distinct file and upload, not per run
        if key not in known:
            found = fs.find_one({"filename": abs_path, "md5": md5})
            known[key] = found._id if found is not None else fs.put(data, filename=abs_path, md5=md5)
        out.append([name, known[key]])
    return out


def _sources_complete(doc: Mapping[str, Any]) -> bool:
    sources = _mapping(doc.get("experiment")).get("sources")
    return isinstance(sources, list) and all(isinstance(s, list) and len(s) > 1 and s[1] is not None
                                             for s in sources)


def _metrics_complete(db, run_id: Any, metrics: Mapping[str, Mapping[str, list]] | None,
                      existing: Mapping[str, Any]) -> bool:
    if metrics is None:
        return True
    docs = list(db["metrics"].find({"run_id": run_id}, {"name": 1, "steps": 1}))
    if not all(isinstance(d.get("name"), str) and isinstance(d.get("steps"), list) for d in docs):
        return False  # a document of another tool or version: written again
    have = {d["name"]: len(d.get("steps") or []) for d in docs}
    want = {name: len(series.get("steps", [])) for name, series in metrics.items()}
    listed = _mapping(existing.get("info")).get("metrics")
    refs = {str(r.get("name")): r.get("id") for r in (listed if isinstance(listed, list) else [])
            if isinstance(r, Mapping)}
    return len(docs) == len(have) and have == want and refs == {d["name"]: str(d["_id"]) for d in docs}


def upload(results_dir: str | os.PathLike, mongo_url: str | None = None, db_name: str | None = None,
           include_running: bool = False, log: Callable[[str], None] = print) -> UploadReport:
    """Copy file-store records that MongoDB lacks, or holds in an older or incomplete state, into MongoDB.

    Records are matched by their attempt id (meta.attempt_id; one document per attempt, see the module doc). A
    Mongo record left RUNNING by a server that went away is replaced by the file copy's final state and metrics.
    Sacred failure entries (failure_dir pickles) are used for attempts that have no file copy. RUNNING file
    records are left alone unless `include_running`. Idempotent, safe to run concurrently and to kill.
    Raises StoreUnavailable without a URL or server.
    """
    import gridfs

    if not str(results_dir).strip() or not Path(results_dir).is_dir():  # Path("") is the current folder
        raise UserError(f"results_dir {str(results_dir)!r} is not a folder: upload reads a file store's run folders")
    store = open_store(results_dir, mongo_url, db_name)
    db = store.database()
    if db is None:
        raise StoreUnavailable(f"upload needs a MongoDB URL (--mongo-url or {MONGO_URL_ENV})")
    fs = gridfs.GridFS(db)
    known_sources: dict[tuple[str, str], Any] = {}  # (GridFS file name, md5) -> its id, for this upload
    report = UploadReport()
    _prepare(db, report)
    seen: set[str] = set()
    root = Path(results_dir)
    for run_dir in results.run_folders(root):  # a link in place of a run folder is named and skipped
        try:
            doc, metrics, sources, missing = _file_run_document(run_dir)
        except _BeingCreated:
            report.skipped_running.append(str(run_dir))
            continue
        except (OSError, ValueError) as err:  # RecordError: damaged, foreign, older or half-written
            report.unreadable.append(f"{run_dir}: {results.one_line(err)}")
            log(f"warning: not uploaded: {run_dir}: {results.one_line(err)}")
            continue
        for reason in missing:  # e.g. a path outside the store: not read, named (the report counts them)
            log(f"warning: {run_dir}: source {results.one_line(reason)}: uploaded without content")
        attempt = (doc.get("meta") or {}).get("attempt_id") or f"file:{run_dir.resolve()}"
        doc.setdefault("meta", {})["attempt_id"] = attempt
        seen.add(attempt)
        unstorable = _unstorable(doc, metrics)
        if unstorable:  # checked before any write: nothing of it is left half-written
            report.unreadable.append(f"{run_dir}: {unstorable}")
            log(f"warning: not uploaded: {run_dir}: {unstorable}")
            continue
        _upload_one(db, fs, doc, metrics, sources, attempt, run_dir, include_running, report, known_sources)
    failure_dir = root / FAILURE_DIR_NAME
    for path in sorted(failure_dir.glob("*.pickle")) if failure_dir.is_dir() and not failure_dir.is_symlink() \
            else []:
        try:
            entry = _read_failure_entry(path)
            results.check_record(entry)
        except Exception as err:  # noqa: BLE001 - whatever a damaged or hostile pickle raises: named, skipped
            report.unreadable.append(f"{path}: {results.one_line(err)}")
            log(f"warning: not uploaded: {path}: {results.one_line(err)}")
            continue
        attempt = entry["meta"].get("attempt_id")
        if not attempt or attempt in seen:
            continue  # the file copy (with metrics) was uploaded above
        seen.add(attempt)
        entry.pop("_id", None)
        entry.setdefault("info", {})
        names = _experiment_names(entry)
        entry["omniboard"], entry["info"]["experiments"] = {"tags": names}, names
        unstorable = _unstorable(entry, None)
        if unstorable:
            report.unreadable.append(f"{path}: {unstorable}")
            log(f"warning: not uploaded: {path}: {unstorable}")
            continue
        _upload_one(db, fs, migrate_status(entry), None, None, attempt, path, include_running, report,
                    known_sources)
    store.close()
    log(f"upload {root} -> MongoDB {redact_url(store.mongo_url)} (database {store.db_name!r}): {report}")
    return report


def _unstorable(doc: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str | None:
    """Why MongoDB cannot hold this record (a NUL in a key, an integer beyond 8 bytes, ...), or None: BSON-encoded
    here, before any write."""
    import bson

    if not _bounded(doc):
        return (f"cannot be stored in MongoDB (more than {_ENTRY_NODES} values, {_ENTRY_DEPTH} levels or "
                f"{_ENTRY_BYTES >> 20} MB of text once its shared parts are written out, or an ObjectId not of 12 "
                "bytes)")
    try:
        bson.encode({**doc, "_id": 0})
        for name, series in (metrics or {}).items():
            bson.encode({"name": name, "steps": list(series.get("steps", [])),
                         "values": list(series.get("values", [])), "timestamps": list(series.get("timestamps", []))})
    except (bson.errors.InvalidDocument, OverflowError, TypeError, ValueError, RecursionError) as err:
        return f"cannot be stored in MongoDB ({type(err).__name__}: {results.one_line(err, 200)})"
    return None


def _bounded(doc: Any) -> bool:
    """Whether `doc` written out (every shared list or dict once per place it occurs, as BSON writes it) holds at
    most _ENTRY_NODES values in at most _ENTRY_DEPTH levels and _ENTRY_BYTES of text, and only ObjectIds of their
    12 bytes (a pickle's BUILD sets any state, and BSON's encoder copies 12 bytes whatever it holds: the heap after
    a 2-byte one went into the document): counted without writing it."""
    from bson.objectid import ObjectId

    stack, nodes, size = [(doc, 0)], 0, 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > _ENTRY_NODES or depth > _ENTRY_DEPTH or size > _ENTRY_BYTES:
            return False
        if isinstance(value, dict):
            size += sum(len(k) for k in value if isinstance(k, (str, bytes)))
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, (str, bytes)):
            size += len(value)
        elif isinstance(value, ObjectId) and not (isinstance(value.binary, bytes) and len(value.binary) == 12):
            return False
    return True


def _strings(value: Any) -> list[str]:
    """A list of names in a document already in the database: its strings, [] for anything else."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    """A field of a document already in the database (another version or tool may have written it) as a mapping,
    {} for anything else."""
    return value if isinstance(value, Mapping) else {}


def _upload_one(db, fs, doc: dict[str, Any], metrics: Mapping[str, Any] | None,
                sources: list[tuple[str, bytes | None]] | None, attempt: str, where: Path, include_running: bool,
                report: UploadReport, known_sources: dict[tuple[str, str], Any]) -> None:
    status = doc.get("status")
    if status not in FINAL_STATUSES and not include_running:
        report.skipped_running.append(str(where))
        return
    names = doc["omniboard"]["tags"]
    existing = db["runs"].find_one({"meta.attempt_id": attempt},
                                   {"_id": 1, "status": 1, "experiment.sources": 1, "omniboard": 1,
                                    "info.experiments": 1, "info.metrics": 1})
    if existing is not None and existing.get("status") == status and status in FINAL_STATUSES \
            and _sources_complete(existing) \
            and set(names) <= set(_strings(_mapping(existing.get("omniboard")).get("tags"))) \
            and set(names) <= set(_strings(_mapping(existing.get("info")).get("experiments"))) \
            and _metrics_complete(db, existing["_id"], metrics, existing):
        report.unchanged.append(str(where))
        return
    if existing is not None and _sources_complete(existing):
        doc["experiment"]["sources"] = existing["experiment"]["sources"]  # the live run's GridFS files
    elif sources is not None:
        doc["experiment"]["sources"] = _store_sources(fs, doc, sources, report, str(where), known_sources)
    final = {k: doc.pop(k) for k in _FINAL_FIELDS if k in doc}
    doc["status"] = PENDING_STATUS  # until every metric is written
    doc.pop("_id", None)
    inserted = False
    if existing is None:
        preferred = results.run_number(where.name)
        doc["info"]["metrics"] = []
        run_id, inserted = _insert_run(db, doc, attempt, preferred)
        if not inserted:
            existing = db["runs"].find_one({"_id": run_id}, {"info": 1, "omniboard": 1})
    else:
        run_id = existing["_id"]
    if not inserted:
        old_info = _mapping((existing or {}).get("info"))
        doc["info"]["experiments"] = list(dict.fromkeys([*_strings(old_info.get("experiments")), *names]))
        listed = old_info.get("metrics")
        doc["info"]["metrics"] = [r for r in listed if isinstance(r, Mapping)] if isinstance(listed, list) else []
        doc["info"].setdefault("run_ids", {})["mongo"] = run_id
        if isinstance((existing or {}).get("omniboard"), Mapping):
            doc.pop("omniboard", None)  # tags are only ever added (below); another tool's shape is replaced
        if existing.get("status") in FINAL_STATUSES and final.get("status") == existing.get("status"):
            doc.pop("status")  # a final record being repaired keeps its status while its metrics are rewritten
        db["runs"].update_one({"_id": run_id}, {"$set": doc})
        report.updated.append(str(where))
    else:
        report.inserted.append(str(where))
    db["runs"].update_one({"_id": run_id}, {"$addToSet": {"omniboard.tags": {"$each": names},
                                                          "info.experiments": {"$each": names}}})
    done = dict(final)
    if metrics is not None:
        done["info.metrics"] = _write_metrics(db, run_id, attempt, metrics)
    db["runs"].update_one({"_id": run_id}, {"$set": done})  # last: the record is final only when complete
