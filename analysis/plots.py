"""Figures of a study (matplotlib; PNG + PDF, SVG on request) from the same tables as make_tables: test error over training
per method (mean line, band = std over seeds, LR steps marked, the last epochs enlarged), error vs number of peers,
ablation points with error bars and the paper's stated differences, the deployed head vs live peers vs ensemble over
training, and the peers' diversity over training (metric `test/diversity`, drawn when the runs logged it).

Made to be printed: display names, a colour-blind-safe palette with a marker and line style per series, shared axes
where panels are compared, the deployed head drawn thick, no empty figure (a note says why one is missing). The
mean and std over seeds are one pandas groupby (seaborn's per-point aggregation dominated the time); each figure
kind lays itself out (_lay_out) instead of being measured.

Every function returns matplotlib Figures (the caller saves and closes them); `make_figures` does both, a table
per worker process.
"""
from __future__ import annotations

import functools
import gc
import io
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.font_manager import FontProperties, findfont, get_font  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import escape, figcache, paper, raster  # noqa: E402
from analysis.runs import metric_arrays  # noqa: E402
from pcl.fsio import replacing  # noqa: E402
from pcl.results import metric_documents, read_ahead_metrics  # noqa: E402
from analysis.tables import BACKBONE_NAMES, DATASET_NAMES, METHOD_NAMES, Table  # noqa: E402

DIVERSITY = "test/diversity"
#: the deployed head's test error logged again under a name of its own (pcl.engine.DEPLOYED_METRICS)
COPY = "test/top1_err/deployed"
#: the metrics the figures draw (names starting with these): each head's test error and the peers' diversity
DRAWN = ("test/top1_err/", DIVERSITY)
ERR_LABEL = "test top-1 error (%)"
HEAD_TABLES = ("table2", "imagenet", "ablations.deployed_head")
_LIVE_PEER = re.compile(r"^(peer|net|branch)\d+$")
#: a colour-blind-safe palette (seaborn's "colorblind", after Wong 2011, written out: importing seaborn for ten
#: colours cost ~2 s per command), and a marker and line style per series so that overlapping series stay apart in
#: print and in grey (":" is kept for the LR steps)
PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
           "#56b4e9")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
LINESTYLES = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (3, 1, 1, 1)))
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "svg.fonttype": "none",
         "svg.hashsalt": "pcl",  # an SVG's ids from its content, not random: the same figure gives the same bytes
         # a title at a fixed height (no x-axis on top to clear): matplotlib's automatic placement measures every
         # tick label of the axes at each draw, about a sixth of a figure's cost
         "axes.titley": 1.0}
#: the zoomed panel of a curve plot covers this last share of the epochs (where the final gaps are)
ZOOM_SHARE = 0.25


def _epoch_ticks(ax: Any) -> None:
    """Whole epochs on the x-axis, at round steps (0, 50, ..., 300; 240, 260, ... on the zoomed panel): ten
    ticks crowded the zoomed panel, and each tick is a costly artist (ticks were a third of drawing a figure)."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10], integer=True))


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


#: inches per line of 9 pt text (10 pt titles: TITLE_IN)
LINE_IN, TITLE_IN = 0.17, 0.19


@functools.lru_cache(maxsize=4096)  # the same labels are measured for every figure of a table
def _width(text: str, size: float = 9.0) -> float:
    """Inches of the widest line of `text` at `size` points in the figures' font (FreeType's metrics, as the
    Agg renderer lays it out; 5 % added for what the drawn box adds)."""
    font = get_font(findfont(FontProperties(size=size)))
    font.set_size(size, 72)
    widths = []
    with warnings.catch_warnings():  # a glyph the font lacks: drawing the label warns, measuring it need not
        warnings.simplefilter("ignore", UserWarning)
        for line in str(text).split("\n") or [""]:
            font.set_text(line, 0.0)
            widths.append(font.get_width_height()[0] / 64 / 72)
    return 1.05 * max(widths)


def _prefix(text: str, inches: float, size: float, suffix: str = "") -> int:
    """The length of the longest prefix of `text` that fits in `inches` with `suffix` after it (at least one
    character), never ending between the backslash and the `$` it escapes (a mathtext `$` would be left)."""
    n = max(1, int(len(text) * inches / max(_width(text + suffix, size), 1e-9)))
    while n > 1 and (_width(text[:n] + suffix, size) > inches or text[n - 1] == "\\"):
        n -= 1
    return n


def _wrap(text: str, inches: float, size: float = 9.0) -> str:
    """`text` broken at spaces into lines at most `inches` wide (measured; a word wider than a line is cut)."""
    lines: list[str] = []
    for word in str(text).split(" "):
        pieces = []
        while len(word) > 1 and _width(word, size) > inches:
            cut = _prefix(word, inches, size)
            pieces.append(word[:cut])
            word = word[cut:]
        pieces.append(word)
        if lines and not pieces[:-1] and _width(f"{lines[-1]} {word}", size) <= inches:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines += pieces
    return "\n".join(lines)


def _shorten(text: str, inches: float, size: float = 9.0) -> str:
    """`text` on one line, cut to at most `inches` with an ellipsis (legend entries stay one line each)."""
    return text if _width(text, size) <= inches else text[:_prefix(text, inches, size, "…")] + "…"


def _lines(text: str) -> int:
    return str(text).count("\n") + 1


def _set_title(ax: Any, text: str, inches: float) -> int:
    """The axes' title (10 pt) wrapped to `inches`: its number of lines (the room _lay_out leaves above)."""
    wrapped = _wrap(text, inches, 10.0)
    ax.set_title(wrapped)
    return _lines(wrapped)


