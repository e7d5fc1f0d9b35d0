"""Records commands on a store shaped like the whole reproduction: seconds and peak memory, file store vs MongoDB.

What it measures (issue 21, "records commands at the speed of a database query"): each command that only reads
records or plans (start-up, `experiments/table2.py plan`, the plan of the whole reproduction, `slurm/status.py`
with the SLURM queue read and with `--executor local` (records only), `slurm/launch_all.py --dry-run`,
`analysis/make_tables.py`, `make_plots.py` and `report.py` on the CIFAR datasets with the plans rebuilt from the
store's records (no --tables, --named or --set), and `pcl.results.load_runs` / `load_metrics` from Python), run as
a fresh subprocess on the same store, side by side: a Sacred file store and MongoDB holding the same records. Per
command: wall seconds and peak memory (the larger of the biggest process's ru_maxrss and the sampled PSS sum of
the whole process tree: forked figure workers' shared pages count once), against the issue's targets; a command that fails, times out or outgrows --mem-limit is
reported with its exit code and last stderr line, and the bench goes on.

The store (N runs, N = --runs): the runs of every script of experiments.registry.SCRIPTS on every dataset it
runs on (slurm.plan.build_plan: 333 runs with the scripts' seeds; for N beyond that more seeds, 0..k-1, the last
seed partly: 3,000 runs = seeds 0..27, 30,000 runs = seeds 0..270), with the plans' real run configs and
run_keys, so the commands find them. Statuses: most COMPLETED, some COMPLETED after a preempted attempt, some
FAILED, RUNNING (half with a fresh heartbeat) or preempted (INTERRUPTED, info.preempted); ~1.05 records per run.
In a store of at most --curves runs (default 3,000) every attempt has each epoch (300 on CIFAR) of every metric
its method logs. A larger store holds the records only: no metrics.json, no `metrics` documents (info.metrics
still names the series; the results are still derived from curves computed and dropped); the commands that read
curves (make_plots, report, load_metrics) are reported as "not measured (no curves at this size)". The layout is
the suite's own: first one tiny real run (smoke config, 1 epoch, synthetic data, CPU) per distinct (method,
peers, structural options) of the smoke plans is trained with pcl.tracking.run_grid into a file store and MongoDB
at once; each of the N records is a clone of its method's template (config.json, run.json, info.json,
metrics.json, cout.txt, _sources/; MongoDB `runs` documents with sources in GridFS and one `metrics` document per
series, the suite's indexes made by pcl.tracking.stores.open_store), with the plan's config, the dataset's
numbers of classes, synthetic curves and a result derived from them as the runner derives it. MongoDB is a local
SecantusDB server on 127.0.0.1 (the test extra `secantus`) with its data in the work folder.

    python bench/records.py                                    # N=333 and 3000, file store and MongoDB
    python bench/records.py --runs 333 --stores file --only status make_tables
    python bench/records.py --runs 30000 --only status status_local dry_run make_tables load_runs  # records only
    python bench/records.py --keep WORK                        # keep (and on the next call reuse) stores/templates
    python bench/records.py --list                             # the command names for --only

Needs the venv with the `secantus` test extra for MongoDB. Building the 3,000-run stores takes minutes (about 2 GB
on disk for the file store). Figures depend on the machine's load: the header prints the load average.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pcl.flags import OneLineParser, positive_number

ROOT = Path(__file__).resolve().parents[1]  # the suite is installed (scripts/setup_env.sh): no sys.path edit

#: datasets of the analysis rows (make_tables, make_plots, report)
CIFAR_DATASETS = ("cifar10", "cifar100")
MB = 1 << 20
TEMPLATE_DB = "templates"
#: numbers of classes per dataset (the template's synthetic run has 4)
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
#: final top-1 error (%) of a run around which the synthetic curves end, per dataset
FINAL_ERR = {"cifar10": 6.0, "cifar100": 27.0, "imagenet": 30.0}


# ---- the plan: which run configs the store holds ----------------------------------------------------------------
@dataclass
class StorePlan:
    runs: list[dict[str, Any]]  # the run configs of the N runs in the store
    seeds: list[int] | None  # the seeds the commands must be given (None: the scripts' own)
    planned: int  # runs the commands plan with those seeds


def store_plan(n: int) -> StorePlan:
    """The first N runs of the whole reproduction's plan (by seed, then plan order), with more seeds when N is
    beyond the scripts' own."""
    from slurm.plan import Selection, build_plan

    base = [p.cfg for p in build_plan(Selection())]
    seeds, plan = None, base
    if n > len(base):
        per_seed = max(1, len({p["run_key"] for p in base if p["seed"] == 0}))
        k = max(2, math.ceil(n / per_seed))
        while True:
            plan = [p.cfg for p in build_plan(Selection(seeds=list(range(k))))]
            if len(plan) >= n:
                break
            k += 1
        seeds = list(range(k))
    order = sorted(range(len(plan)), key=lambda i: (plan[i]["seed"], i))
    return StorePlan([plan[i] for i in sorted(order[:n])], seeds, len(plan))


# ---- templates: one tiny real run per kind of run ---------------------------------------------------------------
def _signature(cfg: dict[str, Any], coarse: int = 0) -> tuple:
    """What decides a run's metric names: method, peers and the options that are not numbers (coarse: less)."""
    if coarse == 2:
        return (cfg["method"],)
    if coarse == 1:
        return (cfg["method"], cfg.get("peers"))
    opts = {k: v for k, v in sorted((cfg.get("options") or {}).items())
            if isinstance(v, (bool, str)) and k not in ("teacher_backbone", "teacher_path")}
    return (cfg["method"], cfg.get("peers"), json.dumps(opts, sort_keys=True))


