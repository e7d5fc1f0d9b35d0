"""The launcher's plan: which runs the selection means (from experiments.registry), where each stands (completed /
queued / alive / failed / to submit) and what the rest costs in GPU-hours (bench/epoch_times.csv).

No torch-free promise here: planning validates every run config with pcl.tracking, which imports torch.
"""
from __future__ import annotations

import ast
import datetime as dt
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from experiments import registry
from pcl import registry as declared  # the methods and backbones as declared (their costs)
from pcl.config_checks import did_you_mean
from pcl.schema import planned_fast_path

ROOT = Path(__file__).resolve().parents[1]
EPOCH_TIMES = ROOT / "bench" / "epoch_times.csv"
#: datasets a selection sweeps when neither --datasets nor a `dataset` override/named config is given
DEFAULT_DATASETS = ("cifar10", "cifar100", "imagenet")
#: images in one training epoch of each dataset (train split)
EPOCH_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}
#: per-epoch evaluation + checkpoint on top of the training steps [ours: the baseline's sanity run on the H100,
#: 4.4 s per epoch with evaluation vs 3.6 s of training steps, bench/RESULTS.md]
EVAL_OVERHEAD = 1.2
#: keys that never go through --set
FORBIDDEN_SET = {"mongo_url": "the MongoDB URL goes only through $PCL_MONGO_URL in the environment",
                 "results_dir": "use --results-dir", "db_name": "use --db-name"}
STATUSES = ("completed", "queued", "alive", "failed", "refused", "to submit")


class SelectionError(ValueError):
    """A selection flag names something that does not exist; the message names the value and what exists."""


@dataclass
class Planned:
    """One run of the plan: its validated run config, the tables that need it, its status and the reason."""

    cfg: dict[str, Any]
    tables: list[str]
    status: str = "to submit"
    detail: str = ""
    gpu_hours: float = 0.0
    estimate: str = ""
    path: str = ""  # the training path its cost assumes (graph or eager: estimate)

    @property
    def run_key(self) -> str:
        return self.cfg["run_key"]


def parse_value(text: str) -> Any:
    """A --set value as Sacred's `with` reads it: JSON, else a Python literal, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """KEY=VALUE items -> nested config updates (dotted keys nest: options.beta=2 -> {"options": {"beta": 2}})."""
    updates: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SelectionError(f"--set {item!r} is invalid: must be KEY=VALUE (e.g. --set epochs=10)")
        if key in FORBIDDEN_SET:
            raise SelectionError(f"--set {key}=... is not allowed: {FORBIDDEN_SET[key]}")
        target = updates
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SelectionError(f"--set {item!r} conflicts with an earlier --set of {part!r}")
        target[last] = parse_value(value)
    return updates


def split_list(value: str | None, flag: str, known: Iterable[str] | None = None) -> list[str] | None:
    """A comma-separated flag value; SelectionError naming an unknown item and the known ones."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise SelectionError(f"{flag} {value!r} is empty: give a comma-separated list")
    if known is not None:
        known = list(known)
        for item in items:
            if item not in known:
                raise SelectionError(f"{flag} {item!r} is unknown; known: {', '.join(known)}"
                                     f"{did_you_mean(item, known)}")
    return items


@dataclass
class Selection:
    """What to launch: tables (registry names), dataset sweep, filters on backbone/method, seeds, overrides."""

    tables: list[str] = field(default_factory=lambda: list(registry.SCRIPTS))
    datasets: list[str] | None = None
    backbones: list[str] | None = None
    methods: list[str] | None = None
    seeds: list[int] | None = None
    updates: dict[str, Any] = field(default_factory=dict)
    named: list[str] = field(default_factory=list)

    def dataset_sweep(self) -> list[str | None]:
        """Datasets to plan each table for (None: the table's own, from its config/named configs)."""
        if self.datasets is not None:
            return list(self.datasets)
        if "dataset" in self.updates or self.named:
            return [None]
        return list(DEFAULT_DATASETS)