def _lay_out(fig: Any, *, left: float = 0.75, right: float = 0.2, bottom: float = 0.55, top: float = 0.4,
             across: float = 0.6, down: float = 0.8) -> None:
    """Margins (left, right, bottom, top) and gaps between panels (across, down) in inches, fixed by the kind of
    figure instead of measured: matplotlib's tight layout and tight bounding box lay out every tick label and text
    twice more per figure, a third of a figure's cost (~66 figures for the CIFAR tables). Each kind passes room
    for what it puts there (two-line labels, rotated tick labels, a legend above the panels)."""
    width, height = fig.get_size_inches()
    rows, cols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    panel_w = (width - left - right - (cols - 1) * across) / cols
    panel_h = (height - bottom - top - (rows - 1) * down) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=across / panel_w if cols > 1 else None, hspace=down / panel_h if rows > 1 else None)


def _completed(table: Table) -> pd.DataFrame:
    runs = table.runs[table.runs["status"] == "completed"]
    return runs.drop_duplicates(["run_key", "column"]) if not table.spec.heads else runs.drop_duplicates("run_key")


def _rows(table: Table, names_of: Any) -> Iterator[tuple[str, pd.DataFrame]]:
    """(row, _curves of its runs) per backbone with something to draw, in table order: one backbone's points in
    memory at a time (a CIFAR table of 3,000 runs has millions)."""
    for row, runs in _completed(table).groupby("row", sort=False):
        part = _curves(table, names_of, runs)
        if not part.empty:
            yield row, part


def _curves(table: Table, names_of: Any, runs: pd.DataFrame) -> pd.DataFrame:
    """Long frame of per-epoch metrics of completed runs of the table: row, column, seed, run_key, series, epoch,
    value (finite values only); `names_of(run)` gives {metric name: series label} for a run, and the series of
    a run with the same label (its live peers) are averaged per epoch. Per point only numbers: the labels and the
    run's facts are categorical (a CIFAR table of 3,000 runs has millions of points)."""
    series_codes: dict[str, int] = {}
    codes, steps, values, owners = [], [], [], []
    facts: list[tuple[Any, Any, Any, Any]] = []
    for run in runs.to_dict("records"):
        wanted = names_of(run)
        metrics = _test_metrics(table, run) if wanted else {}
        by_label: dict[str, list[tuple[Any, Any]]] = {}
        for name, label in wanted.items():
            if name in metrics:
                by_label.setdefault(escape.plot(label), []).append(metrics[name])
        drawn = False
        for label, parts in by_label.items():
            epoch, value = _average(parts)
            if len(epoch):
                codes.append(np.full(len(epoch), series_codes.setdefault(label, len(series_codes)), np.int32))
                steps.append(epoch)
                values.append(value)
                owners.append(np.full(len(epoch), len(facts), np.int32))
                drawn = True
        if drawn:
            facts.append((run["row"], run["column"], run["seed"], run["run_key"]))
    if not owners:
        return pd.DataFrame(columns=["series", "epoch", "value", "row", "column", "seed", "run_key"])
    run = np.concatenate(owners)
    out = pd.DataFrame({"series": pd.Categorical.from_codes(np.concatenate(codes), list(series_codes)),
                        "epoch": np.concatenate(steps), "value": np.concatenate(values)})
    for i, column in enumerate(("row", "column", "seed", "run_key")):
        # a code of a byte or two per point, the values inferred (seed: integers) once per run: the seeds as int64
        # per point were a fifth of the frame, which the head figures of table2 held ~10 MB of at 3,000 runs
        found, uniques = pd.factorize(pd.Series([f[i] for f in facts]))
        out[column] = pd.Categorical.from_codes(found[run], uniques)
    return out


