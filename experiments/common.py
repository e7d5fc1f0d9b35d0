"""The one definition of the experiment config and the grid driver that every table and ablation script shares.

Owns: the Sacred config scope (the schema's keys, named configs `quick` and `smoke`, the recipe hook), grid expansion
(`expand`, `axis`, `check_dataset`, `pcl_ablation_grid`), the driver experiment (`make_experiment`: its main, `plan`
and `print_config` commands) and its Python entry point (`run_script`). The command line is experiments/cli.py; the
text `plan` prints is experiments/plan_text.py.

A script defines its grid (a function: config -> list of cells, each a dict of run-config overrides with a
`label`) and calls `make_experiment`. The resulting Sacred experiment is a *driver*: it takes the config
(`with KEY=VALUE`, named configs `quick` and `smoke`), expands the grid over `seeds`, validates every run config, then
trains each as a separate Sacred run with its own record (pcl.tracking.run_grid). The driver run itself is
unobserved: it records nothing.

Commands of every script:

    python experiments/SCRIPT.py [with KEY=VALUE ...]          # run the grid (COMPLETED run_keys are skipped)
    python experiments/SCRIPT.py plan [with ...]               # list the runs and their run_keys, train nothing
    python experiments/SCRIPT.py print_config [with ...]       # Sacred's config view

Config keys: every key of pcl.schema.KEYS (the run keys plus the driver's `seeds`, `results_dir`, `mongo_url` (or
$PCL_MONGO_URL) and `db_name`). `method` and `backbone` may be a name, a list (`'method=["pcl","dml"]'`)
or None (the script's whole axis). `options` is merged over each method's defaults; in a grid of several methods an
option applies to the methods that have it.
"""
from __future__ import annotations

import copy
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from sacred import Experiment
from sacred.commands import print_config as sacred_print_config

import pcl

from experiments.grid_table import print_table
from experiments.registry import declared_named_configs
from experiments.plan_text import _format_method_options, _format_plan, _plan_summary
from pcl import schema, tracking
from pcl import registry
from pcl.config_checks import did_you_mean
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


def check_seed(config: Mapping[str, Any], command_name: str, logger: Any) -> dict[str, Any]:
    """Sacred config hook: a driver has no `seed` of its own (each run's comes from `seeds`). Checked in a hook
    because Sacred seeds its own generator with it right after the hooks (a traceback for -1, 2**32 or 'a')."""
    _check_seed(config.get("seed", 0))
    return {}


def _check_seed(value: Any) -> None:
    if type(value) is int and value == 0:
        return
    try:
        schema.KEYS["seed"].check(value)
    except ConfigError:
        raise ConfigError(f"config key 'seed'={value!r} is invalid: run seeds are set with seeds=[...], each "
                          f"{schema.KEYS['seed'].type}") from None
    raise ConfigError(f"config key 'seed'={value!r}: run seeds are set with seeds=[...] (e.g. seeds=[{value}])")


def quoted_names(text: str) -> str:
    """`[pcl, dml]` or `pcl,dml` (names Sacred keeps as one string) as the list to write: `["pcl","dml"]`; "" when
    it names nothing."""
    names = [n.strip().strip("'\"") for n in text.strip().strip("[]").split(",") if n.strip()]
    return json.dumps(names, separators=(",", ":")) if names else ""


def check_quoted_list(value: Any, key: str) -> None:
    """Sacred keeps `method=[pcl,dml]` (unquoted names are no Python literal) and `method=pcl,dml` as one string:
    ConfigError saying how to write the list."""
    text = value.strip() if isinstance(value, str) else ""
    example = quoted_names(text)
    if example and ((text.startswith("[") and text.endswith("]")) or "," in text):  # `method=,`: the usual error
        raise ConfigError(f"config key {key!r}={value!r} is invalid: a list's names are quoted, e.g. "
                          f"'{key}={example}' (in single quotes for the shell)")


def axis(value: Any, everything: Sequence[str], key: str) -> list[str]:
    """A grid axis from config key `key`'s value: None -> the script's whole axis, a name -> [name], a list -> the
    list; ConfigError naming the key otherwise."""
    if value is None:
        return list(everything)
    check_quoted_list(value, key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"config key {key!r}={value!r} is invalid: a grid axis is a name, a non-empty list of names "
                      "or None (the script's whole axis)")