def _is_dataset_refusal(err: Exception) -> bool:
    return str(err).startswith("config key 'dataset'=")


def build_plan(selection: Selection) -> list[Planned]:
    """Every run of the selection once (a run_key two tables need is listed once, with both tables), teachers of
    selected two-stage students included; relative checkpoint_root/data_root made absolute (jobs run elsewhere;
    infrastructure keys never change a run_key).

    Raises SelectionError when a table/dataset/override is refused by every selected script, or nothing remains.
    """
    from pcl.tracking import ConfigError

    by_key: dict[str, Planned] = {}
    planned_any: dict[str, list[dict[str, Any]]] = {}
    refused: list[str] = []
    for table in selection.tables:
        for dataset in selection.dataset_sweep():
            updates = dict(selection.updates)
            if dataset is not None:
                updates["dataset"] = dataset
            if selection.seeds is not None:
                updates["seeds"] = list(selection.seeds)
            try:
                runs = registry.plan(table, updates, selection.named)
            except ConfigError as err:
                if dataset is not None and _is_dataset_refusal(err) and selection.datasets is None:
                    continue  # this table does not run on this dataset (e.g. ImageNet in table2)
                if dataset is not None and _is_dataset_refusal(err):
                    refused.append(f"{table}: {err}")
                    continue
                raise SelectionError(f"table {table}: {err}") from None
            except Exception as err:  # Sacred's own checks (unknown named config, bad key): the drivers' line
                from experiments.cli import sacred_error_line

                line = sacred_error_line(registry.experiment(table), err, updates)
                raise SelectionError(f"table {table}: {line}") from None
            planned_any.setdefault(table, []).extend(runs)
    if refused and not planned_any:
        raise SelectionError("no selected table runs on the selected dataset(s): " + "; ".join(refused))
    absolute: dict[str, str] = {}
    for table, runs in planned_any.items():
        plan_keys = {r["run_key"]: r for r in runs}
        chosen = [r for r in runs if _selected(r, selection)]
        for run in list(chosen):  # a selected student pulls in its teacher
            teacher = run.get("teacher_run_key")
            if teacher and teacher in plan_keys and plan_keys[teacher] not in chosen:
                chosen.insert(chosen.index(run), plan_keys[teacher])
        for run in chosen:
            cfg = dict(run)
            for key in ("checkpoint_root", "data_root"):
                if cfg.get(key):
                    if cfg[key] not in absolute:  # a few distinct folders for thousands of runs
                        absolute[cfg[key]] = str(Path(cfg[key]).expanduser().resolve())
                    cfg[key] = absolute[cfg[key]]
            if cfg["run_key"] in by_key:
                by_key[cfg["run_key"]].tables.append(table)
            else:
                by_key[cfg["run_key"]] = Planned(cfg, [table])
    if not by_key:
        planned = {r.get(axis) for runs in planned_any.values() for r in runs for axis in ("method", "backbone")}
        outside = [(key, n) for key, names in (("method", selection.methods), ("backbone", selection.backbones))
                   for n in names or () if n not in planned]
        built_for = "".join(f" ({n} is built for {', '.join(declared.backbone(n).datasets)})" for key, n in outside
                            if key == "backbone" and n in declared.backbones())  # --set on another is refused
        hint = (f"; {', '.join(n for _, n in outside)} {'is' if len(outside) == 1 else 'are'} in no default grid of "
                "the selected tables (--methods/--backbones only filter those grids): name it with --set, e.g. --set "
                f"'{outside[0][0]}=[\"{outside[0][1]}\"]'{built_for}" if outside else "")
        raise SelectionError("the selection matches no run (check --tables, --datasets, --backbones, --methods)"
                             + hint)
    return list(by_key.values())


def _selected(run: Mapping[str, Any], selection: Selection) -> bool:
    return ((selection.backbones is None or run["backbone"] in selection.backbones)
            and (selection.methods is None or run["method"] in selection.methods))


