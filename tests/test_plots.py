"""Figures a paper would print (analysis/plots.py): no figure from a single epoch (a note says why instead), the
deployed head drawn thick, one style per kind of head in every panel, vector files beside the PNG."""
from __future__ import annotations

import json
import multiprocessing

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from analysis import plots
from analysis.tables import SPECS, Table


def _table(tmp_path, epochs: int) -> Table:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = []
    for method, heads in (("dml", ["net1", "net2", "ensemble"]), ("pcl", ["peer1", "mean_peer1", "ensemble"])):
        for seed in (0, 1):
            folder = tmp_path / f"{method}{seed}"
            folder.mkdir()
            deployed = "mean_peer1" if method == "pcl" else "net1"
            metrics = {f"test/top1_err/{h}": {"steps": list(range(1, epochs + 1)),
                                              "values": [50.0 - e - i - seed for e in range(epochs)]}
                       for i, h in enumerate(heads)}
            metrics["test/diversity"] = {"steps": list(range(1, epochs + 1)), "values": [10.0] * epochs}
            (folder / "metrics.json").write_text(json.dumps(metrics))
            record = {"source": "file:x", "path": str(folder), "run_id": seed, "info": {"heads": heads},
                      "config": {"epochs": epochs, "milestones": [epochs]}}
            rows.append({"run_key": f"{method}{seed}", "column": method, "row": "resnet32", "seed": seed,
                         "status": "completed", "deployed_head": deployed, "attempt": {"record": record}})
    cells = pd.DataFrame([{"row": "resnet32", "column": c, "n": 2} for c in ("dml", "pcl")])
    return Table(SPECS["table2"], "cifar100", None, "last", cells, pd.DataFrame(rows), "s")


def test_one_epoch_gives_a_note_not_a_figure_of_single_points(tmp_path):
    figures, notes = plots.figures_for(_table(tmp_path, epochs=1))
    assert figures == []
    assert sum("logged 1 epoch(s)" in n for n in notes) == 3  # curves, heads, diversity


def test_heads_share_styles_and_axes_and_the_deployed_head_is_thick(tmp_path):
    (figure,) = plots.heads_over_training(_table(tmp_path, epochs=4))
    dml, pcl = figure.figure.axes
    assert dml.get_shared_y_axes().joined(dml, pcl)  # one y-axis for the panels a reader compares
    assert [ax.get_title() for ax in (dml, pcl)] == ["DML", "PCL"]  # display names, not ids
    for ax in (dml, pcl):
        widths = {line.get_label(): line.get_linewidth() for line in ax.get_lines() if line.get_linestyle() != ":"}
        assert widths["deployed head"] > max(w for k, w in widths.items() if k != "deployed head")
    colour = {ax: {line.get_label(): line.get_color() for line in ax.get_lines()} for ax in (dml, pcl)}
    assert colour[dml]["ensemble teacher"] == colour[pcl]["ensemble teacher"]
    plt.close("all")


def _drawn_tick_labels(ax) -> list:
    """The tick labels matplotlib draws: those of ticks inside the axis' view limits."""
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    return ([t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
            + [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1])


def _outside(fig) -> list[str]:
    """The texts and legends of a figure that reach beyond its edges (clipped in the saved file)."""
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    out = []
    for artist in [*fig.texts, *fig.legends] + [a for ax in fig.axes for a in (
            ax.title, ax.xaxis.label, ax.yaxis.label, *_drawn_tick_labels(ax), ax.get_legend()) if a is not None]:
        if not artist.get_visible() or (hasattr(artist, "get_text") and not artist.get_text()):
            continue
        box = artist.get_window_extent(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            out.append(getattr(artist, "get_text", lambda: type(artist).__name__)())
    return out


def test_the_fixed_layout_keeps_every_text_inside_the_figure(tmp_path):
    """Each kind of figure lays itself out without measuring (no tight layout, no tight box when saved), so every
    title, label, tick label and legend must still fit: long display names included."""
    table = _table(tmp_path, epochs=6)
    long = "a variant with a rather long display name (ema_decay=0.999)"
    bars = Table(SPECS["ablations.mean_teacher"], "cifar100", None, "last",
                 pd.DataFrame([{"row": "resnet32", "column": c, "n": 2, "mean": 27.0 + i, "std": 0.5}
                               for i, c in enumerate(("peer mean teachers of the others (PCL)", long, "x"))]),
                 table.runs, "s")
    figures = plots.figures_for(table)[0] + plots.ablation_bars(bars)
    assert {f.kind for f in figures} == {"curves", "heads", "diversity", "bars"}
    for figure in figures:
        figure.figure.canvas.draw()
        assert _outside(figure.figure) == [], figure.stem
    plt.close("all")


def test_a_table_is_drawn_one_figure_at_a_time(tmp_path, monkeypatch):
    """A worker saves and closes each figure before it draws the next (a CIFAR table has 15)."""
    table = _table(tmp_path, epochs=4)
    open_at_save = []
    saved = plots.save
    monkeypatch.setattr(plots, "save", lambda f, *a, **k: (open_at_save.append(len(plt.get_fignums())),
                                                           saved(f, *a, **k))[1])
    done, _ = plots.make_figures([table], tmp_path / "figs", formats=["png"], workers=1)
    assert len(done) == 3 and open_at_save == [1, 1, 1] and plt.get_fignums() == []


def test_a_worker_that_fails_raises_here_and_leaves_no_process(tmp_path, monkeypatch):
    """An error while a forked worker draws or saves reaches the caller as itself; no worker is left running."""
    two_tables = [_table(tmp_path / "a", epochs=4), _table(tmp_path / "b", epochs=4)]
    two_tables[1] = Table(SPECS["two_stage"], "cifar100", None, "last", two_tables[1].cells, two_tables[1].runs, "s")

    def broken(figure, *args, **kwargs):
        raise RuntimeError(f"disk full while saving {figure.stem}")

    monkeypatch.setattr(plots, "save", broken)  # the workers are forked: they inherit it
    with pytest.raises(RuntimeError, match="disk full while saving"):
        plots.make_figures(two_tables, tmp_path / "figs", formats=["png"], workers=2)
    assert multiprocessing.active_children() == []
