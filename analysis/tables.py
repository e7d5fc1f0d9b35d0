"""The paper's tables from the runs of a script's plan: what each table is (TableSpec, SPECS), the Table it becomes,
aggregation (pandas), the paper's stated differences beside ours (`comparisons`) and building a table from a plan and
the stores (`build_table`, `tables_for_script`, `build_tables`). Rendering (Markdown, LaTeX, CSV, files) is
analysis/render.py.

Every table has one row per backbone and one column per compared thing (method, ablation variant, number of
peers, or head); a cell is the top-1 error (%) of the deployed head, mean +- std (ddof=1) over the seeds of the
plan, with n, the planned runs that are not done (missing/running/failed/preempted) and the paper's number with
our difference ("unknown" where the paper's number is not known), from analysis/paper.py. Parameter counts
(training / deployment) come from the records.

Entry points: `build_tables` (what make_tables.py calls), `tables_for_script`, `build_table`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from analysis import escape, paper
from analysis.setting import DATASET_NAMES, Setting
from pcl import registry
from pcl.config_checks import did_you_mean
from analysis.runs import (STATUSES, AnalysisError, config_keys, describe_stores, plan_runs, planned_status,
                           read_attempts)

#: display names, from the declarations (pcl.registry; a name that is not declared is shown as it is)
METHOD_NAMES = {name: spec.display for name, spec in registry.methods().items()}
BACKBONE_NAMES = {name: spec.display for name, spec in registry.backbones().items()}
#: the heads the PCL-E table compares (the same as ablations/deployed_head.py HEADS), with what each is
PCL_HEADS = {"peer1": "peer1 (a live peer)", "mean_peer1": "mean_peer1 (its temporal mean: deployed)",
             "ensemble": "ensemble (peer ensemble teacher)", "pcl_e": "pcl_e (ensemble of the temporal means)"}


def _variant(run: Mapping[str, Any]) -> str:
    label = run.get("label") or run["method"]
    return label.rsplit("/", 1)[0]


@dataclass(frozen=True)
class TableSpec:
    """How one script's planned runs become a table: the column of a run and the columns' display names."""

    name: str
    title: str
    column: Callable[[Mapping[str, Any]], str]
    column_title: str
    heads: tuple[str, ...] = ()  # non-empty: the columns are these heads of every run (the PCL-E table)

    def display(self, key: str) -> str:
        if self.heads:
            shown = PCL_HEADS.get(key, key)
            return shown + (" = PCL-E here" if key == paper.PCL_E_HEAD else "")
        return METHOD_NAMES.get(key, key) if self.column_title == "method" else key


SPECS: dict[str, TableSpec] = {s.name: s for s in (
    TableSpec("table2", "CIFAR comparison: top-1 error (%) of the deployed model", lambda r: r["method"], "method"),
    TableSpec("imagenet", "ImageNet: top-1 error (%) of the deployed model", lambda r: r["method"], "method"),
    TableSpec("two_stage", "Online vs two-stage distillation: top-1 error (%)", lambda r: r["method"], "method"),
    TableSpec("ablations.components", "Ablation of PCL's components: top-1 error (%)", _variant, "variant"),
    TableSpec("ablations.mean_teacher", "Ablation of the peer mean teacher: top-1 error (%)", _variant, "variant"),
    TableSpec("ablations.ensemble_teacher", "Ablation of the peer ensemble teacher: top-1 error (%)", _variant,
              "variant"),
    TableSpec("ablations.peers", "Number of peers m: top-1 error (%)", _variant, "peers"),
    TableSpec("ablations.deployed_head", "Which model to deploy, and PCL-E: top-1 error (%) per head", _variant,
              "head", heads=tuple(PCL_HEADS)),
)}


@dataclass
class Table:
    """One script's table for one dataset: `cells` (long, numeric, one row per backbone x column) + context."""

    spec: TableSpec
    dataset: str
    head: str | None
    select: str
    cells: pd.DataFrame
    runs: pd.DataFrame  # one row per planned run (and head, in the PCL-E table): status, value, params
    stores: str
    notes: list[str] = field(default_factory=list)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    setting: Setting | None = None  # what the runs are (data, epochs, subset, seeds): analysis.setting
    variant: str = ""  # what else sets its runs apart (e.g. "lr=0.05"): in the title and the file names
    tag: str = ""  # tells apart two tables whose script, dataset, setting and variant are all the same

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def setting_text(self) -> str:
        """The dataset and what else sets these runs apart (epochs, subset, seeds; the variant), as the report names
        a table: two tables of one script and dataset read apart."""
        return ((self.setting.describe() if self.setting else DATASET_NAMES.get(self.dataset, self.dataset))
                + (f"; {self.variant}" if self.variant else "") + (f"; {self.tag}" if self.tag else ""))

    @property
    def stem(self) -> str:
        """The tables' and figures' file name: script, dataset, setting (two settings never overwrite each other)."""
        variant = re.sub(r"[^A-Za-z0-9.=+-]+", "-", self.variant).strip("-")[:60]
        return (f"{self.name}_{self.dataset}" + (f"_{self.setting.slug}" if self.setting else "")
                + (f"_{variant}" if variant else "") + (f"_{self.tag}" if self.tag else "") + ("_best_on_test" if self.select == "best" else "")
                + (f"_head-{self.head}" if self.head else ""))

    @property
    def title(self) -> str:
        what = self.spec.title if self.head is None else self.spec.title.replace(
            "the deployed model", f"head {self.head!r}")
        if self.setting is not None:  # the setting starts with the dataset
            title = f"{self.name} - {what} [{self.setting_text}]"
        else:
            title = f"{self.name} - {what}, {self.setting_text}"
        if self.select == "best":
            title += " - BEST EPOCH SELECTED ON THE TEST SET (optimistic; not a held-out result)"
        return title

    @property
    def status_counts(self) -> dict[str, int]:
        """Planned runs per status (each run once, also in the PCL-E table where a run gives several cells)."""
        per_run = self.runs.drop_duplicates("run_key")
        return {s: int((per_run["status"] == s).sum()) for s in STATUSES}


