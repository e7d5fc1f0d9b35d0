"""analysis/: records of real smoke runs (file store and the SecantusDB MongoDB server) -> loader, tables, plots,
report; the numbers of a table equal a hand computation from the record files; statuses are counted per cell.

One session-scoped study trains every run once (tiny_resnet8, synthetic data, 2 epochs):
  table2 (baseline, pcl) x seeds 0,1                 -> 4 COMPLETED
  ablations.peers m=2,3,4,5 x seeds 0,1               -> m=3 is table2's pcl run (shared run_key), m=2 COMPLETED,
                                                         m=4 seed 0 PREEMPTED (a real SIGUSR2 in a callback),
                                                         m=4 seed 1 and m=5 never run (missing)
  table2 baseline on cifar10 without data             -> FAILED (a second dataset in the store)
  table2 pcl seed 0 into MongoDB                      -> COMPLETED (mongo + its file copy)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from helpers_data import write_cifar10

from analysis import cli, make_plots, make_tables, paper, render, report, runs, tables
from experiments import registry
from pcl import tracking

ROOT = Path(__file__).resolve().parents[1]
BASE = {"method": ["baseline", "pcl"], "seeds": [0, 1], "epochs": 2}
PEERS = {"peer_counts": [2, 3, 4, 5], "seeds": [0, 1], "epochs": 2}
SMOKE = ["smoke"]
CLI_T2 = ["--tables", "table2", "--named", "smoke", "--set", 'method=["baseline","pcl"]', "--set", "seeds=[0,1]",
          "--set", "epochs=2"]


def _grid(configs, results_dir, mongo_url=None, callbacks=()):
    return tracking.run_grid(configs, results_dir=str(results_dir), mongo_url=mongo_url, log=lambda _: None,
                             callbacks=callbacks)


@pytest.fixture(scope="session")
def study(tmp_path_factory, mongo_session_server):
    """Real smoke runs into a file store and a MongoDB database; returns their locations and plans."""
    root = tmp_path_factory.mktemp("analysis-study")
    results_dir, ck = root / "results", root / "ck"
    infra = {"results_dir": str(results_dir), "checkpoint_root": str(ck)}
    plan_t2 = registry.plan("table2", {**BASE, **infra}, SMOKE)
    plan_peers = registry.plan("ablations.peers", {**PEERS, **infra}, SMOKE)
    assert _grid(plan_t2, results_dir).exit_code == 0
    m2 = [r for r in plan_peers if r["peers"] == 2]
    assert [r.status for r in _grid(m2, results_dir).runs] == ["COMPLETED"] * 2

    def preempt(epoch, metrics):  # SLURM's pre-timeout signal, delivered to this process for real
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGUSR2)

    m4 = [r for r in plan_peers if r["peers"] == 4 and r["seed"] == 0]
    assert _grid(m4, results_dir, callbacks=[preempt]).runs[0].status == "PREEMPTED"
    tiny_cifar = root / "tiny-cifar"
    write_cifar10(tiny_cifar, per_batch=8, test_size=16)  # the original format, 40 training images

    def crash(epoch, metrics):
        raise RuntimeError("a run that fails during training")

    cifar = registry.plan("table2", {**BASE, **infra, "dataset": "cifar10", "data_root": str(tiny_cifar),
                                     "method": "baseline", "seeds": [0]}, SMOKE)
    assert _grid(cifar, results_dir, callbacks=[crash]).runs[0].status == "FAILED"
    mongo_url = mongo_session_server.url(db="analysis_study")
    mongo_dir = root / "mongo-copy"
    pcl0 = [r for r in plan_t2 if r["method"] == "pcl" and r["seed"] == 0]
    assert _grid(pcl0, mongo_dir, mongo_url=mongo_url).exit_code == 0
    from analysis.setting import Setting

    return {"results": str(results_dir), "mongo": mongo_url, "cifar_slug": Setting.of(cifar).slug, "mongo_copy": str(mongo_dir), "plan_t2": plan_t2,
            "plan_peers": plan_peers, "cifar": cifar, "m4": m4[0], "root": root}


def _record_files(results_dir: str) -> dict[str, dict]:
    """Hand-read every COMPLETED record of a file store: run_key -> run.json's result (no analysis code)."""
    out = {}
    for run_dir in Path(results_dir).iterdir():
        if (run_dir / "run.json").exists():
            run = json.loads((run_dir / "run.json").read_text())
            config = json.loads((run_dir / "config.json").read_text())
            if run["status"] == "COMPLETED":
                out[config["run_key"]] = run["result"]
    return out


# ---- paper numbers ------------------------------------------------------------------------------------------
def test_paper_cells_are_errors_with_confidence_and_unknown_cells_are_absent():
    pcl = paper.paper_cell("table2", "cifar100", "resnet32", "pcl")
    assert (pcl.top1_err, pcl.std, pcl.confidence) == (pytest.approx(25.86), 0.16, "A")  # 100 - 74.14
    assert paper.paper_cell("table2", "cifar10", "resnet110", "baseline").top1_err == pytest.approx(5.09)
    assert paper.paper_cell("table2", "cifar10", "resnet110", "baseline").std is None  # Q: no std given
    assert paper.paper_cell("table2", "cifar100", "resnet32", "baseline") is None  # unknown: never invented
    assert paper.paper_cell("imagenet", "imagenet", "resnet18", "dml") is None
    assert len([c for c in paper.CELLS if c.table == "table2" and c.confidence == "A"]) == 2 * 5 * 7
    assert all(c.confidence in paper.CONFIDENCE and c.source for c in paper.CELLS + paper.DELTAS)
    assert {d.column for d in paper.paper_deltas("ablations.components", "cifar100", "resnet32")} >= {
        "+ peer ensemble teacher", "PCL w/o multi-input"}


