"""Which plans the store holds runs of, read from the records: what `make_tables`, `make_plots` and `report` show
when no `--named`/`--set` says which grid to look at.

A record holds its whole run config (dataset, schedule, data, seed, the script that recorded it). For each script
and dataset the records are split by their setting (every run-key value the script's grid does not vary: epochs,
train_subset, data, batch size, ...); each part becomes the script's plan again: the config closest to one of the
script's presets (its default config or a named config such as `smoke`), with the part's differing values as
updates and its seeds/methods/backbones where they are not already the preset's. A plan is kept when its runs are
the part's runs (the one with the most of them); the runs it misses are split again by what the grid varies besides
its axes (a method's options, ...), each part a plan of its own. Records no rebuilt plan holds, and records whose
config this version rejects (they would make their whole part's plan fail), are named in one line per group.
Plans are rebuilt with the data identity the records hold: no data file is read (a record's data_root is a path
of the machine that trained it, or any path a record names).

A script that recorded nothing (every run it needs was trained by another script: the launcher trains a shared
run_key once, e.g. `ablations.deployed_head` inside table2) is shown on a dataset of the paper when every run of its
plan, in a setting found above, is in the store. So a smoke grid of table2 gives table2's table only, not an
"ImageNet" table of the same synthetic runs.
"""
from __future__ import annotations

import json
import functools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis.escape import one_line
from analysis.runs import AnalysisError, config_keys, plan_runs
from analysis.setting import PAPER_DATASETS

#: run-config keys that never describe a setting: derived or per run
_NOT_SETTING = frozenset({"run_key", "seed", "experiment", "label", "comment"})
#: the grid axes a script's config sets (None: the script's whole axis, a name, or a list of names)
_AXES = ("method", "backbone")


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class HeldPlan:
    """One script's plan rebuilt from the records: the script, dataset, its preset and updates, and the plan."""

    name: str
    dataset: str
    named: tuple[str, ...]
    updates: dict[str, Any]
    plan: list[dict[str, Any]]
    recorded: int = 0  # records of this script the plan holds
    shared_only: bool = False  # every run was recorded by another script

    @property
    def variant(self) -> str:
        """What sets these runs apart beyond the setting a table states (data, epochs, subset, seeds) and its
        rows and columns: e.g. "lr=0.05"; "" for none."""
        shown = {"dataset", "epochs", "train_subset", "data_root", "seeds", "milestones", *_AXES}
        return ", ".join(f"{k}={v}" for k, v in self.updates.items() if k not in shown)

    def describe(self) -> str:
        parts = list(self.named) + [f"{k}={v!r}" for k, v in self.updates.items()]
        return f"{self.name} with {' '.join(parts) or 'its defaults'} on {self.dataset}"


@dataclass
class _Script:
    """The presets of one script on one dataset: preset -> its plan (those the script accepts)."""

    name: str
    dataset: str
    presets: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)

    @functools.cached_property
    def varying(self) -> frozenset[str]:
        """Run-config keys the script's grid varies in any preset (axes, options, ...)."""
        out: set[str] = set()
        for plan in self.presets.values():
            for key in plan[0]:
                if len({_canon(r.get(key)) for r in plan}) > 1:
                    out.add(key)
        return frozenset(out)


def script_names() -> dict[str, str]:
    """The name a script's runs record as their experiment -> its name in experiments.registry (--tables)."""
    from experiments import registry

    return {registry.experiment(s).path: s for s in registry.SCRIPTS}


def _presets(name: str) -> list[tuple[str, ...]]:
    from experiments import registry

    return [()] + [(n,) for n in registry.experiment(name).named_configs]


def _plan(name: str, updates: Mapping[str, Any], preset: Sequence[str], identity: Any) -> list[dict[str, Any]]:
    """plan_runs with `identity` as the data identity of its runs (no data file read: pcl.tracking.data)."""
    from pcl.tracking.data import recorded_identity

    with recorded_identity(identity if isinstance(identity, str) else None):
        return plan_runs(name, updates, preset)


def _script(name: str, dataset: str, cache: dict[tuple[str, str], _Script]) -> _Script:
    if (name, dataset) not in cache:
        found = _Script(name, dataset)
        for preset in _presets(name):
            try:
                found.presets[preset] = _plan(name, {"dataset": dataset}, preset, None)
            except AnalysisError:
                continue  # the script does not run this preset on this dataset
        cache[(name, dataset)] = found
    return cache[(name, dataset)]


