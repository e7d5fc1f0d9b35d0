"""Figures a paper would print (analysis/plots.py): no figure from a single epoch (a note says why instead), the
deployed head drawn thick, one style per kind of head in every panel, vector files beside the PNG."""
from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd

from analysis import plots
from analysis.tables import SPECS, Table


def _table(tmp_path, epochs: int) -> Table:
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
