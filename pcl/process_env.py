"""Where this process sits in a multi-process job (rank, world size, local rank), read from the environment that
torchrun, submitit or srun set. Standard library only: the drivers ask it before they decide to import torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class EnvError(ValueError):
    """A launcher variable (RANK, WORLD_SIZE, SLURM_NTASKS, ...) that does not describe a process of a job."""


def _count(env: Any, name: str, default: str | None = None) -> int:
    text = env.get(name, default)
    if not (isinstance(text, str) and text.isascii() and text.isdigit()):
        raise EnvError(f"environment variable {name}={text!r} is invalid: must be a whole number >= 0 (torchrun, "
                       "submitit and srun set it; unset it to run a single process)")
    return int(text)


def _checked(rank: int, world_size: int, local_rank: int, names: str) -> DistEnv:
    if world_size < 1 or rank >= world_size or local_rank >= world_size:
        raise EnvError(f"environment variables {names} say rank {rank} (local {local_rank}) of {world_size} "
                       "processes: a rank must be below the number of processes")
    return DistEnv(rank, world_size, local_rank)


def detect_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Rank, world size and local rank from torchrun's variables, else a submitit task's (SLURM or the local
    executor), else a plain SLURM task's, else a single process.

    In a submitit SLURM task, `TorchDistributedEnvironment().export()` also sets MASTER_ADDR/PORT (the first node, a
    port derived from the job id) and RANK/WORLD_SIZE for the env:// rendezvous; under a plain srun
    MASTER_ADDR/MASTER_PORT must be set by the user.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return _checked(_count(env, "RANK"), _count(env, "WORLD_SIZE"), _count(env, "LOCAL_RANK", env["RANK"]),
                        "RANK, WORLD_SIZE, LOCAL_RANK")
    executor = env.get("SUBMITIT_EXECUTOR")  # a submitit task: SLURM's, or the local executor's processes
    tasks = _count(env, "SLURM_NTASKS" if executor == "slurm" else "SUBMITIT_LOCAL_NTASKS", "1")
    if environ is None and executor in ("slurm", "local") and tasks > 1:
        try:
            from submitit.helpers import TorchDistributedEnvironment  # noqa: PLC0415 - optional layer above

            te = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            return DistEnv(te.rank, te.world_size, te.local_rank)
        except ImportError:
            pass
    if "SLURM_PROCID" in env and _count(env, "SLURM_NTASKS", "1") > 1:  # a plain srun task
        return _checked(_count(env, "SLURM_PROCID"), _count(env, "SLURM_NTASKS"), _count(env, "SLURM_LOCALID", "0"),
                        "SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID")
    return DistEnv()
