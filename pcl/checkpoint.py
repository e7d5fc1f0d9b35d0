"""Checkpoint I/O, a leaf of the suite: atomic writes (temp file + fsync + rename), safe loads (weights_only), the
format check of a training checkpoint and the errors that name the file and what is wrong with it.

A checkpoint holds only tensors and plain containers, so it loads with `torch.load(weights_only=True)`; what it holds
(weights, optimiser, RNG state, history) is the training loop's business (pcl.engine). Imports only torch and the
standard library.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from pcl.fsio import fsync_dir, os_error_in

#: the version of a training checkpoint's layout, and the keys every training checkpoint holds
CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ("format", "identity", "epoch", "method", "optimizer", "rng", "history")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, truncated, not a checkpoint of this suite, or one of another
    method/backbone. `path` is the file, `problem` says what is wrong (the message names both)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"checkpoint {path} is unusable: {problem}")
        self.path = str(path)
        self.problem = problem


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. no space left on device); the partial temp file is removed and the
    previous checkpoint is unchanged. `errno` is the OS error's (ENOSPC...) when known, `filename` the file."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.message, self.errno, self.filename = message, errno, filename

    def __str__(self) -> str:
        return self.message


def _write_cause(err: BaseException, folder: Path) -> str:
    """The OS error behind a failed write, in words (torch wraps it: "unexpected pos ..."), else the free space."""
    os_error = os_error_in(err)
    if os_error is not None:
        return os.strerror(os_error.errno).lower()
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return f"{type(err).__name__}: {err}"
    return f"{type(err).__name__}: {err} ({free} bytes free on that filesystem)"


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename: a crash never leaves a half-written file.

    A failed write (no space left on device, quota, I/O error) removes the temp file, leaves the previous file at
    `path` as it was and raises CheckpointWriteError naming the file and the cause.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # a Python file: torch's own writer hides the OS error behind "unexpected pos"
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, (OSError, RuntimeError)):
            cause = _write_cause(err, path.parent)
            kept = "the previous one is unchanged" if path.exists() else "there was none before"
            raise CheckpointWriteError(f"could not write checkpoint {path}: {cause}; the partial file was removed "
                                       f"and {kept}", getattr(os_error_in(err), "errno", None), str(path)) from err
        raise
    fsync_dir(path.parent)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """Load a torch file (a checkpoint, a deployed model) safely (weights_only: no arbitrary code from pickles).

    Raises CheckpointError naming the file and what is wrong: empty (0 bytes), truncated or not a torch file, or
    objects refused by weights_only. `check_checkpoint` then tells whether it is a training checkpoint.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes; a write that never finished)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # torch's message is a page of advice in terminal colours; one line of it names what was refused
        lines = [line.strip() for line in re.sub(r"\x1b?\[[0-9;]*m", "", str(err)).splitlines() if line.strip()]
        refused = next((line for line in lines if "Unsupported" in line or "WeightsUnpickler" in line),
                       lines[0] if lines else "no detail")
        raise CheckpointError(path, f"it holds objects other than tensors and plain containers, refused by "
                                    f"weights_only ({refused[:200]})") from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... for damaged archives
        raise CheckpointError(path, f"truncated or not a torch file ({size} bytes; {type(err).__name__}: "
                                    f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})") from None
    return state


def check_checkpoint(state: Any, path: str | os.PathLike, identity: Mapping[str, Any] | None = None,
                     epochs: int | None = None) -> None:
    """CheckpointError unless `state` is a checkpoint of this suite (format, keys, an epoch count with its history,
    state mappings), when `identity` is given one of that method/backbone/number of classes, and when `epochs` is
    given one of at most that many epochs."""
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        found = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(path, f"not a checkpoint of this suite (expected keys {', '.join(CHECKPOINT_KEYS)}; "
                                    f"found {found})")
    if type(state["format"]) is not int or state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"checkpoint format {shown(state['format'])}, this code reads "
                                    f"{CHECKPOINT_FORMAT}")
    if not isinstance(state["identity"], dict):
        raise CheckpointError(path, f"its identity is {shown(state['identity'])}, not a mapping")
    if identity is not None and state["identity"] != dict(identity):
        raise CheckpointError(path, f"written by {shown(state['identity'])}, not {dict(identity)}")
    # what a resume trusts: a count of epochs within the run's, one history entry per epoch, state dicts
    epoch, history = state["epoch"], state["history"]
    if type(epoch) is not int or not 0 <= epoch <= (epochs if epochs is not None else epoch):
        raise CheckpointError(path, f"epoch {shown(epoch)} is not a count of completed epochs"
                                    + (f" from 0 to the run's {epochs}" if epochs is not None else ""))
    if not isinstance(history, list) or len(history) != epoch or not all(
            isinstance(entry, dict) and entry.get("epoch") == i + 1
            and all(isinstance(k, str) and type(v) in (int, float) for k, v in entry.items())
            for i, entry in enumerate(history)):
        raise CheckpointError(path, f"its history is not {epoch} epochs' metrics (a mapping of names to numbers "
                                    "per epoch, in order)")
    for key in ("method", "optimizer", "rng"):
        if not isinstance(state[key], dict):
            raise CheckpointError(path, f"its {key} state is {shown(state[key])}, not a mapping")


def shown(value: Any) -> str:
    """A value read from a torch file (a checkpoint, a deployed model) in a message: short, and a tensor by its
    type and shape, not its numbers."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def checkpoint_identity(method: Any) -> dict[str, Any]:
    """Which method, backbone and number of classes a checkpoint of `method` (a pcl.methods.base.Method) is of."""
    return {"method": method.name, "backbone": method.backbone_name, "num_classes": method.num_classes}
