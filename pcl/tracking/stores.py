"""Stores: where records go (a Sacred file store, plus MongoDB when a URL is given) and the Sacred observers that
write them; failing fast when MongoDB is unreachable."""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sacred.observers import FileStorageObserver, MongoObserver
from sacred.serializer import flatten

from pcl.fsio import fsync_dir, os_error_in
from pcl import results
from pcl.tracking.errors import StoreUnavailable
from pcl.secrets import MONGO_URL_ENV, redact, redact_url, resolve_mongo_url

DEFAULT_DB_NAME = "pcl"
MONGO_TIMEOUT_S = 2.5
FAILURE_DIR_NAME = "mongo_failed"


@dataclass
class Store:
    """Where records go: always a Sacred file store in `results_dir`; MongoDB too when a URL is given."""

    results_dir: Path
    mongo_url: str | None = field(default=None, repr=False)
    db_name: str = DEFAULT_DB_NAME
    timeout_s: float = MONGO_TIMEOUT_S
    _client: Any = field(default=None, repr=False)

    def describe(self) -> str:
        where = f"file store {self.results_dir}"
        if self.mongo_url:
            where += f" + MongoDB {redact_url(self.mongo_url)} (database {self.db_name!r})"
        return where

    def __repr__(self) -> str:
        return f"Store({self.describe()})"

    @property
    def failure_dir(self) -> Path:
        return self.results_dir / FAILURE_DIR_NAME

    def database(self):
        """The pymongo Database (connecting on first use), or None without MongoDB."""
        if not self.mongo_url:
            return None
        if self._client is None:
            self._client = _mongo_client(self.mongo_url, self.timeout_s)
        return self._client[self.db_name]

    def sources(self) -> list[Any]:
        """The stores to read records from (results.load_runs accepts this list)."""
        db = self.database()
        return ([db] if db is not None else []) + [self.results_dir]

    def check(self) -> None:
        """Ping MongoDB and check that records can be read and written; StoreUnavailable with a clear message."""
        if not self.mongo_url:
            return
        db = self.database()
        try:
            db.client.admin.command("ping")
            # fails on authentication/authorisation problems; by _id, which every server looks up in its index
            # (`{}` made a server that projects before it limits read the whole collection: 8.6 s at 30,000 runs)
            db["runs"].find_one({"_id": None}, {"_id": 1})
            db["metrics"].create_index([("run_id", 1), ("name", 1)])  # Sacred creates none; every plot reads it
            db["runs"].create_index([("config.run_key", 1), ("status", 1)])
        except Exception as err:  # noqa: BLE001 - any failure here means: do not start a run
            within = db.client.options.server_selection_timeout  # the URL's own where it gives one
            raise StoreUnavailable(_unreachable_message(self.mongo_url, err, within)) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _mongo_client(url: str, timeout_s: float):
    import pymongo

    try:
        return pymongo.MongoClient(url, **results.client_options(timeout_s, url, socketTimeoutMS=60_000,
                                                                 appname="pcl.tracking"))
    except Exception as err:  # noqa: BLE001 - malformed URLs and options
        raise StoreUnavailable(f"MongoDB URL {redact_url(url)} is not usable: {redact(err)}") from None


def _unreachable_message(url: str, err: BaseException, timeout_s: float) -> str:
    hint = ""
    if "directConnection" not in url:
        hint = (" A remote SecantusDB (or any single-member replica set reached by another name) needs "
                "'?directConnection=true' in the URL.")
    return (f"MongoDB at {redact_url(url)} is unreachable or refused access within {timeout_s:g} s "
            f"({type(err).__name__}: {results.error_reason(err)}). No run was started and nothing was recorded. "
            f"Check that the server runs and the URL/credentials ({MONGO_URL_ENV} or mongo_url=...) are right, "
            f"or leave mongo_url unset to use the file store only.{hint}")


def open_store(results_dir: str | os.PathLike = "results", mongo_url: str | None = None,
               db_name: str | None = None, timeout_s: float = MONGO_TIMEOUT_S) -> Store:
    """The store for runs; with MongoDB (argument or $PCL_MONGO_URL) it is pinged first and fails in seconds."""
    url = resolve_mongo_url(mongo_url)
    if url:
        db_name = db_name or _url_database(url) or DEFAULT_DB_NAME
    store = Store(results_dir=Path(results_dir), mongo_url=url, db_name=db_name or DEFAULT_DB_NAME,
                  timeout_s=timeout_s)
    store.check()
    return store


