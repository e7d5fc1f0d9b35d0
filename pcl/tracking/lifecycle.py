"""The run lifecycle: stop signals (SIGTERM/SIGUSR2 -> PREEMPTED), final statuses, the per-run_key lock and what a
checkpoint says about where a run resumes."""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
FINAL_STATUSES = ("COMPLETED", "FAILED", "PREEMPTED", "INTERRUPTED", "TIMED_OUT")


class _StopState:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.requested = False
        self.previous: dict[int, Any] = {}
        self.depth = 0


_STOP = _StopState()


def _on_signal(signum: int, frame: Any) -> None:
    if _STOP.signum is None:
        _STOP.signum = signum
    _STOP.requested = True
    # os.write: print() is not safe inside a signal handler that may interrupt another print
    os.write(2, f"\n[pcl.tracking] {signal.Signals(signum).name} received: stopping at the next step; the last "
                f"checkpoint stays and the run is recorded PREEMPTED\n".encode())


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[_StopState]:
    """While active, SIGTERM/SIGUSR2 only request a stop (polled by the runner between steps).

    Re-entrant; installs handlers only in the main thread. On exit the previous handlers come back, so
    `redeliver` can hand the signal on (to the default action, or to submitit's requeue handler).
    """
    install = threading.current_thread() is threading.main_thread() and _STOP.depth == 0
    if install:
        for sig in signals:
            _STOP.previous[sig] = signal.signal(sig, _on_signal)
    _STOP.depth += 1
    try:
        yield _STOP
    finally:
        _STOP.depth -= 1
        if install:
            for sig, handler in _STOP.previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            _STOP.previous.clear()


def stop_requested() -> bool:
    return _STOP.requested


def stop_signal() -> int | None:
    return _STOP.signum


def request_stop(signum: int | None = None) -> None:
    """Ask the current run to stop at its next step (what the signal handler does)."""
    if signum is not None and _STOP.signum is None:
        _STOP.signum = signum
    _STOP.requested = True


def clear_stop() -> None:
    _STOP.signum = None
    _STOP.requested = False


def redeliver(signum: int) -> None:
    """Send `signum` again to this process, now that the run is recorded: the default action ends the process
    with that signal, a previous Python handler (submitit's requeue) runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)



class RunLocked(RuntimeError):
    """Another process holds the lock of this run_key (it is running it now)."""


@contextlib.contextmanager
def _run_lock(ckpt_dir: Path) -> Iterator[None]:
    """An exclusive lock on checkpoint_root/run_key/.lock while the run trains: one process per run_key."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(ckpt_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"run {ckpt_dir.name} is being trained by another process (lock {ckpt_dir / '.lock'})")
        yield
    finally:
        os.close(fd)


def _peek_checkpoint(path: Path) -> tuple[int, list[dict[str, float]]]:
    """(completed epochs, history) of a checkpoint, memory-mapped; (0, []) when there is none or it is unreadable."""
    if not path.exists():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"]), list(state.get("history", []))
    except Exception:  # noqa: BLE001 - the runner reports a broken checkpoint with its own message
        return 0, []


