"""Figures of a study (matplotlib; PNG + PDF, SVG on request) from the same tables as make_tables: test error over training
per method (mean line, band = std over seeds, LR steps marked, the last epochs enlarged), error vs number of peers,
ablation points with error bars and the paper's stated differences, the deployed head vs live peers vs ensemble over
training, and the peers' diversity over training (metric `test/diversity`, drawn when the runs logged it).

Made to be printed: display names, a colour-blind-safe palette with a marker and line style per series, shared axes
where panels are compared, the deployed head drawn thick, no empty figure (a note says why one is missing). The
mean and std over seeds are one pandas groupby (seaborn's per-point aggregation dominated the time).

Every function returns matplotlib Figures (the caller saves and closes them); `make_figures` does both.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.layout_engine import TightLayoutEngine  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import escape, figcache, paper  # noqa: E402
from analysis.runs import metric_arrays  # noqa: E402
from analysis.tables import BACKBONE_NAMES, DATASET_NAMES, Table  # noqa: E402

DIVERSITY = "test/diversity"
ERR_LABEL = "test top-1 error (%)"
HEAD_TABLES = ("table2", "imagenet", "ablations.deployed_head")
_LIVE_PEER = re.compile(r"^(peer|net|branch)\d+$")
#: a colour-blind-safe palette, and a marker and line style per series so that overlapping series stay apart in
#: print and in grey (":" is kept for the LR steps)
PALETTE = sns.color_palette("colorblind")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
LINESTYLES = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (3, 1, 1, 1)))
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "svg.fonttype": "none"}
#: the zoomed panel of a curve plot covers this last share of the epochs (where the final gaps are)
ZOOM_SHARE = 0.25


@dataclass
class Figure:
    """One figure of a study: file stem, kind, caption (what it shows, for the report) and the matplotlib figure."""

    stem: str
    kind: str
    caption: str
    figure: Any  # None for a figure kept from an earlier call (kept=True)
    kept: bool = False


def _style(i: int) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def _lay_out(fig: Any, rect: tuple[float, float, float, float] | None = None) -> None:
    """Tight layout, done when the figure is first drawn (in `save`, by a saving worker), not here: laying out
    ticks and texts is a large part of a figure's cost, and the process that draws the figures reads the records."""
    fig.set_layout_engine("tight", **({"rect": rect} if rect else {}))


def _completed(table: Table) -> pd.DataFrame:
    runs = table.runs[table.runs["status"] == "completed"]
    return runs.drop_duplicates(["run_key", "column"]) if not table.spec.heads else runs.drop_duplicates("run_key")


def _curves(table: Table, names_of: Any) -> pd.DataFrame:
    """Long frame of per-epoch metrics of the table's completed runs: row, column, seed, run_key, series, epoch,
    value (finite values only); `names_of(run)` gives {metric name: series label} for a run."""
    labels, steps, values, owners = [], [], [], []
    facts: list[tuple[Any, Any, Any, Any]] = []
    for run in _completed(table).to_dict("records"):
        wanted = names_of(run)
        if not wanted:
            continue
        metrics = _test_metrics(table, run)
        for name, label in wanted.items():
            if name not in metrics:
                continue
            epoch, value = metrics[name]
            keep = ~np.isnan(value)
            n = int(keep.sum())
            if n:
                labels.append(np.full(n, escape.plot(label), dtype=object))  # legend text
                steps.append(epoch[keep])
                values.append(value[keep])
                owners.append(np.full(n, len(facts)))
        if len(owners) and owners[-1][0] == len(facts):
            facts.append((run["row"], run["column"], run["seed"], run["run_key"]))
    if not owners:
        return pd.DataFrame(columns=["series", "epoch", "value", "row", "column", "seed", "run_key"])
    # one groupby for every run (e.g. the mean of a run's live peers), not one per run
    data = pd.DataFrame({"_run": np.concatenate(owners), "series": np.concatenate(labels),
                         "step": np.concatenate(steps), "value": np.concatenate(values)})
    data = data.groupby(["_run", "series", "step"], as_index=False, sort=True)["value"].mean()
    run = data["_run"].to_numpy()
    for i, column in enumerate(("row", "column", "seed", "run_key")):
        data[column] = pd.Series([f[i] for f in facts]).to_numpy()[run]  # inferred dtypes (seed: integers)
    return data.drop(columns="_run").rename(columns={"step": "epoch"})


