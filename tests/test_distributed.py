"""Distributed training on the CPU: 2 processes, gloo, a tiny PCL (live peers + temporal mean), a few steps.

One spawned job checks: both ranks end with identical parameters, temporal means and buffers; 1 epoch + resume
+ 1 epoch equals 2 epochs straight (exactly); only rank 0 writes checkpoints and calls the record callbacks. The
rest (sharding, environment detection, option errors) is checked in-process."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pcl import distributed
from pcl.data import build_loaders
from pcl.data.imagenet import _EpochSampler

CLASSES = 4
GLOBAL_BATCH = 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loaders(num_views):
    return build_loaders("synthetic", batch_size=GLOBAL_BATCH, num_views=num_views, device="cpu", seed=0,
                         synthetic_classes=CLASSES, synthetic_train_size=96, synthetic_test_size=32)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from pcl import engine
    from pcl.engine import Recipe, seed_everything
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
        train_loader, test_loader, _ = _loaders(method.num_views)
        distributed.train_distributed(method, distributed.shard_loader(train_loader, env), test_loader,
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
                "records": [(e, sorted(m)) for e, m in records]}, os.path.join(out_dir, f"rank{rank}.pt"))
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


def test_sharded_device_loader_splits_each_global_batch():
    train_loader, _, _ = _loaders(2)
    full = list(train_loader)
    shards = []
    for rank in (0, 1):
        train_loader.set_epoch(0)
        loader = distributed.ShardedDeviceLoader(train_loader, distributed.DistEnv(rank, 2, rank))
        assert loader.batch_size == GLOBAL_BATCH // 2 and len(loader) == len(full)
        shards.append(list(loader))
    for (views, labels), (v0, l0), (v1, l1) in zip(full, *shards):
        assert torch.equal(torch.cat([l0, l1]), labels)
        for k in range(2):
            assert torch.equal(torch.cat([v0[k], v1[k]]), views[k])
    with pytest.raises(ValueError, match="divisible"):
        distributed.ShardedDeviceLoader(train_loader, distributed.DistEnv(0, 3, 0))


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
    deployed model in --out-dir; the deployed model loads into a plain backbone."""
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    import json

    from pcl.models import build_backbone

    assert distributed.main(["--dataset", "synthetic", "--method", "baseline", "--backbone", "tiny_resnet8",
                             "--epochs", "1", "--batch-size", "32", "--synthetic-train-size", "64", "--device", "cpu",
                             "--milestones", "", "--out-dir", str(tmp_path)]) == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["world_size"] == 1 and "deployed/top1_err" in history["summary"]
    deployed = torch.load(tmp_path / "deployed.pt", weights_only=True)
    build_backbone("tiny_resnet8", deployed["num_classes"]).load_state_dict(deployed["state_dict"])
    assert (tmp_path / "checkpoint.pt").exists()


def test_slurm_task_environment_through_submitit(monkeypatch):
    """A submitit multi-task SLURM job: rank, world size, local rank from the task's variables, and the env://
    rendezvous variables (first node, a port derived from the job id) exported for init_process_group."""
    pytest.importorskip("submitit")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
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
    ranks 0 and 1 of 2 (per-rank batch 2) together yield exactly the single-process batches of 4."""
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
    ranks = [_epochs(build_imagenet_loaders(tmp_path, batch_size=2, workers=0, rank=r, world_size=2, **common)[0],
                     (0, 1)) for r in (0, 1)]
    for e in (0, 1):
        for (pv, py), (v0, y0), (v1, y1) in zip(plain[e], ranks[0][e], ranks[1][e]):
            assert torch.equal(torch.cat([v0, v1], dim=1), pv) and torch.equal(torch.cat([y0, y1]), py)