# ---- aggregation ---------------------------------------------------------------------------------------------
def _head_rows(status: pd.DataFrame, heads: Sequence[str], select: str) -> pd.DataFrame:
    """The PCL-E table: each planned run once per head, its value that head's error."""
    from analysis.runs import result_lookup

    frames = []
    for head in heads:
        frame = status.copy()
        frame["column"] = head
        found = [result_lookup(a, head, select) if s == "completed" else None
                 for a, s in zip(frame["attempt"], frame["status"])]
        frame["value"] = [math.nan if v is None else v for v in found]
        frame["nan_result"] = [v is not None and math.isnan(v) for v in found]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def head_parameter_counts(run: Mapping[str, Any]) -> dict[str, int | None]:
    """Parameters needed at inference by each head of a PCL run: peer1/mean_peer1 = the deployed network,
    ensemble = the live multi-branch network + the ensemble teacher's classifier, pcl_e = the temporal-mean
    multi-branch network (no classifier).

    Read from the record's info.parameter_counts["params_deployed/HEAD"] when present; else computed by building the
    method (imports pcl/torch lazily); None where neither is possible.
    """
    attempt = run.get("attempt") or {}
    counts = attempt.get("parameter_counts") or {}
    out: dict[str, int | None] = {h: counts.get(f"params_deployed/{h}") for h in PCL_HEADS}
    out["peer1"] = out["peer1"] or attempt.get("params_deployed")
    out["mean_peer1"] = out["mean_peer1"] or attempt.get("params_deployed")
    if (out["ensemble"] is None or out["pcl_e"] is None) and attempt.get("num_classes"):
        try:
            from pcl.methods import build_method
            from pcl.models import count_parameters

            method = build_method(run["method"], run["backbone"], int(attempt["num_classes"]), **run["options"])
            net = count_parameters(method.net)
            ensemble = getattr(method, "ensemble", None)
            if ensemble is not None and hasattr(ensemble, "weight"):
                out["ensemble"] = out["ensemble"] or net + count_parameters(ensemble)
            out["pcl_e"] = out["pcl_e"] or (net if getattr(method, "uses_mean_network", False) else None)
        except Exception:  # noqa: BLE001 - no torch here, or an unknown backbone: the count stays unknown
            pass
    return out


