"""What a run reads but did not write, the third review's findings: `with` values and named configs from a command
line (never decoded by jsonpickle, never a config file read with pickle), checkpoints whose keys are all there but
whose values are not (named and moved aside, never a traceback, never a shortened or lengthened curve), a FIFO where
the epoch times are kept, a teacher record naming another model file, CIFAR labels of another type, an empty split,
NUL characters and out-of-range seeds in a config, launcher variables that are not numbers, links in
checkpoint_root, the files `python -m pcl.distributed` finds in its --out-dir, and a kd teacher file that is no
model of the run."""
from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcl import tracking
from pcl.checkpoint import CHECKPOINT_FORMAT, CheckpointError, check_checkpoint
from pcl.tracking.errors import UserError
from tests.helpers_data import dump, write_cifar10
from tests.test_faults import smoke
from tests.test_validation import drive_in_process

def _evil_value(marker: Path) -> str:
    return json.dumps({"py/reduce": [{"py/function": "os.system"}, {"py/tuple": [f"touch {marker}"]}]})


class _Runs:
    """pickle's way to call a function on load (what Sacred's config-file reader would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---- the command line: values and named configs ------------------------------------------------------------------
@pytest.mark.parametrize("form", ["value", "named pickle", "named json"])
def test_a_with_argument_never_runs_code(tmp_path, capsys, monkeypatch, form):
    """Sacred decodes every `with` value with jsonpickle (a {"py/reduce": ...} calls the function it names) and
    reads a named config that is a file's path with pickle or jsonpickle; the drivers do neither: one line, exit
    2, nothing run, nothing left."""
    marker = tmp_path / "ran"
    if form == "value":
        args = ["plan", "with", "smoke", f"comment={_evil_value(marker)}"]
    else:
        path = tmp_path / ("evil.pickle" if form == "named pickle" else "evil.json")
        if form == "named pickle":
            path.write_bytes(pickle.dumps({"comment": _Runs(marker)}))
        else:
            path.write_text(json.dumps({"comment": json.loads(_evil_value(marker))}))
        args = ["plan", "with", "smoke", str(path)]
    code, printed = drive_in_process(tmp_path, args, capsys, monkeypatch)
    assert not marker.exists(), "a command-line value ran code"
    assert code == 2 and len(printed.splitlines()) == 1, printed
    if form != "value":
        assert "named config" in printed and "allowed named configs: quick, smoke" in printed


def test_the_plans_of_the_launcher_and_the_analysis_take_only_declared_named_configs(tmp_path):
    """experiments.registry (the launcher's and the analysis's plans, `--named X`) and run_script: a name that is a
    file's path is an unknown named config, never a file read."""
    from sacred.utils import NamedConfigNotFoundError

    from experiments import registry, table2
    from experiments.common import run_script

    marker = tmp_path / "ran"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"comment": _Runs(marker)}))
    with pytest.raises(NamedConfigNotFoundError):
        registry.plan("table2", named_configs=[str(path)])
    with pytest.raises(NamedConfigNotFoundError):
        run_script(table2.ex, named_configs=[str(path)], command="plan")
    assert not marker.exists()
    assert registry.plan("table2", {"dataset": "synthetic"}, named_configs=["smoke"])  # the declared ones work


@pytest.mark.parametrize("update, named", [
    ("teacher_method=['baseline']", "'teacher_method'"),  # a script's own key: the type of its default
    ("data_root='a\\x00b'", "without NUL characters"),
    ("seeds=[4294967296]", "from 0 to 4294967295"),
])
def test_config_values_that_crashed_or_failed_a_run_are_one_line(tmp_path, update, named):
    from experiments import registry
    from pcl.schema import ConfigError

    with pytest.raises(ConfigError, match=named) as err:
        registry.plan("two_stage", dict([_parsed(update)]), named_configs=["smoke"])
    assert "\n" not in str(err.value)


def _parsed(update: str) -> tuple[str, object]:
    import ast

    key, _, value = update.partition("=")
    return key, ast.literal_eval(value)


