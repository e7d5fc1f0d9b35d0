"""One training run from plain values: seed -> method -> device data -> engine -> deployed model on disk.

Its input is a run config of pcl.schema (the same dict the tracking layer records); it knows nothing of Sacred
or MongoDB. The Sacred experiments, the benchmarks and the tests call it.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from pcl import distributed, registry
from pcl.data import build_loaders
from pcl.checkpoint import save_atomic
from pcl.engine import MetricsCallback, Recipe, TrainingInterrupted, TrainResult
from pcl.methods import build_method
from pcl.recipes import run_classes
from pcl.fastpath import has_draws
from pcl.schema import SYNTHETIC_KEYS, ConfigError, normalize_run_config, resolve_fast_path, run_key
from pcl.seeding import seed_everything

def resolve_device(name: str) -> torch.device:
    """The torch device for the config key `device` (auto: CUDA when available, else the CPU).

    Raises ConfigError naming the key when CUDA is asked for on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device'={name!r} is invalid: no CUDA device is available on this machine; "
                          "allowed here: auto, cpu")
    return torch.device(name)


def check_world_size(gpus: int) -> distributed.DistEnv:
    """This process's place in a job of `gpus` data-parallel processes (torchrun's or SLURM's variables).

    Raises ConfigError naming the key when the job has another number of processes (e.g. gpus=4 started as one
    plain process).
    """
    env = distributed.detect_env()
    if env.world_size != gpus:
        started = Path(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else None
        script = (f"{started.parent.name}/{started.name}" if started and started.parent.name in
                  ("experiments", "ablations") else "experiments/SCRIPT.py")
        start = (f"start it as one process (python {script} ...)" if gpus == 1 else
                 f"start {gpus} processes (torchrun --nproc_per_node={gpus} {script} with ..., or "
                 "slurm/launch_all.py)")
        raise ConfigError(f"config key 'gpus'={gpus} is invalid here: this job has {env.world_size} process(es); "
                          f"{start}, or set gpus={env.world_size}")
    return env


@dataclass
class RunOutcome:
    result: TrainResult
    deployed_head: str
    deployed_path: str | None
    parameter_counts: dict[str, int]
    determinism: dict[str, Any]
    num_classes: int
    heads: list[str]


def package_version(name: str) -> str:
    """An installed package's version as its module gives it, build tag included (torchvision 0.29.1+cu130, where
    its metadata says 0.29.1), without importing it: importing torchvision costs ~2 s and a CIFAR run never uses it.
    From the module where it is imported, else its version.py, else the package metadata."""
    module = sys.modules.get(name)
    if getattr(module, "__version__", None) is not None:
        return str(module.__version__)
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.origin and spec.submodule_search_locations:  # a package: its own version.py
        try:
            text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
        except OSError:
            text = ""
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if found:
            return found.group(1)
    return importlib.metadata.version(name)


def environment_info(device: torch.device | None = None, processes: int = 1) -> dict[str, str]:
    """Host, versions (as strings), accelerator name, the number of data-parallel processes (rank 0's view) and,
    in a SLURM job, its id: enough to tell two runs' environments apart and to find the job's logs."""
    info = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": package_version("torchvision"),
        "numpy": str(np.__version__),
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "device": str(device) if device is not None else "",
        "gpu": "none",
        "processes": str(processes),
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if os.environ.get("SLURM_JOB_ID"):  # the job as squeue/sacct name it: 123, or 123_4 for an array task
        array = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        info["slurm_job_id"] = f"{array[0]}_{array[1]}" if all(array) else os.environ["SLURM_JOB_ID"]
    return info


def run(config: Mapping[str, Any], *, checkpoint_dir: str | Path | None = None, resume: bool = True,
        callbacks: Iterable[MetricsCallback] = (), progress: bool | None = False,
        should_stop: Callable[[], bool] | None = None,
        on_start: Callable[[dict[str, Any]], None] | None = None) -> RunOutcome:
    """Train one run config (pcl.schema keys; normalized here). Checkpoint and deployed model go to
    `checkpoint_dir` (checkpoint.pt, deployed.pt).

    `on_start` receives what is known before the first step (parameter counts, heads, determinism flags), so a
    tracker can record it even if the run later fails. With `gpus` > 1 this process is one of a data-parallel job
    (pcl.distributed): rank 0 announces the run to the others first, and an error on one process marks the job
    broken (pcl.distributed.broken) so that the caller ends it rather than start another run. Raises ConfigError
    when `gpus` is not the job's number of processes.
    """
    planned_key = config.get("run_key")  # what the caller records the run under (the grid's plan)
    cfg = normalize_run_config(config)
    recipe = Recipe.from_config(cfg)
    device = resolve_device(cfg["device"])
    env = distributed.DistEnv()
    if cfg["gpus"] > 1:  # data-parallel: this process is one of `gpus` (rank 0 announces the run to the others)
        env = check_world_size(cfg["gpus"])
        env, device = distributed.setup(env, device_type=device.type)
        if env.is_main:
            distributed.instruct({"config": cfg, "resume": resume,
                                  "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir)})
    try:
        return _train(cfg, recipe, env, device, checkpoint_dir, resume, callbacks, progress, should_stop, on_start,
                      planned_key or cfg["run_key"])
    except TrainingInterrupted:
        raise  # every process stopped at the same step (pcl.distributed.collective_stop)
    except BaseException as err:
        if not env.distributed:
            raise
        distributed.mark_broken(err)  # the other processes may wait for this one in a collective: the job must end
        if distributed.lost_peer(err):
            raise RuntimeError(f"another process of this data-parallel job ended during the run (rank {env.rank} "
                               f"saw: {str(err).splitlines()[0][:200]}); see that process's log for why. The last "
                               "checkpoint stays: the next start resumes from it") from err
        raise


def _train(cfg: dict[str, Any], recipe: Recipe, env: distributed.DistEnv, device: torch.device,
           checkpoint_dir: str | Path | None, resume: bool, callbacks: Iterable[MetricsCallback],
           progress: bool | None,
           should_stop: Callable[[], bool] | None,
           on_start: Callable[[dict[str, Any]], None] | None, planned_key: str) -> RunOutcome:
    determinism = seed_everything(cfg["seed"], cfg["deterministic"])
    synthetic = {k: cfg[k] for k in SYNTHETIC_KEYS if cfg[k] is not None}
    num_classes = run_classes(cfg)
    method = build_method(cfg["method"], cfg["backbone"], num_classes, dropout=cfg["dropout"],
                          **cfg["options"]).to(device)
    # the files the method has read (kd's teacher) are still those whose digests make the run_key it is recorded
    # under: one replaced since the plan would train another experiment under this one's key
    now = run_key(cfg)
    if now != planned_key:
        files = ", ".join(f"options.{name}" for name in registry.method(cfg["method"]).file_options)
        raise ConfigError(f"run {planned_key}: a file its method reads ({files or 'none declared'}) changed since its "
                          f"run_key was computed (it is now {now}); start the grid again")
    train_loader, test_loader, data_classes = build_loaders(
        cfg["dataset"], data_root=cfg["data_root"], download=cfg["download"], batch_size=cfg["batch_size"],
        num_views=method.num_views, device=device, seed=cfg["seed"], train_subset=cfg["train_subset"],
        workers=cfg["workers"], rank=env.rank, world_size=env.world_size, **synthetic)
    if data_classes != num_classes:
        raise ValueError(f"dataset {cfg['dataset']!r} under {cfg['data_root']!r} has {data_classes} classes, "
                         f"expected {num_classes}")
    counts = method.parameter_counts()
    heads: list[str] = []
    if env.is_main:
        with torch.no_grad():
            method.eval()
            probe = next(iter(test_loader))[0][0][:2]
            heads = list(method.eval_heads(probe))
    # the path the steps take (fast_path=auto: graph on one CUDA device with device-resident data), recorded with
    # the environment: it is not part of the run_key, both paths computing the same function
    fast_path = resolve_fast_path(cfg["fast_path"], cuda=device.type == "cuda", processes=env.world_size,
                                  device_resident=has_draws(train_loader))
    if on_start is not None and env.is_main:
        on_start({"parameter_counts": counts, "heads": heads, "deployed_head": method.deployed_head,
                  "determinism": determinism, "num_classes": num_classes, "num_views": method.num_views,
                  "environment": {**environment_info(device, env.world_size), "fast_path": fast_path},
                  "recipe": asdict(recipe)})
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    method = distributed.prepare_method(method, env, device, cfg["batch_norm"], cfg["channels_last"])
    result = distributed.train_distributed(
        method, train_loader, test_loader, recipe, env, fast_path=fast_path,
        channels_last=cfg["channels_last"], checkpoint_path=ckpt_dir / "checkpoint.pt" if ckpt_dir else None,
        resume=resume, callbacks=callbacks, progress=progress, should_stop=should_stop,
        eval_every=cfg["eval_every"])
    method = distributed.unwrap(method)
    deployed_path = None
    if ckpt_dir is not None and env.is_main:
        deployed_path = str(ckpt_dir / "deployed.pt")
        save_deployed(method, deployed_path)
    return RunOutcome(result=result, deployed_head=method.deployed_head, deployed_path=deployed_path,
                      parameter_counts=counts, determinism=determinism, num_classes=num_classes, heads=heads)


def save_deployed(method, path: str | Path) -> None:
    """The deployed model as a plain backbone state dict plus what is needed to rebuild it (two-stage KD's input)."""
    model = method.export_deployed()
    save_atomic({"backbone": method.backbone_name, "num_classes": method.num_classes, "method": method.name,
                 "head": method.deployed_head,
                 "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
