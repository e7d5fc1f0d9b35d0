"""The one definition of the experiment config and the grid driver that every table and ablation script shares.

A script defines its grid (a function: config -> list of cells, each a dict of run-config overrides with a
`label`) and calls `make_experiment`. The resulting Sacred experiment is a *driver*: it parses the command line
(`with KEY=VALUE`, named configs `quick` and `smoke`), expands the grid over `seeds`, validates every run config, then
trains each as a separate Sacred run with its own record (pcl.tracking.run_grid). The driver run itself is
unobserved: it records nothing.

Commands of every script:

    python experiments/SCRIPT.py [with KEY=VALUE ...]          # run the grid (COMPLETED run_keys are skipped)
    python experiments/SCRIPT.py plan [with ...]               # list the runs and their run_keys, train nothing
    python experiments/SCRIPT.py print_config [with ...]       # Sacred's config view

Every bad input (config, also values wrong together; data; device; folders; database name; an unknown or refused
flag) is one line on stderr naming the key, the value and what is allowed, exit code 2, before any run, record,
checkpoint, lock or data folder exists (`cli`). Sacred's flags -F DIR, -m URL, -c COMMENT, -n NAME, -p, -l, -d, -h
are honoured (HONOURED_FLAGS); the others are refused with a reason (REFUSED_FLAGS).

Config keys: every key of pcl.schema.KEYS (the run keys plus the driver's `seeds`, `results_dir`, `mongo_url` (or
$PCL_MONGO_URL) and `db_name`). `method` and `backbone` may be a name, a list (`'method=["pcl","dml"]'`)
or None (the script's whole axis). `options` is merged over each method's defaults; in a grid of several methods an
option applies to the methods that have it.
"""
from __future__ import annotations

import copy
import difflib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from docopt import DocoptExit, docopt  # Sacred's own command-line parser
from sacred import Experiment
from sacred.arg_parser import get_config_updates
from sacred.commands import print_config as sacred_print_config
from sacred.utils import ConfigAddedError, NamedConfigNotFoundError, SacredError

import pcl

from experiments.grid_table import print_table
from pcl import schema, tracking
from pcl import registry
from pcl.schema import RUN_KEYS, ConfigError, plain

ROOT = Path(__file__).resolve().parents[1]

Cell = dict[str, Any]
GridFn = Callable[[dict[str, Any]], list[Cell]]

#: keys a grid cell may set besides run-config keys
CELL_KEYS = ("teacher",)

QUICK: dict[str, Any] = {"epochs": 10, "train_subset": 5000}
SMOKE: dict[str, Any] = {"dataset": "synthetic", "backbone": "tiny_resnet8", "epochs": 1, "batch_size": 32,
                         "synthetic_classes": 4, "synthetic_train_size": 128, "synthetic_test_size": 64,
                         "seeds": [0], "device": "cpu", "workers": 0}


#: keys of the Sacred scope: every schema key but those the driver sets itself (pcl.schema.KEYS)
SCOPE_KEYS = tuple(k for k, key in schema.KEYS.items() if not key.derived and k not in ("experiment", "label"))


def scope_defaults() -> dict[str, Any]:
    """The Sacred config scope shared by every script: the schema's defaults (recipe keys None until the dataset is
    known; `resolve_recipe` fills them)."""
    return {k: v for k, v in schema.defaults().items() if k in SCOPE_KEYS}


def resolve_recipe(config: Mapping[str, Any], command_name: str, logger: Any) -> dict[str, Any]:
    """Sacred config hook: recipe keys left at None get the dataset's recipe (pcl.schema.RECIPES), so
    print_config, plan and the runs show the values actually used."""
    cfg = plain(config)
    if not isinstance(cfg.get("dataset"), str):
        return {}
    resolved = schema.dataset_defaults(cfg["dataset"], cfg.get("epochs") if isinstance(cfg.get("epochs"), int)
                                       else None)
    return {k: v for k, v in resolved.items() if cfg.get(k) is None}


