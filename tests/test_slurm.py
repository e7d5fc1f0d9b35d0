"""The SLURM launcher on a real single-node cluster (slurm/local_cluster.sh): real sbatch submissions of smoke runs
on the CPU, records in the file store and MongoDB (the conftest's wire-protocol server), scancel / scontrol requeue /
USR2 mid-run and resume, a refused job, two runs packed in one job; plus its pure parts (options, comments,
estimates) and every bad-input message.

The session fixture `slurm_cluster` (tests/conftest.py) starts the local cluster when none answers (and stops it
again), saying so on the terminal; the cluster tests skip, with the reason, only where SLURM cannot be installed, and
never under CI=true. The bad-input tests run with a controller that does not answer: they need no cluster. The
launcher is driven in-process (`launch_all.run`, the command line's twin); one test runs the real command line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pcl import registry as declared

from pcl import results
from slurm import cluster, launch_all, options, plan, status

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "slurm" / "profiles" / "local.toml"
EPOCHS = 15  # a smoke run of this many epochs lasts long enough to be stopped mid-run (0.4-1.5 s per epoch)


# ---- the cluster: the session fixture `slurm_cluster` (tests/conftest.py) ------------------------------------
@pytest.fixture
def unreachable_controller(tmp_path, monkeypatch):
    """SLURM's client commands first on PATH, answering as they do when no slurmctld is reachable (the bad-input
    tests must not depend on whether a cluster runs)."""
    bin_dir = tmp_path / "no-controller-bin"
    bin_dir.mkdir()
    for cmd in ("sinfo", "squeue", "sbatch", "scontrol", "sacct", "scancel"):
        script = bin_dir / cmd
        script.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller (connect "
                          "failure)' >&2\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


@pytest.fixture
def work(tmp_path, monkeypatch):
    """Folders of one test and the flags that point the launcher at them (local profile, smoke runs)."""
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # launch_all adds the repo root
    monkeypatch.delenv("PCL_MONGO_URL", raising=False)
    w = {"results": tmp_path / "results", "ckpt": tmp_path / "ckpt", "logs": tmp_path / "logs"}
    w["flags"] = ["--profile", str(PROFILE), "--results-dir", str(w["results"]), "--log-folder", str(w["logs"]),
                  "--named", "smoke", "--set", f"checkpoint_root={w['ckpt']}"]
    yield w
    # a failed test must not leave jobs behind: the next test would (rightly) find their run_keys alive
    jobs = {json.loads(p.read_text()).get("job_id") for p in (w["results"] / "slurm").glob("*.json")}
    jobs.discard(None)
    if jobs and shutil.which("scancel"):
        subprocess.run(["scancel", *sorted(jobs)], capture_output=True, timeout=60)
        for job in jobs:
            wait_gone(job, 60)


def launch(work, *args: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = launch_all.run([*work["flags"], *args], log=lines.append)
    return code, lines


def squeue_ids() -> set[str]:
    return cluster.live_job_ids()


def wait_gone(job_id: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while job_id in squeue_ids() or any(j.startswith(job_id + "_") for j in squeue_ids()):
        assert time.time() < deadline, f"job {job_id} still in the queue after {timeout} s"
        time.sleep(1)


def wait_for(predicate, timeout: float = 120, what: str = "") -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def records(store) -> list[dict]:
    """Every attempt once, with the suite's status (a preemption is recorded INTERRUPTED + info.preempted)."""
    return [{**r, "status": results.run_status(r)} for r in results.unique_attempts(list(results.iter_records(store)))]


def ledger(work, key: str) -> dict:
    return json.loads((work["results"] / "slurm" / f"{key}.json").read_text())


def sacct(job_id: str, timeout: float = 30) -> list[str]:
    """sacct's rows of a job; accounting reaches slurmdbd a little after the job ends, so ask for a while."""
    deadline = time.time() + timeout
    while True:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,Comment"],
                             capture_output=True, text=True, timeout=30)
        rows = out.stdout.strip().splitlines()
        if (rows and all("COMPLETED" in r or "FAILED" in r or "CANCELLED" in r for r in rows)) or time.time() > deadline:
            return rows
        time.sleep(1)


def job_base(job_id: str) -> str:
    return str(job_id).split("_")[0]


# ---- pure parts: fast ------------------------------------------------------------------------------------------
def test_time_formats_and_profile_errors(tmp_path):
    assert [options.parse_time(v) for v in ("30", "01:30:00", "2-00:00:00", "10:30", 45)] == [30, 90, 2880, 11, 45]
    for bad in ("soon", "0", "-5"):
        with pytest.raises(options.OptionsError, match="'time'"):
            options.parse_time(bad)
    prof = tmp_path / "p.toml"
    prof.write_text('partition = "gpu"\ncpus_per_tasks = 4\n')
    with pytest.raises(options.OptionsError, match=r"unknown key\(s\) 'cpus_per_tasks'.*allowed: executor"):
        options.load_profile(prof)
    prof.write_text('executor = "auto"\n')
    with pytest.raises(options.OptionsError, match="'executor'='auto' is invalid: must be one of slurm, local"):
        options.load_profile(prof)
    prof.write_text('partition = "gpu\n')
    with pytest.raises(options.OptionsError, match="is not valid TOML"):
        options.load_profile(prof)
    prof.write_text('[backbone.wrn20_9]\ntime = "48:00:00"\n')
    with pytest.raises(options.OptionsError, match=r"\[backbone.wrn20_9\] names an unknown backbone; known: .*wrn20_8"):
        options.load_profile(prof)


def test_example_profiles_load_and_big_backbones_get_more_time():
    gpu = options.load_profile(ROOT / "slurm" / "profiles" / "gpu_cluster.toml")
    small = gpu.resources_for({"dataset": "cifar100", "backbone": "resnet32"})
    wide = gpu.resources_for({"dataset": "cifar100", "backbone": "wrn20_8"})
    imagenet = gpu.resources_for({"dataset": "imagenet", "backbone": "resnet18"})
    assert small["gpus_per_task"] == 1 and small["time"] == "24:00:00"
    assert gpu.time_minutes(wide["time"]) > gpu.time_minutes(small["time"])
    assert gpu.time_minutes(imagenet["time"]) > gpu.time_minutes(wide["time"]) and imagenet["cpus_per_task"] == 16
    local = options.load_profile(PROFILE)
    assert local.executor == "slurm" and local.gpus_per_task == 0


def test_job_comment_names_the_run_keys_of_each_array_task():
    comment = cluster.encode_comment([["a1"], ["b2", "c3"], ["d4"]])
    assert comment == "pcl:a1,b2+c3,d4"
    assert cluster.decode_comment(comment, "1") == ["b2", "c3"]
    assert cluster.decode_comment(comment, "2") == ["d4"]
    assert cluster.decode_comment("pcl:k9", "N/A") == ["k9"]
    assert cluster.decode_comment("someone else's job", "0") == []


def test_set_values_parse_like_sacred_and_the_mongo_url_is_refused():
    assert plan.parse_sets(["epochs=10", "options.beta=0.5", "seeds=[0, 1]", "device=cpu", "force=true",
                            "milestones=None"]) == {"epochs": 10, "options": {"beta": 0.5}, "seeds": [0, 1],
                                                    "device": "cpu", "force": True, "milestones": None}
    with pytest.raises(plan.SelectionError, match=r"mongo_url.*\$PCL_MONGO_URL"):
        plan.parse_sets(["mongo_url=mongodb://u:p@h/db"])
    with pytest.raises(plan.SelectionError, match="must be KEY=VALUE"):
        plan.parse_sets(["epochs"])


