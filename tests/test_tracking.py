"""pcl.tracking and pcl.results against a real MongoDB-protocol server (SecantusDB over TCP) and the file store.

Every run here is a smoke run (tiny_resnet8, synthetic data, a few hundred images): seconds on a CPU.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pcl import results, schema, tracking
from pcl.tracking import ConfigError, StoreUnavailable

ROOT = Path(__file__).resolve().parents[1]
PCL_LOSSES = {"ce_peers", "ce_ensemble", "pe", "pm", "total"}


def smoke(tmp_path: Path, **overrides) -> dict:
    cfg = dict(dataset="synthetic", backbone="tiny_resnet8", method="pcl", epochs=1, batch_size=32,
               synthetic_classes=4, synthetic_train_size=128, synthetic_test_size=64, device="cpu", workers=0,
               checkpoint_root=str(tmp_path / "ck"), experiment="test_tracking", label="smoke")
    cfg.update(overrides)
    return cfg


@pytest.fixture(params=["file", "mongo"])
def store(request, tmp_path):
    """Where the run records go: {"kind", "results_dir", "mongo_url", "read"} (read: what to read records from)."""
    results_dir = tmp_path / "results"
    if request.param == "file":
        return {"kind": "file", "results_dir": str(results_dir), "mongo_url": None, "read": str(results_dir)}
    url = request.getfixturevalue("mongo_url")
    return {"kind": "mongo", "results_dir": str(results_dir), "mongo_url": url, "read": url}


def grid(store: dict, configs: list[dict], **kwargs) -> tracking.GridReport:
    return tracking.run_grid(configs, results_dir=store["results_dir"], mongo_url=store["mongo_url"],
                             log=lambda _: None, **kwargs)


def records(store: dict, run_key: str | None = None) -> list[dict]:
    query = {"config.run_key": run_key} if run_key else None
    return sorted(results.iter_records(store["read"], query), key=lambda r: str(r.get("start_time")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- run config and run_key ----------------------------------------------------------------------------------
def test_run_key_ignores_infrastructure_and_follows_identity(tmp_path):
    base = tracking.normalize_run_config(smoke(tmp_path))
    moved = tracking.normalize_run_config(smoke(tmp_path, checkpoint_root="/elsewhere", device="auto",
                                                data_root="/data", force=True, progress=True, workers=3,
                                                label="other", experiment="other", deterministic=True))
    assert moved["run_key"] == base["run_key"]
    for change in ({"seed": 1}, {"epochs": 2}, {"peers": 4}, {"options": {"temperature": 4.0}},
                   {"method": "baseline"}, {"lr": 0.05}, {"synthetic_train_size": 256}):
        assert tracking.normalize_run_config(smoke(tmp_path, **change))["run_key"] != base["run_key"], change
    # equal values spelt differently give the same key; the key is a pure function of the config
    assert tracking.normalize_run_config(smoke(tmp_path, lr=1e-1, options={"temperature": 3}))["run_key"] == \
        base["run_key"]
    # normalizing twice changes nothing; options are complete (the method's defaults), peers sit at the top level
    assert tracking.normalize_run_config(base) == base
    smoke_decay = schema.scale_ema_decay(0.999, base["epochs"] * schema.steps_per_epoch(base))  # scaled to the run
    assert base["options"]["ema_decay"] == smoke_decay and base["options"]["peers"] == base["peers"] == 3
    assert base["milestones"] == [1, 1] and base["synthetic_classes"] == 4
    baseline = tracking.normalize_run_config(smoke(tmp_path, method="baseline", peers=5))
    assert baseline["peers"] is None and baseline["options"] == {}
    assert tracking.normalize_run_config(smoke(tmp_path, method="baseline", peers=2))["run_key"] == \
        baseline["run_key"]


def test_a_teacher_named_by_run_key_keeps_its_file_path_out_of_the_run_key(tmp_path):
    from pcl.methods import build_method
    from pcl.runner import save_deployed

    for name in ("a.pt", "b.pt"):
        save_deployed(build_method("baseline", "tiny_resnet8", 4), tmp_path / name)
    kd = smoke(tmp_path, method="kd", options={"teacher_path": str(tmp_path / "a.pt")})
    other_file = dict(kd, options={"teacher_path": str(tmp_path / "b.pt")})
    # a teacher given only by its file: the file's contents are the experiment, not where it lies
    key = tracking.normalize_run_config(kd)["run_key"]
    assert key != tracking.normalize_run_config(other_file)["run_key"]
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "a.pt").write_bytes((tmp_path / "a.pt").read_bytes())
    assert tracking.normalize_run_config(dict(kd, options={"teacher_path": str(tmp_path / "copy" / "a.pt")}))[
        "run_key"] == key
    # retrained in place (it used to keep its run_key: the old result was taken for the new teacher's)
    (tmp_path / "a.pt").write_bytes((tmp_path / "b.pt").read_bytes())
    assert tracking.normalize_run_config(kd)["run_key"] == tracking.normalize_run_config(other_file)["run_key"] != key
    # a teacher named by its run: where its file lies is infrastructure
    by_key = [tracking.normalize_run_config(dict(c, teacher_run_key="0123456789abcdef")) for c in (kd, other_file)]
    assert by_key[0]["run_key"] == by_key[1]["run_key"]
    with pytest.raises(ConfigError, match="teacher_path"):
        tracking.normalize_run_config(smoke(tmp_path, method="kd"))
    with pytest.raises(ConfigError, match="does not exist"):
        tracking.normalize_run_config(smoke(tmp_path, method="kd", options={"teacher_path": str(tmp_path / "x")}))
    for path, problem in ((tmp_path / "copy", "not a regular file"), ("a" * 300, "the path cannot be used")):
        with pytest.raises(ConfigError, match=problem):  # a folder; a name too long was a traceback
            tracking.normalize_run_config(smoke(tmp_path, method="kd", options={"teacher_path": str(path)}))


def test_redaction_of_urls_and_text():
    url = "mongodb://alice:p%40ss%2Fw0rd@db.example:27017/pcl?authSource=admin&tlsCertificateKeyFilePassword=kp9"
    shown = tracking.redact_url(url)
    assert "p%40ss" not in shown and "kp9" not in shown and "alice:***@db.example:27017" in shown
    tracking.resolve_mongo_url(url)  # registers the password, raw and decoded
    assert tracking.redact("failed for p@ss/w0rd and p%40ss%2Fw0rd") == "failed for *** and ***"


@pytest.mark.parametrize("change, key", [
    ({"epochs": -1}, "epochs"),
    ({"epochs": "10"}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"lr": 0}, "lr"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"peers": 1}, "peers"),
    ({"dataset": "mnist"}, "dataset"),
    ({"backbone": "resnet9000"}, "backbone"),
    ({"method": "nope"}, "method"),
    ({"options": {"temprature": 3.0}}, "options.temprature"),
    ({"options": {"temperature": "hot"}}, "options.temperature"),
    ({"options": {"multi_input": 1}}, "options.multi_input"),
    ({"options": {"ensemble_form": "sum"}}, "ensemble_form"),
    ({"milestones": [5, 2]}, "milestones"),
    ({"device": "gpu"}, "device"),
    ({"epoch": 3}, "epoch"),
    ({"mongo_url": "mongodb://x"}, "mongo_url"),
])
def test_invalid_config_fails_before_any_record_or_checkpoint(tmp_path, change, key):
    results_dir, ck = tmp_path / "results", tmp_path / "ck"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tracking.run_grid([smoke(tmp_path, **change)], results_dir=str(results_dir), log=lambda _: None)
    assert not results_dir.exists() and not ck.exists()


def test_invalid_config_creates_no_mongo_record(tmp_path, mongo_url):
    with pytest.raises(ConfigError, match="peers"):
        tracking.run_grid([smoke(tmp_path), smoke(tmp_path, peers=1)], results_dir=str(tmp_path / "results"),
                          mongo_url=mongo_url, log=lambda _: None)
    assert results.connect(mongo_url)["runs"].count_documents({}) == 0
    assert not (tmp_path / "ck").exists()


# ---- records -------------------------------------------------------------------------------------------------
def test_record_holds_config_key_info_result_and_every_metric(tmp_path, store):
    report = grid(store, [smoke(tmp_path, epochs=2)])
    assert [r.status for r in report.runs] == ["COMPLETED"] and report.exit_code == 0
    key = report.runs[0].run_key
    (rec,) = records(store)
    assert rec["status"] == "COMPLETED"
    cfg = rec["config"]
    assert cfg["run_key"] == key == tracking.run_key(cfg)
    assert cfg["options"] == tracking.normalize_run_config(smoke(tmp_path))["options"]  # every option recorded
    assert "mongo_url" not in cfg and "results_dir" not in cfg
    info = rec["info"]
    assert info["run_key"] == key and info["attempt_id"] == rec["meta"]["attempt_id"]
    env = info["environment"]
    assert env["host"] and isinstance(env["torch"], str) and env["torch"] == str(torch.__version__)
    assert env["gpu"] == "none"  # the GPU name (none on this CPU run)
    assert set(info["determinism"]) >= {"cudnn_deterministic", "deterministic_algorithms", "seed"}
    counts = info["parameter_counts"]
    assert counts["params_train"] > counts["params_deployed"] > 0
    assert info["deployed_head"] == "mean_peer1"
    assert Path(info["deployed_path"]).is_file() and Path(info["checkpoint_path"]).is_file()
    assert Path(info["checkpoint_dir"]) == (tmp_path / "ck" / key).resolve()
    heads = info["heads"]
    assert {"peer1", "peer2", "peer3", "ensemble", "mean_peer1", "pcl_e"} <= set(heads)
    result = rec["result"]
    assert all(isinstance(v, float) for v in result.values())
    assert result["deployed/top1_err"] == result["last/top1_err/mean_peer1"]
    assert {f"last/top1_err/{h}" for h in heads} <= set(result)
    metrics = results.load_metrics(store["read"])
    names = set(metrics["name"])
    assert {f"test/top1_err/{h}" for h in heads} <= names
    assert {f"train/loss/{term}" for term in PCL_LOSSES} <= names
    per_name = metrics.groupby("name")["step"].apply(sorted)
    assert all(steps == [1, 2] for steps in per_name)
    # the last logged epoch is the result
    last = metrics[(metrics["name"] == "test/top1_err/mean_peer1") & (metrics["step"] == 2)]["value"].item()
    assert last == pytest.approx(result["deployed/top1_err"])
    if store["kind"] == "mongo":
        db = results.connect(store["mongo_url"])
        index_keys = [list(ix["key"]) for ix in db["metrics"].list_indexes()]
        assert ["run_id", "name"] in index_keys
        assert db["fs.files"].count_documents({"filename": {"$regex": r"\.pt$"}}) == 0  # no checkpoints in GridFS
        assert (Path(store["results_dir"]) / "1" / "run.json").exists()  # the local copy is always kept
    frame = results.load_runs(store["read"])
    assert len(frame) == 1 and frame.loc[0, "run_key"] == key and frame.loc[0, "status"] == "COMPLETED"
    assert frame.loc[0, "result.deployed/top1_err"] == result["deployed/top1_err"]
    assert frame.loc[0, "config.options.ema_decay"] == cfg["options"]["ema_decay"]


def test_failed_and_preempted_statuses_then_resume(tmp_path, store):
    def fail(epoch, metrics):  # a failure inside a run (missing data is caught before the grid, issue 10)
        raise RuntimeError("the disk went away during the run")

    failed = grid(store, [smoke(tmp_path, label="no data")], callbacks=[fail])
    assert failed.runs[0].status == "FAILED" and failed.exit_code == 1
    (rec,) = records(store, failed.runs[0].run_key)
    assert rec["status"] == "FAILED" and rec["fail_trace"]

    def preempt_after_first_epoch(epoch, metrics):
        if epoch == 0:  # a real signal, delivered to this process: SLURM's pre-timeout signal
            os.kill(os.getpid(), signal.SIGUSR2)

    cfg = smoke(tmp_path, epochs=3)
    first = grid(store, [cfg], callbacks=[preempt_after_first_epoch])
    assert first.runs[0].status == "PREEMPTED" and first.stop_signal == signal.SIGUSR2
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # handlers restored after the grid
    key = first.runs[0].run_key
    ckpt = tmp_path / "ck" / key / "checkpoint.pt"
    assert ckpt.exists()
    (rec,) = records(store, key)
    # Sacred's standard status, so that Omniboard/incense filters show it; info.preempted keeps the suite's meaning
    assert rec["status"] == "INTERRUPTED" and rec["info"]["preempted"] is True
    assert results.run_status(rec) == "PREEMPTED"
    assert rec["info"]["completed_epochs"] == 1 and rec["info"]["stop_signal"] == "SIGUSR2"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1

    second = grid(store, [cfg])
    assert second.runs[0].status == "COMPLETED" and second.stop_signal is None
    attempts = records(store, key)
    assert [results.run_status(r) for r in attempts] == ["PREEMPTED", "COMPLETED"]
    assert len({r["meta"]["attempt_id"] for r in attempts}) == 2
    assert attempts[1]["info"]["resumed_from_epoch"] == 1
    # the completed attempt's record holds the whole curve (checkpoint history re-logged)
    metrics = results.load_metrics(store["read"], attempt_ids=[attempts[1]["meta"]["attempt_id"]],
                                   names=["test/top1_err/mean_peer1"])
    assert sorted(metrics["step"]) == [1, 2, 3]
    frame = results.load_runs(store["read"])
    row = frame[frame["run_key"] == key].iloc[0]
    assert row["status"] == "COMPLETED" and row["attempts"] == 2
    assert len(results.load_runs(store["read"], dedupe=False)) == 3
    assert results.completed_run_keys(store["read"]) == {key}
    if store["kind"] == "mongo":  # Mongo + its file copy read together: each attempt counts once
        both = [store["read"], store["results_dir"]]
        assert len(results.load_runs(both, dedupe=False)) == 3
        assert results.load_runs(both).set_index("run_key").loc[key, "attempts"] == 2


def test_completed_run_key_is_skipped_and_force_reruns_from_scratch(tmp_path, store):
    cfg = smoke(tmp_path)
    assert grid(store, [cfg]).runs[0].status == "COMPLETED"
    again = grid(store, [dict(cfg, label="relabelled", device="auto")])  # infrastructure changes: same run
    assert again.runs[0].status == "SKIPPED" and again.exit_code == 0
    assert len(records(store)) == 1
    forced = grid(store, [dict(cfg, force=True)])
    assert forced.runs[0].status == "COMPLETED"
    recs = records(store)
    assert len(recs) == 2 and recs[1]["info"]["resumed_from_epoch"] == 0  # trained again, not resumed


def test_a_run_key_locked_by_another_process_is_not_run_twice(tmp_path):
    import fcntl

    cfg = tracking.normalize_run_config(smoke(tmp_path))
    lock_dir = tmp_path / "ck" / cfg["run_key"]
    lock_dir.mkdir(parents=True)
    with open(lock_dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        report = tracking.run_grid([cfg], results_dir=str(tmp_path / "results"), log=lambda _: None)
    assert report.runs[0].status == "LOCKED" and report.exit_code == 0  # its holder lives
    assert not (tmp_path / "results" / "1").exists()


# ---- MongoDB failures ----------------------------------------------------------------------------------------
@pytest.mark.slow  # waits for the server-selection time-out
def test_unreachable_mongo_fails_within_seconds_without_record_or_checkpoint(tmp_path, capsys):
    url = f"mongodb://alice:Pa55-unreachable@127.0.0.1:{free_port()}/?directConnection=true"
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        tracking.run_grid([smoke(tmp_path)], results_dir=str(tmp_path / "results"), mongo_url=url)
    assert time.monotonic() - start < 8
    message = str(err.value)
    assert "unreachable" in message and "No run was started" in message and "127.0.0.1" in message
    assert "Pa55-unreachable" not in message + capsys.readouterr().out
    assert not (tmp_path / "results").exists() and not (tmp_path / "ck").exists()
    no_direct = url.replace("?directConnection=true", "")
    with pytest.raises(StoreUnavailable, match="directConnection=true"):
        tracking.open_store(tmp_path / "results", no_direct)


@pytest.mark.slow  # a server stopped and started again mid-run
def test_database_lost_mid_run_is_kept_and_uploaded_later(tmp_path, mongo_server):
    url = mongo_server.url()

    def lose_database(epoch, metrics):
        if epoch == 0:
            mongo_server.stop()

    results_dir = tmp_path / "results"
    start = time.monotonic()
    report = tracking.run_grid([smoke(tmp_path, epochs=3)], results_dir=str(results_dir), mongo_url=url,
                               callbacks=[lose_database], log=lambda _: None)
    assert time.monotonic() - start < 40  # the lost server costs seconds, not Sacred's ~35 s of retries
    run = report.runs[0]
    # trained, but one store missed the record: the outcome says so and the driver exits non-zero
    assert run.status == "RECORD_FAILED" and run.info["mongo_failed"] and report.exit_code == 1
    assert "upload" in run.error and "1 record_failed" in str(report)
    (local,) = results.iter_records(str(results_dir))
    assert local["status"] == "COMPLETED" and local["result"]["deployed/top1_err"] >= 0
    assert list((results_dir / tracking.FAILURE_DIR_NAME).glob("*.pickle"))  # Sacred's failure entry too

    mongo_server.start()  # the same data folder (on a new port)
    url = mongo_server.url()
    db = results.connect(url)
    stale = db["runs"].find_one({"config.run_key": run.run_key})
    assert stale is not None and stale["status"] == "RUNNING"  # what the vanished server last saw
    env = dict(os.environ, PCL_MONGO_URL=url)
    out = subprocess.run([sys.executable, "-m", "pcl.tracking", "upload", str(results_dir)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1 updated" in out.stdout
    docs = list(db["runs"].find({"config.run_key": run.run_key}))
    assert len(docs) == 1 and docs[0]["status"] == "COMPLETED"
    assert docs[0]["result"] == local["result"] and docs[0]["info"]["deployed_head"] == "mean_peer1"
    steps = db["metrics"].find_one({"run_id": docs[0]["_id"], "name": "test/top1_err/mean_peer1"})["steps"]
    assert steps == [1, 2, 3]
    again = tracking.upload(results_dir, url, log=lambda _: None)  # idempotent
    assert again.unchanged and not again.inserted and not again.updated
    assert db["runs"].count_documents({}) == 1
    assert results.completed_run_keys(url) == {run.run_key}


def test_upload_inserts_file_only_records(tmp_path, mongo_url):
    report = tracking.run_grid([smoke(tmp_path), smoke(tmp_path, method="baseline")],
                               results_dir=str(tmp_path / "results"), log=lambda _: None)
    assert [r.status for r in report.runs] == ["COMPLETED", "COMPLETED"]
    assert tracking.main(["ping", "--mongo-url", mongo_url]) == 0
    assert tracking.main(["upload", str(tmp_path / "results"), "--mongo-url", mongo_url]) == 0
    frame = results.load_runs(mongo_url)
    assert sorted(frame["method"]) == ["baseline", "pcl"] and set(frame["status"]) == {"COMPLETED"}
    metrics = results.load_metrics(mongo_url, names=["train/loss/ce"])
    assert len(metrics) == 1  # baseline's only loss term, one epoch
    assert tracking.main(["upload", str(tmp_path / "results"), "--mongo-url", f"mongodb://127.0.0.1:"
                          f"{free_port()}/?directConnection=true"]) == 2


def test_password_never_recorded_logged_or_printed(tmp_path, mongo_server_factory, capsys, caplog):
    from pymongo import MongoClient

    server = mongo_server_factory("auth-setup")
    with MongoClient(server.url()) as admin:
        admin.admin.command("createUser", "alice", pwd="S3cret-Pw!", roles=["root"])
    server.stop()
    server.require_auth = True
    server.start()
    secret = "S3cret-Pw!"
    url = server.url("alice", "S3cret-Pw%21")  # URL-encoded in the URL: both spellings must vanish
    report = tracking.run_grid([smoke(tmp_path)], results_dir=str(tmp_path / "results"), mongo_url=url)
    assert report.runs[0].status == "COMPLETED"
    assert "alice:***@" in report.store
    db = MongoClient(url)["pcl"]
    dumped = json.dumps([list(db[c].find({}, {"_id": 0})) for c in db.list_collection_names()], default=str)
    assert '"status": "COMPLETED"' in dumped
    with pytest.raises(StoreUnavailable) as wrong:
        tracking.run_grid([smoke(tmp_path)], results_dir=str(tmp_path / "results"),
                          mongo_url=server.url("alice", "Wrong-Pw-42"))
    captured = capsys.readouterr()
    texts = [dumped, str(report), str(wrong.value), captured.out, captured.err, caplog.text]
    texts += [p.read_text(errors="replace") for p in (tmp_path / "results").rglob("*") if p.is_file()]
    for text in texts:
        assert secret not in text and "S3cret-Pw%21" not in text and "Wrong-Pw-42" not in text


# ---- a real process, a real signal ---------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_preempts_a_real_run_and_the_restart_resumes(tmp_path, mongo_url):
    url = mongo_url
    args = [sys.executable, "experiments/table2.py", "with", "smoke", "method=pcl", "epochs=4",
            "synthetic_train_size=1024", f"results_dir={tmp_path / 'results'}", f"checkpoint_root={tmp_path / 'ck'}"]
    env = dict(os.environ, PCL_MONGO_URL=url, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "ck").glob("*/checkpoint.pt")):  # the first epoch is done: the run is mid-way
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, err  # the signal is handed on once the run is recorded
    assert "SIGTERM received" in err
    db = results.connect(url)
    (first,) = list(db["runs"].find())
    key = first["config"]["run_key"]
    assert results.run_status(first) == "PREEMPTED"  # not RUNNING forever (recorded INTERRUPTED + preempted)
    done = first["info"]["completed_epochs"]
    assert 1 <= done < 4
    assert torch.load(tmp_path / "ck" / key / "checkpoint.pt", weights_only=True)["epoch"] == done

    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    attempts = list(db["runs"].find({"config.run_key": key}).sort("_id", 1))
    assert [results.run_status(a) for a in attempts] == ["PREEMPTED", "COMPLETED"]
    assert attempts[1]["info"]["resumed_from_epoch"] == done
    assert attempts[1]["result"]["epochs"] == 4.0
    assert {a["config"]["run_key"] for a in attempts} == {key}
    local = [results.run_status(r) for r in results.iter_records(str(tmp_path / "results"))]
    assert local == ["PREEMPTED", "COMPLETED"]  # the file copy agrees
    third = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "SKIPPED" in third.stdout
    assert db["runs"].count_documents({}) == 2


@pytest.mark.parametrize("folder", ["", " "])
def test_upload_of_an_empty_path_is_refused_before_any_server(folder, tmp_path, monkeypatch, capsys):
    """`upload ''` took the current folder for the file store and went on to the server."""
    from pcl.tracking.cli import main as tracking_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PCL_MONGO_URL", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100")  # nothing listens
    assert tracking_main(["upload", folder]) == 2
    assert capsys.readouterr().err.strip() == (f"error: results_dir {folder!r} is not a folder: upload reads a "
                                               "file store's run folders")
