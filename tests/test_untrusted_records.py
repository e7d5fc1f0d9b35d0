"""Issue 19, kinds 3 and 4: `upload` never reads a file outside the run it uploads, and every reader survives every
record (damaged, foreign, older-version, half-written): it is skipped with one warning line that names it, and the
others are read on. Records are written by hand (no training); a property test (Hypothesis) feeds randomly shaped
and typed records to every reader.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import render, runs, tables
from pcl import results


# ---- records written by hand --------------------------------------------------------------------------------------
def good_files(run_key: str, number: int, value: float = 30.0, status: str = "COMPLETED") -> dict[str, object]:
    """The files of a record as this suite writes them: name -> JSON value."""
    return {
        "run.json": {"status": status, "result": {"deployed/top1_err": value, "epochs": 2.0},
                     "meta": {"attempt_id": f"att-{run_key}-{number}"}, "start_time": "2026-01-01T00:00:00",
                     "stop_time": f"2026-01-01T00:{number % 60:02d}:00", "heartbeat": "2026-01-01T00:00:30",
                     "host": {"hostname": "h"}, "experiment": {"name": "table2", "sources": []}},
        "config.json": {"run_key": run_key, "experiment": "table2", "dataset": "cifar100", "method": "pcl",
                        "backbone": "resnet32", "seed": 0, "peers": 3, "epochs": 2, "milestones": [1]},
        "info.json": {"deployed_head": "mean_peer1", "num_classes": 100, "heads": ["peer1", "mean_peer1"],
                      "parameter_counts": {"params_train": 100, "params_deployed": 50}},
        "metrics.json": {"test/top1_err/deployed": {"steps": [1, 2], "values": [60.0, value],
                                                    "timestamps": ["2026-01-01T00:00:00", "2026-01-01T00:01:00"]}},
    }


def write_record(store: Path, number: int, files: dict[str, object]) -> Path:
    run_dir = store / str(number)
    run_dir.mkdir(parents=True)
    for name, body in files.items():
        if body is None:
            continue
        (run_dir / name).write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    return run_dir


def plan_of(*keys: str) -> list[dict]:
    return [{"run_key": k, "label": None, "method": "pcl", "backbone": "resnet32", "dataset": "cifar100",
             "seed": i, "peers": 3, "experiment": "table2", "options": {}} for i, k in enumerate(keys)]


def warnings_naming(err: str, where: Path | str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:") and str(where) in line]


def read_everything(store: Path, keys: list[str]) -> dict[str, object]:
    """Every reader of records, as the commands call them."""
    frame = results.load_runs(str(store), dedupe=False)
    out = {"runs": frame, "completed": results.completed_run_keys(str(store)),
           "has": [results.has_completed(str(store), k) for k in keys],
           "found": [results.find_completed(str(store), k) for k in keys],
           "metrics": results.load_metrics(str(store))}
    attempts = runs.read_attempts([str(store)])
    table = tables.build_table("table2", plan_of(*keys), attempts, stores=str(store))
    out["markdown"] = render.render_markdown(table)
    out["latex"] = render.render_latex(table)
    out["csv"] = render.cells_csv(table)
    out["table"] = table
    return out


# ---- kind 4: the examples of the issue ----------------------------------------------------------------------------
BAD = {
    "run.json holds []": {"run.json": []},
    "half-written run.json": {"run.json": b'{"status": "COMPLETED", "resu'},
    "string result": {"run.json": {"result": "error 12%"}},
    "list-valued run_key": {"config.json": {"run_key": ["k-list"]}},
    "run_key from another project": {"config.json": {"run_key": None}},
    "status not a string": {"run.json": {"status": {"$ne": 1}}},
    "dict start_time": {"run.json": {"start_time": {"a": 1}}},
    "text in meta.attempt_id list": {"run.json": {"meta": {"attempt_id": ["x"]}}},
    "config.dataset a list": {"config.json": {"dataset": ["cifar100"]}},
    "info.json holds a string": {"info.json": "older"},
    "binary garbage config": {"config.json": b"\xff\xfe\x00garbage"},
    "deeply nested": {"config.json": b"[" * 100000},
    "meta null and host a list": {"run.json": {"meta": None, "host": ["h"]}},
    "info.environment a list": {"info.json": {"environment": [1]}},
    # within what a JSON parser reads (1,024), beyond Python's recursion (json.dumps, flattening a config)
    "config nested 990 deep": {"config.json": lambda config: json.dumps(config).encode()[:-1]
                               + b', "lr": ' + b'{"a": ' * 990 + b"1" + b"}" * 991},
}
#: records every reader accepts that MongoDB cannot hold: upload names them and goes on
UNSTORABLE = {"a NUL in a result key": {"run.json": {"result": {"top1\x00": 1.0}}},
              "an integer beyond 8 bytes": {"config.json": {"seed": 2 ** 70}}}


def _bad_files(run_key: str, number: int, change: dict) -> dict[str, object]:
    files = good_files(run_key, number)
    for name, body in change.items():
        if callable(body):
            files[name] = body(files[name])
        elif isinstance(body, dict) and isinstance(files[name], dict):
            files[name] = {**files[name], **body}
        else:
            files[name] = body
    return files


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_record_is_named_once_and_the_others_are_read(tmp_path, capsys, case):
    store = tmp_path / "results"
    write_record(store, 1, good_files("good-a", 1))
    bad = write_record(store, 2, _bad_files("bad", 2, BAD[case]))
    write_record(store, 3, good_files("good-b", 3))
    out = read_everything(store, ["good-a", "good-b", "bad"])
    assert set(out["runs"]["run_key"]) == {"good-a", "good-b"}
    assert out["completed"] == {"good-a", "good-b"} and out["has"] == [True, True, False]
    err = capsys.readouterr().err
    named = warnings_naming(err, bad)
    assert len(named) == 1, err  # named once, though every reader above read it
    assert "Traceback" not in err and not warnings_naming(err, store / "1")


@pytest.mark.parametrize("time", ["-1", "-0099-01-01", "10000-01-01T00:00:00"])
def test_a_time_beyond_pythons_datetimes_is_read_as_unknown(tmp_path, capsys, time):
    """pandas reads "-1" as the year -1, which Python's datetime cannot hold: status, the dry run, training and
    load_runs ended in a traceback at one such heartbeat. The record is read with that time unknown."""
    store = tmp_path / "results"
    write_record(store, 1, good_files("good-a", 1))
    files = good_files("odd-time", 2)
    files["run.json"] = {**files["run.json"], "heartbeat": time, "stop_time": time}
    write_record(store, 2, files)
    out = read_everything(store, ["good-a", "odd-time"])
    frame = out["runs"].set_index("run_key")
    assert set(frame.index) == {"good-a", "odd-time"} and out["has"] == [True, True]
    assert frame.loc["odd-time", "stop_time"] is pd.NaT or pd.isna(frame.loc["odd-time", "stop_time"])
    assert "Traceback" not in capsys.readouterr().err
    assert results.utc_time(time) is None


def test_a_damage_no_check_foresaw_is_named_and_the_others_are_read(tmp_path, mongo_url, capsys, monkeypatch):
    """Whatever reading one record raises (here a check made to fail as an unforeseen damage would) is that
    record's skip line, on either store, never the command's end."""
    from pymongo import MongoClient

    checked = results.check_record

    def check(record):
        if (record.get("config") or {}).get("run_key") == "odd":
            raise AttributeError("'list' object has no attribute 'get'")
        return checked(record)

    monkeypatch.setattr(results, "check_record", check)
    store = tmp_path / "results"
    db = MongoClient(mongo_url).get_default_database()
    for number, key in ((1, "good"), (2, "odd")):
        files = good_files(key, number)
        write_record(store, number, files)
        db["runs"].insert_one({"_id": number, **files["run.json"], "config": files["config.json"],
                               "info": files["info.json"]})
    for where in (str(store), mongo_url):
        assert list(results.load_runs(where)["run_key"]) == ["good"], where
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "AttributeError" in line]
    assert len(lines) == 2 and "please report it" in lines[0] and "Traceback" not in err, err


def test_completed_record_of_an_older_version_without_info_json(tmp_path, capsys):
    """Older versions wrote no info.json: the run counts, its parameter counts are unknown (no KeyError)."""
    store = tmp_path / "results"
    write_record(store, 1, {**good_files("old", 1, value=25.0), "info.json": None})
    out = read_everything(store, ["old"])
    assert "25.00" in out["markdown"] and "? / ?" in out["markdown"]
    assert capsys.readouterr().err == ""


def test_a_run_being_created_is_passed_over_silently(tmp_path, capsys):
    store = tmp_path / "results"
    write_record(store, 1, good_files("a", 1))
    (store / "2").mkdir()  # Sacred makes the folder first
    write_record(store, 3, {"config.json": good_files("b", 3)["config.json"]})
    out = read_everything(store, ["a"])
    assert list(out["runs"]["run_key"]) == ["a"]
    assert capsys.readouterr().err == ""


def test_text_metric_values_are_named_and_the_table_and_plots_are_made(tmp_path, capsys):
    from analysis import plots

    store = tmp_path / "results"
    files = good_files("a", 1)
    files["metrics.json"]["test/top1_err/deployed"]["values"] = [60.0, "thirty"]
    write_record(store, 1, files)
    write_record(store, 2, good_files("b", 2, value=31.0))
    out = read_everything(store, ["a", "b"])
    assert "30.50" in out["markdown"]  # the result is fine: the table counts both runs
    done, _ = plots.make_figures([out["table"]], tmp_path / "figs")
    assert done
    err = capsys.readouterr().err
    assert len(warnings_naming(err, store / "1" / "metrics.json")) == 1, err


def test_a_metric_step_beyond_64_bits_is_named_and_the_other_series_read(tmp_path, capsys):
    """Series are read as int64/float64 arrays: a step no array holds is a damaged series (one line), not a crash."""
    store = tmp_path / "results"
    files = good_files("a", 1)
    files["metrics.json"]["test/top1_err/deployed"]["steps"] = [1, 2 ** 70]
    files["metrics.json"]["test/other"] = {"steps": [1, 2], "values": [None, 3]}
    write_record(store, 1, files)
    (record,) = list(results.iter_records(store))
    series = runs.metric_arrays(record, "test/")
    assert "test/top1_err/deployed" not in series
    steps, values = series["test/other"]
    assert steps.dtype == np.int64 and steps.tolist() == [1, 2] and np.isnan(values[0]) and values[1] == 3.0
    assert len(warnings_naming(capsys.readouterr().err, store / "1" / "metrics.json")) == 1


def test_nan_result_is_a_diverged_run_not_a_missing_head(tmp_path):
    store = tmp_path / "results"
    write_record(store, 1, good_files("a", 1, value=math.nan))
    out = read_everything(store, ["a"])
    assert "no such head" not in out["markdown"]
    assert "NaN (1 of 1 completed runs recorded NaN: diverged)" in out["markdown"]
    assert out["table"].cells["nan_results"].tolist() == [1]


def test_links_and_fifos_in_a_store_are_not_followed(tmp_path, capsys):
    store, outside = tmp_path / "results", tmp_path / "outside"
    write_record(store, 1, good_files("a", 1))
    elsewhere = write_record(outside, 7, good_files("linked", 7))
    (store / "2").symlink_to(elsewhere, target_is_directory=True)  # a run folder that is a link
    linked_files = write_record(store, 3, good_files("c", 3))
    (linked_files / "run.json").unlink()
    (linked_files / "run.json").symlink_to(elsewhere / "run.json")
    fifo_run = write_record(store, 4, good_files("d", 4))
    (fifo_run / "metrics.json").unlink()
    os.mkfifo(fifo_run / "metrics.json")  # reading it would block forever
    out = read_everything(store, ["a", "linked", "c", "d"])
    assert set(out["runs"]["run_key"]) == {"a", "d"}
    err = capsys.readouterr().err
    for where in (store / "2", store / "3", fifo_run / "metrics.json"):
        assert len(warnings_naming(err, where)) == 1, err


def test_foreign_mongo_documents_are_ignored(mongo_url, capsys):
    """A shared MongoDB: a notebook's document (ObjectId _id, no config), another project's run, and one of ours
    with a list-valued run_key: only our valid record is read, and the list never counts as completed."""
    from pymongo import MongoClient

    db = MongoClient(mongo_url).get_default_database()
    db["runs"].insert_one({"note": "a notebook's insert_one"})
    db["runs"].insert_one({"_id": 5, "status": "COMPLETED", "config": {"lr": 0.1}, "experiment": {"name": "x"}})
    db["runs"].insert_one({"_id": 6, "status": "COMPLETED", "config": {"run_key": ["k1"]}})
    good = good_files("k2", 1)
    db["runs"].insert_one({"_id": 7, **good["run.json"], "config": good["config.json"], "info": good["info.json"]})
    frame = results.load_runs(mongo_url)
    assert list(frame["run_key"]) == ["k2"]
    assert results.completed_run_keys(mongo_url) == {"k2"}
    assert not results.has_completed(mongo_url, "k1") and results.has_completed(mongo_url, "k2")
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "run 6" in line]) == 1 and "run 5" not in err


#: the BAD cases a MongoDB document can hold (JSON objects, not bytes; a run_key of ours)
_MONGO_BAD = sorted(k for k, v in BAD.items() if all(isinstance(b, dict) for b in v.values())
                    and "run_key" not in v.get("config.json", {}))


@pytest.mark.parametrize("case", _MONGO_BAD)
def test_a_damaged_completed_record_is_not_completed_on_mongodb_either(tmp_path, mongo_url, capsys, case):
    """What a launcher and a run ask before training (has_completed, completed_run_keys) checks the whole record
    on MongoDB as on a file store: a COMPLETED record damaged anywhere the readers look (its result, times, info,
    ...) is skipped with its line, and the run is trained again, not judged done from its run_key and status."""
    from pymongo import MongoClient

    db = MongoClient(mongo_url).get_default_database()
    store = tmp_path / "results"
    for number, (key, files) in enumerate((("good", good_files("good", 1)), ("bad", _bad_files("bad", 2, BAD[case])))):
        write_record(store, number + 1, files)
        db["runs"].insert_one({"_id": number + 1, **files["run.json"], "config": files["config.json"],
                               "info": files["info.json"]})
    for where in (str(store), mongo_url):
        assert results.completed_run_keys(where) == {"good"}, where
        assert results.has_completed(where, "good") and not results.has_completed(where, "bad"), where
    err = capsys.readouterr().err
    if BAD[case].get("run.json", {}).get("status", "COMPLETED") == "COMPLETED":  # else no COMPLETED query matches it
        assert [line for line in err.splitlines() if "mongo:" in line and "run 2" in line], err


# ---- kind 3: upload reads only what the run archived --------------------------------------------------------------
def test_upload_never_reads_a_file_outside_the_run(tmp_path, mongo_url, capsys):
    import gridfs
    from pymongo import MongoClient

    from pcl.tracking.upload import upload

    secret = "PRIVATE-KEY-0123456789"
    private = tmp_path / "home"
    private.mkdir()
    (private / "id_rsa").write_text(secret)
    (private / "script.py").write_text(secret + " script")
    store = tmp_path / "results"
    write_record(store, 1, {**good_files("k0", 1), "run.json": []})  # run.json holding []: upload goes on past it
    files = good_files("k", 2)
    sources_dir = store / "_sources"
    sources_dir.mkdir(parents=True)
    (sources_dir / "ok_0123.py").write_text("print('archived by the run')\n")
    (sources_dir / "link_0123.py").symlink_to(private / "id_rsa")
    files["run.json"]["experiment"] = {
        "name": "table2", "base_dir": str(private),
        "sources": [["ok.py", "_sources/ok_0123.py"], ["abs.py", str(private / "id_rsa")],
                    ["up.py", "../home/id_rsa"], ["link.py", "_sources/link_0123.py"],
                    ["script.py", "_sources/missing_0123.py"], ["sneaky.py", "_sources/../../home/id_rsa"],
                    ["id_rsa", None]]}
    write_record(store, 2, files)
    linked_out = write_record(store, 3, good_files("k3", 3))
    (linked_out / "cout.txt").symlink_to(private / "id_rsa")  # captured output that is a link: not followed
    report = upload(str(store), mongo_url, log=lambda line: None)
    assert len(report.inserted) == 1 and str(store / "2") in report.inserted[0]
    assert [line.split(":")[0] for line in report.unreadable] == [str(store / "1"), str(store / "3")]
    db = MongoClient(mongo_url).get_default_database()
    fs = gridfs.GridFS(db)
    contents = [f.read().decode() for f in fs.find()]
    assert contents == ["print('archived by the run')\n"]
    everything = json.dumps([list(db[c].find({}, {"_id": 0})) for c in db.list_collection_names()], default=str)
    assert secret not in everything
    (doc,) = db["runs"].find()
    sources = dict(doc["experiment"]["sources"])
    assert sources["ok.py"] is not None and all(sources[n] is None for n in sources if n != "ok.py")
    assert len(report.missing_sources) == 6


def test_upload_skips_damaged_records_and_goes_on(tmp_path, mongo_url):
    from pcl.tracking.upload import upload

    store = tmp_path / "results"
    for number, case in enumerate(sorted(BAD), start=1):
        write_record(store, number, _bad_files(f"bad{number}", number, BAD[case]))
    write_record(store, 98, _bad_files("null-meta", 98, {"run.json": {"meta": None, "resources": {"a": 1}}}))
    for number, case in enumerate(sorted(UNSTORABLE), start=90):
        write_record(store, number, _bad_files(f"unstorable{number}", number, UNSTORABLE[case]))
    write_record(store, 99, good_files("good", 99))
    report = upload(str(store), mongo_url, log=lambda line: None)  # an older record without meta is uploaded
    assert len(report.inserted) == 2 and str(store / "99") in report.inserted[1]
    assert len(report.unreadable) == len(BAD) + len(UNSTORABLE)
    assert all("\n" not in line for line in report.unreadable)


# ---- the property: randomly shaped and typed records ---------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)
#: where a random value goes in a valid record (file, then keys)
PLACES = [("run.json",), ("run.json", "status"), ("run.json", "result"), ("run.json", "result", "deployed/top1_err"),
          ("run.json", "meta"), ("run.json", "meta", "attempt_id"), ("run.json", "start_time"),
          ("run.json", "stop_time"), ("run.json", "heartbeat"), ("run.json", "host"), ("run.json", "experiment"), ("config.json",),
          ("config.json", "run_key"), ("config.json", "dataset"), ("config.json", "seed"),
          ("config.json", "experiment"), ("config.json", "milestones"), ("config.json", "epochs"), ("info.json",),
          ("info.json", "parameter_counts"), ("info.json", "parameter_counts", "params_deployed"),
          ("info.json", "deployed_head"), ("info.json", "heads"), ("info.json", "environment"),
          ("info.json", "environment", "host"), ("info.json", "num_classes"), ("metrics.json",),
          ("metrics.json", "test/top1_err/deployed"), ("metrics.json", "test/top1_err/deployed", "values"),
          ("metrics.json", "test/top1_err/deployed", "steps")]
DELETE = object()
DAMAGE = st.sampled_from([None, "truncate", "garbage", "utf16", "delete-info", "delete-metrics", "empty"])


def _mutated(files: dict, changes) -> dict:
    files = copy.deepcopy(files)
    for place, value in changes:
        holder, key = files, place[-1]
        for part in place[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            if value is DELETE:
                holder.pop(key, None)
            else:
                holder[key] = value
    return files


@hypothesis.settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(changes=st.lists(st.tuples(st.sampled_from(PLACES), JSON | st.just(DELETE)), max_size=4),
                  damage=DAMAGE, which=st.sampled_from(["run.json", "config.json", "info.json", "metrics.json"]))
def test_every_reader_survives_every_record(changes, damage, which):
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "results"
        write_record(store, 1, good_files("valid", 1))
        files = _mutated(good_files("random", 2, value=33.0), changes)
        encoded = {n: json.dumps(b).encode() for n, b in files.items()}
        if which not in encoded:
            damage = None
        if damage == "truncate":
            encoded[which] = encoded[which][: len(encoded[which]) // 2]
        elif damage == "garbage":
            encoded[which] = os.urandom(12)
        elif damage == "utf16":
            encoded[which] = json.dumps(files[which]).encode("utf-16")
        elif damage == "empty":
            encoded[which] = b""
        elif damage in ("delete-info", "delete-metrics"):
            encoded.pop("info.json" if damage == "delete-info" else "metrics.json", None)
        random_dir = write_record(store, 2, encoded)
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            out = read_everything(store, ["valid", "random"])
            from pcl.tracking.upload import _file_run_document

            try:
                _file_run_document(random_dir)
            except Exception as raised:  # noqa: BLE001 - only these two may leave it
                assert isinstance(raised, ValueError) or type(raised).__name__ == "_BeingCreated", repr(raised)
        frame = out["runs"]
        assert "valid" in set(frame["run_key"]) and out["has"][0]  # the valid record is always read
        named = [line for line in err.getvalue().splitlines() if str(random_dir) in line]
        if "2" not in set(frame["run_id"].astype(str)):  # not read: named once (unless a run being created)
            created = {"run.json", "config.json"} - set(encoded)
            assert len([line for line in named if re.search(rf"{re.escape(str(random_dir))}:", line)]) == (
                0 if created else 1), err.getvalue()
        assert len(named) == len(set(named))  # nothing named twice


# ---- a shared MongoDB: other projects' documents -------------------------------------------------------------------
def test_a_shared_database_with_foreign_documents(tmp_path, mongo_url, capsys):
    """A notebook's insert_one (ObjectId _id) and another project's runs (string and float ids, odd meta): a new
    run still gets the next integer id, upload neither loops nor counts them, and no reader reads them."""
    from bson import ObjectId
    from pymongo import MongoClient

    from pcl import tracking
    from pcl.tracking.upload import upload

    db = MongoClient(mongo_url).get_default_database()
    db["runs"].insert_many([{"_id": ObjectId(), "note": "notebook"}, {"_id": "their-run", "config": {}},
                            {"_id": 2.5, "meta": {"attempt_id": ["odd"]}}, {"_id": 4, "config": {"lr": 1}}])
    cfg = dict(dataset="synthetic", backbone="tiny_resnet8", method="baseline", epochs=1, batch_size=32,
               synthetic_classes=4, synthetic_train_size=64, synthetic_test_size=32, device="cpu", workers=0,
               checkpoint_root=str(tmp_path / "ck"), experiment="test_untrusted", label="smoke")
    report = tracking.run_grid([cfg], results_dir=str(tmp_path / "results"), mongo_url=mongo_url,
                               log=lambda _: None)
    assert [r.status for r in report.runs] == ["COMPLETED"]
    ours = db["runs"].find_one({"config.run_key": {"$exists": True}})
    assert ours["_id"] == 5 and ours["status"] == "COMPLETED"
    assert db["runs"].count_documents({"_id": None}) == 0
    store = tmp_path / "file-only"
    write_record(store, 1, good_files("uploaded", 1))
    up = upload(str(store), mongo_url, log=lambda line: None)
    assert len(up.inserted) == 1 and db["runs"].find_one({"config.run_key": "uploaded"})["_id"] == 1  # its folder's
    write_record(store, 5, good_files("second", 5))  # folder 5 is taken by the run above: the next integer id
    assert len(upload(str(store), mongo_url, log=lambda line: None).inserted) == 1
    assert db["runs"].find_one({"config.run_key": "second"})["_id"] == 6
    frame = results.load_runs(mongo_url)
    assert sorted(frame["run_key"]) == sorted([ours["config"]["run_key"], "uploaded", "second"])
    assert "Traceback" not in capsys.readouterr().err


# ---- ledgers (slurm/): the launcher's notes in a results folder others may write ----------------------------------
@pytest.mark.parametrize("body", [b"[]", b"{not json", b'{"job_id": ["1"], "state": 3, "stderr": {"a": 1}}', "fifo",
                                  "link"])
def test_a_damaged_ledger_entry_is_named_and_read_as_empty(tmp_path, capsys, body):
    from slurm.jobs import ledger_path, read_ledger, write_ledger

    path = ledger_path(tmp_path, "k")
    path.parent.mkdir(parents=True)
    if body == "fifo":
        os.mkfifo(path)
    elif body == "link":
        (tmp_path / "elsewhere.json").write_text('{"job_id": "9", "stderr": "/etc/shadow"}')
        path.symlink_to(tmp_path / "elsewhere.json")
    else:
        path.write_bytes(body)
    entry = read_ledger(tmp_path, "k")
    assert "job_id" not in entry and "stderr" not in entry and not isinstance(entry.get("state"), int)
    assert len([line for line in capsys.readouterr().err.splitlines() if str(path) in line]) >= 1
    if body not in ("fifo", "link"):
        write_ledger(tmp_path, "k", job_id="12", state="STARTED")  # a damaged entry is replaced, not a crash
        assert read_ledger(tmp_path, "k")["job_id"] == "12"


def test_status_reads_a_log_only_as_a_regular_file_and_shows_one_line(tmp_path):
    from slurm.status import last_error_line

    fifo = tmp_path / "job.err"
    os.mkfifo(fifo)
    assert last_error_line(None, str(fifo)) == ""  # would block forever if opened for reading as a file
    log = tmp_path / "real.err"
    log.write_text("ok\nRuntimeError: \x1b[2Jboom\x07\n")
    assert last_error_line(None, str(log)) == "RuntimeError: [2Jboom"  # no ESC: the terminal is not driven
    assert last_error_line({"fail_trace": "ValueError: x\x1b]0;t\x07"}, None) == "ValueError: x ]0;t"


def test_writers_and_readers_agree_on_a_percent_encoded_database_name(tmp_path, mongo_session_server):
    """mongodb://host/pcl%2Dshared: upload (a writer) and every reader use the database 'pcl-shared'."""
    from pcl.secrets import url_database
    from pcl.tracking.upload import upload

    url = mongo_session_server.url(db="pcl%2Dshared")
    assert url_database(url) == "pcl-shared" == results.connect(url).name
    assert url_database("mongodb://user:pa/ss@host/db") == "db"  # a '/' in the password is not the path
    store = tmp_path / "results"
    write_record(store, 1, good_files("encoded", 1))
    assert len(upload(str(store), url, log=lambda line: None).inserted) == 1
    assert list(results.load_runs(url)["run_key"]) == ["encoded"]
    assert list(runs.read_attempts([url])["run_key"]) == ["encoded"]


