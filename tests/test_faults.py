"""Faults a cluster user meets (issue 10): nothing lost, doubled or leaked.

Full disks are real when the tests may mount a tmpfs (root), else injected at the fsync of the files written
there (OSError ENOSPC, as a full disk or an over-quota NFS mount reports it). A filesystem without file locks is
injected at flock (ENOLCK). MongoDB is the real wire-protocol server of conftest.py.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch

from helpers_data import write_cifar10
from pcl import results, schema, tracking
from pcl.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def smoke(tmp_path: Path, **overrides) -> dict:
    cfg = dict(dataset="synthetic", backbone="tiny_resnet8", method="baseline", epochs=1, batch_size=32,
               synthetic_classes=4, synthetic_train_size=64, synthetic_test_size=32, device="cpu", workers=0,
               checkpoint_root=str(tmp_path / "ck"), experiment="test_faults", label="smoke")
    cfg.update(overrides)
    return cfg


def grid(tmp_path: Path, configs: list[dict], mongo_url: str | None = None, **kwargs) -> tracking.GridReport:
    return tracking.run_grid(configs, results_dir=str(tmp_path / "results"), mongo_url=mongo_url,
                             log=lambda _: None, **kwargs)


def file_records(results_dir: Path) -> list[dict]:
    return sorted(results.iter_records(str(results_dir)), key=lambda r: str(r.get("start_time")))


# ---- a full disk --------------------------------------------------------------------------------------------------
class Disk:
    """A small filesystem at `path` that `fill()` makes full and `free()` empties again: a real tmpfs when this
    process may mount one, else ENOSPC injected at os.fsync of files under `path`."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch, real: bool):
        self.path = path
        path.mkdir(parents=True)
        self.real = real and os.geteuid() == 0 and shutil.which("mount") is not None and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(path)], capture_output=True, check=False).returncode == 0
        if real and not self.real:
            pytest.skip("mounting a tmpfs is not permitted here (the injected full disk runs instead)")
        self.full = False
        if not self.real:
            real_fsync = os.fsync

            def fsync(fd: int) -> None:
                if self.full and os.readlink(f"/proc/self/fd/{fd}").startswith(str(self.path)):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                real_fsync(fd)

            monkeypatch.setattr(os, "fsync", fsync)

    def fill(self) -> None:
        self.full = True
        if self.real:  # fill every byte: chunks of 1 MiB, then smaller ones down to one byte
            fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                size = 1 << 20
                while size:
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError:
                        size //= 2
            finally:
                os.close(fd)

    def free(self) -> None:
        self.full = False
        if self.real:
            (self.path / "filler").unlink()

    def close(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)


@pytest.fixture(params=["tmpfs", "injected"])
def disk(tmp_path, monkeypatch, request):
    d = Disk(tmp_path / "disk", monkeypatch, real=request.param == "tmpfs")
    yield d
    d.close()


def fill_after_first_epoch(disk: Disk):
    def callback(epoch, metrics):
        if epoch == 0:
            disk.fill()
    return callback


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*tmp*") if p.name != "filler"]


def test_a_full_results_disk_fails_the_run_and_the_next_start_restores_the_record(tmp_path, disk):
    results_dir = disk.path / "results"
    cfg = smoke(tmp_path, epochs=3)
    report = tracking.run_grid([cfg], results_dir=str(results_dir), callbacks=[fill_after_first_epoch(disk)],
                               log=lambda _: None)
    (run,) = report.runs
    assert run.status == "RECORD_FAILED" and report.exit_code == 1  # not COMPLETED with exit 0
    assert "no space left on device" in run.error and str(results_dir) in run.error
    assert not temp_files(results_dir)  # no partial temp file left behind
    assert not results.has_completed([str(results_dir)], run.run_key)  # so the next start is not skipped

    disk.free()
    again = tracking.run_grid([cfg], results_dir=str(results_dir), log=lambda _: None)
    assert [r.status for r in again.runs] == ["COMPLETED"] and again.exit_code == 0
    done = [r for r in file_records(results_dir) if r["status"] == "COMPLETED"]
    assert len(done) == 1 and done[0]["result"]["epochs"] == 3.0
    curve = results.load_metrics(str(results_dir), attempt_ids=[done[0]["meta"]["attempt_id"]],
                                 names=["test/top1_err/net"])
    assert sorted(curve["step"]) == [1, 2, 3]  # the whole curve, restored from the checkpoint