def _average(parts: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """The per-epoch mean of one run's series (epochs, values) over their finite values, by epoch, epochs without
    any finite value left out (the mean of a run's live peers; one series: itself without NaN or inf)."""
    epoch = parts[0][0]
    if (len(epoch) < 2 or (np.diff(epoch) > 0).all()) and all(np.array_equal(epoch, e) for e, _ in parts[1:]):
        stacked = np.vstack([v for _, v in parts])  # the common case: the same increasing epochs in each
        finite = np.isfinite(stacked)
        count = finite.sum(axis=0)
        value = np.where(finite, stacked, 0.0).sum(axis=0) / np.maximum(count, 1)
        return epoch[count > 0], value[count > 0]
    frame = pd.DataFrame({"epoch": np.concatenate([e for e, _ in parts]),
                          "value": np.concatenate([v for _, v in parts])})
    frame = frame[np.isfinite(frame["value"])].groupby("epoch", sort=True)["value"].mean()
    return frame.index.to_numpy(), frame.to_numpy()


#: id(table) -> run_key -> the run's DRAWN series (name -> (epochs, values) arrays): each metrics file read once
#: per table, for every figure kind (curves, heads, diversity), dropped when the table's figures are done
_METRICS: dict[int, dict[str, dict[str, tuple[Any, Any]]]] = {}
#: id(table) -> the distinct epoch arrays of its cached series (bytes -> a read-only array)
_EPOCHS: dict[int, dict[bytes, Any]] = {}


def _cache(table: Table, run_key: str, series: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """Keep a run's series in the table's cache, every series with the same epochs holding one array of them:
    nearly every series of a table has the same epochs, and they were half of its cached bytes (a worker drawing
    table2 at 3,000 runs held ~30 MB of curves)."""
    epochs = _EPOCHS.setdefault(id(table), {})
    for name, (steps, values) in series.items():
        shared = epochs.get(key := steps.dtype.str.encode() + steps.tobytes())
        if shared is None:
            shared = epochs[key] = steps
            shared.setflags(write=False)  # one array behind many series: none may change it
        series[name] = (shared, values)
    _METRICS.setdefault(id(table), {})[run_key] = series
    return series


def _forget(table: Table) -> None:
    _METRICS.pop(id(table), None)
    _EPOCHS.pop(id(table), None)


# What each figure kind draws of a run: {metric name: series label}, from the run's facts alone (no curve read), so
# that a table's curves are read once for all its figures and only the series they draw are fetched (on MongoDB
# the test server spent 18 s of CPU sending every head's curve of 3,000 runs where make_plots draws a third)

def _curve_names(table: Table, run: dict[str, Any]) -> dict[str, str]:
    """_error_curves: the deployed head's (or --head's) test error."""
    if table.spec.heads:
        return {}
    known = run.get("deployed_head")  # NaN (pandas) for a record that does not say it: unknown, as None
    head = table.head or (known if isinstance(known, str) and known else None)
    label = table.spec.display(run["column"])
    names = {f"test/top1_err/{head}": label} if head else {}
    return names if table.head else {**names, COPY: label}  # the same curve, if logged


def _head_names(table: Table, run: dict[str, Any]) -> dict[str, str]:
    """_heads_over_training: each head of a run of several, by its kind (those of no kind are not drawn)."""
    if table.name not in HEAD_TABLES:
        return {}
    heads = ((run["attempt"].get("record") or {}).get("info") or {}).get("heads") or []
    if not isinstance(heads, list) or len(heads) < 2:
        return {}
    kinds = {h: _head_kind(h, run.get("deployed_head")) for h in heads if isinstance(h, str)}
    return {f"test/top1_err/{h}": k for h, k in kinds.items() if k}


def _diversity_names(table: Table, run: dict[str, Any]) -> dict[str, str]:
    """_diversity: the peers' diversity."""
    return {} if table.spec.heads else {DIVERSITY: table.spec.display(run["column"])}


def _drawn_names(table: Table, run: dict[str, Any]) -> set[str]:
    """Every series any figure of the table draws of the run."""
    return {name for kind in (_curve_names, _head_names, _diversity_names) for name in kind(table, run)}


def _test_metrics(table: Table, run: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The series of one run that the table's figures draw (_drawn_names), read once for all of them."""
    cache = _METRICS.get(id(table))
    if cache is not None and run["run_key"] in cache:
        return cache[run["run_key"]]
    series = metric_arrays(run["attempt"]["record"], DRAWN, names=_drawn_names(table, run))
    return series if cache is None else _cache(table, run["run_key"], series)


def _mean_std(part: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=1) over seeds per (series, epoch): one groupby, not a bootstrap per point."""
    return part.groupby(["series", "epoch"], sort=False, observed=True)["value"].agg(["mean", "std"]).reset_index()


def _draw(ax: Any, stats: pd.DataFrame, order: list[str], emphasise: str | None = None) -> None:
    for i, name in enumerate(order):
        s = stats[stats["series"] == name].sort_values("epoch")
        if s.empty:
            continue
        style = _style(i)
        strong = name == emphasise
        ax.plot(s["epoch"], s["mean"], label=_shorten(name, 2.6, 8.0), linewidth=2.6 if strong else 1.4, markersize=4,
                markevery=max(1, len(s) // 8), zorder=4 if strong else 3, **style)
        if s["std"].notna().any():
            ax.fill_between(s["epoch"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                            color=style["color"], alpha=0.15, linewidth=0)


def _zoom(ax: Any, stats: pd.DataFrame, order: list[str], inches: float) -> int:
    """The last epochs of the same curves, with a y-range fitted to them: the final gaps between methods; its
    title's number of lines (wrapped to `inches`)."""
    last = stats["epoch"].max()
    first = max(stats["epoch"].min(), last - max(1, round(ZOOM_SHARE * last)))
    window = stats[stats["epoch"] >= first]
    _draw(ax, window, order)
    low, high = window["mean"].min(), window["mean"].max()  # fitted to the means: the gaps, not the bands
    pad = max(0.25, 0.3 * (high - low))
    if math.isfinite(low - pad) and math.isfinite(high + pad):  # values near a float's range: autoscaled
        ax.set_ylim(low - pad, high + pad)
    ax.set(xlim=(first, last), xlabel="epoch")
    _epoch_ticks(ax)
    return _set_title(ax, f"last epochs ({first}-{last}), means enlarged", inches)


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
                     f"logged {part['epoch'].nunique()} epoch(s) and a curve needs 2 or more (a grid run `with "
                     f"epochs=2` or more draws one); the table has the numbers")
    return True


def _error_curves(table: Table, notes: list[str] | None = None) -> Iterator[Figure]:
    """Test error of each column's deployed head (or --head) vs epoch, one figure per backbone: left the whole
    training, right its last epochs with their own y-range (the final gaps); a mean line per method/variant, each
    with its own colour, marker and line style, a band of +- one std over seeds; dotted lines at the LR steps.
    A backbone whose runs logged fewer than two epochs gets no figure (a line in `notes` says why)."""
    if table.spec.heads:
        return
    for row, part in _rows(table, functools.partial(_curve_names, table)):
        if _too_short(table, row, part, "curve", notes):
            continue
        stats = _mean_std(part)
        order = [escape.plot(table.spec.display(c)) for c in dict.fromkeys(table.cells["column"])]
        order = [o for o in order if o in set(stats["series"])]
        with plt.rc_context(STYLE):
            fig, (ax, zoom) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [3, 2]})
            _draw(ax, stats, order)
            _mark_lr_steps(ax, _milestones(table, row))
            _epoch_ticks(ax)
            head = f"head {table.head}" if table.head else "deployed head"
            ax.set(xlabel="epoch", ylabel=escape.plot(f"{ERR_LABEL}, {head}"))
            lines = max(_set_title(ax, escape.plot(_title(table, row)), 5.0), _zoom(zoom, stats, order, 3.3))
            ax.legend(title=_shorten(table.spec.column_title, 2.6, 8.0))
            _lay_out(fig, top=0.2 + TITLE_IN * lines)  # panels 5.1 and 3.4 in wide
        yield (Figure(f"{table.stem}_curves_{row}", "curves",
                              f"{_title(table, row)}: test error of the {head} over training (line: mean over "
                              f"seeds, band: +- one std; dotted: LR steps; right: the last epochs enlarged).", fig))