# ---- anything in the way is named, not tracebacked ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "broken link"])
def test_a_file_where_a_checkpoint_folder_should_be_is_named_before_the_grid(tmp_path, kind):
    from pcl import tracking
    from pcl.schema import ConfigError

    cfg = dict(dataset="synthetic", backbone="tiny_resnet8", method="baseline", epochs=1, batch_size=32,
               synthetic_classes=4, synthetic_train_size=64, synthetic_test_size=32, device="cpu", workers=0,
               checkpoint_root=str(tmp_path / "ck"), experiment="test_untrusted", label="smoke")
    key = tracking.normalize_run_config(cfg)["run_key"]
    (tmp_path / "ck").mkdir()
    if kind == "file":
        (tmp_path / "ck" / key).write_text("in the way")
    else:
        (tmp_path / "ck" / key).symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError) as info:
        tracking.run_grid([cfg], results_dir=str(tmp_path / "results"), log=lambda _: None)
    assert "\n" not in str(info.value) and str(tmp_path / "ck" / key) in str(info.value)
    assert not (tmp_path / "results").exists()  # before any record


def test_a_store_is_indexed_once_and_new_or_changed_folders_are_still_seen(tmp_path, monkeypatch):
    """has_completed per run_key reads each folder once per process (an index), yet sees a folder created after
    the first lookup, a RUNNING record that became COMPLETED, and a folder Sacred is still creating."""
    import json
    import os

    from pcl import results

    root = tmp_path / "results"

    def write(run_id, key, status, config=True):
        folder = root / str(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text(json.dumps({"status": status, "result": None}))
        if config:
            (folder / "config.json").write_text(json.dumps({"run_key": key}))

    write(1, "a", "COMPLETED")
    write(2, "b", "RUNNING")
    assert results.has_completed(str(root), "a") and not results.has_completed(str(root), "b")
    write(3, "c", "COMPLETED", config=False)  # being created: no config.json yet
    assert not results.has_completed(str(root), "c")
    (root / "3" / "config.json").write_text(json.dumps({"run_key": "c"}))
    write(4, "d", "COMPLETED")
    (root / "2" / "run.json").write_text(json.dumps({"status": "COMPLETED", "result": {"x": 1.0}}))
    os.utime(root / "2" / "run.json", ns=(1, 10**18))
    assert results.has_completed(str(root), "c") and results.has_completed(str(root), "d")
    assert results.has_completed(str(root), "b")
    assert results.find_completed(str(root), "b")["path"] == str(root / "2")
    reads = []
    original = results.read_file_record
    monkeypatch.setattr(results, "read_file_record", lambda *a, **k: reads.append(a[0]) or original(*a, **k))
    for key in ("a", "b", "c", "d", "e"):  # unchanged folders: no folder parsed again
        results.has_completed(str(root), key)
    assert reads == []


_DOCUMENT_DBS = iter(range(10 ** 6))


def _database(server, runs: list, metrics: list):
    """A fresh database on the session's MongoDB server holding the documents it accepts (one that is not a
    mapping, or holds an integer beyond 8 bytes, no MongoDB can hold), and the _ids of the runs it holds."""
    db = results.connect(server.url(db=f"documents_{next(_DOCUMENT_DBS)}"))
    held = set()
    for name, docs in (("runs", runs), ("metrics", metrics)):
        for doc in docs:
            try:
                db[name].insert_one(doc)
            except Exception:  # noqa: BLE001 - refused by the server: not a document a reader can meet
                continue
            if name == "runs":
                held.add(doc["_id"])
    return db, held


@hypothesis.settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(changes=st.lists(st.tuples(st.sampled_from([p[1:] for p in PLACES if p[0] != "metrics.json"
                                                              and len(p) > 1]), JSON | st.just(DELETE)), max_size=4),
                  foreign=st.lists(JSON, max_size=3), series=JSON)
def test_every_reader_survives_every_database_document(mongo_session_server, changes, foreign, series):
    """Documents of a shared database on a real server: ours mutated at random, anything a server holds from
    others, and a random metric series."""
    good = good_files("valid", 1)
    valid = {"_id": 1, **good["run.json"], "config": good["config.json"], "info": good["info.json"]}
    files = good_files("random", 2, value=33.0)
    doc = {"_id": 2, **files["run.json"], "config": files["config.json"], "info": files["info.json"]}
    for place, value in changes:  # the same places as in the files, inside one document
        holder = doc
        for part in place[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            if value is DELETE:
                holder.pop(place[-1], None)
            else:
                holder[place[-1]] = value
    metrics = [{"_id": "m1", "run_id": 1, **good["metrics.json"]["test/top1_err/deployed"],
                "name": "test/top1_err/deployed"}, {"_id": "m2", "run_id": 2, "name": "test/top1_err/deployed",
                                                    **(series if isinstance(series, dict) else {"values": series})}]
    db, held = _database(mongo_session_server, [valid, doc, *[{"_id": 10 + i, **f} if isinstance(f, dict) else f
                                                               for i, f in enumerate(foreign)]], metrics)
    hypothesis.assume({1, 2} <= held)  # ours both stored: a change no server holds is not a document to read
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        frame = results.load_runs(db, dedupe=False)
        assert "valid" in set(frame["run_key"])
        assert "valid" in results.completed_run_keys(db) and results.has_completed(db, "valid")
        results.find_completed(db, "random")
        results.load_metrics(db)
        records = list(results.iter_records(db))
        assert 0 in results.metric_documents(records, names=lambda i: {"test/top1_err/deployed"})  # the figures'
        attempts = runs.read_attempts([db])
        table = tables.build_table("table2", plan_of("valid", "random"), attempts, stores="fake")
        render.render_markdown(table)


_UPLOAD_DBS = iter(range(10 ** 6))


@hypothesis.settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "40")) // 2, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(changes=st.lists(st.tuples(st.sampled_from(PLACES), JSON | st.just(DELETE)), max_size=4),
                  sources=JSON)