def _updates(setting: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], preset_plan: Sequence[Mapping[str, Any]],
             varying: frozenset[str], paper_grid: bool) -> dict[str, Any]:
    """The config updates that turn the preset's plan into the plan of these runs.

    The axes (seeds, methods, backbones): on the script's default grid in its own setting (`paper_grid`: the long
    runs a launcher trains over days) the preset's whole axis when the runs' values are part of it, so that what has
    not started yet shows as missing; anywhere else (smoke, quick, another lr, ...) the values the runs have: a
    single cell run with smoke is that cell, not a table of missing ones."""
    base = preset_plan[0]
    updates = {k: v for k, v in setting.items() if _canon(v) != _canon(base.get(k))}
    if "milestones" in updates:  # the recipe's milestones scaled to the epochs: not a setting of its own
        from pcl import recipes

        epochs = updates.get("epochs", base.get("epochs"))
        if isinstance(epochs, int) and updates["milestones"] == recipes.scaled_milestones(
                epochs, recipes.recipe_of(base["dataset"])):
            del updates["milestones"]
    paper_grid = paper_grid and not set(updates) - {"data_root"}
    seeds = sorted({int(r["seed"]) for r in runs if isinstance(r.get("seed"), int)})
    planned_seeds = list(dict.fromkeys(r.get("seed") for r in preset_plan))
    if not (set(seeds) <= set(planned_seeds) and (paper_grid or set(seeds) == set(planned_seeds))):
        updates["seeds"] = seeds
    for axis in _AXES:
        if axis in varying:
            seen = {str(r.get(axis)) for r in runs}
            planned = list(dict.fromkeys(r.get(axis) for r in preset_plan))  # the grid's order (the columns)
            if not (seen <= set(planned) and (paper_grid or seen == set(planned))):
                values = [v for v in planned if v in seen] + sorted(seen - set(planned))
                updates[axis] = values if len(values) > 1 else values[0]
    return updates


def _rebuild(script: _Script, setting: Mapping[str, Any], runs: list[Mapping[str, Any]]) -> HeldPlan | None:
    """The plan of these runs: the preset whose rebuilt plan holds the most of them (then the fewest updates)."""
    keys = {r["run_key"] for r in runs}
    candidates = []
    for preset, preset_plan in script.presets.items():
        settable = config_keys(script.name, preset)  # data_identity is not a config key: _plan gives it
        updates = {k: v for k, v in _updates(setting, runs, preset_plan, script.varying, preset == ()).items()
                   if k in settable}
        candidates.append((len(updates), preset, updates))
    best: tuple[tuple[int, int], HeldPlan] | None = None
    for n_updates, preset, updates in sorted(candidates, key=lambda c: c[0]):  # the closest preset first
        try:
            plan = _plan(script.name, {"dataset": script.dataset, **updates}, preset, setting.get("data_identity"))
        except AnalysisError:
            continue
        held = len(keys & {r["run_key"] for r in plan})
        rank = (held, -n_updates)
        if held and (best is None or rank > best[0]):
            best = (rank, HeldPlan(script.name, script.dataset, preset, updates, plan, held))
        if held == len(keys):
            break  # every run is in it: a preset further away cannot do better
    return None if best is None else best[1]


