"""Figures a paper would print (analysis/plots.py): no figure from a single epoch (a note says why instead), the
deployed head drawn thick, one style per kind of head in every panel, vector files beside the PNG."""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
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
    assert all("with epochs=2` or more draws one" in n for n in notes)  # what to run instead


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


def test_the_pcl_e_tables_heads_figure_has_a_panel_per_method_in_the_order_of_the_runs(tmp_path):
    """The PCL-E table's columns are heads of the same runs: its heads figure has one panel per method, named by
    its display name, in the order the runs come (the names are looked up per run, not per point)."""
    base = _table(tmp_path, epochs=4)
    runs = base.runs.iloc[::-1].reset_index(drop=True)  # pcl's runs first
    runs = pd.concat([runs.assign(column=head) for head in ("peer1", "ensemble")], ignore_index=True)
    runs["method"] = runs["run_key"].str.rstrip("01")
    table = Table(SPECS["ablations.deployed_head"], "cifar100", None, "last", base.cells, runs, "s")
    (figure,) = plots.heads_over_training(table)
    assert [ax.get_title() for ax in figure.figure.axes] == ["PCL", "DML"]
    for ax in figure.figure.axes:
        assert "deployed head" in [line.get_label() for line in ax.get_lines()]
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


@pytest.mark.parametrize("names", ["paper", "long", "wide"])
def test_the_fixed_layout_keeps_every_text_inside_the_figure(tmp_path, names):
    """Each kind of figure lays itself out without measuring the drawn figure (no tight layout, no tight box when
    saved), so every title, label, tick label and legend must still fit: with the suite's names, a researcher's
    long ones (a backbone, variants, steps in the millions) and wide capitals (measured, not counted)."""
    table = _table(tmp_path, epochs=6)
    variants = ["peer mean teachers of the others (PCL)", "a variant with a rather long display name "
                "(ema_decay=0.999)", "x"]
    if names != "paper":
        backbone = "my_backbone_" + "with_a_very_long_name_" * 3 if names == "long" else "W" * 70
        variants = [v.upper() for v in variants] + ["V" * 120] if names == "wide" else variants + ["a " * 60]
        for frame in (table.runs, table.cells):
            frame["row"] = backbone
        table.runs["attempt"] = [{"record": {**a["record"], "config": {"epochs": 6, "milestones": [3]}}}
                                 for a in table.runs["attempt"]]
    bars = Table(SPECS["ablations.mean_teacher"], "cifar100", None, "last",
                 pd.DataFrame([{"row": table.cells["row"][0], "column": c, "n": 2, "mean": 27.0 + i, "std": 0.5}
                               for i, c in enumerate(variants)]), table.runs, "s")
    figures = plots.figures_for(table)[0] + plots.ablation_bars(bars)
    assert {f.kind for f in figures} == {"curves", "heads", "diversity", "bars"}
    for figure in figures:
        figure.figure.canvas.draw()
        assert _outside(figure.figure) == [], figure.stem
    plt.close("all")


def test_infinite_values_and_repeated_epochs(tmp_path):
    """A curve holding inf (strict JSON reads 1e400 so) is drawn without it; a run whose peers logged an epoch
    twice gets the mean over all their finite values of that epoch (not a mean of means)."""
    table = _table(tmp_path, epochs=4)
    for run in table.runs.to_dict("records"):
        path = Path(run["attempt"]["record"]["path"]) / "metrics.json"
        metrics = json.loads(path.read_text())
        for series in metrics.values():
            series["values"][1] = math.inf
        path.write_text(json.dumps(metrics))
    figures, _ = plots.figures_for(table)
    assert figures and all(np.isfinite(ax.get_ylim()).all() for f in figures for ax in f.figure.axes)
    plt.close("all")
    epoch = np.array([1, 1, 2])
    steps, values = plots._average([(epoch, np.array([10.0, 20.0, 5.0])), (epoch, np.array([np.nan, 40.0, 5.0]))])
    assert steps.tolist() == [1, 2] and values.tolist() == [pytest.approx(70 / 3), 5.0]
    steps, values = plots._average([(np.array([1, 2]), np.array([np.inf, 3.0])), (np.array([1, 2]), np.array([1.0, 5.0]))])
    assert steps.tolist() == [1, 2] and values.tolist() == [1.0, 4.0]


