"""Data-parallel jobs (config key `gpus` > 1): rank 0 runs the tracked entry point, the other ranks follow it.

Under torchrun or a multi-task SLURM job every process starts the same entry point (a Sacred script, a launcher
job). Only rank 0 validates, checks the stores, skips COMPLETED runs, claims run_keys and writes records; each run
it trains is announced by pcl.runner (pcl.distributed.instruct) and trained by every rank together. The other ranks
write nothing, print nothing but errors, and end with rank 0's exit code.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, TypeVar

from pcl.process_env import detect_env
from pcl.tracking.lifecycle import stop_on_signals, stop_requested

T = TypeVar("T")


def _train_announced(message: dict[str, Any]) -> None:
    """A follower's share of the run rank 0 announced: same config, same checkpoint folder (read, never written)."""
    from pcl.interrupts import TrainingInterrupted
    from pcl.runner import run

    try:
        run(message["config"], checkpoint_dir=message["checkpoint_dir"], resume=message["resume"],
            should_stop=stop_requested)
    except TrainingInterrupted:
        pass  # every rank stopped at the same step; rank 0 records the preemption


def lead_or_follow(main: Callable[[], T], exit_code: Callable[[T], int] = lambda result: 0) -> T | None:
    """`main()` in a single process, or on rank 0 of a multi-process job while the other ranks follow it.

    Returns main()'s value on rank 0 (or alone) and None on the other ranks. The followers end with rank 0's exit
    code: `exit_code(main())`, 1 when main raised, the code of a SystemExit. A follower raises SystemExit with it
    when it is not 0 (bad input: 2, a failed run: 1), so every process of the job ends alike. Signals (SIGTERM,
    SIGUSR2) only request a stop on the followers too: all ranks stop at the same step.
    """
    env = detect_env()
    if not env.distributed:
        return main()
    from pcl import distributed  # torch: only in a multi-process job

    try:
        if env.is_main:
            with distributed.leading(env) as leader:
                result = main()
                leader.code = exit_code(result)
                return result
        with stop_on_signals(quiet=True):
            code = distributed.follow(_train_announced, env)
        if code:
            raise SystemExit(code)
        return None
    finally:
        if distributed.broken() is not None:
            _end_broken_job(env.rank, distributed.broken())


def _end_broken_job(rank: int, why: str) -> None:
    """A run failed on this process while the others may wait for it in a collective: its record is written (rank 0),
    so end this process now with exit code 1; torchrun / srun --kill-on-bad-exit then end the others at once rather
    than let them wait for the collective's time-out."""
    print(f"[pcl.tracking] rank {rank}: a data-parallel run failed here ({why}); ending the job (exit 1) so that "
          "the other processes do not wait for this one; the next start resumes from the last checkpoint",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)