def aggregate(spec: TableSpec, status: pd.DataFrame, dataset: str, *, head: str | None = None,
              select: str = "last") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, runs): cells has one row per (backbone, column) in plan order with mean, std (ddof=1), n,
    n_planned, the count of each status, paper_err/paper_std/paper_conf/paper_source, diff (mean - paper_err),
    params_train/params_deployed (of the completed runs), best (lowest mean of its row)."""
    if spec.heads:
        runs = _head_rows(status, spec.heads, select)
    else:
        runs = status.copy()
        runs["column"] = [spec.column(r) for r in runs.to_dict("records")]
    runs["row"] = runs["backbone"]
    order_rows = list(dict.fromkeys(runs["row"]))
    order_cols = list(dict.fromkeys(runs["column"]))
    done = runs[runs["status"] == "completed"]
    grouped = done.groupby(["row", "column"], sort=False)["value"]
    stats = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count")
    counts = runs.groupby(["row", "column"], sort=False)["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=list(STATUSES), fill_value=0)
    cells = counts.join(stats, how="left")
    cells["n_planned"] = runs.groupby(["row", "column"], sort=False).size()
    cells["n"] = cells["n"].fillna(0).astype(int)
    nan_flag = runs["nan_result"].fillna(False).astype(bool) if "nan_result" in runs else False
    nan_runs = runs[runs["status"].eq("completed") & nan_flag]
    cells["nan_results"] = nan_runs.groupby(["row", "column"], sort=False).size().reindex(
        cells.index, fill_value=0).astype(int)  # completed runs that recorded NaN (diverged)
    # completed runs whose latest attempt did not complete (failed, running, ...): the cell uses the older one
    newer = runs["newer"] if "newer" in runs else pd.Series(None, index=runs.index)
    superseded = runs[runs["status"].eq("completed") & newer.notna()]
    cells["newer_attempts"] = superseded.groupby(["row", "column"], sort=False)["newer"].agg(
        lambda s: ", ".join(f"{n} {k}" for k, n in s.value_counts().items())).reindex(cells.index)
    params = done.groupby(["row", "column"], sort=False)[["params_train", "params_deployed"]].median()
    cells = cells.join(params, how="left") if len(params) else cells.assign(params_train=math.nan,
                                                                             params_deployed=math.nan)
    if spec.heads:  # parameters at inference of each head; training parameters are the run's
        for (row, col), group in done.groupby(["row", "column"], sort=False):
            counted = head_parameter_counts(group.iloc[0].to_dict()).get(col)
            cells.loc[(row, col), "params_deployed"] = math.nan if counted is None else counted
    cells = cells.reset_index()
    papers = [paper.paper_cell(spec.name, dataset, r, c) if head is None else None
              for r, c in zip(cells["row"], cells["column"])]
    cells["paper_err"] = [p.top1_err if p else math.nan for p in papers]
    cells["paper_std"] = [p.std if p and p.std is not None else math.nan for p in papers]
    cells["paper_conf"] = [p.confidence if p else "" for p in papers]
    cells["paper_source"] = [p.source if p else "" for p in papers]
    cells["diff"] = cells["mean"] - cells["paper_err"]
    row_best = cells.groupby("row")["mean"].transform("min")
    cells["best"] = cells["mean"].notna() & cells["mean"].eq(row_best)
    cells["row"] = pd.Categorical(cells["row"], order_rows, ordered=True)
    cells["column"] = pd.Categorical(cells["column"], order_cols, ordered=True)
    cells = cells.sort_values(["row", "column"]).reset_index(drop=True)
    cells["row"] = cells["row"].astype(str)
    cells["column"] = cells["column"].astype(str)
    cells.insert(0, "dataset", dataset)
    cells.insert(0, "table", spec.name)
    cells["head"] = "per column" if spec.heads else (head or "deployed")
    cells["select"] = "best_on_test" if select == "best" else "last_epoch"
    return cells, runs


def comparisons(spec: TableSpec, cells: pd.DataFrame, dataset: str, head: str | None,
                comparable: bool = True) -> pd.DataFrame:
    """The paper's stated differences (paper.DELTAS) beside ours: error(column) - error(reference), points."""
    rows = []
    for backbone in dict.fromkeys(cells["row"]):
        means = cells[cells["row"] == backbone].set_index("column")["mean"]
        for d in paper.paper_deltas(spec.name, dataset, backbone):
            ours = means.get(d.column, math.nan) - means.get(d.reference, math.nan)
            rows.append({"backbone": BACKBONE_NAMES.get(backbone, backbone), "column": spec.display(d.column),
                         "reference": spec.display(d.reference),
                         "ours (points)": ("not comparable: not the paper's setting" if not comparable else
                                           "unknown" if math.isnan(ours) or head else f"{ours:+.2f}"),
                         "paper (points)": f"{d.delta_err:+.1f} ({d.confidence})",
                         "paper's setting": "as this table" if d.dataset else "not stated in the paper"})
    return pd.DataFrame(rows)


