"""The run lifecycle: stop signals (SIGTERM/SIGUSR2 -> a preempted record: INTERRUPTED + info.preempted), final statuses, the per-run_key lock (a file
lock, plus an atomic MongoDB claim when records go there) and what a checkpoint says about where a run resumes."""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from pcl.tracking.errors import StoreUnavailable, UserError
from pcl.secrets import redact

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
FINAL_STATUSES = ("COMPLETED", "FAILED", "PREEMPTED", "INTERRUPTED", "TIMED_OUT")


class _StopState:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.requested = False
        self.previous: dict[int, Any] = {}
        self.depth = 0
        self.quiet = False


_STOP = _StopState()


def _on_signal(signum: int, frame: Any) -> None:
    if _STOP.signum is None:
        _STOP.signum = signum
    _STOP.requested = True
    if _STOP.quiet:
        return
    # os.write: print() is not safe inside a signal handler that may interrupt another print
    os.write(2, f"\n[pcl.tracking] {signal.Signals(signum).name} received: stopping at the next step; the last "
                f"checkpoint stays and the run is recorded INTERRUPTED with info.preempted and resumes at its next start\n".encode())


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS, quiet: bool = False) -> Iterator[_StopState]:
    """While active, SIGTERM/SIGUSR2 only request a stop (polled by the runner between steps); `quiet`: without
    the message (the followers of a data-parallel job: rank 0 says it).

    Re-entrant; installs handlers only in the main thread. On exit the previous handlers come back, so
    `redeliver` can hand the signal on (to the default action, or to submitit's requeue handler).
    """
    install = threading.current_thread() is threading.main_thread() and _STOP.depth == 0
    if install:
        _STOP.quiet = quiet
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
    """Another process holds the lock or the MongoDB claim of this run_key (it is running it now)."""


class LockUnsupported(UserError):
    """checkpoint_root is on a filesystem without file locks and no MongoDB claims the run_keys instead."""


_NO_LOCK_ERRNOS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def _lock_unsupported_message(path: Path, err: OSError) -> str:
    return (f"checkpoint_root {str(path.parent.parent)!r} is on a filesystem without file locks (flock on {path}: "
            f"{os.strerror(err.errno).lower()}), so two processes could train the same run at once. Put "
            "checkpoint_root on a filesystem with locks (a local disk, or NFS with its lock service), or record to "
            "MongoDB (mongo_url or $PCL_MONGO_URL), which then claims every run_key itself.")