@pytest.mark.parametrize("env", [{"RANK": "x", "WORLD_SIZE": "2"}, {"SLURM_PROCID": "0", "SLURM_NTASKS": "two"},
                                 {"RANK": "3", "WORLD_SIZE": "2"}, {"RANK": "²", "WORLD_SIZE": "4"}])
def test_launcher_variables_that_are_not_a_place_in_a_job_are_named(env):
    from pcl.process_env import EnvError, detect_env

    with pytest.raises(EnvError, match=next(iter(k for k in ("RANK", "SLURM_NTASKS") if k in env))):
        detect_env(env)
    assert detect_env({"RANK": "1", "WORLD_SIZE": "2"}).rank == 1


# ---- checkpoints ---------------------------------------------------------------------------------------------------
def _state(**changes):
    state = {"format": CHECKPOINT_FORMAT, "identity": {"method": "baseline", "backbone": "tiny_resnet8",
                                                       "num_classes": 4},
             "epoch": 2, "method": {}, "optimizer": {}, "rng": {},
             "history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]}
    state.update(changes)
    return state


@pytest.mark.parametrize("changes, problem", [
    ({"identity": 5}, "identity is 5"),
    ({"epoch": "abc"}, "epoch 'abc'"),
    ({"format": torch.tensor([1, 1])}, "a tensor of shape (2,)"),
    ({"history": {"x": 1}}, "history"),
    ({"epoch": 50}, "epoch 50"),
    ({"epoch": -2}, "epoch -2"),
    ({"epoch": True}, "epoch True"),
    ({"history": [{"epoch": 1, "loss": 1.0}]}, "history"),  # fewer entries than epochs
    ({"history": [{"epoch": 2, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]}, "history"),  # out of order
    ({"history": [{"epoch": 1, "loss": "x"}, {"epoch": 2, "loss": 0.5}]}, "history"),
    ({"method": [1]}, "method state"),
])
def test_a_checkpoint_with_every_key_but_bad_values_is_named(changes, problem):
    identity = _state()["identity"]
    check_checkpoint(_state(), "ck.pt", identity, 2)  # the well-formed one passes
    with pytest.raises(CheckpointError) as err:
        check_checkpoint(_state(**changes), "ck.pt", identity, 2)
    assert problem in str(err.value) and "\n" not in str(err.value)


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True), st.text(max_size=3),
                    st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                             max_size=2))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["format", "identity", "epoch", "method", "optimizer", "rng", "history"]),
                       _VALUES, max_size=7))
def test_any_checkpoint_values_are_accepted_only_when_well_formed_else_named(changes):
    """Whatever values a file holds under the expected keys: CheckpointError or accepted, nothing else; accepted
    only when the epoch count is within the run's and the history has one entry per epoch."""
    state = _state(**changes)
    try:
        check_checkpoint(state, "ck.pt", None, 2)
    except CheckpointError:
        return
    assert type(state["epoch"]) is int and 0 <= state["epoch"] <= 2 and len(state["history"]) == state["epoch"]
    assert all(isinstance(state[k], dict) for k in ("identity", "method", "optimizer", "rng"))


