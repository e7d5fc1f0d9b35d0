"""The command line of every table and ablation script (`cli`): Sacred's argv parsed with docopt, the config key
`mongo_url=URL` and the flag -m URL moved to $PCL_MONGO_URL before anything prints them, the Sacred flags the drivers
honour (HONOURED_FLAGS) and those they refuse with a reason (REFUSED_FLAGS), the `--help` text, and one error line
per bad input.

Every bad input (config, also values wrong together; data; device; folders; database name; an unknown or refused
flag) is one line on stderr naming the key, the value and what is allowed, exit code 2, before any run, record,
checkpoint, lock or data folder exists. Sacred's flags -F DIR, -m URL, -c COMMENT, -n NAME, -p, -l, -d, -h are
honoured; the others are refused with a reason. The driver it runs is experiments.common.make_experiment's.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from docopt import DocoptExit, docopt  # Sacred's own command-line parser
from sacred import Experiment
from sacred.utils import ConfigAddedError, NamedConfigNotFoundError, SacredError, set_by_dotted_path

from experiments.common import SCOPE_KEYS, _driver_logger, quoted_names
from experiments.registry import declared_named_configs
from pcl import tracking
from pcl.config_checks import did_you_mean
from pcl.process_env import EnvError
from pcl.schema import ConfigError


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


def sacred_error_line(ex: Experiment, err: Exception, config_updates: Mapping[str, Any]) -> str:
    """One line for one of Sacred's own configuration errors (an unknown key, an unknown named config, ...)."""
    if isinstance(err, ConfigAddedError):
        keys = list(getattr(err, "__conflicting_configs__", ()))
        shown = ", ".join(f"{k!r}={_dotted(config_updates, k)!r}" for k in keys)
        known = sorted(k for k in _config_keys(ex) if k not in keys)
        hint = did_you_mean(keys, known, show=str)
        return f"unknown config key(s) {shown}: allowed keys are {', '.join(known)}{hint}"
    if isinstance(err, NamedConfigNotFoundError):
        found = re.search(r'"(.*?)"\. Available config values are: (.*)$', str(err))
        if found:
            allowed = ", ".join(re.findall(r"'([^']*)'", found.group(2)))
            words = getattr(err, "words", None) or [f"{k}={v}" for k, v in config_updates.items()]
            return (f"named config {found.group(1)!r} is unknown: allowed named configs: {allowed}"
                    f"{_split_value_hint(found.group(1), words) or did_you_mean(found.group(1), allowed.split(', '))}")
    return " ".join(str(getattr(err, "message", None) or err).split())


def _split_value_hint(word: str, words: list[str]) -> str:
    """How to write a value the shell split at spaces (Sacred takes each word without `=` after `with` for a named
    config): `seeds=[0, 1, 2]` gave the update seeds='[0,' and the named configs '1,' and '2]', `method=pcl dml` the
    named config 'dml'. `words`: the `with` arguments as given, `word` the first unknown named config."""
    from pcl import registry

    at = words.index(word) if word in words else len(words)
    start = at - 1  # the KEY=VALUE the word continues: its value left open (a [ not closed, a trailing comma)
    while start >= 0 and "=" not in words[start]:
        start -= 1
    if start >= 0:
        key, _, value = words[start].partition("=")
        joined = value
        for more in words[start + 1:]:  # the following bare words, until the value closes
            if "=" in more or not (joined.rstrip().endswith(",") or joined.count("[") > joined.count("]")):
                break
            joined += f" {more}"
        if joined != value:
            # unquoted names: quote them too
            unquoted = isinstance(_literal(joined), str) and key in ("method", "backbone")
            example = quoted_names(joined) if unquoted else joined
            return f"; the shell split {key}={joined} at its spaces: quote it, e.g. '{key}={example}'"
    given = dict(w.split("=", 1) for w in words if "=" in w)
    for key, names in (("method", registry.methods()), ("backbone", registry.backbones())):
        if word in names:
            before = given.get(key)
            listed = [before, word] if isinstance(before, str) and before in names and before != word else [word]
            example = json.dumps(listed, separators=(",", ":"))
            return f"; {word!r} is a {key}: several are a list, e.g. '{key}={example}' (names quoted, no spaces)"
    return ""


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