#: id(table) -> run_key -> the run's test/* series (name -> (epochs, values) arrays): each metrics file read once
#: per table, for every figure kind (curves, heads, diversity), dropped when the table's figures are done
_METRICS: dict[int, dict[str, dict[str, tuple[Any, Any]]]] = {}


def _test_metrics(table: Table, run: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The test/* metric series of one run of the table: what every figure reads."""
    cache = _METRICS.get(id(table))
    if cache is not None and run["run_key"] in cache:
        return cache[run["run_key"]]
    series = metric_arrays(run["attempt"]["record"], "test/")
    if cache is not None:
        cache[run["run_key"]] = series
    return series


def _mean_std(part: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=1) over seeds per (series, epoch): one groupby, not a bootstrap per point."""
    return part.groupby(["series", "epoch"], sort=False)["value"].agg(["mean", "std"]).reset_index()


def _draw(ax: Any, stats: pd.DataFrame, order: list[str], emphasise: str | None = None) -> None:
    for i, name in enumerate(order):
        s = stats[stats["series"] == name].sort_values("epoch")
        if s.empty:
            continue
        style = _style(i)
        strong = name == emphasise
        ax.plot(s["epoch"], s["mean"], label=name, linewidth=2.6 if strong else 1.4, markersize=4,
                markevery=max(1, len(s) // 8), zorder=4 if strong else 3, **style)
        if s["std"].notna().any():
            ax.fill_between(s["epoch"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                            color=style["color"], alpha=0.15, linewidth=0)


def _zoom(ax: Any, stats: pd.DataFrame, order: list[str], emphasise: str | None = None) -> None:
    """The last epochs of the same curves, with a y-range fitted to them: the final gaps between methods."""
    last = stats["epoch"].max()
    first = max(stats["epoch"].min(), last - max(1, round(ZOOM_SHARE * last)))
    window = stats[stats["epoch"] >= first]
    _draw(ax, window, order, emphasise)
    low, high = window["mean"].min(), window["mean"].max()  # fitted to the means: the gaps, not the bands
    pad = max(0.25, 0.3 * (high - low))
    ax.set(xlim=(first, last), ylim=(low - pad, high + pad), xlabel="epoch",
           title=f"last epochs ({first}-{last}), means enlarged")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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


def _what(table: Table) -> str:
    return table.spec.title.split(":")[0]


def _title(table: Table, row: str) -> str:
    return f"{_what(table)}: {BACKBONE_NAMES.get(row, row)}, {DATASET_NAMES.get(table.dataset, table.dataset)}"


def _mark_lr_steps(ax: Any, steps: Iterable[int]) -> None:
    for i, step in enumerate(steps):
        ax.axvline(step, color="0.5", linestyle=":", linewidth=1, label="LR step (x0.1)" if i == 0 else None)


def _too_short(table: Table, row: str, part: pd.DataFrame, what: str, notes: list[str] | None) -> bool:
    if part["epoch"].nunique() >= 2:
        return False
    if notes is not None:
        notes.append(f"{table.name} ({table.dataset}, {BACKBONE_NAMES.get(row, row)}): no {what} figure, the runs "
                     f"logged {part['epoch'].nunique()} epoch(s); the table has the numbers")
    return True


def error_curves(table: Table, notes: list[str] | None = None) -> list[Figure]:
    """Test error of each column's deployed head (or --head) vs epoch, one figure per backbone: left the whole
    training, right its last epochs with their own y-range (the final gaps); a mean line per method/variant, each
    with its own colour, marker and line style, a band of +- one std over seeds; dotted lines at the LR steps.
    A backbone whose runs logged fewer than two epochs gets no figure (a line in `notes` says why)."""
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
        if _too_short(table, row, part, "curve", notes):
            continue
        stats = _mean_std(part)
        order = [escape.plot(table.spec.display(c)) for c in dict.fromkeys(table.cells["column"])]
        order = [o for o in order if o in set(stats["series"])]
        with plt.rc_context(STYLE):
            fig, (ax, zoom) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [3, 2]})
            _draw(ax, stats, order)
            _mark_lr_steps(ax, _milestones(table, row))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            head = f"head {table.head}" if table.head else "deployed head"
            ax.set(xlabel="epoch", ylabel=escape.plot(f"{ERR_LABEL}, {head}"), title=escape.plot(_title(table, row)))
            _zoom(zoom, stats, order)
            ax.legend(title="method" if table.spec.column_title == "method" else table.spec.column_title)
            _lay_out(fig)
        figures.append(Figure(f"{table.stem}_curves_{row}", "curves",
                              f"{_title(table, row)}: test error of the {head} over training (line: mean over "
                              f"seeds, band: +- one std; dotted: LR steps; right: the last epochs enlarged).", fig))
    return figures


def peers_plot(table: Table) -> list[Figure]:
    """Error vs number of peers m (ablations.peers): mean +- std (error bars) per backbone."""
    if table.name != "ablations.peers":
        return []
    cells = table.cells[table.cells["n"] > 0].copy()
    if cells.empty:
        return []
    cells["m"] = cells["column"].str.extract(r"m=(\d+)", expand=False).astype(int)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for i, (row, part) in enumerate(cells.groupby("row", sort=False)):
            part = part.sort_values("m")
            style = _style(i)
            ax.errorbar(part["m"], part["mean"], yerr=part["std"].fillna(0), capsize=4, color=style["color"],
                        marker=style["marker"], linestyle=style["linestyle"],
                        label=escape.plot(BACKBONE_NAMES.get(row, row)))
        ax.set(xlabel="number of peers m", ylabel=ERR_LABEL,
               title=escape.plot(f"{_what(table)}, {DATASET_NAMES.get(table.dataset, table.dataset)}"))
        ax.set_xticks(sorted(cells["m"].unique()))
        ax.legend(title="backbone")
        _lay_out(fig)
    return [Figure(f"{table.stem}_peers", "peers",
                   "Top-1 error of the deployed model vs the number of peers m (mean +- std over seeds).", fig)]


def ablation_bars(table: Table) -> list[Figure]:
    """An ablation as points with error bars (mean, +- one std over seeds), one series per backbone, on a y-range
    fitted to the values (differences of a point stay visible; bars from zero would hide them). A variant without
    finished runs is marked "no runs" at its place; the paper's stated differences beside ours are listed under
    the axis, never over the points."""
    if not table.name.startswith("ablations."):
        return []
    cells = table.cells[table.cells["n"] > 0]
    if cells.empty:
        return []
    columns = list(dict.fromkeys(table.cells["column"]))
    rows = list(dict.fromkeys(cells["row"]))
    deltas = []
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(columns) + 2), 4.6))
        offset = 0.12
        for i, row in enumerate(rows):
            part = cells[cells["row"] == row].set_index("column")
            xs = [columns.index(c) + (i - (len(rows) - 1) / 2) * offset for c in part.index]
            style = _style(i)
            ax.errorbar(xs, part["mean"], yerr=part["std"].fillna(0), capsize=4, linestyle="none",
                        marker=style["marker"], color=style["color"], markersize=6,
                        label=escape.plot(BACKBONE_NAMES.get(row, row)))
            for d in paper.paper_deltas(table.name, table.dataset, row):
                ours = part["mean"].get(d.column, math.nan) - part["mean"].get(d.reference, math.nan)
                deltas.append(f"{table.spec.display(d.column)} vs {table.spec.display(d.reference)} "
                              f"({BACKBONE_NAMES.get(row, row)}): paper ({d.confidence}) {d.delta_err:+.1f}, ours "
                              + ("?" if math.isnan(ours) else f"{ours:+.2f}"))
        low = (cells["mean"] - cells["std"].fillna(0)).min()
        high = (cells["mean"] + cells["std"].fillna(0)).max()
        pad = max(0.2, 0.15 * (high - low))
        ax.set_ylim(low - pad, high + pad)
        for j, c in enumerate(columns):
            if c not in set(cells["column"]):
                ax.text(j, low, "no runs", ha="center", va="bottom", fontsize=8, color="0.4", rotation=90)
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels([escape.plot(table.spec.display(c)) for c in columns], rotation=20, ha="right")
        ax.set_xlim(-0.6, len(columns) - 0.4)
        ax.set(ylabel=ERR_LABEL,
               title=escape.plot(f"{_what(table)}, {DATASET_NAMES.get(table.dataset, table.dataset)}"))
        ax.legend(title="backbone")
        if deltas:
            fig.text(0.01, -0.02, escape.plot("; ".join(deltas), limit=400), ha="left", va="top", fontsize=7,
                     wrap=True)
        _lay_out(fig)
    return [Figure(f"{table.stem}_bars", "bars",
                   f"{table.title}: mean over seeds, error bars +- one std, y-range fitted to the values"
                   + ("; below: the paper's stated differences (points of error) beside ours." if deltas else "."),
                   fig)]


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


def heads_over_training(table: Table, notes: list[str] | None = None) -> list[Figure]:
    """The deployed head (emphasised) vs the live peers (their mean) vs the ensemble teacher (and pcl_e) over
    training, one panel per method (display names, a shared y-axis), one figure per backbone (band: std over
    seeds). For the method comparisons and the PCL-E table (HEAD_TABLES); methods with one head (baseline, kd)
    have no panel."""
    if table.name not in HEAD_TABLES:
        return []

    def names_of(run: dict) -> dict[str, str]:
        heads = ((run["attempt"].get("record") or {}).get("info") or {}).get("heads") or []
        kinds = {h: _head_kind(h, run.get("deployed_head")) for h in heads}
        return {f"test/top1_err/{h}": k for h, k in kinds.items() if k} if len(heads) > 1 else {}

    data = _curves(table, names_of)
    figures = []
    for row, part in data.groupby("row", sort=False):
        if _too_short(table, row, part, "heads", notes):
            continue
        columns = list(dict.fromkeys(part["column"]))
        wrap = min(4, len(columns))
        nrows = math.ceil(len(columns) / wrap)
        order = ["deployed head", "live peers (mean over peers)", "ensemble teacher",
                 "PCL-E of the temporal means (pcl_e)"]
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(nrows, wrap, figsize=(3.6 * wrap, 3.2 * nrows), sharey=True, squeeze=False)
            for ax, column in zip(axes.flat, columns):
                stats = _mean_std(part[part["column"] == column])
                _draw(ax, stats, order, emphasise="deployed head")  # one style per kind of head in every panel
                _mark_lr_steps(ax, _milestones(table, row))
                ax.set(title=escape.plot(table.spec.display(column)), xlabel="epoch")
            for ax in list(axes.flat)[len(columns):]:
                ax.remove()
            for ax in axes[:, 0]:
                ax.set_ylabel(ERR_LABEL)
            legend: dict[str, Any] = {}
            for ax in axes.flat[:len(columns)]:
                for handle, label in zip(*ax.get_legend_handles_labels()):
                    legend.setdefault(label, handle)
            fig.suptitle(escape.plot(_title(table, row)))
            _lay_out(fig, rect=(0, 0, 1, 0.8))
            fig.legend(list(legend.values()), list(legend), title="head", loc="upper center",
                       ncol=min(5, len(legend)), bbox_to_anchor=(0.5, 0.93), frameon=False)
        figures.append(Figure(f"{table.stem}_heads_{row}", "heads",
                              f"{_title(table, row)}: the deployed head (thick) vs the live peers (mean over peers) "
                              f"vs the ensemble teacher over training (band: +- one std over seeds).", fig))
    return figures


def diversity(table: Table) -> tuple[list[Figure], str | None]:
    """Peer diversity over training (`test/diversity`: mean pairwise distance between the peers' predictions on
    the test set) per method; ([], reason) when no run of the table logged it (never an empty figure)."""
    if table.spec.heads:
        return [], None
    data = _curves(table, lambda run: {DIVERSITY: table.spec.display(run["column"])})
    if data.empty:
        return [], (f"{table.name} ({table.dataset}): no run logged {DIVERSITY!r} (methods without peers do "
                    "not), so there is no diversity figure")
    figures, short = [], []
    for row, part in data.groupby("row", sort=False):
        if _too_short(table, row, part, "diversity", short):
            continue
        stats = _mean_std(part)
        order = list(dict.fromkeys(stats["series"]))
        with plt.rc_context(STYLE):
            fig, ax = plt.subplots(figsize=(7, 4.2))
            _draw(ax, stats, order)
            _mark_lr_steps(ax, _milestones(table, row))
            ax.set(xlabel="epoch", ylabel="peer diversity on the test set\n(mean pairwise disagreement, %)",
                   title=escape.plot(_title(table, row)))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, as in the other figures
            ax.legend(title="method")
            _lay_out(fig)
        figures.append(Figure(f"{table.stem}_diversity_{row}", "diversity",
                              f"{_title(table, row)}: diversity of the peers' test predictions over training.", fig))
    return figures, "; ".join(short) or None


def figures_for(table: Table) -> tuple[list[Figure], list[str]]:
    """Every figure of one table, and one line per figure kind that could not be drawn (and why)."""
    notes: list[str] = []
    _METRICS[id(table)] = {}
    try:
        figures = (error_curves(table, notes) + peers_plot(table) + ablation_bars(table)
                   + heads_over_training(table, notes))
        div, reason = diversity(table)
    finally:
        _METRICS.pop(id(table), None)
    return figures + div, notes + ([reason] if reason else [])


#: the files of a figure: a raster for screens and reports, a vector format for a paper (svg: --formats)
FORMATS = ("png", "pdf")
KNOWN_FORMATS = ("png", "pdf", "svg")


def save(figure: Figure, out_dir: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write STEM.FORMAT for each format (png at 150 dpi; pdf and svg are vector) under out_dir; the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{figure.stem}.{fmt}" for fmt in formats]
    fig = figure.figure
    # Each draw lays out every tick label and text again, and drawing is most of a figure's cost, so draw as
    # little as possible: the tight layout once, then no layout engine (one left set makes every savefig draw
    # the figure twice), the tight box once (bbox_inches="tight" would draw again for each file), PNG compressed
    # fast (zlib level 1: a PNG in about a third less time than at level 6, files ~7 % larger).
    with plt.rc_context(STYLE):  # ticks made while laying out get the figure's style
        engine = fig.get_layout_engine()
        if isinstance(engine, TightLayoutEngine):
            engine.execute(fig)
        fig.set_layout_engine(None)
        box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
        for path in paths:
            fig.savefig(path, dpi=150, bbox_inches=box,
                        **({"pil_kwargs": {"compress_level": 1}} if path.suffix == ".png" else {}))
    return paths


def plot_workers(requested: int | None = None) -> int:
    """Processes that save figures: --workers, else $PCL_PLOT_WORKERS, else the CPUs this process may use."""
    if requested is None:
        env = os.environ.get("PCL_PLOT_WORKERS", "")
        if env.isdigit() and int(env) > 0:
            requested = int(env)
        else:
            requested = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, requested)


#: the figures being saved by forked workers (inherited, not pickled: a matplotlib figure is large to pickle)
_PENDING: list[tuple[Figure, str, tuple[str, ...]]] = []


def _save_pending(index: int) -> list[Path]:
    figure, out_dir, formats = _PENDING[index]
    return save(figure, out_dir, formats)


def _start_saving(figures: Sequence[Figure], out_dir: str | Path, formats: Sequence[str], workers: int) -> Any:
    """Start saving one table's figures: in `workers` processes forked now (they see these figures; saving is
    most of the time, as every format draws the whole figure again), while this process draws the next table's;
    here and at once where fork is not available or one worker is asked for. `_finish_saving` waits."""
    if workers <= 1 or len(figures) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return None, [save(f, out_dir, formats) for f in figures]
    _PENDING[:] = [(f, str(out_dir), tuple(formats)) for f in figures]  # a later fork sees the next table's
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    pool = multiprocessing.get_context("fork").Pool(min(workers, len(figures)))
    return pool, pool.map_async(_save_pending, range(len(figures)), chunksize=1)


def _finish_saving(started: Any) -> list[list[Path]]:
    pool, result = started
    if pool is None:
        return result
    try:
        return result.get()
    finally:
        pool.close()
        pool.join()


def make_figures(tables: Iterable[Table], out_dir: str | Path, *, keep: bool = False,
                 formats: Sequence[str] = FORMATS, workers: int | None = 1, reuse: bool = True
                 ) -> tuple[list[tuple[Figure, list[Path]]], list[str]]:
    """Draw and save every figure of the tables: ([(figure, paths)], notes); figures are closed unless keep.

    The figures of each table are drawn here (they read the records) and saved by `workers` processes
    (plot_workers(None): one per CPU) while the next table's are drawn. Nothing of the result depends on the
    number of workers. With `reuse` (and not keep), a table whose inputs did not change since the last call
    into out_dir keeps its files (analysis.figcache): its figures come back with kept=True and no matplotlib
    figure; without it every table is drawn. Either way (not keep) the manifest remembers what was drawn."""
    unknown = [f for f in formats if f not in KNOWN_FORMATS]
    if unknown or not formats:
        raise ValueError(f"figure formats {list(formats)!r}: each must be one of {', '.join(KNOWN_FORMATS)}")
    workers = plot_workers(workers)
    done: list[tuple[Figure, list[Path]]] = []
    notes: list[str] = []
    # reuse=False draws every table but still remembers what it drew (the next call may keep it)
    manifest = None if keep else figcache.Manifest.load(out_dir, notes if reuse else [])
    pending: tuple[Any, ...] | None = None

    def finish() -> None:
        """Wait for the table being saved (if any) and take its figures: done, the manifest, closed."""
        nonlocal pending
        if pending is None:
            return
        table, key, missing, figures, started = pending
        pending = None
        drawn = list(zip(figures, _finish_saving(started)))
        done.extend(drawn)
        if manifest is not None and key is not None:
            manifest.record(table, key, drawn, missing)
        if not keep:
            for figure, _ in drawn:
                plt.close(figure.figure)

    try:
        for table in tables:
            key = None
            if manifest is not None:
                key = figcache.fingerprint(table, formats, _completed(table))
                hit = manifest.kept(table, key, formats) if reuse else None
                if hit is not None:
                    finish()  # the figures in table order
                    done.extend((Figure(k.stem, k.kind, k.caption, None, kept=True), k.paths) for k in hit[0])
                    notes += hit[1]
                    continue
            figures, missing = figures_for(table)
            notes += missing
            finish()
            pending = (table, key, missing, figures, _start_saving(figures, out_dir, formats, workers))
        finish()
    finally:
        if pending is not None and pending[-1][0] is not None:  # an error while drawing: no worker left behind
            pending[-1][0].terminate()
        _PENDING.clear()
    if manifest is not None:
        manifest.save()
    return done, notes


__all__ = ["DIVERSITY", "FORMATS", "Figure", "ablation_bars", "diversity", "error_curves", "figures_for",
           "heads_over_training", "make_figures", "peers_plot", "plot_workers", "save"]
