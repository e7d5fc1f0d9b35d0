"""Distributed training on the CPU: 2 processes, gloo, a tiny PCL (live peers + temporal mean), a few steps.

One spawned job checks: both ranks end with identical parameters, temporal means and buffers; 1 epoch + resume
+ 1 epoch equals 2 epochs straight (exactly); only rank 0 writes checkpoints and calls the record callbacks. The
rest (sharding, environment detection, option errors) is checked in-process."""
from __future__ import annotations

import contextlib
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
import torch.multiprocessing as mp

from pcl import distributed
from pcl.distributed import cli as distributed_cli
from pcl.data import build_loaders
from pcl.data.loaders import ShardedDeviceLoader
from pcl.data.imagenet import _EpochSampler

CLASSES = 4
GLOBAL_BATCH = 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loaders(num_views, rank=0, world_size=1):
    return build_loaders("synthetic", batch_size=GLOBAL_BATCH, num_views=num_views, device="cpu", seed=0,
                         synthetic_classes=CLASSES, synthetic_train_size=96, synthetic_test_size=32, rank=rank,
                         world_size=world_size)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from pcl import engine
    from pcl.engine import Recipe
    from pcl.seeding import seed_everything
    from pcl.methods import build_method

    writes = []
    real_save = engine.save_atomic
    engine.save_atomic = lambda obj, path: (writes.append(str(path)), real_save(obj, path))[1]
    env, device = distributed.setup(device_type="cpu")
    assert env == distributed.DistEnv(rank, world, rank)
    records = []

    def run(epochs, ckpt):
        seed_everything(rank)  # different seeds per rank: DDP must still start every rank from rank 0's weights
        method = build_method("pcl", "tiny_resnet8", CLASSES, peers=2, rampup_length=1)
        keys = list(method.state_dict())
        assert distributed.prepare_method(method, env, device, batch_norm="local") is method
        assert list(method.state_dict()) == keys and method.training_step is method.ddp  # only the step changes
        train_loader, test_loader, _ = _loaders(method.num_views, env.rank, env.world_size)
        distributed.train_distributed(method, train_loader, test_loader,
                                      Recipe(epochs=epochs, lr=0.05, milestones=(1,)), env, checkpoint_path=ckpt,
                                      callbacks=[lambda e, m: records.append((e, m))], should_stop=lambda: False,
                                      stop_check_every=1)
        state = {k: v.clone() for k, v in method.state_dict().items()}
        assert "training_step" not in vars(distributed.unwrap(method))
        return state

    straight = run(2, os.path.join(out_dir, "a", "checkpoint.pt"))
    run(1, os.path.join(out_dir, "b", "checkpoint.pt"))
    resumed = run(2, os.path.join(out_dir, "b", "checkpoint.pt"))
    torch.save({"straight": straight, "resumed": resumed, "writes": writes,
                "records": [(e, sorted(m)) for e, m in records],
                "images": [m["images_per_s"] * m["epoch_time_s"] for _, m in records]},
               os.path.join(out_dir, f"rank{rank}.pt"))
    distributed.cleanup()