# ---- building ------------------------------------------------------------------------------------------------
def _filter(plan: list[dict[str, Any]], datasets: Sequence[str] | None,
            backbones: Sequence[str] | None) -> list[dict[str, Any]]:
    return [r for r in plan if (not datasets or r["dataset"] in datasets)
            and (not backbones or r["backbone"] in backbones)]


def build_table(name: str, plan: Sequence[Mapping[str, Any]], attempts: pd.DataFrame, *, stores: str = "",
                head: str | None = None, select: str = "last") -> Table:
    """The table of script `name` from its planned runs (one dataset) and the store's attempts (no torch needed
    unless the PCL-E table has to compute a head's parameter count the record lacks).

    Raises AnalysisError for an unknown table, a plan of several datasets, or a bad select/head.
    """
    if name not in SPECS:
        raise AnalysisError(f"unknown table {name!r}; known: {', '.join(SPECS)}")
    if select not in ("last", "best"):
        raise AnalysisError(f"--select {select!r} is invalid: must be last or best")
    datasets = sorted({r["dataset"] for r in plan})
    if len(datasets) != 1:
        raise AnalysisError(f"table {name}: one dataset per table, the plan has {', '.join(datasets) or 'none'}")
    spec = SPECS[name]
    status = planned_status(plan, attempts, head=head, select=select)
    cells, runs = aggregate(spec, status, datasets[0], head=None if spec.heads else head, select=select)
    notes: list[str] = [escape.Markdown(n) for n in paper.NOTES.get(name, ())]  # the suite's own Markdown
    if spec.heads and head:
        notes.append(f"--head {head} does not apply to this table: its columns are the heads.")
    shared = sorted({e for e in runs["recorded_by"].dropna()} - {r.get("experiment") for r in plan})
    if shared:
        notes.append(f"Some runs were recorded by another script's grid ({', '.join(shared)}): the same run_key, "
                     "trained once.")
    setting = Setting.of(plan)
    if not setting.papers:  # the paper's numbers stay visible, but no difference is computed against them
        cells["not_comparable"] = "; ".join(setting.gaps)
        cells["diff"] = math.nan
        notes.append(f"Not the paper's setting ({'; '.join(setting.gaps)}): the paper's numbers are shown for "
                     "reference only, no difference is computed.")
    table = Table(spec, datasets[0], None if spec.heads else head, select, cells, runs, stores, notes,
                  setting=setting)
    table.comparisons = comparisons(spec, cells, datasets[0], table.head, comparable=setting.papers)
    return table


def _plan_of(name: str, updates: Mapping[str, Any], named: Sequence[str], dataset: str,
             attempts: pd.DataFrame) -> list[dict[str, Any]]:
    """The plan of `name` on `dataset`. A run_key follows the data's identity (pcl.tracking.data): unless
    `data_root` is given, the plan is also tried with each data identity the store's records of that dataset hold
    (as recorded: no file a record names is read), and the first plan with runs in the store is taken (else the
    plain plan)."""
    from pcl.tracking.data import recorded_identity

    plan = plan_runs(name, {**updates, "dataset": dataset}, named)
    keys = set(attempts["run_key"].dropna())
    if "data_root" in updates or any(r["run_key"] in keys for r in plan):
        return plan
    records = attempts.loc[attempts["dataset"] == dataset, "record"]
    identities = {(r.get("config") or {}).get("data_identity") for r in records}
    for identity in sorted(i for i in identities if isinstance(i, str)):
        with recorded_identity(identity):
            other = plan_runs(name, {**updates, "dataset": dataset}, named)
        if any(r["run_key"] in keys for r in other):
            return other
    return plan