def test_a_table_is_drawn_one_figure_at_a_time(tmp_path, monkeypatch):
    """A worker saves and closes each figure before it draws the next (a CIFAR table has 15)."""
    table = _table(tmp_path, epochs=4)
    open_at_save = []
    saved = plots.save
    monkeypatch.setattr(plots, "save", lambda f, *a, **k: (open_at_save.append(len(plt.get_fignums())),
                                                           saved(f, *a, **k))[1])
    done, _ = plots.make_figures([table], tmp_path / "figs", formats=["png"], workers=1)
    assert len(done) == 3 and open_at_save == [1, 1, 1] and plt.get_fignums() == []


def test_a_tables_metrics_files_are_read_ahead_in_the_order_its_figures_read_them(tmp_path, monkeypatch):
    """Before a table's figures are drawn, the kernel is asked for its runs' metrics files, row by row as the
    figures read them (from a cold disk, files read one by one wait for it one at a time)."""
    table = _table(tmp_path, epochs=4)
    wide = tmp_path / "dml_wide"
    wide.mkdir()
    (wide / "metrics.json").write_bytes(Path(table.runs["attempt"][0]["record"]["path"], "metrics.json").read_bytes())
    other = table.runs.iloc[[0]].assign(row="wrn20_8", run_key="dml_wide",
                                        attempt=[{"record": {**table.runs["attempt"][0]["record"], "path": str(wide)}}])
    # rows in the table's runs: resnet32, resnet32, wrn20_8, resnet32, resnet32
    table.runs = pd.concat([table.runs.iloc[:2], other, table.runs.iloc[2:]], ignore_index=True)
    asked: list[list[str]] = []
    monkeypatch.setattr(plots, "read_ahead_metrics", lambda records: asked.append([r["path"] for r in records]))
    plots.make_figures([table], tmp_path / "figs", formats=["png"], workers=1)
    rows = table.runs["row"].tolist()
    paths = [a["record"]["path"] for a in table.runs["attempt"]]
    assert asked == [[p for r, p in zip(rows, paths) if r == "resnet32"] + [p for r, p in zip(rows, paths)
                                                                          if r == "wrn20_8"]]


def test_a_tables_cached_curves_hold_one_read_only_epochs_array_per_distinct_epochs(tmp_path):
    """Nearly every series of a table has the same epochs (half the bytes a worker holds): the cache keeps one
    array of them, which nothing may change; a run with other epochs keeps its own; the cache goes with the table."""
    table = _table(tmp_path, epochs=4)
    short = Path(table.runs["attempt"].iloc[-1]["record"]["path"]) / "metrics.json"
    metrics = json.loads(short.read_text())
    short.write_text(json.dumps({k: {"steps": v["steps"][:3], "values": v["values"][:3]} for k, v in metrics.items()}))
    figures = plots.iter_figures(table, [])
    next(figures)  # the first figure has read every run's curves
    cached = plots._METRICS[id(table)]
    steps = {run_key: {id(s) for s, _ in series.values()} for run_key, series in cached.items()}
    assert len(cached) == 4 and all(len(ids) == 1 for ids in steps.values())
    assert len(set().union(*steps.values())) == 2  # 4 epochs (three runs), 3 epochs (the last)
    arrays = [s for series in cached.values() for s, _ in series.values()]
    assert not any(a.flags.writeable for a in arrays)
    assert {len(a) for a in arrays} == {3, 4}
    for _ in figures:
        pass
    assert id(table) not in plots._METRICS and id(table) not in plots._EPOCHS
    plt.close("all")


def test_the_same_figures_are_the_same_bytes_whenever_they_are_drawn(tmp_path):
    """Nothing outside the records changes a figure file: no creation date in the PDF or SVG, no random ids in the
    SVG (matplotlib writes both by default), so two draws a second apart give the same files."""
    import time

    table = _table(tmp_path / "runs", epochs=4)
    drawn = []
    for out in ("a", "b"):
        done, _ = plots.make_figures([table], tmp_path / out, formats=["png", "pdf", "svg"], workers=1, reuse=False)
        drawn.append({p.name: p.read_bytes() for _, paths in done for p in paths})
        time.sleep(1.1)  # the PDF's date has seconds
    assert len(drawn[0]) == 9 and drawn[0] == drawn[1]