def _grid(tmp_path: Path, name: str, **overrides) -> tracking.GridReport:
    return tracking.run_grid([smoke(tmp_path, epochs=2, checkpoint_root=str(tmp_path / name / "ck"), **overrides)],
                             results_dir=str(tmp_path / name / "results"), log=lambda _: None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2-epoch smoke run: its result, and its final checkpoint's state."""
    tmp_path = tmp_path_factory.mktemp("finished")
    report = _grid(tmp_path, "clean")
    run = report.runs[0]
    assert run.status == "COMPLETED"
    state = torch.load(tmp_path / "clean" / "ck" / run.run_key / "checkpoint.pt", weights_only=True)
    return run, state


def _mid_run(tmp_path: Path, name: str, finished, **changes) -> Path:
    """checkpoint_root/run_key of a copy of the finished run's checkpoint cut to epoch 1, with `changes`."""
    run, state = finished
    folder = tmp_path / name / "ck" / run.run_key
    folder.mkdir(parents=True)
    torch.save({**state, "epoch": 1, "history": state["history"][:1], **changes}, folder / "checkpoint.pt")
    return folder


@pytest.mark.parametrize("changes", [{"epoch": 50}, {"epoch": -2}, {"identity": 5}], ids=["beyond", "negative",
                                                                                          "identity"])
def test_a_tampered_checkpoint_is_moved_aside_and_the_run_trains_its_true_result(tmp_path, finished, changes,
                                                                                 capsys):
    """epoch=50 on a 2-epoch run restored a one-epoch record as COMPLETED; epoch=-2 trained four epochs with steps
    -1, 0, ...; identity=5 ended the driver with a traceback. Each is now moved aside, and the run trains anew
    to the same result as a clean one."""
    run, _ = finished
    folder = _mid_run(tmp_path, "tampered", finished, **changes)
    again = _grid(tmp_path, "tampered").runs[0]
    assert again.status == "COMPLETED" and again.result == run.result
    assert [p.name for p in folder.iterdir() if ".damaged-" in p.name]
    info = json.loads(next((tmp_path / "tampered" / "results").glob("*/info.json")).read_text())
    assert info["damaged_checkpoint"]["problem"].startswith(("epoch", "its identity"))


def test_a_checkpoint_whose_state_does_not_load_fails_once_in_one_line(tmp_path, finished, capsys):
    """A method state of other keys: the run is FAILED with one line naming the file (no traceback), the file is
    moved aside, and the next start trains anew to the clean result (it failed on every start before)."""
    run, _ = finished
    folder = _mid_run(tmp_path, "unloadable", finished, method={"net.fc.weight": torch.zeros(3)})
    capsys.readouterr()
    failed = _grid(tmp_path, "unloadable").runs[0]
    err = capsys.readouterr().err
    assert failed.status == "FAILED" and "CheckpointError" in failed.error and "Traceback" not in err
    assert "does not load" in failed.error and not (folder / "checkpoint.pt").exists()
    again = _grid(tmp_path, "unloadable").runs[0]
    assert again.status == "COMPLETED" and again.result == run.result


def test_the_kept_epoch_times_are_read_like_a_records_file(tmp_path):
    """A FIFO named epoch_times.json hung the run (SIGTERM could not stop it); a link is not followed; a damaged
    entry is left out (the checkpoint's time stands in for it)."""
    from pcl.tracking.run import EPOCH_TIMES_FILE, _read_epoch_times

    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / EPOCH_TIMES_FILE)
    found: list = []
    reader = threading.Thread(target=lambda: found.append(_read_epoch_times(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive() and found == [{}]
    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "elsewhere.json").write_text(json.dumps({"1": "2026-01-01T00:00:00"}))
    (linked / EPOCH_TIMES_FILE).symlink_to(tmp_path / "elsewhere.json")
    assert _read_epoch_times(linked) == {}
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / EPOCH_TIMES_FILE).write_text(json.dumps({"1": "not a time", "2": "2026-01-01T00:00:00", "x": "1"}))
    assert _read_epoch_times(damaged) == {"2": "2026-01-01T00:00:00"}


def test_links_in_checkpoint_root_are_refused(tmp_path, finished):
    """A link in place of a run's checkpoint folder put its checkpoint and model wherever it pointed; a link in
    place of its lock file created a file there."""
    run, _ = finished
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "folder" / "ck").mkdir(parents=True)
    (tmp_path / "folder" / "ck" / run.run_key).symlink_to(outside, target_is_directory=True)
    with pytest.raises(tracking.ConfigError, match="a file or a link in the way"):
        _grid(tmp_path, "folder")
    (tmp_path / "lock" / "ck" / run.run_key).mkdir(parents=True)
    (tmp_path / "lock" / "ck" / run.run_key / ".lock").symlink_to(outside / "created")
    with pytest.raises(UserError, match="symbolic link"):
        _grid(tmp_path, "lock")
    assert not list(outside.iterdir())