# ---- where each run stands -----------------------------------------------------------------------------------
def _utc(value: Any) -> dt.datetime | None:
    """A record's time (ISO text or a datetime; naive = UTC, as Sacred writes it) as an aware datetime; None when
    it is none (parsed by the standard library first: pandas costs a millisecond per value)."""
    if isinstance(value, dt.datetime):
        stamp: Any = value
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value)
        except ValueError:
            stamp = pd.to_datetime(value, errors="coerce", utc=True)
            return None if pd.isna(stamp) else stamp.to_pydatetime()
    else:
        return None
    return stamp.replace(tzinfo=dt.timezone.utc) if stamp.tzinfo is None else stamp.astimezone(dt.timezone.utc)


@dataclass
class RunState:
    """What the stores say about one run_key: its attempts' records, latest first."""

    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return any(r.get("status") == "COMPLETED" for r in self.records)

    @property
    def failures(self) -> int:
        return sum(r.get("status") == "FAILED" for r in self.records)

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.records[0] if self.records else None

    def heartbeat_age_s(self, now: dt.datetime) -> float | None:
        latest = self.latest
        if latest is None:
            return None
        beat = _utc(latest.get("heartbeat")) or _utc(latest.get("start_time"))
        return None if beat is None else (now - beat).total_seconds()


def record_states(sources: Sequence[Any], run_keys: Iterable[str] | None = None,
                  outside: dict[str, Mapping[str, Any]] | None = None) -> dict[str, RunState]:
    """run_key -> RunState from every record of the stores (one record per attempt, latest first); `outside`, when
    given, gets run_key -> config of the records of other runs."""
    from pcl import results

    wanted = set(run_keys) if run_keys is not None else None
    states: dict[str, RunState] = {}
    for record in results.unique_attempts(list(results.iter_records(sources))):
        key = (record.get("config") or {}).get("run_key")
        if not key or (wanted is not None and key not in wanted):
            if key and outside is not None and isinstance(key, str):
                outside[key] = record.get("config") or {}
            continue
        states.setdefault(key, RunState()).records.append(record)
    for state in states.values():
        state.records.sort(key=lambda r: _utc(r.get("start_time")) or dt.datetime.min.replace(tzinfo=dt.timezone.utc),
                           reverse=True)
    return states