def error_curves(table: Table, notes: list[str] | None = None) -> list[Figure]:
    """Every figure of _error_curves (one per backbone)."""
    return list(_error_curves(table, notes))


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
                        label=_shorten(escape.plot(BACKBONE_NAMES.get(row, row)), 2.6, 8.0))
        ax.set(xlabel="number of peers m", ylabel=ERR_LABEL)
        lines = _set_title(ax, escape.plot(f"{_what(table)}, {DATASET_NAMES.get(table.dataset, table.dataset)}"), 5.0)
        ax.set_xticks(sorted(cells["m"].unique()))
        ax.legend(title="backbone")
        _lay_out(fig, top=0.2 + TITLE_IN * lines)
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
    labels = [_wrap(escape.plot(table.spec.display(c)), 2.5) for c in columns]  # tick labels: 2.5 in at most
    deltas = []
    for row in rows:
        means = cells[cells["row"] == row].set_index("column")["mean"]
        for d in paper.paper_deltas(table.name, table.dataset, row):
            ours = means.get(d.column, math.nan) - means.get(d.reference, math.nan)
            deltas.append(f"{table.spec.display(d.column)} vs {table.spec.display(d.reference)} "
                          f"({BACKBONE_NAMES.get(row, row)}): paper ({d.confidence}) {d.delta_err:+.1f}, ours "
                          + ("?" if math.isnan(ours) else f"{ours:+.2f}"))
    # room below the axis for the tick labels (rotated 20 degrees, measured) and the paper's differences (7 pt)
    sin, cos = math.sin(math.radians(20)), math.cos(math.radians(20))
    width = max(6.0, 1.2 * len(columns) + 2)
    reach = [_width(label) * cos + LINE_IN * (_lines(label) - 1) * sin + 0.15 for label in labels]
    for _ in range(3):  # label j ends at its tick, 0.6 + j of the len + 0.2 columns into the axis, and reaches
        # left: the axis starts where the longest reach ends (solved for `left`, the axis being width - left - 0.2)
        share = [(0.6 + j) / (len(columns) + 0.2) for j in range(len(columns))]
        left = max([0.75] + [(r - s * (width - 0.2)) / (1 - s) for r, s in zip(reach, share)])
        if left <= 0.45 * width:
            break
        width = left + 0.55 * width  # a wider figure: the labels fit beside a readable axis
    drop = max(_width(label) * sin + LINE_IN * _lines(label) * cos for label in labels)
    note = _wrap(escape.plot("; ".join(deltas), limit=400), width - 0.3, 7.0) if deltas else ""
    note_h = (0.8 * LINE_IN * _lines(note) + 0.15) if note else 0.0
    title = _wrap(escape.plot(f"{_what(table)}, {DATASET_NAMES.get(table.dataset, table.dataset)}"),
                  width - left - 0.2, 10.0)
    bottom = 0.3 + drop + note_h
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(width, 3.6 + bottom))
        offset = 0.12
        for i, row in enumerate(rows):
            part = cells[cells["row"] == row].set_index("column")
            xs = [columns.index(c) + (i - (len(rows) - 1) / 2) * offset for c in part.index]
            style = _style(i)
            ax.errorbar(xs, part["mean"], yerr=part["std"].fillna(0), capsize=4, linestyle="none",
                        marker=style["marker"], color=style["color"], markersize=6,
                        label=_shorten(escape.plot(BACKBONE_NAMES.get(row, row)), 2.6, 8.0))
        low = (cells["mean"] - cells["std"].fillna(0)).min()
        high = (cells["mean"] + cells["std"].fillna(0)).max()
        pad = max(0.2, 0.15 * (high - low))
        if math.isfinite(low - pad) and math.isfinite(high + pad):  # values near a float's range: autoscaled
            ax.set_ylim(low - pad, high + pad)
        for j, c in enumerate(columns):
            if c not in set(cells["column"]):
                ax.text(j, low, "no runs", ha="center", va="bottom", fontsize=8, color="0.4", rotation=90)
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(labels, rotation=20, ha="right")
        ax.set_xlim(-0.6, len(columns) - 0.4)
        ax.set(ylabel=ERR_LABEL, title=title)
        ax.legend(title="backbone")
        if note:
            fig.text(0.1 / width, 0.1 / fig.get_size_inches()[1], note, ha="left", va="bottom", fontsize=7)
        _lay_out(fig, left=left, bottom=bottom, top=0.2 + TITLE_IN * _lines(title))
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