def test_a_results_disk_full_from_the_start_fails_the_run_before_training(tmp_path, disk):
    results_dir = disk.path / "results"
    results_dir.mkdir()
    disk.fill()
    report = tracking.run_grid([smoke(tmp_path)], results_dir=str(results_dir), log=lambda _: None)
    (run,) = report.runs
    assert run.status == "FAILED" and report.exit_code == 1 and "no space left on device" in run.error.lower()
    assert not temp_files(results_dir)
    assert not (tmp_path / "ck" / run.run_key / "checkpoint.pt").exists()  # nothing was trained


def test_a_full_checkpoint_disk_names_the_cause_and_keeps_the_good_checkpoint(tmp_path, disk):
    cfg = smoke(tmp_path, epochs=3, checkpoint_root=str(disk.path / "ck"))
    report = grid(tmp_path, [cfg], callbacks=[fill_after_first_epoch(disk)])
    (run,) = report.runs
    assert run.status == "FAILED" and report.exit_code == 1
    assert "no space left on device" in run.error and "checkpoint.pt" in run.error
    ckpt = disk.path / "ck" / run.run_key / "checkpoint.pt"
    assert not temp_files(ckpt.parent)  # the partial .checkpoint.pt.tmpPID is gone
    assert load_checkpoint(ckpt)["epoch"] == 1  # the good checkpoint of epoch 1 stays

    disk.free()
    again = grid(tmp_path, [cfg])
    assert [r.status for r in again.runs] == ["COMPLETED"]
    assert again.runs[0].info["resumed_from_epoch"] == 1


# ---- the run_key is claimed where the runs meet --------------------------------------------------------------------
LAUNCH = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from pcl import tracking
    configs, results_dir, url, go = json.loads(sys.argv[1])
    while not Path(go).exists():
        time.sleep(0.01)
    report = tracking.run_grid(configs, results_dir=results_dir, mongo_url=url, log=lambda _: None)
    print(json.dumps([[r.run_key, r.status] for r in report.runs]))
