"""Figures of a study (seaborn/matplotlib, PNG + PDF) from the same tables as make_tables: test error over training
per method (mean line, band = std over seeds, LR steps marked), error vs number of peers, ablation bars with error
bars and the paper's stated differences, the deployed head vs live peers vs ensemble over training, and the peers'
diversity over training (metric `test/diversity`, drawn when the runs logged it).

Every function returns matplotlib Figures (the caller saves and closes them); `make_figures` does both.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import escape, paper  # noqa: E402
from analysis.runs import metric_series  # noqa: E402
from analysis.tables import BACKBONE_NAMES, DATASET_NAMES, Table  # noqa: E402

DIVERSITY = "test/diversity"
ERR_LABEL = "test top-1 error (%)"
HEAD_TABLES = ("table2", "imagenet", "ablations.deployed_head")
_LIVE_PEER = re.compile(r"^(peer|net|branch)\d+$")


@dataclass
class Figure:
    """One figure of a study: file stem, kind, caption (what it shows, for the report) and the matplotlib figure."""

    stem: str
    kind: str
    caption: str
    figure: Any


def _completed(table: Table) -> pd.DataFrame:
    runs = table.runs[table.runs["status"] == "completed"]
    return runs.drop_duplicates(["run_key", "column"]) if not table.spec.heads else runs.drop_duplicates("run_key")


def _curves(table: Table, names_of: Any) -> pd.DataFrame:
    """Long frame of per-epoch metrics of the table's completed runs: row, column, seed, run_key, name, epoch,
    value; `names_of(run)` gives {metric name: series label} for a run."""
    frames = []
    for run in _completed(table).to_dict("records"):
        wanted = names_of(run)
        if not wanted:
            continue
        series = metric_series(run["attempt"]["record"], list(wanted))
        if series.empty:
            continue
        series["series"] = series["name"].map({k: escape.plot(v) for k, v in wanted.items()})  # legend text
        series = series.groupby(["series", "step"], as_index=False)["value"].mean()  # e.g. the mean of live peers
        series = series.assign(row=run["row"], column=run["column"], seed=run["seed"], run_key=run["run_key"])
        frames.append(series.rename(columns={"step": "epoch"}))
    if not frames:
        return pd.DataFrame(columns=["series", "epoch", "value", "row", "column", "seed", "run_key"])
    return pd.concat(frames, ignore_index=True)


def _milestones(table: Table, row: str) -> list[int]:
    attempts = _completed(table)
    attempts = attempts[attempts["row"] == row]
    marks: set[int] = set()
    for a in attempts["attempt"]:
        cfg = (a.get("record") or {}).get("config") or {}
        epochs, milestones = cfg.get("epochs"), cfg.get("milestones")
        if not _number(epochs) or not isinstance(milestones, list):
            continue  # a record of another shape: no LR steps drawn from it
        marks.update(int(m) for m in milestones if _number(m) and 0 < m < epochs)
    return sorted(marks)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _title(table: Table, row: str) -> str:
    return f"{table.name}: {BACKBONE_NAMES.get(row, row)} on {DATASET_NAMES.get(table.dataset, table.dataset)}"


def _mark_lr_steps(ax: Any, steps: Iterable[int]) -> None:
    for i, step in enumerate(steps):
        ax.axvline(step, color="0.5", linestyle=":", linewidth=1, label="LR step (x0.1)" if i == 0 else None)


def error_curves(table: Table) -> list[Figure]:
    """Test error of each column's deployed head (or --head) vs epoch, one figure per backbone: a mean line per
    method/variant with a band of +- one std over seeds; dotted vertical lines at the LR steps."""
    if table.spec.heads:
        return []

    def names_of(run: dict) -> dict[str, str]:
        head = table.head or run.get("deployed_head")
        label = table.spec.display(run["column"])
        names = {f"test/top1_err/{head}": label} if head else {}
        return names if table.head else {**names, "test/top1_err/deployed": label}  # the same curve, if logged

    data = _curves(table, names_of)
    figures = []
    for row, part in data.groupby("row", sort=False):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=part, x="epoch", y="value", hue="series", errorbar="sd", ax=ax, marker="o" if
                     part["epoch"].nunique() < 4 else None)
        _mark_lr_steps(ax, _milestones(table, row))
        head = f"head {table.head}" if table.head else "deployed head"
        ax.set(xlabel="epoch", ylabel=escape.plot(f"{ERR_LABEL}, {head}"), title=escape.plot(_title(table, row)))
        ax.legend(title="method" if table.spec.column_title == "method" else table.spec.column_title, fontsize=8)
        figures.append(Figure(f"{table.name}_{table.dataset}_curves_{row}", "curves",
                              f"{_title(table, row)}: test error of the {head} over training (line: mean over "
                              f"seeds, band: +- one std; dotted: LR steps).", fig))
    return figures


def peers_plot(table: Table) -> list[Figure]:
    """Error vs number of peers m (ablations.peers): mean +- std (error bars) per backbone."""
    if table.name != "ablations.peers":
        return []
    cells = table.cells[table.cells["n"] > 0].copy()
    if cells.empty:
        return []
    cells["m"] = cells["column"].str.extract(r"m=(\d+)", expand=False).astype(int)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row, part in cells.groupby("row", sort=False):
        part = part.sort_values("m")
        ax.errorbar(part["m"], part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=4,
                    label=escape.plot(BACKBONE_NAMES.get(row, row)))
    ax.set(xlabel="number of peers m", ylabel=ERR_LABEL, title=escape.plot(
        f"{table.name} on {DATASET_NAMES.get(table.dataset, table.dataset)}"))
    ax.set_xticks(sorted(cells["m"].unique()))
    ax.legend(title="backbone")
    return [Figure(f"{table.name}_{table.dataset}_peers", "peers",
                   "Top-1 error of the deployed model vs the number of peers m (mean +- std over seeds).", fig)]


def ablation_bars(table: Table) -> list[Figure]:
    """Bars of an ablation (mean error, error bars = std over seeds), one group per backbone; the paper's stated
    differences (analysis/paper.py DELTAS) are written above the bars they concern."""
    if not table.name.startswith("ablations."):
        return []
    cells = table.cells[table.cells["n"] > 0]
    if cells.empty:
        return []
    columns = list(dict.fromkeys(table.cells["column"]))
    rows = list(dict.fromkeys(cells["row"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(columns) * len(rows) + 2), 5))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        part = cells[cells["row"] == row].set_index("column")
        xs = [columns.index(c) + (i - (len(rows) - 1) / 2) * width for c in part.index]
        ax.bar(xs, part["mean"], width=width, yerr=part["std"].fillna(0), capsize=4,
               label=escape.plot(BACKBONE_NAMES.get(row, row)))
        for c, x in zip(part.index, xs):
            for d in paper.paper_deltas(table.name, table.dataset, row):
                if d.column == c:
                    ours = part["mean"].get(c, math.nan) - part["mean"].get(d.reference, math.nan)
                    text = f"paper ({d.confidence}): {d.delta_err:+.1f}\nours: " + (
                        "?" if math.isnan(ours) else f"{ours:+.2f}") + f"\nvs {d.reference}"
                    ax.annotate(text, (x, part.loc[c, "mean"]), xytext=(0, 14), textcoords="offset points",
                                ha="center", fontsize=7)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([escape.plot(table.spec.display(c)) for c in columns], rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=ERR_LABEL, title=escape.plot(f"{table.name} on {DATASET_NAMES.get(table.dataset, table.dataset)}"))
    ax.margins(y=0.25)
    ax.legend(title="backbone")
    fig.tight_layout()
    return [Figure(f"{table.name}_{table.dataset}_bars", "bars",
                   f"{table.title}: mean over seeds, error bars +- one std; annotations: the paper's stated "
                   f"differences (points of error) beside ours.", fig)]


def _head_kind(head: str, deployed: str | None) -> str | None:
    if head == deployed:
        return "deployed head"
    if head == "ensemble":
        return "ensemble teacher"
    if head == "pcl_e":
        return "PCL-E of the temporal means (pcl_e)"
    if _LIVE_PEER.match(head):
        return "live peers (mean over peers)"
    return None


def heads_over_training(table: Table) -> list[Figure]:
    """The deployed head vs the live peers (their mean) vs the ensemble teacher (and pcl_e) over training, one
    panel per method, one figure per backbone (band: std over seeds). For the method comparisons and the PCL-E
    table (HEAD_TABLES); methods with one head (baseline, kd) have no panel."""
    if table.name not in HEAD_TABLES:
        return []

    def names_of(run: dict) -> dict[str, str]:
        heads = ((run["attempt"].get("record") or {}).get("info") or {}).get("heads") or []
        kinds = {h: _head_kind(h, run.get("deployed_head")) for h in heads}
        return {f"test/top1_err/{h}": k for h, k in kinds.items() if k} if len(heads) > 1 else {}

    data = _curves(table, names_of)
    figures = []
    for row, part in data.groupby("row", sort=False):
        part = part.assign(column=part["column"].map(escape.plot))  # the panels' titles
        grid = sns.relplot(data=part, x="epoch", y="value", hue="series", col="column", col_wrap=min(
            4, part["column"].nunique()), kind="line", errorbar="sd", height=3.2, aspect=1.2,
            marker="o" if part["epoch"].nunique() < 4 else None, facet_kws={"sharey": False})
        grid.set_axis_labels("epoch", ERR_LABEL)
        grid.set_titles("{col_name}")
        grid.legend.set_title("head")
        grid.figure.suptitle(escape.plot(_title(table, row)), y=1.03)
        for ax in grid.axes.flat:
            _mark_lr_steps(ax, _milestones(table, row))
        figures.append(Figure(f"{table.name}_{table.dataset}_heads_{row}", "heads",
                              f"{_title(table, row)}: the deployed head vs the live peers (mean over peers) vs the "
                              f"ensemble teacher over training (band: +- one std over seeds).", grid.figure))
    return figures


def diversity(table: Table) -> tuple[list[Figure], str | None]:
    """Peer diversity over training (`test/diversity`: mean pairwise distance between the peers' predictions on
    the test set) per method; ([], reason) when no run of the table logged it."""
    if table.spec.heads:
        return [], None
    data = _curves(table, lambda run: {DIVERSITY: table.spec.display(run["column"])})
    if data.empty:
        return [], (f"{table.name} ({table.dataset}): no run logged {DIVERSITY!r}, so there is no diversity "
                    "figure")
    figures = []
    for row, part in data.groupby("row", sort=False):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=part, x="epoch", y="value", hue="series", errorbar="sd", ax=ax)
        _mark_lr_steps(ax, _milestones(table, row))
        ax.set(xlabel="epoch", ylabel="peer diversity on the test set\n(mean pairwise distance of predictions)",
               title=escape.plot(_title(table, row)))
        figures.append(Figure(f"{table.name}_{table.dataset}_diversity_{row}", "diversity",
                              f"{_title(table, row)}: diversity of the peers' test predictions over training.", fig))
    return figures, None


def figures_for(table: Table) -> tuple[list[Figure], list[str]]:
    """Every figure of one table, and one line per figure kind that could not be drawn (and why)."""
    figures = error_curves(table) + peers_plot(table) + ablation_bars(table) + heads_over_training(table)
    div, reason = diversity(table)
    return figures + div, [reason] if reason else []


def save(figure: Figure, out_dir: str | Path) -> list[Path]:
    """Write STEM.png and STEM.pdf under out_dir; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{figure.stem}.png", out / f"{figure.stem}.pdf"]
    for path in paths:
        figure.figure.savefig(path, dpi=120, bbox_inches="tight")
    return paths


def make_figures(tables: Iterable[Table], out_dir: str | Path, *, keep: bool = False
                 ) -> tuple[list[tuple[Figure, list[Path]]], list[str]]:
    """Draw and save every figure of the tables: ([(figure, paths)], notes); figures are closed unless keep."""
    done, notes = [], []
    for table in tables:
        figures, missing = figures_for(table)
        notes += missing
        for figure in figures:
            done.append((figure, save(figure, out_dir)))
            if not keep:
                plt.close(figure.figure)
    return done, notes


__all__ = ["DIVERSITY", "Figure", "ablation_bars", "diversity", "error_curves", "figures_for",
           "heads_over_training", "make_figures", "peers_plot", "save"]
