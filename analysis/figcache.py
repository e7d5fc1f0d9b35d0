"""Figures whose inputs did not change are not drawn again: a manifest in the figures folder remembers, per table,
the fingerprint of everything its figures were drawn from and the files they became.

Why: drawing is the cost of make_plots and report (about a second of CPU per figure, ~66 figures for the CIFAR
tables), and a researcher calls them again and again while most tables have not changed. A table's fingerprint
covers its code (every source file of the `analysis` package and pcl/results.py, matplotlib's version), the
formats, what the table is (names, titles, display names), its cells, and every completed run it draws (the
record without its process-local fields, and for a file store its metrics file's size and modification time):
any change redraws that table's figures, nothing else does.

The manifest (`.figures.json` in the figures folder) is read as untrusted: a damaged one is named in one line
and every figure is drawn; an entry is used only when each file it names is a plain file name of that table in
that folder, of the asked formats, whose SHA-256 is the one recorded. It is written atomically after the
figures, so an interrupted call leaves the previous manifest (and redraws what it does not cover).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from analysis import raster
from analysis.tables import Table
from pcl import results

MANIFEST = ".figures.json"
VERSION = 1
#: the largest manifest read (entries per table: a few KB)
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
#: the largest figure file hashed when checking an entry
MAX_FIGURE_BYTES = 64 * 1024 * 1024
@functools.cache
def _code_version() -> str:
    """Every source file the figures depend on, hashed once per process."""
    import matplotlib

    digest = hashlib.sha256(f"matplotlib {matplotlib.__version__}, png: {raster.renderer()}".encode())
    folder = Path(__file__).resolve().parent
    for path in sorted(folder.glob("*.py")) + [Path(results.__file__).resolve()]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """A JSON-able copy of a record: process-local fields (`_db`, a live connection) dropped, NaN as a string."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _metrics_file(record: dict[str, Any]) -> Any:
    """A file store's metrics file as (size, mtime_ns); None elsewhere (a MongoDB record's heartbeat moves with
    every metric written, and the record is part of the fingerprint)."""
    if not str(record.get("source") or "").startswith("file:") or not isinstance(record.get("path"), str):
        return None
    try:
        info = os.stat(os.path.join(record["path"], "metrics.json"), follow_symlinks=False)
    except OSError:
        return "absent"
    return [info.st_size, info.st_mtime_ns]


def fingerprint(table: Table, formats: Sequence[str], completed: Any) -> str:
    """The SHA-256 of everything `table`'s figures are drawn from (`completed`: its completed runs' frame)."""
    digest = hashlib.sha256()

    def add(part: Any) -> None:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")

    add([VERSION, _code_version(), list(formats), table.stem, table.title, table.dataset, table.head, table.select,
         table.spec.title, table.spec.column_title, list(table.spec.heads), table.variant, table.tag])
    add({c: table.spec.display(c) for c in dict.fromkeys(table.cells["column"])})
    digest.update(table.cells.to_json(orient="split", double_precision=15, default_handler=str).encode())
    for run in completed.to_dict("records"):
        record = (run.get("attempt") or {}).get("record") or {}
        row = {k: v for k, v in run.items() if k != "attempt"}
        try:  # as JSON at C speed; _plain (slower) where a mapping has keys that are not strings
            add([row, {k: v for k, v in record.items() if not str(k).startswith("_")}, _metrics_file(record)])
        except (TypeError, ValueError):
            add([_plain(row), _plain(record), _metrics_file(record)])
    return digest.hexdigest()


def file_hashes(paths: Sequence[Path]) -> list[list[str]] | None:
    """[[file name, SHA-256], ...] of a figure's files just written (in the order of the formats); None when one
    cannot be read."""
    files = []
    for path in paths:
        try:
            files.append([path.name, hashlib.sha256(Path(path).read_bytes()).hexdigest()])
        except OSError:
            return None
    return files


@dataclass(frozen=True)
class Kept:
    """One figure of a table whose inputs did not change: what make_figures reports for it (no matplotlib figure)."""

    stem: str
    kind: str
    caption: str
    paths: list[Path]