""")


@pytest.mark.slow
def test_two_launches_sharing_mongodb_train_every_run_key_once(tmp_path, mongo_url):
    go = tmp_path / "go"
    procs = []
    for node in ("a", "b"):  # node-local checkpoint_root and results_dir, one MongoDB
        configs = [smoke(tmp_path, method=m, epochs=2, synthetic_train_size=256, checkpoint_root=str(tmp_path / node))
                   for m in ("baseline", "dml", "one")]
        arg = json.dumps([configs, str(tmp_path / f"results-{node}"), mongo_url, str(go)])
        procs.append(subprocess.Popen([sys.executable, "-c", LAUNCH, arg], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")))
    time.sleep(1)
    go.touch()
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outcomes += json.loads(out.strip().splitlines()[-1])
    db = results.connect(mongo_url)
    keys = {key for key, _ in outcomes}
    assert len(keys) == 3
    for key in keys:
        assert db["runs"].count_documents({"config.run_key": key, "status": "COMPLETED"}) == 1, outcomes
    assert sorted(status for _, status in outcomes).count("COMPLETED") == 3
    assert db["claims"].count_documents({}) == 0  # every claim released


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder, taken", [
    ("dead pid on this host", True),
    ("stale heartbeat on another host", True),
    ("live holder on another host", False),
])
def test_a_claim_is_respected_while_its_holder_lives_and_taken_over_when_it_died(tmp_path, mongo_url, holder,
                                                                                    taken, capsys):
    cfg = tracking.normalize_run_config(smoke(tmp_path))
    now = datetime.now(UTC)
    claim = {"_id": cfg["run_key"], "attempt_id": "other", "claimed_at": now, "heartbeat": now,
             "host": socket.gethostname(), "pid": dead_pid()}
    if holder != "dead pid on this host":
        claim.update(host="another-node", pid=os.getpid())
    if holder == "stale heartbeat on another host":
        claim["heartbeat"] = now - timedelta(seconds=tracking.lifecycle.CLAIM_STALE_S + 60)
    db = results.connect(mongo_url)
    db["claims"].insert_one(claim)
    report = grid(tmp_path, [cfg], mongo_url)
    (run,) = report.runs
    if taken:
        assert run.status == "COMPLETED"
        assert "taking over the claim" in capsys.readouterr().err
        assert db["claims"].count_documents({}) == 0
    else:
        assert run.status == "LOCKED" and "another-node" in run.error
        assert db["runs"].count_documents({}) == 0 and not (tmp_path / "results").exists()
        assert db["claims"].find_one({"_id": cfg["run_key"]})["attempt_id"] == "other"


def test_a_filesystem_without_file_locks_is_a_clear_message(tmp_path, mongo_url, monkeypatch):
    import fcntl

    def flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", flock)
    with pytest.raises(tracking.UserError, match="without file locks") as err:
        grid(tmp_path, [smoke(tmp_path)])
    assert "checkpoint_root" in str(err.value) and "MongoDB" in str(err.value)
    assert not (tmp_path / "ck").exists() and not (tmp_path / "results").exists()
    # with MongoDB the claim guards the run_key: the run goes on
    report = grid(tmp_path, [smoke(tmp_path)], mongo_url)
    assert [r.status for r in report.runs] == ["COMPLETED"]


# ---- what identifies a run's data ---------------------------------------------------------------------------------
def test_the_official_cifar_files_keep_the_run_keys_and_other_files_change_them():
    import torchvision

    from pcl.data.fingerprint import identity_of_files, official_md5s

    for name, cls in (("cifar10", torchvision.datasets.CIFAR10), ("cifar100", torchvision.datasets.CIFAR100)):
        official = dict(cls.train_list + cls.test_list)
        assert official_md5s(name) == official
        assert identity_of_files(name, official) is None  # neutral: the pinned run_keys stay
        changed = {**official, next(iter(official)): "0" * 32}
        assert identity_of_files(name, changed).startswith("md5:")
    cfg = {"dataset": "cifar10", "method": "baseline"}
    plain = schema.normalize_run_config(cfg)["run_key"]
    assert schema.normalize_run_config({**cfg, "data_identity": None})["run_key"] == plain
    assert schema.normalize_run_config({**cfg, "data_identity": "md5:0123"})["run_key"] != plain


def cifar_cfg(tmp_path: Path, root: Path, **overrides) -> dict:
    return smoke(tmp_path, dataset="cifar10", data_root=str(root), batch_size=8, **overrides)


def test_the_run_key_follows_the_data_not_its_path(tmp_path):
    write_cifar10(tmp_path / "a", per_batch=8, test_size=8, seed=0)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")  # the same files elsewhere
    write_cifar10(tmp_path / "b", per_batch=8, test_size=8, seed=1)  # other files
    key = {root: tracking.normalize_run_config(cifar_cfg(tmp_path, tmp_path / root))["run_key"]
           for root in ("a", "copy", "b")}
    assert key["a"] == key["copy"] != key["b"]
    official = schema.normalize_run_config(cifar_cfg(tmp_path, tmp_path / "a"))["run_key"]
    assert official not in key.values()  # files that are not the official ones never pass for them

    first = grid(tmp_path, [cifar_cfg(tmp_path, tmp_path / "a")])
    assert [r.status for r in first.runs] == ["COMPLETED"]
    data = first.runs[0].info["data"]
    assert data["official"] is False and set(data["files"]) == {*(f"data_batch_{i}" for i in range(1, 6)),
                                                                "test_batch"}
    other = grid(tmp_path, [cifar_cfg(tmp_path, tmp_path / "b")])
    assert [r.status for r in other.runs] == ["COMPLETED"]  # another copy of the data is not "already done"
    same = grid(tmp_path, [cifar_cfg(tmp_path, tmp_path / "copy")])
    assert [r.status for r in same.runs] == ["SKIPPED"]  # the same data under another path is
    (record,) = [r for r in file_records(tmp_path / "results") if r["config"]["run_key"] == key["a"]]
    assert record["config"]["data_identity"] == data["identity"] and record["info"]["data"]["files"] == data["files"]


def test_the_imagenet_identity_is_its_file_list_wherever_it_lies(tmp_path):
    from pcl.data.fingerprint import imagenet_fingerprint

    for root in ("a", "b"):
        for split, n in (("train", 3), ("val", 2)):
            for cls in ("n01", "n02"):
                folder = tmp_path / root / split / cls
                folder.mkdir(parents=True)
                for i in range(n):
                    (folder / f"{cls}_{i}.JPEG").write_bytes(b"\xff\xd8")  # not empty: an empty image is refused
    a, b = imagenet_fingerprint(tmp_path / "a"), imagenet_fingerprint(tmp_path / "b")
    assert a["identity"] == b["identity"] and (a["train_images"], a["val_images"], a["classes"]) == (6, 4, 2)
    (tmp_path / "b" / "val" / "n02" / "extra.JPEG").write_bytes(b"\xff\xd8")  # one more image: other data
    changed = imagenet_fingerprint(tmp_path / "b")
    assert changed["identity"] != a["identity"] and changed["val_images"] == 5
    cfg = {"dataset": "imagenet", "backbone": "resnet18", "method": "baseline"}
    keys = {root: tracking.normalize_run_config({**cfg, "data_root": str(tmp_path / root)})["run_key"]
            for root in ("a", "b")}
    assert keys["a"] != keys["b"]


# ---- damaged checkpoints ------------------------------------------------------------------------------------------
def damage(path: Path, kind: str, tmp_path: Path) -> str:
    """Write a damaged checkpoint of `kind` at `path`; returns the words the message must contain."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero-byte":
        path.write_bytes(b"")
        return "empty"
    if kind == "truncated":
        good = tmp_path / "good.pt"
        torch.save({"format": 1, "weights": torch.randn(4096)}, good)
        path.write_bytes(good.read_bytes()[:3000])
        return "truncated"
    if kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
        return "not a checkpoint of this suite"
    if kind == "other method":
        torch.save({"format": 1, "identity": {"method": "dml", "backbone": "resnet32", "num_classes": 100},
                    "epoch": 1, "method": {}, "optimizer": {}, "rng": {}, "history": []}, path)
        return "written by"
    raise ValueError(kind)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("kind", ["zero-byte", "truncated", "foreign", "other method"])