def make_templates(folder: Path, mongo_url: str, log: Callable[[str], None]) -> None:
    """Train one smoke run (1 epoch, synthetic, CPU) per signature of every script's smoke plan into
    folder/results and the MongoDB of `mongo_url`: the real layout the clones copy."""
    from experiments import registry
    from pcl import tracking

    infra = {"results_dir": str(folder / "results"), "checkpoint_root": str(folder / "checkpoints")}
    chosen: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for name in registry.SCRIPTS:
        plan = registry.plan(name, {"seeds": [0], "epochs": 1, **infra}, ["smoke"])
        keys = {r["run_key"]: r for r in plan}
        for run in plan:
            sig = _signature(run)
            if sig in seen:
                continue
            seen.add(sig)
            teacher = keys.get(run.get("teacher_run_key") or "")
            if teacher is not None and teacher not in chosen:
                chosen.append(teacher)
            if run not in chosen:
                chosen.append(run)
    log(f"training {len(chosen)} template runs (smoke, 1 epoch, CPU) into {folder}")
    t0 = time.perf_counter()
    report = tracking.run_grid(chosen, results_dir=infra["results_dir"], mongo_url=mongo_url, log=lambda _: None)
    statuses = [r.status for r in report.runs]
    log(f"templates: {statuses.count('COMPLETED')}/{len(statuses)} COMPLETED in {time.perf_counter() - t0:.0f} s")
    if set(statuses) - {"COMPLETED", "SKIPPED"}:  # SKIPPED: a teacher that another script's run trained already
        raise SystemExit(f"template runs did not all complete: {statuses}")


@dataclass
class Template:
    folder: Path
    config: dict[str, Any]
    run: dict[str, Any]
    info: dict[str, Any]
    metric_names: list[str]
    cout: bytes
    mongo: dict[str, Any]