class Manifest:
    """The figures folder's manifest: table stem -> {fingerprint, figures (stem, kind, caption, files: [[name,
    sha256], ...] in the order of the formats), notes}."""

    def __init__(self, out_dir: str | Path, entries: dict[str, Any] | None = None):
        self.out_dir = Path(out_dir)
        self.entries: dict[str, Any] = entries or {}

    @classmethod
    def load(cls, out_dir: str | Path, notes: list[str]) -> "Manifest":
        """The manifest of out_dir (empty when there is none); a damaged one adds one line to `notes`."""
        try:
            data = results.read_json(Path(out_dir), MANIFEST, MAX_MANIFEST_BYTES)
        except (results.RecordError, OSError, ValueError) as err:
            notes.append(f"figure manifest {Path(out_dir) / MANIFEST} unreadable ({results.one_line(err, 200)}): "
                         "every figure is drawn again")
            return cls(out_dir)
        if data is None:
            return cls(out_dir)
        if not (isinstance(data, dict) and data.get("version") == VERSION and isinstance(data.get("tables"), dict)):
            notes.append(f"figure manifest {Path(out_dir) / MANIFEST} is not one this version wrote: every figure "
                         "is drawn again")
            return cls(out_dir)
        return cls(out_dir, data["tables"])

    def kept(self, table: Table, key: str, formats: Sequence[str]) -> tuple[list[Kept], list[str]] | None:
        """The figures and notes recorded for `table` under fingerprint `key`, when every file is there as it
        was written; None (draw them) otherwise."""
        entry = self.entries.get(table.stem)
        if not isinstance(entry, dict) or entry.get("fingerprint") != key:
            return None
        figures, notes = entry.get("figures"), entry.get("notes")
        if not isinstance(figures, list) or not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            return None
        out = []
        for figure in figures:
            kept = self._checked(table, figure, formats)
            if kept is None:
                return None
            out.append(kept)
        return out, list(notes)

    def _checked(self, table: Table, figure: Any, formats: Sequence[str]) -> Kept | None:
        if not isinstance(figure, dict):
            return None
        stem, kind, caption, files = (figure.get(k) for k in ("stem", "kind", "caption", "files"))
        if not (isinstance(stem, str) and isinstance(kind, str) and isinstance(caption, str)
                and isinstance(files, list) and stem.startswith(f"{table.stem}_")
                and re.fullmatch(r"[A-Za-z0-9_.=+-]+", stem)
                and all(isinstance(f, list) and len(f) == 2 for f in files)
                and [name for name, _ in files] == [f"{stem}.{f}" for f in formats]):
            return None
        for name, sha in files:
            try:
                data = results.read_file(self.out_dir, name, MAX_FIGURE_BYTES)
            except (results.RecordError, OSError):
                return None
            if data is None or hashlib.sha256(data).hexdigest() != sha:
                return None
        return Kept(stem, kind, caption, [self.out_dir / name for name, _ in files])

    def record(self, table: Table, key: str, drawn: Iterable[tuple[Any, list[list[str]] | None]],
               notes: Sequence[str]) -> None:
        """Remember the figures just drawn for `table` under fingerprint `key`: (figure, file_hashes(its paths));
        nothing when a file could not be read (None): the next call draws the table again."""
        figures = []
        for figure, files in drawn:
            if files is None:
                return
            figures.append({"stem": figure.stem, "kind": figure.kind, "caption": figure.caption, "files": files})
        self.entries[table.stem] = {"fingerprint": key, "figures": figures, "notes": list(notes)}

    def save(self) -> None:
        """Write the manifest atomically (a temporary file in the folder, then a rename)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".figures-", suffix=".tmp", dir=self.out_dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": VERSION, "tables": self.entries}, f, indent=1, sort_keys=True)
            os.chmod(tmp, 0o644)  # as readable as the figures beside it (mkstemp makes it private)
            os.replace(tmp, self.out_dir / MANIFEST)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


__all__ = ["MANIFEST", "Kept", "Manifest", "file_hashes", "fingerprint"]