def axis(value: Any, everything: Sequence[str]) -> list[str]:
    """A grid axis from a config value: None -> the script's whole axis, a name -> [name], a list -> the list."""
    if value is None:
        return list(everything)
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"a grid axis must be a name, a non-empty list of names or None, got {value!r}")


def check_dataset(cfg: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Scripts reproduce results on given datasets; `synthetic` is always allowed (smoke runs)."""
    if cfg["dataset"] not in (*allowed, "synthetic"):
        raise ConfigError(f"config key 'dataset'={cfg['dataset']!r} is invalid for this script: must be one of "
                          f"{', '.join((*allowed, 'synthetic'))}")


def pcl_ablation_grid(cfg: Mapping[str, Any], variants: Mapping[str, Cell]) -> list[Cell]:
    """The grid of a PCL ablation: every variant (label -> cell overrides) on CIFAR, ResNet-32 unless `backbone`."""
    check_dataset(cfg, ("cifar10", "cifar100"))
    return [{"label": f"{name}/{backbone}", "method": "pcl", "backbone": backbone, **copy.deepcopy(dict(cell))}
            for backbone in axis(cfg["backbone"], ("resnet32",)) for name, cell in variants.items()]


def _check_driver(cfg: Mapping[str, Any]) -> None:
    if cfg.get("seed", 0) != 0:
        raise ConfigError(f"config key 'seed'={cfg['seed']!r}: run seeds are set with seeds=[...] "
                          f"(e.g. seeds=[{cfg['seed']}])")
    for key in schema.DRIVER_KEYS:
        schema.KEYS[key].check(cfg.get(key))
    if not isinstance(cfg.get("options"), Mapping):
        raise ConfigError(f"config key 'options'={cfg.get('options')!r} is invalid: must be a dict")


def expand(name: str, grid: GridFn, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The script's grid crossed with `seeds` (seed-major: every cell of seed 0 first), each a validated run config.

    Raises ConfigError naming the key for any invalid value, before anything runs.
    """
    cfg = plain(config)
    _check_driver(cfg)
    seeds = schema.KEYS["seeds"].check(cfg["seeds"])
    cells = [dict(c) for c in grid(cfg)]
    if not cells:
        raise ConfigError(f"the grid of {name} is empty for this config")
    user_options = dict(cfg["options"])
    if "peers" in user_options:
        raise ConfigError("config key 'options.peers': set the top-level key peers=N instead")
    methods = {c.get("method", cfg.get("method")) for c in cells}
    methods |= {c["teacher"]["method"] for c in cells if c.get("teacher")}
    unknown = sorted(m for m in methods if m not in registry.methods())
    if unknown:
        raise ConfigError(f"config key 'method': unknown method(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(registry.methods()))}")
    orphans = sorted(k for k in user_options if not any(k in _defaults(m) for m in methods))
    if orphans:
        valid = sorted({k for m in methods for k in _defaults(m)})
        close = sorted({c for k in orphans for c in difflib.get_close_matches(k, valid, n=2)})
        hint = f"; did you mean {', '.join(f'options.{c}' for c in close)}?" if close else ""
        raise ConfigError(f"config key(s) {', '.join(f'options.{k}' for k in orphans)}: not an option of any method "
                          f"of this grid ({', '.join(sorted(methods))}); valid: "
                          f"{', '.join(valid) or '(none: these methods take no options)'}{hint}")
    base = {k: cfg[k] for k in RUN_KEYS if k in cfg and k not in ("options", "method", "backbone", "run_key")}
    base["experiment"] = name
    runs = []
    for seed in seeds:
        for cell in cells:
            runs.append(_cell_config(base, cell, user_options, seed))
    unique: dict[str, dict[str, Any]] = {}
    for run in runs:  # a run two cells need (e.g. a teacher that is also a table cell) runs once
        unique.setdefault(run["run_key"], run)
    return list(unique.values())


def _cell_config(base: Mapping[str, Any], cell: Mapping[str, Any], user_options: Mapping[str, Any],
                 seed: int) -> dict[str, Any]:
    cell = dict(cell)
    bad = sorted(set(cell) - set(RUN_KEYS) - set(CELL_KEYS))
    if bad:
        raise ConfigError(f"grid cell {cell.get('label', cell)!r} sets unknown key(s) {', '.join(bad)}")
    teacher = cell.pop("teacher", None)
    cell_options = dict(cell.pop("options", None) or {})
    method = cell.get("method")
    if method is None:
        raise ConfigError(f"grid cell {cell.get('label', cell)!r} names no method")
    defaults = _defaults(method)
    clash = sorted(set(cell_options) & set(user_options))
    if clash:
        raise ConfigError(f"config key(s) {', '.join(f'options.{k}' for k in clash)}: this grid varies them "
                          f"(cell {cell.get('label', '')!r}), they cannot be set")
    options = {k: v for k, v in user_options.items() if k in defaults}
    options.update(cell_options)
    run = {**copy.deepcopy(dict(base)), **cell, "options": options, "seed": seed}
    if teacher is not None:
        teacher_run = _cell_config(base, teacher, user_options, seed)
        run["teacher_run_key"] = teacher_run["run_key"]
    return tracking.normalize_run_config(run)


class Plan(list):
    """The run configs of a grid; its str is short because Sacred logs a command's result."""

    def __str__(self) -> str:
        return f"{len(self)} run(s)"


def _format_options(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) or "(none)"


def _format_plan(runs: Sequence[Mapping[str, Any]]) -> str:
    """The plan as a table (run_key, every identity key of pcl.schema whose value differs between the runs, the
    label, and the options each run sets apart from its method's defaults), then every method's resolved options."""
    import pandas as pd

    shown = [k for k in schema.RUN_KEYS if schema.KEYS[k].identity and k != "options"]
    rows = []
    for r in runs:
        defaults = {**_defaults(r["method"]), **({"peers": r["peers"]} if r["peers"] else {})}
        changed = {k: v for k, v in r["options"].items() if defaults.get(k, object()) != v}
        rows.append({"run_key": r["run_key"], **{k: "" if r[k] is None else str(r[k]) for k in shown},
                     "label": r["label"] or r["method"], "options apart from the defaults": f"[{_format_options(changed)}]" if changed else ""})
    table = pd.DataFrame(rows)
    table = table[[c for c in table.columns if c in ("run_key", "seed", "label") or table[c].nunique() > 1]]
    table.index = range(1, len(table) + 1)
    return "\n".join([table.to_string(), "", _format_method_options(runs)])


def _plan_summary(runs: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> str:
    """`plan`'s last line: how many runs, per dataset, method and backbone, how many seeds, and how many are already
    COMPLETED in the file store (the grid skips those; MongoDB is not read: with it, more may be done)."""
    from collections import Counter

    def counts(key: str) -> str:
        return ", ".join(f"{k} {n}" for k, n in Counter(str(r[key]) for r in runs).items())

    seeds = sorted({r["seed"] for r in runs})
    line = (f"plan: {len(runs)} run(s); per dataset: {counts('dataset')}; per method: {counts('method')}; per "
            f"backbone: {counts('backbone')}; {len(seeds)} seed(s)")
    store = Path(str(config.get("results_dir") or "results"))
    mongo = " (MongoDB not read: more may be done there)" if (
        config.get("mongo_url") or os.environ.get(tracking.MONGO_URL_ENV)) else ""
    if not store.is_dir():
        return f"{line}; none COMPLETED yet (no file store at {store}){mongo}"
    from pcl import results

    try:
        done = {(r.get("config") or {}).get("run_key")
                for r in results.iter_records(str(store), {"status": "COMPLETED"})}
    except Exception as err:  # noqa: BLE001 - a summary line never stops `plan`
        return f"{line}; COMPLETED runs not counted ({store} could not be read: {' '.join(str(err).split())[:200]})"
    completed = sum(r["run_key"] in done for r in runs)
    return (f"{line}; {completed} already COMPLETED in {store} (the grid skips them; force=True trains them again)"
            f"{mongo}")


def _format_method_options(runs: Sequence[Mapping[str, Any]]) -> str:
    """Each method's resolved options (its defaults merged with `options`; docs/methods.md says what they mean)."""
    lines = ["resolved options per method (docs/methods.md: default and meaning of each):"]
    seen: dict[str, list[str]] = {}
    for r in runs:
        shown = _format_options(r["options"])
        if shown not in seen.setdefault(r["method"], []):
            seen[r["method"]].append(shown)
    for method, variants in seen.items():
        for shown in variants:
            lines.append(f"  {method}: {shown}")
    return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def package_sources() -> list[str]:
    """Every source file of the pcl package and of the drivers (experiments/, ablations/): Sacred archives them
    with each run, so a record holds the code that produced it."""
    package = Path(pcl.__file__).resolve().parent
    files = sorted(package.rglob("*.py"))
    for folder in ("experiments", "ablations"):
        files += sorted((ROOT / folder).glob("*.py"))
    return [str(f) for f in files if "__pycache__" not in f.parts]


def make_experiment(name: str, grid: GridFn, *, doc: str | None = None, script: str | None = None,
                    defaults: Mapping[str, Any] | None = None, smoke: Mapping[str, Any] | None = None,
                    quick: Mapping[str, Any] | None = None) -> Experiment:
    """The driver experiment of one script: shared config + named configs `quick`/`smoke` + the script's grid.

    `defaults` sets the script's own defaults of dataset/backbone/method and adds its own keys (e.g.
    teacher_backbone); `smoke`/`quick` extend the shared named configs with values for those keys.
    """
    ex = Experiment(name, base_dir=str(ROOT), save_git_info=False)  # the driver: never observed
    ex.logger = _driver_logger(name)
    if doc:
        ex.doc = doc
    ex.add_config({**scope_defaults(), **dict(defaults or {})})
    ex.config_hook(resolve_recipe)
    ex.add_named_config("quick", {**QUICK, **dict(quick or {})})
    ex.add_named_config("smoke", {**SMOKE, **dict(smoke or {})})
    sources = package_sources() + ([str(Path(script).resolve())] if script else [])

    def main(_run, _config, options):  # `options` is named so that `with options.KEY=VALUE` passes Sacred's checks
        """Run the grid: each run a separate Sacred run with its own record; COMPLETED run_keys are skipped."""
        cfg = plain(_config)
        comment = _run.meta_info.get("comment")  # Sacred's -c COMMENT
        if comment:
            if cfg.get("comment") and cfg["comment"] != comment:
                raise ConfigError(f"config key 'comment'={cfg['comment']!r} conflicts with -c {comment!r}: give "
                                  "the comment once")
            cfg["comment"] = comment
        runs = expand(name, grid, cfg)
        report = tracking.run_grid(runs, results_dir=cfg["results_dir"], mongo_url=cfg["mongo_url"],
                                   db_name=cfg["db_name"], experiment_name=_run.experiment_info["name"],  # -n NAME
                                   source_files=list(dict.fromkeys(sources)))
        if report.stop_signal is None:  # the grid ends with its table (a preempted job hands its signal on at once)
            print_table(name, cfg, runs)
        return report

    def plan(_config, options):
        """List the runs of the grid (run_keys, every method's options) and a summary line; trains nothing.

        Nothing is trained or recorded; only the file store (results_dir) is read, to count the runs already
        COMPLETED there."""
        config = plain(_config)
        runs = Plan(expand(name, grid, config))
        print(_format_plan(runs))
        print(_plan_summary(runs, config))
        return runs

    def print_config(_run, _config):
        """Print the resolved config, then every method's resolved options for it (no training, no record)."""
        if sys.stdout.isatty():
            sacred_print_config(_run)
        else:  # no colour codes in a log file
            print(_ANSI.sub("", _capture(sacred_print_config, _run)))
        try:
            print(_format_method_options(expand(name, grid, plain(_config))))
        except ConfigError as err:
            print(f"(method options not resolved: {err})")

    def plan_for_config(config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The validated run configs of this script's grid for a resolved config (the driver's `_config`)."""
        return expand(name, grid, config)

    ex.main(main)
    ex.command(plan, unobserved=True)
    ex.command(print_config, unobserved=True)
    ex.grid = grid
    ex.plan_for_config = plan_for_config  # experiments.registry reads every plan through it
    return ex


def run_script(ex: Experiment, config_updates: Mapping[str, Any] | None = None,
               named_configs: Sequence[str] = (), command: str | None = None) -> Any:
    """The Python equivalent of the command line: the grid's GridReport (or `plan`'s list of run configs)."""
    return ex.run(command, config_updates=dict(config_updates or {}), named_configs=list(named_configs),
                  options={"--unobserved": True}).result


def _capture(fn: Callable[..., Any], *args: Any) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        fn(*args)
    return buffer.getvalue().rstrip("\n")


_DRIVER_LOG_HANDLER = logging.StreamHandler(sys.stderr)
_DRIVER_LOG_HANDLER.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))


def _driver_logger(name: str) -> logging.Logger:
    """The driver's logger: silent unless -l LEVEL (the grid prints its own lines; Sacred's "Running command",
    "Result: ..." and config-type warnings of the driver would only repeat them or be superseded by the schema)."""
    logger = logging.getLogger(f"pcl.driver.{name}")
    if _DRIVER_LOG_HANDLER not in logger.handlers:
        logger.addHandler(_DRIVER_LOG_HANDLER)
        logger.propagate = False
    logger.setLevel(logging.CRITICAL + 1)
    _DRIVER_LOG_HANDLER.stream = sys.stderr  # the current stderr (not setStream: it flushes the old, maybe closed)
    return logger


def _move_mongo_url_to_env(argv: list[str]) -> list[str]:
    """`mongo_url=URL` on the command line goes to $PCL_MONGO_URL before Sacred parses (and could print) it."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key == "mongo_url" and value.strip("'\"") not in ("", "None", "null"):
            os.environ[tracking.MONGO_URL_ENV] = value.strip("'\"")
            tracking.resolve_mongo_url(os.environ[tracking.MONGO_URL_ENV])  # registers the password for redaction
            continue
        out.append(arg)
    if out and out[-1] == "with":
        out.pop()
    return out