def test_gpu_hours_use_measured_rows_and_the_stated_rule(tmp_path):
    table = plan.load_epoch_times()

    def row(backbone, method, path):
        hit = table[(table.backbone == backbone) & (table.method == method) & (table.path == path)]
        return float(hit.images_per_s.iloc[0]) if len(hit) else None

    for path in ("graph", "eager"):
        assert plan.throughput(table, "resnet32", "pcl", path) == (row("resnet32", "pcl", path), "measured")
        base, pcl = row("resnet32", "baseline", path), row("resnet32", "pcl", path)
        # pcl/baseline on resnet32 x resnet110's baseline on the same path
        ips, how = plan.throughput(table, "resnet110", "pcl", path)
        assert ips == pytest.approx(row("resnet110", "baseline", path) * pcl / base)
        assert how.startswith("rule: method/baseline")
        # no row for the backbone: resnet32's baseline row / the backbone's declared cost, x the method's ratio
        ips, how = plan.throughput(table, "tiny_resnet8", "dml", path)
        tiny = declared.backbone("tiny_resnet8").relative_cost
        assert ips == pytest.approx(base / tiny * row("resnet32", "dml", path) / base)
        assert "backbone's declared cost" in how
        # no measured row of the method at all: its declared cost relative to the baseline
        for name, spec in declared.methods().items():
            if row("resnet32", name, path) is None:
                ips, how = plan.throughput(table, "resnet110", name, path)
                assert ips == pytest.approx(row("resnet110", "baseline", path) / spec.relative_cost)
                assert "method's declared cost" in how
    assert row("resnet32", "pcl", "graph") > row("resnet32", "pcl", "eager")
    # each run is costed on the path it will train: the default (auto) is graph for CIFAR on one GPU, eager with
    # fast_path=eager (and on the CPU, with several GPUs, on ImageNet: pcl.schema.planned_fast_path)
    cfg = {"backbone": "resnet32", "method": "pcl", "dataset": "cifar100", "epochs": 300, "train_subset": None,
           "fast_path": "auto", "device": "auto", "gpus": 1}
    fast, eager = plan.Planned(cfg, ["table2"]), plan.Planned({**cfg, "fast_path": "eager"}, ["table2"])
    plan.estimate([fast, eager], table)
    for run, path in ((fast, "graph"), (eager, "eager")):
        assert run.gpu_hours == pytest.approx(300 * 50_000 / row("resnet32", "pcl", path) * plan.EVAL_OVERHEAD / 3600)
    # a file from before the path column is all eager: its figures stand in for the graph path too
    before = tmp_path / "epoch_times.csv"
    table[table.path == "eager"].drop(columns="path").to_csv(before, index=False)
    ips, how = plan.throughput(plan.load_epoch_times(before), "resnet32", "pcl", "graph")
    assert ips == row("resnet32", "pcl", "eager") and how == "measured (no graph rows: eager figures)"
    # rows of another card beside them are not mixed in: the rule's ratios would mix two cards' speeds
    other = table.head(3).assign(card="Another GPU", images_per_s=1.0)
    pd.concat([table, other]).to_csv(before, index=False)
    kept = plan.load_epoch_times(before)
    assert set(kept.card) == set(table.card) and list(kept.images_per_s.astype(float)) == list(table.images_per_s)
    pd.concat([other.assign(backbone=other.backbone + "_" + str(i)) for i in range(len(table))]).to_csv(before,
                                                                                                       index=False)
    assert set(plan.load_epoch_times(before).card) == {"Another GPU"}  # the card with the most rows