def test_upload_survives_every_record(mongo_session_server, changes, sources):
    """The whole upload (into a fresh database each time) over a valid record and a randomly changed one (and
    random experiment.sources): it never raises, uploads the valid one, and names the other once when it does
    not upload it."""
    from pcl.tracking.upload import upload

    url = mongo_session_server.url(db=f"upload_prop_{next(_UPLOAD_DBS)}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "results"
        write_record(store, 1, good_files("valid", 1))
        files = _mutated(good_files("random", 2, value=33.0), changes)
        if isinstance(files.get("run.json"), dict) and isinstance(files["run.json"].get("experiment"), dict):
            files["run.json"]["experiment"]["sources"] = sources
        random_dir = write_record(store, 2, files)
        report = upload(str(store), url, log=lambda line: None)
        assert any(line == str(store / "1") for line in report.inserted)
        where = [line for line in (*report.inserted, *report.updated, *report.unchanged, *report.skipped_running)
                 if line == str(random_dir)] + [line for line in report.unreadable
                                                if line.startswith(f"{random_dir}:")]
        assert len(where) == 1, report  # a folder without run.json yet: a run starting (skipped_running)


def _wide_ints_as_floats(value):
    if isinstance(value, dict):
        return {k: _wide_ints_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -2 ** 63 <= value < 2 ** 64:
        return float(str(value))  # beyond a float: inf
    return value


@hypothesis.settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "40")) * 5, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20), indent=st.sampled_from([None, 1]), ascii_only=st.booleans())
def test_the_fast_json_parser_reads_what_the_standard_one_reads(value, indent, ascii_only):
    """Records are parsed with orjson where it is installed; what it refuses (NaN, Infinity, lone surrogates) the
    standard parser reads: the same objects as the standard parser, except that an integer beyond 64 bits is a
    float whichever parser read it; text that is not JSON is a RecordError."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(text)
    except ValueError:  # e.g. a lone surrogate written as raw bytes: not UTF-8
        with pytest.raises(results.RecordError):
            results._parse_json(text, "x.json")
        return
    expected = _wide_ints_as_floats(expected)
    parsed = results._parse_json(text, "x.json")
    assert json.dumps(parsed, sort_keys=True) == json.dumps(expected, sort_keys=True)  # NaN == NaN here
    with pytest.raises(results.RecordError):
        results._parse_json(text + b"{", "x.json")


def test_a_metric_document_whose_name_is_a_list_holding_an_asked_name_is_not_the_runs_curve(mongo_url):
    """MongoDB matches `name: {$in: [...]}` inside an array: a foreign metric document named
    ["test/top1_err/deployed"] reaches the reader, which passes it over (it is no series asked for, as a document
    whose run_id is a list) and reads the run's real curve (it raised TypeError, unhashable list: the command
    stopped)."""
    db = results.connect(mongo_url)
    files = good_files("listname", 1)
    db["runs"].insert_one({"_id": 1, **files["run.json"], "config": files["config.json"], "info": files["info.json"]})
    series = files["metrics.json"]["test/top1_err/deployed"]
    db["metrics"].insert_many([{"run_id": 1, "name": "test/top1_err/deployed", **series},
                               {"run_id": 1, "name": ["test/top1_err/deployed"], "steps": [1], "values": [99.0]}])
    frame = results.load_metrics(db, names=["test/top1_err/deployed"])
    assert frame["value"].tolist() == series["values"]


@pytest.mark.skipif(not hasattr(os, "posix_fadvise") or not hasattr(os, "mkfifo"), reason="POSIX only")
def test_reading_ahead_asks_for_the_regular_files_named_and_nothing_else(tmp_path, monkeypatch):
    """pcl.fsio.read_ahead (the metrics files a command is about to read, asked of the kernel in the background)
    never follows a link out of the store, never waits on a FIFO, passes over a folder, an absent file, a name the
    system refuses and a file over the limit: only the regular file is advised, and the thread ends."""
    from pcl import fsio

    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    store = tmp_path / "store"
    store.mkdir()
    (store / "metrics.json").write_text("{}")
    (store / "link.json").symlink_to(outside)
    os.mkfifo(store / "fifo.json")
    (store / "folder").mkdir()
    (store / "big.json").write_bytes(b" " * 2049)  # over the limit: read_regular refuses it, nothing to cache
    advised = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *a: (advised.append(os.fstat(fd).st_ino), real(fd, *a)))
    thread = fsio.read_ahead([store / "fifo.json", store / "link.json", store / "folder", store / "absent.json",
                              "bad\0name", store / "big.json", store / "metrics.json"], limit=2048)
    thread.join(timeout=30)
    assert not thread.is_alive() and advised == [(store / "metrics.json").stat().st_ino]
    assert fsio.read_ahead([]) is None


def test_load_metrics_reads_ahead_the_metrics_files_of_the_runs_it_reads(tmp_path, monkeypatch):
    """results.load_metrics asks the kernel for every metrics file it will read, in the order it reads them, and
    for no other (an attempt not asked for)."""
    for number in (1, 2, 3):
        write_record(tmp_path / "results", number, good_files(f"ahead{number}", number))
    asked = []
    monkeypatch.setattr(results, "read_ahead", lambda paths, limit: asked.append(list(paths)))
    frame = results.load_metrics(str(tmp_path / "results"), attempt_ids=["att-ahead1-1", "att-ahead3-3"])
    assert set(frame["attempt_id"]) == {"att-ahead1-1", "att-ahead3-3"}
    assert asked == [[str(tmp_path / "results" / n / "metrics.json") for n in ("1", "3")]]


@pytest.mark.parametrize("digit_limit", [0, 640, 4300])
def test_an_integer_of_thousands_of_digits_is_read_the_same_whatever_pythons_digit_limit(digit_limit):
    """An integer beyond 64 bits is a float (inf beyond a float) whichever parser reads it: one of 5,000 digits
    too, whatever Python's limit on the digits int() takes (PYTHONINTMAXSTRDIGITS), which decided before whether
    the file was read (0: no limit) or refused (the default 4,300)."""
    import sys

    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(digit_limit)
    try:
        parsed = results._parse_json(b'{"v": [1, ' + b"7" * 5000 + b', -' + b"7" * 25 + b"]}", "x.json")
    finally:
        sys.set_int_max_str_digits(before)
    assert parsed == {"v": [1, math.inf, -float("7" * 25)]}


# ---- one record from either store ----------------------------------------------------------------------------------
#: run.json's places a reader does not use (Sacred writes them; the archived sources, the captured output) and the
#: places of the fields a record keeps only part of
_RUN_PLACES = [p[1:] for p in PLACES if p[0] == "run.json" and len(p) > 1] + [
    ("meta", "options"), ("host", "os"), ("host", "hostname"), ("experiment", "name"), ("experiment", "sources"),
    ("captured_out",), ("fail_trace",), ("heartbeat",), ("command",)]
_SAME_DBS = iter(range(10 ** 6))


def _comparable(records: list[dict]) -> list[str]:
    return sorted(json.dumps({k: v for k, v in r.items() if k not in ("source", "path", "_db", "run_id")},
                             sort_keys=True, default=str) for r in records)


@hypothesis.settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(changes=st.lists(st.tuples(st.sampled_from(_RUN_PLACES), JSON | st.just(DELETE)), max_size=4))
def test_a_run_is_the_same_record_read_from_either_store(mongo_session_server, changes):
    """The same run as a file-store folder and as a MongoDB document (Sacred's layout: config and info inside) gives
    the same record, field by field, or is skipped on both: the MongoDB projection and the file store's pick are
    one definition (results.RUN_FIELDS)."""
    files = good_files("same", 1)
    run = files["run.json"]
    run.update(command="main", captured_out="epoch 1\n", meta={**run["meta"], "options": {"--force": False}},
               host={**run["host"], "os": ["Linux"], "ENV": {}})
    files["run.json"] = _mutated({"run.json": run}, [(("run.json", *place), v) for place, v in changes])["run.json"]
    db = results.connect(mongo_session_server.url(db=f"same_record_{next(_SAME_DBS)}"))
    try:
        db["runs"].insert_one({"_id": 1, **files["run.json"], "config": files["config.json"],
                               "info": files["info.json"]})
    except Exception:  # noqa: BLE001 - what MongoDB cannot hold (an integer beyond 8 bytes, a '$' key) upload names
        hypothesis.assume(False)
    import contextlib
    import io

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        write_record(Path(tmp) / "results", 1, files)
        from_files = list(results.iter_records(str(Path(tmp) / "results")))
        from_mongo = list(results.iter_records(db))
    assert _comparable(from_files) == _comparable(from_mongo)


def test_a_record_keeps_only_what_its_readers_use(tmp_path, mongo_url):
    """Sacred's command-line options, OS, ENV, archived sources and captured output stay out of a record on both
    stores (the MongoDB server is asked only for what the readers use)."""
    files = good_files("lean", 1)
    files["run.json"].update(captured_out="x" * 1000, command="main",
                             meta={"attempt_id": "att", "options": {"--force": False}},
                             host={"hostname": "gpu01", "os": ["Linux"], "ENV": {"A": "1"}},
                             experiment={"name": "table2", "base_dir": "/x", "sources": [["a.py", "id"]]})
    write_record(tmp_path / "results", 1, files)
    db = results.connect(mongo_url)
    db["runs"].insert_one({"_id": 1, **files["run.json"], "config": files["config.json"], "info": files["info.json"]})
    for store in (str(tmp_path / "results"), db):
        (record,) = results.iter_records(store)
        assert record["meta"] == {"attempt_id": "att"} and record["host"] == {"hostname": "gpu01"}
        assert record["experiment"] == {"name": "table2"} and "captured_out" not in record
        assert "command" not in record and record["config"]["run_key"] == "lean"


def test_a_query_on_a_field_records_leave_out_is_refused_on_both_stores(tmp_path, mongo_url):
    """MongoDB would match meta.run_key in the whole document, a file store in the record, which leaves it out: the
    same query gave a run on one store and none on the other; now neither runs it."""
    write_record(tmp_path / "results", 1, good_files("k", 1))
    for store in (str(tmp_path / "results"), mongo_url):
        with pytest.raises(ValueError, match="'meta.run_key' is not a field of a record"):
            list(results.iter_records(store, {"meta.run_key": "k"}))
        assert list(results.iter_records(store, {"meta.attempt_id": "nothing", "status": "COMPLETED"})) == []


def test_a_series_of_another_document_whose_run_id_lists_this_run_is_not_this_runs(mongo_url):
    """{"run_id": 1} matches a metric document whose run_id is [1, 2] (another project's): its values are not run
    1's curve."""
    files = good_files("own", 1)
    db = results.connect(mongo_url)
    db["runs"].insert_one({"_id": 1, **files["run.json"], "config": files["config.json"], "info": files["info.json"]})
    db["metrics"].insert_many([
        {"run_id": 1, "name": "test/top1_err/deployed", "steps": [1, 2], "values": [60.0, 30.0]},
        {"run_id": [1, 2], "name": "test/top1_err/deployed", "steps": [1, 2], "values": [99.0, 99.0]}])
    (record,) = results.iter_records(db)
    (documents,) = results.metric_documents([record], names=lambda i: {"test/top1_err/deployed"}).values()
    assert [d["values"] for d in documents] == [[60.0, 30.0]]
    assert list(results.load_metrics(db)["value"]) == [60.0, 30.0]


def test_a_time_with_a_decimal_comma_is_read_as_its_time(tmp_path):
    """ISO 8601 allows a decimal comma, which Python reads and pandas' ISO parser does not (it became NaT)."""
    files = good_files("comma", 1)
    files["run.json"]["start_time"] = "2026-01-01T00:00:00,25"
    write_record(tmp_path / "results", 1, files)
    (start,) = results.load_runs(str(tmp_path / "results"))["start_time"]
    assert start == __import__("pandas").Timestamp("2026-01-01 00:00:00.25")


def test_a_record_that_does_not_name_its_deployed_head_is_drawn_from_the_copy(tmp_path):
    """An info.json without deployed_head (an older record) read as NaN by pandas, which counted as a head name:
    the figures asked for test/top1_err/nan, never there (on MongoDB a query for it, then one for the copy)."""
    from analysis import plots

    store = tmp_path / "results"
    files = good_files("a", 1)
    del files["info.json"]["deployed_head"]  # type: ignore[index]
    write_record(store, 1, files)
    write_record(store, 2, good_files("b", 2, value=31.0))
    table = read_everything(store, ["a", "b"])["table"]
    names = {r["run_key"]: plots._curve_names(table, r) for r in plots._completed(table).to_dict("records")}
    assert list(names["a"]) == [plots.COPY] and list(names["b"]) == ["test/top1_err/mean_peer1", plots.COPY]
    done, _ = plots.make_figures([table], tmp_path / "figs", keep=True)
    curves = next(f for f, _ in done if f.kind == "curves")
    assert {line.get_label() for ax in curves.figure.axes for line in ax.get_lines()} >= {"PCL"}


def test_when_no_record_makes_a_plan_the_error_says_why(tmp_path):
    """Records of a config this version refuses (resnet18 on CIFAR): one beside good ones is a skipped line; when
    every record is one, the error said only that no plan had runs, the line saying why was dropped."""
    from analysis.runs import AnalysisError
    from analysis.tables import build_tables

    store = tmp_path / "results"
    for number, key in ((1, "a"), (2, "b")):
        files = good_files(key, number)
        files["config.json"]["backbone"] = "resnet18"  # type: ignore[index]
        write_record(store, number, files)
    with pytest.raises(AnalysisError, match=r"no table: no plan has runs in .*; 2 run\(s\) of table2 on cifar100 "
                                            r"have a config this version rejects \(.*resnet18"):
        build_tables(None, [str(store)])


def test_an_empty_store_path_is_no_store(tmp_path, monkeypatch):
    """--store '' read the current folder as a file store ("holds no run records", or someone's records)."""
    from analysis.runs import AnalysisError

    monkeypatch.chdir(tmp_path)
    write_record(tmp_path, 1, good_files("a", 1))  # a record in the current folder: not read
    for empty in ("", " "):
        with pytest.raises(AnalysisError, match=f"store {empty!r} names no store"):
            runs.read_attempts([empty])