def load_templates(folder: Path, db) -> dict[tuple, Template]:
    """Signature (all three coarsenesses) -> the template run of that kind."""
    out: dict[tuple, Template] = {}
    root = folder / "results"
    for run_dir in sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        config = json.loads((run_dir / "config.json").read_text())
        run = json.loads((run_dir / "run.json").read_text())
        info = json.loads((run_dir / "info.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        mongo = db["runs"].find_one({"meta.attempt_id": run["meta"]["attempt_id"]})
        if mongo is None:
            raise SystemExit(f"template {run_dir} has no MongoDB document")
        cout = (run_dir / "cout.txt").read_bytes() if (run_dir / "cout.txt").exists() else b""
        t = Template(run_dir, config, run, info, list(metrics), cout, mongo)
        for coarse in (0, 1, 2):
            out.setdefault((coarse, *_signature(config, coarse)), t)
    return out


def template_for(templates: dict[tuple, Template], cfg: dict[str, Any]) -> Template:
    for coarse in (0, 1, 2):
        t = templates.get((coarse, *_signature(cfg, coarse)))
        if t is not None:
            return t
    raise SystemExit(f"no template run for method {cfg['method']!r}")


# ---- synthetic records ------------------------------------------------------------------------------------------
@dataclass
class Attempt:
    folder_id: int
    cfg: dict[str, Any]
    status: str
    epochs_done: int
    resumed_from: int
    start: dt.datetime
    preempted: bool = False
    fresh: bool = False  # a RUNNING attempt with a live heartbeat
    attempt_id: str = ""
    stop: dt.datetime | None = None
    heartbeat: dt.datetime | None = None
    epoch_times: list[dt.datetime] = field(default_factory=list)


def attempts_for(runs: Sequence[dict[str, Any]], now: dt.datetime) -> list[Attempt]:
    """Realistic attempts of the runs: 88 % COMPLETED, 5 % COMPLETED after a preempted attempt, 3 % FAILED, 2 %
    RUNNING (half alive), 2 % preempted; deterministic."""
    out: list[Attempt] = []
    rng = random.Random(21)
    start0 = now - dt.timedelta(days=60)
    for i, cfg in enumerate(runs):
        epochs = int(cfg["epochs"])
        per_epoch = rng.uniform(15, 90)
        start = start0 + dt.timedelta(seconds=i * 1500 + rng.uniform(0, 600))
        roll = rng.random()
        plan: list[tuple[str, int, int, bool]] = []  # (status, epochs done, resumed from, preempted)
        if roll < 0.88:
            plan.append(("COMPLETED", epochs, 0, False))
        elif roll < 0.93:
            cut = rng.randint(1, epochs - 1)
            plan += [("INTERRUPTED", cut, 0, True), ("COMPLETED", epochs, cut, False)]
        elif roll < 0.96:
            plan.append(("FAILED", rng.randint(0, epochs - 1), 0, False))
        elif roll < 0.98:
            plan.append(("RUNNING", rng.randint(1, epochs - 1), 0, False))
        else:
            plan.append(("INTERRUPTED", rng.randint(1, epochs - 1), 0, True))
        for status, done, resumed, preempted in plan:
            a = Attempt(0, cfg, status, done, resumed, start, preempted=preempted)
            a.attempt_id = hashlib.sha1(f"{cfg['run_key']}/{len(out)}".encode()).hexdigest()[:32]
            a.fresh = status == "RUNNING" and rng.random() < 0.5
            if a.fresh:  # alive: its last epoch ended a minute ago
                a.start = now - dt.timedelta(seconds=(done - resumed) * per_epoch + 60)
            a.epoch_times = [a.start + dt.timedelta(seconds=(e - resumed) * per_epoch + 20)
                             for e in range(resumed + 1, done + 1)]
            last = a.epoch_times[-1] if a.epoch_times else a.start + dt.timedelta(seconds=20)
            a.heartbeat = last + dt.timedelta(seconds=5)
            a.stop = None if status == "RUNNING" else a.heartbeat
            out.append(a)
            start = a.heartbeat + dt.timedelta(minutes=rng.uniform(5, 120))
    out.sort(key=lambda a: a.start)
    for n, a in enumerate(out, 1):
        a.folder_id = n
    return out


def curves(names: Sequence[str], a: Attempt, rng) -> dict[str, list[float]]:
    """Synthetic per-epoch values (epochs resumed_from+1 .. epochs_done) of every metric name."""
    import numpy as np

    cfg = a.cfg
    total = int(cfg["epochs"])
    t = np.arange(a.resumed_from + 1, a.epochs_done + 1, dtype=float)
    if t.size == 0:
        return {n: [] for n in names}
    final = FINAL_ERR.get(cfg["dataset"], 25.0) + rng.normal(0, 0.8)
    tau = total / 6
    milestones = list(cfg.get("milestones") or [])
    out: dict[str, np.ndarray] = {}
    for name in names:
        head_off = 0.0 if name.endswith(("deployed", "ensemble", "pcl_e")) else abs(rng.normal(0.8, 0.4))
        noise = rng.normal(0, 0.3, t.size)
        if "top1_err" in name:
            scale = 0.4 if name.startswith("train/") else 1.0
            base = final * scale + head_off
            v = base + (90 - base) * np.exp(-t / tau) + noise
        elif "top5_err" in name:
            base = final / 4 + head_off / 3
            v = base + (70 - base) * np.exp(-t / tau) + noise / 3
        elif "loss" in name:
            v = 0.05 + 2.3 * np.exp(-t / tau) + np.abs(noise) / 20
        elif name == "lr":
            v = float(cfg.get("lr") or 0.1) * float(cfg.get("gamma") or 0.1) ** np.searchsorted(
                milestones, t, side="right")
        elif "weight" in name:
            v = np.exp(-5 * (1 - np.minimum(t / max(total * 0.27, 1), 1.0)) ** 2)
        elif name == "epoch_time_s":
            v = rng.uniform(15, 90) + np.abs(noise)
        elif name == "images_per_s":
            v = 50_000 / (rng.uniform(15, 90) + np.abs(noise))
        elif "diversity" in name:
            v = 5 + 25 * np.exp(-t / tau) + np.abs(noise)
        else:
            v = 1.0 + noise / 10
        out[name] = v
    return {k: v.tolist() for k, v in out.items()}


def derive_result(template_result: dict[str, Any], values: dict[str, list[float]], steps: list[int],
                  epochs: int) -> dict[str, Any]:
    """The run's result as the runner derives it: last/X, best_on_test/X, best_on_test_epoch/H, deployed/X."""
    out: dict[str, Any] = {}
    for key, old in template_result.items():
        kind, _, rest = key.partition("/")
        series = None
        if kind == "last":
            series = values.get(f"test/{rest}")
            out[key] = series[-1] if series else old
        elif kind == "best_on_test":
            series = values.get(f"test/{rest}")
            out[key] = min(series) if series else old
        elif kind == "best_on_test_epoch":
            series = values.get(f"test/top1_err/{rest}")
            out[key] = float(steps[series.index(min(series))]) if series else old
        elif kind == "deployed":
            series = values.get(f"test/{rest}/deployed")
            out[key] = series[-1] if series else old
        elif key == "epochs":
            out[key] = float(epochs)
        else:
            out[key] = old
    return out


def _json_list(items: Sequence[Any], indent: str) -> str:
    if not items:
        return "[]"
    inner = indent + "  "
    return "[\n" + inner + (",\n" + inner).join(items) + "\n" + indent + "]"


def metrics_json(series: dict[str, tuple[list[int], list[str], list[float]]]) -> str:
    """metrics.json exactly as json.dump(..., sort_keys=True, indent=2) writes it (the store's writer), fast."""
    parts = []
    for name in sorted(series):
        steps, stamps, values = series[name]
        body = ('    "steps": ' + _json_list([str(s) for s in steps], "    ") + ",\n"
                '    "timestamps": ' + _json_list([f'"{s}"' for s in stamps], "    ") + ",\n"
                '    "values": ' + _json_list([repr(float(v)) for v in values], "    ") + "\n")
        parts.append(f"  {json.dumps(name)}: {{\n{body}  }}")
    return "{\n" + ",\n".join(parts) + "\n}" if parts else "{}"


def _metric_oid(attempt: str, name: str):
    from bson import ObjectId

    return ObjectId(hashlib.sha1(f"{attempt}\0{name}".encode()).digest()[:12])


def build_records(plan: StorePlan, templates: dict[tuple, Template], file_root: Path | None, db,
                  log: Callable[[str], None], with_curves: bool = True) -> dict[str, Any]:
    """Write the attempts of `plan` into the file store `file_root` and/or the MongoDB database `db`.

    with_curves False: the records only (no metrics.json, no `metrics` documents); the curves are still computed
    (the results are derived from them) and info.metrics still names the series, so the records are the same."""
    import numpy as np

    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # Sacred's times: naive UTC
    attempts = attempts_for(plan.runs, now)
    rng = np.random.default_rng(21)
    if file_root is not None:
        file_root.mkdir(parents=True, exist_ok=True)
        src = next(iter(templates.values())).folder.parent / "_sources"
        if src.is_dir() and not (file_root / "_sources").exists():
            shutil.copytree(src, file_root / "_sources")
    runs_batch: list[dict[str, Any]] = []
    metrics_batch: list[dict[str, Any]] = []
    sizes = []
    t0 = time.perf_counter()

    def flush() -> None:
        if db is not None and runs_batch:
            if metrics_batch:
                db["metrics"].insert_many(metrics_batch, ordered=False)
            db["runs"].insert_many(runs_batch, ordered=False)
        runs_batch.clear()
        metrics_batch.clear()

    for n, a in enumerate(attempts, 1):
        cfg = a.cfg
        tpl = template_for(templates, cfg)
        values = curves(tpl.metric_names, a, rng)
        steps = list(range(a.resumed_from + 1, a.epochs_done + 1))
        stamps = [t.isoformat() for t in a.epoch_times]
        config = {**{k: v for k, v in tpl.config.items() if k not in cfg}, **cfg}
        result = None
        if a.status == "COMPLETED":
            result = derive_result(tpl.run.get("result") or {}, values, steps, int(cfg["epochs"]))
        ck = Path(str(cfg.get("checkpoint_root") or "checkpoints")) / cfg["run_key"]
        refs = [{"id": str(_metric_oid(a.attempt_id, name)), "name": name} for name in tpl.metric_names]
        info = copy.deepcopy(tpl.info)
        info.update(attempt_id=a.attempt_id, run_key=cfg["run_key"], label=cfg.get("label"),
                    experiment=cfg.get("experiment"), experiments=[cfg.get("experiment")],
                    checkpoint_dir=str(ck), checkpoint_path=str(ck / "checkpoint.pt"),
                    deployed_path=str(ck / "deployed.pt"), completed_epochs=a.epochs_done,
                    resumed_from_epoch=a.resumed_from, num_classes=NUM_CLASSES.get(cfg["dataset"], 100),
                    teacher_run_key=cfg.get("teacher_run_key"), metrics=refs,
                    run_ids={"file": str(a.folder_id), "mongo": a.folder_id})
        info["recipe"] = {k: cfg.get(k) for k in (info.get("recipe") or {})}
        info["environment"] = {**(info.get("environment") or {}), "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3",
                               "host": f"gpu{a.folder_id % 24:02d}"}
        if isinstance(info.get("determinism"), dict):
            info["determinism"]["seed"] = cfg.get("seed")
        if a.preempted:
            info["preempted"] = True
        if a.status == "RUNNING":
            info.pop("deployed_path", None)
        run = copy.deepcopy(tpl.run)
        run["meta"].update(attempt_id=a.attempt_id, run_key=cfg["run_key"])
        run["experiment"]["name"] = cfg.get("experiment")
        run["omniboard"] = {"tags": [cfg.get("experiment")]}
        run["host"]["hostname"] = info["environment"]["host"]
        run.update(status=a.status, start_time=a.start.isoformat(), heartbeat=a.heartbeat.isoformat(), result=result)
        run.pop("fail_trace", None)
        if a.stop is not None:
            run["stop_time"] = a.stop.isoformat()
        else:
            run.pop("stop_time", None)
        if a.status == "FAILED":
            run["fail_trace"] = ["Traceback (most recent call last):\n", "  File \"pcl/runner.py\", line 1\n",
                                 "RuntimeError: CUDA error: an illegal memory access was encountered\n"]
        if file_root is not None:
            folder = file_root / str(a.folder_id)
            folder.mkdir(exist_ok=True)
            (folder / "config.json").write_text(json.dumps(config, sort_keys=True, indent=2))
            (folder / "run.json").write_text(json.dumps(run, sort_keys=True, indent=2))
            (folder / "info.json").write_text(json.dumps(info, sort_keys=True, indent=2))
            if with_curves:
                text = metrics_json({k: (steps, stamps, v) for k, v in values.items()})
                (folder / "metrics.json").write_text(text)
                sizes.append(len(text))
            (folder / "cout.txt").write_bytes(tpl.cout)
        if db is not None:
            doc = copy.deepcopy(tpl.mongo)
            doc.update(_id=a.folder_id, config=config, status=a.status, start_time=a.start, heartbeat=a.heartbeat,
                       result=result, stop_time=a.stop, omniboard={"tags": [cfg.get("experiment")]})
            doc["meta"].update(attempt_id=a.attempt_id, run_key=cfg["run_key"])
            doc["experiment"]["name"] = cfg.get("experiment")
            doc["host"]["hostname"] = info["environment"]["host"]
            doc["info"] = {**info, "run_ids": {"file": str(a.folder_id), "mongo": a.folder_id}}
            doc.pop("fail_trace", None)
            if a.stop is None:
                doc.pop("stop_time", None)
            if a.status == "FAILED":
                doc["fail_trace"] = run["fail_trace"]
            runs_batch.append(doc)
            if with_curves:
                for name, v in values.items():
                    metrics_batch.append({"_id": _metric_oid(a.attempt_id, name), "run_id": a.folder_id,
                                          "name": name, "steps": steps, "values": v, "timestamps": list(a.epoch_times)})
            if len(runs_batch) >= (25 if with_curves else 250):
                flush()
        if n % (500 if with_curves else 2500) == 0:
            log(f"  {n}/{len(attempts)} records ({time.perf_counter() - t0:.0f} s)")
    flush()
    statuses: dict[str, int] = {}
    for a in attempts:
        key = a.status + (" (preempted)" if a.preempted else "") + (" (alive)" if a.fresh else "")
        statuses[key] = statuses.get(key, 0) + 1
    return {"runs": len(plan.runs), "attempts": len(attempts), "planned": plan.planned, "seeds": plan.seeds,
            "statuses": statuses, "metrics_json_mb": (sum(sizes) / len(sizes) / MB) if sizes else None,
            "curves": with_curves, "seconds": round(time.perf_counter() - t0, 1)}


# ---- MongoDB ----------------------------------------------------------------------------------------------------
class Mongo:
    """A SecantusDB server on 127.0.0.1 with its data in `storage` (as tests/conftest.py MongoTestServer)."""

    def __init__(self, storage: Path):
        from secantus import SecantusDBServer

        storage.mkdir(parents=True, exist_ok=True)
        self.server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=str(storage), require_auth=False)
        self.server.start()
        self.port = int(self.server.uri.rstrip("/").rsplit(":", 1)[1])

    def url(self, db: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{db}?directConnection=true"

    def database(self, db: str):
        import pymongo

        return pymongo.MongoClient(self.url(db), serverSelectionTimeoutMS=5000)[db]

    def stop(self) -> None:
        self.server.stop()


def copy_gridfs(src, dst) -> None:
    """The template database's source files (GridFS), which the cloned run documents point at."""
    for coll in ("fs.files", "fs.chunks"):
        docs = list(src[coll].find())
        if docs and dst[coll].count_documents({}) == 0:
            dst[coll].insert_many(docs)


# ---- the commands -----------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    kind: str  # file | mongo
    store: str  # the file store folder, or the MongoDB URL
    results_dir: str  # --results-dir of the slurm commands (an empty folder for MongoDB)
    seeds: list[int] | None
    out: Path
    env: dict[str, str]


@dataclass
class Command:
    name: str
    argv: Callable[[Ctx], list[str]]
    seconds: float | None  # target
    mb: float | None  # target
    store_independent: bool = False
    alias: str = ""  # short name for --only
    needs_curves: bool = False  # reads metric curves: not measured on a store without them
    large_seconds: float | None = None  # target at LARGE runs and more (time only: memory grows with the records)
    sized: bool = True  # its work grows with N (the store, or the seeds it plans): False keeps its target at any N

    def limits(self, n: int) -> tuple[float | None, float | None]:
        """(seconds, MB) this command is held to on a store of n runs."""
        return (self.large_seconds, None) if n >= LARGE and self.sized else (self.seconds, self.mb)

    def target(self, large: bool = False) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(f"< {self.seconds:g} s")
        if self.mb is not None:
            parts.append(f"< {self.mb:,.0f} MB")
        text = ", ".join(parts) or "-"
        if large and self.sized:
            text += f"; {LARGE:,} runs: " + (f"< {self.large_seconds:g} s" if self.large_seconds is not None else "-")
        return text


#: the store size from which the issue's targets are its 30,000-run ones (status and make_tables < 30 s, linear)
LARGE = 30_000


def _seed_flags(ctx: Ctx) -> list[str]:
    return ["--seeds", ",".join(map(str, ctx.seeds))] if ctx.seeds else []


def _seed_with(ctx: Ctx) -> list[str]:
    return [f"seeds={ctx.seeds!r}".replace(" ", "")] if ctx.seeds else []


def _analysis(script: str, out: Callable[[Ctx], str], *extra: str) -> Callable[[Ctx], list[str]]:
    """The analysis on the CIFAR datasets of every plan the store holds runs of (no --tables/--named/--set: the
    plans are rebuilt from the records, analysis/discover.py)."""
    return lambda c: [sys.executable, str(ROOT / "analysis" / script), "--store", c.store, "--datasets",
                      *CIFAR_DATASETS, "--out", out(c), *extra]


def _py(code: str) -> Callable[[Ctx], list[str]]:
    return lambda c: [sys.executable, "-c", code, c.store]


_PLAN_ALL = ("import sys, json; from slurm.plan import Selection, build_plan; s = json.loads(sys.argv[2]); "
             "print(len(build_plan(Selection(seeds=s))), 'runs')")
COMMANDS: list[Command] = [
    Command("start-up (plan of one cell)", lambda c: [
        sys.executable, str(ROOT / "experiments" / "table2.py"), "plan", "with", "dataset=cifar100", "method=pcl",
        "backbone=resnet32", "seeds=[0]"], 2, 300, store_independent=True, alias="startup", sized=False),
    Command("table2.py plan with dataset=cifar100", lambda c: [
        sys.executable, str(ROOT / "experiments" / "table2.py"), "plan", "with", "dataset=cifar100", *_seed_with(c)],
        3, 300, store_independent=True, alias="plan"),
    Command("plan of the whole reproduction", lambda c: [
        sys.executable, "-c", _PLAN_ALL, "-", json.dumps(c.seeds)], 3, 300, store_independent=True, alias="plan_all"),
    # the SLURM queue read (on a machine with the client tools but no controller squeue waits ~9 s to fail)
    Command("status.py", lambda c: [sys.executable, str(ROOT / "slurm" / "status.py"), "--results-dir",
                                    c.results_dir, *_seed_flags(c)], 5, 300, alias="status", large_seconds=30),
    Command("status.py --executor local (records only)", lambda c: [
        sys.executable, str(ROOT / "slurm" / "status.py"), "--executor", "local", "--results-dir", c.results_dir,
        *_seed_flags(c)], 5, 300, alias="status_local", large_seconds=30),
    Command("launch_all.py --dry-run", lambda c: [
        sys.executable, str(ROOT / "slurm" / "launch_all.py"), "--dry-run", "--executor", "local", "--results-dir",
        c.results_dir, *_seed_flags(c)], 5, 300, alias="dry_run"),
    Command("make_tables (CIFAR tables, plans read from the store)",
            _analysis("make_tables.py", lambda c: str(c.out / "tables")), 5, 300, alias="make_tables", large_seconds=30),
    # figures: a first call (--redraw: every figure drawn, even where an earlier bench left a manifest), then
    # the same call again with no record changed (analysis/figcache.py keeps every table's files)
    Command("make_plots (CIFAR tables, plans read from the store; every figure drawn)",
            _analysis("make_plots.py", lambda c: str(c.out / "figures"), "--redraw"), 20, 500, alias="make_plots",
            needs_curves=True),
    Command("make_plots again (no record changed: figures kept)",
            _analysis("make_plots.py", lambda c: str(c.out / "figures")), 20, 500, alias="make_plots_again",
            needs_curves=True),
    Command("report (CIFAR tables, plans read from the store; every figure drawn)",
            _analysis("report.py", lambda c: str(c.out / "report" / "report.md"), "--redraw"), 20, 500,
            alias="report", needs_curves=True),
    Command("report again (no record changed: figures kept)",
            _analysis("report.py", lambda c: str(c.out / "report" / "report.md")), 20, 500, alias="report_again",
            needs_curves=True),
    Command("results.load_runs", _py(
        "import sys; from pcl import results; print(len(results.load_runs(sys.argv[1])), 'runs')"), None, 300,
        alias="load_runs"),
    Command("results.load_metrics (1 metric)", _py(
        "import sys; from pcl import results; "
        "print(len(results.load_metrics(sys.argv[1], names=['test/top1_err/deployed'])), 'points')"), None, 300,
        alias="load_metrics_one", needs_curves=True),
    Command("results.load_metrics (all curves)", _py(
        "import sys; from pcl import results; print(len(results.load_metrics(sys.argv[1])), 'points')"),
        None, 2048, alias="load_metrics", needs_curves=True),
]
#: short names for --only
ALIASES = {c.alias: i for i, c in enumerate(COMMANDS)}
#: statuses that are a success (status.py: 1 = the SLURM queue could not be read, as tests/test_torch_free.py)
OK_CODES = {"status.py": (0, 1)}


# ---- measuring one command --------------------------------------------------------------------------------------
def _pss(pid: str) -> int | None:
    """Proportional set size (bytes) of a process: its own pages plus its share of pages it shares (a forked
    worker's inherited pages count once over the tree, not once per process as RSS counts them)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _tree_rss(root: int) -> int:
    """The memory (bytes) of `root` and its descendants, from /proc: the sum of their PSS (RSS where the kernel has
    no smaps_rollup)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * page
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in rss:
            pss = _pss(str(pid))
            total += rss[pid] if pss is None else pss
        todo += children.get(pid, [])
    return total


def measure_main(argv: Sequence[str]) -> int:
    """`records.py --measure RESULT.json TIMEOUT MEMLIMIT_MB -- CMD...`: run CMD, write seconds, peak MB, rc.

    A fresh process, so RUSAGE_CHILDREN covers CMD (and its children) only."""
    import resource

    result_path, timeout, mem_limit = argv[0], float(argv[1]), float(argv[2])
    cmd = list(argv[4:])
    peak = [0]
    why = [None]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    stop = threading.Event()

    def end_with_the_bench(signum: int, frame: Any) -> None:
        """The bench stopped (its `timeout`, Ctrl-C): the command, in a session of its own, goes with it."""
        with __import__("contextlib").suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(128 + signum)

    for stopping in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(stopping, end_with_the_bench)

    def sample() -> None:
        while not stop.wait(0.2):
            try:
                peak[0] = max(peak[0], _tree_rss(proc.pid))
            except Exception:  # noqa: BLE001 - a process gone between listing and reading
                continue
            if peak[0] > mem_limit * MB and why[0] is None:
                why[0] = f"killed: over the memory limit of {mem_limit:,.0f} MB"
                os.killpg(proc.pid, signal.SIGKILL)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        why[0] = f"timed out after {timeout:g} s"
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    with __import__("contextlib").suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the command's session
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    Path(result_path).write_text(json.dumps({"seconds": seconds, "rc": rc, "peak_mb": max(maxrss, peak[0]) / MB,
                                             "maxrss_mb": maxrss / MB, "tree_mb": peak[0] / MB, "why": why[0]}))
    return 0


@dataclass
class Measured:
    seconds: float | None = None
    mb: float | None = None
    rc: int | None = None
    ok: bool = False
    why: str | None = None
    last_line: str = ""
    stdout_tail: str = ""
    skipped: str | None = None  # not run, and why (e.g. a store without curves)


def run_command(cmd: Command, ctx: Ctx, logs: Path, tag: str, timeout: float, mem_limit: float) -> Measured:
    logs.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() else "_" for ch in f"{tag}_{cmd.name}")[:120]
    result = logs / f"{safe}.json"
    out_path, err_path = logs / f"{safe}.out", logs / f"{safe}.err"
    result.unlink(missing_ok=True)
    argv = cmd.argv(ctx)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        try:
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", str(result), str(timeout),
                            str(mem_limit), "--", *argv], stdout=out, stderr=err, cwd=ctx.out, env=ctx.env,
                           timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            pass
    (logs / f"{safe}.cmd").write_text(" ".join(argv) + "\n")
    err_lines = [ln for ln in err_path.read_text(errors="replace").splitlines() if ln.strip()]
    out_lines = [ln for ln in out_path.read_text(errors="replace").splitlines() if ln.strip()]
    m = Measured(last_line=err_lines[-1][:300] if err_lines else "", stdout_tail=(out_lines[-1][:200]
                                                                                   if out_lines else ""))
    if not result.exists():
        m.why = "the measuring process gave no result"
        return m
    data = json.loads(result.read_text())
    m.seconds, m.mb, m.rc, m.why = data["seconds"], data["peak_mb"], data["rc"], data["why"]
    m.ok = m.why is None and m.rc in OK_CODES.get(cmd.name, (0,))
    return m