@pytest.mark.parametrize("args, expected", [
    (["--tables", "table9"], "--tables 'table9' is unknown; known: table2, imagenet"),
    (["--methods", "pcl,foo"], "--methods 'foo' is unknown; known: baseline"),
    (["--backbones", "resnet33"], "--backbones 'resnet33' is unknown; known: densenet40_12"),
    (["--datasets", "mnist"], "--datasets 'mnist' is unknown; known: cifar10, cifar100, imagenet, synthetic"),
    (["--methods", "pcll"], "; did you mean 'pcl'?"),  # a typo: the closest known name
    (["--datasets", "cifar-100"], "; did you mean 'cifar100'?"),
    (["--profile", "locl"], "the shipped profiles: slurm/profiles/gpu_cluster.toml, slurm/profiles/local.toml"),
    (["--seeds", "0,x"], "--seeds '0,x' is invalid: must be comma-separated integers"),
    (["--set", "mongo_url=mongodb://a:b@host/db"], "not allowed: the MongoDB URL goes only through $PCL_MONGO_URL"),
    (["--executor", "slurm", "--time", "soon"], "'time'='soon' is invalid"),
    (["--cpus-per-task", "0"], "'cpus_per_task'=0 is invalid: must be an integer >= 1"),
    (["--set", "epochs=0"], "config key 'epochs'=0 is invalid"),
    (["--set", "gpus=2", "--set", "batch_norm=sync", "--gpus-per-task", "0"],
     "batch_norm='sync' needs CUDA, but its jobs get no GPU (gpus_per_task=0)"),
    (["--set", "device=cuda", "--gpus-per-task", "0", "--executor", "local"], "device='cuda' needs CUDA"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, expected, unreachable_controller):
    results_dir = tmp_path / "results"
    code = launch_all.run(["--results-dir", str(results_dir), "--named", "smoke", "--tables", "table2", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and expected in err and "\n" not in err, err
    assert "a:b@" not in err
    assert not results_dir.exists()


def test_malformed_profile_and_missing_sbatch(tmp_path, capsys, monkeypatch):
    prof = tmp_path / "bad.toml"
    prof.write_text("gpus_per_task = 'one'\n")
    code = launch_all.run(["--profile", str(prof), "--tables", "table2", "--named", "smoke"])
    assert code == 2
    assert "key 'gpus_per_task'='one' has the wrong type: must be int" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # python, but no SLURM client
    code = launch_all.run(["--profile", str(PROFILE), "--results-dir", str(tmp_path / "r"), "--named", "smoke",
                           "--tables", "table2", "--methods", "baseline"])
    err = capsys.readouterr().err
    assert code == 2 and "sbatch is not on PATH" in err and "--executor local" in err
    assert not (tmp_path / "r" / "slurm").exists()


@pytest.mark.slow
def test_dry_run_of_everything_lists_the_whole_reproduction_with_gpu_hours(capsys, tmp_path):
    code = launch_all.run(["--dry-run", "--json", "--executor", "local", "--results-dir", str(tmp_path / "r")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    tables = {t["table"]: t for t in report["tables"]}
    assert set(tables) == {*__import__("experiments.registry").registry.SCRIPTS, "total"}
    assert tables["table2"]["runs"] == 8 * 5 * 2 * 3  # methods x backbones x CIFAR-10/100 x seeds
    assert tables["imagenet"]["runs"] == 5 * 3
    assert tables["total"]["runs"] == len({r["run_key"] for r in report["runs"]}) == tables["total"]["to submit"]
    assert tables["total"]["runs"] < sum(t["runs"] for n, t in tables.items() if n != "total")  # shared cells once
    assert 500 < tables["total"]["gpu_h_all"] < 5000
    assert all(r["gpu_hours"] > 0 and r["estimate"] for r in report["runs"])


# ---- the real cluster ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_grid_runs_on_slurm_with_the_teacher_first_and_a_second_launch_submits_nothing(
        slurm_cluster, work, mongo_url, monkeypatch):
    monkeypatch.setenv("PCL_MONGO_URL", mongo_url)
    code, lines = launch(work, "--tables", "two_stage", "--wait")
    assert code == 0, lines
    planned = plan.build_plan(plan.Selection(tables=["two_stage"], named=["smoke"]))
    keys = {r.run_key for r in planned}
    student = next(r for r in planned if r.cfg["teacher_run_key"])
    assert len(keys) == 3 and student.cfg["teacher_run_key"] in keys
    file_recs, mongo_recs = records(str(work["results"])), records(results.connect(mongo_url))
    for recs in (file_recs, mongo_recs):
        assert sorted(r["config"]["run_key"] for r in recs) == sorted(keys)
        assert {r["status"] for r in recs} == {"COMPLETED"}
    assert all(r["config"]["checkpoint_root"] == str(work["ckpt"]) for r in file_recs)
    # the student's job waited for its teacher's job (afterok dependency), in a second submission
    teacher_job = ledger(work, student.cfg["teacher_run_key"])["job_id"]
    student_job = ledger(work, student.run_key)["job_id"]
    assert job_base(student_job) != job_base(teacher_job)
    assert any(f"after {teacher_job}" in line for line in lines), lines
    row = sacct(job_base(teacher_job))
    assert row and "COMPLETED" in row[0] and student.cfg["teacher_run_key"] in row[0]  # comment carries run_keys
    # second launch: everything COMPLETED -> nothing submitted
    before = sacct_all()
    code, lines = launch(work, "--tables", "two_stage")
    assert code == 0 and "nothing to submit" in lines and "3 run(s): 3 completed" in lines[0]
    assert sacct_all() == before


def sacct_all() -> list[str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", "now-1days", "-o", "JobID"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.split()


@pytest.mark.slow  # starts the local SLURM cluster
def test_queued_runs_are_not_submitted_twice(slurm_cluster, work, capsys):
    code, lines = launch(work, "--tables", "table2", "--methods", "baseline", "--sbatch-line=--hold")
    assert code == 0, lines
    key = next(p.name[:-5] for p in (work["results"] / "slurm").glob("*.json"))
    job = ledger(work, key)["job_id"]
    assert cluster.queued_runs()[key].state == "PENDING"
    try:
        code, lines = launch(work, "--tables", "table2", "--methods", "baseline")
        assert code == 0 and "1 run(s): 1 queued" in lines[0] and "nothing to submit" in lines
        code = launch_all.run([*work["flags"], "--tables", "table2", "--methods", "baseline", "--dry-run",
                               "--json"])
        report = json.loads(capsys.readouterr().out)
        assert [(r["run_key"], r["status"]) for r in report["runs"]] == [(key, "queued")]
    finally:
        subprocess.run(["scancel", job], check=True)
    assert records(str(work["results"])) == []  # it never ran


def _launch_long_runs(work, seeds: str, *extra: str) -> dict[str, str]:
    """Submit dml smoke runs (one per seed) long enough to be stopped mid-run; {run_key: job id} once every run
    has saved its first epoch."""
    code, lines = launch(work, "--tables", "table2", "--methods", "dml", "--seeds", seeds, "--set",
                         f"epochs={EPOCHS}", *extra)
    assert code == 0, lines
    jobs = {p.name[:-5]: ledger(work, p.name[:-5])["job_id"] for p in (work["results"] / "slurm").glob("*.json")}
    wait_for(lambda: all((work["ckpt"] / key / "checkpoint.pt").exists() for key in jobs), 240,
             "the first checkpoint of every run")
    return jobs


def _kill_job_python(job: str) -> None:
    """SIGKILL to the job's python process (like a node dying): the run has no chance to record anything.
    (`scancel -s KILL` would not do: SLURM turns it into its TERM-then-KILL cancel sequence.)"""
    raw = subprocess.run(["squeue", "-h", "-j", job, "-o", "%A|%T"], capture_output=True, text=True).stdout.strip()
    assert raw.endswith("|RUNNING"), f"job {job} is not running any more: {raw!r}"
    listed = subprocess.run(["scontrol", "listpids", raw.split("|")[0]], capture_output=True, text=True,
                            check=True).stdout
    pids = [int(line.split()[0]) for line in listed.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    runners = [p for p in pids if "submitit.core._submit" in Path(f"/proc/{p}/cmdline").read_bytes().decode()]
    assert runners, listed
    for pid in runners:
        os.kill(pid, 9)


def _release_requeued(job: str) -> None:
    """SLURM holds a requeued job for about two minutes (BeginTime): release it a few seconds from now. Not now:
    the node revokes the job's credential when it is requeued, to the second, and a start within that second
    is killed ("Killing non-startable batch JobId=14: Job credential revoked", seen under load in CI)."""
    wait_for(lambda: "PENDING" in subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                                                 text=True).stdout, 60, f"job {job} requeued")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+3"], check=True)


def _by_key(work) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(records(str(work["results"])), key=lambda r: r["start_time"]):
        out.setdefault(r["config"]["run_key"], []).append(r)
    return out


@pytest.mark.slow
def test_runs_stopped_mid_run_show_preempted_or_dead_and_the_next_launch_resumes_each_once(
        slurm_cluster, work, capsys):
    jobs = _launch_long_runs(work, "3,4")
    (cancelled, c_job), (killed, k_job) = sorted(jobs.items(), key=lambda kv: kv[1])
    subprocess.run(["scancel", c_job], check=True)  # SIGTERM: the run records PREEMPTED
    _kill_job_python(k_job)  # no record update: stays RUNNING
    wait_gone(c_job)
    wait_gone(k_job)
    report = {r["run_key"]: r for r in status.collect(status_args(work, "--seeds", "3,4"))["runs"]}
    assert report[cancelled]["status"] == "PREEMPTED", report[cancelled]
    assert report[killed]["status"] == "dead" and f"job {k_job} gone" in report[killed]["detail"]
    assert report[killed]["log"] == ledger(work, killed)["stderr"] and report[killed]["log"].endswith(".err")
    assert status.run(status_args(work, "--seeds", "3,4", raw=True)) == 0
    text = capsys.readouterr().out
    assert "dead" in text and f"log: {ledger(work, killed)['stderr']}" in text
    code, lines = launch(work, "--tables", "table2", "--methods", "dml", "--seeds", "3,4", "--set",
                         f"epochs={EPOCHS}", "--wait")
    assert code == 0 and "2 run(s): 2 to submit" in lines[0], lines
    recs = _by_key(work)
    assert [r["status"] for r in recs[cancelled]] == ["PREEMPTED", "COMPLETED"]
    assert [r["status"] for r in recs[killed]] == ["RUNNING", "COMPLETED"]  # the dead attempt's record stays
    for key in jobs:
        done = recs[key][-1]
        assert done["info"]["resumed_from_epoch"] >= 1 and done["info"]["completed_epochs"] == EPOCHS
    after = status.collect(status_args(work, "--seeds", "3,4"))
    assert {r["status"] for r in after["runs"]} == {"COMPLETED"}
    code, lines = launch(work, "--tables", "table2", "--methods", "dml", "--seeds", "3,4", "--set",
                         f"epochs={EPOCHS}")
    assert code == 0 and "nothing to submit" in lines


@pytest.mark.slow
def test_requeued_jobs_resume_from_their_checkpoints(slurm_cluster, work):
    jobs = _launch_long_runs(work, "5,6")
    (requeued, r_job), (signalled, s_job) = sorted(jobs.items(), key=lambda kv: kv[1])
    subprocess.run(["scontrol", "requeue", r_job], check=True)  # SLURM's requeue: SIGTERM, same job again
    subprocess.run(["scancel", "--signal=USR2", s_job], check=True)  # pre-timeout signal: submitit requeues
    for job in (r_job, s_job):
        _release_requeued(job)
    for job in (r_job, s_job):
        wait_gone(job, 240)
    recs = _by_key(work)
    for key, job in jobs.items():
        assert [r["status"] for r in recs[key]] == ["PREEMPTED", "COMPLETED"], key
        assert recs[key][1]["info"]["resumed_from_epoch"] >= 1
        assert ledger(work, key)["job_id"] == job  # the same job ran again
        assert "COMPLETED" in sacct(job)[0]
    log = Path(ledger(work, signalled)["stderr"]).read_text()
    # submitit requeues on USR2 either as a time-out (it calls the checkpoint method and says "Requeued job N") or,
    # when the job is far from its time limit, as a preemption (SLURM: "CANCELLED ... DUE TO JOB REQUEUE"); either
    # way the same job ran again and resumed (the records above)
    assert "SIGUSR2 received" in log
    assert (("Calling checkpoint method" in log and f"Requeued job {s_job}" in log)
            or ("this job is preempted" in log and "DUE TO JOB REQUEUE" in log)), log[-2000:]


def test_a_job_the_cluster_refuses_is_a_clear_error_and_leaves_no_record(slurm_cluster, work, capsys):
    before = sacct_all()
    code, _ = launch(work, "--tables", "table2", "--methods", "baseline", "--cpus-per-task", "64")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cpus_per_task=64 is more than any node of partition 'debug' has (at most" in err
    code, _ = launch(work, "--tables", "table2", "--methods", "baseline", "--partition", "gpu_a100")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "partition 'gpu_a100' does not exist on this cluster; partitions: debug" in err
    # refused by sbatch itself (no node has this feature): sbatch's reason, and what went in (nothing)
    code, _ = launch(work, "--tables", "table2", "--methods", "baseline", "--constraint", "a100")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "the cluster refused the job array" in err and "constraint=a100" in err
    assert "Invalid feature specification" in err
    assert "nothing was submitted" in err and "\n" not in err
    assert sacct_all() == before
    assert records(str(work["results"])) == [] and not (work["results"] / "slurm").exists()


@pytest.mark.slow
def test_two_runs_packed_in_one_job_are_preempted_requeued_and_resumed_together(slurm_cluster, work):
    jobs = _launch_long_runs(work, "7,8", "--runs-per-gpu", "2")
    assert len(set(jobs.values())) == 1  # one job (one GPU) for both runs
    job = next(iter(jobs.values()))
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    _release_requeued(job)
    wait_gone(job, 240)
    recs = _by_key(work)
    assert set(recs) == set(jobs)
    for key in jobs:  # each run: its own record per attempt, its own checkpoint
        assert [r["status"] for r in recs[key]] == ["PREEMPTED", "COMPLETED"], key
        assert recs[key][1]["info"]["resumed_from_epoch"] >= 1
        assert recs[key][1]["info"]["checkpoint_dir"].endswith(key)
    row = sacct(job)[0]
    assert "COMPLETED" in row and sorted(row.split("pcl:")[1].split("+")) == sorted(jobs)


def status_args(work, *extra: str, raw: bool = False):
    argv = ["--profile", str(PROFILE), "--results-dir", str(work["results"]), "--named", "smoke",
            "--set", f"checkpoint_root={work['ckpt']}", "--set", f"epochs={EPOCHS}", "--tables", "table2",
            "--methods", "dml", *extra]
    return argv if raw else status_namespace(argv)


def status_namespace(argv: list[str]):
    """slurm/status.py's arguments as its `collect` takes them."""
    parser = status.argparse.ArgumentParser()
    launch_all.add_store_args(parser)
    launch_all.add_selection_args(parser)
    args = parser.parse_args(argv)
    for key in launch_all.FLAG_OPTIONS:
        setattr(args, key, None)
    return args


def test_the_command_line_prints_one_line_and_exits_2_on_an_unknown_table(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "slurm" / "launch_all.py"), "--tables", "table2,nope",
                          "--results-dir", str(tmp_path / "r")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: --tables 'nope' is unknown; known: table2, imagenet, "
                                               "two_stage, ablations.components, ablations.mean_teacher, "
                                               "ablations.ensemble_teacher, ablations.peers, "
                                               "ablations.deployed_head"]


def test_a_running_record_is_alive_only_with_a_fresh_heartbeat_and_a_live_job():
    import datetime as dt

    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    beat = (now - dt.timedelta(seconds=30)).isoformat()
    state = plan.RunState([{"status": "RUNNING", "heartbeat": beat, "start_time": beat}])
    run = lambda: plan.Planned({"run_key": "k1", "label": "x"}, ["table2"])  # noqa: E731
    cases = [({"job_id": "5_1"}, {"5_1"}, 300, "alive"),  # job in the queue, fresh heartbeat
             ({"job_id": "5_1"}, {"6"}, 300, "to submit"),  # its job is gone: dead
             ({"job_id": "5_1"}, {"5_1"}, 10, "to submit"),  # heartbeat stale: dead
             ({}, None, 300, "alive")]  # no SLURM (local executor): the heartbeat decides
    for entry, live, stale, expected in cases:
        r = run()
        plan.classify([r], {"k1": state}, {}, live, {"k1": entry}, stale_after_s=stale, max_attempts=3, now=now)
        assert r.status == expected, (entry, live, stale)
    failed = plan.RunState([{"status": "FAILED", "start_time": beat}] * 2)
    r = run()
    plan.classify([r], {"k1": failed}, {}, set(), {}, stale_after_s=300, max_attempts=2, now=now)
    assert r.status == "failed" and "2 FAILED attempts (max_attempts=2)" in r.detail


@pytest.mark.slow
def test_a_run_that_keeps_failing_stops_after_max_attempts_with_its_log_and_error(slurm_cluster, work, tmp_path):
    # lr=1e30 makes the loss non-finite in the first epoch: the run FAILS (bad data would be refused before any run)
    args = ("--tables", "table2", "--methods", "baseline", "--set", "lr=1e30", "--max-attempts", "1")
    code, lines = launch(work, *args, "--wait")
    assert code == 1 and any("failed" in line and "log: " in line for line in lines), lines
    recs = records(str(work["results"]))
    assert [r["status"] for r in recs] == ["FAILED"]
    key = recs[0]["config"]["run_key"]
    argv = ["--profile", str(PROFILE), "--results-dir", str(work["results"]), "--named", "smoke", "--set",
            f"checkpoint_root={work['ckpt']}", "--set", "lr=1e30", "--tables", "table2", "--methods", "baseline"]
    sargs = status_namespace(argv)
    sargs.max_attempts = 1
    row = status.collect(sargs)["runs"][0]
    assert row["status"] == "FAILED" and row["log"] == ledger(work, key)["stderr"] and Path(row["log"]).is_file()
    assert row["error"] and "Error" in row["error"], row
    before = sacct_all()
    code, lines = launch(work, *args)
    assert code == 0 and "nothing to submit" in lines
    assert any(line.startswith(f"not resubmitted: {key}") and "max_attempts=1" in line for line in lines), lines
    assert sacct_all() == before and len(records(str(work["results"]))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("gpus", [1, 2])
def test_the_local_executor_runs_the_same_jobs_without_slurm(work, gpus):
    """Also a data-parallel run (gpus=2: one job of two local processes), whose --wait reads every task's result."""
    code, lines = launch(work, "--tables", "table2", "--methods", "baseline", "--executor", "local", "--wait",
                         "--set", f"gpus={gpus}")
    assert code == 0 and "1 of 1 job(s) done" in lines[-1], lines
    recs = records(str(work["results"]))
    assert [r["status"] for r in recs] == ["COMPLETED"]
    assert recs[0]["info"]["environment"]["processes"] == str(gpus)
    assert ledger(work, recs[0]["config"]["run_key"])["executor"] == "local"


def test_arrays_are_split_so_that_their_comment_fits_slurm():
    runs = [plan.Planned({"run_key": f"{i:016x}"}, ["table2"]) for i in range(130)]
    for per_gpu in (1, 3):
        arrays = launch_all._arrays(launch_all._tasks(runs, per_gpu))
        assert [r for a in arrays for t in a for r in t] == runs  # every run once, in order
        comments = [cluster.encode_comment([[r.run_key for r in t] for t in a]) for a in arrays]
        assert all(len(c) <= launch_all.MAX_COMMENT for c in comments) and len(arrays) > 1
        assert len(comments[0]) > launch_all.MAX_COMMENT - 17 * per_gpu - 1  # arrays are filled up


@pytest.mark.slow
def test_a_data_parallel_run_is_one_job_of_two_tasks_preempted_requeued_and_resumed(slurm_cluster, work):
    """gpus=2: one job whose two tasks train one run together (gloo on the CPU here, one GPU per task on a GPU
    cluster); task 0 alone writes the records; a USR2 stops both tasks, submitit requeues the job, and the run
    resumes from task 0's checkpoint to one COMPLETED record."""
    jobs = _launch_long_runs(work, "9", "--set", "gpus=2")
    ((key, job),) = jobs.items()
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    _release_requeued(job)
    wait_gone(job, 240)
    recs = _by_key(work)[key]
    assert [r["status"] for r in recs] == ["PREEMPTED", "COMPLETED"]
    assert recs[1]["info"]["resumed_from_epoch"] >= 1 and recs[1]["info"]["completed_epochs"] == EPOCHS
    assert recs[1]["config"]["gpus"] == 2 and recs[1]["info"]["environment"]["processes"] == "2"
    assert [r["info"]["environment"]["slurm_job_id"] for r in recs] == [job, job]  # the record names its job
    steps = subprocess.run(["sacct", "-n", "-P", "-j", job, "-o", "JobID,NTasks,State"], capture_output=True,
                           text=True, timeout=30).stdout.split()
    assert any(s.split("|")[1] == "2" for s in steps if s.split("|")[0].endswith(".0")), steps  # one step, 2 tasks
    leader = Path(ledger(work, key)["stdout"])
    follower = leader.with_name(leader.name.replace("_0_log", "_1_log"))
    assert f"epoch {EPOCHS}/{EPOCHS}" in leader.read_text() and follower.exists()
    assert "epoch " not in follower.read_text()  # the follower trains but prints nothing
    assert "[pcl.tracking] SIGUSR2 received" in leader.with_suffix(".err").read_text()  # rank 0 says it, once
    assert "[pcl.tracking]" not in follower.with_suffix(".err").read_text()


@pytest.mark.slow
def test_a_run_its_job_refuses_is_reported_and_not_resubmitted_until_retried(slurm_cluster, work, capsys):
    """The job finds no CIFAR files where data_root says (the login node does not check data): nothing is
    recorded, the ledger keeps the job's one-line reason, the next launch reports the run `refused` instead of
    submitting it again, status shows the reason, and once the data is there --retry-refused trains it."""
    from tests.helpers_data import write_cifar10

    data = work["results"].parent / "cifar"
    args = ("--tables", "table2", "--methods", "baseline", "--seeds", "0", "--datasets", "cifar10", "--set",
            f"data_root={data}")
    code, lines = launch(work, *args, "--wait")
    assert code == 1, lines
    (key,) = [p.name[:-5] for p in (work["results"] / "slurm").glob("*.json")]
    entry = ledger(work, key)
    assert entry["state"] == "REFUSED" and "config key 'data_root'" in entry["error"], entry
    assert records(str(work["results"])) == []
    code, lines = launch(work, *args)
    assert code == 0 and "1 run(s): 1 refused" in lines[0] and "nothing to submit" in lines, lines
    assert any(line.startswith(f"not resubmitted: {key}") and "--retry-refused" in line for line in lines), lines
    assert launch(work, *args, "--wait")[0] == 1  # --wait: not everything is done
    assert status.render(status.collect(status_namespace(
        ["--profile", str(PROFILE), "--results-dir", str(work["results"]), "--named", "smoke", "--set",
         f"checkpoint_root={work['ckpt']}", *args]))).count(f"refused   {key}") == 1  # the text names it
    # another data_root is another try, although the run_key (official files: neutral) is the same
    other = [a if not a.startswith("data_root=") else f"data_root={data}-elsewhere" for a in args]
    capsys.readouterr()
    code, lines = launch(work, *other, "--dry-run", "--list")
    assert code == 0 and f"{key}  to submit" in capsys.readouterr().out
    argv = ["--profile", str(PROFILE), "--results-dir", str(work["results"]), "--named", "smoke", "--set",
            f"checkpoint_root={work['ckpt']}", *args]
    (row,) = status.collect(status_namespace(argv))["runs"]
    assert row["status"] == "refused" and "config key 'data_root'" in row["detail"]
    write_cifar10(data, per_batch=8)  # 40 training images: a smoke batch of 32 fits
    code, lines = launch(work, *args, "--retry-refused", "--wait")
    assert code == 0, lines
    assert [r["status"] for r in records(str(work["results"]))] == ["COMPLETED"]


def test_a_job_that_ended_before_any_record_is_dead_with_its_log_not_missing(tmp_path):
    """The ledger says its job STARTED the run, the job is gone, no record exists (e.g. MongoDB unreachable when
    the job began): status shows `dead` with the job, instead of `missing` with nothing to look at."""
    run = plan.Planned({"run_key": "0123456789abcdef", "label": "pcl/resnet32"}, ["table2"])
    now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
    started = {"job_id": "77", "state": "STARTED", "stderr": str(tmp_path / "77_0_log.err")}
    column, detail = status.run_status(run, plan.RunState(), {}, set(), started, 300.0, 3, now)
    assert column == "dead" and "job 77 ended before the run wrote a record" in detail
    assert status.run_status(run, plan.RunState(), {}, {"77"}, started, 300.0, 3, now)[0] == "missing"  # still live
    assert status.run_status(run, plan.RunState(), {}, set(), {}, 300.0, 3, now)[0] == "missing"  # never submitted


# ---- what the launcher says (issue 22) ---------------------------------------------------------------------------
def test_an_unreachable_controller_is_one_line_that_says_what_to_do(tmp_path, capsys, unreachable_controller):
    argv = ["--results-dir", str(tmp_path / "r"), "--named", "smoke", "--tables", "table2", "--methods", "baseline"]
    assert launch_all.run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: squeue -h failed: slurm_load_jobs error: Unable to contact slurm controller"), err
    assert "\n" not in err
    for hint in ("`scontrol ping`", "`bash slurm/local_cluster.sh start`", "--executor local"):
        assert hint in err, err
    assert launch_all.run([*argv, "--dry-run"]) == 0  # the dry run plans anyway and says why the queue is unknown
    out = capsys.readouterr().out
    assert "Queue not checked: squeue -h failed" in out and "`scontrol ping`" in out


class _FakeJob:
    """A submitit job that ends at its n-th poll, with a result (a list of run dicts) or an error."""

    def __init__(self, job_id: str, ends_at_poll: int, runs: int = 1, error: Exception | None = None):
        self.job_id, self.ends_at_poll, self.runs, self.error, self.polls = job_id, ends_at_poll, runs, error, 0
        self.paths = type("Paths", (), {"stderr": f"/logs/{job_id}_0_log.err"})()

    def done(self) -> bool:
        self.polls += 1
        return self.polls >= self.ends_at_poll

    def results(self):
        if self.error is not None:
            raise self.error
        return [[{"run_key": f"k{self.job_id}{i}", "status": "COMPLETED"} for i in range(self.runs)]]


def test_wait_says_how_many_runs_completed_failed_and_are_still_running_as_jobs_end():
    jobs = [_FakeJob("11", 1), _FakeJob("12", 2, runs=2, error=RuntimeError(
        "Job failed\nslurm.jobs.RunFailed: run k12 (dml/tiny_resnet8) ended FAILED: loss is nan")), _FakeJob("13", 3)]
    lines: list[str] = []
    code = launch_all.wait(jobs, lines.append, slurm=False, runs_per_job={"12": 2}, poll_s=0)
    assert code == 1
    progress = [line.split(" at ")[0] for line in lines if "still running" in line]
    assert progress == ["1 of 4 run(s) completed, 0 failed, 3 still running or queued (1 of 3 job(s) ended)",
                        "1 of 4 run(s) completed, 2 failed, 1 still running or queued (2 of 3 job(s) ended)",
                        "2 of 4 run(s) completed, 2 failed, 0 still running or queued (3 of 3 job(s) ended)"], lines
    assert any(line.startswith("job 12 failed: slurm.jobs.RunFailed: run k12") and "(log: /logs/12_0_log.err)" in line
               for line in lines), lines
    assert lines[-1].startswith("2 of 3 job(s) done at")


def test_the_dry_run_says_how_many_runs_the_tables_share(tmp_path, capsys):
    argv = ["--dry-run", "--executor", "local", "--named", "smoke", "--results-dir", str(tmp_path / "r")]
    assert launch_all.run([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = sum(t["runs"] for t in report["tables"] if t["table"] != "total")
    total = len(report["runs"])
    shared = sum(len(r["tables"]) > 1 for r in report["runs"])
    assert rows > total and shared > 0
    assert {r["path"] for r in report["runs"]} == {"eager"}  # smoke runs on the CPU: fast_path=auto is eager there
    assert launch_all.run(argv) == 0
    out = capsys.readouterr().out
    assert f"runs costed by the path they train (fast_path; data read from the CPU at eager speed): {total} eager;" \
        in out, out
    assert (f"{shared} of the {total} runs are shared between tables (the same run_key: trained once, counted in "
            f"each table's row): the rows add up to {rows}, the total counts each run once.") in out, out
    assert launch_all.run([*argv, "--tables", "table2"]) == 0
    assert "shared between tables" not in capsys.readouterr().out  # one table: nothing to explain


def test_status_and_the_dry_run_say_why_none_of_the_selection_is_in_the_store(tmp_path, capsys):
    """A newcomer's smoke runs read as nothing done under the paper's plan, and a mistyped --results-dir as a fresh
    store (every run missing, exit 0, not a word): one line now says which, naming the named config the store's
    runs were made with, or that the folder does not exist."""
    def write(store, runs):  # records as the file store writes them
        for i, run in enumerate(runs):
            folder = tmp_path / store / str(i + 1)
            folder.mkdir(parents=True)
            (folder / "run.json").write_text(json.dumps({"status": "COMPLETED", "result": {}, "meta": {},
                                                         "start_time": "2026-01-01T00:00:00", "heartbeat": None}))
            (folder / "config.json").write_text(json.dumps(run.cfg))

    smoke = plan.build_plan(plan.Selection(tables=["table2"], methods=["baseline", "pcl"], named=["smoke"]))
    write("results", smoke)
    # `with smoke epochs=2` (for the figures): the named config and the value that sets them apart, as flags
    write("longer", plan.build_plan(plan.Selection(tables=["table2"], methods=["pcl"], named=["smoke"],
                                                   updates={"epochs": 2})))
    assert status.run(["--executor", "local", "--tables", "table2", "--named", "smoke",
                       "--results-dir", str(tmp_path / "longer")]) == 0
    # only the flags the selection lacks (--named smoke was given)
    assert ("it holds 1 other run(s), 1 of them made with the named config smoke, epochs=2: add --set epochs=2 to "
            "see them.") in capsys.readouterr().out
    assert status.run(["--executor", "local", "--tables", "table2", "--named", "smoke", "--set", "epochs=2",
                       "--results-dir", str(tmp_path / "longer")]) == 0
    assert "None of these runs" not in capsys.readouterr().out
    # nothing left to add: the runs differ from the selection's elsewhere, said by key
    write("other_lr", plan.build_plan(plan.Selection(tables=["table2"], methods=["pcl"], named=["smoke"],
                                                     updates={"lr": 0.05})))
    assert status.run(["--executor", "local", "--tables", "table2", "--methods", "pcl", "--named", "smoke",
                       "--results-dir", str(tmp_path / "other_lr")]) == 0
    assert ("1 of them made with the named config smoke as these, with other values of lr: `python "
            "analysis/make_tables.py` shows") in capsys.readouterr().out
    argv = ["--executor", "local", "--tables", "table2", "--methods", "baseline,pcl"]
    said = (f"None of these runs is in the store yet; it holds {len(smoke)} other run(s), {len(smoke)} of them made "
            "with the named config smoke: add --named smoke to see them.")
    for command in (status.run, lambda a: launch_all.run([*a, "--dry-run"])):
        assert command([*argv, "--results-dir", str(tmp_path / "results")]) == 0
        assert said in capsys.readouterr().out
        assert command([*argv, "--named", "smoke", "--results-dir", str(tmp_path / "results")]) == 0
        assert "None of these runs" not in capsys.readouterr().out  # they are the selection's
        assert command([*argv, "--results-dir", str(tmp_path / "typo")]) == 0
        assert f"Nothing is recorded in the store yet (file store {tmp_path / 'typo'}: no such folder)." \
            in capsys.readouterr().out
        assert command([*argv, "--results-dir", str(tmp_path / "typo"), "--json"]) == 0
        assert "no such folder" in json.loads(capsys.readouterr().out)["note"]
    assert not (tmp_path / "typo").exists()
    # runs of two settings (`with smoke`, then `with smoke epochs=2`): the flags of both (the second was hidden)
    longer = plan.build_plan(plan.Selection(tables=["table2"], methods=["pcl"], named=["smoke"], updates={"epochs": 2}))
    write("both", smoke)
    for i, run in enumerate(longer):
        folder = tmp_path / "both" / str(len(smoke) + i + 1)
        folder.mkdir()
        (folder / "run.json").write_text((tmp_path / "both" / "1" / "run.json").read_text())
        (folder / "config.json").write_text(json.dumps(run.cfg))
    assert status.run([*argv, "--results-dir", str(tmp_path / "both")]) == 0
    assert (f"{len(smoke)} of them made with the named config smoke: add --named smoke to see them; {len(longer)} "
            "more made with the named config smoke, epochs=2: add --named smoke --set epochs=2 to see those.") \
        in capsys.readouterr().out


# ---- where each run stands: a damaged record is skipped by every store alike --------------------------------------
def test_a_damaged_record_is_skipped_by_status_on_mongodb_as_on_a_file_store(mongo_url, tmp_path, capsys):
    """status and the launcher read whole records and check them (pcl.results.check_record), so a record damaged
    outside the fields that say where a run stands (here its result) is skipped and named on MongoDB as on a file
    store, and its run is submitted again: not judged COMPLETED from a few fields (found by a helper: a projection
    of the state fields hid the damage on MongoDB only)."""
    import datetime as dt

    run = {"status": "COMPLETED", "result": {"top1": "x"}, "meta": {"attempt_id": "a1"},
           "start_time": "2026-01-01T00:00:00", "stop_time": "2026-01-01T01:00:00", "heartbeat": None}
    db = results.connect(mongo_url)
    db["runs"].insert_one({"_id": 1, **run, "config": {"run_key": "k"}, "start_time": dt.datetime(2026, 1, 1)})
    folder = tmp_path / "results" / "1"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "config.json").write_text(json.dumps({"run_key": "k"}))
    assert plan.record_states([db]) == {} and plan.record_states([str(tmp_path / "results")]) == {}
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "mongo:" in line and "result[top1]" in line]
    assert [line for line in err.splitlines() if str(folder) in line and "result[top1]" in line]


def test_databases_opened_from_urls_are_freed(mongo_url):
    """Each command call that opens a MongoDB URL gets a database a forked figure worker can open again
    (pcl.results.reopen); one no longer used is freed with its client's threads, not kept for that."""
    import gc
    import threading

    list(results.iter_records(mongo_url))
    gc.collect()
    opened, threads = len(results._OPENED), threading.active_count()
    for _ in range(8):
        db = results.connect(mongo_url)
        assert results.reopenable(db) and not results.reopenable(db.client["other"])
        list(results.iter_records(mongo_url))
        db.client.close()
        del db
    gc.collect()
    assert len(results._OPENED) <= opened
    deadline = time.monotonic() + 10  # a freed client's monitor threads end at their next wake-up
    while threading.active_count() > threads + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert threading.active_count() <= threads + 2


# ---- bad input of the launcher, status and the tracking command: one line, exit 2, nothing written (review) ------
LOCAL = ["--profile", str(PROFILE), "--executor", "local", "--named", "smoke", "--tables", "table2",
         "--methods", "baseline"]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("flag, value, said", [
    # a results folder that cannot be one: the flag's own line (the launcher's and status's --results-dir)
    ("--results-dir", "{file}", "python slurm/launch_all.py: error: argument --results-dir: '{file}' is invalid: "
                                "'{file}' is a file, not a folder"),
    ("--results-dir", "{file}/sub", "python slurm/launch_all.py: error: argument --results-dir: '{file}/sub' is "
                                    "invalid: '{file}' is a file"),
    ("--results-dir", "", "python slurm/launch_all.py: error: argument --results-dir: '' is invalid: an empty path "
                          "names no folder"),
    # one that cannot be written in: found by the probe, named by its flag (it said config key 'results_dir')
    ("--results-dir", "/proc/pcl-results", "error: --results-dir '/proc/pcl-results' is invalid: '/proc' cannot be "
                                           "written in"),
    ("--log-folder", "{file}", "error: --log-folder (or the profile's log_folder) '{file}' is invalid: '{file}' is "
                               "a file, not a folder"),
    ("--log-folder", "", "error: --log-folder (or the profile's log_folder) '' is invalid: an empty path names no "
                         "folder"),
    ("--log-folder", "/proc/pcl-logs", "error: --log-folder (or the profile's log_folder) '/proc/pcl-logs' is "
                                       "invalid: '/proc' cannot be written in"),
])
def test_a_results_or_log_folder_that_cannot_be_written_is_one_line_before_any_job(tmp_path, capsys, monkeypatch,
                                                                                   flag, value, said, dry_run):
    """A file, a path under a file, an empty path or a folder nobody can write in (/proc: tried by a probe,
    os.access says yes to root) is refused before the plan: the local job used to run, then the ledger write crashed
    with NotADirectoryError (submitit's own for the log folder), and the dry run said 0 after 8 warnings."""
    monkeypatch.chdir(tmp_path)  # an empty path is the current folder: nothing may appear there either
    monkeypatch.delenv("PCL_MONGO_URL", raising=False)
    file = tmp_path / "a-file"
    file.write_text("not a folder\n")
    places = {"--results-dir": str(tmp_path / "results"), "--log-folder": str(tmp_path / "logs")}
    places[flag] = value.format(file=file)
    argv = [*LOCAL, "--set", f"checkpoint_root={tmp_path / 'ckpt'}", *(a for kv in places.items() for a in kv),
            *(["--dry-run"] if dry_run else [])]
    assert launch_all.run(argv, log=lambda line: None) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(said.format(file=file)), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no job, ledger, log or checkpoint folder


def test_a_folder_is_checked_as_it_is_used_a_quoted_tilde_is_no_home(tmp_path, monkeypatch):
    """The commands use a path as given ('~/res' quoted is a folder named ~ here, for the stores and --out): the
    check expanded it, and passed a folder the command then did not use (or refused one it would have used)."""
    from pcl.fsio import folder_problem

    home = tmp_path / "home"
    home.mkdir()
    (home / "f").write_text("a file\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert folder_problem("~/f", write=False) is None and folder_problem("~/f") is None  # ./~/f: to be made
    (tmp_path / "~").write_text("a file named ~\n")
    assert folder_problem("~/res", write=False) == f"{str(tmp_path / '~')!r} is a file, not a folder"
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")  # a link to nothing: said so, not "a file"
    assert folder_problem("gone/res") == f"{str(tmp_path / 'gone')!r} is a link whose target does not exist"


@pytest.mark.parametrize("under", ["", "/sub"])
def test_status_of_a_results_folder_that_is_a_file_is_one_line(tmp_path, capsys, under):
    """status read a file given as --results-dir as an empty store: every run planned, none done, exit 0."""
    file = tmp_path / "a-file"
    file.write_text("not a folder\n")
    assert status.run([*LOCAL, "--results-dir", f"{file}{under}", "--json"]) == 2
    captured = capsys.readouterr()
    assert not captured.out
    assert _one_line(captured.err) == (f"python slurm/status.py: error: argument --results-dir: '{file}{under}' is "
                                       f"invalid: '{file}' is a file, not a folder (see --help)")


@pytest.mark.parametrize("command", ["launch_all", "status"])
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "1e400", "soon"])
def test_stale_after_must_be_a_finite_number_of_seconds_above_zero(tmp_path, capsys, command, value):
    """-1 or 0 judged every live run dead (the launcher submitted it again beside itself), nan judged every run
    alive, inf never judged one dead."""
    main = launch_all.run if command == "launch_all" else status.run
    code = main([*LOCAL, "--results-dir", str(tmp_path / "r"), "--dry-run" if command == "launch_all" else "--json",
                 f"--stale-after={value}"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert "--stale-after" in line and repr(value) in line and "a finite number of seconds > 0" in line, line
    assert not (tmp_path / "r").exists()


@settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=st.one_of(st.floats(), st.integers(-10**6, 10**6)), form=st.sampled_from(["{}", "{!r}", " {} "]))
def test_any_stale_after_is_taken_only_when_finite_and_above_zero_else_one_line(capsys, number, form):
    text = form.format(number)
    args = launch_all.parse_command_line(launch_all.build_parser(), [f"--stale-after={text}"])
    value = float(text)
    if value > 0 and value != float("inf"):
        assert args.stale_after == value
        return
    assert args == 2
    line = _one_line(capsys.readouterr().err)
    assert "--stale-after" in line and repr(text) in line


@pytest.mark.parametrize("command", ["launch_all", "status", "ping", "upload"])
@pytest.mark.parametrize("db_name, said", [
    ("a.b", "config key 'db_name'='a.b' is invalid: must be None or a MongoDB database name"),
    ("x" * 64, f"config key 'db_name'='{'x' * 64}' is invalid"),
    ("URL", "config key 'mongo_url' names the database 'a$b': must be a MongoDB database name"),
])
def test_a_bad_database_name_is_the_drivers_one_line_before_any_server_is_asked(tmp_path, capsys, monkeypatch,
                                                                              command, db_name, said):
    """--db-name (and the database of $PCL_MONGO_URL) by the drivers' check of db_name: pymongo's InvalidName was a
    traceback (exit 1) in every command that opens the store."""
    from pcl.tracking.cli import main as tracking_main

    url = "mongodb://u:pw@127.0.0.1:1/" + ("a$b" if db_name == "URL" else "")  # nothing listens on port 1
    monkeypatch.setenv("PCL_MONGO_URL", url)
    flags = [] if db_name == "URL" else ["--db-name", db_name]
    store = tmp_path / "r"
    if command == "upload":
        store.mkdir()
    argv = {"launch_all": [*LOCAL, "--results-dir", str(store), "--dry-run", *flags],
            "status": [*LOCAL, "--results-dir", str(store), *flags],
            "ping": ["ping", *flags], "upload": ["upload", str(store), *flags]}[command]
    main = {"launch_all": launch_all.run, "status": status.run}.get(command, tracking_main)
    code = main(argv)
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: {said}") and "pw" not in line, line
    assert not store.exists() or not any(store.iterdir())


@pytest.mark.parametrize("command", ["launch_all", "status"])
@pytest.mark.parametrize("update, said", [
    ("foo=1", "table table2: unknown config key(s) 'foo'=1: allowed keys are backbone, "),
    ("seed=-1", "table table2: config key 'seed'=-1 is invalid: "),  # numpy: "expected non-negative integer"
    ("seed=[0]", "table table2: config key 'seed'=[0] is invalid: "),  # Sacred: "Seed has to be integer"
])
def test_a_set_value_sacred_fails_on_is_the_drivers_one_line_naming_the_key(tmp_path, capsys, command, update, said):
    """Sacred's ConfigAddedError was its 3 raw lines, and seed=-1 (numpy's seeding, inside Sacred) a bare
    "ValueError: expected non-negative integer"; now the drivers' line (experiments.cli) or the key's own check."""
    main = launch_all.run if command == "launch_all" else status.run
    extra = ["--dry-run"] if command == "launch_all" else []
    code = main([*LOCAL, "--results-dir", str(tmp_path / "r"), "--set", update, *extra])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: {said}"), line
    assert not (tmp_path / "r").exists()


@settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "60")), deadline=None)
@example(key="backbone", value=False)  # the axis' check did not name its key
@given(key=st.one_of(st.sampled_from(sorted(k for k, spec in __import__("pcl.schema").schema.KEYS.items()
                                            if not spec.derived and k not in plan.FORBIDDEN_SET)),
                     st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)),
       value=st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(), st.text(max_size=8),
                       st.lists(st.integers(-3, 3), max_size=3)))
def test_any_set_value_plans_or_is_one_line_naming_its_key(key, value):
    """Whatever value an override has, the plan takes it or says one line naming the key (Sacred's errors and the
    values Sacred fails on before the suite's checks included; a grid axis, backbone or method, as well)."""
    try:
        plan.build_plan(plan.Selection(tables=["table2"], updates={key: value}, named=["smoke"]))
    except plan.SelectionError as err:
        message = str(err)
        assert "\n" not in message and (repr(key) in message or f" {key}=" in message), message


@pytest.mark.parametrize("command, args, said", [
    ("launch_all", ["--executor", "foo"], "argument --executor: invalid choice: 'foo' (choose from 'slurm', "
                                          "'local', 'debug')"),
    ("launch_all", ["--mem", "-1G"], "argument --mem: expected one argument; to give the value '-1G', which starts "
                                     "with '-', write --mem=-1G"),
    ("launch_all", ["--gpus-per-task", "one"], "argument --gpus-per-task: invalid int value: 'one'"),
    ("launch_all", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ("status", ["--executor", "foo"], "argument --executor: invalid choice: 'foo'"),
    ("status", ["--stale-after", "-1"], "argument --stale-after: '-1' is invalid"),
])
def test_a_bad_flag_is_one_line_exit_2_and_the_usage_stays_in_help(tmp_path, capsys, command, args, said):
    main = launch_all.run if command == "launch_all" else status.run
    assert main(["--results-dir", str(tmp_path / "r"), *args]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"python slurm/{command}.py: error: {said}") and line.endswith(" (see --help)"), line
    assert main(["--help"]) == 0 and "usage: python slurm/" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


def test_a_ledger_that_cannot_be_written_after_a_submission_names_the_jobs(tmp_path, capsys, monkeypatch):
    """The ledger's folder is checked before the plan, but a disk can fill up after it: the jobs that went in are
    named, with what to do (a launch that does not know them would submit their runs again), in one line."""
    from slurm import jobs

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs, "write_ledger", full)
    code = launch_all.run(["--executor", "debug", "--named", "smoke", "--tables", "table2", "--methods", "baseline",
                           "--seeds", "0", "--results-dir", str(tmp_path / "r"), "--log-folder", str(tmp_path / "logs"),
                           "--set", f"checkpoint_root={tmp_path / 'ck'}"], log=lambda *a, **k: None)
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "could not be written (No space left on device) after job(s) went in" in line, line
    assert "scancel" in line and "would submit their runs again" in line


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3),
                     max_leaves=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(min_size=1, max_size=10),
                       st.one_of(_JSON, st.dictionaries(st.sampled_from(["dataset", "backbone", "epochs", "batch_size",
                                                                         "train_subset", "device", "workers"]),
                                                        _JSON, max_size=7)), max_size=4))
