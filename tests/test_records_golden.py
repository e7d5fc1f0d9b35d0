"""The records commands give the same outputs as before they were made fast: tables (cells), plans (run_keys and
the printed plan) and status, on one store written here, compared with files in tests/golden/records/ that the
code before the speed work wrote (commit 06f580c, this test file copied beside it).

The store: every run of table2, ablations.peers and ablations.deployed_head on CIFAR-100 (their default plans: the
run configs the scripts plan), as the file store lays them out, with every status a store holds: COMPLETED,
FAILED, RUNNING with an old heartbeat (dead), INTERRUPTED by a preemption, missing, and a run_key whose newer attempt
failed after an older one completed.

A change that alters an output on purpose regenerates the files: `PCL_UPDATE_GOLDEN=1 pytest
tests/test_records_golden.py` (and says why in its commit).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import registry

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "records"
TABLES = ("table2", "ablations.peers", "ablations.deployed_head")


def _files(cfg: dict, number: int, status: str, value: float, stop: str) -> dict[str, object]:
    preempted = status == "INTERRUPTED"
    return {
        "run.json": {"status": status, "result": {"deployed/top1_err": value} if status == "COMPLETED" else None,
                     "meta": {"attempt_id": f"att-{number}"}, "start_time": "2026-01-01T00:00:00",
                     "stop_time": None if status == "RUNNING" else stop, "heartbeat": "2026-01-01T00:00:30",
                     "host": {"hostname": "h"}, "experiment": {"name": cfg["experiment"], "sources": []},
                     "fail_trace": ["Traceback", "RuntimeError: a failure for the test"] if status == "FAILED"
                     else None},
        "config.json": cfg,
        "info.json": {"deployed_head": "mean_peer1" if cfg["method"] == "pcl" else "net", "num_classes": 100,
                      "preempted": preempted, "attempt_id": f"att-{number}",
                      "parameter_counts": {"params_train": 1000 + number, "params_deployed": 500}},
        "metrics.json": {"test/top1_err/deployed": {"steps": [1, 2], "values": [60.0, value],
                                                    "timestamps": ["2026-01-01T00:00:00", stop]}},
    }


def build_store(root: Path) -> Path:
    """The store described above (deterministic: the same files every time)."""
    store = root / "results"
    runs: dict[str, dict] = {}
    for name in TABLES:
        for cfg in registry.plan(name, {"dataset": "cifar100"}):
            runs.setdefault(cfg["run_key"], cfg)
    number = 0
    for i, (key, cfg) in enumerate(sorted(runs.items())):
        value = 20.0 + int(key[:4], 16) % 1000 / 100
        attempts = ("COMPLETED", "FAILED") if i % 23 == 4 else (
            ("FAILED",) if i % 17 == 3 else ("RUNNING",) if i % 13 == 5 else ("INTERRUPTED",) if i % 11 == 7
            else () if i % 19 == 2 else ("COMPLETED",))
        for j, status in enumerate(attempts):
            number += 1
            run_dir = store / str(number)
            run_dir.mkdir(parents=True)
            stop = f"2026-01-0{1 + j}T{number // 60 % 24:02d}:{number % 60:02d}:00"
            for file, body in _files(cfg, number, status, value, stop).items():
                (run_dir / file).write_text(json.dumps(body, indent=1, sort_keys=True))
    return store


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "PYTHONHASHSEED": "0"}  # no squeue here
    env.pop("PCL_MONGO_URL", None)
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def outputs(store: Path, work: Path) -> dict[str, str]:
    """What the records commands print or write, as text: the tables' cells (CSV), the plans (run_keys of every
    script's default and smoke plan, and the printed plan of table2), and status (JSON; ages and the queue
    note left out: they depend on the clock and the machine)."""
    out: dict[str, str] = {}
    _run([str(ROOT / "analysis" / "make_tables.py"), "--store", str(store), "--tables", *TABLES, "--datasets",
          "cifar100", "--out", str(work / "tables")], work)
    for csv in sorted((work / "tables").glob("*.csv")):
        out[f"table_{csv.name}"] = csv.read_text()
    keys = {f"{name} {' '.join(named) or 'default'}": [[r["label"], r["seed"], r["run_key"]]
                                                       for r in registry.plan(name, {}, named)]
            for name in registry.SCRIPTS for named in ([], ["smoke"])}
    out["plans.json"] = json.dumps(keys, indent=1, sort_keys=True) + "\n"
    out["plan_table2.txt"] = _run([str(ROOT / "experiments" / "table2.py"), "plan", "with", "dataset=cifar100"],
                                  work)
    status = json.loads(_run([str(ROOT / "slurm" / "status.py"), "--results-dir", str(store), "--tables",
                              ",".join(TABLES), "--datasets", "cifar100", "--json"], work))
    status.pop("note", None)
    for run in status["runs"]:
        run["detail"] = re.sub(r"heartbeat \d+ s ago", "heartbeat N s ago", run["detail"])
        run["log"] = None if run["log"] is None else "..."  # a path of this machine
    out["status.json"] = json.dumps(status, indent=1, sort_keys=True) + "\n"
    return out


@pytest.mark.slow  # three commands as subprocesses on a 300-run store: about 45 s
def test_records_commands_give_the_same_outputs_as_before(tmp_path):
    store = build_store(tmp_path)
    got = outputs(store, tmp_path)
    if os.environ.get("PCL_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for old in GOLDEN.iterdir():
            old.unlink()
        for name, text in got.items():
            (GOLDEN / name).write_text(text)
        pytest.skip(f"golden files written to {GOLDEN}")
    expected = {p.name: p.read_text() for p in GOLDEN.iterdir()}
    assert sorted(got) == sorted(expected)
    for name, text in got.items():
        assert text == expected[name], f"{name} differs from tests/golden/records/{name}"
