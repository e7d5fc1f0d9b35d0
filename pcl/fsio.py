"""Durable writes and guarded reads on a filesystem, shared by checkpoints, the file store and the analysis's
outputs: fsync a folder after a rename, replace a file without writing through a link in its place, read a file
that is not ours only when it is a regular file of bounded size (never through a link, never a FIFO's wait), ask
the kernel to read ahead the files a command is about to read, say why a folder cannot be written in (before any
work, not after it), and find the OS error behind a wrapped exception.
Standard library only (the records side imports it without torch).
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator


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


class UnreadableFile(ValueError):
    """A file that is not read: a link, not a regular file (a FIFO, a device, a folder), too big, or unreadable."""


def read_regular(path: str | os.PathLike, limit: int) -> bytes | None:
    """The bytes of the regular file `path` (its last part not a link), None when it does not exist;
    UnreadableFile for a link, a FIFO/device/folder, a file bigger than `limit` bytes or one that cannot be read.
    Opened without blocking: a FIFO is refused, not waited on."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnreadableFile(f"{path} is a symbolic link") from None
        raise UnreadableFile(f"{path}: {err.strerror or err}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # a folder: os.fdopen would raise IsADirectoryError naming the fd number
        os.close(fd)
        raise UnreadableFile(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise UnreadableFile(f"{path} holds {info.st_size} bytes, more than {limit}")
        try:  # its size and one byte more (a file that grew is caught), not a buffer of `limit` bytes per file
            data = f.read(min(info.st_size, limit) + 1)
            if len(data) > info.st_size:
                data += f.read(limit + 1 - len(data))
        except OSError as err:
            raise UnreadableFile(f"{path}: {err.strerror or err}") from None
    if len(data) > limit:
        raise UnreadableFile(f"{path} holds more than {limit} bytes")
    return data


def read_ahead(paths: Iterable[str | os.PathLike], limit: int | None = None) -> threading.Thread | None:
    """Ask the kernel to start reading these files into its page cache (posix_fadvise WILLNEED: a small file
    whole, a large one its first part), from a thread, and return at once. Why: a store's files read one after
    another wait for the disk one at a time (a cold 2-core test machine, at one moment: 1.5 GB of metrics files in
    23 s read in turn, 2 s with their reads in flight together; 2.3 s and 1.4 s at another).

    Best effort and read-only: a path that is not a regular file of at most `limit` bytes (a link: O_NOFOLLOW; a
    FIFO: opened without blocking, never read) or cannot be opened is passed over, as is a system without
    posix_fadvise; what it reads ahead is only cache, the files are read and checked later as before
    (read_regular). The thread (None: nothing to do)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return None
    todo = list(paths)

    def run() -> None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        for path in todo:
            try:
                fd = os.open(path, flags)
            except (OSError, ValueError):  # absent, a link, unreadable; a NUL in the name
                continue
            try:
                info = os.fstat(fd)
                if stat.S_ISREG(info.st_mode) and (limit is None or info.st_size <= limit):
                    advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    if not todo:
        return None
    thread = threading.Thread(target=run, name="read-ahead", daemon=True)
    thread.start()
    return thread


def folder_problem(path: str | os.PathLike, write: bool = True) -> str | None:
    """Why `path` cannot be made, or used, as a folder this process writes in (`write=False`: reads in, where a
    folder not made yet holds nothing); None when it can. Tried, not asked: a temporary file in the nearest
    existing folder, removed at once (permissions say yes to root everywhere, /proc included). Nothing is
    created."""
    if not str(path).strip():
        return "an empty path names no folder (it would be the current one)"
    probe = Path(path).absolute()  # as the caller will use it: a quoted '~' is a folder named ~, for it and here
    while not (probe.exists() or probe.is_symlink()) and probe != probe.parent:
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        return f"{str(probe)!r} is a link whose target does not exist"
    if not probe.is_dir():
        return f"{str(probe)!r} is a file, not a folder"
    if not write:
        return None
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        return f"{str(probe)!r} cannot be written in ({err.strerror or err})"
    return None


def input_file_problem(path: str | os.PathLike) -> str | None:
    """Why a file a config names for a run to read (a method's `kind="path"` option) cannot be read, in words
    for a one-line error, or None when it is a regular file (`~` expanded, links followed: the user's own path)."""
    try:
        found = Path(path).expanduser()
        if found.is_file():
            return None
        if found.is_symlink() and not found.exists():
            return "a link whose target does not exist"
        if not found.exists():
            return "the file does not exist"
        return "not a regular file (a folder, a FIFO or a device)"
    except (OSError, ValueError) as err:  # a name too long, a NUL character, a loop of links
        return f"the path cannot be used ({getattr(err, 'strerror', None) or err})"


_DIGESTS: dict[tuple, str] = {}


def input_file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a config's input file (its identity in a run_key: the same file anywhere is the same
    experiment, a file changed in place another one); computed once per file version (device, inode, size,
    modification and change times: a copy that restores the modification time still changes the change time),
    since a plan checks the same file for every cell."""
    import hashlib

    found = Path(path).expanduser()
    with open(found, "rb") as f:
        info = os.fstat(f.fileno())
        version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if version not in _DIGESTS:
            digest = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            _DIGESTS[version] = digest.hexdigest()
    return _DIGESTS[version]