def check_dataset(cfg: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Scripts reproduce results on given datasets; `synthetic` is always allowed (smoke runs)."""
    if cfg["dataset"] not in (*allowed, "synthetic"):
        raise ConfigError(f"config key 'dataset'={cfg['dataset']!r} is invalid for this script: must be one of "
                          f"{', '.join((*allowed, 'synthetic'))}{did_you_mean(cfg['dataset'], (*allowed, 'synthetic'))}")


def pcl_ablation_grid(cfg: Mapping[str, Any], variants: Mapping[str, Cell]) -> list[Cell]:
    """The grid of a PCL ablation: every variant (label -> cell overrides) on CIFAR, ResNet-32 unless `backbone`.
    Its runs are PCL's: another `method` is refused (it would silently train PCL)."""
    check_dataset(cfg, ("cifar10", "cifar100"))
    check_quoted_list(cfg.get("method"), "method")
    if cfg.get("method") not in ("pcl", ["pcl"], None):
        raise ConfigError(f"config key 'method'={cfg.get('method')!r} is invalid here: this ablation varies PCL's "
                          "components, so its method is pcl (compare methods with experiments/table2.py)")
    return [{"label": f"{name}/{backbone}", "method": "pcl", "backbone": backbone, **copy.deepcopy(dict(cell))}
            for backbone in axis(cfg["backbone"], ("resnet32",), "backbone") for name, cell in variants.items()]


def _check_driver(cfg: Mapping[str, Any]) -> None:
    _check_seed(cfg.get("seed", 0))
    for key in schema.DRIVER_KEYS:
        schema.KEYS[key].check(cfg.get(key))
    if not isinstance(cfg.get("options"), Mapping):
        raise ConfigError(f"config key 'options'={cfg.get('options')!r} is invalid: must be a dict")


def _check_unvaried(cfg: Mapping[str, Any], cells: Sequence[Cell], defaults: Mapping[str, Any],
                    set_with: Mapping[str, str]) -> None:
    """A key the grid's cells set (peers in the peers ablation; the teacher's run_key of a cell with a teacher)
    cannot be set in the config too: the cell's value would silently win. Set means: not what the script's scope
    gives it (its default, or the dataset's recipe); `set_with` names the script's key that sets it instead."""
    recipe = schema.dataset_defaults(cfg["dataset"], cfg.get("epochs") if type(cfg.get("epochs")) is int else None) \
        if cfg.get("dataset") in schema.DATASETS else {}
    user_options = cfg.get("options") if isinstance(cfg.get("options"), Mapping) else {}
    for cell in cells:
        varied = [k for k in cell if k in RUN_KEYS and k not in ("label", "method", "backbone", "options")]
        varied += ["teacher_run_key"] if cell.get("teacher") else []
        for key in varied:
            untouched = defaults.get(key)
            untouched = recipe.get(key) if untouched is None and key in recipe else untouched
            if key in cfg and cfg[key] != untouched:
                instead = f"; set {set_with[key]} instead" if key in set_with else ""
                what = "sets it to its teacher's run" if key == "teacher_run_key" else "varies it"
                raise ConfigError(f"config key {key!r}={cfg[key]!r}: this grid {what} (cell "
                                  f"{cell.get('label', '')!r}), it cannot be set{instead}")
        for key in sorted(set(cell.get("options") or {}) & set(user_options)):
            instead = f"; set {set_with['options.' + key]} instead" if "options." + key in set_with else ""
            raise ConfigError(f"config key 'options.{key}'={user_options[key]!r}: this grid varies it (cell "
                              f"{cell.get('label', '')!r}), it cannot be set{instead}")


def expand(name: str, grid: GridFn, config: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None,
           set_with: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The script's grid crossed with `seeds` (seed-major: every cell of seed 0 first), each a validated run config.
    `defaults`: the script's scope before any update (default: the shared one), so that a key the grid varies and
    the config sets too is refused; `set_with`: the script's keys that set such a key instead.

    Raises ConfigError naming the key for any invalid value, before anything runs.
    """
    cfg = plain(config)
    _check_driver(cfg)
    seeds = schema.KEYS["seeds"].check(cfg["seeds"])
    cells = [dict(c) for c in grid(cfg)]
    if not cells:
        raise ConfigError(f"the grid of {name} is empty for this config")
    _check_unvaried(cfg, cells, scope_defaults() if defaults is None else defaults, set_with or {})
    user_options = dict(cfg["options"])
    if "peers" in user_options:
        raise ConfigError("config key 'options.peers': set the top-level key peers=N instead")
    methods = {c.get("method", cfg.get("method")) for c in cells}
    methods |= {c["teacher"]["method"] for c in cells if c.get("teacher")}
    unknown = sorted(m for m in methods if m not in registry.methods())
    if unknown:
        raise ConfigError(f"config key 'method': unknown method(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(registry.methods()))}{did_you_mean(unknown, registry.methods())}")
    orphans = sorted(k for k in user_options if not any(k in _defaults(m) for m in methods))
    if orphans:
        valid = sorted({k for m in methods for k in _defaults(m)})
        hint = did_you_mean(orphans, valid, show="options.{}".format)
        raise ConfigError(f"config key(s) {', '.join(f'options.{k}' for k in orphans)}: not an option of any method "
                          f"of this grid ({', '.join(sorted(methods))}); valid: "
                          f"{', '.join(valid) or '(none: these methods take no options)'}{hint}")
    base = {k: cfg[k] for k in RUN_KEYS if k in cfg and k not in ("options", "method", "backbone", "run_key")}
    base["experiment"] = name
    runs = []
    first: list[dict[str, Any]] = []  # each cell validated once, with the first seed
    for seed in seeds:
        for i, cell in enumerate(cells):
            if i >= len(first):
                first.append(_cell_config(base, cell, user_options, seed))
                runs.append(first[i])
            elif cell.get("teacher"):  # the teacher's run_key has the seed too: validated again
                runs.append(_cell_config(base, cell, user_options, seed))
            else:
                runs.append(_reseeded(first[i], seed))
    for key, value in user_options.items():  # given, but every run that has it takes the value it has unset
        having = [r for r in first if key in r["options"]]
        idle = [schema.without_effect(r["method"], r["options"]).get(key) for r in having]
        if having and all(idle) and all(r["options"][key] != value for r in having):
            raise ConfigError(f"config key 'options.{key}'={value!r} has no effect in any run of this grid: {idle[0]}")
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
    # the run resolves these options from teacher_run_key (pcl.tracking.run): a value given too would be replaced
    both = sorted(k for k in schema.infra_options(run) if options.get(k) is not None)
    if both:
        raise ConfigError(f"config key 'options.{both[0]}'={options[both[0]]!r} conflicts with teacher_run_key="
                          f"{run['teacher_run_key']!r} (cell {cell.get('label', '')!r}): the teacher is that run's "
                          "deployed model; give the teacher once, by teacher_run_key or by the file")
    out = tracking.normalize_run_config(run)
    _check_cell_effect(cell.get("label", ""), method, cell_options, user_options, out["options"])
    return out


def _check_cell_effect(label: str, method: str, cell_options: Mapping[str, Any], user_options: Mapping[str, Any],
                       options: Mapping[str, Any]) -> None:
    """An option the cell varies, left without effect by the others (pcl.schema gave it the value it has unset): the
    grid's cells would be one run; say which given key switched off what the grid varies."""
    idle = schema.without_effect(method, options)
    for key in sorted(k for k in cell_options if k in idle and options[k] != cell_options[k]):
        given = [k for condition in schema.acts_only_with(method)[key] for k in condition if k in user_options]
        who = (f"config key(s) {', '.join(f'options.{k}={user_options[k]!r}' for k in dict.fromkeys(given))}: "
               if given else "")
        raise ConfigError(f"{who}cell {label!r} of this grid varies options.{key}={cell_options[key]!r}, which has "
                          f"no effect then ({idle[key]}): its cells would be the same run")


_SCALARS = (str, int, float, bool, type(None))


def _plain_copy(value: Any) -> Any:
    """A copy of a run config's value (JSON-like: dicts, lists, scalars); copy.deepcopy's memo costs more."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k: _plain_copy(v) for k, v in value.items()}
    if kind is list:
        return [_plain_copy(v) for v in value]
    return copy.deepcopy(value)


def _reseeded(run: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """A validated run config (of a cell without a teacher) with another seed: nothing but the seed and the run_key
    depends on it, so the checks are not repeated (tests/test_experiments.py checks this equals validating each
    run)."""
    out = {k: _plain_copy(v) for k, v in run.items()}  # each run its own lists and dicts
    out["seed"] = schema.KEYS["seed"].check(seed)
    out["run_key"] = schema.run_key(out)
    return out


class Plan(list):
    """The run configs of a grid; its str is short because Sacred logs a command's result."""

    def __str__(self) -> str:
        return f"{len(self)} run(s)"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def package_sources() -> list[str]:
    """Every source file of the pcl package and of the drivers (experiments/, ablations/): Sacred archives them
    with each run, so a record holds the code that produced it."""
    package = Path(pcl.__file__).resolve().parent
    files = sorted(package.rglob("*.py"))
    for folder in ("experiments", "ablations"):
        files += sorted((ROOT / folder).glob("*.py"))
    return [str(f) for f in files if "__pycache__" not in f.parts]


def _checking_own_keys(grid: GridFn, defaults: Mapping[str, Any]) -> GridFn:
    """`grid`, after a check of the script's own keys (those not in the schema, e.g. teacher_backbone): each of
    the type of its default (a text without NUL), so that a list or a number given for one is its one line."""
    own = {k: v for k, v in defaults.items() if k not in schema.KEYS and v is not None}

    def checked(cfg: Mapping[str, Any]) -> Any:
        for key, default in own.items():
            value = cfg.get(key)
            if type(value) is not type(default) or (isinstance(value, str) and "\x00" in value):
                raise ConfigError(f"config key {key!r}={value!r} is invalid: must be a {type(default).__name__} "
                                  f"like its default {default!r}")
        return grid(cfg)
    return checked


def make_experiment(name: str, grid: GridFn, *, doc: str | None = None, script: str | None = None,
                    defaults: Mapping[str, Any] | None = None, smoke: Mapping[str, Any] | None = None,
                    quick: Mapping[str, Any] | None = None, set_with: Mapping[str, str] | None = None) -> Experiment:
    """The driver experiment of one script: shared config + named configs `quick`/`smoke` + the script's grid.

    `defaults` sets the script's own defaults of dataset/backbone/method and adds its own keys (e.g.
    teacher_backbone); `smoke`/`quick` extend the shared named configs with values for those keys; `set_with`
    names, for a run key the grid varies, the script's key that sets it (peers -> peer_counts=[...]).
    """
    grid = _checking_own_keys(grid, defaults or {})
    scope = {**scope_defaults(), **dict(defaults or {})}

    def expand_grid(config: Mapping[str, Any]) -> list[dict[str, Any]]:
        return expand(name, grid, config, defaults=scope, set_with=set_with)

    ex = Experiment(name, base_dir=str(ROOT), save_git_info=False)  # the driver: never observed
    ex.logger = _driver_logger(name)
    if doc:
        ex.doc = doc
    ex.add_config(scope)
    ex.config_hook(resolve_recipe)
    ex.config_hook(check_seed)
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
        runs = expand_grid(cfg)
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
        runs = Plan(expand_grid(config))
        print(_format_plan(runs))
        print(_plan_summary(runs, config))
        return runs

    def print_config(_run, _config):
        """Print the resolved config, then every method's resolved options for it (no training, no record); a
        config that is invalid is shown, then its error (ConfigError: one line, exit 2 on the command line)."""
        if sys.stdout.isatty():
            sacred_print_config(_run)
        else:  # no colour codes in a log file
            print(_ANSI.sub("", _capture(sacred_print_config, _run)))
        sys.stdout.flush()  # the config before the error line
        print(_format_method_options(expand_grid(plain(_config))))

    def plan_for_config(config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The validated run configs of this script's grid for a resolved config (the driver's `_config`)."""
        return expand_grid(config)

    ex.main(main)
    ex.command(plan, unobserved=True)
    ex.command(print_config, unobserved=True)
    ex.grid = grid
    ex.plan_for_config = plan_for_config  # experiments.registry reads every plan through it
    return ex


def run_script(ex: Experiment, config_updates: Mapping[str, Any] | None = None,
               named_configs: Sequence[str] = (), command: str | None = None) -> Any:
    """The Python equivalent of the command line: the grid's GridReport (or `plan`'s list of run configs)."""
    return ex.run(command, config_updates=dict(config_updates or {}),
                  named_configs=declared_named_configs(ex, named_configs), options={"--unobserved": True}).result


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


def _defaults(method: str) -> dict[str, Any]:
    """A method's declared option defaults (pcl.registry: no torch)."""
    return registry.method(method).defaults
