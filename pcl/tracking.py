"""Experiment tracking: one training run = one Sacred run with a complete record that survives crashes.

Why this layer exists: a table of the paper is hundreds of GPU-hours split into runs that get preempted, requeued,
restarted by hand and sometimes lose their database. Every run therefore gets

* a stable `run_key`: the sha256 of the canonical JSON of its config WITHOUT infrastructure keys (paths, device,
  stores, force, labels...), so the same experiment has the same key on every machine, a COMPLETED key is skipped
  (unless `force`) and the analysis can de-duplicate attempts;
* a record per attempt: the full config, host, versions, GPU, determinism flags, parameter counts, per-epoch metrics
  of every head and loss term (Sacred's log_scalar), the final result as a flat dict of floats, the deployed head
  and the checkpoint paths. Records always go to a Sacred file store in `results_dir`; with a MongoDB URL they also
  go to MongoDB (the file copy is what keeps a run whose database disappears mid-run: `upload` sends it later);
* a clean stop on SIGTERM / SIGUSR2 (SLURM pre-timeout, submitit): the runner stops at the next step, the last
  epoch's checkpoint stays under checkpoint_root/run_key/, the run ends with status PREEMPTED, and the next start of
  the same run_key resumes from that checkpoint.

Checkpoints never go into MongoDB/GridFS. A MongoDB URL is never part of a run config, and every message that could
show it goes through `redact`. The core (models, methods, data, engine, runner) never imports this module.

Command line: `python -m pcl.tracking upload RESULTS_DIR [--mongo-url URL]` and `python -m pcl.tracking ping`.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import fcntl
import hashlib
import json
import math
import numbers
import os
import pickle
import re
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode

import torch
from sacred import Experiment
from sacred.observers import FileStorageObserver, MongoObserver
from sacred.serializer import flatten
from sacred.utils import SacredError, SacredInterrupt, apply_backspaces_and_linefeeds

import pcl
from pcl import results
from pcl.data import DATASETS, NUM_CLASSES
from pcl.engine import PRECISIONS, MetricsCallback, Recipe, TrainingInterrupted
from pcl.methods import METHODS, build_method, method_defaults
from pcl.models import BACKBONES


def _source_base_dir() -> Path:
    """Sacred records the sources of local modules under this folder: the checkout when pcl runs from one, else
    the pcl package itself (never a site-packages folder, whose every imported module would count as local)."""
    package = Path(pcl.__file__).resolve().parent
    return package.parent if (package.parent / "pyproject.toml").is_file() else package


REPO_ROOT = _source_base_dir()
MONGO_URL_ENV = "PCL_MONGO_URL"
DEFAULT_DB_NAME = "pcl"
MONGO_TIMEOUT_S = 2.5
KEY_SCHEMA = 1  # bump when the meaning of a config key changes: every run_key changes with it
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
FINAL_STATUSES = ("COMPLETED", "FAILED", "PREEMPTED", "INTERRUPTED", "TIMED_OUT")
FAILURE_DIR_NAME = "mongo_failed"
TEACHER_PATH_OPTION = "teacher_path"  # kd's option; resolved from `teacher_run_key` at run time

# ---- the run config ------------------------------------------------------------------------------------------
#: every key of a run config and its default; `options` is merged over the method's own defaults.
RUN_DEFAULTS: dict[str, Any] = {
    # what the experiment is (these make the run_key)
    "dataset": "cifar100",
    "backbone": "resnet32",
    "method": "pcl",
    "options": {},
    "peers": 3,
    "seed": 0,
    "epochs": 300,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "milestones": None,  # None: 150/225 of 300 (30/60 of 90 on ImageNet) scaled to `epochs`
    "gamma": 0.1,
    "precision": "fp32",
    "train_subset": None,
    "synthetic_classes": 10,
    "synthetic_train_size": 2048,
    "synthetic_test_size": 512,
    "teacher_run_key": None,  # two-stage KD: the teacher run whose deployed model the student distils from
    # how and where it runs (not part of the run_key)
    "data_root": None,
    "download": False,
    "device": "auto",
    "deterministic": False,
    "workers": 8,
    "checkpoint_root": "checkpoints",
    "force": False,
    "progress": False,
    "experiment": "",
    "label": "",
    "run_key": None,
}
#: keys of a run config that do not change what is computed, only where/how: excluded from the run_key.
INFRA_KEYS: frozenset[str] = frozenset({
    "data_root", "download", "device", "deterministic", "workers", "checkpoint_root", "force", "progress",
    "experiment", "label", "run_key"})
#: method options that are infrastructure (a file path resolved from `teacher_run_key`).
INFRA_OPTIONS: frozenset[str] = frozenset({TEACHER_PATH_OPTION})
#: store settings: given to the store, never written into a run config or record.
STORE_KEYS: frozenset[str] = frozenset({"results_dir", "mongo_url", "db_name"})
SYNTHETIC_KEYS = ("synthetic_classes", "synthetic_train_size", "synthetic_test_size")


class UserError(SacredError):
    """An error the user fixes (config, store): Sacred's command line prints its message without a traceback."""

    def __init__(self, message: str):
        super().__init__(message, print_traceback=False)