def test_the_writers_are_loaded_once_before_the_workers_fork(tmp_path, monkeypatch):
    """The command writes one small figure in the asked formats before it forks the workers (each worker loaded the
    PDF writer's fontTools and PDFium at its first figure: ~0.3 s and ~20 MB of its own, two at once): in memory,
    no file, no figure left open; the workers' files are the bytes one process writes."""
    two_tables = [_table(tmp_path / "a", epochs=4), _table(tmp_path / "b", epochs=4)]
    two_tables[1] = Table(SPECS["two_stage"], "cifar100", None, "last", two_tables[1].cells, two_tables[1].runs, "s")
    written: list[tuple[int, tuple[str, ...]]] = []
    encoded = plots._encoded
    monkeypatch.setattr(plots, "_encoded", lambda fig, formats: (written.append((os.getpid(), tuple(formats))),
                                                                 encoded(fig, formats))[1])
    open_before = plt.get_fignums()
    files = {}
    for workers in (2, 1):
        written.clear()
        done, _ = plots.make_figures(two_tables, tmp_path / f"figs{workers}", formats=["png", "pdf"],
                                     workers=workers, reuse=False)
        files[workers] = {p.name: p.read_bytes() for _, paths in done for p in paths}
        # here: the warm-up alone with workers (the figures were written in the forked processes), every figure
        # without them
        assert written == [(os.getpid(), ("png", "pdf"))] * (1 if workers == 2 else len(done))
    assert plt.get_fignums() == open_before
    assert files[2] == files[1] and len(files[2]) > 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "figs1", "figs2"]


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

    def unreadable(figure, *args, **kwargs):  # an error whose pickle cannot be read back in the parent
        raise _TwoArgumentError(figure.stem, "why")

    monkeypatch.setattr(plots, "save", unreadable)
    with pytest.raises(RuntimeError, match="could not be read back"):
        plots.make_figures(two_tables, tmp_path / "figs2", formats=["png"], workers=2)
    assert multiprocessing.active_children() == []


class _TwoArgumentError(Exception):
    def __init__(self, stem, why):
        super().__init__(f"{stem}: {why}")


_hypothesis = pytest.importorskip("hypothesis")


@_hypothesis.settings(max_examples=60, deadline=None)
@_hypothesis.given(text=_hypothesis.strategies.text(max_size=150), inches=_hypothesis.strategies.floats(0.3, 5.0))
def test_wrapped_and_shortened_labels_fit_and_keep_their_escapes(text, inches):
    """A label from a record (any text, escaped for matplotlib) is wrapped or shortened to a measured width: every
    line fits (or is one character), no character is lost but spaces at the breaks, and no break or cut separates
    the backslash from the `$` it escapes (a mathtext `$` would reach matplotlib's parser)."""
    from analysis import escape

    label = escape.plot(text)
    wrapped = plots._wrap(label, inches)
    assert wrapped.replace("\n", "").replace(" ", "") == label.replace(" ", "")
    for line in wrapped.split("\n"):
        assert len(line) <= 1 or plots._width(line) <= inches or " " not in line and len(line) == 1
        assert "$" not in line.replace("\\$", "")
    short = plots._shorten(label, inches, 8.0)
    assert short == label or (short.endswith("…") and label.startswith(short[:-1]) and plots._width(short, 8.0)
                                <= max(inches, plots._width(label[:1] + "…", 8.0)))
    assert "$" not in short.replace("\\$", "")