#: Sacred's flags the drivers honour, and what each does here
HONOURED_FLAGS: dict[str, str] = {
    "--file_storage": "-F DIR: results_dir=DIR",
    "--mongo_db": "-m URL: the MongoDB URL (moved to $PCL_MONGO_URL, never printed or recorded)",
    "--comment": "-c COMMENT: recorded in every run's config as `comment`",
    "--name": "-n NAME: the experiment name in every run's record",
    "--print-config": "-p: print the config before running",
    "--loglevel": "-l LEVEL: the driver's log level",
    "--debug": "-d: full tracebacks, also for configuration errors",
    "--help": "-h: this help",
}
#: why the other Sacred flags are refused (a flag that did nothing would be a silent surprise)
REFUSED_FLAGS: dict[str, str] = {
    "--queue": "the suite has no queue of runs; submit the command to your job scheduler instead",
    "--unobserved": "every run is always recorded in the file store (results_dir); the driver itself records "
                    "nothing",
    "--force": "Sacred's warnings about changed config entries are replaced by the suite's validation; to train "
               "COMPLETED runs again use force=True",
    "--id": "each store numbers its own runs; runs are identified by run_key and attempt_id",
    "--pdb": "use -d for full tracebacks",
    "--capture": "each run captures its output itself",
    "--beat-interval": "not configurable in the suite",
    "--priority": "the suite has no queue of runs",
    "--enforce_clean": "git state is recorded with each run but not enforced",
    "--sql": "records go to the file store and MongoDB only",
    "--tiny_db": "records go to the file store and MongoDB only",
    "--s3": "records go to the file store and MongoDB only",
    "--gcs": "records go to the file store and MongoDB only",
}
SUPPORTED = "-F DIR, -m URL, -c COMMENT, -n NAME, -p, -l LEVEL, -d, -h"