class ConfigError(UserError, ValueError):
    """A config value of the wrong type or out of range; raised before any training or record."""


class StoreUnavailable(UserError, RuntimeError):
    """The MongoDB store cannot be reached or used; raised before any training or record."""


class Preempted(SacredInterrupt):
    """Ends a Sacred run whose training was stopped by a signal: Sacred records the status PREEMPTED."""

    STATUS = "PREEMPTED"


def default_milestones(dataset: str, epochs: int) -> list[int]:
    """The paper's step schedule scaled to `epochs`: 150/225 of 300 on CIFAR, 30/60 of 90 on ImageNet [ours]."""
    if dataset == "imagenet":
        return list(Recipe.scaled_milestones(epochs, base_epochs=90, base=(30, 60)))
    return list(Recipe.scaled_milestones(epochs))


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config key {key!r}={value!r} is invalid: must be {allowed}")


def _check_int(key: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise _bad(key, value, f"an integer >= {minimum}" + (" or None" if allow_none else ""))
    return int(value)


def _check_float(key: str, value: Any, ok: Callable[[float], bool], allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise _bad(key, value, allowed)
    return float(value)


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, value, "True or False")
    return value


def _check_str(key: str, value: Any, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise _bad(key, value, "a string" + (" or None" if allow_none else ""))
    return value


def _check_choice(key: str, value: Any, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    if not isinstance(value, str) or value not in choices:
        raise _bad(key, value, f"one of {', '.join(choices)}")
    return value


def _check_option(method: str, key: str, value: Any, default: Any) -> Any:
    """An option's value must have its default's type (ints are fine where the default is a float)."""
    name = f"options.{key}"

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"config key {name!r}={value!r} (method {method!r}) has the wrong type: expected "
                           f"{expected}, like the default {default!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise wrong("True or False")
        return value
    if isinstance(default, numbers.Integral):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise wrong("an integer")
        return int(value)
    if isinstance(default, numbers.Real):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise wrong("a finite number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise wrong("a list")
        return list(value)
    try:  # default None or anything else: any JSON value
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise wrong("a JSON value (string, number, bool, list, dict or None)") from None
    return value


def normalize_run_config(raw: Mapping[str, Any], *, check_build: bool = True) -> dict[str, Any]:
    """A complete, validated run config with its `run_key`; idempotent (normalizing twice changes nothing).

    Every wrong type, out-of-range value, unknown key, dataset, backbone, method or option raises ConfigError
    naming the key, before anything is trained or recorded. With `check_build` the method is also built on the
    meta device (no memory, no data) so that its own constructor checks run too (e.g. peers >= 2 for pcl).
    """
    raw = dict(raw)
    store_keys = sorted(STORE_KEYS & set(raw))
    if store_keys:
        raise ConfigError(f"config key(s) {', '.join(store_keys)} belong to the store, not to a run config")
    unknown = sorted(set(raw) - set(RUN_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(RUN_DEFAULTS))}")
    cfg = copy.deepcopy(RUN_DEFAULTS)
    cfg.update(copy.deepcopy(raw))
    out: dict[str, Any] = {}
    out["dataset"] = _check_choice("dataset", cfg["dataset"], DATASETS)
    out["backbone"] = _check_choice("backbone", cfg["backbone"], BACKBONES)
    out["method"] = method = _check_choice("method", cfg["method"], METHODS)
    out["seed"] = _check_int("seed", cfg["seed"], 0)
    out["epochs"] = epochs = _check_int("epochs", cfg["epochs"], 1)
    out["batch_size"] = _check_int("batch_size", cfg["batch_size"], 1)
    out["lr"] = _check_float("lr", cfg["lr"], lambda v: v > 0, "a number > 0")
    out["momentum"] = _check_float("momentum", cfg["momentum"], lambda v: 0 <= v < 1, "a number in [0, 1)")
    out["nesterov"] = _check_bool("nesterov", cfg["nesterov"])
    out["weight_decay"] = _check_float("weight_decay", cfg["weight_decay"], lambda v: v >= 0, "a number >= 0")
    out["gamma"] = _check_float("gamma", cfg["gamma"], lambda v: 0 < v <= 1, "a number in (0, 1]")
    milestones = cfg["milestones"]
    if milestones is None:
        milestones = default_milestones(out["dataset"], epochs)
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, (list, tuple)):
        raise _bad("milestones", milestones, "a list of increasing epochs >= 1, or None")
    out["milestones"] = [_check_int("milestones", m, 1) for m in milestones]
    if out["milestones"] != sorted(out["milestones"]):
        raise _bad("milestones", milestones, "a list of increasing epochs >= 1, or None")
    out["precision"] = _check_choice("precision", cfg["precision"], PRECISIONS)
    out["train_subset"] = _check_int("train_subset", cfg["train_subset"], 1, allow_none=True)
    synthetic = out["dataset"] == "synthetic"
    for key, minimum in zip(SYNTHETIC_KEYS, (2, 1, 1)):
        # only the synthetic dataset reads them: elsewhere None, so changing their defaults never moves a run_key
        out[key] = _check_int(key, cfg[key], minimum) if synthetic else None
    out["teacher_run_key"] = _check_str("teacher_run_key", cfg["teacher_run_key"], allow_none=True)
    for key in ("data_root", "device", "checkpoint_root", "experiment", "label"):
        out[key] = _check_str(key, cfg[key], allow_none=key == "data_root")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", out["device"]):
        raise _bad("device", out["device"], "auto, cpu, cuda or cuda:N")
    for key in ("download", "deterministic", "force", "progress"):
        out[key] = _check_bool(key, cfg[key])
    out["workers"] = _check_int("workers", cfg["workers"], 0)

    # options: the method's defaults, then the given ones; `peers` lives at the top level
    options = cfg["options"] if cfg["options"] is not None else {}
    if not isinstance(options, Mapping):
        raise _bad("options", options, "a dict of the method's options")
    defaults = method_defaults(method)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"config key(s) {', '.join(f'options.{k}' for k in unknown)}: not option(s) of method "
                          f"{method!r}; its options: {', '.join(sorted(defaults)) or '(none)'}")
    merged = dict(defaults)
    for key, value in options.items():
        merged[key] = _check_option(method, key, value, defaults[key])
    if "peers" in defaults:
        out["peers"] = _check_int("peers", cfg["peers"], 2)
        if "peers" in options and merged["peers"] != out["peers"]:
            raise ConfigError(f"config key 'options.peers'={options['peers']!r} conflicts with "
                              f"peers={out['peers']!r}: set the top-level key `peers`")
        merged["peers"] = out["peers"]
    else:
        out["peers"] = None  # the method has no peers: the value must not split one experiment into several keys
    out["options"] = {k: merged[k] for k in sorted(merged)}
    if out["teacher_run_key"] is not None and TEACHER_PATH_OPTION not in defaults:
        raise ConfigError(f"config key 'teacher_run_key' is set but method {method!r} has no option "
                          f"{TEACHER_PATH_OPTION!r} to receive the teacher")
    try:
        Recipe(epochs=epochs, lr=out["lr"], momentum=out["momentum"], nesterov=out["nesterov"],
               weight_decay=out["weight_decay"], milestones=tuple(out["milestones"]), gamma=out["gamma"],
               precision=out["precision"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if check_build and out["teacher_run_key"] is None:
        _check_method_builds(out)
    out["run_key"] = run_key(out)
    return {k: out[k] for k in RUN_DEFAULTS}


_BUILD_CHECKED: dict[str, str | None] = {}


def _check_method_builds(cfg: Mapping[str, Any]) -> None:
    """Run the method's constructor on the meta device: its own checks, without memory or data (cached)."""
    num_classes = cfg["synthetic_classes"] if cfg["dataset"] == "synthetic" else NUM_CLASSES[cfg["dataset"]]
    probe = canonical_json([cfg["method"], cfg["backbone"], num_classes, cfg["options"]])
    if probe not in _BUILD_CHECKED:
        error = None
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "copying into a meta parameter is a no-op" (kd's teacher)
                build_method(cfg["method"], cfg["backbone"], num_classes, **cfg["options"])
        except (ValueError, TypeError, FileNotFoundError) as err:
            error = str(err)
        except Exception:  # noqa: BLE001 - a constructor that cannot run on meta is checked by the real build
            error = None
        _BUILD_CHECKED[probe] = error
    if _BUILD_CHECKED[probe] is not None:
        raise ConfigError(f"config of method {cfg['method']!r} (key 'options' or 'peers'): {_BUILD_CHECKED[probe]}")


def plain(obj: Any) -> Any:
    """Plain dicts and lists, recursively: tuples (Sacred would store {"py/tuple": ...}) and Sacred's read-only
    config containers both become JSON-shaped values."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the same value always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _infra_options(cfg: Mapping[str, Any]) -> frozenset[str]:
    """A teacher file is infrastructure only when `teacher_run_key` names the teacher; a teacher_path given alone
    is the only description of the teacher and stays part of the experiment."""
    return INFRA_OPTIONS if cfg.get("teacher_run_key") else frozenset()


def identity_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run config that defines the experiment (what the run_key hashes)."""
    out = {k: v for k, v in cfg.items() if k not in INFRA_KEYS}
    dropped = _infra_options(cfg)
    out["options"] = {k: v for k, v in (cfg.get("options") or {}).items() if k not in dropped}
    return out


def run_key(cfg: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of the config without infrastructure keys."""
    payload = canonical_json({"schema": KEY_SCHEMA, "config": identity_config(cfg)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def build_spec(cfg: Mapping[str, Any]):
    """The runner's RunSpec for a normalized run config."""
    from pcl.runner import RunSpec

    synthetic = {k: cfg[k] for k in SYNTHETIC_KEYS if cfg[k] is not None}
    return RunSpec(dataset=cfg["dataset"], backbone=cfg["backbone"], method=cfg["method"],
                   method_options=dict(cfg["options"]), seed=cfg["seed"], batch_size=cfg["batch_size"],
                   recipe=Recipe(epochs=cfg["epochs"], lr=cfg["lr"], momentum=cfg["momentum"],
                                 nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"],
                                 milestones=tuple(cfg["milestones"]), gamma=cfg["gamma"],
                                 precision=cfg["precision"]),
                   data_root=cfg["data_root"], download=cfg["download"], train_subset=cfg["train_subset"],
                   device=cfg["device"], deterministic=cfg["deterministic"], workers=cfg["workers"],
                   **synthetic)


# ---- secrets -------------------------------------------------------------------------------------------------
_SECRETS: set[str] = set()
_URL_USERINFO = re.compile(r"(mongodb(?:\+srv)?://)([^:@/\s]*):([^@/\s]*)@")
_SECRET_PARAMS = ("password", "secret", "token", "key")


def redact_url(url: str | None) -> str:
    """The URL with its password (and secret-looking query parameters) replaced by ***."""
    if not url:
        return str(url)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", url)
    if "?" in text:
        base, _, query = text.partition("?")
        pairs = [(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v)
                 for k, v in parse_qsl(query, keep_blank_values=True)]
        text = base + "?" + urlencode(pairs, safe="*:/,")
    return text


def _register_secrets(url: str | None) -> None:
    """Remember the password of `url` (raw and URL-encoded) so that `redact` removes it from any text."""
    if not url:
        return
    match = _URL_USERINFO.search(url)
    if match and match.group(3):
        secret = unquote(match.group(3))
        _SECRETS.update(s for s in {match.group(3), secret, quote(secret, safe=""), quote_plus(secret)} if s)
    if "?" in url:
        for key, value in parse_qsl(url.partition("?")[2]):
            if value and any(s in key.lower() for s in _SECRET_PARAMS):
                _SECRETS.add(value)


def redact(text: Any) -> str:
    """Any text with every MongoDB password this process has seen replaced by ***."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", str(text))
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def resolve_mongo_url(mongo_url: str | None = None) -> str | None:
    """The explicit URL, else $PCL_MONGO_URL, else None (file store only)."""
    url = mongo_url if mongo_url else os.environ.get(MONGO_URL_ENV) or None
    _register_secrets(url)
    return url


# ---- stores --------------------------------------------------------------------------------------------------
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
            db["runs"].find_one({}, {"_id": 1})  # fails on authentication/authorisation problems
            db["metrics"].create_index([("run_id", 1), ("name", 1)])  # Sacred creates none; every plot reads it
            db["runs"].create_index([("config.run_key", 1), ("status", 1)])
        except Exception as err:  # noqa: BLE001 - any failure here means: do not start a run
            raise StoreUnavailable(_unreachable_message(self.mongo_url, err, self.timeout_s)) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _mongo_client(url: str, timeout_s: float):
    import pymongo

    try:
        return pymongo.MongoClient(url, serverSelectionTimeoutMS=int(timeout_s * 1000),
                                   connectTimeoutMS=int(timeout_s * 1000), socketTimeoutMS=60_000,
                                   appname="pcl.tracking")
    except Exception as err:  # noqa: BLE001 - malformed URLs and options
        raise StoreUnavailable(f"MongoDB URL {redact_url(url)} is not usable: {redact(err)}") from None


def _unreachable_message(url: str, err: BaseException, timeout_s: float) -> str:
    hint = ""
    if "directConnection" not in url:
        hint = (" A remote SecantusDB (or any single-member replica set reached by another name) needs "
                "'?directConnection=true' in the URL.")
    return (f"MongoDB at {redact_url(url)} is unreachable or refused access within {timeout_s:g} s "
            f"({type(err).__name__}: {redact(err)[:300]}). No run was started and nothing was recorded. "
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
    match = re.match(r"mongodb(?:\+srv)?://[^/]*/([^?]+)", url)
    return unquote(match.group(1)) if match and match.group(1) else None


# ---- observers -----------------------------------------------------------------------------------------------
def _atomic_write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    with open(tmp, "w") as f:
        json.dump(flatten(obj), f, sort_keys=True, indent=2)
        f.flush()
    os.replace(tmp, path)


class _FileObserver(FileStorageObserver):
    """Sacred's file store with its own run ids (never MongoDB's, which would collide) and atomic JSON writes."""

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        return super().started_event(ex_info, command, host_info, start_time, config, meta_info, None)

    def save_json(self, obj, filename):
        _atomic_write_json(obj, Path(self.dir) / filename)

    def log_metrics(self, metrics_by_name, info):
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


class _MongoObserver(MongoObserver):
    """MongoObserver whose final save gives up within seconds when the server is gone (Sacred's default retries
    for ~35 s) and then leaves the entry in failure_dir; `failed` tells the tracker to point at `upload`."""

    failed = False
    where = "MongoDB"

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

        tries = 1 if self.failed else min(attempts, 2)
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


# ---- signals -------------------------------------------------------------------------------------------------
class _StopState:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.requested = False
        self.previous: dict[int, Any] = {}
        self.depth = 0


_STOP = _StopState()


def _on_signal(signum: int, frame: Any) -> None:
    if _STOP.signum is None:
        _STOP.signum = signum
    _STOP.requested = True
    # os.write: print() is not safe inside a signal handler that may interrupt another print
    os.write(2, f"\n[pcl.tracking] {signal.Signals(signum).name} received: stopping at the next step; the last "
                f"checkpoint stays and the run is recorded PREEMPTED\n".encode())


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[_StopState]:
    """While active, SIGTERM/SIGUSR2 only request a stop (polled by the runner between steps).

    Re-entrant; installs handlers only in the main thread. On exit the previous handlers come back, so
    `redeliver` can hand the signal on (to the default action, or to submitit's requeue handler).
    """
    install = threading.current_thread() is threading.main_thread() and _STOP.depth == 0
    if install:
        for sig in signals:
            _STOP.previous[sig] = signal.signal(sig, _on_signal)
    _STOP.depth += 1
    try:
        yield _STOP
    finally:
        _STOP.depth -= 1
        if install:
            for sig, handler in _STOP.previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            _STOP.previous.clear()


def stop_requested() -> bool:
    return _STOP.requested


def stop_signal() -> int | None:
    return _STOP.signum


def request_stop(signum: int | None = None) -> None:
    """Ask the current run to stop at its next step (what the signal handler does)."""
    if signum is not None and _STOP.signum is None:
        _STOP.signum = signum
    _STOP.requested = True


def clear_stop() -> None:
    _STOP.signum = None
    _STOP.requested = False


def redeliver(signum: int) -> None:
    """Send `signum` again to this process, now that the run is recorded: the default action ends the process
    with that signal, a previous Python handler (submitit's requeue) runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)


# ---- one tracked run -----------------------------------------------------------------------------------------
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


class RunLocked(RuntimeError):
    """Another process holds the lock of this run_key (it is running it now)."""


@contextlib.contextmanager
def _run_lock(ckpt_dir: Path) -> Iterator[None]:
    """An exclusive lock on checkpoint_root/run_key/.lock while the run trains: one process per run_key."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(ckpt_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"run {ckpt_dir.name} is being trained by another process (lock {ckpt_dir / '.lock'})")
        yield
    finally:
        os.close(fd)


def _peek_checkpoint(path: Path) -> tuple[int, list[dict[str, float]]]:
    """(completed epochs, history) of a checkpoint, memory-mapped; (0, []) when there is none or it is unreadable."""
    if not path.exists():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"]), list(state.get("history", []))
    except Exception:  # noqa: BLE001 - the runner reports a broken checkpoint with its own message
        return 0, []


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
    spec = build_spec(cfg)

    ex = Experiment(name, base_dir=str(REPO_ROOT), save_git_info=True)
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    record_config = {k: v for k, v in cfg.items() if k != "options"}
    record_config["options"] = {k: v for k, v in cfg["options"].items() if k not in _infra_options(cfg)}
    ex.add_config(record_config)
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
        # a resumed attempt re-logs the epochs of its checkpoint: its record holds the whole curve
        for epoch, metrics in enumerate(history):
            log_epoch(epoch, metrics)

        def on_start(facts: dict[str, Any]) -> None:
            info.update({k: plain(facts[k]) for k in ("parameter_counts", "heads", "deployed_head",
                                                           "determinism", "num_classes", "num_views",
                                                           "environment", "recipe") if k in facts})

        try:
            outcome = train_run(spec, checkpoint_dir=ckpt_dir, resume=resume,
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


# ---- a grid of runs ------------------------------------------------------------------------------------------
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
        """0: all done; 1: some run FAILED/BLOCKED/LOCKED, or the grid stopped early; 128+N: stopped by signal N."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        bad = any(r.status in ("FAILED", "BLOCKED", "LOCKED", "PREEMPTED") for r in self.runs)
        return 1 if bad or self.stopped_reason else 0

    def __str__(self) -> str:
        counts = {s: self.count(s) for s in ("COMPLETED", "SKIPPED", "PREEMPTED", "FAILED", "BLOCKED", "LOCKED")}
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
            outcome = run_tracked(cfg, store, experiment_name=experiment_name, source_files=source_files,
                                  callbacks=callbacks)
            report.runs.append(outcome)
            detail = ""
            if outcome.status == "COMPLETED":
                err = outcome.result.get("deployed/top1_err")
                detail = f" in {outcome.seconds:.1f}s" + (f", deployed top-1 error {err:.2f}%" if err is not None
                                                          else "")
            elif outcome.error:
                detail = f": {outcome.error.splitlines()[0][:300]}"
            log(redact(f"[{i}/{len(configs)}] {cfg['label'] or cfg['method']} seed={cfg['seed']} "
                       f"run_key={cfg['run_key']}: {outcome.status}{detail}"))
            if outcome.status == "PREEMPTED":
                report.stopped_reason = "run preempted"
                break
    report.stop_signal = stop_signal()
    store.close()
    log(str(report))
    return report


# ---- upload: file-store records (and Sacred failure entries) into MongoDB -----------------------------------
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


# ---- command line --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcl.tracking", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload file-store records (e.g. of runs whose MongoDB went away)")
    up.add_argument("results_dir", help="the file store (results_dir of the runs)")
    ping = sub.add_parser("ping", help="check that MongoDB answers and accepts records")
    for p in (up, ping):
        p.add_argument("--mongo-url", default=None,
                       help=f"MongoDB URL (default: ${MONGO_URL_ENV}; prefer the variable: argv is visible to "
                            "other users)")
        p.add_argument("--db-name", default=None, help=f"database (default: the URL's, else {DEFAULT_DB_NAME!r})")
    up.add_argument("--include-running", action="store_true", help="also upload records still marked RUNNING")
    args = parser.parse_args(argv)
    try:
        if args.command == "upload":
            upload(args.results_dir, args.mongo_url, args.db_name, include_running=args.include_running)
        else:
            store = open_store(".", args.mongo_url, args.db_name)
            if not store.mongo_url:
                raise StoreUnavailable(f"no MongoDB URL given (--mongo-url or {MONGO_URL_ENV})")
            print(f"MongoDB {redact_url(store.mongo_url)} (database {store.db_name!r}) answers and accepts records")
    except UserError as err:
        print(f"error: {redact(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