def test_the_store_note_of_any_records_is_one_line(tmp_path, configs):
    """Other runs' configs are untrusted record text: whatever they hold, the note is one printable line."""
    planned = [plan.Planned({"run_key": "k", "label": "x"}, ["table2"])]
    store = type("S", (), {"results_dir": tmp_path, "describe": lambda self: "file store"})()
    note = plan.store_note(planned, {}, configs, store)
    assert isinstance(note, str) and "\n" not in note and "\x1b" not in note and note
    import shlex

    for segment in note.split(": add ")[1:]:  # record values given back as flags: one shell word each
        lex = shlex.shlex(segment, posix=True)
        lex.whitespace_split = True
        words = []
        while (flag := lex.get_token()) in ("--named", "--set"):
            words += [flag, lex.get_token()]
        assert words and flag in ("to", None), (note, words, flag)  # the flags end where the sentence goes on
        assert all(v.split("=", 1)[0] and "=" in v for f, v in zip(words[::2], words[1::2]) if f == "--set")


def test_a_run_on_data_read_from_the_cpu_is_costed_eager_whatever_its_path():
    """A captured step does not speed up ImageNet's loader: fast_path=graph there costs what eager does (it was
    priced by the graph rule, 20 % below its loader-bound estimate)."""
    table = plan.load_epoch_times()
    cfg = {"backbone": "resnet18", "method": "baseline", "dataset": "imagenet", "epochs": 90, "train_subset": None,
           "device": "auto", "gpus": 1}
    runs = [plan.Planned({**cfg, "fast_path": path}, ["imagenet"]) for path in ("auto", "eager", "graph")]
    plan.estimate(runs, table)
    assert {r.path for r in runs} == {"eager"} and len({r.gpu_hours for r in runs}) == 1
    cifar = plan.Planned({**cfg, "dataset": "cifar100", "backbone": "resnet32", "epochs": 300, "fast_path": "auto"},
                         ["table2"])
    on_cpu = plan.Planned({**cifar.cfg, "device": "cpu", "fast_path": "graph"}, ["table2"])  # runs uncaptured
    plan.estimate([cifar, on_cpu], table)
    assert (cifar.path, on_cpu.path) == ("graph", "eager")