def _flag_name(ex: Experiment, long_flag: str) -> str:
    for option in ex.all_cli_options:
        if option.get_flag() == long_flag:
            return f"{option.get_short_flag()} ({long_flag})"
    return long_flag


def _help_text(ex: Experiment, usage: str) -> str:
    """Sacred's usage with its Options section replaced by the flags the drivers honour (HONOURED_FLAGS, with what
    each does here) and one line naming the refused ones: --help lists no flag that is then refused."""
    head, sep, rest = usage.partition("\nOptions:\n")
    if not sep:
        return usage
    _, sep, tail = rest.partition("\nArguments:")
    lines = ["", "Options (Sacred's flags that the suite honours):"]
    refused = []
    for option in ex.all_cli_options:
        flag, short = option.get_flag(), option.get_short_flag()
        if flag not in HONOURED_FLAGS:
            refused.append(short or flag)
            continue
        form, _, what = HONOURED_FLAGS[flag].partition(": ")
        value = form.split(" ", 1)[1] if " " in form else ""
        lines.append(f"  {f'{short} {value}, {flag}={value}' if value else f'{short}, {flag}':31} {what}")
    lines.append(f"Sacred's other flags ({', '.join(refused)}) are refused, each with the reason.")
    return "\n".join([head, *lines, "", sep.lstrip("\n") + tail if sep else ""])


