"""The Sacred experiment scripts: every table and ablation runs its smoke grid on both stores; config handling.

Scripts are imported and driven in-process (experiments.common.run_script, the Python twin of the command line);
one test runs the real command line in a subprocess.
"""
from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.common import expand, run_script
from pcl import results, tracking
from experiments import registry
from pcl import schema
from pcl.tracking import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# every registered script (experiments.registry); the fast tier runs the first one's grid, CI every one
SCRIPTS = [pytest.param(s.module, marks=() if i == 0 else pytest.mark.slow)
           for i, s in enumerate(registry.SCRIPTS.values())]


@pytest.fixture(params=["file", pytest.param("mongo", marks=pytest.mark.slow)])
def store(request, tmp_path):
    updates = {"results_dir": str(tmp_path / "results"), "checkpoint_root": str(tmp_path / "ck")}
    if request.param == "file":
        return {"kind": "file", "updates": updates, "read": updates["results_dir"]}
    url = request.getfixturevalue("mongo_url")
    return {"kind": "mongo", "updates": dict(updates, mongo_url=url), "read": url}


def smoke_updates(module) -> dict:
    """The comparison tables' method axis as the script states it (its default grid)."""
    for attr in ("TABLE_METHODS", "STUDENT_METHODS"):
        if hasattr(module, attr):
            return {"method": list(getattr(module, attr))}
    return {}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs_its_smoke_grid(script, store):
    module = importlib.import_module(script)
    assert "Reproduces" in module.__doc__  # each script says which paper result it reproduces
    updates = {**store["updates"], **smoke_updates(module)}
    plan = run_script(module.ex, updates, ["smoke"], command="plan")
    report = run_script(module.ex, updates, ["smoke"])
    assert isinstance(report, tracking.GridReport)
    assert [r.status for r in report.runs] == ["COMPLETED"] * len(plan), [r.error for r in report.runs]
    assert report.exit_code == 0
    recs = {r["config"]["run_key"]: r for r in results.iter_records(store["read"])}
    assert set(recs) == {p["run_key"] for p in plan}  # one record per planned run, nothing else
    for p in plan:
        rec = recs[p["run_key"]]
        assert rec["status"] == "COMPLETED" and rec["config"]["label"] == p["label"]
        assert rec["config"]["dataset"] == "synthetic" and rec["config"]["backbone"] == "tiny_resnet8"
        assert rec["result"]["deployed/top1_err"] >= 0
    check = CHECKS.get(script.rsplit(".", 1)[1])
    if check:
        check(module, plan, recs)
    # a second start finds everything COMPLETED and records nothing new
    rerun = run_script(module.ex, updates, ["smoke"])
    assert {r.status for r in rerun.runs} == {"SKIPPED"}
    assert len(list(results.iter_records(store["read"]))) == len(plan)


def _check_table2(module, plan, recs):
    assert {p["method"] for p in plan} == set(module.TABLE_METHODS)
    pcl = next(r for r in recs.values() if r["config"]["method"] == "pcl")
    assert "last/top1_err/pcl_e" in pcl["result"]  # PCL-E is a head of the pcl run


def _check_two_stage(module, plan, recs):
    teacher = plan[0]
    assert teacher["label"].startswith("teacher")
    students = [p for p in plan if p["teacher_run_key"]]
    assert len(students) == ("kd" in module.STUDENT_METHODS)
    for student in students:
        assert student["teacher_run_key"] == teacher["run_key"]
        info = recs[student["run_key"]]["info"]
        assert info["teacher_path"] == recs[teacher["run_key"]]["info"]["deployed_path"]
        assert "teacher_path" not in recs[student["run_key"]]["config"]["options"]  # a path: not in the config
        assert "last/top1_err/teacher" in recs[student["run_key"]]["result"]


def _check_components(module, plan, recs):
    got = {recs[p["run_key"]]["config"]["label"].rsplit("/", 1)[0]:
           {k: recs[p["run_key"]]["config"]["options"][k] for k in ("ensemble_teacher", "mean_teacher",
                                                                    "multi_input")} for p in plan}
    assert got == module.VARIANTS


def _check_mean_teacher(module, plan, recs):
    deployed = {recs[p["run_key"]]["config"]["options"]["peer_teacher"]: recs[p["run_key"]]["info"]["deployed_head"]
                for p in plan}
    assert deployed["live_others"] == "peer1" and deployed["mean_others"] == "mean_peer1"
    scaled = {schema.scale_ema_decay(0.999, p["epochs"] * schema.steps_per_epoch(p)) for p in plan}
    assert {recs[p["run_key"]]["config"]["options"]["ema_decay"] for p in plan} == scaled | {1.0}


