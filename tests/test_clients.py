"""The suite's records as Sacred users browse them: incense (notebooks) and Omniboard (web UI, through its HTTP API)
over the MongoDB records of a smoke grid on the conftest server (SecantusDB); and `upload`, which writes records in
the same layout, idempotent, atomic per run and safe to run concurrently.

The smoke grid (table2's 8 methods, the peers ablation reusing table2's pcl run, one file-only run uploaded) is
trained once per session: ~1 min on a free 2-core CPU, hence `slow`. Omniboard comes from `.ci/run`
(npm, into .ci-cache/omniboard); without node or Omniboard its tests skip, except under CI where they fail.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pcl import registry, results, tracking
from pcl.tracking.upload import ATTEMPT_INDEX

ROOT = Path(__file__).resolve().parents[1]
OMNIBOARD_BIN = ROOT / ".ci-cache" / "omniboard" / "node_modules" / ".bin" / "omniboard"
TABLE_METHODS = registry.table_methods("table2")  # the methods of table2's grid (`with smoke`: one backbone)
HEADLINE = "test/top1_err/deployed"

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:keys will default to True in jsonpickle:DeprecationWarning")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smoke_grid(mongo_session_server, tmp_path_factory):
    """table2 `with smoke` (8 methods) and the peers ablation (m=3 only: table2's pcl run, reused) into MongoDB +
    a file store; the peers ablation's m=2 trained file-only and uploaded into the same database."""
    from experiments.common import run_script
    from experiments.registry import experiment

    tmp = tmp_path_factory.mktemp("clients")
    db_name = "clients_grid"
    url = mongo_session_server.url(db=db_name)
    where = {"results_dir": str(tmp / "results"), "checkpoint_root": str(tmp / "ck"), "mongo_url": url}
    table2 = run_script(experiment("table2"), where, ["smoke"])
    peers = run_script(experiment("ablations.peers"), {**where, "peer_counts": [3]}, ["smoke"])
    file_only = {"results_dir": str(tmp / "file-only"), "checkpoint_root": str(tmp / "ck"), "peer_counts": [2]}
    alone = run_script(experiment("ablations.peers"), file_only, ["smoke"])
    report = tracking.upload(tmp / "file-only", url, log=lambda _: None)
    assert [r.status for r in table2.runs] == ["COMPLETED"] * len(TABLE_METHODS)
    assert [r.status for r in peers.runs] == ["SKIPPED"] and [r.status for r in alone.runs] == ["COMPLETED"]
    assert len(report.inserted) == 1
    db = results.connect(url)
    return SimpleNamespace(url=url, db_name=db_name, db=db, server=mongo_session_server, tmp=tmp,
                           results_dir=tmp / "results", file_only=tmp / "file-only", table2=table2,
                           reused_key=peers.runs[0].run_key,
                           uploaded_id=db["runs"].find_one({"info.uploaded_from": {"$exists": True}})["_id"])


# ---- the records themselves ---------------------------------------------------------------------------------------
def test_records_carry_headline_tags_ids_and_dependencies(smoke_grid):
    db = smoke_grid.db
    runs = list(db["runs"].find())
    assert len(runs) == len(TABLE_METHODS) + 1  # table2's runs + the peers ablation's m=2 (uploaded)
    for run in runs:
        # one headline curve for every method, equal to its deployed head's; the result starts with it
        headline = db["metrics"].find_one({"run_id": run["_id"], "name": HEADLINE})
        own = db["metrics"].find_one({"run_id": run["_id"], "name": f"test/top1_err/{run['info']['deployed_head']}"})
        assert headline["values"] == own["values"] and headline["steps"] == [1]
        assert list(run["result"])[:2] == ["deployed/top1_err", "deployed/top5_err"]
        assert run["result"]["deployed/top1_err"] == headline["values"][-1]
        assert db["metrics"].find_one({"run_id": run["_id"], "name": "test/top5_err/deployed"}) is not None
        deps = {d.split("==")[0] for d in run["experiment"]["dependencies"]}
        assert {"torch", "torchvision", "sacred", "numpy"} <= deps
        assert all(file_id is not None for _, file_id in run["experiment"]["sources"])
        assert run["omniboard"]["tags"] == run["info"]["experiments"]
    # one id for one attempt: the file-store folder has MongoDB's number (both recorded side by side)
    for run in db["runs"].find({"info.uploaded_from": {"$exists": False}}):
        assert run["info"]["run_ids"] == {"file": str(run["_id"]), "mongo": run["_id"]}
        local = json.loads((smoke_grid.results_dir / str(run["_id"]) / "run.json").read_text())
        assert local["meta"]["attempt_id"] == run["meta"]["attempt_id"]
    uploaded = db["runs"].find_one({"_id": smoke_grid.uploaded_id})
    assert uploaded["info"]["run_ids"]["mongo"] == smoke_grid.uploaded_id
    assert (smoke_grid.file_only / uploaded["info"]["run_ids"]["file"]).is_dir()


def test_reused_run_is_tagged_in_both_stores(smoke_grid):
    (reused,) = smoke_grid.db["runs"].find({"config.run_key": smoke_grid.reused_key})
    assert reused["config"]["experiment"] == "table2"
    assert reused["omniboard"]["tags"] == ["table2", "ablation_peers"]
    assert reused["info"]["experiments"] == ["table2", "ablation_peers"]
    folder = smoke_grid.results_dir / str(reused["_id"])
    assert json.loads((folder / "run.json").read_text())["omniboard"]["tags"] == ["table2", "ablation_peers"]
    assert json.loads((folder / "info.json").read_text())["experiments"] == ["table2", "ablation_peers"]
    frame = results.load_runs(smoke_grid.url)
    row = frame.set_index("run_key").loc[smoke_grid.reused_key]
    assert row["experiments"] == ["table2", "ablation_peers"]


# ---- incense ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def incense_loader(smoke_grid):
    incense = pytest.importorskip("incense")  # a test dependency (pyproject's `test` extra)
    return incense.ExperimentLoader(mongo_uri=smoke_grid.url, db_name=smoke_grid.db_name)


def test_incense_reads_every_methods_headline_and_the_reused_run(smoke_grid, incense_loader):
    table2 = incense_loader.find({"omniboard.tags": "table2"})
    peers = incense_loader.find({"omniboard.tags": "ablation_peers"})
    assert sorted(e.config["method"] for e in table2) == sorted(TABLE_METHODS)
    # the reused run is found under both scripts (Omniboard's tag and info.experiments alike)
    assert smoke_grid.reused_key in {e.config["run_key"] for e in peers}
    assert smoke_grid.reused_key in {e.config["run_key"] for e in table2}
    assert smoke_grid.reused_key in {e.config["run_key"]
                                     for e in incense_loader.find_by_key("info.experiments", "ablation_peers")}

    # the README's snippet: a table of deployed errors by method
    def last(series):
        return series.iloc[-1]

    runs = incense_loader.find({"omniboard.tags": "table2", "status": "COMPLETED"})
    table = runs.project(on=["config.method", "config.backbone", "config.seed",
                             {"metrics.test/top1_err/deployed": last}])
    by_method = table.groupby(["backbone", "method"])["test/top1_err/deployed_last"].agg(["mean", "std", "count"])
    assert sorted(m for _, m in by_method.index) == sorted(TABLE_METHODS) and set(by_method["count"]) == {1}
    for exp in runs:
        assert exp.metrics[HEADLINE].iloc[-1] == exp.result["deployed/top1_err"]


def test_incense_reads_sources_of_an_uploaded_run(smoke_grid, incense_loader):
    import gridfs

    exp = incense_loader.find_by_id(smoke_grid.uploaded_id)
    assert exp.info["uploaded_from"]
    fs = gridfs.GridFS(smoke_grid.db)
    sources = dict(exp.experiment.sources)
    assert "ablations/peers.py" in sources
    for name, file_id in sources.items():
        assert fs.get(file_id).read() == (ROOT / name).read_bytes()


# ---- Omniboard ---------------------------------------------------------------------------------------------------
def _omniboard_path() -> Path:
    """Omniboard's executable: $PCL_OMNIBOARD, else where `.ci/run` installs it."""
    return Path(os.environ.get("PCL_OMNIBOARD", OMNIBOARD_BIN))


def _omniboard_command() -> list[str] | None:
    path = _omniboard_path()
    if shutil.which("node") is None or not path.exists():
        return None
    return [str(path)]


@pytest.fixture(scope="session")
def omniboard(smoke_grid):
    """Omniboard (npm package, installed by .ci/run) serving the smoke grid's database on a free port."""
    command = _omniboard_command()
    if command is None:
        message = f"Omniboard not installed ({_omniboard_path()}; `.ci/run` installs it with npm) or node missing"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log = open(smoke_grid.tmp / "omniboard.log", "w+")
    # as the README starts it: the URL (with the database in its path) in $MONGO_URI, the port in $PORT
    proc = subprocess.Popen(command, env=dict(os.environ, PORT=str(port), MONGO_URI=smoke_grid.url),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    last: object = None
    while True:
        try:
            # the session's server holds other tests' databases too: ours must be among those served
            last = json.loads(_get(base + "/api/v1/databases"))
            if any(d.get("name") == smoke_grid.db_name for d in last):
                break
        except OSError as err:
            last = err
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            proc.kill()
            pytest.fail(f"Omniboard did not start (last answer: {last!r}): {log.read()[-2000:]}")
        time.sleep(0.3)
    yield SimpleNamespace(proc=proc, api=base + "/sacred/api/v1", base=base, log=log)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()


def _get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200
        return response.read()


def _runs(omniboard, select: str) -> list[dict]:
    return json.loads(_get(f"{omniboard.api}/Runs?select={select}&limit=200"))


def test_omniboard_lists_runs_with_status_tags_and_headline(smoke_grid, omniboard):
    runs = {r["_id"]: r for r in _runs(omniboard, "_id,status,omniboard,experiment.name,config.method")}
    assert len(runs) == len(TABLE_METHODS) + 1 and {r["status"] for r in runs.values()} == {"COMPLETED"}
    reused = smoke_grid.db["runs"].find_one({"config.run_key": smoke_grid.reused_key})["_id"]
    assert runs[reused]["omniboard"]["tags"] == ["table2", "ablation_peers"]
    assert sum("table2" in r["omniboard"]["tags"] for r in runs.values()) == len(TABLE_METHODS)
    # the README's metric column: metric test/top1_err/deployed, its last value, for every method alike
    column = json.dumps({"name": "deployed_top1", "metric_name": HEADLINE, "extrema": "last"}).encode()
    request = urllib.request.Request(f"{omniboard.api}/Omniboard.Metric.Columns", data=column, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201)
    rows = _runs(omniboard, "_id,deployed_top1,result")
    assert len(rows) == len(TABLE_METHODS) + 1
    for row in rows:
        assert row["deployed_top1"] == row["result"]["deployed/top1_err"], row["_id"]
        query = urllib.parse.quote(json.dumps({"run_id": row["_id"], "name": HEADLINE}))
        (metric,) = json.loads(_get(f"{omniboard.api}/Metrics?query={query}"))
        assert metric["values"][-1] == row["deployed_top1"]


def test_omniboard_serves_sources_of_an_uploaded_run(smoke_grid, omniboard):
    run_id = smoke_grid.uploaded_id
    files = json.loads(_get(f"{omniboard.api}/files/source/{run_id}"))
    assert files and all(f["filename"].endswith(".py") for f in files)
    for f in files:
        name = f["filename"].split("/")[-1]
        body = _get(f"{omniboard.api}/files/download/{f['_id']}/{name}")
        assert body == Path(f["filename"]).read_bytes()
        assert _get(f"{omniboard.api}/files/preview/{f['_id']}/{name}") == body
    archive = zipfile.ZipFile(io.BytesIO(_get(f"{omniboard.api}/files/downloadAll/{run_id}/source_files")))
    assert any(n.endswith("ablations/peers.py") for n in archive.namelist())
    # still alive after every call (a source without content used to kill it)
    assert omniboard.proc.poll() is None
    assert json.loads(_get(omniboard.base + "/api/v1/databases"))[0]["name"] == smoke_grid.db_name


# ---- upload: idempotent, atomic per run, concurrent ------------------------------------------------------------
def _upload_cmd(results_dir: Path, extra: str = "", barrier: Path | None = None) -> list[str]:
    """`upload(results_dir)` in a new process (URL from $PCL_MONGO_URL). With `barrier`, the process imports
    everything, creates a file in that folder and starts uploading once `barrier/go` exists (so that several
    processes really upload at once, not one after the other's imports)."""
    wait = ""
    if barrier is not None:
        wait = (f"open(os.path.join({str(barrier)!r}, str(os.getpid())), 'w').close()\n"
                f"while not os.path.exists(os.path.join({str(barrier)!r}, 'go')): time.sleep(0.002)\n")
    code = (f"{extra}\nimport os, sys, time\nfrom pcl.tracking import upload\n{wait}"
            f"upload(sys.argv[1], include_running=False, log=print)")
    return [sys.executable, "-c", code, str(results_dir)]


def _env(url: str) -> dict:
    return dict(os.environ, PCL_MONGO_URL=url, PYTHONPATH=str(ROOT))


def _attempts(results_dir: Path) -> dict[str, dict]:
    out = {}
    for run_dir in results_dir.iterdir():
        if run_dir.name.isdigit():
            run = json.loads((run_dir / "run.json").read_text())
            out[run["meta"]["attempt_id"]] = {"metrics": json.loads((run_dir / "metrics.json").read_text()),
                                              "status": run["status"]}
    return out


def _assert_complete(db, attempts: dict[str, dict], total: int | None = None) -> None:
    """Exactly one document per attempt, final, with every metric series complete and referenced (and `total`
    run documents in all, default: one per attempt)."""
    assert db["runs"].count_documents({}) == (len(attempts) if total is None else total)
    for attempt, local in attempts.items():
        (doc,) = db["runs"].find({"meta.attempt_id": attempt})
        assert doc["status"] == local["status"]
        metrics = {m["name"]: m for m in db["metrics"].find({"run_id": doc["_id"]})}
        assert db["metrics"].count_documents({"run_id": doc["_id"]}) == len(local["metrics"])
        assert {n: m["values"] for n, m in metrics.items()} == {n: s["values"] for n, s in local["metrics"].items()}
        assert sorted(r["id"] for r in doc["info"]["metrics"]) == sorted(str(m["_id"]) for m in metrics.values())


def test_three_concurrent_uploads_give_each_attempt_once(smoke_grid, tmp_path):
    url = smoke_grid.server.url(db="clients_concurrent")
    procs = [subprocess.Popen(_upload_cmd(smoke_grid.results_dir, barrier=tmp_path), env=_env(url), cwd=ROOT,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    deadline = time.monotonic() + 180
    while len(list(tmp_path.iterdir())) < 3:  # all three imported and waiting
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    attempts = _attempts(smoke_grid.results_dir)
    db = results.connect(url)
    _assert_complete(db, attempts)
    assert sum(int(o.split(" inserted")[0].rsplit(" ", 1)[-1]) for o, _ in outs) == len(attempts)
    again = tracking.upload(smoke_grid.results_dir, url, log=lambda _: None)
    assert len(again.unchanged) == len(attempts) and not again.inserted and not again.updated


def test_upload_killed_half_way_then_run_again_leaves_every_run_complete(smoke_grid):
    url = smoke_grid.server.url(db="clients_killed")
    # a real SIGKILL of the uploading process at its second metric write (each run's series are one bulk request):
    # after the first run is complete, before the second run's metrics
    kill = ("import os, signal, pymongo.collection\n"
            "calls = [0]\n"
            "def counting(write):\n"
            "    def wrapped(self, *a, **k):\n"
            "        if self.name == 'metrics':\n"
            "            calls[0] += 1\n"
            "            if calls[0] == 2:\n"
            "                os.kill(os.getpid(), signal.SIGKILL)\n"
            "        return write(self, *a, **k)\n"
            "    return wrapped\n"
            "Collection = pymongo.collection.Collection\n"
            "for name in ('insert_one', 'replace_one', 'update_one', 'bulk_write'):\n"
            "    setattr(Collection, name, counting(getattr(Collection, name)))\n")
    killed = subprocess.run(_upload_cmd(smoke_grid.results_dir, kill), env=_env(url), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    db = results.connect(url)
    attempts = _attempts(smoke_grid.results_dir)
    docs = list(db["runs"].find())
    # the run being written when the process died is not final (never COMPLETED with missing metrics: a launcher
    # would skip it); those before it are complete
    (half,) = [d for d in docs if d["status"] not in tracking.FINAL_STATUSES]
    assert half["status"] == "RUNNING"
    done_before = [d for d in docs if d is not half]
    assert 1 <= len(done_before) < len(attempts)
    _assert_complete(db, {d["meta"]["attempt_id"]: attempts[d["meta"]["attempt_id"]] for d in done_before},
                     total=len(docs))
    assert results.completed_run_keys(url) == {d["config"]["run_key"] for d in done_before}
    done = subprocess.run(_upload_cmd(smoke_grid.results_dir), env=_env(url), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _assert_complete(db, _attempts(smoke_grid.results_dir))


def test_upload_repairs_records_of_older_versions(smoke_grid):
    """Older uploads wrote sources without content, PREEMPTED, and (run concurrently) duplicate documents."""
    url = smoke_grid.server.url(db="clients_repair")
    db = results.connect(url)
    tracking.upload(smoke_grid.file_only, url, log=lambda _: None)
    (doc,) = db["runs"].find()
    old = dict(doc, status="PREEMPTED")
    old["experiment"] = dict(doc["experiment"], sources=[[n, None] for n, _ in doc["experiment"]["sources"]])
    old.pop("omniboard")
    db["runs"].delete_many({})
    db["runs"].drop_index(ATTEMPT_INDEX)  # as on a database that older versions wrote
    db["runs"].insert_one(dict(old, _id=1))
    db["runs"].insert_one(dict(old, _id=2))  # a duplicate of the same attempt
    report = tracking.upload(smoke_grid.file_only, url, log=lambda _: None)
    assert report.migrated == 2 and report.duplicates_removed == 1 and len(report.updated) == 1
    (fixed,) = db["runs"].find()
    # the file copy says COMPLETED: the repaired record too; sources have content again, tags are back
    assert fixed["status"] == "COMPLETED"
    assert all(file_id is not None for _, file_id in fixed["experiment"]["sources"])
    assert fixed["omniboard"]["tags"] == ["ablation_peers"]
    _assert_complete(db, _attempts(smoke_grid.file_only))
    # a record that really was preempted is migrated to INTERRUPTED + info.preempted, and read back as PREEMPTED
    db["runs"].insert_one({"_id": 50, "status": "PREEMPTED", "config": {"run_key": "r"}, "info": {},
                           "meta": {"attempt_id": "older"}})
    tracking.upload(smoke_grid.file_only, url, log=lambda _: None)
    migrated = db["runs"].find_one({"_id": 50})
    assert migrated["status"] == "INTERRUPTED" and migrated["info"]["preempted"] is True
    assert results.run_status(migrated) == "PREEMPTED"


# ---- a resumed run keeps its epochs' original timestamps ------------------------------------------------------
def test_resumed_run_relogs_epochs_with_their_original_timestamps(tmp_path, mongo_url):
    cfg = dict(dataset="synthetic", backbone="tiny_resnet8", method="baseline", epochs=2, batch_size=32,
               synthetic_classes=4, synthetic_train_size=64, synthetic_test_size=32, device="cpu", workers=0,
               checkpoint_root=str(tmp_path / "ck"), experiment="test_clients", label="resume")

    def preempt(epoch, metrics):
        if epoch == 0:
            tracking.request_stop()

    kwargs = dict(results_dir=str(tmp_path / "results"), mongo_url=mongo_url, log=lambda _: None)
    first = tracking.run_grid([cfg], callbacks=[preempt], **kwargs)
    assert first.runs[0].status == "PREEMPTED"
    time.sleep(1.1)
    second = tracking.run_grid([cfg], **kwargs)
    assert second.runs[0].status == "COMPLETED"
    db = results.connect(mongo_url)
    a, b = db["runs"].find().sort("_id", 1)
    assert a["status"] == "INTERRUPTED" and a["info"]["preempted"] is True and b["status"] == "COMPLETED"
    old = db["metrics"].find_one({"run_id": a["_id"], "name": HEADLINE})
    new = db["metrics"].find_one({"run_id": b["_id"], "name": HEADLINE})
    assert new["steps"] == [1, 2]
    assert new["timestamps"][0] == old["timestamps"][0]  # epoch 1 as first logged, not at the resume
    assert (new["timestamps"][1] - new["timestamps"][0]).total_seconds() > 1
    # the file store agrees (to the microsecond; MongoDB keeps milliseconds)
    local_old, local_new = (json.loads((tmp_path / "results" / str(r["_id"]) / "metrics.json").read_text())[HEADLINE]
                            for r in (a, b))
    assert local_new["timestamps"][0] == local_old["timestamps"][0]


def test_ids_side_by_side_when_the_file_store_folder_is_taken(tmp_path, mongo_url):
    cfg = dict(dataset="synthetic", backbone="tiny_resnet8", method="baseline", epochs=1, batch_size=32,
               synthetic_classes=4, synthetic_train_size=64, synthetic_test_size=32, device="cpu", workers=0,
               checkpoint_root=str(tmp_path / "ck"), experiment="test_clients", label="ids")
    (tmp_path / "results" / "1").mkdir(parents=True)  # e.g. a file-only run made before this database existed
    lines = []
    report = tracking.run_grid([cfg], results_dir=str(tmp_path / "results"), mongo_url=mongo_url, log=lines.append)
    run = report.runs[0]
    assert run.status == "COMPLETED" and run.run_id == 1
    assert run.info["run_ids"] == {"file": "2", "mongo": 1}
    doc = results.connect(mongo_url)["runs"].find_one({"_id": 1})
    assert doc["info"]["run_ids"] == {"file": "2", "mongo": 1}
    local = json.loads((tmp_path / "results" / "2" / "info.json").read_text())
    assert local["run_ids"] == {"file": "2", "mongo": 1}
    assert "(record 1 in MongoDB, 2 in the file store)" in lines[1]  # the grid's line names both
