"""Run records -> pandas, from MongoDB or a Sacred file store (or both): what the analysis and the launcher read.

A store is a file-store folder (str/Path), a MongoDB URL ("mongodb://..."), a pymongo Database, or a list of these
(read together; an attempt recorded in two of them, e.g. MongoDB and its file copy, counts once, in its most final
state). Every attempt of a run is a record; records of the same experiment share `run_key`. `load_runs` keeps, per
run_key, the latest COMPLETED attempt (else the latest attempt), so preempted-and-resumed runs count once.

Records are read from outside (a shared database, a folder another version or another user wrote): this module
is the one safe reader every command uses. A record that is damaged, foreign (another project's document in a
shared database), of an older version or half-written is skipped with one warning line on stderr that names it
(once per process, `skipped_records()` lists them) and the others are read on; a record's files are read only
inside its own folder (no symbolic links, nothing bigger than MAX_FILE_BYTES, no FIFO that would block), and
every field a reader uses has the type it expects (`check_record`).

Only pandas and (for MongoDB, lazily) pymongo are imported: no Sacred, no torch.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import numbers
import os
import re
import sys
import unicodedata
import weakref
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from pcl.fsio import UnreadableFile, read_ahead, read_regular

try:  # a JSON parser about 4x faster than the standard one: a store's metrics files are most of what is read
    import orjson
except ImportError:  # e.g. a machine with torch only: the standard parser, the same results
    orjson = None

COMPLETED = "COMPLETED"
PREEMPTED = "PREEMPTED"
FINAL_STATUSES = ("COMPLETED", "FAILED", "PREEMPTED", "INTERRUPTED", "TIMED_OUT")
#: a run stopped before its end (preempted, a Ctrl-C, timed out): its last epoch's checkpoint stays and the next
#: launch resumes it (status, the dry run and the tables all say so, none of them "failed")
RESUMABLE_STATUSES = ("PREEMPTED", "INTERRUPTED", "TIMED_OUT")
#: run-config keys that get their own column (besides config.*)
CONFIG_COLUMNS = ("experiment", "label", "dataset", "backbone", "method", "seed", "peers", "epochs")
#: what a reader of records uses of a run besides its config and info: these fields whole, and of Sacred's meta, host
#: and experiment one key each (the rest, the command line's options, the OS and ENV, the archived sources, and the
#: captured output, no reader uses). One definition for both stores: a file record picks these from run.json
#: (_picked) and MongoDB is asked for exactly these (_STAGE): the server sends less, a record holds less memory
RUN_FIELDS = ("status", "result", "start_time", "stop_time", "heartbeat", "fail_trace", "meta.attempt_id",
              "host.hostname", "experiment.name")


def _stage(fields: Sequence[str]) -> dict[str, Any]:
    """`fields` as the computed fields of an aggregation $project, the same as _picked: a server copies no document
    for them, where a find projection made the test server (SecantusDB) deep-copy each one (13 s of its CPU against
    18-25 s for 31,507 runs); mongod does the same work either way."""
    stage: dict[str, Any] = {}
    for field in fields:
        head, _, key = field.partition(".")
        stage[head] = {"$cond": [{"$eq": [{"$type": f"${head}"}, "object"]}, {key: f"${field}"}, f"${head}"]} \
            if key else f"${head}"
    return stage


_STAGE = {"$project": _stage(("config", "info", *RUN_FIELDS))}
#: the fields of a record's mappings and of RUN_FIELDS that a query may name (iter_records)
_WHOLE_FIELDS = ("config", "info", *(f for f in RUN_FIELDS if "." not in f))

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


#: seconds between the driver's background checks of a server that answers (pymongo's default is 10)
HEARTBEAT_S = 600


def client_options(timeout_s: float, url: str = "", **more: Any) -> dict[str, Any]:
    """pymongo.MongoClient options of every client of the suite (with `more`), less those the URL `url` sets: pymongo
    lets a keyword override the URL, and a user's `?serverSelectionTimeoutMS=300` was ignored for our 3 s.

    A server that does not answer fails the command
    within `timeout_s` (server selection and connecting), and a server busy answering a long read is not dropped.
    pymongo checks each server every heartbeat and, when a check gets no answer within the connect timeout, marks
    it unknown and cancels every operation in progress on it: a single-threaded server (SecantusDB) reading
    31,507 records for 26 s answered no check, and status, the dry run and make_tables of 30,000 runs failed with
    `_OperationCancelled`. An operation that fails still makes the driver check the server at once.

    A document another client wrote that Python cannot decode (a date beyond year 9999, text that is not UTF-8)
    would end the whole read: such a date comes as bson's DatetimeMS, which check_record refuses (the record is
    skipped and named), and such text with U+FFFD in place of the bad bytes."""
    import warnings

    from pymongo.errors import InvalidURI
    from pymongo.uri_parser import split_options

    options = {"serverSelectionTimeoutMS": int(timeout_s * 1000), "connectTimeoutMS": int(timeout_s * 1000),
               "heartbeatFrequencyMS": HEARTBEAT_S * 1000, "datetime_conversion": "DATETIME_AUTO",
               "unicode_decode_error_handler": "replace", **more}
    # the URL's options as pymongo reads them (the text after the first "?"): a value it ignores with a warning
    # (`=`, `=3s`) keeps the suite's default; a query it refuses (mixed "&" and ";") is MongoClient's to refuse
    query = url.partition("?")[2]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            given = {key.lower() for key in split_options(query, validate=True, warn=True)} if query else set()
    except (InvalidURI, ValueError):
        given = set()
    return {key: value for key, value in options.items() if key.lower() not in given}


def connect(url: str, db_name: str | None = None, timeout_s: float = 3.0):
    """A pymongo Database for `url` (db_name, else its path's database percent-decoded as the writers read it,
    else "pcl"), failing within seconds."""
    import pymongo

    from pcl.secrets import url_database

    client = pymongo.MongoClient(url, **client_options(timeout_s, url))
    db = client[db_name or url_database(url) or "pcl"]
    # weakly held (a database no longer used is freed with its client's threads); the entry goes with it
    _OPENED[id(db)] = (weakref.ref(db), (url, db_name, timeout_s))
    weakref.finalize(db, _OPENED.pop, id(db), None)
    return db


#: id(Database) -> (a weak reference to it, connect's arguments) of each database `connect` opened: what `reopen`
#: needs (the reference tells a live database from another object that got the same id)
_OPENED: dict[int, tuple[Any, tuple[str, str | None, float]]] = {}


def reopenable(db: Any) -> bool:
    """Whether `reopen` can open `db` again (it was opened by `connect`, from a URL)."""
    opened = _OPENED.get(id(db))
    return opened is not None and opened[0]() is db


def reopen(db: Any) -> Any:
    """A new connection to the same database as `db` (reopenable), for a forked process: a MongoDB client must not
    be used across fork (PyMongo), so a child opens its own."""
    if not reopenable(db):
        raise ValueError(f"database {getattr(db, 'name', db)!r} was not opened by pcl.results.connect")
    return connect(*_OPENED[id(db)][1])


def _source_name(kind: str, where: Any) -> str:
    return f"mongo:{where.name}" if kind == "mongo" else f"file:{where}"


# ---- the boundary: files of a record, skipped records ---------------------------------------------------------
#: the largest file of a record that is read (a record this suite writes is a few MB at most)
MAX_FILE_BYTES = 256 << 20
#: Sacred's statuses and the suite's older PREEMPTED
KNOWN_STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED", "TIMED_OUT", "PREEMPTED")
_SKIPPED: dict[str, str] = {}


class RecordError(ValueError):
    """A record, or a file of one, that cannot be used: damaged, foreign, of an older version or half-written."""


class StoreError(RuntimeError):
    """A MongoDB store that failed while it was read (the server gone, refusing or cancelling the read): one line,
    password removed, saying what to do. Nothing partial is returned: a command that reads records stops."""


def _mongo_failed(db: Any, err: BaseException, what: str) -> StoreError:
    from pcl.secrets import redact_url

    opened = _OPENED.get(id(db))
    if opened is not None:
        where = redact_url(opened[1][0])
    else:  # a client of another layer (the tracking store): its hosts, never its credentials
        try:
            hosts = ",".join(f"{h}:{p}" for h, p in db.client.topology_description.server_descriptions())
        except Exception:  # noqa: BLE001 - not a pymongo client: its name is all there is
            hosts = ""
        where = f"mongodb://{hosts}/{db.name}" if hosts else f"database {getattr(db, 'name', db)!r}"
    reason = error_reason(err)
    if getattr(err, "code", None) in (13, 18):  # Unauthorized, AuthenticationFailed
        todo = "check the user, the password and authSource in the URL"
    elif type(err).__module__.startswith("bson"):
        todo = "a document of its runs or metrics cannot be decoded; repair or remove it"
    else:
        todo = "check that the server runs and answers"
    return StoreError(f"cannot read MongoDB {where} ({what}): {type(err).__name__}: {reason}. Nothing was "
                      f"changed; {todo}, then run the command again")


def error_reason(err: BaseException) -> str:
    """A driver error's message as one line, password removed, without pymongo's timeouts and topology dump."""
    from pcl.secrets import redact

    return one_line(redact(err), 200).split(" (configured timeouts")[0].split(", Timeout:")[0]


def _reading(db: Any, collection: str, query: dict[str, Any], stage: dict[str, Any], what: str) -> Iterator[Any]:
    """The documents of `collection` matching `query`, with only the fields of the $project `stage` (computed
    fields, see _stage); a failure of the server, or a reply that cannot be decoded, while they come is a
    StoreError."""
    import bson.errors
    import pymongo.errors

    try:  # aggregate() asks the server at once (find() only when read): inside the try
        yield from db[collection].aggregate([{"$match": query}, stage])
    except (pymongo.errors.PyMongoError, bson.errors.BSONError) as err:
        raise _mongo_failed(db, err, what) from None


def one_line(value: Any, limit: int = 300) -> str:
    """Text from a record as one printable line for a terminal (no control characters or escape codes)."""
    text = value if isinstance(value, str) else str(value)
    text = " ".join("".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") else ch
                            for ch in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _skip_reason(err: BaseException) -> Any:
    """Why a record is skipped, for its line: a damage the checks name (RecordError, an OSError reading it) as it
    is; any other error, which no check of this version foresaw, by its type, asking for a report."""
    if isinstance(err, (RecordError, OSError)):
        return err
    return f"{type(err).__name__}: {err} (a damage this version does not check for by name; please report it)"


def skip_record(where: Any, reason: Any, what: str = "run record") -> None:
    """Name a skipped record (or ledger entry, `what`): one warning line on stderr, once per process."""
    where, reason = one_line(where), one_line(reason)
    if where not in _SKIPPED:
        _SKIPPED[where] = reason
        sys.stderr.write(f"warning: skipping {what} {where}: {reason}\n")


def skipped_records() -> dict[str, str]:
    """Every record skipped so far in this process: where -> why."""
    return dict(_SKIPPED)


def safe_path(folder: Path, relative: Any) -> Path:
    """folder/relative when `relative` is a relative path that stays inside `folder` with no symbolic link on
    the way (the file itself need not exist); RecordError otherwise (absolute, `..`, a link, not a string)."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise RecordError(f"file name {relative!r} is not a relative path")
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if (relative.startswith(("/", "\\", "~")) or PureWindowsPath(relative).drive or ".." in parts
            or not parts):
        raise RecordError(f"file name {relative!r} leaves {folder}")
    path = Path(folder)
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise RecordError(f"{path} is a symbolic link (a record's files are read only inside its folder)")
    return path