def test_status_says_why_its_rows_add_up_to_more_than_the_total():
    from slurm.status import render

    runs = [{"status": "to submit", "run_key": k, "label": "pcl/resnet32", "dataset": "cifar100", "seed": 0,
             "detail": "", "job_id": None, "log": None, "error": "", "tables": tables}
            for k, tables in (("a", ["table2", "ablations.peers"]), ("b", ["table2"]))]
    text = render({"tables": [{"table": "table2", "runs": 2}, {"table": "ablations.peers", "runs": 1},
                              {"table": "total", "runs": 2}], "runs": runs, "note": ""})
    assert "1 of the 2 runs are shared between tables" in text and "the rows add up to 3" in text
    assert plan.shared_runs_line([["table2"], ["table2"]]) is None


@pytest.mark.parametrize("hours, shown", [(2.5, "2.50 h"), (0.5, "30.0 min"), (10 / 3600, "10 s"),
                                         (0.99999, "1.00 h"), (float("nan"), "?")])
def test_one_runs_gpu_time_is_shown_in_a_unit_it_reads_in(hours, shown):
    assert plan.format_duration(hours) == shown


def test_the_store_note_shows_the_largest_group_it_has_flags_for(tmp_path):
    """The selection has the flags of the largest group already: the note names the next group that flags would
    show (it fell through to 'other values of ...' and never named it), and counts the runs it leaves out."""
    from experiments.common import SMOKE

    base = {k: v for k, v in SMOKE.items() if k != "seeds"}
    outside = {f"a{i}": {**base, "epochs": 2} for i in range(3)}
    outside |= {f"b{i}": {**base, "batch_size": 16} for i in range(2)}
    outside["c"] = {"dataset": "cifar100"}
    planned = [plan.Planned({"run_key": "k", "label": "x"}, ["table2"])]
    store = type("S", (), {"results_dir": tmp_path, "describe": lambda self: "file store"})()
    note = plan.store_note(planned, {}, outside, store, plan.Selection(named=["smoke"], updates={"epochs": 2}))
    assert "2 of them made with the named config smoke, batch_size=16: add --set batch_size=16 to see them" in note
    assert note.endswith("; 4 more of other settings."), note