def store_note(planned: Sequence[Planned], states: Mapping[str, RunState], outside: Mapping[str, Mapping[str, Any]],
               store: Any, selection: Selection | None = None) -> str:
    """One line when the store (pcl.tracking.Store) holds no run of the selection: it is empty (named, and a file
    store folder that does not exist said so: a mistyped --results-dir read as nothing done), or its runs are of
    other settings: the shared named config most of them were made with and the flags that show them (a newcomer's
    smoke runs read as nothing done under the paper's plan), or, when the selection has those flags already, the
    config keys the runs differ in. Record values are untrusted: only plain values become shell-quoted flags."""
    if not planned or any(run.run_key in states for run in planned):
        return ""
    if not outside:
        where = store.describe()
        if not Path(store.results_dir).exists():
            folder = f"file store {store.results_dir}"
            where = where.replace(folder, f"{folder}: no such folder", 1)
        return f"Nothing is recorded in the store yet ({where})."
    from experiments.common import QUICK, SMOKE
    from pcl.results import one_line

    made_with: dict[tuple[str, tuple[tuple[str, Any], ...]], list[Mapping[str, Any]]] = {}
    for config in outside.values():
        for name, named in (("smoke", SMOKE), ("quick", QUICK)):
            keys = [k for k in named if k != "seeds"]
            if not isinstance(config, Mapping) or not all(k in config for k in keys):
                continue
            # a few values of its own (`with smoke epochs=2`): the named config with those as --set
            changed = tuple((k, config[k]) for k in keys if config[k] != named[k])
            if len(changed) <= len(keys) // 3 and all(_plain(v) for _, v in changed):
                made_with.setdefault((name, changed), []).append(config)
    head = f"None of these runs is in the store yet; it holds {len(outside)} other run(s)"
    if not made_with:
        return head + ": `python analysis/make_tables.py` shows the plans they belong to."
    groups = sorted(made_with.items(), key=lambda item: (-len(item[1]), len(item[0][1])))
    given_named = selection.named if selection is not None else []
    given_updates = selection.updates if selection is not None else {}

    def made_and_flags(name: str, changed: tuple[tuple[str, Any], ...]) -> tuple[str, list[str]]:
        missing = [(k, v) for k, v in changed if given_updates.get(k, object()) != v]
        flags = ([] if name in given_named else ["--named", name]) + [
            part for k, v in missing for part in ("--set", f"{k}={_as_set_value(v)}")]
        return f"the named config {name}" + "".join(f", {k}={one_line(_as_set_value(v), 40)}" for k, v in changed), \
            flags

    # the largest groups that flags would show (`with smoke` and `with smoke epochs=2`: each has its own flags)
    shown = [(configs, *made_and_flags(name, changed)) for (name, changed), configs in groups]
    shown = [(configs, made, flags) for configs, made, flags in shown if flags]
    if shown:
        (configs, made, flags), *second = shown[:2]
        more = "".join(f"; {len(c)} more made with {m}: add {one_line(shlex.join(f))} to see those"
                       for c, m, f in second)
        rest = max(0, len(outside) - sum(len(c) for c, _, _ in shown[:2]))
        return (f"{head}, {len(configs)} of them made with {made}: add {one_line(shlex.join(flags))} to see them"
                f"{more}{f'; {rest} more of other settings' if rest else ''}.")
    (name, changed), configs = groups[0]
    made, _ = made_and_flags(name, changed)
    # the selection has those flags already: its runs and these differ elsewhere (lr, seeds, options, ...)
    mine = planned[0].cfg
    differ = sorted({k for c in configs for k in set(c) | set(mine)
                     if k not in ("run_key", "label", "experiment") and c.get(k) != mine.get(k)}, key=str)
    return (f"{head}, {len(configs)} of them made with {made} as these, with other values of "
            f"{one_line(', '.join(map(str, differ[:6])), 120)}{' ...' if len(differ) > 6 else ''}: "
            "`python analysis/make_tables.py` shows the plans they belong to.")


def _as_set_value(value: Any) -> str:
    """A plain config value as --set writes it: a name as itself, anything else as its Python literal."""
    return value if isinstance(value, str) and value.isidentifier() else repr(value)


def _plain(value: Any) -> bool:
    """A record's config value that can be given back as --set KEY=VALUE (a literal that reads back the same)."""
    return value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))


def classify(planned: Sequence[Planned], states: Mapping[str, RunState], queued: Mapping[str, Any],
             live_jobs: set[str] | None, ledger: Mapping[str, Mapping[str, Any]], *, stale_after_s: float,
             max_attempts: int, now: dt.datetime | None = None, retry_refused: bool = False) -> None:
    """Set each run's status: completed / queued / alive / failed (max_attempts FAILED records) / refused (its
    last job refused it before it started, e.g. missing data: the ledger's reason; submitted again only with
    `retry_refused`) / to submit.

    A RUNNING record is alive while its heartbeat is younger than `stale_after_s` and its job (ledger) is still
    in the queue; `live_jobs` None (no SLURM: local executor) judges by the heartbeat only. Dead runs are
    submitted again and resume from their checkpoints.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    for run in planned:
        key = run.run_key
        state = states.get(key, RunState())
        job = queued.get(key)
        if state.completed:
            run.status, run.detail = "completed", ""
        elif job is not None:
            run.status = "queued" if job.state == "PENDING" else "alive"
            run.detail = f"job {job.job_id} {job.state}"
        elif state.latest is not None and state.latest.get("status") == "RUNNING" and \
                run_is_alive(state, ledger.get(key, {}), live_jobs, stale_after_s, now):
            run.status, run.detail = "alive", f"RUNNING, heartbeat {state.heartbeat_age_s(now):.0f} s ago"
        elif state.failures >= max_attempts:
            run.status, run.detail = "failed", f"{state.failures} FAILED attempts (max_attempts={max_attempts})"
        elif _refused(ledger.get(key, {}), run.cfg) and not retry_refused:
            run.status, run.detail = "refused", str(ledger[key].get("error") or "")
        else:
            run.status = "to submit"
            latest = state.latest
            run.detail = f"resumes after {latest.get('status')}" if latest is not None else ""


def _refused(entry: Mapping[str, Any], cfg: Mapping[str, Any]) -> bool:
    """The run's last job refused exactly this config (another data_root, device, ... is worth a new try)."""
    from slurm.jobs import refused_config

    return entry.get("state") == "REFUSED" and entry.get("refused_config") in (None, refused_config(cfg))