@pytest.mark.slow  # about 30 s on 2 busy cores (two interpreters, 5 short epochs each)
def test_two_ranks_identical_resume_exact_rank0_writes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    state = r0["straight"]
    assert any(k.startswith("temporal_mean.mean.") for k in state) and "temporal_mean.step" in state
    assert state["temporal_mean.step"].item() == 2 * (96 // GLOBAL_BATCH)  # one EMA update per global step
    for k, v in state.items():  # parameters, temporal mean, BN buffers: identical on both ranks
        assert torch.equal(r1["straight"][k], v), k
        assert torch.equal(r0["resumed"][k], v), k  # 1 epoch + resume + 1 epoch == 2 epochs straight
        assert torch.equal(r1["resumed"][k], v), k
    live = state["net.branches.0.classifier.weight"]
    mean = state["temporal_mean.mean.branches.0.classifier.weight"]
    assert not torch.equal(live, mean)  # the mean teacher is a different network, identical across ranks
    # only rank 0 writes checkpoints (2 + 1 + 1 epochs) and records; rank 1 none
    assert len(r0["writes"]) == 4 and all(w.endswith("checkpoint.pt") for w in r0["writes"])
    assert r1["writes"] == [] and r1["records"] == []
    assert [e for e, _ in r0["records"]] == [0, 1, 0, 1]
    assert "test/top1_err/mean_peer1" in r0["records"][0][1]
    # images/s counts the images of both processes: 3 global batches of 32 per epoch, not rank 0's 3 x 16
    assert r0["images"] == pytest.approx([96.0] * 4)


def test_sharded_device_loader_splits_each_global_batch():
    train_loader, _, _ = _loaders(2)
    full = list(train_loader)
    shards = []
    for rank in (0, 1):
        loader, _, _ = _loaders(2, rank, 2)
        assert isinstance(loader, ShardedDeviceLoader)
        assert loader.batch_size == GLOBAL_BATCH // 2 and len(loader) == len(full)
        assert list(loader)[0][1].shape == (GLOBAL_BATCH // 2,)  # iterating twice: the same epoch, no side effect
        shards.append(list(loader))
    for (views, labels), (v0, l0), (v1, l1) in zip(full, *shards):
        assert torch.equal(torch.cat([l0, l1]), labels)
        for k in range(2):
            assert torch.equal(torch.cat([v0[k], v1[k]]), views[k])
    loader.set_epoch(1)
    train_loader.set_epoch(1)
    assert torch.equal(next(iter(loader))[1], next(iter(train_loader))[1][GLOBAL_BATCH // 2:])
    with pytest.raises(ValueError, match="divisible"):
        ShardedDeviceLoader(train_loader, 0, 3)


def test_imagenet_sampler_shards_global_batches():
    whole = _EpochSampler(23, seed=1, shuffle=True)
    order = [i for i, _ in whole]
    parts = [list(_EpochSampler(23, seed=1, shuffle=True, batch_size=4, rank=r, world_size=2)) for r in (0, 1)]
    assert all(e == 0 for p in parts for _, e in p) and len(parts[0]) == 8
    rebuilt = []
    for k in range(2):  # 23 // 8 = 2 global batches of 8
        rebuilt += [i for i, _ in parts[0][4 * k:4 * k + 4]] + [i for i, _ in parts[1][4 * k:4 * k + 4]]
    assert rebuilt == order[:16]


def test_environment_detection():
    assert distributed.detect_env({}) == distributed.DistEnv(0, 1, 0)
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    assert distributed.detect_env(torchrun) == distributed.DistEnv(3, 8, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert distributed.detect_env(slurm) == distributed.DistEnv(5, 8, 1)
    assert distributed.detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == distributed.DistEnv()


def test_bad_options_fail_naming_the_key():
    from pcl.methods import build_method

    method = build_method("baseline", "tiny_resnet8", CLASSES)
    with pytest.raises(ValueError, match="batch_norm='group'"):
        distributed.prepare_method(method, distributed.DistEnv(), torch.device("cpu"), batch_norm="group")
    with pytest.raises(ValueError, match="batch_norm='sync' needs CUDA"):
        distributed.prepare_method(method, distributed.DistEnv(0, 2, 0), torch.device("cpu"), batch_norm="sync")
    assert distributed.prepare_method(method, distributed.DistEnv(), torch.device("cpu")) is method


def test_command_line_single_process_writes_run_files(tmp_path, monkeypatch):
    """`python -m pcl.distributed` (what torchrun starts on each rank) as one process: history, checkpoint and
    deployed model in --out-dir; the deployed model loads into a plain backbone; the run config (time constants
    scaled to the run) is the one the tracked scripts would train, run_key included."""
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    import json

    from pcl.models import build_backbone

    from pcl.schema import normalize_run_config

    assert distributed_cli.main(["--dataset", "synthetic", "--method", "pcl", "--backbone", "tiny_resnet8",
                             "--epochs", "2", "--batch-size", "32", "--synthetic-train-size", "64", "--device", "cpu",
                             "--out-dir", str(tmp_path)]) == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["world_size"] == 1 and "deployed/top1_err" in history["summary"]
    tracked = normalize_run_config({"dataset": "synthetic", "method": "pcl", "backbone": "tiny_resnet8", "epochs": 2,
                                    "batch_size": 32, "synthetic_train_size": 64})
    assert history["config"]["run_key"] == tracked["run_key"]
    assert history["config"]["options"]["rampup_length"] == tracked["options"]["rampup_length"] < 80
    deployed = torch.load(tmp_path / "deployed.pt", weights_only=True)
    build_backbone("tiny_resnet8", deployed["num_classes"]).load_state_dict(deployed["state_dict"])
    assert (tmp_path / "checkpoint.pt").exists()


def test_command_lines_backbone_defaults_to_one_built_for_the_dataset(tmp_path, capsys, monkeypatch):
    """--backbone left out: resnet18 was the default for every dataset, so `--dataset cifar10` alone was refused
    ('resnet18' is built for imagenet, synthetic). Now the config's default where the dataset has it, else the
    dataset's first declared backbone; the run goes on to its next check (here: no CIFAR files)."""
    from pcl import registry
    from pcl.declarations import DATASETS
    from pcl.schema import KEYS, check_backbone_dataset

    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    for dataset in DATASETS:
        chosen, built = distributed_cli.default_backbone(dataset), registry.dataset_backbones(dataset)
        check_backbone_dataset(chosen, dataset)  # built for it
        # the default before where it is built (a run started without --backbone resumes as itself), else the config's
        assert chosen == (distributed_cli.PREVIOUS_DEFAULT_BACKBONE
                          if distributed_cli.PREVIOUS_DEFAULT_BACKBONE in built else KEYS["backbone"].default)
    assert [distributed_cli.default_backbone(d) for d in ("imagenet", "synthetic", "cifar10")] == \
        ["resnet18", "resnet18", "resnet32"]
    assert distributed_cli.main(["--dataset", "cifar10", "--data-root", str(tmp_path / "none"), "--device", "cpu",
                                 "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'backbone'" not in err and "config key 'data_root'" in err, err
    assert not (tmp_path / "out").exists()
    # the remedy it names is a flag this command has (it said "Pass download=True", which it had no way to pass)
    assert "--download" in err
    fetched = []
    monkeypatch.setattr("pcl.data.cifar._download", lambda name, root: fetched.append(name))
    assert distributed_cli.main(["--dataset", "cifar10", "--data-root", str(tmp_path / "none"), "--device", "cpu",
                                 "--download", "--out-dir", str(tmp_path / "out")]) == 2  # fetched nothing here
    assert fetched == ["cifar10"]


def test_command_line_refuses_bad_flags_and_another_run_in_the_out_dir_in_one_line(tmp_path, capsys, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    flags = ["--dataset", "synthetic", "--method", "baseline", "--backbone", "tiny_resnet8", "--epochs", "1",
             "--batch-size", "32", "--synthetic-train-size", "64", "--device", "cpu"]
    for bad, named in ((["--options", "{bad"], "--options '{bad' is not JSON"),
                       (["--milestones", "a,b"], "--milestones 'a,b' is invalid"),
                       (["--method", "nope"], "config key 'method'='nope'"),
                       (["--batch-norm", "sync"], "'batch_norm'='sync' is invalid with gpus=1")):
        assert distributed_cli.main([*flags, *bad, "--out-dir", str(tmp_path / "fresh")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "fresh").exists()
    assert distributed_cli.main([*flags, "--out-dir", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    # another run (another lr) in the same folder would resume the first one's checkpoint: refused, nothing touched
    before = (tmp_path / "a" / "checkpoint.pt").read_bytes()
    assert distributed_cli.main([*flags, "--lr", "0.5", "--out-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "holds the checkpoint of another run" in err and "it differs in lr" in err
    assert (tmp_path / "a" / "checkpoint.pt").read_bytes() == before
    assert distributed_cli.main([*flags, "--out-dir", str(tmp_path / "a")]) == 0  # the same run again: resumed, done
    assert "resumed from" in capsys.readouterr().out
    # the same config keyed by an older formula of the run_key: said so, not "differs in run_key"
    written = json.loads((tmp_path / "a" / "config.json").read_text())
    (tmp_path / "a" / "config.json").write_text(json.dumps({**written, "run_key": "0123456789abcdef"}))
    assert distributed_cli.main([*flags, "--out-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keyed by an older version of the suite" in err and "differs" not in err, err
    assert (tmp_path / "a" / "checkpoint.pt").read_bytes() != b""


def test_an_out_dir_whose_teacher_file_changed_since_is_named_as_such(tmp_path, capsys, monkeypatch):
    """The same config with a kd teacher replaced in place: the file is named, not the run_key's formula."""
    from pcl.methods import build_method, method_class
    from pcl.runner import save_deployed

    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    options = method_class("kd").example_inputs(tmp_path, "tiny_resnet8", 10)  # synthetic here: 10 classes
    flags = ["--dataset", "synthetic", "--method", "kd", "--backbone", "tiny_resnet8", "--epochs", "1",
             "--batch-size", "32", "--synthetic-train-size", "64", "--device", "cpu", "--options",
             json.dumps(options), "--out-dir", str(tmp_path / "a")]
    assert distributed_cli.main(flags) == 0
    capsys.readouterr()
    torch.manual_seed(1)
    save_deployed(build_method("baseline", "tiny_resnet8", 10), options["teacher_path"])  # retrained in place
    assert distributed_cli.main(flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a file it reads (options.teacher_path) changed since" in err, err


def test_slurm_task_environment_through_submitit(monkeypatch):
    """A submitit multi-task SLURM job: rank, world size, local rank from the task's variables, and the env://
    rendezvous variables (first node, a port derived from the job id) exported for init_process_group."""
    pytest.importorskip("submitit")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "set")  # so that the undo removes what submitit's export sets
        monkeypatch.delenv(key)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert distributed.detect_env() == distributed.DistEnv(3, 4, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["RANK"] == "3" and os.environ["WORLD_SIZE"] == "4"
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000


def _noise_folders(root, per_class: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):  # textured, lossless: every crop/flip draw shows in the pixels
                Image.fromarray(rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)).save(d / f"{i}.png")


def _epochs(loader, epochs):
    out = []
    for e in epochs:
        loader.set_epoch(e)
        out.append([(torch.stack(v), y) for v, y in loader])
    return out


def test_imagenet_loader_persistent_workers_and_rank_shards(tmp_path):
    """Persistent workers see each new epoch (through the sampler): 2 workers == no workers, epochs 0 and 1; and
    ranks 0 and 1 of 2 (global batch 4, per-rank 2) together yield exactly the single-process batches of 4."""
    from pcl.data.imagenet import build_imagenet_loaders

    _noise_folders(tmp_path, 6)
    common = dict(num_views=2, device="cpu", seed=0, crop_size=16, resize_size=20)
    plain = _epochs(build_imagenet_loaders(tmp_path, batch_size=4, workers=0, **common)[0], (0, 1))
    loader = build_imagenet_loaders(tmp_path, batch_size=4, workers=2, **common)[0]
    assert loader.loader.persistent_workers
    workers = _epochs(loader, (0, 1))
    assert len(plain[0]) == 3 and not torch.equal(plain[0][0][0], plain[1][0][0])  # epochs differ
    for pe, we in zip(plain, workers):
        for (pv, py), (wv, wy) in zip(pe, we):
            assert torch.equal(pv, wv) and torch.equal(py, wy)
    # through pcl.data.build_loaders (what the runner calls): the global batch 4, each rank's share 2
    ranks = [_epochs(build_loaders("imagenet", data_root=tmp_path, batch_size=4, workers=0, rank=r, world_size=2,
                                   num_views=2, device="cpu", seed=0, imagenet_crop_size=16,
                                   imagenet_resize_size=20)[0], (0, 1)) for r in (0, 1)]
    for e in (0, 1):
        for (pv, py), (v0, y0), (v1, y1) in zip(plain[e], ranks[0][e], ranks[1][e]):
            assert torch.equal(torch.cat([v0, v1], dim=1), pv) and torch.equal(torch.cat([y0, y1]), py)


# ---- a tracked data-parallel job: torchrun, 2 CPU processes, the Sacred script -------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def _torchrun(tmp_path, *updates, nproc=2, method="pcl", env=None):
    """`torchrun --nproc_per_node=NPROC experiments/table2.py with smoke ...` (PCL runs) as a new session."""
    args = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={_free_port()}",
            "experiments/table2.py", "with", "smoke", f"method={method}", "seeds=[0]", "device=cpu",
            f"results_dir={tmp_path / 'results'}", f"checkpoint_root={tmp_path / 'ck'}", *updates]
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PCL_MONGO_URL")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_checkpoint(proc, tmp_path, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not list((tmp_path / "ck").glob("*/checkpoint.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def _rank_pid(proc, rank: int) -> int:
    """The pid of torchrun's worker process `rank` (from its environment)."""
    for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
        if f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return int(pid)
    raise AssertionError(f"torchrun {proc.pid} has no worker of rank {rank}")


def _records(tmp_path):
    folders = sorted((tmp_path / "results").glob("[0-9]*"), key=lambda p: int(p.name))
    return [{"run": json.loads((f / "run.json").read_text()), "config": json.loads((f / "config.json").read_text()),
             "info": json.loads((f / "info.json").read_text())} for f in folders]


@pytest.mark.slow  # about 25 s: three torchrun jobs of two interpreters each
def test_torchrun_job_rank0_records_once_preempts_together_and_resumes(tmp_path):
    """The Sacred script under torchrun with gpus=2: one record per attempt, written by rank 0 only; a SIGTERM to
    the job (as SLURM sends it to every task) stops both ranks at one step and is recorded once as a preemption;
    the next job resumes from rank 0's checkpoint to one COMPLETED record; a third job skips it."""
    proc = _torchrun(tmp_path, "gpus=2", "epochs=6", "synthetic_train_size=1024")
    _wait_for_checkpoint(proc, tmp_path)  # an epoch is done: the run is mid-way
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    (first,) = _records(tmp_path)
    key = first["config"]["run_key"]
    assert first["run"]["status"] == "INTERRUPTED" and first["info"]["preempted"] is True, err
    assert first["config"]["gpus"] == 2 and first["info"]["environment"]["processes"] == "2"
    done = first["info"]["completed_epochs"]
    assert 1 <= done < 6
    assert out.count("training from scratch") == 1  # rank 0 speaks; the follower prints nothing
    assert torch.load(tmp_path / "ck" / key / "checkpoint.pt", weights_only=True)["epoch"] == done

    again = _torchrun(tmp_path, "gpus=2", "epochs=6", "synthetic_train_size=1024")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    attempts = _records(tmp_path)
    assert [a["run"]["status"] for a in attempts] == ["INTERRUPTED", "COMPLETED"]
    assert attempts[1]["info"]["resumed_from_epoch"] == done and attempts[1]["run"]["result"]["epochs"] == 6.0
    assert out.count(f"resuming at epoch {done + 1}/6") == 1 and out.count("epoch 6/6") == 1

    third = _torchrun(tmp_path, "gpus=2", "epochs=6", "synthetic_train_size=1024")
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert "SKIPPED" in out and len(_records(tmp_path)) == 2


@pytest.mark.slow  # about 8 s: one torchrun job
def test_torchrun_job_with_the_wrong_gpus_exits_2_on_every_rank_leaving_nothing(tmp_path):
    proc = _torchrun(tmp_path)  # gpus=1 (the default) in a 2-process job
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [lines[0]] and "config key 'gpus'=1 is invalid here: this job has 2 process(es)" in lines[0]
    assert "exitcode  : 2" in err and "exitcode  : 1" not in err  # both ranks end with rank 0's exit code 2
    assert not (tmp_path / "results").exists() and not (tmp_path / "ck").exists()


def test_sync_batch_norm_on_the_cpu_is_refused_before_the_job_starts(monkeypatch):
    from pcl.schema import ConfigError, normalize_run_config
    from pcl.tracking.grid import check_data_parallel

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = normalize_run_config({"dataset": "synthetic", "backbone": "tiny_resnet8", "method": "baseline",
                                "epochs": 1, "batch_size": 32, "gpus": 2, "batch_norm": "sync", "device": "cpu"})
    with pytest.raises(ConfigError, match="'batch_norm'='sync' is invalid with device='cpu'.*allowed here: local"):
        check_data_parallel([cfg])
    check_data_parallel([dict(cfg, batch_norm="local")])  # 2 processes, gpus=2: fine
    with pytest.raises(ConfigError, match="'gpus'=1 is invalid here: this job has 2 process"):
        check_data_parallel([dict(cfg, gpus=1, batch_norm="local")])


@pytest.mark.slow  # about 10 s: one torchrun job
def test_a_run_failing_on_rank0_ends_the_job_at_once_instead_of_leaving_the_other_rank_waiting(tmp_path):
    """Rank 0 cannot write its checkpoint (here: a folder where the file goes) while rank 1 trains on into the next
    epoch's gradient all-reduce. The failure is recorded once (FAILED), the grid's next run is not started, and the
    job ends within seconds (not after the process group's 30-minute time-out), with exit code 1 and a message that
    says why."""
    proc = _torchrun(tmp_path, "gpus=2", "epochs=6", "synthetic_train_size=1024", method='["pcl","baseline"]')
    _wait_for_checkpoint(proc, tmp_path)  # an epoch is done: the run is mid-way
    (ckpt,) = list((tmp_path / "ck").glob("*/checkpoint.pt"))
    ckpt.unlink()
    (ckpt / "in_the_way").mkdir(parents=True)  # the next checkpoint cannot be renamed into place
    started = time.monotonic()
    out, err = proc.communicate(timeout=240)
    assert time.monotonic() - started < 90, "the job waited for a collective that never came"
    assert proc.returncode != 0
    assert "rank 0: a data-parallel run failed here" in err and "ending the job (exit 1)" in err
    (record,) = _records(tmp_path)
    assert record["run"]["status"] == "FAILED"


@pytest.mark.slow  # about 20 s: two torchrun jobs
def test_a_killed_follower_ends_the_job_with_a_message_and_the_next_start_resumes(tmp_path):
    """SIGKILL to rank 1 mid-run (a node or process dying): rank 0's collective fails, its record says FAILED with
    a message naming the cause, the job ends in seconds, and the next job resumes to one COMPLETED record."""
    proc = _torchrun(tmp_path, "gpus=2", "epochs=6", "synthetic_train_size=1024")
    _wait_for_checkpoint(proc, tmp_path)  # an epoch is done: the run is mid-way
    os.kill(_rank_pid(proc, 1), signal.SIGKILL)
    started = time.monotonic()
    out, err = proc.communicate(timeout=240)
    assert time.monotonic() - started < 90 and proc.returncode != 0
    (failed,) = _records(tmp_path)
    assert failed["run"]["status"] == "FAILED"
    assert "another process of this data-parallel job ended during the run" in failed["run"]["fail_trace"][-1]
    again = _torchrun(tmp_path, "gpus=2", "epochs=6", "synthetic_train_size=1024")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    attempts = _records(tmp_path)
    assert [a["run"]["status"] for a in attempts] == ["FAILED", "COMPLETED"]
    assert attempts[1]["info"]["resumed_from_epoch"] >= 1


@pytest.mark.slow  # about 20 s: one torchrun job
def test_a_frozen_process_fails_the_run_after_the_collective_timeout_not_30_minutes(tmp_path):
    """SIGSTOP to rank 1 (a frozen process: no crash, no closed connection): rank 0's next gradient all-reduce gives
    up after $PCL_COLLECTIVE_TIMEOUT_S (here 5 s) and the run is recorded FAILED; the job ends."""
    proc = _torchrun(tmp_path, "gpus=2", "epochs=6", "synthetic_train_size=1024", env={"PCL_COLLECTIVE_TIMEOUT_S": "5"})
    _wait_for_checkpoint(proc, tmp_path)
    follower = _rank_pid(proc, 1)
    os.kill(follower, signal.SIGSTOP)
    started = time.monotonic()
    try:
        while '"status": "FAILED"' not in "".join(p.read_text() for p in (tmp_path / "results").glob("*/run.json")):
            assert time.monotonic() - started < 120, "rank 0 still waits for the frozen process"
            time.sleep(0.2)
    finally:  # torchrun would give the frozen process its 30-second grace: end it now
        with contextlib.suppress(ProcessLookupError):
            os.kill(follower, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