def test_a_damaged_checkpoint_is_moved_aside_and_the_run_starts_over(tmp_path, kind, force, capsys):
    cfg = tracking.normalize_run_config(smoke(tmp_path, force=force))
    ckpt = tmp_path / "ck" / cfg["run_key"] / "checkpoint.pt"
    words = damage(ckpt, kind, tmp_path)
    damaged_bytes = ckpt.read_bytes()
    report = grid(tmp_path, [cfg])
    (run,) = report.runs
    assert run.status == "COMPLETED" and run.info["resumed_from_epoch"] == 0
    err = capsys.readouterr().err
    assert str(ckpt) in err and words in err and "starts over" in err
    (aside,) = ckpt.parent.glob("checkpoint.pt.damaged-*")
    assert aside.read_bytes() == damaged_bytes  # kept for inspection
    assert run.info["damaged_checkpoint"]["path"] == str(aside) and words in run.info["damaged_checkpoint"]["problem"]
    assert load_checkpoint(ckpt)["epoch"] == 1


def test_loading_a_damaged_checkpoint_names_the_file_and_the_problem(tmp_path):
    from pcl.checkpoint import CheckpointError

    for kind in ("zero-byte", "truncated"):
        path = tmp_path / kind / "checkpoint.pt"
        words = damage(path, kind, tmp_path)
        with pytest.raises(CheckpointError, match=words) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value)