def _sacred_error_line(ex: Experiment, err: Exception, config_updates: Mapping[str, Any]) -> str:
    """One line for one of Sacred's own configuration errors (an unknown key, an unknown named config, ...)."""
    if isinstance(err, ConfigAddedError):
        keys = list(getattr(err, "__conflicting_configs__", ()))
        shown = ", ".join(f"{k!r}={_dotted(config_updates, k)!r}" for k in keys)
        known = sorted(k for k in _config_keys(ex) if k not in keys)
        close = sorted({c for k in keys for c in difflib.get_close_matches(k, known, n=2)})
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown config key(s) {shown}: allowed keys are {', '.join(known)}{hint}"
    if isinstance(err, NamedConfigNotFoundError):
        found = re.search(r'"(.*?)"\. Available config values are: (.*)$', str(err))
        if found:
            allowed = ", ".join(re.findall(r"'([^']*)'", found.group(2)))
            return f"named config {found.group(1)!r} is unknown: allowed named configs: {allowed}"
    return " ".join(str(getattr(err, "message", None) or err).split())


def _config_keys(ex: Experiment) -> list[str]:
    """The keys of a driver's config (the schema's scope plus the script's own keys)."""
    try:
        return list(ex._create_run("print_config", options={"--unobserved": True}).config)
    except Exception:  # noqa: BLE001 - only used for a message
        return list(SCOPE_KEYS)