@contextlib.contextmanager
def _run_lock(ckpt_dir: Path, required: bool = True) -> Iterator[bool]:
    """An exclusive lock on checkpoint_root/run_key/.lock while the run trains: one process per run_key.

    Yields True when locked. On a filesystem without locks (flock: ENOLCK, EOPNOTSUPP...) it raises
    LockUnsupported with a message saying what to do, or, when not `required` (MongoDB claims the run_key),
    warns once and yields False. RunLocked when another process holds the lock.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / ".lock"
    try:  # never through a link left in its place (it would create or lock a file elsewhere)
        fd = os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise UserError(f"{path} is a symbolic link, not the run's lock file: remove it and start again") from None
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise RunLocked(f"run {ckpt_dir.name} is being trained by another process (lock {path})") from None
        except OSError as err:
            if err.errno not in _NO_LOCK_ERRNOS:
                raise
            if required:
                raise LockUnsupported(_lock_unsupported_message(path, err)) from None
            if not _WARNED_NO_LOCK:
                _WARNED_NO_LOCK.append(True)
                print(f"[pcl.tracking] note: {path.parent.parent} has no file locks; the MongoDB claim of each "
                      "run_key keeps two processes from training it at once", file=sys.stderr)
        yield locked
    finally:
        os.close(fd)


_WARNED_NO_LOCK: list[bool] = []


def check_locking(checkpoint_root: str | os.PathLike) -> None:
    """LockUnsupported (before any run) when checkpoint_root's filesystem has no file locks. Probes a temp file
    in checkpoint_root, or in its nearest existing parent when it does not exist yet; leaves nothing behind."""
    folder = Path(checkpoint_root).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".pcl-lock-probe", dir=folder)
    except OSError:
        return  # not writable: the run's own lock reports it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in _NO_LOCK_ERRNOS:
            raise LockUnsupported(_lock_unsupported_message(Path(checkpoint_root) / "RUN_KEY" / ".lock", err)
                                  ) from None
    finally:
        os.close(fd)
        os.unlink(name)


# ---- the MongoDB claim of a run_key: where runs of different machines meet --------------------------------------
CLAIMS_COLLECTION = "claims"
CLAIM_BEAT_S = 30.0  # the holder refreshes its heartbeat this often
CLAIM_STALE_S = 300.0  # a claim whose heartbeat is older than this belongs to a dead holder and can be taken over


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_is_dead(claim: dict[str, Any], now: datetime.datetime, stale_s: float) -> str | None:
    """Why the holder of `claim` is gone (its PID is dead on this host, or its heartbeat is stale), or None."""
    if claim.get("host") == socket.gethostname() and isinstance(claim.get("pid"), int) \
            and not _pid_alive(claim["pid"]):
        return f"its process {claim['pid']} on this host is dead"
    beat = claim.get("heartbeat")
    if isinstance(beat, datetime.datetime):
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=datetime.UTC)
        age = (now - beat).total_seconds()
        if age > stale_s:
            return f"its heartbeat is {age:.0f} s old (> {stale_s:g} s)"
    return None


@contextlib.contextmanager
def mongo_claim(db: Any, run_key: str, attempt_id: str, *, beat_s: float = CLAIM_BEAT_S,
                stale_s: float = CLAIM_STALE_S, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Claim `run_key` in MongoDB's `claims` collection (a document with _id = run_key: holder host, pid,
    attempt_id, heartbeat) for the duration of the block; atomic, so of several processes that share the
    database (whatever their checkpoint_root) exactly one trains a run_key.

    A thread refreshes the heartbeat every `beat_s` seconds. A claim whose holder died (dead PID on this host,
    or heartbeat older than `stale_s`) is taken over atomically (compare-and-set on the old holder's attempt_id).
    Raises RunLocked when a live holder has it. Errors of the heartbeat or release (the database went away
    mid-run) are ignored: the claim then goes stale and can be taken over.
    """
    import pymongo.errors

    claims = db[CLAIMS_COLLECTION]
    now = datetime.datetime.now(datetime.UTC)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "attempt_id": attempt_id, "claimed_at": now,
            "heartbeat": now}
    try:
        try:
            claims.insert_one({"_id": run_key, **mine})
        except pymongo.errors.DuplicateKeyError:
            held = claims.find_one({"_id": run_key}) or {}
            why = _claim_is_dead(held, now, stale_s)
            if why is None:
                raise RunLocked(f"run {run_key} is being trained by another process (MongoDB claim of host "
                                f"{held.get('host')!r}, pid {held.get('pid')}, heartbeat {held.get('heartbeat')})"
                                ) from None
            taken = claims.find_one_and_update({"_id": run_key, "attempt_id": held.get("attempt_id")},
                                               {"$set": mine})
            if taken is None:
                raise RunLocked(f"run {run_key} was claimed by another process just now") from None
            if log is not None:
                log(f"run {run_key}: taking over the claim of host {held.get('host')!r}, pid {held.get('pid')}: "
                    f"{why}")
    except pymongo.errors.PyMongoError as err:
        raise StoreUnavailable(f"MongoDB failed while claiming run {run_key} ({type(err).__name__}: "
                               f"{redact(err)[:300]}); the run was not started") from None
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(beat_s):
            with contextlib.suppress(Exception):
                claims.update_one({"_id": run_key, "attempt_id": attempt_id},
                                  {"$set": {"heartbeat": datetime.datetime.now(datetime.UTC)}})

    thread = threading.Thread(target=beat, name=f"pcl-claim-{run_key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            claims.delete_one({"_id": run_key, "attempt_id": attempt_id})


# ---- checkpoints: what the last one says, and what to do with a damaged one ------------------------------------
def inspect_checkpoint(path: Path, identity: Mapping[str, Any] | None = None, epochs: int | None = None
                       ) -> tuple[int, list[dict[str, float]], str | None]:
    """(completed epochs, history, problem) of the checkpoint at `path`: (0, [], None) when there is none;
    (0, [], "what is wrong") when it is empty, truncated, not a checkpoint of this suite, (with `identity`) one of
    another method/backbone/number of classes, or (with `epochs`) one of more epochs than the run's."""
    from pcl.checkpoint import CheckpointError, check_checkpoint, load_checkpoint

    if not path.exists():
        return 0, [], None
    try:
        state = load_checkpoint(path, mmap=True)
        check_checkpoint(state, path, identity, epochs)
    except CheckpointError as err:
        return 0, [], err.problem
    return state["epoch"], list(state["history"]), None


def move_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to `NAME.damaged-YYYYmmdd-HHMMSS` next to it (kept for inspection)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.damaged-{stamp}.{n}")
        n += 1
    os.replace(path, target)
    return target
