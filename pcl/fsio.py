"""Durable writes on a filesystem, shared by checkpoints, the file store and the analysis's outputs: fsync a folder
after a rename, replace a file without writing through a link in its place, and find the OS error behind a
wrapped exception. Standard library only (the records side imports it without torch).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


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


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary file beside `path` to write (same suffix), renamed over `path` when the block ends without
    an error (removed otherwise): an output folder others can write may hold a link in place of the file, and a
    write through it would change whatever it points at; a rename replaces the link itself."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make the output private: the mode open() would give
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_file(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) as the new file `path` (`replacing`: never through a link in its place)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