def cell(cmd: Command, m: Measured | None, n: int) -> str:
    """A measurement against the targets of a store of n runs ("no target" where the issue sets none)."""
    if m is None:
        return "-"
    if m.skipped:
        return m.skipped
    if not m.ok:
        what = m.why or f"exit {m.rc}"
        return f"FAILED ({what})" + (f" {m.seconds:.1f} s" if m.seconds is not None and m.why is None else "")
    seconds, mb = cmd.limits(n)
    marks = ""
    if seconds is not None and m.seconds > seconds:
        marks += " ✗time"
    if mb is not None and m.mb > mb:
        marks += " ✗mem"
    held = (seconds, mb) != (None, None)
    return f"{m.seconds:.1f} s / {m.mb:,.0f} MB" + (marks or (" ✓" if held else ", no target"))


# ---- main -------------------------------------------------------------------------------------------------------
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _select(only: Sequence[str] | None) -> list[Command]:
    if not only:
        return list(COMMANDS)
    out = []
    for item in only:
        if item in ALIASES:
            out.append(COMMANDS[ALIASES[item]])
            continue
        found = [c for c in COMMANDS if c.name == item or c.name.startswith(item)]
        if not found:
            raise SystemExit(f"--only {item!r}: unknown; known: {', '.join(ALIASES)}")
        out += found
    return list({c.name: c for c in out}.values())