# ---- loader -------------------------------------------------------------------------------------------------
def test_statuses_of_a_plan_are_counted_per_run(study):
    attempts = runs.read_attempts([study["results"]])
    status = runs.planned_status(study["plan_peers"], attempts)
    by_m = status.groupby("peers")["status"].apply(list).to_dict()
    assert by_m == {2: ["completed", "completed"], 3: ["completed", "completed"], 4: ["preempted", "missing"],
                    5: ["missing", "missing"]}
    assert status.set_index("peers").loc[3, "recorded_by"].tolist() == ["table2", "table2"]  # trained by table2
    table = tables.build_table("ablations.peers", study["plan_peers"], attempts, stores="s")
    cells = table.cells.set_index("column")
    assert cells.loc["m=4", ["completed", "preempted", "missing", "n", "n_planned"]].tolist() == [0, 1, 1, 0, 2]
    assert cells.loc["m=5", "missing"] == 2 and math.isnan(cells.loc["m=5", "mean"])
    assert table.status_counts == {"completed": 4, "running": 0, "failed": 0, "preempted": 1, "missing": 3}
    text = render.render_markdown(table)
    assert "n=0/2: 1 preempted, 1 missing)†" in text and "n=0/2: 2 missing)†" in text


def test_failed_run_is_counted_in_its_datasets_table(study):
    attempts = runs.read_attempts([study["results"]])
    plan = registry.plan("table2", {**BASE, "dataset": "cifar10", "data_root": str(study["root"] / "tiny-cifar")},
                         SMOKE)  # the run_key follows the data: the plan names the files the run read
    table = tables.build_table("table2", plan, attempts, stores="s")
    baseline = table.cells.set_index("column").loc["baseline"]
    assert (baseline["failed"], baseline["missing"], baseline["n"]) == (1, 1, 0)
    assert table.cells.set_index("column").loc["pcl", "missing"] == 2


def test_an_interrupted_record_counts_as_preempted_as_in_status(study, tmp_path):
    store = tmp_path / "store"
    attempts = runs.read_attempts([study["results"]])
    source = Path(attempts.loc[attempts["status"] == "preempted", "record"].iloc[0]["path"])
    shutil.copytree(source, store / "1")
    run = json.loads((store / "1" / "run.json").read_text())
    info = json.loads((store / "1" / "info.json").read_text())
    assert run["status"] == "INTERRUPTED" and info["preempted"] is True  # how a preemption is recorded now
    assert runs.read_attempts([str(store)])["status"].tolist() == ["preempted"]
    (store / "1" / "info.json").write_text(json.dumps({k: v for k, v in info.items() if k != "preempted"}))
    # a Ctrl-C: stopped with its last checkpoint like a preemption, resumed by the next launch; slurm/status.py says
    # PREEMPTED for it, and the tables said "failed"
    assert runs.read_attempts([str(store)])["status"].tolist() == ["preempted"]
    assert runs.read_attempts([str(store)])["raw_status"].tolist() == ["INTERRUPTED"]
    (store / "1" / "run.json").write_text(json.dumps(dict(run, status="PREEMPTED")))  # written by older versions
    assert runs.read_attempts([str(store)])["status"].tolist() == ["preempted"]


# ---- tables -------------------------------------------------------------------------------------------------
def test_table_numbers_equal_a_hand_computation_from_the_record_files(study):
    hand = _record_files(study["results"])
    attempts = runs.read_attempts([study["results"]])
    for select, key in (("last", "deployed/top1_err"), ("best", "best_on_test/top1_err/{head}")):
        table = tables.build_table("table2", study["plan_t2"], attempts, stores="s", select=select)
        for method, head in (("baseline", "net"), ("pcl", "mean_peer1")):
            values = [hand[r["run_key"]][key.format(head=head)] for r in study["plan_t2"] if r["method"] == method]
            cell = table.cells.set_index("column").loc[method]
            assert cell["n"] == 2 and cell["n_planned"] == 2
            assert cell["mean"] == pytest.approx(np.mean(values))
            assert cell["std"] == pytest.approx(np.std(values, ddof=1))
    # another head: the pcl runs' ensemble teacher; the baseline has none
    table = tables.build_table("table2", study["plan_t2"], attempts, stores="s", head="ensemble")
    pcl = [hand[r["run_key"]]["last/top1_err/ensemble"] for r in study["plan_t2"] if r["method"] == "pcl"]
    assert table.cells.set_index("column").loc["pcl", "mean"] == pytest.approx(np.mean(pcl))
    assert "no such head" in render.render_markdown(table)
    best = table.cells["mean"].idxmin()
    assert table.cells["best"].tolist() == [i == best for i in table.cells.index]


def test_the_pcl_e_table_shows_both_candidate_heads_with_their_parameter_counts(study):
    attempts = runs.read_attempts([study["results"]])
    plan = registry.plan("ablations.deployed_head", {"seeds": [0, 1], "epochs": 2}, SMOKE)
    table = tables.build_table("ablations.deployed_head", plan, attempts, stores="s")
    cells = table.cells.set_index("column")
    assert list(cells.index) == ["peer1", "mean_peer1", "ensemble", "pcl_e"]
    hand = _record_files(study["results"])
    for head in cells.index:
        values = [hand[r["run_key"]][f"last/top1_err/{head}"] for r in plan]
        assert cells.loc[head, "mean"] == pytest.approx(np.mean(values))
    train = cells.loc["peer1", "params_train"]
    assert cells.loc["ensemble", "params_deployed"] == train  # the live net + the ensemble classifier: all trained
    assert cells.loc["mean_peer1", "params_deployed"] < cells.loc["pcl_e", "params_deployed"] < train
    text = render.render_markdown(table)
    assert "ensemble (peer ensemble teacher) = PCL-E here" in text and "pcl_e (ensemble of the temporal means)" in text


def test_a_shared_run_key_appears_in_both_scripts_tables(study):
    attempts = runs.read_attempts([study["results"]])
    t2 = tables.build_table("table2", study["plan_t2"], attempts, stores="s")
    peers = tables.build_table("ablations.peers", study["plan_peers"], attempts, stores="s")
    pcl_keys = {r["run_key"] for r in study["plan_t2"] if r["method"] == "pcl"}
    assert pcl_keys == {r["run_key"] for r in study["plan_peers"] if r["peers"] == 3}
    assert (t2.cells.set_index("column").loc["pcl", "mean"]
            == peers.cells.set_index("column").loc["m=3", "mean"])
    assert any("recorded by another script's grid (table2)" in n for n in peers.notes)


