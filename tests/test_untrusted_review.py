"""Kinds an adversarial review of the readers found (each test fails on the code before it): a store's folder names,
record times with offsets, ids and impossible results; the analysis rebuilding plans from records (a record's
config, data_root and options); ledger text on a terminal; the analysis commands' --head, --out and --set.
Records are written by hand (tests/test_untrusted_records.py's helpers); a property test (Hypothesis) feeds times
of every offset and range to every reader.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pcl import results
from tests.test_untrusted_records import good_files, plan_of, read_everything, warnings_naming, write_record

ROOT = Path(__file__).resolve().parents[1]
TIME_FIELDS = ("start_time", "stop_time", "heartbeat")  # a record's times


def _write(store: Path, number: int, run: dict | None = None, config: dict | None = None,
           key: str | None = None) -> Path:
    files = good_files(key or f"k{number}", number)
    files["run.json"] = {**files["run.json"], **(run or {})}
    files["config.json"] = {**files["config.json"], **(config or {})}
    return write_record(store, number, files)


# ---- a store's folders and records --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["²", "٣", "1²"])
def test_a_folder_named_by_a_digit_that_is_not_ascii_is_no_run_folder(tmp_path, capsys, name):
    store = tmp_path / "results"
    _write(store, 1)
    (store / name).mkdir()  # str.isdigit() is true for each; int() fails for "²", reads "٣" as 3
    out = read_everything(store, ["k1"])
    assert set(out["runs"]["run_key"]) == {"k1"} and out["has"] == [True]
    assert [p.name for p in results.run_folders(store)] == ["1"]
    assert "Traceback" not in capsys.readouterr().err


def test_sacreds_file_store_numbers_a_new_run_past_such_a_folder(tmp_path):
    from pcl.tracking.stores import _FileObserver

    store = tmp_path / "results"
    _write(store, 4)
    (store / "²").mkdir()
    assert _FileObserver(str(store))._maximum_existing_run_id() == 4  # Sacred's own: int("²") raised


@pytest.mark.parametrize("stamp", ["2026-12-03T06:33:19.332627+05:00", "2026-12-03T01:00:00Z",
                                   "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                   "Thu, 03 Dec 2026 06:33:19 +0500"])
@pytest.mark.parametrize("field", TIME_FIELDS)
def test_a_time_with_an_offset_or_out_of_range_is_read_beside_naive_ones(tmp_path, capsys, stamp, field):
    from slurm.plan import record_states

    store = tmp_path / "results"
    _write(store, 1)
    _write(store, 2, run={field: stamp, "status": "RUNNING" if field == "heartbeat" else "COMPLETED"})
    _write(store, 3)
    out = read_everything(store, ["k1", "k2", "k3"])  # sorts and compares every record's times
    assert {"k1", "k3"} <= set(out["runs"]["run_key"])
    states = record_states([str(store)])
    now = dt.datetime.now(dt.timezone.utc)
    assert all(isinstance(s.heartbeat_age_s(now), (float, type(None))) for s in states.values())
    assert "Traceback" not in capsys.readouterr().err


def test_utc_time_converts_an_offset_and_keeps_naive_times():
    assert results.utc_time("2026-12-03T06:00:00+05:00") == "2026-12-03T01:00:00"
    assert results.utc_time("2026-12-03T06:00:00") == "2026-12-03T06:00:00"  # Sacred's own: unchanged
    assert results.utc_time(dt.datetime(2026, 1, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=5)))) == \
        dt.datetime(2026, 1, 1)
    assert results.utc_time("0001-01-01T00:00:00+01:00") is None and results.utc_time("no time") is None


@pytest.mark.parametrize("result", [{"deployed/top1_err": -1e308}, {"deployed/top1_err": float("inf")},
                                    {"last/top5_err/peer1": 100.5}, {"epochs": 10 ** 400}])
def test_an_impossible_result_is_a_damaged_record(tmp_path, capsys, result):
    store = tmp_path / "results"
    _write(store, 1)
    bad = _write(store, 2, run={"result": result})
    out = read_everything(store, ["k1", "k2"])
    assert set(out["runs"]["run_key"]) == {"k1"}
    assert len(warnings_naming(capsys.readouterr().err, bad)) == 1


def test_a_diverged_run_nan_stays_a_result():
    record = json.loads(json.dumps({"status": "COMPLETED", "config": {"run_key": "k"},
                                    "result": {"deployed/top1_err": float("nan")}}))
    assert results.check_record(record)["result"]["deployed/top1_err"] != 0  # NaN kept, not refused


def test_a_negative_or_infinite_parameter_count_is_a_damaged_record(tmp_path, capsys):
    store = tmp_path / "results"
    _write(store, 1)
    files = good_files("k2", 2)
    files["info.json"]["parameter_counts"] = {"params_train": -5, "params_deployed": float("inf")}
    bad = write_record(store, 2, files)
    assert set(read_everything(store, ["k1", "k2"])["runs"]["run_key"]) == {"k1"}
    assert len(warnings_naming(capsys.readouterr().err, bad)) == 1


def test_a_folder_in_place_of_metrics_json_is_named_by_its_path(tmp_path, capsys):
    store = tmp_path / "results"
    run_dir = _write(store, 1)
    (run_dir / "metrics.json").unlink()
    (run_dir / "metrics.json").mkdir()
    with pytest.raises(results.RecordError, match="metrics.json is not a regular file"):
        results.read_file(run_dir, "metrics.json")
    frame = results.load_metrics(str(store))  # named and skipped, not IsADirectoryError naming an fd number
    assert frame.empty and "metrics.json" in capsys.readouterr().err


@pytest.mark.parametrize("doc_id", [{"x": [1, 2]}, [1, 2]])
def test_a_database_document_whose_id_is_not_a_value_is_skipped(mongo_url, capsys, doc_id):
    import pymongo

    client = pymongo.MongoClient(mongo_url)
    db = client.get_default_database()
    good = {"_id": 1, "status": "COMPLETED", "config": {"run_key": "good", "experiment": "table2"},
            "result": {"deployed/top1_err": 30.0}}
    db["runs"].insert_many([good, {**good, "_id": doc_id, "config": {"run_key": "odd"}}])
    frame = results.load_runs(mongo_url, dedupe=False)
    assert list(frame["run_key"]) == ["good"] and results.completed_run_keys(mongo_url) == {"good"}
    assert "the run id" in capsys.readouterr().err
    client.close()


# ---- the analysis: plans rebuilt from the records ------------------------------------------------------------------
def _smoke_config(**changes) -> dict:
    from experiments import registry

    cfg = registry.plan("table2", {"method": "baseline"}, ["smoke"])[0]
    return {**cfg, **changes}


def _store_of(tmp_path: Path, configs: list[dict]) -> Path:
    from pcl import schema

    store = tmp_path / "results"
    for i, cfg in enumerate(configs, 1):
        try:  # a valid config gets its own run_key; a damaged one keeps the one it was given
            cfg = {**cfg, "run_key": schema.run_key(schema.normalize_run_config(cfg))}
        except Exception:  # noqa: BLE001
            pass
        files = good_files(cfg["run_key"], i)
        files["config.json"] = cfg
        write_record(store, i, files)
    return store


def _held(store: Path):
    from analysis import discover, runs

    attempts = runs.read_attempts([str(store)])
    return discover.held_plans(attempts, ["table2"])


@pytest.mark.parametrize("damage", [{"seed": -5}, {"method": "<b>x</b>"}, {"backbone": "nope"},
                                    {"epochs": None, "milestones": [5, 6]}])
def test_one_record_the_schema_rejects_does_not_drop_the_others_tables(tmp_path, damage):
    good = [_smoke_config(seed=s) for s in (0, 1)]
    store = _store_of(tmp_path, good + [_smoke_config(**{"seed": 2, **damage}, run_key="bad0123456789abc")])
    held, skipped = _held(store)
    kept = {r["run_key"] for h in held for r in h.plan}
    good_keys = {json.loads((store / str(i) / "config.json").read_text())["run_key"] for i in (1, 2)}
    assert good_keys <= kept, skipped
    bad = json.loads((store / "3" / "config.json").read_text())["run_key"]  # epochs null is valid: the recipe's
    assert bad in kept or any(bad in line for line in skipped), skipped


def test_a_run_with_changed_method_options_gets_its_own_plan_and_the_missed_run_is_named_right(tmp_path):
    base = _smoke_config()
    dml = _smoke_config(method="dml", options={"temperature": 1.0}, label="dml/tiny_resnet8")
    store = _store_of(tmp_path, [base, dml])
    held, skipped = _held(store)
    dml_key = json.loads((store / "2" / "config.json").read_text())["run_key"]
    options = [h for h in held if any(r["run_key"] == dml_key for r in h.plan)]
    assert options and options[0].updates.get("options") == {"temperature": 1.0}, (held, skipped)
    assert not skipped
    baseline = [h for h in held if h is not options[0]]
    assert baseline and all(r["method"] == "baseline" for r in baseline[0].plan)  # no empty DML column there


def test_rebuilding_plans_reads_no_file_a_record_names(tmp_path, monkeypatch):
    """A record's data_root on CIFAR: the analysis takes the identity the record holds; a FIFO there hung it."""
    from pcl.data import fingerprint

    root = tmp_path / "elsewhere"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for name in fingerprint.official_md5s("cifar10"):
        os.mkfifo(root / "cifar-10-batches-py" / name)
    opened: list[str] = []
    real = fingerprint.file_md5
    monkeypatch.setattr(fingerprint, "file_md5", lambda p: opened.append(str(p)) or real(p))
    cfg = _smoke_config(dataset="cifar10", data_root=str(root), data_identity="md5:0123456789abcdef")
    for key in ("synthetic_classes", "synthetic_train_size", "synthetic_test_size"):
        cfg.pop(key, None)
    store = _store_of(tmp_path, [cfg])
    held, skipped = _held(store)
    assert not [p for p in opened if str(root) in p]
    key = json.loads((store / "1" / "config.json").read_text())["run_key"]
    assert any(r["run_key"] == key for h in held for r in h.plan), skipped