def _sizes(text: str) -> list[int]:
    """--runs N,N,...: whole numbers >= 1."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    if not parts or not all(x.isascii() and x.isdigit() and int(x) > 0 for x in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be whole numbers >= 1, comma-separated")
    return [int(x) for x in parts]


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be a whole number >= 0")
    return int(text)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--measure"]:
        return measure_main(argv[1:])
    p = OneLineParser(prog="python bench/records.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="333,3000", type=_sizes, help="comma-separated store sizes N (default 333,3000)")
    p.add_argument("--stores", default="file,mongo", help="file, mongo or both (default file,mongo)")
    p.add_argument("--only", nargs="+", metavar="COMMAND", help="only these commands (names: --list)")
    p.add_argument("--keep", metavar="DIR", help="work folder kept after the run (and reused: templates, stores)")
    p.add_argument("--timeout", type=positive_number("seconds"), default=600, help="seconds per command (default 600)")
    p.add_argument("--mem-limit", type=positive_number("MB"), default=8192,
                   help="MB per command tree before it is killed")
    p.add_argument("--curves", type=_count, default=3000, metavar="N",
                   help="write the metric curves (metrics.json, `metrics` documents) only into stores of at most N "
                        "runs (default 3000); a larger store holds the records only and the commands that read "
                        "curves are not measured on it")
    p.add_argument("--list", action="store_true", help="list the commands and exit")
    args = p.parse_args(argv)
    if args.list:
        for alias, i in ALIASES.items():
            print(f"{alias:18} {COMMANDS[i].name}  (target {COMMANDS[i].target()})"
                  + ("  [reads curves]" if COMMANDS[i].needs_curves else ""))
        return 0
    sizes, curves = args.runs, args.curves
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    if not set(kinds) <= {"file", "mongo"}:
        raise SystemExit("--stores: file and/or mongo")
    commands = _select(args.only)
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="pcl-records-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # stopped from outside (`timeout`, a scheduler): the `finally` below still stops the server and, without
    # --keep, removes the work folder (a killed bench had left 421 MB and its commands running)
    signal.signal(signal.SIGTERM, _exit_on_signal)

    def log(msg: str) -> None:
        print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)

    started = dt.datetime.now(dt.timezone.utc)
    load_start = _load()
    commit = _commit()
    mongo = Mongo(work / "mongo")  # the templates need it even for a file-only bench
    try:
        tdir = work / "templates"
        if not (tdir / "done").exists():
            if tdir.exists():
                shutil.rmtree(tdir)
            tdir.mkdir()
            make_templates(tdir, mongo.url(TEMPLATE_DB), log)
            (tdir / "done").write_text("ok\n")
        tdb = mongo.database(TEMPLATE_DB)
        templates = load_templates(tdir, tdb)
        env_base = {**os.environ, "PCL_MONGO_URL": "", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
        results: dict[tuple[int, str, str], Measured] = {}
        facts: dict[int, dict[str, Any]] = {}
        for n in sizes:
            plan = store_plan(n)
            sdir = work / f"store-{n}"
            marker = sdir / "done.json"
            db_name = f"bench_{n}"
            with_curves = n <= curves
            old = json.loads(marker.read_text()) if marker.exists() else {}
            if set(kinds) <= set(old.get("keys") or ()) and old.get("curves", True) == with_curves:
                facts[n] = old
                log(f"N={n}: reusing the stores in {sdir}")
            else:
                if sdir.exists():
                    shutil.rmtree(sdir)
                sdir.mkdir()
                db = None
                if "mongo" in kinds:
                    mongo.database(db_name).client.drop_database(db_name)
                    from pcl.tracking.stores import open_store

                    open_store(sdir / "unused", mongo.url(db_name)).close()  # the suite's indexes
                    db = mongo.database(db_name)
                    copy_gridfs(tdb, db)
                log(f"N={n}: writing {len(plan.runs)} runs ({', '.join(kinds)}"
                    + ("" if with_curves else "; records only, no curves") + f") into {sdir}")
                facts[n] = build_records(plan, templates, sdir / "results" if "file" in kinds else None, db, log,
                                         with_curves)
                facts[n]["keys"] = sorted(kinds)
                marker.write_text(json.dumps(facts[n]))
                seeds = facts[n].get("seeds")
                log(f"N={n}: " + str({**facts[n], "seeds": f"0..{seeds[-1]}" if seeds else None}))
            (sdir / "empty").mkdir(exist_ok=True)
            for cmd in commands:
                for kind in kinds:
                    if cmd.store_independent and kind != kinds[0]:
                        continue
                    if cmd.needs_curves and facts[n].get("curves") is False:
                        results[(n, kind, cmd.name)] = Measured(skipped="not measured (no curves at this size)")
                        continue
                    out = sdir / "out" / kind
                    out.mkdir(parents=True, exist_ok=True)
                    env = dict(env_base)
                    if kind == "mongo":
                        env["PCL_MONGO_URL"] = mongo.url(db_name)
                    ctx = Ctx(kind, str(sdir / "results") if kind == "file" else mongo.url(db_name),
                              str(sdir / "results") if kind == "file" else str(sdir / "empty"), plan.seeds, out, env)
                    log(f"N={n} {kind}: {cmd.name} ...")
                    m = run_command(cmd, ctx, sdir / "logs", kind, args.timeout, args.mem_limit)
                    results[(n, kind, cmd.name)] = m
                    log(f"N={n} {kind}: {cmd.name}: {cell(cmd, m, n)}"
                        + ("" if m.ok else f" | {m.last_line}"))
        print_table(commands, sizes, kinds, results, facts, started, load_start, commit, argv, work)
    finally:
        mongo.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _commit() -> str:
    return _git("rev-parse", "--short", "HEAD") + (" + local changes" if _git("status", "--porcelain",
                                                                              "--untracked-files=no") else "")


def print_table(commands, sizes, kinds, results, facts, started, load_start, commit, argv, work) -> None:
    end_commit = _commit()
    print(f"Date: {started:%Y-%m-%d %H:%M} UTC; commit {commit}"
          + (f" (at the end: {end_commit})" if end_commit != commit else "")
          + f"; {os.cpu_count()} CPUs; load average at start {load_start}, at end {_load()}")
    print(f"Command line: python bench/records.py {' '.join(argv)}")
    for n in sizes:
        f = facts.get(n, {})
        seeds = f.get("seeds")
        print(f"N={n}: {f.get('runs')} runs, {f.get('attempts')} records, plan of {f.get('planned')} runs "
              f"(seeds {'the scripts own' if not seeds else f'0..{seeds[-1]}'}); statuses {f.get('statuses')}; "
              + (f"metrics.json {f['metrics_json_mb']:.2f} MB on average; " if f.get("metrics_json_mb") else "")
              + ("records only, no curves; " if f.get("curves") is False else "")
              + f"written in {f.get('seconds')} s")
    print()
    cols = [(n, k) for n in sizes for k in kinds]
    print("| command | target | " + " | ".join(f"N={n} {k}" for n, k in cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for cmd in commands:
        cells = []
        for n, k in cols:
            m = results.get((n, k, cmd.name))
            cells.append("(no store)" if m is None and cmd.store_independent else cell(cmd, m, n))
        print(f"| {cmd.name} | {cmd.target(any(n >= LARGE for n in sizes))} | " + " | ".join(cells) + " |")
    failed = [(key, m) for key, m in results.items() if not m.ok and not m.skipped]
    if failed:
        print("\nFailures (exit code, last stderr line; logs in the work folder's store-N/logs):")
        for (n, k, name), m in failed:
            print(f"- N={n} {k} {name}: {m.why or f'exit {m.rc}'}: {m.last_line}")
    print("\nSeconds: wall time of the command as a fresh subprocess; MB: peak memory (the larger of the largest "
          "process's ru_maxrss and the sampled PSS sum of its process tree). ✓: within the issue's target for the "
          f"store's size (from {LARGE:,} runs: its {LARGE:,}-run targets, time only); store-"
          "independent commands run once per N. Work folder: " + str(work))


if __name__ == "__main__":
    sys.exit(main())