def test_the_png_is_the_pdf_rasterized_and_looks_like_matplotlibs_own(tmp_path, monkeypatch):
    """With pypdfium2 and a PDF asked for, each figure is drawn once: the PNG is its PDF rasterized, of the size and
    DPI tag of matplotlib's own (Agg) PNG of the figure, whose pixels it matches up to antialiasing. A PNG without a
    PDF, or without pypdfium2, is drawn by Agg; the figure cache does not keep one renderer's PNG as the other's."""
    pytest.importorskip("pypdfium2")
    from PIL import Image

    from analysis import figcache, raster

    def drawn(out, renderer, formats=("png", "pdf")):
        monkeypatch.setattr(raster, "renderer", lambda: renderer)
        (figure,) = plots.heads_over_training(_table(tmp_path / out, epochs=6))
        draws, savefig = [], figure.figure.savefig
        figure.figure.savefig = lambda *a, **k: (draws.append(k.get("format") or Path(a[0]).suffix), savefig(*a, **k))
        paths = plots.save(figure, tmp_path / out / "figs", formats)
        plt.close(figure.figure)
        return draws, paths

    draws, (png, pdf) = drawn("pdfium", "pdfium test")
    assert draws == ["pdf"] and pdf.read_bytes().startswith(b"%PDF")
    assert drawn("alone", "pdfium test", ["png"])[0] == ["png"]  # a PDF first would cost more than Agg
    agg_draws, (agg_png, _) = drawn("agg", "agg")
    assert agg_draws == ["png", "pdf"]
    image, reference = (Image.open(p) for p in (png, agg_png))
    assert image.size == reference.size and image.info["dpi"] == pytest.approx(reference.info["dpi"], abs=0.1)
    pixels, expected = (np.asarray(i.convert("RGB"), dtype=float) for i in (image, reference))
    difference = np.abs(pixels - expected).max(axis=2)
    assert difference.mean() < 6 and (difference > 64).mean() < 0.05  # the same drawing, not a blank or a shift
    assert pixels.min() < 64  # lines and text, not a white page

    # sizes whose points PDFium rounds the other way (4.2 in tall: every curves, peers and diversity figure)
    for inches in [(10, 4.2), (6, 4.2), (7, 4.2), (10.8, 6.4), (3.3, 2.7), (12.345, 5.55)]:
        fig = plt.figure(figsize=inches)
        fig.add_subplot().plot([0, 1])
        sizes = []
        for renderer in ("pdfium test", "agg"):
            monkeypatch.setattr(raster, "renderer", lambda renderer=renderer: renderer)
            png, _ = plots.save(plots.Figure(f"s{renderer[0]}", "x", "", fig), tmp_path / "sizes", ["png", "pdf"])
            sizes.append(Image.open(png).size)
        plt.close(fig)
        assert sizes[0] == sizes[1], inches

    table = _table(tmp_path / "key", epochs=4)
    keys = []
    for renderer in ("agg", "pdfium 1"):
        monkeypatch.setattr(raster, "renderer", lambda renderer=renderer: renderer)
        figcache._code_version.cache_clear()
        keys.append(figcache.fingerprint(table, ["png"], table.runs))
    figcache._code_version.cache_clear()
    assert keys[0] != keys[1]


def test_the_png_falls_back_to_agg_where_pypdfium2_does_not_load(monkeypatch):
    """pypdfium2 installed but unusable (its library does not load) is as if missing: Agg draws the PNGs."""
    from analysis import raster

    class Broken:
        def find_spec(self, name, *args):
            if name == "pypdfium2":
                raise OSError("libpdfium: cannot open shared object file")

    monkeypatch.delitem(sys.modules, "pypdfium2", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    raster.renderer.cache_clear()
    try:
        assert raster.renderer() == "agg"
    finally:
        raster.renderer.cache_clear()


def test_a_format_asked_twice_is_one_file_and_the_figures_are_kept_again(tmp_path):
    """`--formats png png`: one file per figure, and the next call keeps them (the figure cache expects one file per
    asked format: with the repeat it found one short and drew every figure again)."""
    table = _table(tmp_path / "a", epochs=4)
    first, _ = plots.make_figures([table], tmp_path / "figs", formats=["png", "png"])
    again, _ = plots.make_figures([table], tmp_path / "figs", formats=["png", "png"])
    assert first and all(len(paths) == 1 and paths[0].suffix == ".png" for _, paths in first)
    assert all(figure.kept for figure, _ in again) and [p for _, p in again] == [p for _, p in first]
