"""The registries of methods and backbones, built from the declarations of their files, without importing torch.

Every `pcl/methods/*.py` file with a top-level `DECLARATION = MethodSpec(...)` is a method; every `pcl/models/*.py`
file with `DECLARATIONS = (BackboneSpec(...), ...)` declares backbones (pcl.declarations). Nothing else lists them:
config validation, run keys, the scripts' default grids, table columns and rows, display names, generated docs,
the launcher's cost and the tests all read these functions. The torch side (`pcl.methods.method_class`,
`pcl.models.build_backbone`) imports the module a declaration came from.
"""
from __future__ import annotations

import functools
import numbers
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from pcl.declarations import (BackboneSpec, DeclarationError, MethodSpec, read_declaration, shown_path,
                              top_level_names)

PACKAGE = Path(__file__).resolve().parent
METHOD_VARIABLE = "DECLARATION"
BACKBONE_VARIABLE = "DECLARATIONS"


def _declaring_files(folder: Path, variable: str) -> list[Path]:
    """The folder's modules that assign `variable` at the top level (a cheap test of the bytes before parsing: an
    annotation, no spaces and a BOM included)."""
    assigns = re.compile(rb"^(?:\xef\xbb\xbf)?" + variable.encode() + rb"\s*(?::[^=\n]*)?=(?!=)", re.MULTILINE)
    # not _private.py, nor an editor's .#lock file (a link to nothing) or other hidden file
    return [p for p in sorted(folder.glob("*.py")) if not p.name.startswith(("_", ".")) and p.is_file()
            and assigns.search(p.read_bytes())]


def _collect(package: str, variable: str, kind: type, many: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """Every declaration of `kind` in the package's files, name -> spec in declared order, and name -> module."""
    specs: dict[str, Any] = {}
    modules: dict[str, str] = {}
    for path in _declaring_files(PACKAGE / package, variable):
        shown = shown_path(path)
        declared = read_declaration(path, variable)
        found = declared if many and isinstance(declared, tuple) else (declared,)
        if (many and not isinstance(declared, tuple)) or not all(isinstance(s, kind) for s in found) or not found:
            shape = f"a tuple of {kind.__name__}(...), at least one" if many else f"a {kind.__name__}(...)"
            raise DeclarationError(f"{shown}: {variable} must be {shape}")
        for spec in found:
            # the builder is looked up only when a network is built: in the middle of a run
            if isinstance(spec, BackboneSpec) and spec.builder not in top_level_names(path):
                raise DeclarationError(f"{shown}: backbone {spec.name!r}: builder={spec.builder!r} is no top-level "
                                       "function of the file")
            if spec.name in specs:
                raise DeclarationError(f"{shown}: {spec.name!r} is declared twice (also in {modules[spec.name]})")
            specs[spec.name], modules[spec.name] = spec, f"pcl.{package}.{path.stem}"
    return dict(sorted(specs.items(), key=lambda item: (item[1].order, item[0]))), modules


#: the folders of the suite's commands (scripts run as files, or modules run with -m)
COMMAND_FOLDERS = ("experiments", "ablations", "analysis", "slurm", "bench", "pcl")


def _in_a_command() -> bool:
    """Whether this process is one of the suite's commands: its __main__ a script of COMMAND_FOLDERS or a module
    of theirs run with -m (not pytest, a notebook or a user's program, which get the exception itself)."""
    if sys.argv[:1] == ["-m"] and "-m" in getattr(sys, "orig_argv", ()):  # python -m PACKAGE importing PACKAGE
        module = sys.orig_argv[sys.orig_argv.index("-m") + 1:][:1]
        return bool(module) and module[0].split(".")[0] in COMMAND_FOLDERS
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return spec.name.split(".")[0] in COMMAND_FOLDERS
    script = getattr(main, "__file__", None)
    return script is not None and Path(script).resolve().parent.parent == PACKAGE.parent \
        and Path(script).resolve().parent.name in COMMAND_FOLDERS


def declaration_failed(err: DeclarationError) -> NoReturn:
    """A declaration's mistake found: in one of the suite's commands, its one line on stderr and exit code 2, as
    any bad input (the registry is read while a command imports its modules: it ended a traceback of 20-25 lines
    through them); elsewhere the DeclarationError itself."""
    if _in_a_command():
        if not _REPORTED:  # once: an except clause naming a lazily imported class reads the registry again
            _REPORTED.append(str(err))
            sys.stderr.write(f"error: {err}\n")
        raise SystemExit(2) from None
    raise err


_REPORTED: list[str] = []


@functools.cache
def _methods() -> tuple[dict[str, MethodSpec], dict[str, str]]:
    try:
        return _collect("methods", METHOD_VARIABLE, MethodSpec, many=False)
    except DeclarationError as err:
        declaration_failed(err)


@functools.cache
def _backbones() -> tuple[dict[str, BackboneSpec], dict[str, str]]:
    try:
        return _collect("models", BACKBONE_VARIABLE, BackboneSpec, many=True)
    except DeclarationError as err:
        declaration_failed(err)


def methods() -> dict[str, MethodSpec]:
    """Every declared method, name -> declaration, in column order."""
    return _methods()[0]


def backbones() -> dict[str, BackboneSpec]:
    """Every declared backbone, name -> declaration, in row order."""
    return _backbones()[0]


def method(name: str) -> MethodSpec:
    """The declaration of method `name`; ValueError listing the known ones."""
    try:
        return methods()[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(methods()))}") from None