# ---- secrets --------------------------------------------------------------------------------------------------------
#: URLs as users type them; the password pieces Sx9, Qz7, Wv5 must never be shown
MALFORMED_URLS = [
    "mongodb://alice:Sx9/Qz7@127.0.0.1:{port}/pcl",  # '/' in the password
    "mongodb://alice:Sx9@Qz7@127.0.0.1:{port}/pcl",  # '@' in the password
    "mongodb://alice:Sx9:Qz7Wv5@127.0.0.1:{port}",  # ':' in the password
    "mongodb://alice:Sx9?Qz7@127.0.0.1:{port}",  # '?' in the password
    "mongodb://alice:Sx9#Qz7@127.0.0.1:{port}",  # '#' in the password
    "alice:Sx9Qz7Wv5@127.0.0.1:{port}",  # no scheme
    "mongodb://alice:Sx9%zzQz7@127.0.0.1:{port}",  # a broken %-escape
    "mongodb://alice:Sx9/Qz7@Wv5@[::1",  # does not parse at all
    "mongodb+srv://alice:Sx9Qz7Wv5@",  # no host
    "mongodb://alice:Sx9Qz7Wv5@127.0.0.1:{port}/?authSource=admin&password=Wv5Wv5",
    "mongodb://alice:Sx9 Qz7@127.0.0.1:{port}",  # a space in the password
]


@pytest.mark.parametrize("template", MALFORMED_URLS)
def test_no_part_of_a_password_is_ever_shown_whatever_the_url(tmp_path, template, capsys):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    url = template.format(port=port.getsockname()[1])
    shown = [tracking.redact_url(url)]
    tracking.resolve_mongo_url(url)
    shown.append(tracking.redact(f"could not connect to {url} (see {url!r})"))
    with pytest.raises(tracking.StoreUnavailable) as err:
        tracking.open_store(tmp_path / "results", url, timeout_s=0.3)
    port.close()
    shown += [str(err.value), *capsys.readouterr()]
    for text in shown:
        for piece in ("Sx9", "Qz7", "Wv5"):
            assert piece not in text, text
    assert "alice" in shown[0]  # the user stays visible
    assert not (tmp_path / "results").exists()


def test_git_remote_tokens_and_passwords_never_reach_records_logs_or_checkpoints(tmp_path, mongo_server_factory,
                                                                                     capsys, caplog):
    from urllib.parse import quote_plus

    from pymongo import MongoClient

    token, password = "ghp_Tok3nSx9Qz7", "Pw/Wv5@x"
    repo = tmp_path / "repo"
    repo.mkdir()
    source = repo / "script.py"
    source.write_text("print('a source file of the run')\n")
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "script.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    subprocess.run(git + ["remote", "add", "origin", f"https://bot:{token}@git.example/x.git"], check=True)

    server = mongo_server_factory("auth")
    with MongoClient(server.url()) as admin:
        admin.admin.command("createUser", "alice", pwd=password, roles=["root"])
    server.stop()
    server.require_auth = True
    server.start()
    url = server.url("alice", quote_plus(password))
    report = tracking.run_grid([smoke(tmp_path)], results_dir=str(tmp_path / "results"), mongo_url=url,
                               source_files=[str(source)])
    assert [r.status for r in report.runs] == ["COMPLETED"]
    db = MongoClient(url)["pcl"]
    (doc,) = db["runs"].find()
    repos = doc["experiment"]["repositories"]
    assert {"commit": repos[0]["commit"], "dirty": repos[0]["dirty"]} in repos and len(repos[0]["commit"]) == 40
    assert all(set(r) == {"commit", "dirty"} for r in repos)  # no remote URL, so no credentials
    captured = capsys.readouterr()
    texts = [json.dumps([list(db[c].find({}, {"_id": 0})) for c in db.list_collection_names()], default=str),
             str(report), captured.out, captured.err, caplog.text]
    texts += [p.read_bytes().decode("latin1") for p in tmp_path.rglob("*")
              if p.is_file() and repo not in p.parents and tmp_path / "auth" not in p.parents]
    assert any("checkpoint.pt" in str(p) for p in tmp_path.rglob("*"))
    for text in texts:
        for secret in (token, "Tok3n", password, quote_plus(password), "Wv5"):
            assert secret not in text
