"""Cluster options of the launcher: defaults, a TOML profile, command-line flags, per-backbone/dataset overrides.

A profile (slurm/profiles/*.toml) holds top-level keys (the fields of `ClusterOptions`) and optional tables
`[backbone.NAME]` / `[dataset.NAME]` whose keys override the resources of runs on that backbone or dataset (a
WRN-20-8 or ImageNet run asks for more time than ResNet-32). Flags given on the command line win over the profile.
Every unknown key or wrong type is a `OptionsError` naming the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

EXECUTORS = ("slurm", "local", "debug")
_PROFILE_BYTES = 1 << 20
#: resource keys a [backbone.NAME] / [dataset.NAME] table may override
RESOURCE_KEYS = ("gpus_per_task", "cpus_per_task", "mem", "time", "constraint", "partition", "qos")


class OptionsError(ValueError):
    """A cluster option or profile the user fixes; its message names the key, the value and what is allowed."""


@dataclass
class ClusterOptions:
    """Where and how the runs are submitted. `time` is the job's wall-clock limit as SLURM writes it
    (minutes, "HH:MM:SS" or "D-HH:MM:SS"); `mem` per job ("16G", "4000M"); `gpus_per_task` 0 asks for no GPU."""

    executor: str = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_task: int = 1
    cpus_per_task: int = 4
    mem: str | None = "16G"
    time: str = "24:00:00"
    constraint: str | None = None
    sbatch_lines: list[str] = field(default_factory=list)  # extra "#SBATCH" options: "--exclusive", "--mail-type=END"
    setup: list[str] = field(default_factory=list)  # shell lines before the job: module load, conda activate
    log_folder: str = "logs/slurm"
    array_parallelism: int = 64  # array tasks of one submission that run at the same time
    max_attempts: int = 3  # a run_key with this many FAILED records is not started again
    max_timeouts: int = 20  # requeues after the time limit (submitit's max_num_timeout); preemptions are unlimited
    signal_delay_s: int = 120  # SLURM signals USR2 this long before the time limit: checkpoint, requeue
    runs_per_gpu: int = 1
    teacher_wait_s: int = 3600  # a two-stage student whose teacher is not COMPLETED waits this long, then fails
    backbone: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resources_for(self, run: Mapping[str, Any]) -> dict[str, Any]:
        """The resource options of one run config: the defaults, then its dataset's, then its backbone's table;
        `tasks` is the run's number of data-parallel processes (config key `gpus`): one task each, with
        gpus_per_task and cpus_per_task per task."""
        out = {k: getattr(self, k) for k in RESOURCE_KEYS}
        out.update(self.dataset.get(run.get("dataset"), {}))
        out.update(self.backbone.get(run.get("backbone"), {}))
        out["tasks"] = int(run.get("gpus") or 1)
        return out

    def time_minutes(self, value: str | None = None) -> int:
        """The time limit in minutes (submitit's unit), rounded up."""
        return parse_time(self.time if value is None else value, "time")


_TYPES: dict[str, tuple[type, ...]] = {
    "executor": (str,), "partition": (str, type(None)), "account": (str, type(None)), "qos": (str, type(None)),
    "gpus_per_task": (int,), "cpus_per_task": (int,), "mem": (str, type(None)), "time": (str, int),
    "constraint": (str, type(None)), "sbatch_lines": (list,), "setup": (list,), "log_folder": (str,),
    "array_parallelism": (int,), "max_attempts": (int,), "max_timeouts": (int,), "signal_delay_s": (int,),
    "runs_per_gpu": (int,), "teacher_wait_s": (int,), "backbone": (dict,), "dataset": (dict,),
}
_MINIMUM = {"gpus_per_task": 0, "cpus_per_task": 1, "array_parallelism": 1, "max_attempts": 1, "max_timeouts": 0,
            "signal_delay_s": 0, "runs_per_gpu": 1, "teacher_wait_s": 0}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^\d+[KMGT]?$")
#: what a SLURM name (partition, account, qos) or a constraint expression may hold: these values are written into
#: the job script's #SBATCH lines, where a newline would start a shell line of its own
_NAMES = {"partition": re.compile(r"[A-Za-z0-9_.,-]+"), "account": re.compile(r"[A-Za-z0-9_.-]+"),
          "qos": re.compile(r"[A-Za-z0-9_.,-]+"), "constraint": re.compile(r"[A-Za-z0-9_.,|&:!()\[\]*-]+")}


def parse_time(value: Any, key: str = "time") -> int:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or an int of minutes) -> minutes >= 1."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise OptionsError(f"option {key!r}={value!r} is invalid: must be >= 1 minute")
        return value
    match = _TIME.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise OptionsError(f"option {key!r}={value!r} is invalid: must be minutes or SLURM's HH:MM:SS / "
                           "D-HH:MM:SS")
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
        total = int(days) * 1440 + hours * 60 + minutes + seconds / 60
    elif len(parts) == 3:
        total = parts[0] * 60 + parts[1] + parts[2] / 60
    elif len(parts) == 2:
        total = parts[0] + parts[1] / 60
    else:
        total = parts[0]
    minutes_up = int(-(-total // 1))
    if minutes_up < 1:
        raise OptionsError(f"option {key!r}={value!r} is invalid: must be at least one minute")
    return minutes_up


def _check(key: str, value: Any, where: str) -> Any:
    allowed = _TYPES[key]
    if isinstance(value, bool) or not isinstance(value, allowed):
        names = " or ".join("none" if t is type(None) else t.__name__ for t in allowed)
        raise OptionsError(f"{where}: key {key!r}={value!r} has the wrong type: must be {names}")
    if key in _MINIMUM and value < _MINIMUM[key]:
        raise OptionsError(f"{where}: key {key!r}={value!r} is invalid: must be an integer >= {_MINIMUM[key]}")
    if key == "executor" and value not in EXECUTORS:
        raise OptionsError(f"{where}: key 'executor'={value!r} is invalid: must be one of {', '.join(EXECUTORS)}")
    if key == "time":
        parse_time(value, key)
        return str(value)
    if key in _NAMES and value is not None and not _NAMES[key].fullmatch(value):
        raise OptionsError(f"{where}: key {key!r}={value!r} is invalid: must be SLURM's {key} (letters, digits and "
                           f"{'_ . , | & : ! ( ) [ ] * -' if key == 'constraint' else '_ . , -'}; no spaces or "
                           "line breaks)")
    if key == "log_folder" and any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise OptionsError(f"{where}: key 'log_folder'={value!r} is invalid: a path without control characters")
    if key == "mem" and value is not None and not _MEM.match(value):
        raise OptionsError(f"{where}: key 'mem'={value!r} is invalid: must be SLURM's memory, e.g. 16G or 4000M")
    if key in ("sbatch_lines", "setup") and not all(isinstance(v, str) for v in value):
        raise OptionsError(f"{where}: key {key!r}={value!r} is invalid: must be a list of strings")
    if key == "sbatch_lines":
        for line in value:
            if not re.fullmatch(r"--[a-z][a-z0-9-]*(=[^\x00-\x1f\x7f]+)?", line):
                raise OptionsError(f"{where}: sbatch_lines entry {line!r} is invalid: must look like --option or "
                                   "--option=value (what follows #SBATCH)")
    if key in ("backbone", "dataset"):
        return {name: _check_resources(f"{where} [{key}.{name}]", table) for name, table in value.items()}
    return value


def _check_resources(where: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise OptionsError(f"{where}: must be a table of resource keys ({', '.join(RESOURCE_KEYS)})")
    unknown = sorted(set(table) - set(RESOURCE_KEYS))
    if unknown:
        raise OptionsError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(RESOURCE_KEYS)}")
    return {k: _check(k, v, where) for k, v in table.items()}


def from_mapping(values: Mapping[str, Any], where: str = "options",
                 base: ClusterOptions | None = None) -> ClusterOptions:
    """`base` (default: the defaults) updated with `values`; OptionsError naming any bad key."""
    names = [f.name for f in dataclasses.fields(ClusterOptions)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise OptionsError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(names)}")
    checked = {k: _check(k, v, where) for k, v in values.items()}
    options = dataclasses.replace(base or ClusterOptions(), **checked)
    _check_backbones(options, where)
    return options


def _check_backbones(options: ClusterOptions, where: str) -> None:
    from pcl import registry
    from pcl.schema import DATASETS

    for kind, known in (("backbone", registry.backbones()), ("dataset", DATASETS)):
        for name in getattr(options, kind):
            if name not in known:
                raise OptionsError(f"{where}: [{kind}.{name}] names an unknown {kind}; known: "
                                   f"{', '.join(sorted(known))}")


def load_profile(path: str | Path, base: ClusterOptions | None = None) -> ClusterOptions:
    """The options of a TOML profile; OptionsError (one line) for a missing file, bad TOML or a bad key."""
    path = Path(path)
    try:  # a regular file of at most 1 MiB (a FIFO would block the launcher), UTF-8 as TOML is
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise OptionsError(f"profile {str(path)!r} is not a regular file")
            data = f.read(_PROFILE_BYTES + 1)
        if len(data) > _PROFILE_BYTES:
            raise OptionsError(f"profile {str(path)!r} is bigger than {_PROFILE_BYTES} bytes")
        text = data.decode("utf-8")
    except OSError as err:
        # as paths from here: a path relative to the repository would fail again from another folder
        shipped = sorted(os.path.relpath(p) for p in (Path(__file__).resolve().parent / "profiles").glob("*.toml"))
        hint = f" (the shipped profiles: {', '.join(shipped)})" if isinstance(err, FileNotFoundError) else ""
        raise OptionsError(f"profile {str(path)!r} cannot be read: {err.strerror or err}{hint}") from None
    except UnicodeDecodeError as err:
        raise OptionsError(f"profile {str(path)!r} is not UTF-8 text (byte {err.start})") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise OptionsError(f"profile {str(path)!r} is not valid TOML: {err}") from None
    return from_mapping(values, where=f"profile {path}", base=base)
