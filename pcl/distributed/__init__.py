"""Multi-GPU training (ImageNet) with torch.distributed: DDP around any method, sharded loaders, rank-0 writes.

Started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment) or by a submitit
multi-task SLURM job (one task per GPU; `submitit.helpers.TorchDistributedEnvironment` when submitit is installed,
else the SLURM_* variables). What it guarantees:
* every rank starts from rank 0's weights (DDP broadcasts them), gradients are averaged over the ranks, so the
  live networks stay identical; the temporal mean (a deterministic function of the live weights) therefore stays
  identical too, and the buffers (BN statistics of live and mean networks, EMA step counter) are rank 0's at
  every step (DDP's buffer broadcast) and after training;
* BatchNorm as the run config says: "local" (per-rank batch statistics, the usual ImageNet DDP recipe) or "sync"
  (SyncBatchNorm: statistics over the global batch, CUDA only);
* data: every rank draws the same global shuffled order and takes its slice of each global batch, so N ranks with
  per-rank batch b see exactly what one process with batch N*b would (pcl.data.build_loaders with rank and
  world_size: ShardedDeviceLoader, or the ImageNet sampler's slice);
* only rank 0 evaluates, calls the record callbacks and writes checkpoints; every rank resumes from rank 0's
  checkpoint; a stop request (SIGTERM on any rank) is agreed on collectively so all ranks stop at the same step;
* a job of several runs (a Sacred script under torchrun, a multi-task SLURM job of slurm/launch_all.py): rank 0
  runs the tracked entry point (checks, skips, claims, records) inside `leading()` and announces each run it
  trains (`instruct`, called by pcl.runner); the other ranks `follow` and train exactly those runs.
The run config keys are `gpus` (the number of processes) and `batch_norm`. The CUDA-graph fast path is
single-process only for now.

This package is the library (pcl.runner and pcl.tracking call it; it never imports them); its command line,
`python -m pcl.distributed` (torchrun's entry for one untracked run), is pcl.distributed.cli.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import os
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pcl.process_env import DistEnv, detect_env
from pcl.data.loaders import ShardedDeviceLoader
from pcl.engine import Loader, MetricsCallback, Recipe, TrainResult, train
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.schema import BATCH_NORMS, ConfigError


def setup(env: DistEnv | None = None, backend: str | None = None, device_type: str | None = None
          ) -> tuple[DistEnv, torch.device]:
    """Join the process group (env:// rendezvous) and pick this rank's device; a single process joins nothing.

    backend: by default gloo for CPU tensors and, where CUDA is available, nccl for CUDA tensors. Idempotent: a
    process already in a group keeps it. Returns (env, device). Raises RuntimeError when several processes have
    no rendezvous address (MASTER_ADDR/MASTER_PORT).
    """
    env = detect_env() if env is None else env
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        # torchrun: all GPUs visible, one per local rank; SLURM --gpus-per-task: one visible GPU per task.
        device = torch.device("cuda", env.local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if env.distributed and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"distributed run (world_size={env.world_size}) needs {', '.join(missing)} in the "
                               "environment (torchrun and submitit set them)")
        if backend is None:  # CPU tensors (the channel, the stop flag, device=cpu runs) always have gloo
            backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, timeout=collective_timeout())
    return env, device


#: how long a training collective waits for a process that does not come (frozen, swapped out, stuck on a file
#: system) before it fails the run; rank 0's evaluation and checkpoint between epochs must fit in it
COLLECTIVE_TIMEOUT_ENV = "PCL_COLLECTIVE_TIMEOUT_S"
DEFAULT_COLLECTIVE_TIMEOUT_S = 600


def collective_timeout() -> dt.timedelta:
    """The training process group's time-out: $PCL_COLLECTIVE_TIMEOUT_S seconds, default 600 (torch's gloo
    default of 30 minutes would hold a whole job's GPUs that long for one frozen process). Not part of a run's
    identity: it changes when a run fails, never a number. Raises ConfigError for a value that is not a positive
    number."""
    raw = os.environ.get(COLLECTIVE_TIMEOUT_ENV, str(DEFAULT_COLLECTIVE_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"environment variable {COLLECTIVE_TIMEOUT_ENV}={raw!r} is invalid: must be a number of "
                          "seconds > 0")
    return dt.timedelta(seconds=seconds)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ---- the method under DDP ----------------------------------------------------------------------------------------
class _StepForward(nn.Module):
    """DDP only reduces gradients of what ran through its forward: the method's training step is that forward."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, views: list[Tensor], targets: Tensor) -> tuple[LossDict, LogitDict]:
        # the class's step, not the instance's (which is this DDP wrapper, see attach_ddp)
        return type(self.method).training_step(self.method, views, targets)


def attach_ddp(method: Method, device: torch.device, find_unused_parameters: bool = False) -> Method:
    """Route `method.training_step` through DistributedDataParallel; everything else stays the method's own.

    The method object is kept (its state_dict, optimiser groups, heads, hooks are untouched, so checkpoints are
    interchangeable with single-process runs); only the instance's `training_step` becomes the DDP call, and
    `method.ddp` holds the wrapper (neither is a registered submodule). `detach_ddp` undoes it.
    """
    # Buffers follow rank 0 at every forward: `forward_sync_buffers` in new torch, `broadcast_buffers` before.
    sync = ("forward_sync_buffers" if "forward_sync_buffers" in
            inspect.signature(DistributedDataParallel.__init__).parameters else "broadcast_buffers")
    ddp = DistributedDataParallel(_StepForward(method), device_ids=[device] if device.type == "cuda" else None,
                                  find_unused_parameters=find_unused_parameters, **{sync: True})
    object.__setattr__(method, "ddp", ddp)
    object.__setattr__(method, "training_step", ddp)
    return method


def detach_ddp(method: Method) -> Method:
    """The plain method again (no DDP step); a no-op for a method without one."""
    for name in ("training_step", "ddp"):
        method.__dict__.pop(name, None)
    return method


def prepare_method(method: Method, env: DistEnv, device: torch.device, batch_norm: str = "local",
                   channels_last: bool = False, find_unused_parameters: bool = False) -> Method:
    """Move `method` to `device`, convert its BatchNorms if asked, wrap it in DDP when there are several ranks."""
    if batch_norm not in BATCH_NORMS:
        raise ValueError(f"batch_norm={batch_norm!r} is invalid; allowed: {', '.join(BATCH_NORMS)}")
    if batch_norm == "sync" and env.distributed:
        if device.type != "cuda":
            raise ValueError("batch_norm='sync' needs CUDA devices (SyncBatchNorm has no CPU kernel); "
                             "use batch_norm='local' on the CPU")
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method = method.to(device)
    if channels_last:  # before DDP builds its gradient buckets
        method = method.to(memory_format=torch.channels_last)
    if not env.distributed:
        return method
    return attach_ddp(method, device, find_unused_parameters)


@torch.no_grad()
def broadcast_state(method: Method, src: int = 0) -> None:
    """Overwrite every parameter and buffer (incl. the temporal mean's) with rank `src`'s."""
    if not dist.is_initialized():
        return
    for t in method.state_dict().values():
        dist.broadcast(t, src)


# ---- training ----------------------------------------------------------------------------------------------------
def collective_stop(should_stop: Callable[[], bool] | None, every: int = 20) -> Callable[[], bool] | None:
    """A should_stop that all ranks answer alike: every `every`-th call the local flags are max-reduced.

    The engine polls it once per step on every rank, so the reductions line up. A stop is therefore seen up to
    `every` steps after the signal (one small CPU reduction per `every` steps).
    """
    if not dist.is_initialized():
        return should_stop
    local = should_stop or (lambda: False)  # every rank must take part in the reductions, asked or not
    group = dist.new_group(backend="gloo")  # a CPU flag, whatever the training backend
    calls = [0]

    def agreed() -> bool:
        calls[0] += 1
        if calls[0] % every:
            return False
        flag = torch.tensor([1 if local() else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return bool(flag.item())

    return agreed


def train_distributed(method: Method, train_loader: Loader, test_loader: Loader | None, recipe: Recipe,
                      env: DistEnv, *, checkpoint_path: str | os.PathLike | None = None, resume: bool = True,
                      callbacks: Iterable[MetricsCallback] = (), progress: bool | None = False,
                      should_stop: Callable[[], bool] | None = None, stop_check_every: int = 20,
                      **train_kwargs: Any) -> TrainResult:
    """pcl.engine.train on every rank (method from prepare_method, loader from build_loaders(..., rank=, world_size=)): rank 0 evaluates,
    records (callbacks) and writes checkpoints; the others resume from rank 0's checkpoint. After training every
    rank holds rank 0's state (parameters, temporal mean, BN buffers).
    """
    if env.distributed and train_kwargs.get("fast_path") == "graph":  # auto is eager with several ranks
        raise ValueError("fast_path='graph' is single-process only; use fast_path='auto' or 'eager' with several "
                         "ranks")
    main = env.is_main
    if not main:
        train_kwargs["epoch_log"] = None
    result = train(method, train_loader, test_loader if main else None, recipe,
                   checkpoint_path=checkpoint_path, resume=resume, callbacks=callbacks if main else (),
                   progress=progress if main else False, should_stop=collective_stop(should_stop, stop_check_every),
                   write_checkpoints=main, processes=env.world_size, **train_kwargs)
    if env.distributed:
        broadcast_state(method)
        dist.barrier()  # rank 0's last checkpoint is on disk before anyone moves on
    return result


# ---- a job of several runs: rank 0 decides, the other ranks follow ------------------------------------------------
_BROKEN: list[str] = []  # why a run failed on this process while the others may wait for it in a collective


def mark_broken(err: BaseException) -> None:
    """Note that a data-parallel run failed on this process: the others may be blocked in a collective it will
    never join, so the job cannot go on (pcl.tracking.lead_or_follow ends it; torchrun / srun end the others)."""
    if not _BROKEN:
        _BROKEN.append(f"{type(err).__name__}: {err}".splitlines()[0][:300])


def lost_peer(err: BaseException) -> bool:
    """Whether `err` is a collective failing because another process of the job is gone (killed, crashed):
    gloo's closed or reset connections, NCCL's DistBackendError."""
    text = str(err)
    return (isinstance(err, getattr(dist, "DistBackendError", ())) or
            any(s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")))


def broken() -> str | None:
    """Why this process's data-parallel job cannot go on (see mark_broken), or None."""
    return _BROKEN[0] if _BROKEN else None


#: rank 0 may spend long between two runs (checks, records, skipped runs, a teacher it waits for): the followers
#: wait on this channel that long before giving up
CHANNEL_TIMEOUT = dt.timedelta(days=7)
_CHANNEL: list[Any] = []  # [the gloo group of leading()/follow()], empty outside them


def _open_channel() -> Any:
    group = dist.new_group(backend="gloo", timeout=CHANNEL_TIMEOUT)
    _CHANNEL[:] = [group]
    return group


def instruct(message: dict[str, Any]) -> None:
    """Rank 0 inside `leading()`: hand every follower `message` (picklable): a run to train, or {"end": code}.

    A no-op elsewhere (a single process, a rank > 0, or ranks that all call the runner themselves).
    """
    if _CHANNEL and dist.is_initialized() and dist.get_rank() == 0:
        dist.broadcast_object_list([message], src=0, group=_CHANNEL[0])


@dataclass
class Leader:
    """What `leading()` yields: this job's environment and the exit code the followers end with (set it)."""

    env: DistEnv
    code: int = 0


@contextlib.contextmanager
def leading(env: DistEnv | None = None) -> Iterator[Leader]:
    """Rank 0 of a job whose other ranks `follow`: joins the process group and opens the instruction channel.

    Inside, whoever trains a run calls `instruct` first (pcl.runner does); on leaving, the followers are told the
    job ended with `Leader.code` (1 after an exception, the code of a SystemExit) and the group is left.
    """
    env, _ = setup(env, device_type="cpu")
    _open_channel()
    leader = Leader(env)
    try:
        yield leader
    except SystemExit as err:
        leader.code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        raise
    except BaseException:
        leader.code = 1
        raise
    finally:
        if broken() is None:  # else the followers may be blocked elsewhere: the caller ends the process
            try:
                instruct({"end": leader.code})
            finally:
                _CHANNEL.clear()
                cleanup()


def follow(train_one: Callable[[dict[str, Any]], Any], env: DistEnv | None = None) -> int:
    """A rank > 0: join rank 0's group and call `train_one(message)` for every run it announces (`instruct`), until
    rank 0 says the job ended. Returns rank 0's exit code. An error in `train_one` propagates (the launcher then
    ends the whole job: torchrun, srun --kill-on-bad-exit)."""
    env, _ = setup(env, device_type="cpu")
    group = _open_channel()
    try:
        while True:
            box: list[Any] = [None]
            dist.broadcast_object_list(box, src=0, group=group)
            message = box[0]
            if "end" in message:
                return int(message["end"])
            train_one(message)
    finally:
        _CHANNEL.clear()
        cleanup()


def unwrap(method: Method) -> Method:
    """The method without its DDP step (for export or a single-process continuation)."""
    return detach_ddp(method)


__all__ = ["BATCH_NORMS", "DistEnv", "ShardedDeviceLoader", "attach_ddp", "detach_ddp", "broadcast_state", "cleanup",
           "collective_stop", "broken", "detect_env", "lost_peer", "follow", "instruct", "Leader", "leading", "mark_broken", "prepare_method", "setup",
           "train_distributed", "unwrap"]