def test_a_teacher_record_naming_another_model_file_is_not_followed(tmp_path, finished):
    """two_stage took the teacher's model from its record's info.deployed_path, anywhere (a wrong teacher under the
    same student run_key), and crashed on a number there; it is now the file the suite writes for that run."""
    from pcl.tracking.run import resolve_teacher_path

    run, _ = finished
    root = tmp_path / "teacher"
    _grid(tmp_path, "teacher")
    info = next((root / "results").glob("*/info.json"))
    store = tracking.open_store(root / "results")
    expected = str((root / "ck" / run.run_key / "deployed.pt").resolve())
    for recorded in (str(tmp_path / "other.pt"), 5):
        (tmp_path / "other.pt").write_bytes(b"another model")
        info.write_text(json.dumps({**json.loads(info.read_text()), "deployed_path": recorded}))
        assert resolve_teacher_path(store, run.run_key, root / "ck") == expected
    (root / "ck" / run.run_key / "deployed.pt").unlink()
    with pytest.raises(LookupError, match="not a file at"):
        resolve_teacher_path(store, run.run_key, root / "ck")


# ---- a teacher model file (kd's options.teacher_path) ----------------------------------------------------------------
def _teacher_file(tmp_path: Path) -> tuple[Path, dict]:
    from pcl.models import build_backbone

    model = {"backbone": "tiny_resnet8", "num_classes": 4, "method": "baseline", "head": "network",
             "state_dict": build_backbone("tiny_resnet8", 4).state_dict()}
    return tmp_path / "teacher.pt", model


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["backbone", "num_classes", "state_dict"]),
                       st.one_of(_VALUES, st.sampled_from(["resnet32", "tiny_resnet8", "vgg16"])), max_size=3),
       st.booleans())
def test_a_teacher_file_is_used_only_when_it_is_a_model_of_the_run_else_named(tmp_path, changes, drop):
    """kd read its teacher file only when the run built the method (a FAILED record, exit 0) and cast what it found
    (int(num_classes)); whatever the file holds, KD.check_inputs, which the grid calls before anything is recorded,
    accepts it only when it rebuilds into the run's classes, else one ValueError line naming the option."""
    from pcl.methods import method_class

    path, model = _teacher_file(tmp_path)
    model.update(changes)
    if drop and changes:
        model.pop(next(iter(changes)))
    torch.save(model, path)
    try:
        method_class("kd").check_inputs({"teacher_path": str(path), "teacher_backbone": None}, 4)
    except ValueError as err:
        assert "'options.teacher_path'" in str(err) and "\n" not in str(err)
        return
    assert model["backbone"] == "tiny_resnet8" and model["num_classes"] == 4 and type(model["num_classes"]) is int


def test_a_file_digest_follows_a_rewrite_that_restores_the_modification_time(tmp_path):
    """The digest cache was keyed by size and modification time: a copy that kept both (`cp -p`, `touch -r`) gave
    the old digest for the rest of the process."""
    from pcl.fsio import input_file_sha256

    path = tmp_path / "teacher.pt"
    path.write_bytes(b"a" * 64)
    before, stat = input_file_sha256(path), path.stat()
    path.write_bytes(b"b" * 64)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert input_file_sha256(path) != before


def test_a_teacher_replaced_after_the_plan_does_not_train_under_the_planned_run_key(tmp_path):
    """The run_key holds the teacher file's digest when the grid was planned; a file replaced before the run read
    it trained the other teacher under the planned key (and the plan of the first teacher then skipped it)."""
    from pcl import runner
    from pcl.methods import method_class
    from pcl.schema import ConfigError, normalize_run_config

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = method_class("kd").example_inputs(tmp_path / "a", "tiny_resnet8", 4)
    torch.manual_seed(5)  # another untrained teacher: other weights
    second = method_class("kd").example_inputs(tmp_path / "b", "tiny_resnet8", 4)
    planned = normalize_run_config(smoke(tmp_path, method="kd", options=first))
    Path(first["teacher_path"]).write_bytes(Path(second["teacher_path"]).read_bytes())  # retrained in place
    with pytest.raises(ConfigError, match=rf"run {planned['run_key']}: a file its method reads "
                                          r"\(options.teacher_path\) changed since its run_key was computed"):
        runner.run(planned)
    runner.run(normalize_run_config(smoke(tmp_path, method="kd", options=first)))  # planned again: it trains