def run_is_alive(state: RunState, entry: Mapping[str, Any], live_jobs: set[str] | None, stale_after_s: float,
                 now: dt.datetime) -> bool:
    """A RUNNING record whose heartbeat is fresh and whose SLURM job (if the ledger knows it) still exists."""
    age = state.heartbeat_age_s(now)
    if age is None or age > stale_after_s:
        return False
    job_id = entry.get("job_id")
    if live_jobs is not None and job_id and entry.get("executor", "slurm") == "slurm":
        return str(job_id) in live_jobs
    return True


# ---- GPU-hours -----------------------------------------------------------------------------------------------
def load_epoch_times(path: str | Path = EPOCH_TIMES) -> pd.DataFrame:
    """The (backbone, method, path) -> images/s table with its card and source, as bench/throughput.py writes it
    (columns card, backbone, method, path, images_per_s, seconds_per_epoch, source; path is the way a run trains,
    graph or eager, as resolve_fast_path picks it; a file without the column, or a row without a value, is eager; a
    source starting "estimate:" is not measured). Only one card's rows are used, the card with the most rows (ties:
    the last name): the rule's ratios across two cards would mix their speeds.

    Rule for pairs not listed on a run's path [ours]: the method's cost relative to the baseline on resnet32
    (declared `relative_cost` where resnet32 has no row of it), applied to the backbone's baseline row (without one,
    resnet32's baseline row divided by the backbone's declared `relative_cost`), all on that path (on every path's
    rows where it has none). A run on data not held on the device (ImageNet) is costed eager whatever its path: the
    loader bounds it. The estimate adds EVAL_OVERHEAD for the per-epoch evaluation and checkpoint."""
    table = pd.read_csv(path)
    table["path"] = table["path"].fillna("eager") if "path" in table else "eager"
    counts = table["card"].value_counts()
    card = sorted(counts[counts == counts.max()].index)[-1]
    table = table[table["card"] == card]
    return table.drop_duplicates(["backbone", "method", "path"], keep="last").reset_index(drop=True)


def images_per_epoch(cfg: Mapping[str, Any]) -> int:
    """Training images of one epoch of a run config (train_subset, synthetic size, else the split's size)."""
    if cfg.get("train_subset"):
        return int(cfg["train_subset"])
    if cfg["dataset"] == "synthetic":
        return int(cfg.get("synthetic_train_size") or 0)
    return EPOCH_IMAGES[cfg["dataset"]]