def test_make_tables_writes_markdown_latex_csv_and_prints(study, tmp_path, capsys):
    out = tmp_path / "tables"
    assert make_tables.main(["--store", study["results"], *CLI_T2, "--datasets", "synthetic", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### table2 - CIFAR comparison" in printed and "written:" in printed
    stem = "table2_synthetic_2ep_2seeds"  # the setting is in the file name: no overwriting another
    csv = pd.read_csv(out / f"{stem}.csv")
    hand = _record_files(study["results"])
    base = [hand[r["run_key"]]["deployed/top1_err"] for r in study["plan_t2"] if r["method"] == "baseline"]
    assert csv.set_index("column").loc["baseline", "mean"] == pytest.approx(np.mean(base))
    tex = (out / f"{stem}.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\bfseries" in tex
    md = (out / f"{stem}.md").read_text()
    assert md.count("**") == 2 and "unknown" in md  # one best cell; no paper number on synthetic data
    assert make_tables.main(["--store", study["results"], *CLI_T2, "--datasets", "synthetic", "--select", "best",
                             "--out", str(out)]) == 0
    assert "SELECTED ON THE TEST SET" in (out / f"{stem}_best_on_test.md").read_text()
    assert "synthetic, 2 epochs, all training images, seeds 0, 1 (not the paper's setting)" in md


def test_the_same_table_from_mongodb_and_from_its_file_copy(study):
    plan = [r for r in study["plan_t2"] if r["method"] == "pcl" and r["seed"] == 0]
    from_mongo = tables.build_table("table2", plan, runs.read_attempts([study["mongo"]]), stores="m")
    from_files = tables.build_table("table2", plan, runs.read_attempts([study["mongo_copy"]]), stores="f")
    both = runs.read_attempts([study["mongo"], study["mongo_copy"]])
    assert len(both) == 1  # one attempt, recorded in both stores, counts once
    hand = _record_files(study["mongo_copy"])[plan[0]["run_key"]]["deployed/top1_err"]
    assert from_mongo.cells.loc[0, "mean"] == from_files.cells.loc[0, "mean"] == pytest.approx(hand)
    curves = runs.metric_series(from_mongo.runs.loc[0, "attempt"]["record"], ["test/top1_err/mean_peer1"])
    assert curves["step"].tolist() == [1, 2]


def test_the_same_figures_from_mongodb_and_from_its_file_copy(study, tmp_path, monkeypatch):
    """A forked worker fetches its table's MongoDB curves on a connection of its own (a client must not be used
    across fork), one query per 25 runs; for a database it cannot open again (a Database object handed in, not a
    URL) the command fetches them before it forks. The same PNG bytes as from the file copy either way, and from
    one process."""
    import pymongo

    from analysis import plots
    from pcl.secrets import url_database

    fetched_here, looked_here = [], []
    fetch, prefetch = plots.metric_documents, plots._prefetch
    monkeypatch.setattr(plots, "metric_documents", lambda records, *a, **k: (fetched_here.append(len(records)),
                                                                             fetch(records, *a, **k))[1])
    # (a worker's calls are its own: the lists here are the command's)
    monkeypatch.setattr(plots, "_prefetch", lambda table, **k: (looked_here.append(k), prefetch(table, **k))[1])
    handed_in = pymongo.MongoClient(study["mongo"])[url_database(study["mongo"])]
    plan = [r for r in study["plan_t2"] if r["method"] == "pcl" and r["seed"] == 0]
    drawn, here = {}, {}
    for name, store, workers in (("mongo", study["mongo"], 2), ("files", study["mongo_copy"], 2),
                                 ("mongo-here", study["mongo"], 1), ("handed-in", handed_in, 2)):
        table = tables.build_table("table2", plan, runs.read_attempts([store]), stores=name)
        other = tables.build_table("two_stage", plan, runs.read_attempts([store]), stores=name)  # a second job
        fetched_here.clear()
        looked_here.clear()
        done, _ = plots.make_figures([table, other], tmp_path / name, formats=["png"], workers=workers)
        drawn[name], here[name] = {paths[0].name: paths[0].read_bytes() for _, paths in done}, sum(fetched_here)
        # with workers that open their own connections the command does not go through a table's records after
        # the first fork (reading them made its copies of their shared pages: ~25 MB per table at 3,000 runs)
        assert looked_here == ([] if name in ("mongo", "files") else
                               [{"here": False}] * 2 if name == "handed-in" else [{}] * 2), name
    assert drawn["mongo"] and drawn["mongo"] == drawn["files"] == drawn["mongo-here"] == drawn["handed-in"]
    assert here["mongo"] == 0 and here["mongo-here"] > 0 and here["handed-in"] > 0
    handed_in.client.close()


def test_a_run_lacking_its_deployed_heads_own_curve_is_drawn_from_its_copy(study, monkeypatch):
    """The deployed head's curve is fetched once: its own series; its copy test/top1_err/deployed only, in one more
    query, for a run that lacks the own one (a record another writer made); none of the other runs' copies."""
    import pymongo

    from analysis import plots
    from pcl import tracking
    from pcl.secrets import url_database

    url = study["mongo"].replace("/analysis_study", "/analysis_copy_only")
    tracking.upload(study["results"], url, log=lambda _: None)
    table = tables.build_table("table2", study["plan_t2"], runs.read_attempts([url]), stores="m")
    done = plots._completed(table)
    assert len(done) > 2
    lacking = done.iloc[0]
    own = f"test/top1_err/{lacking['deployed_head']}"
    db = pymongo.MongoClient(url)[url_database(url)]
    assert db["metrics"].delete_many({"run_id": lacking["attempt"]["record"]["run_id"], "name": own}).deleted_count
    db.client.close()
    asked: list[list[set[str]]] = []
    fetch = plots.metric_documents
    monkeypatch.setattr(plots, "metric_documents", lambda records, prefix, names: (
        asked.append([set(names(i)) for i in range(len(records))]), fetch(records, prefix, names=names))[1])
    table = tables.build_table("table2", study["plan_t2"], runs.read_attempts([url]), stores="m")
    try:
        plots._prefetch(table)
        series = plots._METRICS[id(table)]
        assert plots.COPY in series[lacking["run_key"]] and own not in series[lacking["run_key"]]
        assert all(plots.COPY not in s for key, s in series.items() if key != lacking["run_key"])
    finally:
        plots._forget(table)
    assert [len(a) for a in asked] == [len(done), 1] and asked[1] == [{plots.COPY}]
    assert not any(plots.COPY in names for names in asked[0])


@pytest.mark.parametrize("name", ["two_stage", "table2"])
def test_figures_fetch_only_the_series_they_draw(study, tmp_path, monkeypatch, name):
    """A table's MongoDB curves are fetched once for all its figures, and only the series some figure draws: a
    table without a heads figure (two_stage) the deployed head's curve and the diversity, not every head's, nor
    the deployed head's copy test/top1_err/deployed (a fifth of what was fetched); one with it (table2) also the
    live peers and the ensemble teacher, not the temporal means that are not deployed."""
    import pymongo

    from analysis import plots
    from pcl.secrets import url_database

    fetched: list[str] = []
    fetch = plots.metric_documents

    def spy(records, *a, **k):
        found = fetch(records, *a, **k)
        fetched.extend(doc["name"] for docs in found.values() for doc in docs)
        return found

    monkeypatch.setattr(plots, "metric_documents", spy)
    plan = [r for r in study["plan_t2"] if r["method"] == "pcl" and r["seed"] == 0]
    table = tables.build_table(name, plan, runs.read_attempts([study["mongo"]]), stores="m")
    run = table.runs.iloc[0]
    db = pymongo.MongoClient(study["mongo"])[url_database(study["mongo"])]
    logged = {d["name"] for d in db["metrics"].find({"run_id": run["attempt"]["record"]["run_id"]}, {"name": 1})}
    db.client.close()
    deployed = f"test/top1_err/{run['deployed_head']}"
    undrawn = sorted(n for n in logged if n.startswith("test/top1_err/mean_peer") and n != deployed)
    assert {deployed, "test/diversity", "test/top1_err/peer1", "test/top1_err/ensemble"} <= logged and undrawn
    plots.make_figures([table], tmp_path, formats=["png"], workers=1)
    drawn = {deployed, "test/diversity"}  # not test/top1_err/deployed, the deployed head's copy (below)
    if name == "table2":
        drawn |= {n for n in logged if n.startswith("test/top1_err/peer")} | {"test/top1_err/ensemble",
                                                                            "test/top1_err/pcl_e"}
    assert len(fetched) == len(set(fetched)) and set(fetched) == drawn & logged  # each once, only those drawn
    assert not set(undrawn) & set(fetched)


@pytest.mark.parametrize("case", ["empty", "no-folder", "unknown-table", "no-runs", "mongo-down",
                                  "bad-set", "unknown-key", "bad-backbone"])
def test_bad_input_is_one_line_and_exit_code_2(study, tmp_path, capsys, case):
    (tmp_path / "empty").mkdir()
    argv = {"empty": ["--store", str(tmp_path / "empty")],
            "no-folder": ["--store", str(tmp_path / "nowhere")],
            "unknown-table": ["--store", study["results"], "--tables", "table9"],
            "no-runs": ["--store", study["results"], "--tables", "ablations.deployed_head"],  # full size: none ran
            "mongo-down": ["--store", "mongodb://user:s3cret@127.0.0.1:9/x?serverSelectionTimeoutMS=300"],
            "bad-set": ["--store", study["results"], "--set", "epochs"],
            "unknown-key": ["--store", study["results"], "--named", "smoke", "--set", "epoch=2"],
            "bad-backbone": ["--store", study["results"], *CLI_T2, "--datasets", "synthetic",
                             "--backbones", "resnet32"]}[case]
    out = tmp_path / "out"
    assert cli.run_main(make_tables.main, [*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()  # nothing written, no empty table
    expected = {"empty": "holds no run records", "no-folder": "does not exist", "unknown-table": "known: table2",
                "no-runs": "--tables ablations.deployed_head --named smoke (a smoke grid)",  # what to run instead
                "mongo-down": "cannot read MongoDB", "bad-set": "KEY=VALUE", "unknown-key": "'epoch' is not a config key",
                "bad-backbone": "tiny_resnet8"}[case]
    assert expected in lines[0]
    assert "s3cret" not in captured.err


def test_mixed_store_tables_by_dataset(study, capsys):
    assert make_tables.main(["--store", study["results"], *CLI_T2, "--datasets", "cifar10", "synthetic",
                             "--out", str(study["root"] / "mixed")]) == 0
    out = capsys.readouterr().out
    assert "CIFAR-10" in out and "synthetic" in out and "1 failed" in out


def test_no_arguments_show_every_plan_the_store_holds_runs_of(study, tmp_path, capsys):
    """Without --named/--set the plans are rebuilt from the records: the smoke grids (2 epochs, seeds 0,1) of
    table2 and ablations.peers on synthetic data, and table2 on the tiny CIFAR-10 copy (its data_root), each in
    the setting its runs had; no --named smoke, no --set, no 'several datasets'; nothing else (no ImageNet table
    of the synthetic runs)."""
    out = tmp_path / "tables"
    assert make_tables.main(["--store", study["results"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.csv")) == [
        "ablations.peers_synthetic_2ep_2seeds.csv", f"table2_cifar10_{study['cifar_slug']}.csv",
        "table2_synthetic_2ep_2seeds.csv"]
    assert "Plan rebuilt from the records: table2 with smoke epochs=2" in printed
    t2 = pd.read_csv(out / "table2_synthetic_2ep_2seeds.csv").set_index("column")
    hand = _record_files(study["results"])
    pcl = [hand[r["run_key"]]["deployed/top1_err"] for r in study["plan_t2"] if r["method"] == "pcl"]
    assert t2.loc["pcl", "mean"] == pytest.approx(np.mean(pcl)) and t2.loc["pcl", "n"] == 2
    peers = pd.read_csv(out / "ablations.peers_synthetic_2ep_2seeds.csv").set_index("column")
    assert peers.loc["m=4", ["preempted", "missing"]].tolist() == [1, 1]  # the plan's seeds 0,1: one missing
    cifar = pd.read_csv(out / f"table2_cifar10_{study['cifar_slug']}.csv").set_index("column")
    assert cifar.loc["baseline", "failed"] == 1
    # flags narrow it: one dataset, one script
    assert make_tables.main(["--store", study["results"], "--datasets", "cifar10", "--out", str(tmp_path / "c")]) == 0
    assert [p.name for p in (tmp_path / "c").glob("*.csv")] == [f"table2_cifar10_{study['cifar_slug']}.csv"]
    capsys.readouterr()
    assert make_tables.main(["--store", study["mongo"], "--tables", "table2", "--out", str(tmp_path / "m")]) == 0
    assert [p.name for p in (tmp_path / "m").glob("*.csv")] == ["table2_synthetic_2ep_1seeds.csv"]
    one = pd.read_csv(tmp_path / "m" / "table2_synthetic_2ep_1seeds.csv")
    assert one["column"].tolist() == ["pcl"]  # one cell run with smoke is that cell, not a table of missing ones


def test_two_settings_of_one_grid_are_two_tables_named_by_what_differs(tmp_path, capsys):
    """Records of table2's smoke grid (one PCL cell) with the default lr and with lr=0.05: two tables, each
    titled and named by its setting (lr=0.05 in the title and the file name), each only the cell that ran."""
    from test_records_golden import _files

    store = tmp_path / "results"
    for number, lr in enumerate((None, 0.05), start=1):
        (cfg,) = registry.plan("table2", {"method": "pcl", **({"lr": lr} if lr else {})}, ["smoke"])
        run_dir = store / str(number)
        run_dir.mkdir(parents=True)
        for name, body in _files(cfg, number, "COMPLETED", 40.0 + number, "2026-01-01T00:10:00").items():
            (run_dir / name).write_text(json.dumps(body))
    out = tmp_path / "tables"
    assert make_tables.main(["--store", str(store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.csv")) == ["table2_synthetic_1ep_1seeds.csv",
                                                         "table2_synthetic_1ep_1seeds_lr=0.05.csv"]
    titles = [line for line in printed.splitlines() if line.startswith("### ")]
    assert len(titles) == 2 and titles[1].endswith("; lr=0.05\\]") and "synthetic \\[" not in titles[0]
    for csv in out.glob("*.csv"):
        assert pd.read_csv(csv)["column"].tolist() == ["pcl"]
    # the launcher's comma form of --tables; unknown datasets and backbones named as unknown; workers >= 1
    assert cli.run_main(make_tables.main, ["--store", str(store), "--tables", "table2,ablations.peers",
                                           "--out", str(out)]) == 2
    assert "ablations.peers" in capsys.readouterr().err  # table2 found, ablations.peers has no runs: named
    for flag, value in (("--datasets", "cifar1000"), ("--backbones", "resnet33")):
        assert cli.run_main(make_tables.main, ["--store", str(store), flag, value, "--out", str(out)]) == 2
        assert f"{flag} {value}: unknown; known:" in capsys.readouterr().err
    assert cli.run_main(make_plots.main, ["--store", str(store), "--workers", "0"]) == 2
    assert "--workers: '0' is invalid" in capsys.readouterr().err


def test_the_analysis_refuses_what_it_cannot_use_before_any_work(tmp_path, capsys):
    """An output path that is empty or in a folder that cannot be written (root may write anywhere but /proc: a
    permission check says yes; the tables were built, then a traceback), a head no method has (tables of "no such
    head" cells, exit 0), a named config no script declares (said as "no plan has runs"), a store path that is a
    file (said as "does not exist"): one line each, exit 2, nothing written."""
    from analysis import cli, make_plots, make_tables, report

    store = tmp_path / "results"
    store.mkdir()
    base = ["--store", str(store)]
    cases = [(make_tables.main, ["--out", ""], "'' is invalid: an empty path names no folder"),
             (report.main, ["--out", ""], "'' is invalid: an empty path names no folder"),
             (make_tables.main, ["--head", "foo"], "'foo' is invalid: no method has such a head; the methods' "
                                                   "heads: "),
             (make_tables.main, ["--head", "ensembel"], "(N: a peer's number, from 1); did you mean 'ensemble'?"),
             (make_tables.main, ["--named", "smokey"], "--named smokey: no table's script declares it; declared: "),
             (make_tables.main, ["--store", str(tmp_path / "file")], "is not a folder")]
    (tmp_path / "file").write_text("x")
    if Path("/proc/self").is_dir():
        cases += [(main, ["--out", "/proc/pcl-out/x" if main is report.main else "/proc/pcl-out"],
                   "cannot be written") for main in (make_tables.main, make_plots.main, report.main)]
    before = sorted(p.name for p in tmp_path.iterdir())
    for main, argv, said in cases:
        assert cli.run_main(main, [*base, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, (argv, err)
        if argv[0] == "--head":
            assert "mean_peerN" in err and "ensemble" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not any(store.iterdir())


def test_records_of_a_method_in_no_default_grid_say_how_to_plan_it(tmp_path, capsys):
    """--named smoke plans the tables' default grids: a researcher's own method's runs are in none, and the message
    said to add --named smoke, which was given; it names the method and the --set that plans it."""
    import json

    from analysis import cli, make_tables
    from experiments import registry
    from test_records_golden import _files

    (cfg,) = registry.plan("table2", {"method": "pcl"}, ["smoke"])
    cfg = {**cfg, "method": "my_method", "run_key": "0123456789abcdef"}  # as a researcher's method records its runs
    run_dir = tmp_path / "results" / "1"
    run_dir.mkdir(parents=True)
    for name, body in _files(cfg, 1, "COMPLETED", 40.0, "2026-01-01T00:10:00").items():
        (run_dir / name).write_text(json.dumps(body))
    argv = ["--store", str(tmp_path / "results"), "--named", "smoke", "--out", str(tmp_path / "t")]
    assert cli.run_main(make_tables.main, argv) == 2
    err = capsys.readouterr().err
    assert "method(s) my_method are in no default grid of these tables" in err and "--set 'method=[" in err, err


def test_a_methods_peers_default_is_the_config_keys():
    """A method declared `Option("peers", 2)`: the docs said 2 networks, the runs trained 3 (the config key `peers`
    holds m): refused where it is declared."""
    from pcl.declarations import DEFAULT_PEERS, Head, MethodSpec, Option

    with pytest.raises(ValueError, match=f"option 'peers' defaults to 2, but m comes from the config key peers "
                                         f"\\(default {DEFAULT_PEERS}"):
        MethodSpec("m", "M", "-", "-", "-", (Head("net{j}", "peer", "-"),), "net1",
                   options=(Option("peers", 2, "m", minimum=2),))


def test_figures_are_the_same_from_one_or_several_processes(study, tmp_path):
    """Saving in forked workers changes nothing of what is written (PNG bytes, the same files)."""
    from analysis import plots

    tables_, _ = tables.build_tables(None, [study["results"]])
    one, _ = plots.make_figures(tables_, tmp_path / "one", workers=1, formats=["png"])
    two, _ = plots.make_figures(tables_, tmp_path / "two", workers=2, formats=["png"])
    assert [f.stem for f, _ in one] == [f.stem for f, _ in two] and len(one) > 2
    for (_, (a,)), (_, (b,)) in zip(one, two):
        assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="png, pdf, svg"):
        plots.make_figures(tables_, tmp_path / "bad", formats=["jpg"])


def _figure_runs(tables_):
    """run_key -> the stems of the tables that draw it."""
    out: dict[str, set[str]] = {}
    for t in tables_:
        for key in t.runs["run_key"]:
            out.setdefault(key, set()).add(t.stem)
    return out


def test_a_table_whose_records_did_not_change_keeps_its_figures(study, tmp_path):
    """The second call draws nothing (same files, captions, notes, file times); a changed curve redraws only the
    tables that draw that run; a figure file changed by hand, other formats or reuse=False draw again."""
    from analysis import figcache, plots

    store = tmp_path / "results"
    shutil.copytree(study["results"], store)
    out = tmp_path / "figs"

    def draw(**kwargs):
        return plots.make_figures(tables.build_tables(None, [str(store)])[0], out, **{"formats": ["png"], **kwargs})

    first, notes = draw()
    assert len(first) > 3 and not any(f.kept for f, _ in first) and (out / figcache.MANIFEST).is_file()
    shown = [(f.stem, f.kind, f.caption, paths) for f, paths in first]
    times = {p: p.stat().st_mtime_ns for _, paths in first for p in paths}
    again, notes_again = draw()
    assert all(f.kept and f.figure is None for f, _ in again)
    assert [(f.stem, f.kind, f.caption, paths) for f, paths in again] == shown and notes_again == notes
    assert {p: p.stat().st_mtime_ns for _, paths in again for p in paths} == times

    # one completed run's test curve changes: the tables that draw it are drawn again, the others kept
    by_key = _figure_runs(tables.build_tables(None, [str(store)])[0])
    run_dir = next(d for d in sorted(store.iterdir()) if (d / "metrics.json").is_file()
                   and json.loads((d / "run.json").read_text())["status"] == "COMPLETED"
                   and json.loads((d / "config.json").read_text())["peers"] == 2)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    name = next(n for n in metrics if n.startswith("test/top1_err/"))
    metrics[name]["values"][-1] += 1.0
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    changed = by_key[json.loads((run_dir / "config.json").read_text())["run_key"]]
    third, _ = draw()
    drawn = {f.stem for f, _ in third if not f.kept}
    assert drawn and any(f.kept for f, _ in third)
    assert {s for s in drawn if not any(s.startswith(f"{t}_") for t in changed)} == set()

    # a kept file altered by hand is not trusted: its table is drawn again
    victim = next(p for f, paths in third if f.kept for p in paths)
    victim.write_bytes(b"not the figure")
    fourth, _ = draw()
    assert victim.read_bytes() != b"not the figure"
    assert any(not f.kept and victim in paths for f, paths in fourth)
    assert not any(f.kept for f, _ in draw(formats=["png", "svg"])[0])  # other formats: drawn
    assert not any(f.kept for f, _ in draw(formats=["png"], reuse=False)[0])
    assert all(f.kept for f, _ in draw(formats=["png"])[0])  # what reuse=False drew is remembered


def test_a_damaged_figure_manifest_is_named_once_and_every_figure_drawn(study, tmp_path):
    from analysis import figcache, plots

    tables_ = [t for t in tables.build_tables(None, [study["results"]])[0] if t.name == "ablations.peers"]
    out = tmp_path / "figs"
    out.mkdir()
    (out / figcache.MANIFEST).write_bytes(b"\x00{not json")
    done, notes = plots.make_figures(tables_, out, formats=["png"])
    assert done and not any(f.kept for f, _ in done)
    assert [n for n in notes if figcache.MANIFEST in n and "drawn again" in n] and len(notes) == len(set(notes))
    assert all(f.kept for f, _ in plots.make_figures(tables_, out, formats=["png"])[0])  # rewritten, valid


_hypothesis = pytest.importorskip("hypothesis")
_st = _hypothesis.strategies
_JSON = _st.recursive(_st.none() | _st.booleans() | _st.integers() | _st.floats(allow_nan=False) | _st.text(max_size=30),
                      lambda inner: _st.lists(inner, max_size=4) | _st.dictionaries(_st.text(max_size=10), inner,
                                                                                      max_size=4), max_leaves=20)


@_hypothesis.settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
                      suppress_health_check=list(_hypothesis.HealthCheck))
@_hypothesis.given(entry=_JSON, figure=_st.fixed_dictionaries({}, optional={
    "stem": _st.sampled_from(["", "x", "../../etc/passwd", "/abs", "STEM_curves", "STEM_curves/../../x"]) | _st.text(),
    "kind": _JSON, "caption": _JSON,
    "files": _st.lists(_st.lists(_st.sampled_from(["STEM_curves.png", "../outside.png", "/etc/passwd", "secret",
                                                  "STEM_curves.pdf"]) | _st.text(max_size=12), max_size=3),
                       max_size=3) | _JSON}))
def test_any_manifest_entry_is_kept_only_when_its_files_are_the_tables_own(study, tmp_path_factory, entry, figure):
    """Whatever a manifest holds, `kept` never raises and keeps only an entry whose files are the table's, in the
    folder, as recorded; a file outside the folder (even with its true hash) is never read."""
    import hashlib

    from analysis import figcache
    from analysis.plots import _completed

    table = _peers_table(study["results"])
    root = tmp_path_factory.mktemp("manifest")
    out = root / "figs"
    out.mkdir()
    (root / "outside.png").write_bytes(b"secret")
    key = figcache.fingerprint(table, ["png"], _completed(table))
    figure = {k: (v.replace("STEM", table.stem) if isinstance(v, str) else v) for k, v in figure.items()}
    if isinstance(figure.get("files"), list):
        figure["files"] = [[n.replace("STEM", table.stem) if isinstance(n, str) else n for n in pair]
                           if isinstance(pair, list) else pair for pair in figure["files"]]
        figure["files"] = [pair + [hashlib.sha256(b"secret").hexdigest()] if isinstance(pair, list) and len(pair) == 1
                           else pair for pair in figure["files"]]
    for entries in ({table.stem: entry}, {table.stem: {"fingerprint": key, "figures": [figure], "notes": []}},
                    {table.stem: {"fingerprint": key, "figures": entry, "notes": entry}}):
        kept = figcache.Manifest(out, entries).kept(table, key, ["png"])
        assert kept is None or kept[0] == []  # no file of it is in `out` (a table may have drawn no figure)


_PEERS_TABLE: dict[str, Any] = {}


def _peers_table(store: str) -> Any:
    """The ablations.peers table of the study, built once (a property test asks for it many times)."""
    if store not in _PEERS_TABLE:
        _PEERS_TABLE[store] = next(t for t in tables.build_tables(None, [store])[0] if t.name == "ablations.peers")
    return _PEERS_TABLE[store]


def test_held_plans_name_what_no_plan_holds(study):
    from analysis import discover

    attempts = runs.read_attempts([study["results"]])
    foreign = attempts.copy()
    foreign["record"] = [{**r, "config": {**r["config"], "experiment": "my_trial"}} if i == 0 else r
                         for i, r in enumerate(foreign["record"])]
    held, skipped = discover.held_plans(foreign, list(registry.SCRIPTS))
    assert any("1 run(s) recorded by 'my_trial'" in line for line in skipped)
    assert {h.name for h in held} == {"table2", "ablations.peers"}


def test_a_grid_with_an_option_of_some_of_its_methods_is_one_table_and_two_settings_two(tmp_path):
    """`with 'method=["baseline","dml"]' options.temperature=4` sets DML's temperature and leaves the baseline as
    it is: its records were rebuilt as two plans (a baseline table and a DML table); they are one grid, while DML
    runs at two temperatures are still two."""
    from analysis import discover

    infra = {"results_dir": str(tmp_path / "results"), "checkpoint_root": str(tmp_path / "ck")}
    grid = {"method": ["baseline", "dml"], "options": {"temperature": 4.0}, **infra}
    assert _grid(registry.plan("table2", grid, SMOKE), tmp_path / "results").exit_code == 0
    held, _ = discover.held_plans(runs.read_attempts([str(tmp_path / "results")]), ["table2"])
    assert [(h.updates.get("method"), h.updates.get("options"), len(h.plan)) for h in held] == [
        (["baseline", "dml"], {"temperature": 4.0}, 2)]
    assert _grid(registry.plan("table2", {**grid, "options": {}}, SMOKE), tmp_path / "results").exit_code == 0
    held, _ = discover.held_plans(runs.read_attempts([str(tmp_path / "results")]), ["table2"])
    assert sorted((str(h.updates.get("method")), str(h.updates.get("options"))) for h in held) == [
        ("['baseline', 'dml']", "None"), ("dml", "{'temperature': 4.0}")]
    # a baseline of seed 0 and a DML at T=4 of seed 1, two grids: one table would cross them into four runs
    other = tmp_path / "crossed"
    for cells in ({"method": "baseline"}, {"method": "dml", "options": {"temperature": 4.0}, "seeds": [1]}):
        config = {**cells, "results_dir": str(other / "results"), "checkpoint_root": str(other / "ck")}
        assert _grid(registry.plan("table2", config, SMOKE), other / "results").exit_code == 0
    held, _ = discover.held_plans(runs.read_attempts([str(other / "results")]), ["table2"])
    assert sorted(len(h.plan) for h in held) == [1, 1]


def test_a_grid_with_a_method_that_needs_its_file_is_rebuilt_from_the_records(tmp_path):
    """kd has no plan without its teacher file, so a table2 grid with kd in it was no plan at all ("no plan has
    runs"): the file its records were given rebuilds it."""
    from analysis import discover
    from pcl.methods import method_class

    teacher = method_class("kd").example_inputs(tmp_path, "tiny_resnet8", 4)
    grid = {"method": ["baseline", "kd"], "options": teacher, "results_dir": str(tmp_path / "results"),
            "checkpoint_root": str(tmp_path / "ck")}
    assert _grid(registry.plan("table2", grid, SMOKE), tmp_path / "results").exit_code == 0
    held, skipped = discover.held_plans(runs.read_attempts([str(tmp_path / "results")]), ["table2"])
    assert [(h.updates.get("method"), h.updates.get("options"), len(h.plan)) for h in held] == [
        (["baseline", "kd"], teacher, 2)] and not skipped


# ---- the scripts' closing table -----------------------------------------------------------------------------
def test_print_script_table_for_a_scripts_config(study):
    config = registry.resolved_config("ablations.peers", {**PEERS, "results_dir": study["results"]}, SMOKE)
    printed = []
    text = render.print_script_table("ablation_peers", config, [study["results"]], echo=printed.append)
    assert printed == [text] and "### ablations.peers - Number of peers m" in text and "m=5" in text
    from pcl import results  # what a script's driver passes: its file store and its MongoDB database

    text = render.print_script_table("table2", registry.resolved_config("table2", BASE, SMOKE),
                                     [study["mongo_copy"], results.connect(study["mongo"])], echo=printed.append)
    assert "n=1/2: 1 missing)†" in text and "MongoDB database 'analysis_study'" in text
    down = render.print_script_table("ablations.peers", config, ["mongodb://127.0.0.1:9/x?serverSelectionTimeoutMS"
                                                                  "=300"], echo=printed.append)
    assert down.startswith("no table: cannot read MongoDB") and "\n" not in down


# ---- figures and report -------------------------------------------------------------------------------------
def _lines(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() != ":" and len(line.get_xdata())]


def test_figures_have_the_expected_lines_and_bars(study, tmp_path):
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    from analysis import plots

    attempts = runs.read_attempts([study["results"]])
    t2 = tables.build_table("table2", study["plan_t2"], attempts, stores="s")
    peers = tables.build_table("ablations.peers", study["plan_peers"], attempts, stores="s")
    (curves,) = plots.error_curves(t2)
    ax = curves.figure.axes[0]
    assert len(_lines(ax)) == 2  # baseline and pcl mean lines
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"] == [1]  # LR step
    assert len(ax.collections) == 2  # one std band per method
    (heads,) = plots.heads_over_training(t2)
    (panel,) = heads.figure.axes  # the baseline has one head: only pcl gets a panel
    assert len(_lines(panel)) == 4  # deployed, live peers, ensemble teacher, pcl_e
    (bars,) = plots.ablation_bars(peers)
    (points,) = bars.figure.axes[0].containers  # one backbone: its means with error bars
    assert len(points.lines[0].get_xdata()) == 2  # m=2 and m=3 have runs; m=4 and m=5 none...
    assert [t.get_text() for t in bars.figure.axes[0].texts] == ["no runs", "no runs"]  # ...and say so
    low, high = bars.figure.axes[0].get_ylim()
    assert low > 0  # fitted to the values, not from zero
    (peer_plot,) = plots.peers_plot(peers)
    (bars_m,) = peer_plot.figure.axes[0].containers  # one backbone: one line with error bars
    assert list(bars_m.lines[0].get_xdata()) == [2, 3]
    (div,), note = plots.diversity(t2)  # PCL logs the peers' disagreement every epoch; the baseline has no peers
    assert note is None and len(_lines(div.figure.axes[0])) == 1
    paths = plots.save(curves, tmp_path, formats=("png", "pdf", "svg"))
    image = mpimg.imread(paths[0])
    assert image.shape[0] > 100 and image.std() > 0 and paths[1].stat().st_size > 1000
    assert [p.suffix for p in paths] == [".png", ".pdf", ".svg"] and "<svg" in paths[2].read_text()
    assert [p.suffix for p in plots.save(curves, tmp_path / "default")] == [".png", ".pdf"]
    styles = {(line.get_color(), line.get_marker(), str(line.get_linestyle())) for line in _lines(ax)}
    assert len(styles) == 2  # each series its own colour, marker and line style
    zoom = curves.figure.axes[1]  # the last epochs, enlarged
    plt.close("all")


def test_report_and_plots_commands(study, tmp_path, capsys):
    argv = ["--store", study["results"], "--named", "smoke", "--set", "epochs=2", "--set", "seeds=[0,1]",
            "--set", 'method=["baseline","pcl"]', "--datasets", "synthetic"]
    assert report.main([*argv, "--tables", "table2", "--out", str(tmp_path / "r" / "report.md"), "--html"]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "## Runs per status" in text and "Commit:" in text and "file store" in text
    links = [line[line.index("(") + 1:-1] for line in text.splitlines() if line.startswith("![")]
    assert links and all((tmp_path / "r" / link).stat().st_size > 1000 for link in links)
    assert "<table>" in (tmp_path / "r" / "report.html").read_text()
    assert "diversity of the peers' test predictions" in text  # the figure of PCL's logged diversity
    peers = ["--store", study["results"], "--named", "smoke", "--set", "epochs=2", "--set", "seeds=[0,1]",
             "--set", "peer_counts=[2,3,4,5]", "--tables", "ablations.peers", "--out", str(tmp_path / "f")]
    assert make_plots.main(peers) == 0
    assert sorted(p.name for p in (tmp_path / "f").glob("*.png")) == [
        f"ablations.peers_synthetic_2ep_2seeds_{kind}.png" for kind in
        ("bars", "curves_tiny_resnet8", "diversity_tiny_resnet8", "peers")]


def test_reading_records_and_building_tables_needs_no_torch(study, tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(study["plan_t2"]))
    code = f"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):  # import torch now fails (sys.modules stays clean: scipy looks there)
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from analysis import render, tables, runs, plots
attempts = runs.read_attempts([{study["results"]!r}])
table = tables.build_table("table2", json.loads(open({str(plan_file)!r}).read()), attempts, stores="s")
print(table.cells.set_index("column").loc["pcl", "mean"])
print(render.render_latex(table).count("toprule"))
assert "torch" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    hand = _record_files(study["results"])
    pcl = [hand[r["run_key"]]["deployed/top1_err"] for r in study["plan_t2"] if r["method"] == "pcl"]
    assert proc.stdout.split() == [str(np.mean(pcl)), "1"]
