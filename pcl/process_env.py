"""Where this process sits in a multi-process job (rank, world size, local rank), read from the environment that
torchrun, submitit or srun set. Standard library only: the drivers ask it before they decide to import torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


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


def detect_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Rank, world size and local rank from torchrun's variables, else a submitit task's (SLURM or the local
    executor), else a plain SLURM task's, else a single process.

    In a submitit SLURM task, `TorchDistributedEnvironment().export()` also sets MASTER_ADDR/PORT (the first node, a
    port derived from the job id) and RANK/WORLD_SIZE for the env:// rendezvous; under a plain srun
    MASTER_ADDR/MASTER_PORT must be set by the user.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])))
    executor = env.get("SUBMITIT_EXECUTOR")  # a submitit task: SLURM's, or the local executor's processes
    tasks = env.get("SLURM_NTASKS" if executor == "slurm" else "SUBMITIT_LOCAL_NTASKS", "1")
    if environ is None and executor in ("slurm", "local") and int(tasks) > 1:
        try:
            from submitit.helpers import TorchDistributedEnvironment  # noqa: PLC0415 - optional layer above

            te = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            return DistEnv(te.rank, te.world_size, te.local_rank)
        except ImportError:
            pass
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:  # a plain srun task
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0")))
    return DistEnv()