def _check_ensemble_teacher(module, plan, recs):
    assert sorted(r["config"]["options"]["ensemble_form"] for r in recs.values()) == sorted(module.FORMS)


def _check_peers(module, plan, recs):
    by_m = {r["config"]["peers"]: r["info"]["parameter_counts"]["params_train"] for r in recs.values()}
    assert sorted(by_m) == [2, 3, 4, 5]
    assert [by_m[m] for m in sorted(by_m)] == sorted(by_m.values())  # more peers, more trained parameters
    assert len({r["info"]["parameter_counts"]["params_deployed"] for r in recs.values()}) == 1


def _check_deployed_head(module, plan, recs):
    (rec,) = recs.values()
    assert {f"last/top1_err/{h}" for h in module.HEADS} <= set(rec["result"])


CHECKS = {"table2": _check_table2, "two_stage": _check_two_stage, "components": _check_components,
          "mean_teacher": _check_mean_teacher, "ensemble_teacher": _check_ensemble_teacher, "peers": _check_peers,
          "deployed_head": _check_deployed_head}


# ---- config handling ---------------------------------------------------------------------------------------
def test_table2_plans_the_whole_table_and_one_cell():
    from experiments import table2

    one = run_script(table2.ex, {"method": "pcl", "backbone": "resnet32", "seeds": [0]}, command="plan")
    assert len(one) == 1
    cell = one[0]
    assert (cell["method"], cell["backbone"], cell["seed"], cell["dataset"]) == ("pcl", "resnet32", 0, "cifar100")
    assert (cell["epochs"], cell["milestones"], cell["batch_size"], cell["weight_decay"]) == (300, [150, 225], 128,
                                                                                              5e-4)
    methods = list(table2.TABLE_METHODS)
    whole = run_script(table2.ex, {"dataset": "cifar10", "method": methods}, command="plan")
    assert len(whole) == len(methods) * len(table2.TABLE_BACKBONES) * 3
    assert len({p["run_key"] for p in whole}) == len(whole)
    cells = len(methods) * len(table2.TABLE_BACKBONES)
    assert [p["seed"] for p in whole[:cells]] == [0] * cells  # seed-major order
    assert "pcl/resnet32" in {p["label"] for p in whole}
    # the same experiment from another script has the same run_key (done once, used by both)
    from ablations import components

    pcl_cell = next(p for p in run_script(components.ex, {"seeds": [0]}, command="plan")
                    if p["label"].startswith("+ peer mean teacher"))
    assert pcl_cell["run_key"] == cell["run_key"]


@pytest.mark.parametrize("name", list(registry.SCRIPTS))
def test_a_plan_is_each_run_validated_alone(name):
    """expand validates each cell once and only reseeds it for the other seeds: every run must equal the same
    config validated on its own (seed, run_key, a teacher's run_key), and every run_key must differ."""
    for named in ([], ["smoke"]):
        plan = registry.plan(name, {"seeds": [0, 3, 1]}, named)
        assert [r["seed"] for r in plan][:1] == [0] and {r["seed"] for r in plan} == {0, 1, 3}
        alone = [tracking.normalize_run_config({**r, "run_key": None}) for r in plan]
        assert plan == alone
        assert len({r["run_key"] for r in plan}) == len(plan)


@pytest.mark.parametrize("name", list(registry.SCRIPTS))
def test_every_script_plans_its_default_grid_on_the_synthetic_stand_in(name):
    """Every script takes dataset=synthetic (its smoke runs; the launcher's and status's --datasets synthetic):
    each default backbone is declared for it (ImageNet's resnet18 was not, and the whole selection failed)."""
    plan = registry.plan(name, {"dataset": "synthetic", "seeds": [0]}, [])
    assert plan and {r["dataset"] for r in plan} == {"synthetic"}