# ---- data files ------------------------------------------------------------------------------------------------------
def _rewrite(path: Path, **changes) -> None:
    batch = pickle.loads(path.read_bytes(), encoding="latin1")
    batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    batch.update(changes)
    dump(batch, path, "py2")


@pytest.mark.parametrize("labels, said", [
    (lambda y: [v + 0.9 for v in y], "must be a list of integer class labels"),  # 8.9 was read as class 8
    (lambda y: [str(v) for v in y], "must be a list of integer class labels"),
    (lambda y: [bool(v % 2) for v in y], "must be a list of integer class labels"),
    (lambda y: {"a": 1}, "got a dict"),
    (lambda y: [2 ** 70] * len(y), "beyond 64 bits"),
    (lambda y: np.asarray(y, dtype=np.float32), "dtype float32"),
])
def test_cifar_labels_of_another_type_are_named_not_cast(tmp_path, labels, said):
    from pcl.data import load_cifar
    from pcl.data.cifar import DataFileError

    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    original = pickle.loads(batch.read_bytes(), encoding="latin1")
    _rewrite(batch, labels=labels(original[b"labels" if b"labels" in original else "labels"]))
    with pytest.raises(DataFileError, match=said) as err:
        load_cifar("cifar10", tmp_path)
    assert "data_batch_2" in str(err.value)


def test_an_empty_test_split_and_keys_of_mixed_types_are_named(tmp_path):
    from pcl.data import load_cifar
    from pcl.data.cifar import DataFileError

    write_cifar10(tmp_path)
    test_batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    _rewrite(test_batch, data=np.zeros((0, 3072), np.uint8), labels=[])
    with pytest.raises(DataFileError, match="test_batch hold no images"):
        load_cifar("cifar10", tmp_path)
    dump({1: 2, "y": 3}, test_batch, "py2")
    with pytest.raises(DataFileError, match=r"test_batch: a CIFAR batch's keys are names \(text\), found a int"):
        load_cifar("cifar10", tmp_path)
    dump({b"x": 2, "y": 3}, test_batch, "py2")  # bytes and text keys: named alike
    with pytest.raises(DataFileError, match=r"missing key 'data' or 'labels' \(found 'x', 'y'\)"):
        load_cifar("cifar10", tmp_path)


# ---- python -m pcl.distributed --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["not json", "a list", "a fifo", "damaged checkpoint", "bad RANK"])
def test_the_distributed_command_names_what_it_finds_in_its_folder(tmp_path, capsys, monkeypatch, case):
    from pcl.distributed.cli import main

    out = tmp_path / "out"
    out.mkdir()
    if case == "not json":
        (out / "config.json").write_text("not json")
    elif case == "a list":
        (out / "config.json").write_text("[1]")
    elif case == "a fifo":
        os.mkfifo(out / "config.json")
    elif case == "damaged checkpoint":
        (out / "checkpoint.pt").write_text("hello")
    else:
        monkeypatch.setenv("RANK", "x")
        monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["--dataset", "synthetic", "--method", "baseline", "--backbone", "tiny_resnet8", "--epochs", "1",
                 "--batch-size", "32", "--synthetic-train-size", "64", "--device", "cpu", "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert {"not json": "not this suite's", "a list": "not a run config", "a fifo": "not a regular file",
            "damaged checkpoint": "checkpoint.pt is unusable", "bad RANK": "RANK='x'"}[case] in err


@pytest.mark.parametrize("case", ["empty", "a file", "under a file"])
def test_the_distributed_command_refuses_an_out_dir_it_cannot_write(tmp_path, capsys, monkeypatch, case):
    """--out-dir '' trained into the current directory; a file there ended in FileExistsError's traceback."""
    from pcl.distributed.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    out = {"empty": "", "a file": str(tmp_path / "a_file"), "under a file": str(tmp_path / "a_file" / "out")}[case]
    code = main(["--dataset", "synthetic", "--method", "baseline", "--backbone", "tiny_resnet8", "--epochs", "1",
                 "--batch-size", "32", "--synthetic-train-size", "64", "--device", "cpu", "--out-dir", out])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"--out-dir {out!r} is invalid" in err and ("an empty path" if case == "empty" else "is a file") in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written


