"""A table knows what it shows (analysis/setting.py): the setting from the plan in its title and file name, and the
paper's numbers compared only in the paper's setting."""
from __future__ import annotations

import math

from analysis import render
from analysis.setting import Setting


def _plan(**changes):
    base = {"dataset": "cifar10", "epochs": 300, "train_subset": None, "data_identity": None}
    return [{**base, **changes, "seed": s} for s in (0, 1, 2)]


def test_the_papers_setting_and_every_way_to_leave_it():
    papers = Setting.of(_plan())
    assert papers.papers and papers.gaps == [] and papers.slug == "official_300ep_3seeds"
    assert papers.describe() == "CIFAR-10, the official files, 300 epochs, all training images, seeds 0-2"
    stand_in = Setting.of(_plan(epochs=2, train_subset=1000, data_identity="md5:0123456789abcdef"))
    assert stand_in.gaps == ["the data are not the official files", "2 epochs, not the paper's 300",
                             "a subset of the training images"]
    assert stand_in.slug == "files-01234567_2ep_1000img_3seeds"
    assert "other files than the official ones (md5:0123456789abcdef" in stand_in.describe()
    assert stand_in.describe().endswith("(not the paper's setting)")
    assert Setting.of(_plan(dataset="synthetic", epochs=1)).gaps[0] == "synthetic is not a dataset of the paper"
    imagenet = Setting.of(_plan(dataset="imagenet", epochs=90, data_identity="files:abcd"))
    assert imagenet.papers and imagenet.data == "an ImageNet folder"


def test_a_cell_outside_the_papers_setting_shows_the_paper_but_no_difference():
    cell = {"paper_err": 6.0, "paper_std": math.nan, "paper_conf": "A", "diff": math.nan,
            "not_comparable": "2 epochs, not the paper's 300"}
    assert render._paper_text(cell) == "6.00 (A): not comparable (2 epochs, not the paper's 300)"
    assert render._diff_text(cell) == "not comparable"
    comparable = {**cell, "not_comparable": None, "diff": 1.5}
    assert render._paper_text(comparable) == "6.00 (A)" and render._diff_text(comparable) == "+1.50"


def test_a_cell_using_an_older_attempt_says_a_later_one_failed():
    import pandas as pd

    from analysis import render, runs

    base = {"experiment": "table2", "deployed_head": "net", "params_train": 1, "params_deployed": 1,
            "num_classes": 10, "source": "file:r", "record": {}}
    attempts = pd.DataFrame([
        {**base, "run_key": "k", "status": "completed", "time": pd.Timestamp("2026-01-01"), "attempt_id": "old",
         "result": {"deployed/top1_err": 30.0}},
        {**base, "run_key": "k", "status": "failed", "time": pd.Timestamp("2026-01-02"), "attempt_id": "new",
         "result": None}])
    (row,) = runs.planned_status([{"run_key": "k", "method": "baseline", "seed": 0}], attempts).to_dict("records")
    assert row["status"] == "completed" and row["value"] == 30.0 and row["newer"] == "failed"
    cell = {"n": 1, "n_planned": 1, "mean": 30.0, "std": math.nan, "completed": 1, "running": 0, "failed": 0,
            "preempted": 0, "missing": 0, "nan_results": 0, "newer_attempts": "1 failed"}
    assert "older attempt used: a later one is 1 failed" in render._ours_text(cell)


def test_an_ablation_refuses_another_method_instead_of_training_pcl():
    import pytest

    from experiments import registry
    from pcl.schema import ConfigError

    with pytest.raises(ConfigError, match="config key 'method'='dml' is invalid here"):
        registry.plan("ablations.peers", {"method": "dml"}, ["smoke"])
    assert {r["method"] for r in registry.plan("ablations.peers", {}, ["smoke"])} == {"pcl"}


def test_attempts_holding_database_handles_stay_usable_after_planning():
    """A MongoDB record holds its Database (not deep-copyable): planning must not make pandas copy it on every
    column selection (a cache in DataFrame.attrs did, and every analysis command failed on MongoDB)."""
    import threading

    import pandas as pd

    from analysis import runs

    attempts = pd.DataFrame([{"run_key": "k", "status": "completed", "time": pd.Timestamp("2026-01-01"),
                              "attempt_id": "a", "experiment": "table2", "deployed_head": "net",
                              "params_train": 1, "params_deployed": 1, "num_classes": 10, "source": "mongo:x",
                              "result": {"deployed/top1_err": 1.0}, "record": {"_db": threading.Lock()}}])
    for _ in range(2):  # the second call reuses the first's work
        runs.planned_status([{"run_key": "k"}], attempts)
    assert attempts["run_key"].tolist() == ["k"] and not attempts.attrs