def _rejected(configs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(run_key, why) of the configs this version rejects (pcl.schema; no network built, no file read): an unknown
    method or a negative seed in one record would make its part's plan fail."""
    from pcl import schema

    rejected = []
    for cfg in configs:
        try:
            schema.normalize_run_config(cfg)
        except Exception as err:  # noqa: BLE001 - ConfigError, or a value of a type no check expects
            rejected.append((cfg["run_key"], one_line(err, 200)))
    return rejected


def _rebuild_all(script: _Script, setting: Mapping[str, Any], runs: list[dict[str, Any]]
                 ) -> tuple[list[HeldPlan], list[dict[str, Any]]]:
    """The plans that hold these runs, and the runs none holds: the closest plan first; the runs it misses split by
    the values the grid varies besides its axes (e.g. a DML run with another temperature: its options), a plan
    each."""
    held = _rebuild(script, setting, runs)
    files = _file_options(runs) if held is None else {}
    if files:  # a method that needs its file (kd's teacher) has no plan without it
        held = _rebuild(script, {**setting, "options": files}, runs)
    keys = {r["run_key"] for r in held.plan} if held is not None else set()
    missed = [r for r in runs if r["run_key"] not in keys]
    if not missed or held is None:
        return ([held] if held is not None else []), missed
    extra = sorted(script.varying - set(_AXES) - _NOT_SETTING)
    parts: dict[str, list[dict[str, Any]]] = {}
    for run in missed:
        parts.setdefault(_canon({k: run.get(k) for k in extra}), []).append(run)
    changes = [_changed(script, held, part[0], extra) for part in parts.values()]
    # the plan again from the runs it holds: the missed runs' methods are no columns of it
    plans = [_rebuild(script, setting, [r for r in runs if r["run_key"] in keys]) or held]
    left = []
    for part, changed in zip(parts.values(), changes):
        other = _rebuild(script, {**setting, **changed}, part)
        keys = {r["run_key"] for r in other.plan} if other is not None else set()
        if other is not None:
            plans.append(other)
        left += [r for r in part if r["run_key"] not in keys]
    whole = None if left else _one_grid(script, setting, runs, changes, plans)
    return ([whole], []) if whole is not None else (plans, left)


def _one_grid(script: _Script, setting: Mapping[str, Any], runs: list[dict[str, Any]],
              changes: Sequence[Mapping[str, Any]], plans: Sequence[HeldPlan]) -> HeldPlan | None:
    """The one grid that gave every run, when the runs the closest plan missed differ from it (`changes`, one per
    part of them) only in options that agree with each other: `with 'method=["baseline","dml"]'
    options.temperature=4` sets the option of the methods that have it and leaves the baseline as it is, so its
    records are one table, not a baseline table and a DML table. Only when that grid's runs are exactly those of
    the separate `plans`: two grids of other seeds or backbones crossed would invent runs nobody planned."""
    merged: dict[str, Any] = {}
    for changed in changes:
        if set(changed) - {"options"}:
            return None
        for key, value in changed.get("options", {}).items():
            if key in merged and _canon(merged[key]) != _canon(value):
                return None  # two settings of one option: two grids
            merged[key] = value
    if not merged:
        return None
    whole = _rebuild(script, {**setting, "options": merged}, runs)
    separate = {r["run_key"] for plan in plans for r in plan.plan}
    return whole if whole is not None and {r["run_key"] for r in whole.plan} == separate else None


def _file_options(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The file options (declared `kind="path"`, e.g. kd's teacher_path) the runs were given, when they agree: no
    method has a default file, so a grid that ran such a method was given them (empty when they disagree: two
    grids)."""
    from pcl import registry

    found: dict[str, Any] = {}
    for run in runs:
        spec = registry.methods().get(run.get("method")) if isinstance(run.get("method"), str) else None
        options = run.get("options")
        if spec is None or not isinstance(options, dict):
            continue
        for name in spec.file_options:
            value = options.get(name)
            if isinstance(value, str):
                if found.get(name, value) != value:
                    return {}
                found[name] = value
    return found


def _changed(script: _Script, held: HeldPlan, run: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The values of `keys` in which `run` differs from its method's defaults in `held`'s setting (its options:
    only the changed ones; a record holds all of them, `peers` too, which is set at the top level)."""
    updates = {k: v for k, v in held.updates.items() if k not in _AXES and k != "seeds"}
    try:
        default = _plan(script.name, {"dataset": script.dataset, **updates, "method": run.get("method")}, held.named,
                        run.get("data_identity"))[0]
    except (AnalysisError, IndexError):
        default = {}
    out = {k: run.get(k) for k in keys if k != "options" and _canon(run.get(k)) != _canon(default.get(k))}
    options, base = run.get("options"), default.get("options")
    if isinstance(options, dict):
        base = base if isinstance(base, dict) else {}
        changed = {k: v for k, v in options.items() if k not in run and _canon(base.get(k)) != _canon(v)}
        if changed:
            out["options"] = changed
    return out


def held_plans(attempts: pd.DataFrame, names: Sequence[str], datasets: Sequence[str] | None = None
               ) -> tuple[list[HeldPlan], list[str]]:
    """The plans of scripts `names` the store's attempts hold runs of, on `datasets` (default: every dataset of
    the records), and one line per group of records no plan holds (foreign scripts, settings no preset rebuilds)."""
    from experiments import registry
    from pcl import schema

    latest = attempts.dropna(subset=["run_key"]).sort_values("time", na_position="first", kind="stable")
    latest = latest.drop_duplicates("run_key", keep="last")
    configs = [dict((rec.get("config") or {})) for rec in latest["record"]]
    configs = [c for c in configs if isinstance(c.get("run_key"), str)]
    if datasets:
        configs = [c for c in configs if c.get("dataset") in datasets]
    setting_keys = [k for k in schema.RUN_KEYS if k not in schema.INFRA_KEYS or k == "data_root"]
    cache: dict[tuple[str, str], _Script] = {}
    found: list[HeldPlan] = []
    skipped: list[str] = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cfg in configs:
        groups.setdefault((str(cfg.get("experiment") or ""), str(cfg.get("dataset"))), []).append(cfg)
    scripts = script_names()  # recorded name -> script
    for (recorded_by, dataset), group in sorted(groups.items()):
        experiment = scripts.get(recorded_by, recorded_by)
        if experiment not in registry.SCRIPTS:
            skipped.append(f"{len(group)} run(s) recorded by {recorded_by or 'no script'!r} on {dataset}: not a "
                           f"script of experiments.registry (e.g. run_key {group[0]['run_key']})")
            continue
        if experiment not in names:
            continue
        script = _script(experiment, dataset, cache)
        if not script.presets:
            skipped.append(f"{len(group)} run(s) of {experiment} on {dataset}: the script does not run on it")
            continue
        keys = [k for k in setting_keys if k not in script.varying and k not in _NOT_SETTING]
        parts: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for cfg in group:
            setting = {k: cfg.get(k) for k in keys}
            parts.setdefault(_canon(setting), (setting, []))[1].append(cfg)
        rejected: list[tuple[str, str]] = []
        for setting, runs in parts.values():
            held, missed = _rebuild_all(script, setting, runs)
            if missed:  # a config this version rejects (checked only here: a clean store pays nothing) makes its
                # whole part's plan fail: the part again without it
                bad = _rejected(missed)
                if bad:
                    rejected += bad
                    keys_bad = {k for k, _ in bad}
                    runs = [r for r in runs if r["run_key"] not in keys_bad]
                    held, missed = _rebuild_all(script, setting, runs) if runs else ([], [])
            found += held
            if missed:
                skipped.append(f"{len(missed)} run(s) of {experiment} on {dataset} are in no plan rebuilt from their "
                               f"settings (e.g. run_key {missed[0]['run_key']}, {missed[0].get('label')}); give "
                               "the grid's settings with --named/--set")
        if rejected:
            key, why = rejected[0]
            skipped.append(f"{len(rejected)} run(s) of {experiment} on {dataset} have a config this version rejects "
                           f"(e.g. run_key {key}: {why})")
    found += _shared_only(found, names, attempts, cache)
    return found, skipped


def _shared_only(found: Sequence[HeldPlan], names: Sequence[str], attempts: pd.DataFrame,
                 cache: dict[tuple[str, str], _Script]) -> list[HeldPlan]:
    """Plans of scripts that recorded nothing in a setting found, whose every run another script trained."""
    have = set(attempts["run_key"].dropna())
    recorded = {(h.name, h.dataset) for h in found}
    tried: set[tuple[str, str, tuple[str, ...], str]] = set()
    out: list[HeldPlan] = []
    for held in found:
        if held.dataset not in PAPER_DATASETS:
            continue  # a smoke grid's synthetic runs are no other table's results
        base = _setting_only(held.updates)
        for name in names:
            if (name, held.dataset) in recorded or (name, held.dataset, held.named, _canon(base)) in tried:
                continue
            tried.add((name, held.dataset, held.named, _canon(base)))
            if held.named not in _script(name, held.dataset, cache).presets:
                continue
            try:
                plan = _plan(name, {"dataset": held.dataset, **base}, held.named, held.plan[0].get("data_identity"))
            except AnalysisError:
                continue
            if plan and all(r["run_key"] in have for r in plan):
                out.append(HeldPlan(name, held.dataset, held.named, base, plan, 0, shared_only=True))
    return out


def _setting_only(updates: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in updates.items() if k not in _AXES}


__all__ = ["HeldPlan", "held_plans"]