def _candidate_datasets(name: str, updates: Mapping[str, Any], named: Sequence[str],
                        attempts: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Datasets of the store's records whose plan (this config with dataset=D) has runs there: D -> plan."""
    found: dict[str, list[dict[str, Any]]] = {}
    keys = set(attempts["run_key"].dropna())
    for dataset in sorted(set(attempts["dataset"].dropna())):
        try:
            plan = _plan_of(name, updates, named, dataset, attempts)
        except AnalysisError:
            continue  # the script does not take this dataset
        if any(r["run_key"] in keys for r in plan):
            found[dataset] = plan
    return found


def _held_text(attempts: pd.DataFrame) -> str:
    """What the store holds runs of, by script (its --tables name) and dataset: 'table2 on cifar100 (120), ...'."""
    from analysis.discover import script_names

    names = script_names()
    experiments = attempts.groupby(["experiment", "dataset"], dropna=False).size()
    return ", ".join(f"{names.get(e, e)} on {d} ({n})" for (e, d), n in experiments.items()) or "nothing"


def _no_runs_message(name: str, asked: str, attempts: pd.DataFrame, stores: str, plan_size: int) -> str:
    held = _held_text(attempts)
    return (f"table {name}: none of the {plan_size} planned runs ({asked}) is in {stores}; the store holds runs "
            f"of: {held} (a smoke grid's table needs --named smoke; another dataset --datasets; runs trained with "
            "other values of run keys need the same --set, e.g. --set gpus=4 or --set epochs=10)")


def tables_for_script(name: str, attempts: pd.DataFrame, *, stores: str, updates: Mapping[str, Any] | None = None,
                      named: Sequence[str] = (), head: str | None = None, select: str = "last",
                      datasets: Sequence[str] | None = None, backbones: Sequence[str] | None = None) -> list[Table]:
    """The tables (one per dataset) of script `name` for this config, from the store's attempts.

    Datasets: --datasets, else --set dataset=..., else every dataset of the store's records whose plan (this
    config with dataset=D) has runs there. A plan with no run in the store -> AnalysisError naming what it holds.
    """
    if name not in SPECS:
        raise AnalysisError(f"unknown table {name!r}; known: {', '.join(SPECS)}")
    keys = config_keys(name, tuple(named))  # --set keys this script does not have are another script's
    updates = {k: v for k, v in (updates or {}).items() if k.split(".")[0] in keys}
    if datasets:
        plans = {d: _plan_of(name, updates, named, d, attempts) for d in datasets}
    elif "dataset" in updates:
        plans = {updates["dataset"]: _plan_of(name, updates, named, updates["dataset"], attempts)}
    else:
        plans = _candidate_datasets(name, updates, named, attempts)  # one table per dataset with runs
        if not plans:
            plan = plan_runs(name, updates, named)
            raise AnalysisError(_no_runs_message(name, f"dataset {plan[0]['dataset']}", attempts, stores,
                                                 len(plan)))
    tables = []
    for dataset, plan in plans.items():
        chosen = _filter(plan, None, backbones)
        if not chosen:
            have = sorted({r["backbone"] for r in plan})
            raise AnalysisError(f"table {name}: no planned run on backbone(s) {', '.join(backbones or [])}; "
                                f"its plan has {', '.join(have)}")
        keys = set(attempts["run_key"].dropna())
        if not any(r["run_key"] in keys for r in chosen):
            raise AnalysisError(_no_runs_message(name, f"dataset {dataset}", attempts, stores, len(chosen)))
        tables.append(build_table(name, chosen, attempts, stores=stores, head=head, select=select))
    return tables


def build_tables(names: Sequence[str] | None, stores: Sequence[Any], **kwargs: Any) -> tuple[list[Table], list[str]]:
    """Every asked table (all registered scripts when names is None) from the stores: (tables, skipped), where
    skipped holds one line per script without runs (only when names is None; an asked table without runs raises).

    Without `named`/`updates`: every plan the store holds runs of (analysis.discover), narrowed by names,
    datasets and backbones. Raises AnalysisError: empty/unreachable store, unknown table, no runs.
    """
    unknown = [n for n in names or () if n not in SPECS]
    if unknown:
        raise AnalysisError(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(SPECS)}"
                            f"{did_you_mean(unknown, SPECS)}")
    from pcl.recipes import DATASETS

    for flag, given, known in (("--datasets", kwargs.get("datasets"), list(DATASETS)),
                               ("--backbones", kwargs.get("backbones"), list(registry.backbones()))):
        bad = [v for v in given or () if v not in known]
        if bad:
            raise AnalysisError(f"{flag} {' '.join(bad)}: unknown; known: {', '.join(known)}")
    asked = list(names or SPECS)
    named = tuple(kwargs.get("named") or ())
    if named:  # a name no asked script declares is a typo, not a grid without runs
        from experiments import registry as scripts

        declared = {n for name in asked for n in scripts.experiment(name).named_configs}
        bad = [n for n in named if n not in declared]
        if bad:
            raise AnalysisError(f"--named {' '.join(bad)}: no table's script declares it; declared: "
                                f"{', '.join(sorted(declared))}{did_you_mean(bad, sorted(declared))}")
    for key in kwargs.get("updates") or {}:
        if not any(key.split(".")[0] in config_keys(n, named) for n in asked):
            raise AnalysisError(f"--set {key}=...: {key.split('.')[0]!r} is not a config key of "
                                f"{', '.join(asked)}")
    described = describe_stores(stores)  # the input checked, the store read
    attempts = read_attempts(stores)
    if attempts.empty:
        raise AnalysisError(f"{described} holds no run records (run a grid first, e.g. "
                            f"python experiments/table2.py with smoke)")
    if not named and not kwargs.get("updates"):  # no grid named: every plan the records hold runs of
        return _held_tables(names, asked, attempts, described, **kwargs)
    tables, skipped = [], []
    for name in asked:
        try:
            tables += tables_for_script(name, attempts, stores=described, **kwargs)
        except AnalysisError as err:
            if names is not None:
                raise
            skipped.append(str(err))
    if not tables:
        held = _held_text(attempts)
        # a method no asked table's default grid has (a researcher's own, or one outside the paper): only --set
        # method=... plans it, whatever named config is given
        gridded = {m for name in asked for m in registry.table_methods(name)}
        methods = "method" not in (kwargs.get("updates") or {}) and sorted(
            m for m in attempts["method"].dropna().unique() if isinstance(m, str) and m not in gridded)
        outside = (f"; the records' method(s) {', '.join(methods)} are in no default grid of these tables: plan them "
                   f"with --set, e.g. --set 'method=[\"pcl\",\"{methods[0]}\"]' --tables table2") if methods else ""
        raise AnalysisError(f"no table's plan{' (' + ' '.join(named) + ')' if named else ''} has runs in "
                            f"{described}, which holds runs of: {held}; a smoke grid's tables need --named smoke, "
                            f"another dataset --datasets, other settings --set KEY=VALUE as in the grid's `with`"
                            f"{outside}")
    return tables, skipped


