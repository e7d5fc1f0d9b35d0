"""The command-line options the analysis commands share (which tables, which stores, which plan) and their errors:
bad input is one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from analysis import escape
from analysis.runs import AnalysisError, default_stores
from pcl.config_checks import did_you_mean
from pcl.flags import OneLineParser
from pcl.fsio import folder_problem
from pcl.results import StoreError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be a whole number >= 1")
    return value


class _Names(argparse.Action):
    """`--tables a b` or `--tables a,b` (the launcher's form): one list of names."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [n for text in values for n in text.split(",") if n])


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set {text!r} is invalid: must be KEY=VALUE (e.g. epochs=10)")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a plain string (dataset=cifar10)
    from pcl import schema

    if key in schema.KEYS:  # checked here, whichever tables follow (a bad value must not read as "no runs")
        check = schema.KEYS[key].check
        error = _refusal(check, parsed)
        axis = isinstance(parsed, list) and parsed  # a grid axis (method=[baseline, pcl]): each of its values
        if error is not None and not (axis and all(_refusal(check, item) is None for item in parsed)):
            raise argparse.ArgumentTypeError(escape.terminal(error))
    return key, parsed


def _refusal(check: Callable[[Any], Any], value: Any) -> Exception | None:
    """The error `check` raises for `value` (ConfigError: one line naming the key and what is allowed), else None."""
    try:
        check(value)
    except Exception as err:  # noqa: BLE001
        return err
    return None


#: a head's name (peer1, mean_peer1, ensemble, pcl_e, ...): it becomes part of the output files' names
_HEAD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def _head(text: str) -> str:
    """A head some method declares (pcl.registry): any other name would give tables of "no such head" cells."""
    from pcl import registry

    if not _HEAD.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be a head's name (letters, digits and _, "
                                         "starting with a letter; e.g. ensemble, peer1, mean_peer1)")
    methods = registry.methods().values()
    if not any(spec.head(text) for spec in methods):
        declared = dict.fromkeys(h.name.replace("{j}", "N") for spec in methods for h in spec.heads)
        examples = [h.name.replace("{j}", "1") for spec in methods for h in spec.heads]  # as given: peer1
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: no method has such a head; the methods' heads: "
                                         f"{', '.join(declared)} (N: a peer's number, from 1)"
                                         f"{did_you_mean(text, examples)}")
    return text


def out_path(folder: bool) -> Callable[[str], str]:
    """An --out value: a folder (`folder`) or a file whose folders are folders (or do not exist yet) in a folder
    this process can write in (tried: a folder made and removed there; permissions alone say yes to root on
    /proc), so that writing fails before any work, not with a traceback after it."""
    def check(text: str) -> str:
        path = Path(text)
        if text.strip() and not folder and path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: it is a folder; give the file's path")
        problem = folder_problem(text if folder or not text.strip() else path.parent)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: {problem}")
        return text
    return check


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The shared options: --tables --store --head --select --datasets --backbones --named --set."""
    p = OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="The paper's reference numbers (with confidence A/Q/C and source) are in analysis/paper.py.")
    p.add_argument("--tables", nargs="+", action=_Names, metavar="NAME",
                   help="scripts of experiments.registry.SCRIPTS (default: every one that has runs)")
    p.add_argument("--store", action="append", metavar="FOLDER|URL",
                   help="file store folder or mongodb:// URL; repeatable (default: results and $PCL_MONGO_URL)")
    p.add_argument("--head", default=None, type=_head,
                   help="report this head (e.g. ensemble) instead of each method's deployed head")
    p.add_argument("--select", choices=("last", "best"), default="last",
                   help="last epoch (default) or each run's best epoch ON THE TEST SET (marked as such)")
    p.add_argument("--datasets", nargs="+", metavar="D",
                   help="only these datasets (default: every dataset the store has runs of)")
    p.add_argument("--backbones", nargs="+", metavar="B", help="only these backbones (rows)")
    p.add_argument("--named", action="append", default=[], metavar="NAME",
                   help="the scripts' named config, e.g. smoke or quick (as `with smoke`; default: the plans "
                        "rebuilt from the records, analysis/discover.py)")
    p.add_argument("--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="a config value of the scripts' plan, as `with KEY=VALUE` (e.g. epochs=10)")
    return p


def add_figure_options(p: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    """--formats and --workers of the commands that draw figures (make_plots, report)."""
    p.add_argument("--formats", nargs="+", default=list(formats), choices=("png", "pdf", "svg"), metavar="FMT",
                   help=f"files of each figure: png, pdf, svg (default: {' '.join(formats)})")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="processes that draw figures, a table each (default: $PCL_PLOT_WORKERS, else one per CPU)")
    p.add_argument("--redraw", action="store_true",
                   help="draw every figure again (default: a table whose records, code and formats did not change "
                        "since the last call into the same folder keeps its files)")


def table_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of analysis.tables.build_tables from parsed options."""
    return {"updates": dict(args.set), "named": list(args.named), "head": args.head, "select": args.select,
            "datasets": args.datasets, "backbones": args.backbones}


def stores(args: argparse.Namespace) -> list[str]:
    return list(args.store) if args.store else default_stores()


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call main; AnalysisError or StoreError (e.g. the server went away while a figure worker read curves) -> its
    one line on stderr and exit code 2 (argparse's errors exit 2 too)."""
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a bad option (2, its line already written)
        return exit_.code if isinstance(exit_.code, int) else 2
    except (AnalysisError, StoreError) as err:
        sys.stderr.write(f"error: {escape.terminal(err)}\n")  # record text in it: one line, no escape codes
        return 2
    except BrokenPipeError:  # `... | head`: the reader left; not an error of the analysis
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return 0