def backbone(name: str) -> BackboneSpec:
    """The declaration of backbone `name`; ValueError listing the known ones."""
    try:
        return backbones()[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(backbones()))}") from None


def method_module(name: str) -> str:
    """The module that implements method `name` (imported by the torch side only)."""
    method(name)
    return _methods()[1][name]


def backbone_module(name: str) -> str:
    """The module that builds backbone `name` (imported by the torch side only)."""
    backbone(name)
    return _backbones()[1][name]


def table_methods(table: str) -> tuple[str, ...]:
    """The methods of a paper table's default grid (declared `tables`), in column order."""
    return tuple(name for name, spec in methods().items() if table in spec.tables)


def table_backbones(table: str) -> tuple[str, ...]:
    """The backbones of a paper table's default grid (declared `tables`), in row order."""
    return tuple(name for name, spec in backbones().items() if table in spec.tables)


def dataset_backbones(dataset: str) -> tuple[str, ...]:
    """The backbones declared for `dataset` (e.g. the launcher's --backbones for cifar100)."""
    return tuple(name for name, spec in backbones().items() if dataset in spec.datasets)


def method_display(name: str) -> str:
    """A method's name in tables and figures (the name itself when it is not declared: e.g. a foreign record)."""
    spec = methods().get(name) if isinstance(name, str) else None
    return spec.display if spec is not None else str(name)


def backbone_display(name: str) -> str:
    """A backbone's name in tables and figures (the name itself when it is not declared)."""
    spec = backbones().get(name) if isinstance(name, str) else None
    return spec.display if spec is not None else str(name)



def default_dropout() -> dict[str, float]:
    """Backbones with dropout layers -> the zoo's dropout probability (declared `dropout`)."""
    return {name: spec.dropout for name, spec in backbones().items() if spec.dropout is not None}


def check_dropout(name: str, dropout: object) -> float | None:
    """The dropout probability backbone `name` is built with: the zoo's default for None, else the value, checked.

    Errors (ValueError, naming the key, the value and what is allowed): a value for a backbone without dropout
    layers; a value that is not a number in [0, 1).
    """
    zoo = default_dropout()
    if name not in zoo:
        if dropout is not None:
            raise ValueError(f"dropout={dropout!r} cannot be used with backbone {name!r}: it has no dropout layer; "
                             f"leave dropout unset (None), or use one of: {', '.join(sorted(zoo))}")
        return None
    if dropout is None:
        return zoo[name]
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1) (or None for the zoo's {zoo[name]} of "
                         f"{name}), got dropout={dropout!r}")
    return float(dropout)


__all__ = ["backbone", "backbone_display", "backbone_module", "backbones", "check_dropout", "dataset_backbones",
           "default_dropout", "method", "method_display", "method_module", "methods", "table_backbones",
           "table_methods"]