#: a file name without a folder, a drive or anything a shell or Windows reads specially
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def read_file(folder: Path, relative: Any, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """The bytes of a regular file inside `folder` (safe_path), None when it does not exist; RecordError for a
    link, a FIFO/device/folder, a file bigger than `limit` or one that cannot be read."""
    if isinstance(relative, str) and _PLAIN_NAME.fullmatch(relative) and relative not in (".", ".."):
        path: Any = os.path.join(folder, relative)  # one name: O_NOFOLLOW below refuses a link (a store's hot path)
    else:
        path = safe_path(folder, relative)
    try:
        return read_regular(path, limit)
    except UnreadableFile as err:
        raise RecordError(str(err)) from None


def read_json(folder: Path, relative: str, limit: int = MAX_FILE_BYTES) -> Any:
    """A JSON file inside `folder` (read_file), None when absent; RecordError when it is not JSON."""
    data = read_file(folder, relative, limit)
    return None if data is None else _parse_json(data, relative)


def _parse_json(data: bytes, name: str) -> Any:
    """JSON as the standard parser reads it (NaN and Infinity included), except that an integer beyond 64 bits
    is a float: orjson (about 4x faster, strict RFC 8259) reads it so, and what orjson refuses is read by the
    standard parser with the same rule."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data, parse_int=_int64_or_float)
    except (ValueError, RecursionError) as err:  # half-written, damaged, not UTF-8, nested beyond reason
        raise RecordError(f"{name} is not JSON ({type(err).__name__}: {str(err)[:100]})") from None


def _int64_or_float(text: str) -> int | float:
    if len(text.lstrip("-")) > 20:  # beyond 64 bits whatever its digits: never int(), whose digit limit
        return float(text)          # (PYTHONINTMAXSTRDIGITS) would decide whether the file is read
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 64) else float(text)


def _number(value: Any) -> bool:
    kind = type(value)  # float and int first: the ABC check is slow, and a store holds millions of numbers
    return kind is float or kind is int or (kind is not bool and isinstance(value, numbers.Real))


def _int(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is not bool and isinstance(value, numbers.Integral))


def _check(ok: bool, what: str, value: Any, want: str) -> None:
    if not ok:
        shown = type(value).__name__ if isinstance(value, (dict, list)) else one_line(value, 60)
        raise RecordError(f"{what} is {shown}, not {want}")


def _dict_or_empty(record: dict[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key)
    if value is None:
        return {}
    _check(isinstance(value, dict), key, value, "a mapping")
    return value


#: a record's times: each read as naive UTC (utc_time) so that any two compare
TIME_FIELDS = ("start_time", "stop_time", "heartbeat")
#: a result that is an error rate (top-1/top-5, of any head): a percentage
_ERR_KEY = re.compile(r"_err(/|$)")


def utc_time(value: Any) -> Any:
    """A record's time as naive UTC, the form Sacred writes: a time with an offset converted to UTC and the offset
    dropped (mixed with naive times it would make every sort and comparison of times fail), a naive one as it is;
    None for a time that is not one or is out of range once in UTC (e.g. year 1 at +01:00)."""
    if value is None:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:  # another spelling of a time: pandas reads it, with its offset if any
        stamp = pd.to_datetime(value, errors="coerce", utc=True)
        if pd.isna(stamp):
            return None
        try:
            stamp = stamp.to_pydatetime()
        except (OverflowError, ValueError):  # pandas reads "-1" as year -1, which Python's datetime has not
            return None
    if getattr(stamp, "tzinfo", None) is None:  # as it is; a decimal comma (ISO 8601 allows it) as a point
        return stamp.isoformat() if isinstance(value, str) and "," in value else value
    try:
        naive = stamp.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except (OverflowError, ValueError):
        return None
    return naive.isoformat() if isinstance(value, str) else naive


def _plausible(key: str, value: Any) -> bool:
    """A result value a run can have: NaN (a diverged run) or finite, and an error rate within [0, 100]."""
    number = _float(value)
    return number != number or (math.isfinite(number) and (0 <= number <= 100 or not _ERR_KEY.search(key)))


def _float(value: Any) -> float:
    """A number as a float; inf for an integer beyond a float's range (`math.isfinite` raises for one)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


#: how deep a record's mappings and lists may nest (this suite's nest 4 deep; Python's own recursion, e.g. in
#: json.dumps, ends at about 1,000, where a JSON parser reads 1,024)
MAX_NESTING = 64
_CONTAINERS = frozenset({dict, list})  # what JSON and BSON decode to


def _nesting_within(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether `value`'s dicts and lists nest at most `limit` deep: level by level (no recursion of our own), a
    container's children's types looked at in C first (~18 us for a record of ~150 values)."""
    level = [value]
    for _ in range(limit):
        inner: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            if not _CONTAINERS.isdisjoint(map(type, children)):
                inner.extend([c for c in children if type(c) in _CONTAINERS])
        if not inner:
            return True
        level = inner
    return False


def check_record(record: Any) -> dict[str, Any]:
    """The record with every field a reader uses of the type it expects (config, info, meta, host, experiment,
    info.environment mappings; run_key a string; the names of CONFIG_COLUMNS strings; seeds and counts integers;
    the result a mapping of numbers; times strings or datetimes; nothing nested beyond MAX_NESTING); RecordError
    naming the first field that is not."""
    _check(isinstance(record, dict), "the record", record, "a mapping")
    config = record.get("config")
    _check(isinstance(config, dict), "config", config, "a mapping")
    if not _nesting_within(record, MAX_NESTING):
        raise RecordError(f"it nests mappings or lists more than {MAX_NESTING} deep (a record of this suite nests "
                          "a few)")
    for key in ("info", "meta", "host", "experiment"):
        record[key] = _dict_or_empty(record, key)
    info, meta = record["info"], record["meta"]
    _check(info.get("environment") is None or isinstance(info["environment"], dict), "info.environment",
           info.get("environment"), "a mapping")
    status = record.get("status")
    _check(isinstance(status, str) and status in KNOWN_STATUSES, "status", status, "a run status")
    run_key = config.get("run_key") if config.get("run_key") is not None else info.get("run_key")
    if run_key is None:
        raise RecordError("no run_key: not a record of this suite")
    _check(isinstance(run_key, str) and run_key != "", "config.run_key", run_key, "a string")
    for key in ("experiment", "label", "dataset", "backbone", "method"):
        _check(config.get(key) is None or isinstance(config[key], str), f"config.{key}", config.get(key),
               "a string")
    for key in ("seed", "peers", "epochs"):
        _check(config.get(key) is None or _int(config[key]), f"config.{key}", config.get(key), "an integer")
    _check(meta.get("attempt_id") is None or isinstance(meta["attempt_id"], str), "meta.attempt_id",
           meta.get("attempt_id"), "a string")
    _check(info.get("attempt_id") is None or isinstance(info["attempt_id"], str), "info.attempt_id",
           info.get("attempt_id"), "a string")
    run_id = record.get("run_id")
    _check(run_id is None or (isinstance(run_id, (str, int)) and not isinstance(run_id, bool))
           or type(run_id).__name__ == "ObjectId", "the run id", run_id, "a string, an integer or an ObjectId")
    for key in TIME_FIELDS:
        value = record.get(key)
        _check(value is None or isinstance(value, str) or hasattr(value, "isoformat"), key, value, "a time")
        record[key] = utc_time(value)
    result = record.get("result")
    _check(result is None or isinstance(result, dict), "result", result, "a mapping of numbers")
    for key, value in (result or {}).items():
        if not (value is None or _number(value)):  # the message is made only for a bad value
            _check(False, f"result[{one_line(key, 60)}]", value, "a number")
        # a float in [0, 100] first: no look at its key (a store of 30,000 runs holds 775,000 results)
        elif value is not None and not (type(value) is float and 0 <= value <= 100) and not _plausible(str(key), value):
            _check(False, f"result[{one_line(key, 60)}]", value,
                   "an error rate in [0, 100] or NaN" if _ERR_KEY.search(str(key)) else "a finite number or NaN")
    _check(info.get("deployed_head") is None or isinstance(info["deployed_head"], str), "info.deployed_head",
           info.get("deployed_head"), "a string")
    _check(info.get("num_classes") is None or _int(info["num_classes"]), "info.num_classes",
           info.get("num_classes"), "an integer")
    counts = info.get("parameter_counts")
    _check(counts is None or isinstance(counts, dict), "info.parameter_counts", counts, "a mapping")
    for key, value in (counts or {}).items():
        if not (value is None or (_number(value) and 0 <= _float(value) < math.inf)):
            _check(False, f"info.parameter_counts[{one_line(key, 60)}]", value, "a count (a number >= 0)")
    for key in ("experiments", "heads"):
        value = info.get(key)
        _check(value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
               f"info.{key}", value, "a list of strings")
    return record


def run_number(name: str) -> int | None:
    """The run id a folder name gives (Sacred numbers its run folders 1, 2, ...), None for any other name: only
    ASCII digits (`str.isdigit` is also true for "²" or "٣", which are not run folders of any store)."""
    return int(name) if name.isascii() and name.isdigit() else None


def _file_run_dirs(root: Path) -> list[Path]:
    """The numbered run folders of a file store (a link in place of one is named and skipped)."""
    if not root.is_dir():
        return []
    found = []
    with os.scandir(root) as entries:  # the folder's listing says link or folder: no call per entry
        for entry in entries:
            if run_number(entry.name) is not None:
                if entry.is_symlink():
                    skip_record(root / entry.name, "a symbolic link, not a run folder of this store")
                elif entry.is_dir(follow_symlinks=False):
                    found.append(entry.name)
    return [root / name for name in sorted(found, key=int)]


def run_folders(root: Path) -> list[Path]:
    """The numbered run folders of a file store, in order (a link in place of one is named and skipped)."""
    return _file_run_dirs(Path(root))


def read_run_files(run_dir: Path, with_info: bool = True) -> tuple[dict, dict, dict] | None:
    """(run.json, config.json, info.json or {}) of a file-store folder as mappings, read inside it (read_json);
    None while Sacred is still creating it (no run.json or config.json yet); RecordError otherwise."""
    run_bytes, config_bytes = read_file(run_dir, "run.json"), read_file(run_dir, "config.json")
    if run_bytes is None or config_bytes is None:
        return None  # a run being created right now (Sacred makes the folder first)
    run, config = _parse_json(run_bytes, "run.json"), _parse_json(config_bytes, "config.json")
    _check(isinstance(run, dict), "run.json", run, "a mapping")
    _check(isinstance(config, dict), "config.json", config, "a mapping")
    info = read_json(run_dir, "info.json") if with_info else None
    _check(info is None or isinstance(info, dict), "info.json", info, "a mapping")
    return run, config, info or {}


def check_metrics(metrics: Any) -> dict[str, dict[str, Any]]:
    """A metrics.json mapping (name -> {steps, values, timestamps}) with every series checked (RecordError)."""
    _check(isinstance(metrics, dict), "metrics.json", metrics, "a mapping")
    for name, series in metrics.items():
        _checked_series(name, series)
        timestamps = series.get("timestamps", [])
        if not isinstance(timestamps, list):
            _check(False, f"timestamps of {one_line(name, 60)}", timestamps, "a list")
    return metrics


def _picked(run: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """`fields` of run.json as MongoDB gives them (_stage): `parent.key` keeps only that key of a mapping (an empty
    one when it lacks it) and any other parent as it is (check_record refuses one that is not a mapping)."""
    out: dict[str, Any] = {}
    for field in fields:
        head, _, key = field.partition(".")
        if head not in run:
            continue
        value = run[head]
        if key and isinstance(value, dict):
            value = {key: value[key]} if key in value else {}
        out[head] = value
    return out


def read_file_record(run_dir: Path, with_info: bool = True) -> dict[str, Any] | None:
    """The record of one file-store folder, checked (check_record); None while Sacred is still creating it (no
    run.json or config.json yet); RecordError when it is damaged, foreign or of another shape."""
    files = read_run_files(run_dir, with_info)
    if files is None:
        return None
    run, config, info = files
    record = {"run_id": run_dir.name, **_picked(run, RUN_FIELDS), "config": config, "info": info,
              "path": str(run_dir)}
    return check_record(record)


#: run folder -> (its files' (mtime_ns, size), its checked record): a command that reads the store several times
#: (tables, figures, a relaunch asking for each run_key) parses each folder once; a changed file is read again
_RECORD_CACHE: dict[tuple[str, bool], tuple[tuple, dict[str, Any] | None]] = {}


def _stamp(run_dir: Path) -> tuple | None:
    stamp = []
    folder = os.fspath(run_dir)
    for name in ("run.json", "config.json", "info.json"):
        try:
            st = os.lstat(os.path.join(folder, name))
        except FileNotFoundError:
            stamp.append(None)
            continue
        except OSError:
            return None
        stamp.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamp)


def file_record(run_dir: Path, with_info: bool = True) -> dict[str, Any] | None:
    """read_file_record, or None (named once) when the record cannot be used. Cached per folder until one of its
    files changes; each call returns its own top-level dict (callers add `source`)."""
    key = (str(run_dir), with_info)
    stamp = _stamp(run_dir)
    cached = _RECORD_CACHE.get(key)
    if stamp is not None and cached is not None and cached[0] == stamp:
        return None if cached[1] is None else dict(cached[1])
    try:
        record = read_file_record(run_dir, with_info)
    except Exception as err:  # noqa: BLE001 - whatever one record raises: that record is passed over, not the store
        skip_record(run_dir, _skip_reason(err))
        record = None
    if stamp is not None and (record is not None or stamp[0] is not None):  # never cache a folder being created
        _RECORD_CACHE[key] = (stamp, record)
    return None if record is None else dict(record)


_file_record = file_record


#: file store folder -> (run folders indexed, run_key -> its run folders): one scan per command; later lookups only
#: read the folders created since (a relaunch or a SLURM job asks once per run_key)
_INDEX: dict[str, tuple[set[str], dict[str, list[Path]]]] = {}


def file_folders_of(root: Path, run_key: str) -> list[Path]:
    """The run folders of a file store whose record has `run_key` (checked records; indexed per process)."""
    seen, by_key = _INDEX.setdefault(str(Path(root).resolve()), (set(), {}))
    for run_dir in _file_run_dirs(Path(root)):
        if run_dir.name in seen:
            continue
        record = file_record(run_dir)
        if record is None and not all(os.path.lexists(run_dir / f) for f in ("run.json", "config.json")):
            continue  # being created (Sacred writes the folder first): look again next time
        seen.add(run_dir.name)  # damaged folders too: named once, never indexed
        key = None if record is None else record["config"].get("run_key")
        if isinstance(key, str):
            by_key.setdefault(key, []).append(run_dir)
    return list(by_key.get(run_key, ()))


def completed_file_records(root: Path, run_key: str) -> list[dict[str, Any]]:
    """The COMPLETED records of `run_key` in a file store (each folder re-checked: a record may have changed)."""
    out = []
    for run_dir in file_folders_of(root, run_key):
        record = file_record(run_dir)
        if record is not None and record["status"] == COMPLETED and record["config"].get("run_key") == run_key:
            record["source"] = _source_name("file", Path(root))
            out.append(record)
    return out


def _mongo_records(db: Any, query: dict[str, Any] | None) -> Iterator[dict]:
    """The documents of `runs` matching `query` that are records of this suite, checked; another project's
    documents (no string config.run_key) are passed over silently; damaged ones of ours are named once."""
    for doc in _reading(db, "runs", query or {}, _STAGE, "its runs"):
        config = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(config, dict) or config.get("run_key") is None:
            continue  # a shared database: another project's (or a notebook's) document, not ours
        doc["run_id"] = doc.pop("_id", None)
        try:
            checked = check_record(doc)
        except Exception as err:  # noqa: BLE001 - whatever one record raises: that record is passed over
            skip_record(f"mongo:{db.name} run {doc['run_id']}", _skip_reason(err))
            continue
        yield checked


def iter_records(store: StoreLike, query: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every record as a plain dict (config, info, result, status, times, meta, host, source, run_id).

    `query` is a MongoDB filter on top-level dotted fields of a record (e.g. {"config.run_key": k, "status":
    "COMPLETED"}): config.*, info.* and RUN_FIELDS, ValueError for another (MongoDB would match it in the whole
    document, a file store in the record); on a file store only equality filters are applied.
    """
    for key in query or {}:
        if not (str(key).split(".")[0] in _WHOLE_FIELDS or key in RUN_FIELDS):
            raise ValueError(f"iter_records: query key {key!r} is not a field of a record; allowed: config.*, info.*, "
                             f"{', '.join(RUN_FIELDS)} (results.RUN_FIELDS)")
    for kind, where in _sources(store):
        if kind == "mongo":
            for doc in _mongo_records(where, query):
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
        "start_time": record.get("start_time"),  # parsed as a column in load_runs (time_column)
        "stop_time": record.get("stop_time"),
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


def time_column(values: pd.Series) -> pd.Series:
    """Record times (ISO strings, datetimes; anything else NaT) as timestamps, parsed as one column: one at a time,
    pandas guesses each string's format (28 s for the two times of 31,507 records)."""
    try:
        return pd.to_datetime(values, errors="coerce", format="ISO8601")
    except (TypeError, ValueError):  # e.g. aware and naive times mixed: one at a time
        return pd.Series([pd.to_datetime(v, errors="coerce") for v in values], index=values.index, dtype=object)


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
    for column in ("start_time", "stop_time"):
        if column in frame:
            frame[column] = time_column(frame[column])
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
        if kind == "mongo":  # not distinct(): it would count each element of a list-valued run_key; whole
            # records, checked as on a file store (a record damaged outside run_key and status is not completed)
            keys.update(r["config"]["run_key"] for r in _mongo_records(where, {"status": COMPLETED}))
        else:
            for run_dir in _file_run_dirs(where):
                record = _file_record(run_dir)  # checked whole: a record the tables skip is not completed
                if record is not None and record["status"] == COMPLETED and record["config"].get("run_key"):
                    keys.add(record["config"]["run_key"])
    return keys


def find_completed(store: StoreLike, run_key: str) -> dict[str, Any] | None:
    """The latest COMPLETED record of `run_key` (a plain dict, as iter_records yields), or None."""
    records: list[dict[str, Any]] = []
    for kind, where in _sources(store):
        if kind == "mongo":
            for doc in _mongo_records(where, {"config.run_key": run_key, "status": COMPLETED}):
                if doc["config"]["run_key"] == run_key:  # a list holding run_key matches the query too
                    doc["source"], doc["_db"] = _source_name(kind, where), where
                    records.append(doc)
        else:
            records += completed_file_records(where, run_key)
    if not records:
        return None
    return max(records, key=lambda r: _finality(r)[1])


def has_completed(store: StoreLike, run_key: str) -> bool:
    """Whether `run_key` has a COMPLETED record that passes check_record (the whole record, on every store
    alike): what a launcher and a run ask before training."""
    for kind, where in _sources(store):
        if kind == "mongo":  # a list holding run_key matches the query too: only a string run_key counts
            if any(r["config"]["run_key"] == run_key for r in _mongo_records(
                    where, {"config.run_key": run_key, "status": COMPLETED})):
                return True
        elif completed_file_records(where, run_key):
            return True
    return False


def load_metrics(store: StoreLike, attempt_ids: Sequence[str] | None = None,
                 names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-epoch metrics in long form: attempt_id, run_key, run_id, source, name, step, value.

    Only the metrics in `names` (default: all) of the attempts in `attempt_ids` (default: all) are kept, built as
    columns (one array per series, not a Python object per point): memory follows what is asked for."""
    wanted = set(attempt_ids) if attempt_ids is not None else None
    name_set = set(names) if names is not None else None
    # per point only integers: the attempt's row (its ids and source: categorical columns at the end), the name's
    # code, the step and the value -- no Python object per point, and no copy of a string per point
    attempts: list[tuple[Any, Any, Any, Any]] = []
    name_codes: dict[str, int] = {}
    attempt_parts: list[Any] = []
    name_parts: list[Any] = []
    steps_parts: list[Any] = []
    value_parts: list[Any] = []
    records = [r for r in unique_attempts(list(iter_records(store)))
               if wanted is None or (r.get("meta") or {}).get("attempt_id") in wanted]
    read_ahead_metrics(records)
    for record in records:
        attempt = (record.get("meta") or {}).get("attempt_id")
        row = len(attempts)
        attempts.append((attempt, (record.get("config") or {}).get("run_key"), record["run_id"], record["source"]))
        for name, steps, values in _record_metrics(record, name_set):
            n = len(steps)
            attempt_parts.append(np.full(n, row, dtype=np.int32))
            name_parts.append(np.full(n, name_codes.setdefault(name, len(name_codes)), dtype=np.int32))
            steps_parts.append(steps)  # int64 and float64 arrays (_checked_series)
            value_parts.append(values)
    if not steps_parts:
        return pd.DataFrame(columns=["attempt_id", "run_key", "run_id", "source", "name", "step", "value"])
    rows = np.concatenate(attempt_parts)
    del attempt_parts
    frame = pd.DataFrame(index=pd.RangeIndex(len(rows)))
    for i, column in enumerate(("attempt_id", "run_key", "run_id", "source")):
        values = pd.Series([a[i] for a in attempts], dtype=object)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        frame[column] = pd.Categorical.from_codes(codes[rows], categories=pd.Index(uniques, dtype=object))
    frame["name"] = pd.Categorical.from_codes(np.concatenate(name_parts),
                                              categories=pd.Index(list(name_codes), dtype=object))
    frame["step"] = np.concatenate(steps_parts)
    frame["value"] = np.concatenate(value_parts)
    return frame


def read_ahead_metrics(records: Iterable[Mapping[str, Any]]) -> None:
    """The metrics files of file-store records about to be read, in that order, asked of the kernel in the
    background (pcl.fsio.read_ahead): read one by one from a cold disk they wait for it one at a time."""
    read_ahead((os.path.join(r["path"], "metrics.json") for r in records
                if str(r.get("source") or "").startswith("file:") and isinstance(r.get("path"), str)),
               MAX_FILE_BYTES)


def _record_metrics(record: dict[str, Any], names: set[str] | None, prefix: str | tuple[str, ...] = "",
                    documents: list[Any] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, steps, values) of each metric series of one record named in `names` (None: every one) and starting
    with `prefix` (or one of several), checked (a damaged series is skipped with its line); `documents`: a
    MongoDB record's metric documents fetched already (metric_documents)."""
    source = str(record.get("source") or "")
    if source.startswith("file:"):
        where = Path(record["path"])
        try:
            metrics = read_json(where, "metrics.json")
            _check(metrics is None or isinstance(metrics, dict), "metrics.json", metrics, "a mapping")
        except RecordError as err:
            skip_record(where / "metrics.json", err)
            return
        series_of = list((metrics or {}).items())
        where_text = str(where / "metrics.json")
    else:
        if documents is None:
            documents = _metric_documents(record, names, prefix)
        series_of = [(doc.get("name"), doc) for doc in documents if isinstance(doc, dict)]
        where_text = f"{source} run {record.get('run_id')} metrics"
    for name, series in series_of:
        if not _asked(name, names, prefix):
            continue
        try:
            yield (name, *_checked_series(name, series))
        except RecordError as err:
            skip_record(f"{where_text} {one_line(name, 80)}", err)


def _asked(name: Any, names: set[str] | None, prefix: str | tuple[str, ...]) -> bool:
    """Whether a reader asked for the series `name`: in `names` (None: any) and starting with `prefix` (or one of
    several; "": any). A name that is not a string is in no `names` (a MongoDB document whose name is a list holding
    an asked name matches the query's $in; `in` on a set would raise for it)."""
    return ((names is None or (isinstance(name, str) and name in names))
            and (not prefix or str(name).startswith(prefix)))


#: the fields of a metric document a reader uses (not its timestamps: a datetime per point to decode)
_SERIES_STAGE = {"$project": {"_id": 0, **_stage(("run_id", "name", "steps", "values"))}}


def _series_query(run_id: Any, names: set[str] | None, prefix: str | tuple[str, ...]) -> dict[str, Any]:
    """The MongoDB filter of the metric documents of a run: the series in `names`, else those whose names start
    with `prefix` (or one of several), else all."""
    query: dict[str, Any] = {"run_id": run_id}
    if names is not None:
        query["name"] = {"$in": sorted(names)}
    elif prefix:
        prefixes = (prefix,) if isinstance(prefix, str) else prefix
        query["name"] = {"$regex": "^(?:" + "|".join(re.escape(p) for p in prefixes) + ")"}
    return query


def _metric_documents(record: dict[str, Any], names: set[str] | None, prefix: str | tuple[str, ...]
                      ) -> list[dict[str, Any]]:
    """A MongoDB record's metric documents (one per series), only the asked ones fetched."""
    db = record["_db"]  # a document whose run_id is a list holding this one (another project's) matches too: left
    return [doc for doc in _reading(db, "metrics", _series_query(record["run_id"], names, prefix), _SERIES_STAGE,
                                    "its metrics") if isinstance(doc, dict) and doc.get("run_id") == record["run_id"]]


_PLAIN_NUMBERS = {float, int, type(None)}


#: per-run curve queries in flight at once (threads): a remote server's round trips overlap
_IN_FLIGHT = 4


def metric_documents(records: Sequence[dict[str, Any]], prefix: str | tuple[str, ...] = "",
                     names: Callable[[int], Iterable[str]] | None = None) -> dict[int, list]:
    """The metric documents of many MongoDB records (their series whose names start with `prefix`; with `names`,
    only the series named by names(i) for records[i]): {index in records: documents}; file-store records are left
    out (their metrics file is read by _record_metrics).

    One query per run, for exactly its series, _IN_FLIGHT at a time: the (run_id, name) index serves one run_id and
    a short list of names at once. A list of runs made the test server (SecantusDB) read every series of each run
    (30 of a PCL run) and match the names in Python, 2.5x its CPU; the round trips a query per run costs a remote
    mongod overlap."""
    from concurrent.futures import ThreadPoolExecutor

    asked: list[tuple[int, dict[str, Any], set[str] | None]] = []
    out: dict[int, list] = {}
    for i, record in enumerate(records):
        if str(record.get("source") or "").startswith("file:") or record.get("_db") is None:
            continue
        wanted = None if names is None else set(names(i))
        if wanted is not None and not wanted:
            out[i] = []
        else:
            asked.append((i, record, wanted))
    with ThreadPoolExecutor(max_workers=_IN_FLIGHT) as pool:
        for (i, _, _), documents in zip(asked, pool.map(lambda a: _metric_documents(a[1], a[2], prefix), asked)):
            out[i] = documents
    return out


def _checked_series(name: Any, series: Any) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric series as arrays: integer steps (int64) and numeric values (float64, None ->
    NaN) of equal length; RecordError otherwise."""
    _check(isinstance(name, str), "the metric name", name, "a string")
    _check(isinstance(series, dict), "the series", series, "a mapping")
    steps, values = series.get("steps", []), series.get("values", [])
    # the types of a list at C speed first (a store holds millions of points); element by element otherwise
    _check(isinstance(steps, list) and (set(map(type, steps)) <= {int} or all(_int(s) for s in steps)), "steps",
           steps, "a list of integers")
    _check(isinstance(values, list) and (set(map(type, values)) <= _PLAIN_NUMBERS
                                         or all(v is None or _number(v) for v in values)), "values", values,
           "a list of numbers")
    _check(len(steps) == len(values), "steps", len(steps), f"as many as the values ({len(values)})")
    try:  # numpy reads None as NaN in a float array
        steps_array, values_array = np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64)
    except (OverflowError, TypeError, ValueError) as err:  # a step beyond int64, a value beyond a float
        raise RecordError(f"the series {one_line(name, 60)} holds a number out of range ({err})") from None
    if _ERR_KEY.search(name) and not (np.isnan(values_array) | ((values_array >= 0) & (values_array <= 100))).all():
        raise RecordError(f"the series {one_line(name, 60)} holds an error rate outside [0, 100]")
    return steps_array, values_array


__all__ = ["StoreError", "client_options", "completed_run_keys", "connect", "dedupe_runs", "error_reason",
           "find_completed", "has_completed", "iter_records", "load_metrics", "load_runs", "read_ahead_metrics",
           "reopen", "reopenable", "run_number", "run_status", "unique_attempts", "utc_time"]
