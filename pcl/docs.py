"""Every generated document, written or checked by one command.

    python -m pcl.docs           # rewrite docs/config.md and docs/methods.md from the code
    python -m pcl.docs --check   # exit 1 naming each stale file (CI runs this through tests/test_docs.py)

docs/config.md comes from the config schema (pcl.schema), docs/methods.md from the method and backbone
declarations and a build of each method (pcl.methods.table, which imports torch).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def _config() -> str:
    from pcl import schema

    return schema.markdown()


def _methods() -> str:
    from pcl.methods import table

    return table.markdown()


#: each generated file (relative to the repository root) -> the function that makes its text
GENERATED: dict[str, Callable[[], str]] = {"docs/config.md": _config, "docs/methods.md": _methods}


def stale(root: Path | None = None) -> list[str]:
    """The generated files (under `root`, default the repository) whose content differs from what the code makes."""
    root = ROOT if root is None else root
    out = []
    for name, make in GENERATED.items():
        path = root / name
        if not path.is_file() or path.read_text(encoding="utf-8") != make():
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcl.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 naming each stale file")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"{name} is stale: run `python -m pcl.docs`", file=sys.stderr)
        return 1 if names else 0
    for name, make in GENERATED.items():
        (ROOT / name).write_text(make(), encoding="utf-8")
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