def _url_database(url: str) -> str | None:
    """The database named in the URL path (mongodb://host/DB?...), if any."""
    from pcl.secrets import url_database

    return url_database(url)  # the readers (pcl.results.connect) read the same name


# ---- observers -----------------------------------------------------------------------------------------------
def _atomic_write_json(obj: Any, path: Path) -> None:
    """JSON to a temp file, fsynced, then renamed over `path`: a crash or a full disk never leaves a half-written
    record; the temp file is removed when the write fails (and the error re-raised)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    try:
        with open(tmp, "w") as f:
            json.dump(flatten(obj), f, sort_keys=True, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def describe_write_error(err: BaseException) -> str:
    """What went wrong when writing, in words: 'no space left on device' for ENOSPC (also when wrapped)."""
    os_error = os_error_in(err)
    if os_error is not None:
        where = f" ({os_error.filename})" if os_error.filename else ""
        return f"{os.strerror(os_error.errno).lower()}{where}"
    return redact(f"{type(err).__name__}: {err}")


class _FileObserver(FileStorageObserver):
    """Sacred's file store with atomic fsynced JSON writes. Its run folder takes MongoDB's id of the same attempt when
    that folder is free (one id in both stores), else the next free number (info.run_ids records both); run.json
    holds Omniboard's tags (`omniboard.tags`, the experiments that use the run) like the MongoDB record. Failure
    tracking: Sacred only warns when an observer fails, so a write that fails (a full disk) sets
    `error`, and the final event then records the attempt as FAILED ("record incomplete") instead of COMPLETED,
    so that the next start trains (restores) the run again instead of skipping an incomplete record."""

    error: str | None = None

    def _failed(self, err: BaseException, event: str) -> None:
        if self.error is None:
            self.error = f"{event}: {describe_write_error(err)}"
        for tmp in Path(self.dir or self.basedir).glob(".*.tmp*"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _guard(self, event: str, call: Callable[[], Any], reraise: bool = False) -> Any:
        try:
            return call()
        except Exception as err:  # any failed write makes the record incomplete
            self._failed(err, event)
            if reraise:
                raise
            return None

    def _maximum_existing_run_id(self):
        """Sacred's, with run folders named by ASCII digits only (pcl.results.run_number): Sacred takes any name
        `str.isdigit` accepts, and a folder named "²" in the store made every new run fail in int()."""
        with os.scandir(self.basedir) as entries:  # a link counts, as in Sacred: its number is taken
            numbers = [results.run_number(e.name) for e in entries if e.is_dir()]
        return max((n for n in numbers if n is not None), default=0)

    def _make_run_dir(self, _id):
        if _id is not None:
            try:
                return super()._make_run_dir(_id)
            except FileExistsError:  # another attempt (another database, or file-only) has that folder
                pass
        return super()._make_run_dir(None)

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        def start() -> str:
            super(_FileObserver, self).started_event(ex_info, command, host_info, start_time, config, meta_info,
                                                     _id)
            self.run_entry["omniboard"] = {"tags": [ex_info["name"]]}
            self.save_json(self.run_entry, "run.json")
            return Path(self.dir).name

        # a record that cannot even be started fails the run before any training
        return self._guard("starting the record", start, reraise=True)

    def find_or_save(self, filename, store_dir: Path):
        """Sacred copies a source file once per content; copied atomically, so a partial copy is never reused."""
        store_dir.mkdir(parents=True, exist_ok=True)
        stem, ext = os.path.splitext(os.path.basename(filename))
        from sacred.dependencies import get_digest

        store_path = store_dir / f"{stem}_{get_digest(filename)}{ext}"
        if not store_path.exists():
            tmp = store_path.with_name(f".{store_path.name}.tmp{os.getpid()}")
            try:
                shutil.copyfile(filename, tmp)
                os.replace(tmp, store_path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        return store_path

    def save_json(self, obj, filename):
        _atomic_write_json(obj, Path(self.dir) / filename)

    def log_metrics(self, metrics_by_name, info):
        self._guard("writing metrics", lambda: self._log_metrics(metrics_by_name))

    def _log_metrics(self, metrics_by_name) -> None:
        path = Path(self.dir) / "metrics.json"
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}
        for name, new in metrics_by_name.items():
            entry = saved.setdefault(name, {"values": [], "steps": [], "timestamps": []})
            entry["values"] += list(new["values"])
            entry["steps"] += list(new["steps"])
            entry["timestamps"] += [t.isoformat() if hasattr(t, "isoformat") else t for t in new["timestamps"]]
        _atomic_write_json(saved, path)

    def heartbeat_event(self, info, captured_out, beat_time, result):
        self._guard("writing the heartbeat", lambda: super(_FileObserver, self).heartbeat_event(
            info, captured_out, beat_time, result))

    def resource_event(self, filename):
        self._guard("saving a resource", lambda: super(_FileObserver, self).resource_event(filename))

    def artifact_event(self, name, filename, metadata=None, content_type=None):
        self._guard("saving an artifact", lambda: super(_FileObserver, self).artifact_event(
            name, filename, metadata, content_type))

    def completed_event(self, stop_time, result):
        if self.error is not None:  # never COMPLETED over an incomplete record: the next start must restore it
            return self._incomplete(stop_time, result)
        self._guard("writing the final record", lambda: super(_FileObserver, self).completed_event(stop_time,
                                                                                                      result))

    def interrupted_event(self, interrupt_time, status):
        self._guard("writing the final record", lambda: super(_FileObserver, self).interrupted_event(
            interrupt_time, status))

    def failed_event(self, fail_time, fail_trace):
        self._guard("writing the final record", lambda: super(_FileObserver, self).failed_event(fail_time,
                                                                                                   fail_trace))

    def _incomplete(self, stop_time, result) -> None:
        note = (f"record incomplete: {self.error}; the training finished, the next start restores the record from "
                "the checkpoint")
        self.run_entry.update(stop_time=stop_time.isoformat(), result=result, status="FAILED", fail_trace=[note])
        with contextlib.suppress(Exception):
            _atomic_write_json(self.run_entry, Path(self.dir) / "run.json")


def next_run_id(runs: Any) -> int:
    """The next integer _id of a `runs` collection: one above its highest integer _id, 1 for none. Documents of
    other projects in a shared database (ObjectId, string or float ids: a notebook's insert_one) are passed over,
    never added to."""
    last = runs.find_one({"_id": {"$type": ["int", "long"]}}, {"_id": 1}, sort=[("_id", -1)])
    return int(last["_id"]) + 1 if last is not None else 1


class _MongoObserver(MongoObserver):
    """MongoObserver whose final save gives up within seconds when the server is gone (Sacred's default retries
    for ~35 s) and then leaves the entry in failure_dir; `failed` tells the tracker to point at `upload`."""

    failed = False
    where = "MongoDB"
    _tags: list[str] = []

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        self._tags = [ex_info["name"]]
        return super().started_event(ex_info, command, host_info, start_time, config, meta_info, _id)

    def insert(self):
        """The first write carries Omniboard's tags; later saves ($set of the run entry) leave them alone, so tags
        that other scripts add (tag_reused) are never overwritten. A new run takes the next integer _id
        (next_run_id): Sacred's own choice adds 1 to the highest _id, which fails when a shared database holds
        another project's document with an ObjectId or string _id."""
        import pymongo.errors

        self.run_entry.setdefault("omniboard", {"tags": list(self._tags)})
        try:
            if self.overwrite or self.run_entry.get("_id") is not None:
                return super().insert()
            for _ in range(1000):
                self.run_entry["_id"] = next_run_id(self.runs)
                try:
                    self.runs.insert_one(self.run_entry)
                    return None
                except pymongo.errors.DuplicateKeyError:  # a run started elsewhere took that id: the next one
                    continue
            raise StoreUnavailable("MongoDB: no free run id after 1000 tries (runs started at once everywhere?)")
        finally:
            self.run_entry.pop("omniboard", None)

    def __str__(self) -> str:  # Sacred names a failing observer in its warnings: never with a password
        return self.where

    def _guard(self, method: str, **kwargs):
        try:
            return getattr(super(), method)(**kwargs)
        except Exception:
            self.failed = True
            raise

    def log_metrics(self, metrics_by_name, info):
        return self._guard("log_metrics", metrics_by_name=metrics_by_name, info=info)

    def heartbeat_event(self, info, captured_out, beat_time, result):
        return self._guard("heartbeat_event", info=info, captured_out=captured_out, beat_time=beat_time,
                           result=result)

    def final_save(self, attempts):
        import pymongo.errors

        # A write that failed during the run lost metrics: MongoDB must not show this attempt COMPLETED with a
        # partial curve (it would be skipped forever). It keeps its last state (RUNNING), which `upload` replaces
        # with the file store's complete record.
        tries = 0 if self.failed else min(attempts, 2)
        for i in range(tries):
            try:
                self.runs.update_one({"_id": self.run_entry["_id"]}, {"$set": self.run_entry}, upsert=True)
                return
            except pymongo.errors.InvalidDocument:
                from sacred.observers.mongo import force_bson_encodeable

                self.run_entry = force_bson_encodeable(self.run_entry)
            except pymongo.errors.ServerSelectionTimeoutError:
                break  # no server for the whole timeout: retrying only delays the run; the file copy has it all
            except pymongo.errors.PyMongoError:
                if i < tries - 1:
                    time.sleep(1)
        self.failed = True
        os.makedirs(self.failure_dir, exist_ok=True)
        path = Path(self.failure_dir) / f"sacred_mongo_fail_{self.run_entry['_id']}_{uuid.uuid4().hex[:8]}.pickle"
        with open(path, "wb") as f:
            pickle.dump(self.run_entry, f)
        print(f"Warning: saving the run to MongoDB failed; its entry is in {path} and the complete record in the "
              "file store: upload both later with `python -m pcl.tracking upload RESULTS_DIR`", file=sys.stderr)


# ---- tags of reused runs ---------------------------------------------------------------------------------------
def tag_reused(store: Store, run_key: str, experiment: str) -> list[str]:
    """Tag the latest COMPLETED record of `run_key` in each store (MongoDB, file store) with `experiment`, a script
    that reuses the run instead of training it: `omniboard.tags` (Omniboard's tag filter) and `info.experiments`
    (every experiment that uses the run, the one that trained it first). Returns where it tagged (for the log).
    Idempotent; a store without such a record is left alone."""
    tagged = []
    db = store.database()
    if db is not None:
        doc = db["runs"].find_one({"config.run_key": run_key, "status": "COMPLETED"},
                                  {"_id": 1, "config.experiment": 1, "experiment.name": 1},
                                  sort=[("stop_time", -1)])
        if doc is not None:
            names = _experiment_names(doc, experiment)
            db["runs"].update_one({"_id": doc["_id"]}, {"$addToSet": {"omniboard.tags": {"$each": names},
                                                                      "info.experiments": {"$each": names}}})
            tagged.append(f"MongoDB record {doc['_id']}")
    run_dir = _latest_completed_dir(store.results_dir, run_key)
    files = None
    if run_dir is not None:
        try:
            files = results.read_run_files(run_dir)  # read inside the folder, checked: a damaged one is left
        except results.RecordError as err:
            results.skip_record(run_dir, err)
    if run_dir is not None and files is not None:
        run, config, info = files
        info_path = run_dir / "info.json"
        names = _experiment_names({"config": config, "experiment": run.get("experiment") or {}}, experiment)
        if not isinstance(run.get("omniboard"), dict) or not isinstance(run["omniboard"].get("tags"), list):
            run["omniboard"] = {"tags": []}
        if not isinstance(info.get("experiments"), list):
            info["experiments"] = []
        tags, used = run["omniboard"]["tags"], info["experiments"]
        if not set(names) <= set(tags):
            tags += [n for n in names if n not in tags]
            _atomic_write_json(run, run_dir / "run.json")
        if not set(names) <= set(used):
            used += [n for n in names if n not in used]
            _atomic_write_json(info, info_path)
        tagged.append(f"file-store record {run_dir}")
    return tagged


def _experiment_names(doc: dict[str, Any], experiment: str) -> list[str]:
    """[the experiment that trained the run, `experiment`] without repetition."""
    own = (doc.get("config") or {}).get("experiment") or (doc.get("experiment") or {}).get("name")
    return list(dict.fromkeys(n for n in (own, experiment) if n))


def _latest_completed_dir(results_dir: Path, run_key: str) -> Path | None:
    records = results.completed_file_records(Path(results_dir), run_key)  # indexed: no scan of the store per run
    if not records:
        return None
    return Path(max(records, key=lambda r: str(r.get("stop_time") or ""))["path"])