def throughput(table: pd.DataFrame, backbone: str, method: str, path: str = "eager") -> tuple[float, str]:
    """(images/s, how it was found) for a pair on a training path (graph or eager), by the rule load_epoch_times
    states: a listed row; else the backbone's baseline speed (its row, else resnet32's divided by the backbone's
    declared relative_cost) divided by the method's cost relative to the baseline (measured on resnet32 where both
    rows exist, else declared)."""
    on_path, other = table[table["path"] == path], ""
    if on_path.empty:  # no figure of that path at all: another path's, said so
        on_path = table.drop_duplicates(["backbone", "method"], keep="last")
        other = f" (no {path} rows: {', '.join(sorted(set(on_path['path'])))} figures)"
    indexed = on_path.set_index(["backbone", "method"])
    rows = indexed["images_per_s"]
    if (backbone, method) in rows.index:
        source = str(indexed.loc[(backbone, method), "source"])
        return float(rows[(backbone, method)]), ("estimate" if source.startswith("estimate") else "measured") + other
    base = ("resnet32", "baseline")
    if base not in rows.index:
        return float(rows.min()), "rule: slowest listed row (no resnet32 baseline row)"
    how = []
    if (backbone, "baseline") in rows.index:
        base_ips = float(rows[(backbone, "baseline")])
    else:
        base_ips = float(rows[base]) / declared.backbone(backbone).relative_cost
        how.append("the backbone's declared cost")
    if ("resnet32", method) in rows.index:
        ratio = float(rows[base]) / float(rows[("resnet32", method)])
    else:
        ratio = declared.method(method).relative_cost
        how.append("the method's declared cost")
    return base_ips / ratio, "rule: " + (" and ".join(how) or "method/baseline ratio on resnet32 x the backbone's "
                                                               "baseline") + other


def estimate(planned: Sequence[Planned], table: pd.DataFrame | None = None) -> None:
    """Set each run's GPU-hours (one run per GPU, training + EVAL_OVERHEAD) and how its throughput was found."""
    table = load_epoch_times() if table is None else table
    found: dict[tuple[str, str, str], tuple[float, str]] = {}  # per triple, not per run: thousands of runs
    for run in planned:
        cfg = run.cfg
        run.path = planned_fast_path(cfg)
        triple = (cfg["backbone"], cfg["method"], run.path)
        if triple not in found:
            found[triple] = throughput(table, *triple)
        ips, how = found[triple]
        seconds = cfg["epochs"] * images_per_epoch(cfg) / ips * EVAL_OVERHEAD
        run.gpu_hours, run.estimate = seconds / 3600, how


def summary(planned: Sequence[Planned], tables: Sequence[str]) -> pd.DataFrame:
    """Per table: runs per status and GPU-hours (all runs, and still to do); a `total` row counts each run once."""
    rows = []
    for table in [*tables, "total"]:
        runs = [r for r in planned if table == "total" or table in r.tables]
        if not runs and table != "total":
            continue
        row: dict[str, Any] = {"table": table, "runs": len(runs)}
        row.update({s: sum(r.status == s for r in runs) for s in STATUSES})
        row["gpu_h_all"] = sum(r.gpu_hours for r in runs)
        row["gpu_h_to_do"] = sum(r.gpu_hours for r in runs if r.status in ("to submit", "queued", "alive"))
        rows.append(row)
    return pd.DataFrame(rows)


def shared_runs_line(run_tables: Sequence[Sequence[str]]) -> str | None:
    """The line saying why the tables' rows add up to more than the total (runs several tables need), or None."""
    rows = sum(len(t) for t in run_tables)
    if rows <= len(run_tables):
        return None
    shared = sum(len(t) > 1 for t in run_tables)
    return (f"{shared} of the {len(run_tables)} runs are shared between tables (the same run_key: trained once, "
            f"counted in each table's row): the rows add up to {rows}, the total counts each run once.")


def format_duration(hours: float) -> str:
    """One run's GPU time: hours from 1 h up, minutes or seconds below (a quick run is seconds of a GPU-hour)."""
    if not math.isfinite(hours):
        return "?"
    if hours >= 1 or hours * 60 >= 59.95:
        return f"{hours:.2f} h"
    return f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"


def format_hours(value: float) -> str:
    """GPU-hours for a table: 1 decimal below 100, whole hours above."""
    if math.isnan(value):
        return "?"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"