@pytest.mark.parametrize("content, said", [(b"not a model", "not a readable model file"),
                                           ({"epoch": 1}, "not a deployed-model file"),
                                           ("nan", "NaN or infinite"),
                                           ("shape", "size mismatch for")])
def test_a_teacher_that_is_no_model_is_one_line_in_the_launcher_and_the_distributed_command(
        tmp_path, capsys, monkeypatch, content, said):
    """kd's teacher file was checked only when a run built kd: the launcher submitted a job array whose every job
    refused it, `python -m pcl.distributed` ended in a traceback and left its config.json; a teacher of NaNs trained
    to a FAILED record, a wrong shape said only torch's header line."""
    from pcl.distributed.cli import main
    from pcl.models import build_backbone
    from slurm import launch_all

    path = tmp_path / "teacher.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        torch.save(content, path)
    else:
        state = build_backbone("tiny_resnet8", 10).state_dict()  # the distributed command's 10 synthetic classes
        key = next(k for k, v in state.items() if v.dim() > 1)
        state = ({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
                 if content == "nan" else {**state, key: torch.zeros(3, 3)})
        torch.save({"backbone": "tiny_resnet8", "num_classes": 10, "state_dict": state}, path)
    out = tmp_path / "out"
    code = main(["--dataset", "synthetic", "--method", "kd", "--backbone", "tiny_resnet8", "--epochs", "1",
                 "--batch-size", "32", "--synthetic-train-size", "64", "--device", "cpu",
                 "--options", json.dumps({"teacher_path": str(path)}), "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and said in err and "options.teacher_path" in err, err
    assert not (out / "config.json").exists()
    results_dir = tmp_path / "results"
    code = launch_all.run(["--executor", "local", "--results-dir", str(results_dir), "--log-folder",
                           str(tmp_path / "logs"), "--named", "smoke", "--tables", "table2", "--set", "method='kd'",
                           "--set", f"options.teacher_path={str(path)!r}", "--set", "synthetic_classes=10"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and said in err, err
    assert not (tmp_path / "logs").exists() and not (results_dir / "slurm").exists()  # nothing submitted


# ---- what a newcomer met (the new-user trial) ------------------------------------------------------------------------
def test_a_runs_sources_are_recorded_as_sacred_records_them_with_git_asked_once_per_repository(monkeypatch):
    """Sacred's add_source_file asks git twice per file (2,210 git processes in a smoke grid of 8 runs, 8.6 of its
    33 s); _add_sources records the same facts (file, digest, repository, commit, dirty) asking once per
    repository."""
    import git
    from sacred import Experiment
    from sacred.dependencies import Source

    from pcl.tracking.run import _add_sources
    from experiments.common import package_sources

    files = package_sources()[:40]
    calls = []
    execute = git.cmd.Git.execute
    monkeypatch.setattr(git.cmd.Git, "execute", lambda self, *a, **k: (calls.append(a), execute(self, *a, **k))[1])
    ex = Experiment("sources", save_git_info=True)
    before, start = set(ex.sources), len(calls)
    _add_sources(ex, [*files, "no/such/file.py"])
    asked = len(calls) - start
    del calls[:start]
    facts = {(s.filename, s.digest, s.repo, s.commit, s.is_dirty) for s in set(ex.sources) - before}
    assert facts == {(s.filename, s.digest, s.repo, s.commit, s.is_dirty) for s in map(Source.create, files)}
    assert 0 < asked <= 4 < len(calls) - asked  # Sacred's own way asked for each of the 40 files


def test_ctrl_c_is_one_line_saying_what_was_kept_not_a_traceback(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "run_grid", interrupted)
    code, printed = drive_in_process(tmp_path, ["with", "smoke", "method=baseline"], capsys, monkeypatch)
    assert code == 130 and "Traceback" not in printed
    assert printed.strip().splitlines() == [printed.strip()] and "interrupted (Ctrl-C)" in printed
    assert "resumes" in printed