def test_a_fifo_where_a_data_file_should_be_is_an_error_not_a_hang(tmp_path):
    from pcl.data import fingerprint

    os.mkfifo(tmp_path / "f")
    with pytest.raises(OSError, match="not a regular file"):
        fingerprint.file_md5(tmp_path / "f")


# ---- terminals and command lines -----------------------------------------------------------------------------------
def test_ledger_text_reaches_the_terminal_without_control_sequences(tmp_path):
    from slurm.status import render

    evil = "\x1b[2J\x1b[31mRED\x1b]0;TITLE\x07\nFAKE: all good\r\u202e"
    report = {"tables": [{"table": "table2", "runs": 1}], "note": "",
              "runs": [{"status": "refused", "run_key": "k", "label": "pcl/resnet32", "dataset": "cifar100",
                        "seed": 0, "detail": evil, "job_id": evil, "log": evil, "error": evil}]}
    text = render(report)
    assert not any(ch in text for ch in "\x1b\x07\r\u202e") and "\nFAKE" not in text


def _analysis(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "analysis" / script), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("args, names", [
    (["--head", "a/../../esc"], "--head"),
    (["--set", "epochs=-1"], "epochs"),
    (["--out", "FILE"], "--out"),
])
def test_analysis_command_lines_are_checked_before_any_work(tmp_path, args, names):
    afile = tmp_path / "afile"
    afile.write_text("x")
    store = tmp_path / "results"
    _write(store, 1)
    args = [str(afile) if a == "FILE" else a for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    done = _analysis("make_tables.py", "--store", str(store), *args, *out)
    assert done.returncode == 2 and names in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists() and not (ROOT / "esc.md").exists()
    report = _analysis("report.py", "--store", str(store), "--out", str(afile / "r.md"))
    assert report.returncode == 2 and "--out" in report.stderr and "Traceback" not in report.stderr


# ---- the property: times of every offset and range -----------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
ZONES = st.one_of(st.none(), st.timedeltas(min_value=dt.timedelta(hours=-23, minutes=-59),
                                           max_value=dt.timedelta(hours=23, minutes=59)).map(dt.timezone))


@hypothesis.settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(times=st.lists(st.tuples(st.sampled_from(TIME_FIELDS),
                                           st.datetimes(timezones=ZONES), st.booleans()), max_size=4))
def test_every_reader_survives_every_time(times):
    from slurm.plan import record_states

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "results"
        _write(store, 1)
        changes = {field: (stamp.isoformat() if as_text else stamp.isoformat(sep=" ")) for field, stamp, as_text
                   in times}
        _write(store, 2, run=changes)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            out = read_everything(store, ["k1", "k2"])
            record_states([str(store)])
        assert "k1" in set(out["runs"]["run_key"]) and "Traceback" not in err.getvalue()


def test_a_method_in_no_default_grid_is_named_with_how_to_reach_it():
    from slurm.plan import Selection, SelectionError, build_plan

    with pytest.raises(SelectionError, match=r"kd is in no default grid.*--set 'method=\[\"kd\"\]'"):
        build_plan(Selection(tables=["table2"], datasets=["cifar100"], methods=["kd"]))
    # a backbone is named as a backbone (the hint had said --set 'method=["pcl","resnet32"]')
    with pytest.raises(SelectionError, match=r"tiny_resnet8 is in no default grid.*--set 'backbone=\[\"tiny_resnet8\"\]'"):
        build_plan(Selection(tables=["table2"], datasets=["cifar100"], backbones=["tiny_resnet8"]))


# ---- a second pass: profiles, output folders, upload's failure entries and database documents, metric values -----
@pytest.mark.parametrize("key", ["partition", "qos", "account", "constraint"])
def test_a_profile_value_cannot_start_a_shell_line_in_the_job_script(tmp_path, key):
    from slurm.options import OptionsError, from_mapping, load_profile

    with pytest.raises(OptionsError, match=key):
        from_mapping({key: "gpu\nrm -rf /tmp/victim #"})
    profile = tmp_path / "p.toml"
    profile.write_text(f'{key} = "gpu\\nrm -rf /tmp/victim #"\n')
    with pytest.raises(OptionsError, match=key):
        load_profile(profile)
    assert from_mapping({"constraint": "a100|h100", "partition": "gpu,debug"}).constraint == "a100|h100"


@pytest.mark.parametrize("body", [b'partition = "\xff\xfe"\n', "fifo"])
def test_a_profile_that_is_not_utf8_text_or_not_a_file_is_one_line(tmp_path, body):
    from slurm.options import OptionsError, load_profile

    profile = tmp_path / "p.toml"
    if body == "fifo":
        os.mkfifo(profile)  # would block the launcher
    else:
        profile.write_bytes(body)
    with pytest.raises(OptionsError, match="profile"):
        load_profile(profile)


def test_outputs_replace_a_link_in_the_output_folder_and_never_write_through_it(tmp_path):
    import matplotlib.pyplot as plt

    from analysis import plots, render, tables

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "figures"
    out.mkdir()
    fig, _ = plt.subplots()
    for suffix in ("png", "pdf"):
        (out / f"f.{suffix}").symlink_to(victim)
    plots.save(plots.Figure("f", "curves", "c", fig), out)
    plt.close(fig)
    assert victim.read_text() == "precious"
    assert all(not (out / f"f.{s}").is_symlink() and (out / f"f.{s}").stat().st_size > 100 for s in ("png", "pdf"))
    table = tables.build_table("table2", plan_of("k"), read_attempts_empty(), stores="none")
    (out / f"{table.stem}.md").symlink_to(victim)
    render.write_table(table, out)
    assert victim.read_text() == "precious" and not (out / f"{table.stem}.md").is_symlink()
    assert oct((out / f"{table.stem}.md").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def read_attempts_empty():
    from analysis import runs

    return runs.read_attempts([])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _failure_entry(store: Path, name: str, attempt: str) -> Path:
    import pickle

    folder = store / "mongo_failed"
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"status": "COMPLETED", "config": {"run_key": f"key-{attempt}", "experiment": "table2"},
             "meta": {"attempt_id": attempt}, "result": {"deployed/top1_err": 30.0},
             "experiment": {"name": "table2", "sources": []}, "info": {}, "start_time": dt.datetime(2026, 1, 1)}
    path = folder / name
    path.write_bytes(pickle.dumps(entry, protocol=4))
    return path


def _laughs() -> bytes:
    """A 9-level pickle of 10 shared references each: a few hundred bytes, 10^9 strings written out."""
    import pickle

    value: object = "ha"
    for _ in range(9):
        value = [value] * 10
    return pickle.dumps({"status": "COMPLETED", "config": {"run_key": "laugh"}, "meta": {"attempt_id": "laugh"},
                         "info": {"junk": value}}, protocol=4)


def test_upload_reads_failure_entries_as_records_and_names_each_one_it_skips(tmp_path, mongo_url):
    import pymongo

    from pcl.tracking.upload import upload

    store = tmp_path / "results"
    store.mkdir()
    _failure_entry(store, "good.pickle", "good")
    outside = _failure_entry(tmp_path / "elsewhere", "secret.pickle", "outside")
    (store / "mongo_failed" / "link.pickle").symlink_to(outside)
    os.mkfifo(store / "mongo_failed" / "fifo.pickle")  # hung the upload
    (store / "mongo_failed" / "laugh.pickle").write_bytes(_laughs())  # 2 GB and 17 s
    deep = b"\x80\x04" + b"]" * 5000 + b"." * 1  # nested lists, never closed: a damaged pickle
    (store / "mongo_failed" / "deep.pickle").write_bytes(deep)
    lines: list[str] = []
    report = upload(str(store), mongo_url, log=lines.append)
    named = [line for line in lines if line.startswith("warning: not uploaded:")]
    for name in ("link", "fifo", "laugh", "deep"):
        assert sum(f"{name}.pickle" in line for line in named) == 1, lines
    client = pymongo.MongoClient(mongo_url)
    keys = {d["config"]["run_key"] for d in client.get_default_database()["runs"].find({}, {"config.run_key": 1})}
    client.close()
    assert keys == {"key-good"} and len(report.unreadable) == 4


def test_upload_of_a_folder_that_is_not_there_is_one_line(tmp_path, mongo_url):
    from pcl.tracking.errors import UserError
    from pcl.tracking.upload import upload

    for missing in (tmp_path / "nothing", tmp_path / "afile"):
        if missing.name == "afile":
            missing.write_text("x")
        with pytest.raises(UserError, match="results_dir"):
            upload(str(missing), mongo_url, log=lambda line: None)


@pytest.mark.parametrize("odd", [{"experiment": "x"}, {"experiment": None}, {"omniboard": ["a"]},
                                 {"info": {"metrics": "x", "experiments": 3}}])
def test_upload_next_to_a_database_document_of_another_shape(tmp_path, mongo_url, odd):
    import pymongo

    from pcl.tracking.upload import upload

    store = tmp_path / "results"
    write_record(store, 1, good_files("k1", 1))
    client = pymongo.MongoClient(mongo_url)
    db = client.get_default_database()
    doc = {"_id": 7, "status": "RUNNING", "config": {"run_key": "k1"}, "meta": {"attempt_id": "att-k1-1"},
           "experiment": {"name": "table2", "sources": []}, "omniboard": {"tags": []}, "info": {}}
    db["runs"].insert_one({**doc, **odd})
    db["metrics"].insert_one({"run_id": 7, "name": {"a": 1}, "steps": [1], "values": [1.0]})
    upload(str(store), mongo_url, log=lambda line: None)
    stored = db["runs"].find_one({"meta.attempt_id": "att-k1-1"})
    client.close()
    assert stored["status"] == "COMPLETED" and stored["config"]["run_key"] == "k1"


def test_an_error_curve_outside_0_100_is_a_damaged_series(tmp_path, capsys):
    store = tmp_path / "results"
    files = good_files("k1", 1)
    files["metrics.json"]["test/top1_err/deployed"]["values"] = [1e308, float("inf")]
    files["metrics.json"]["train/loss/total"] = {"steps": [1, 2], "values": [float("inf"), 2.0]}  # a loss may be
    write_record(store, 1, files)
    frame = results.load_metrics(str(store))
    assert set(frame["name"]) == {"train/loss/total"}
    assert "test/top1_err/deployed" in capsys.readouterr().err