def _literal(text: str) -> Any:
    """A `with` value: a Python literal (10, [0, 1], 'a', None), else the text itself (dataset=cifar10)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text


def _config_updates(ex: Experiment, updates: Iterable[str] | None) -> tuple[dict[str, Any], list[str]]:
    """(config updates, named configs) of the `with` arguments, as Sacred's get_config_updates reads them but
    never further: Sacred hands each value to jsonpickle, which calls any function a value names
    ({"py/reduce": ...}), and reads a named config that is a file's path with pickle, jsonpickle or YAML. Here a
    value is a literal or its text, and a named config one the script declares (declared_named_configs)."""
    config_updates: dict[str, Any] = {}
    named: list[str] = []
    for update in updates or ():
        path, sep, value = update.partition("=")
        if sep:
            set_by_dotted_path(config_updates, path.strip(), _literal(value.strip()))
        elif update:
            named.append(update)
    try:
        return config_updates, declared_named_configs(ex, named)
    except NamedConfigNotFoundError as err:
        err.words = list(updates or ())  # type: ignore[attr-defined]  # for its line (_split_value_hint)
        raise


def _parse(ex: Experiment, argv: list[str]) -> tuple[str, dict[str, Any], list[str], dict[str, Any]]:
    """(command, config updates, named configs, Sacred options for the driver) from a command line, with the
    honoured flags mapped to the suite and the others refused (tracking.UserError, one line)."""
    _, usage, internal_usage = ex.get_usage()
    try:
        args = docopt(internal_usage, [str(a) for a in argv[1:]], default_help=False)
    except DocoptExit:
        given = [str(a) for a in argv[1:]]
        after_with = given[given.index("with") + 1:] if "with" in given else []
        # a config key written as a flag (--epochs 2), not one of Sacred's flags (--comment is both)
        keys = set(_config_keys(ex)) - {o.get_flag()[2:] for o in ex.all_cli_options}
        dashed = next((a for a in after_with if a.startswith("--") and a[2:].split("=")[0] in keys), None)
        hint = (f"; after `with` a value is KEY=VALUE: {dashed[2:].split('=')[0]}=... instead of {dashed}"
                if dashed else "")
        raise tracking.UserError(f"the command line is not understood: expected `{Path(argv[0]).name} [COMMAND] "
                                 f"[FLAGS] [with KEY=VALUE ...]`; flags: {SUPPORTED}; see --help{hint}") from None
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
        named = f"; {command!r} is a named config: `with {command}`" if command in ex.named_configs else ""
        raise tracking.UserError(f"command {command!r} is unknown: {problem.split('Available commands are: ')[-1]}"
                                 f" are the commands{named}")
    config_updates, named_configs = _config_updates(ex, args["UPDATE"])
    if args["--file_storage"] is not None:  # -F '' too: results_dir's check refuses it (never ./results instead)
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
    if args["--loglevel"] is not None:
        _check_loglevel(ex, args["--loglevel"])
    options = {"--unobserved": True}  # the driver records nothing; each run records itself
    for flag in ("--comment", "--name", "--print-config", "--loglevel", "--debug"):
        if args[flag]:
            options[flag] = args[flag]
    return command, config_updates, named_configs, options


def _check_loglevel(ex: Experiment, level: str) -> None:
    """-l LEVEL as Sacred sets it on the driver's logger (an integer, else a level name of `logging`); anything
    else would be logging's traceback once Sacred starts."""
    names = sorted(logging.getLevelNamesMapping())
    try:
        number = int(level)
    except ValueError:
        if level in names:
            return
    else:
        if 0 <= number <= logging.CRITICAL:
            return
    raise tracking.UserError(f"flag {_flag_name(ex, '--loglevel')} {level!r} is invalid: must be one of "
                             f"{', '.join(names)} or a number from 0 to {logging.CRITICAL}"
                             f"{did_you_mean(level.upper(), names)}")


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
    try:
        outcome = tracking.lead_or_follow(lambda: _run_cli(ex, argv), exit_code=lambda o: o[0])
    except EnvError as err:  # where this process sits in a job is unclear: nothing was started
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C: not a crash (the record and the checkpoint say where the run stopped)
        print("\ninterrupted (Ctrl-C): a run in progress is recorded INTERRUPTED and keeps the checkpoint of its last "
              "completed epoch; the same command resumes it (SIGTERM stops at the next step instead)",
              file=sys.stderr)
        sys.exit(130)
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
        line = str(err) if isinstance(err, (ConfigError, tracking.UserError)) else sacred_error_line(
            ex, err, config_updates)
        print(tracking.redact("error: " + " ".join(line.split())), file=sys.stderr)
        return 2, None
    report = getattr(run, "result", None)
    if isinstance(report, tracking.GridReport):
        return report.exit_code, report.stop_signal
    return 0, None
