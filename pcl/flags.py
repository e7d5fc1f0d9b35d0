"""The command-line parser of the suite's commands (analysis, launcher, status, tracking, benches): a bad flag is one
line on stderr naming it, and exit code 2; the usage stays in --help. Standard library only.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any, Callable, Sequence


class OneLineParser(argparse.ArgumentParser):
    """argparse, whose error prints the usage too (8-22 lines for the launcher), with one line instead; a value
    that starts with '-' (`--mem -1G`, which argparse reads as another flag) gets the form that passes it."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:
        found = re.fullmatch(r"argument (--[\w-]+): expected one argument", message)
        argv = getattr(self, "_argv", [])
        if found and found.group(1) in argv:
            at = argv.index(found.group(1)) + 1
            if at < len(argv) and argv[at].startswith("-"):
                message += (f"; to give the value {argv[at]!r}, which starts with '-', write "
                            f"{found.group(1)}={argv[at]}")
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def positive_number(unit: str = "") -> Callable[[str], float]:
    """A flag's type: a finite number > 0 (`unit` names it in the message), else argparse's one line."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be a finite number"
                                             f"{' of ' + unit if unit else ''} > 0")
        return value
    return parse


def folder_path(write: bool) -> Callable[[str], str]:
    """A flag's type: a folder path (pcl.fsio.folder_problem; `write`: this user can create and write it), else
    argparse's one line naming the flag (a results folder that is a file had read as an empty store)."""
    def parse(text: str) -> str:
        from pcl.fsio import folder_problem

        problem = folder_problem(text, write)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: {problem}")
        return text
    return parse


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The parsed flags, or the exit code argparse ended with (--help: 0; a bad flag: 2, its line written)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2


__all__ = ["OneLineParser", "folder_path", "parse_command_line", "positive_number"]