def _held_tables(names: Sequence[str] | None, asked: Sequence[str], attempts: pd.DataFrame, described: str, *,
                 head: str | None = None, select: str = "last", datasets: Sequence[str] | None = None,
                 backbones: Sequence[str] | None = None, **_: Any) -> tuple[list[Table], list[str]]:
    """The tables of every plan the store holds runs of (analysis.discover), in the scripts' order."""
    from analysis.discover import held_plans

    held, skipped = held_plans(attempts, asked, datasets)
    order = {name: i for i, name in enumerate(SPECS)}
    held.sort(key=lambda h: (order[h.name], h.dataset))
    tables: list[Table] = []
    for plan in held:
        chosen = _filter(plan.plan, None, backbones)
        if not chosen:
            skipped.append(f"{plan.describe()}: no planned run on backbone(s) {', '.join(backbones or [])}")
            continue
        table = build_table(plan.name, chosen, attempts, stores=described, head=head, select=select)
        table.variant = plan.variant
        table.notes.append(f"Plan rebuilt from the records: {plan.describe()}" + (
            " (every run trained by another script: the same run_keys)" if plan.shared_only else ""))
        tables.append(table)
    stems: dict[str, int] = {}
    for table in tables:  # same script, dataset and setting slug, other values (e.g. batch_size): a tag apart
        stems[table.stem] = stems.get(table.stem, 0) + 1
        if stems[table.stem] > 1:
            table.tag = f"v{stems[table.stem]}"
    missing = [n for n in names or () if not any(t.name == n for t in tables)]
    if missing or not tables:
        held_text = _held_text(attempts)
        what = f"table(s) {', '.join(missing)}" if missing else "no table"
        # e.g. a smoke grid's table whose every run another script recorded (synthetic runs are attributed to no
        # other script): its own plan, named, finds them
        hint = (f"; to build it from its script's plan: --tables {' '.join(missing)} --named smoke (a smoke grid), "
                "or --set KEY=VALUE as in the grid's `with`") if missing else ""
        # why the held runs made no plan (their configs this version refuses, ...): the lines held_plans wrote
        why = "; " + "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "") \
            if skipped else ""
        raise AnalysisError(f"{what}: no plan{' on ' + ', '.join(datasets) if datasets else ''} has runs in "
                            f"{described}, which holds runs of: {held_text}{hint}{why}")
    return tables, skipped


__all__ = ["SPECS", "Table", "TableSpec", "aggregate", "build_table", "build_tables", "head_parameter_counts",
           "tables_for_script"]
