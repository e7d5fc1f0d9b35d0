"""Commands that only read or plan import neither torch nor torchvision (issue: records at the speed of a query).

Each command runs in a subprocess whose import system refuses torch and torchvision and reports any attempt, even
one the code caught: plan, print_config, status, the launcher's dry run, make_tables, make_plots, claims, report, upload and
pcl.results, on a store of real records (a MongoDB server for upload). Torch is imported when a run trains.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import registry
from pcl import tracking

ROOT = Path(__file__).resolve().parents[1]
#: runs `python SCRIPT ARGS` (or `-m MODULE ARGS`) with torch blocked; exit 3 when anything tried to import it
BLOCKED = r"""
import atexit, importlib.abc, os, runpy, sys
tried = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            tried.append(name)
            raise ImportError("blocked import of " + name)
def report():
    if tried:
        sys.stdout.flush(); print("IMPORTS TORCH: " + tried[0], file=sys.stderr, flush=True); os._exit(3)
atexit.register(report)
sys.meta_path.insert(0, Block())
args = sys.argv[1:]
if args[0] == "-m":
    sys.argv = args[1:]; runpy.run_module(args[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = args; runpy.run_path(args[0], run_name="__main__")
"""
pytestmark = pytest.mark.slow  # subprocesses and two smoke runs: CI runs them, the fast tier does not
SMOKE_TWO = {"method": ["baseline", "pcl"], "seeds": [0], "epochs": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two real smoke runs (baseline and PCL) in a file store."""
    root = tmp_path_factory.mktemp("torch-free")
    infra = {"results_dir": str(root / "results"), "checkpoint_root": str(root / "ck")}
    plan = registry.plan("table2", {**SMOKE_TWO, **infra}, ["smoke"])
    report = tracking.run_grid(plan, results_dir=infra["results_dir"], log=lambda _: None)
    assert [r.status for r in report.runs] == ["COMPLETED"] * len(plan)
    return root


def _blocked(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PCL_MONGO_URL": "", **env})


SMOKE_SET = ["--named", "smoke", "--set", "method=['baseline','pcl']", "--set", "seeds=[0]", "--set", "epochs=1"]
COMMANDS = {
    "plan": [str(ROOT / "experiments" / "table2.py"), "plan", "with", "dataset=cifar100"],
    "print_config": [str(ROOT / "experiments" / "table2.py"), "print_config", "with", "quick"],
    "ablation plan": [str(ROOT / "ablations" / "peers.py"), "plan", "with", "smoke"],
    "status": [str(ROOT / "slurm" / "status.py"), "--results-dir", "results", "--tables", "table2", *SMOKE_SET[:2],
               "--set", "epochs=1"],
    "dry run": [str(ROOT / "slurm" / "launch_all.py"), "--dry-run", "--executor", "local", "--results-dir",
                "results"],
    "make_tables": [str(ROOT / "analysis" / "make_tables.py"), "--store", "results", "--tables", "table2",
                    *SMOKE_SET, "--out", "tables"],
    "make_plots": [str(ROOT / "analysis" / "make_plots.py"), "--store", "results", "--tables", "table2",
                   *SMOKE_SET, "--out", "figures"],
    "claims": [str(ROOT / "analysis" / "claims.py"), "--store", "results", "--tables", "table2", *SMOKE_SET],
    "report": [str(ROOT / "analysis" / "report.py"), "--store", "results", "--tables", "table2", *SMOKE_SET,
               "--out", "report", "--html"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_records_commands_import_no_torch(store, name):
    proc = _blocked(COMMANDS[name], store)
    assert "IMPORTS TORCH" not in proc.stderr, (name, proc.stderr[-2000:])
    assert proc.returncode in (0, 1), (name, proc.returncode, proc.stderr[-2000:])  # 1: status sees no queue


def test_reading_records_from_python_imports_no_torch(store):
    code = ("from pcl import results; runs = results.load_runs('results'); "
            "curves = results.load_metrics('results', names=['test/top1_err/deployed']); "
            "assert len(runs) == 2 and len(curves), (runs, curves)")
    script = store / "read.py"
    script.write_text(code)
    proc = _blocked([str(script)], store)
    assert proc.returncode == 0 and "IMPORTS TORCH" not in proc.stderr, proc.stderr[-2000:]


def test_upload_imports_no_torch(store, mongo_url):
    proc = _blocked(["-m", "pcl.tracking", "upload", "results", "--mongo-url", mongo_url], store)
    assert proc.returncode == 0 and "IMPORTS TORCH" not in proc.stderr, proc.stderr[-2000:]


def test_the_blocker_reports_an_import_of_torch(tmp_path):
    script = tmp_path / "uses_torch.py"
    script.write_text("try:\n    import torch\nexcept ImportError:\n    pass\n")
    proc = _blocked([str(script)], tmp_path)
    assert proc.returncode == 3 and "IMPORTS TORCH: torch" in proc.stderr


def test_the_upload_function_is_the_packages_name_after_any_import_of_its_module():
    import importlib

    import pcl.tracking as tracking_package

    importlib.import_module("pcl.tracking.upload")
    assert callable(tracking_package.upload) and tracking_package.upload.__module__ == "pcl.tracking.upload"
