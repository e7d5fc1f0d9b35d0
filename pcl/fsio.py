"""Durable writes on a filesystem, shared by checkpoints and the file store: fsync a folder after a rename, and find
the OS error behind a wrapped exception. Standard library only (the records side imports it without torch).
"""
from __future__ import annotations

import os
from pathlib import Path


def os_error_in(err: BaseException) -> OSError | None:
    """The first OSError with an errno in `err`'s chain of causes (torch and Sacred wrap it), else None."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some filesystems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