def _dotted(tree: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _parse(ex: Experiment, argv: list[str]) -> tuple[str, dict[str, Any], list[str], dict[str, Any]]:
    """(command, config updates, named configs, Sacred options for the driver) from a command line, with the
    honoured flags mapped to the suite and the others refused (tracking.UserError, one line)."""
    _, usage, internal_usage = ex.get_usage()
    try:
        args = docopt(internal_usage, [str(a) for a in argv[1:]], default_help=False)
    except DocoptExit:
        raise tracking.UserError(f"the command line is not understood: expected `{Path(argv[0]).name} [COMMAND] "
                                 f"[FLAGS] [with KEY=VALUE ...]`; flags: {SUPPORTED}; see --help") from None
    if ex._handle_help(args, _help_text(ex, usage)):
        sys.exit(0)
    for flag, value in args.items():
        if flag.startswith("--") and value and flag not in HONOURED_FLAGS:
            reason = REFUSED_FLAGS.get(flag, "not supported by the suite's drivers")
            raise tracking.UserError(f"flag {_flag_name(ex, flag)} is refused: {reason}; supported flags: "
                                     f"{SUPPORTED}")
    command = args.get("COMMAND") or ex.default_command
    problem = ex._check_command(command)
    if problem:
        raise tracking.UserError(f"command {command!r} is unknown: {problem.split('Available commands are: ')[-1]}"
                                 " are the commands")
    config_updates, named_configs = get_config_updates(args["UPDATE"])
    if args["--file_storage"]:
        given = config_updates.get("results_dir")
        if given is not None and given != args["--file_storage"]:
            raise tracking.UserError(f"config key 'results_dir'={given!r} conflicts with -F "
                                     f"{args['--file_storage']!r}: give the results folder once")
        config_updates["results_dir"] = args["--file_storage"]
    if args["--mongo_db"]:
        url = str(args["--mongo_db"]).strip("'\"")
        if not re.match(r"mongodb(\+srv)?://", url):
            raise tracking.UserError("flag -m (--mongo_db) needs a MongoDB URL (mongodb://HOST:PORT/DATABASE, "
                                     "with credentials if needed); Sacred's host:port:db form is not supported")
        tracking.resolve_mongo_url(url)  # registers the password for redaction
        os.environ[tracking.MONGO_URL_ENV] = url
    options = {"--unobserved": True}  # the driver records nothing; each run records itself
    for flag in ("--comment", "--name", "--print-config", "--loglevel", "--debug"):
        if args[flag]:
            options[flag] = args[flag]
    return command, config_updates, named_configs, options


def cli(ex: Experiment, argv: Iterable[str] | None = None) -> None:
    """Sacred's command line for a driver, with one line per user error.

    Exit codes: 0 when every run is done (or the only ones left are being trained by another live process),
    1 on failed runs, 2 on a user error (a bad config value, also values wrong together, missing or corrupt data,
    a device this machine lacks, a folder that cannot be written, an unknown or refused flag): one line on stderr
    naming the key, the value and what is allowed, and nothing recorded, checkpointed, locked or downloaded.
    On a stop signal the signal is handed on (default action or submitit's requeue) once the preempted run is
    recorded.
    Under torchrun (or srun) with several processes, rank 0 does all of this while the others train the runs it
    announces (config key `gpus`; pcl.tracking.lead_or_follow) and end with its exit code.
    """
    outcome = tracking.lead_or_follow(lambda: _run_cli(ex, argv), exit_code=lambda o: o[0])
    if outcome is None:  # a follower whose rank 0 ended with exit code 0
        return
    code, stop_signal = outcome
    if stop_signal is not None:  # handed on once the followers are told (default action or submitit's requeue)
        tracking.redeliver(stop_signal)
    if code or stop_signal is not None:
        sys.exit(code)


def _run_cli(ex: Experiment, argv: Iterable[str] | None) -> tuple[int, int | None]:
    """The command line's work: (exit code, the stop signal to hand on or None)."""
    _driver_logger(ex.path)  # its handler writes to the current stderr
    args = _move_mongo_url_to_env(list(sys.argv if argv is None else argv))
    debug = any(a in ("-d", "--debug") for a in args[1:])
    config_updates: dict[str, Any] = {}
    try:
        command, config_updates, named_configs, options = _parse(ex, args)
        run = ex.run(command, config_updates=config_updates, named_configs=named_configs, options=options)
    except (ConfigError, tracking.UserError, SacredError) as err:
        if debug:
            raise
        line = str(err) if isinstance(err, (ConfigError, tracking.UserError)) else _sacred_error_line(
            ex, err, config_updates)
        print(tracking.redact("error: " + " ".join(line.split())), file=sys.stderr)
        return 2, None
    report = getattr(run, "result", None)
    if isinstance(report, tracking.GridReport):
        return report.exit_code, report.stop_signal
    return 0, None


def _defaults(method: str) -> dict[str, Any]:
    """A method's declared option defaults (pcl.registry: no torch)."""
    return registry.method(method).defaults