def test_named_configs_quick_and_smoke():
    from experiments import imagenet, table2

    quick = run_script(table2.ex, {"method": "pcl", "backbone": "resnet32"}, ["quick"], command="plan")
    assert {(p["epochs"], p["train_subset"], tuple(p["milestones"])) for p in quick} == {(10, 5000, (5, 8))}
    assert [p["seed"] for p in quick] == [0, 1, 2]
    smoke = run_script(table2.ex, {"method": "pcl"}, ["smoke"], command="plan")
    assert [(p["dataset"], p["backbone"], p["epochs"], p["seed"]) for p in smoke] == [
        ("synthetic", "tiny_resnet8", 1, 0)]
    im = run_script(imagenet.ex, {"method": "pcl", "seeds": [0]}, command="plan")[0]
    assert (im["dataset"], im["backbone"], im["epochs"], im["milestones"], im["batch_size"]) == (
        "imagenet", "resnet18", 90, [30, 60], 256)


@pytest.mark.parametrize("updates, key", [
    ({"epochs": -1}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"peers": 1}, "peers"),
    ({"method": "nope"}, "method"),
    ({"method": ["pcl", "nope"]}, "method"),
    ({"backbone": "resnet9000"}, "backbone"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"options": {"temprature": 3.0}}, "options.temprature"),
    ({"options": {"temperature": "hot"}}, "options.temperature"),
    ({"options": {"peers": 4}}, "options.peers"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"seed": 3}, "seed"),
    ({"lr": -0.1}, "lr"),
])
def test_bad_config_fails_naming_the_key_before_anything_runs(tmp_path, updates, key):
    from experiments import table2

    updates = {"method": "pcl", "results_dir": str(tmp_path / "results"),
               "checkpoint_root": str(tmp_path / "ck"), **updates}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_script(table2.ex, updates, ["smoke"])
    assert not (tmp_path / "results").exists() and not (tmp_path / "ck").exists()


def test_ablation_grid_refuses_to_override_what_it_varies():
    from ablations import components

    with pytest.raises(ConfigError, match=r"options\.multi_input"):
        run_script(components.ex, {"options": {"multi_input": False}}, command="plan")
    plan = run_script(components.ex, {"options": {"temperature": 4.0}, "seeds": [0]}, command="plan")
    # the cells without a KD term (no teacher) train alike at any temperature: the unset one, one run_key
    assert {(p["options"]["ensemble_teacher"] or p["options"]["mean_teacher"], p["options"]["temperature"])
            for p in plan} == {(True, 4.0), (False, 3.0)}


def test_options_apply_only_to_the_methods_that_have_them():
    from experiments import table2

    plan = run_script(table2.ex, {"method": ["baseline", "pcl"], "backbone": "resnet32", "seeds": [0],
                                  "options": {"ema_decay": 0.99}}, command="plan")
    by_method = {p["method"]: p["options"] for p in plan}
    assert by_method["baseline"] == {} and by_method["pcl"]["ema_decay"] == 0.99
    with pytest.raises(ConfigError, match=r"options\.ema_decay: not an option of any method"):
        run_script(table2.ex, {"method": "baseline", "options": {"ema_decay": 0.99}}, command="plan")
    with pytest.raises(ConfigError, match="grid axis"):
        expand("table2", table2.grid, {**run_script(table2.ex, {"method": "pcl"}, command="plan")[0],
                                       "backbone": 3, "method": "pcl", "seeds": [0], "results_dir": "r",
                                       "mongo_url": None, "db_name": None, "seed": 0})


@pytest.mark.slow  # waits for the server-selection time-out
def test_command_line_unreachable_mongo_fails_fast_and_never_shows_the_password(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "Cl1-Secret-77"
    args = [sys.executable, "experiments/table2.py", "with", "smoke", "method=pcl",
            f"mongo_url=mongodb://bob:{secret}@127.0.0.1:{port}/?directConnection=true",
            f"results_dir={tmp_path / 'results'}", f"checkpoint_root={tmp_path / 'ck'}"]
    start = time.monotonic()
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    elapsed = time.monotonic() - start
    assert out.returncode != 0
    assert "unreachable" in out.stderr and "bob:***@" in out.stderr
    assert "Traceback" not in out.stderr  # a message, not a stack trace
    assert secret not in out.stdout + out.stderr
    assert elapsed < 30  # interpreter start-up + a 2.5 s server-selection timeout
    assert not (tmp_path / "results").exists() and not (tmp_path / "ck").exists()
    shown = subprocess.run([sys.executable, "experiments/table2.py", "print_config", "with", "smoke",
                            f"mongo_url=mongodb://bob:{secret}@127.0.0.1:{port}/"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "mongo_url = None" in shown.stdout
    assert secret not in shown.stdout + shown.stderr