def _heads_over_training(table: Table, notes: list[str] | None = None) -> Iterator[Figure]:
    """The deployed head (emphasised) vs the live peers (their mean) vs the ensemble teacher (and pcl_e) over
    training, one panel per method (display names, a shared y-axis), one figure per backbone (band: std over
    seeds). For the method comparisons and the PCL-E table (HEAD_TABLES); methods with one head (baseline, kd)
    have no panel."""
    if table.name not in HEAD_TABLES:
        return
    # a table whose columns are heads of the same runs: a panel per method, named by it
    method = _completed(table).set_index("run_key")["method"] if table.spec.heads else None
    for row, part in _rows(table, functools.partial(_head_names, table)):
        if _too_short(table, row, part, "heads", notes):
            continue
        if method is not None:  # per run, not per point (millions of them): the run_key codes index the names
            keys = part["run_key"].astype("category")
            names = [METHOD_NAMES.get(m, m) for m in method.reindex(keys.cat.categories)]
            found, uniques = pd.factorize(pd.Series(names, dtype=object))
            part = part.assign(column=pd.Categorical.from_codes(found[keys.cat.codes.to_numpy()],
                                                                pd.Index(uniques, dtype=object)))
        columns = list(part["column"].unique())  # in order of appearance, as the runs come
        wrap = min(4, len(columns))
        nrows = math.ceil(len(columns) / wrap)
        order = ["deployed head", "live peers (mean over peers)", "ensemble teacher",
                 "PCL-E of the temporal means (pcl_e)"]
        with plt.rc_context(STYLE):
            title = escape.plot(_title(table, row))
            width = max(3.6 * wrap, min(_width(title, 10.0) + 0.4, 4.0 * wrap + 2.0))  # the title fits, or wraps
            title = _wrap(title, width - 0.6, 10.0)
            panel_w = (width - 0.95 - 0.25 * (wrap - 1)) / wrap
            fig, axes = plt.subplots(nrows, wrap, figsize=(width, 3.2 * nrows), sharey=True,
                                     squeeze=False)  # its height is set below, from what goes above the panels
            title_lines = 1
            for ax, column in zip(axes.flat, columns):
                stats = _mean_std(part[part["column"] == column])
                _draw(ax, stats, order, emphasise="deployed head")  # one style per kind of head in every panel
                _mark_lr_steps(ax, _milestones(table, row))
                shown = column if table.spec.heads else table.spec.display(column)
                title_lines = max(title_lines, _set_title(ax, escape.plot(shown), panel_w))
                ax.set(xlabel="epoch")
                _epoch_ticks(ax)
            for ax in list(axes.flat)[len(columns):]:
                ax.remove()
            for ax in axes[:, 0]:
                ax.set_ylabel(ERR_LABEL)
            legend: dict[str, Any] = {}
            for ax in axes.flat[:len(columns)]:
                for handle, label in zip(*ax.get_legend_handles_labels()):
                    legend.setdefault(label, handle)
            # above the panels: the title, then the legend in as many columns as the width holds, the panel titles
            entry = 0.7 + max(_width(label, 8.0) for label in legend)  # a line sample and the label
            ncol = max(1, min(len(legend), int((width - 0.2) // entry)))
            rows_h = sum(max(_lines(label) for label in list(legend)[i:i + ncol]) for i in range(0, len(legend), ncol))
            above = 0.15 + TITLE_IN * _lines(title)
            panel_title = 0.15 + TITLE_IN * title_lines
            top = above + LINE_IN * (1 + rows_h) + 0.15 + panel_title
            down = 0.55 + panel_title
            height = top + 0.55 + 2.6 * nrows + down * (nrows - 1)  # panels 2.6 in high
            fig.set_size_inches(width, height)
            fig.suptitle(title, y=1 - 0.08 / height, va="top")
            fig.legend(list(legend.values()), list(legend), title="head", loc="upper center", ncol=ncol,
                       bbox_to_anchor=(0.5, 1 - above / height), frameon=False)
            _lay_out(fig, top=top, across=0.25, down=down)
        yield (Figure(f"{table.stem}_heads_{row}", "heads",
                              f"{_title(table, row)}: the deployed head (thick) vs the live peers (mean over peers) "
                              f"vs the ensemble teacher over training (band: +- one std over seeds).", fig))


def heads_over_training(table: Table, notes: list[str] | None = None) -> list[Figure]:
    """Every figure of _heads_over_training (one per backbone)."""
    return list(_heads_over_training(table, notes))


def _diversity(table: Table, notes: list[str]) -> Iterator[Figure]:
    """Peer diversity over training (`test/diversity`: mean pairwise distance between the peers' predictions on
    the test set) per method, one figure per backbone; a line in `notes` when no run of the table logged it
    (never an empty figure), one for the backbones whose runs logged too few epochs."""
    if table.spec.heads:
        return
    short: list[str] = []
    logged = False
    for row, part in _rows(table, functools.partial(_diversity_names, table)):
        logged = True
        if _too_short(table, row, part, "diversity", short):
            continue
        stats = _mean_std(part)
        order = list(dict.fromkeys(stats["series"]))
        with plt.rc_context(STYLE):
            fig, ax = plt.subplots(figsize=(7, 4.2))
            _draw(ax, stats, order)
            _mark_lr_steps(ax, _milestones(table, row))
            ax.set(xlabel="epoch", ylabel="peer diversity on the test set\n(mean pairwise disagreement, %)")
            lines = _set_title(ax, escape.plot(_title(table, row)), 5.8)
            _epoch_ticks(ax)
            ax.legend(title=_shorten(table.spec.column_title, 2.6, 8.0))
            _lay_out(fig, left=0.95, top=0.2 + TITLE_IN * lines)  # a two-line y label; the panel 5.85 in wide
        yield Figure(f"{table.stem}_diversity_{row}", "diversity",
                     f"{_title(table, row)}: diversity of the peers' test predictions over training.", fig)
    if not logged:
        notes.append(f"{table.name} ({table.dataset}): no run logged {DIVERSITY!r} (methods without peers do "
                     "not), so there is no diversity figure")
    elif short:
        notes.append("; ".join(short))


def diversity(table: Table) -> tuple[list[Figure], str | None]:
    """Every figure of _diversity, and its lines in one (None when there are none)."""
    notes: list[str] = []
    figures = list(_diversity(table, notes))
    return figures, "; ".join(notes) or None


def iter_figures(table: Table, notes: list[str]) -> Iterator[Figure]:
    """Every figure of one table, one at a time (each can be saved and closed before the next is drawn), and
    in `notes` one line per figure kind that could not be drawn (and why)."""
    _METRICS.setdefault(id(table), {})  # MongoDB curves may be there already (_prefetch)
    try:
        yield from _error_curves(table, notes)
        yield from peers_plot(table)
        yield from ablation_bars(table)
        yield from _heads_over_training(table, notes)
        yield from _diversity(table, notes)
    finally:
        _forget(table)


def figures_for(table: Table) -> tuple[list[Figure], list[str]]:
    """Every figure of one table, and one line per figure kind that could not be drawn (and why)."""
    notes: list[str] = []
    figures = list(iter_figures(table, notes))
    return figures, notes


#: the files of a figure: a raster for screens and reports, a vector format for a paper (svg: --formats)
FORMATS = ("png", "pdf")
KNOWN_FORMATS = ("png", "pdf", "svg")


#: the vector files without the time they were written: the same figure gives the same bytes at any time
_UNDATED = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def save(figure: Figure, out_dir: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write STEM.FORMAT for each format (png at raster.DPI; pdf and svg are vector) under out_dir; the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, data in _encoded(figure.figure, formats).items():
        paths.append(out / f"{figure.stem}.{fmt}")
        with replacing(paths[-1]) as tmp:  # never through a link in the output folder
            tmp.write_bytes(data)
    return paths


def _encoded(fig: Any, formats: Sequence[str]) -> dict[str, bytes]:
    """The figure's file in each format, in the order of `formats`.

    The layout is fixed when the figure is made (_lay_out), so each drawing is final. With a PDF, the PNG is the
    PDF rasterized by PDFium (analysis.raster): one matplotlib drawing gives both files, the costly part of a
    figure."""
    files: dict[str, bytes] = {}
    with plt.rc_context(STYLE):  # ticks made while drawing get the figure's style
        if "pdf" in formats and "png" in formats and raster.renderer() != "agg":
            buffer = io.BytesIO()
            fig.savefig(buffer, format="pdf", metadata=_UNDATED["pdf"])
            files["pdf"] = buffer.getvalue()
            files["png"] = raster.png(files["pdf"], raster.png_size(fig.get_size_inches()))
        for fmt in formats:
            if fmt not in files:
                buffer = io.BytesIO()
                fig.savefig(buffer, format=fmt, dpi=raster.DPI, metadata=_UNDATED.get(fmt),
                            **({"pil_kwargs": {"compress_level": raster.PNG_COMPRESSION}} if fmt == "png" else {}))
                files[fmt] = buffer.getvalue()
    return {fmt: files[fmt] for fmt in formats}


def _load_writers(formats: Sequence[str]) -> None:
    """A small figure written in `formats` and dropped, before the workers fork: the writers' modules (the PDF's
    fontTools), the font read for embedding and PDFium's library loaded once and shared, where each worker loaded
    them at its first figure (at 3,000 runs: ~0.3 s and ~20 MB of each of the 14 workers, two of them at once)."""
    fig, ax = plt.subplots(figsize=(1.5, 1))
    try:
        ax.plot([0, 1], [0, 1], label="PCL")
        ax.set_title("PCL")
        ax.legend()
        _encoded(fig, formats)
    finally:
        plt.close(fig)


def plot_workers(requested: int | None = None) -> int:
    """Processes that draw figures (a table each): --workers, else $PCL_PLOT_WORKERS, else the CPUs this process
    may use."""
    if requested is None:
        env = os.environ.get("PCL_PLOT_WORKERS", "")
        if env.isascii() and env.isdigit() and int(env) > 0:
            requested = int(env)
        else:
            requested = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, requested)


#: runs whose curves are fetched (one query each, pcl.results.metric_documents) before they become arrays: their
#: documents as Python lists are a few MB
_CHUNK = 25


def _prefetch(table: Table, *, here: bool = True) -> None:
    """The test curves of the table's MongoDB runs not read yet, _CHUNK runs at a time. `here=False` (the
    command, before it forks the table's worker): only those of databases a worker cannot open again itself
    (pcl.results.reopenable); the worker fetches the rest."""
    from pcl import results

    cache = _METRICS.setdefault(id(table), {})
    runs = [r for r in _completed(table).to_dict("records")
            if not str(r["attempt"]["record"].get("source") or "").startswith("file:") and r["run_key"] not in cache
            and (here or not results.reopenable(r["attempt"]["record"].get("_db")))]
    for start in range(0, len(runs), _CHUNK):  # each chunk's documents made arrays before the next is fetched
        part = runs[start:start + _CHUNK]
        names = [_drawn_names(table, run) for run in part]
        # the deployed head's curve once: its own series, its COPY only for a run without it (both were a fifth of
        # what make_plots fetched at 3,000 runs)
        own = [next((n for n in _curve_names(table, run) if n != COPY), None) for run in part]
        asked = [n - {COPY} if own[i] else n for i, n in enumerate(names)]
        documents = metric_documents([r["attempt"]["record"] for r in part], DRAWN, names=asked.__getitem__)
        lacking = [i for i in documents if own[i] and COPY in names[i]
                   and not any(isinstance(d, dict) and d.get("name") == own[i] for d in documents[i])]
        if lacking:
            copies = metric_documents([part[i]["attempt"]["record"] for i in lacking], DRAWN,
                                      names=lambda j: (COPY,))
            for j, i in enumerate(lacking):
                documents[i] += copies.get(j, [])
        for i, run in enumerate(part):
            if i in documents:
                _cache(table, run["run_key"], metric_arrays(run["attempt"]["record"], DRAWN, documents.pop(i),
                                                            names=names[i]))


def _fetched_here(table: Table) -> bool:
    """Whether some of the table's curves are in a database a forked worker cannot open again (_prefetch
    here=False fetches them in the command)."""
    from pcl import results

    dbs = {id(db): db for db in (a["record"].get("_db") for a in _completed(table)["attempt"]) if db is not None}
    return not all(results.reopenable(db) for db in dbs.values())


def _own_connections(table: Table) -> list[Any]:
    """In a forked worker: the table's records point at databases of this worker's own (a MongoDB client must not
    be used across fork); the databases opened, to close."""
    from pcl import results

    opened: dict[int, Any] = {}
    for attempt in _completed(table)["attempt"]:
        record = attempt["record"]
        db = record.get("_db")
        if db is not None and results.reopenable(db):
            if id(db) not in opened:
                opened[id(db)] = results.reopen(db)
            record["_db"] = opened[id(db)]
    return list(opened.values())


@dataclass
class _Job:
    """One table's figures to draw: what a worker process is given (inherited at fork, not pickled)."""

    table: Table
    out_dir: Path
    formats: tuple[str, ...]
    keep: bool
    hashes: bool  # the files' SHA-256 for the manifest


@dataclass
class _Done:
    """What a table gives back: its figures and their files, notes, and per figure its files' [[name, sha256],
    ...] for the manifest (None where not computed or a file could not be read)."""

    figures: list[tuple[Figure, list[Path]]]
    notes: list[str]
    files: list[Any]


def _draw_table(job: _Job) -> _Done:
    """One table's figures drawn and saved, each closed (unless job.keep) before the next is drawn."""
    notes: list[str] = []
    done, files = [], []
    # what exists already (the records: ~0.1 s to scan at 3,000 runs) is no garbage of this drawing; a forked
    # worker has it frozen by the command, and a caller's own freeze is left as it was
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    # the metrics files in the order the figures read them (by row, as _rows): from a cold disk, read one by one,
    # they waited for it one at a time
    read_ahead_metrics(attempt["record"] for _, part in _completed(job.table).groupby("row", sort=False)
                       for attempt in part["attempt"])
    try:
        for figure in iter_figures(job.table, notes):
            paths = save(figure, job.out_dir, job.formats)
            files.append(figcache.file_hashes(paths) if job.hashes else None)
            if not job.keep:
                plt.close(figure.figure)
                figure = Figure(figure.stem, figure.kind, figure.caption, None)
                _give_back()
            done.append((figure, paths))
    finally:
        if freeze:
            gc.unfreeze()
    return _Done(done, notes, files)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (another C library, another system)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _give_back() -> None:
    """A closed figure's memory handed back to the system: its artists are freed by the collector (matplotlib's
    figures hold reference cycles), and glibc keeps freed memory (the rasterized bitmap, the PDF, the parsed
    series) in its heaps unless trimmed. Without this a worker drawing table2 at 3,000 runs grew by ~100 MB, of
    which ~45 MB were live objects."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _work_in_child(job: _Job, conn: Any) -> None:
    connections: list[Any] = []
    try:
        connections = _own_connections(job.table)
        _prefetch(job.table)  # its MongoDB curves, on its own connections, while the other workers draw
        result: tuple[bool, Any] = (True, _draw_table(job))
    except BaseException as err:  # noqa: BLE001 - given to the parent, which raises it
        result = (False, err)
    finally:
        for db in connections:
            db.client.close()
    try:
        conn.send(result)
    except Exception as err:  # noqa: BLE001 - e.g. an exception that does not pickle
        conn.send((False, RuntimeError(f"drawing {job.table.stem}: {type(err).__name__}: {err}")))
    conn.close()


def _cost(table: Table) -> int:
    """A rough share of the work of a table (its completed runs, twice for the head figures): largest first."""
    return len(_completed(table)) * (2 if table.name in HEAD_TABLES else 1) + 1


def _draw_tables(jobs: Sequence[_Job], workers: int) -> list[_Done]:
    """Every job, in `workers` processes forked one per table, largest first (each reads its table's curves,
    draws and saves: all of it in parallel); here, one after the other, when one worker is asked for, figures
    are kept open, or fork is not available. The results in the order of the jobs."""
    if workers <= 1 or len(jobs) < 2 or any(j.keep for j in jobs) \
            or "fork" not in multiprocessing.get_all_start_methods():
        done = []
        for job in jobs:
            _prefetch(job.table)
            done.append(_draw_table(job))
        return done
    context = multiprocessing.get_context("fork")
    _load_writers(jobs[0].formats)
    results: list[_Done | None] = [None] * len(jobs)
    waiting = iter(sorted(range(len(jobs)), key=lambda i: -_cost(jobs[i].table)))
    # decided before the first fork: touching a table's records once a worker shares them copies their pages (the
    # command held ~25 MB more per table while two workers drew)
    here = [_fetched_here(job.table) for job in jobs]

    def fetch_next() -> int | None:
        """The next job, the MongoDB curves its worker cannot fetch itself fetched (while the workers draw the
        ones before it)."""
        i = next(waiting, None)
        if i is not None and here[i]:
            _prefetch(jobs[i].table, here=False)
        return i

    running: dict[Any, tuple[int, Any]] = {}
    upcoming = fetch_next()
    try:
        while True:
            while len(running) < workers and upcoming is not None:
                i = upcoming
                read, write = context.Pipe(duplex=False)
                gc.freeze()  # the records stay shared with the worker: its collector does not write to their pages
                process = context.Process(target=_work_in_child, args=(jobs[i], write), daemon=True)
                process.start()
                write.close()
                _forget(jobs[i].table)  # the worker has its own copy
                running[read] = (i, process)
                upcoming = fetch_next()
            if not running:
                break
            for conn in multiprocessing.connection.wait(list(running)):
                i, process = running.pop(conn)
                try:
                    ok, value = conn.recv()
                except EOFError:
                    ok, value = False, RuntimeError(f"the process drawing {jobs[i].table.stem} ended without a "
                                                    f"result (exit code {process.exitcode})")
                except Exception as err:  # noqa: BLE001 - e.g. its error does not unpickle here
                    ok, value = False, RuntimeError(f"the process drawing {jobs[i].table.stem} failed and its "
                                                    f"error could not be read back ({type(err).__name__}: {err})")
                finally:
                    conn.close()
                    process.join()
                if not ok:
                    raise value
                results[i] = value
    finally:
        for conn, (_, process) in running.items():  # an error: no worker left behind
            process.terminate()
            process.join()
            conn.close()
        gc.unfreeze()
    return [r for r in results if r is not None]


def make_figures(tables: Iterable[Table], out_dir: str | Path, *, keep: bool = False,
                 formats: Sequence[str] = FORMATS, workers: int | None = 1, reuse: bool = True
                 ) -> tuple[list[tuple[Figure, list[Path]]], list[str]]:
    """Draw and save every figure of the tables: ([(figure, paths)], notes); figures are closed unless keep.

    Each table's fingerprint is taken here; each table to draw is one job (its curves read, its figures drawn
    and saved) in one of `workers` processes (plot_workers(None): one per CPU), the largest tables first.
    Nothing of the result depends on the number of workers. With `reuse` (and not keep), a table whose inputs did
    not change since the last call into out_dir keeps its files (analysis.figcache): its figures come back with
    kept=True and no matplotlib figure; without it every table is drawn. Either way (not keep) the manifest remembers what was drawn."""
    formats = list(dict.fromkeys(formats))  # `--formats png png`: one file each (the cache expects one per format)
    unknown = [f for f in formats if f not in KNOWN_FORMATS]
    if unknown or not formats:
        raise ValueError(f"figure formats {list(formats)!r}: each must be one of {', '.join(KNOWN_FORMATS)}")
    notes: list[str] = []
    # reuse=False draws every table but still remembers what it drew (the next call may keep it)
    manifest = None if keep else figcache.Manifest.load(out_dir, notes if reuse else [])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tables = list(tables)
    keys: list[str | None] = [None] * len(tables)
    results: list[_Done | None] = [None] * len(tables)
    for i, table in enumerate(tables):
        if manifest is None:
            continue
        keys[i] = figcache.fingerprint(table, formats, _completed(table))
        hit = manifest.kept(table, keys[i], formats) if reuse else None
        if hit is not None:
            results[i] = _Done([(Figure(k.stem, k.kind, k.caption, None, kept=True), k.paths) for k in hit[0]],
                               hit[1], [])
    todo = [i for i, r in enumerate(results) if r is None]
    jobs = [_Job(tables[i], Path(out_dir), tuple(formats), keep, manifest is not None) for i in todo]
    for i, result in zip(todo, _draw_tables(jobs, plot_workers(workers))):
        results[i] = result
        if manifest is not None and keys[i] is not None:
            manifest.record(tables[i], keys[i], [(f, files) for (f, _), files in zip(result.figures, result.files)],
                            result.notes)
    done: list[tuple[Figure, list[Path]]] = []
    for result in results:
        if result is not None:
            done += result.figures
            notes += result.notes
    if manifest is not None:
        manifest.save()
    return done, notes


__all__ = ["DIVERSITY", "FORMATS", "Figure", "ablation_bars", "diversity", "error_curves", "figures_for",
           "heads_over_training", "iter_figures", "make_figures", "peers_plot", "plot_workers", "save"]
