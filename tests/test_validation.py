"""Every bad input is caught before the grid, in one line; Sacred's flags are honoured or refused; a run says what it
does (per-epoch line, resume, skip, restore, preemption, locks); method options are discoverable.

The command-line tests run the real driver (`python experiments/table2.py ...`) in a subprocess and check the exit
code, that stdout + stderr hold exactly one line naming the key, and that no record, checkpoint, lock or data
folder was left behind.
"""
from __future__ import annotations

import contextlib
import difflib
import fcntl
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.common import run_script
from pcl import registry, results, tracking
from pcl.engine import Recipe, train
from pcl.seeding import seed_everything
from pcl.methods import build_method
from pcl.tracking import ConfigError
from tests.helpers_data import write_cifar10

ROOT = Path(__file__).resolve().parents[1]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


def drive(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python experiments/table2.py ARGS` with results and checkpoints in tmp_path (unless ARGS set them)."""
    stores = [f"results_dir={tmp_path / 'results'}", f"checkpoint_root={tmp_path / 'ck'}"]
    given = " ".join(args)
    stores = [s for s in stores if s.split("=")[0] + "=" not in given
              and not (s.startswith("results_dir") and "-F" in args)]
    tail = (stores if "with" in args else ["with", *stores]) if stores else []
    return subprocess.run([sys.executable, "experiments/table2.py", *args, *tail], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def corrupt_cifar(tmp_path: Path) -> str:
    write_cifar10(tmp_path / "cifar")
    batch = tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    return str(tmp_path / "cifar")


def a_file(tmp_path: Path) -> str:
    (tmp_path / "a_file").write_text("not a folder")
    return str(tmp_path / "a_file")


def a_teacher(tmp_path: Path, content: object) -> str:
    """A file given as kd's teacher model: bytes as they are, anything else saved by torch."""
    path = tmp_path / "teacher.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        __import__("torch").save(content, path)
    return str(path)


# (command-line arguments, what the one line must name); a callable builds arguments from tmp_path
BAD_INPUTS = {
    "smoke+quick": (["with", "smoke", "quick"], "'train_subset'=5000"),
    "milestones>epochs": (["with", "smoke", "epochs=10", "milestones=[150,225]"], "'milestones'=[150, 225]"),
    "batch>split": (["with", "smoke", "batch_size=256"], "'batch_size'=256"),
    "db_name": (["with", "smoke", "db_name=a.b"], "'db_name'='a.b'"),
    "mongo_url_db": (["with", "smoke", "mongo_url=mongodb://127.0.0.1:1/bad.name"], "'mongo_url'"),
    "unknown_key": (["with", "smoke", "epoch=3"], "'epoch'=3"),
    "misspelled_option": (["with", "smoke", "method=pcl", "options.temprature=3"], "options.temperature"),
    # a mistyped value: the closest allowed one is named
    "misspelled_method": (["with", "smoke", "method=pcll"], "did you mean 'pcl'?"),
    "misspelled_dataset": (["with", "smoke", "dataset=cifar-100"], "did you mean 'cifar100'?"),
    "misspelled_backbone": (["with", "smoke", "backbone=resnet-32"], "did you mean 'resnet32'?"),
    "misspelled_option_value": (["with", "smoke", "method=pcl", "options.peer_teacher=mean_other"],
                                "did you mean 'mean_others'?"),
    "named_config": (["with", "smokey"], "'smokey'"),
    "command": (["trian", "with", "smoke"], "'trian'"),
    "results_dir": (lambda t: ["with", "smoke", f"results_dir={a_file(t)}/results"], "'results_dir'"),
    "checkpoint_root": (lambda t: ["with", "smoke", f"checkpoint_root={a_file(t)}/ck"], "'checkpoint_root'"),
    "no_data": (lambda t: ["with", "dataset=cifar10", "method=baseline", "backbone=resnet32", "seeds=[0]",
                           f"data_root={t / 'nothing'}"], "'data_root'"),
    "corrupt_data": (lambda t: ["with", "dataset=cifar10", "method=baseline", "backbone=resnet32", "seeds=[0]",
                                f"data_root={corrupt_cifar(t)}"], "data_batch_3"),
    "download_fails": (lambda t: ["with", "dataset=cifar10", "method=baseline", "backbone=resnet32", "seeds=[0]",
                                  "download=True", f"data_root={t / 'fresh'}"], "'download'=True"),
    # a teacher file that is no model was found only when the run built kd: a FAILED record, exit 0
    "kd_teacher_not_torch": (lambda t: ["with", "smoke", "method=kd", f"options.teacher_path={a_teacher(t, b'x')}"],
                             "'options.teacher_path'="),
    "kd_teacher_not_a_model": (lambda t: ["with", "smoke", "method=kd",
                                          f"options.teacher_path={a_teacher(t, {'epoch': 3})}"],
                               "not a deployed-model file"),
    "kd_teacher_other_classes": (lambda t: ["with", "smoke", "method=kd", "options.teacher_path=" + a_teacher(
        t, {"backbone": "tiny_resnet8", "num_classes": 10, "state_dict": {}})], ("num_classes=10, the student 4", "checked for the kd runs on synthetic (4 classes)")),
    "gpus_one_process": (["with", "smoke", "gpus=2"], "'gpus'=2 is invalid here: this job has 1 process(es)"),
    "gpus_batch": (["with", "smoke", "gpus=3", "batch_size=64"], "'batch_size'=64 is invalid with gpus=3"),
    "gpus_fast_path": (["with", "smoke", "gpus=2", "fast_path=graph"], "'fast_path'='graph' is invalid with gpus=2"),
    "batch_norm_one_process": (["with", "smoke", "batch_norm=sync"], "'batch_norm'='sync' is invalid with gpus=1"),
    "batch_norm_choice": (["with", "smoke", "batch_norm=group"], "'batch_norm'='group'"),
    # a backbone's declared datasets (an ImageNet network on CIFAR, a CIFAR one on ImageNet: both planned fine)
    "backbone_dataset": (["with", "dataset=cifar10", "backbone=resnet18", "method=baseline", "seeds=[0]"],
                         ("'backbone'='resnet18' is built for imagenet, synthetic, not dataset='cifar10'; allowed on cifar10: "
                          "resnet32")),
    # Sacred keeps a list of unquoted names as one string: it was "unknown method(s) '[pcl,dml]'"
    "axis_unquoted_list": (["with", "smoke", "method=[pcl,dml]"],
                           """config key 'method'='[pcl,dml]' is invalid: a list's names are quoted, e.g. """
                           """'method=["pcl","dml"]' (in single quotes for the shell)"""),
    "axis_unquoted_backbone": (["with", "smoke", "backbone=[ tiny_resnet8 ]"], """'backbone=["tiny_resnet8"]'"""),
    "axis_comma_list": (["with", "smoke", "method=pcl,dml"], """'method'='pcl,dml' is invalid: a list's names"""),
    # the shell splits a value at a space; Sacred took the second word for a named config
    "value_split_at_a_space": (["with", "smoke", "seeds=[0,", "1]"],
                               "named config '1]' is unknown: allowed named configs: quick, smoke; the shell split "
                               "seeds=[0, 1] at its spaces: quote it, e.g. 'seeds=[0, 1]'"),
    "list_split_at_a_space": (["with", "smoke", "method=[pcl,", "dml]"], """e.g. 'method=["pcl","dml"]'"""),
    # split into three words: every one of them in the example (it showed 'seeds=[0, 1,' and dropped kd)
    "value_split_twice": (["with", "smoke", "seeds=[0,", "1,", "2]"], "e.g. 'seeds=[0, 1, 2]'"),
    "list_split_twice": (["with", "smoke", "method=[pcl,", "dml,", "kd]"], """e.g. 'method=["pcl","dml","kd"]'"""),
    "method_after_a_method": (["with", "smoke", "method=pcl", "dml"],
                              """'dml' is a method: several are a list, e.g. 'method=["pcl","dml"]'"""),
    "named_config_as_command": (["smoke"], ("command 'smoke' is unknown: print_config",
                                            "'smoke' is a named config: `with smoke`")),
    "flag_after_with": (["with", "smoke", "--epochs", "2"], "after `with` a value is KEY=VALUE: epochs=... instead of "
                                                             "--epochs"),
    "case_of_a_name": (["with", "smoke", "method=PCL"], "did you mean 'pcl'?"),
    "named_config_typo": (["with", "smok"], "named config 'smok' is unknown: allowed named configs: quick, smoke; "
                                            "did you mean 'smoke'?"),
    "queue_flag": (["-q", "with", "smoke"], "-q"),
    "unobserved_flag": (["-u", "with", "smoke"], "-u"),
    "sql_flag": (["-s", "sqlite:///x.db", "with", "smoke"], "-s"),
    "mongo_flag_not_url": (["-m", "localhost:27017:pcl", "with", "smoke"], "-m"),
}


#: cases that run the real command line in a subprocess (each costs an interpreter start); the others call the
#: same entry point, experiments.cli.cli, in this process
IN_A_SUBPROCESS = ("smoke+quick", "corrupt_data", "queue_flag")
#: a proxy that refuses at once: a download fails fast and the same way with or without a network
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
              "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


def drive_in_process(tmp_path: Path, args: list[str], capsys, monkeypatch,
                     script: str = "experiments.table2") -> tuple[int, str]:
    """experiments.cli.cli on `table2.py ARGS` (what `python experiments/table2.py ARGS` runs), or on another
    registered script's module: exit code and everything printed."""
    import importlib

    from experiments.cli import cli

    table2 = importlib.import_module(script)

    for name, value in NO_NETWORK.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(tracking.MONGO_URL_ENV, "unset")  # recorded, so that a URL the CLI moves there is removed
    monkeypatch.delenv(tracking.MONGO_URL_ENV)
    stores = [f"results_dir={tmp_path / 'results'}", f"checkpoint_root={tmp_path / 'ck'}"]
    stores = [s for s in stores if not any(a.startswith(s.split("=")[0] + "=") for a in args)
              and not (s.startswith("results_dir") and "-F" in args)]
    argv = [script.replace(".", "/") + ".py", *args, *(stores if "with" in args else ["with", *stores])]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), \
            pytest.raises(SystemExit) as info:
        cli(table2.ex, argv)
    return info.value.code, printed.getvalue()


def test_a_sacred_flag_after_with_gets_no_config_key_hint(tmp_path, capsys, monkeypatch):
    """--comment is one of Sacred's flags (and a config key): after `with` the line does not take it for a config
    key written as a flag (it named --comment=hi where --bad was the slip)."""
    code, printed = drive_in_process(tmp_path, ["plan", "with", "smoke", "--comment=hi", "--bad"], capsys,
                                     monkeypatch)
    assert code == 2 and printed.strip().endswith("see --help") and "after `with`" not in printed, printed


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_user_error_is_one_line_exit_2_and_leaves_nothing(tmp_path, case, capsys, monkeypatch):
    args, named = BAD_INPUTS[case]
    args = args(tmp_path) if callable(args) else args
    if case in IN_A_SUBPROCESS:
        out = drive(tmp_path, *args, env=NO_NETWORK)
        code, printed = out.returncode, out.stdout + out.stderr
    else:
        code, printed = drive_in_process(tmp_path, args, capsys, monkeypatch)
    lines = printed.splitlines()
    assert code == 2, printed
    assert len(lines) == 1, lines
    assert all(part in lines[0] for part in ((named,) if isinstance(named, str) else named)), lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "ck").exists()
    assert not (tmp_path / "fresh").exists()  # a failed download removes the data folder it made


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_names_the_allowed_values(tmp_path, capsys, monkeypatch):
    code, printed = drive_in_process(tmp_path, ["with", "smoke", "device=cuda"], capsys, monkeypatch)
    assert code == 2 and printed.count("\n") == 1
    assert "'device'='cuda'" in printed and "allowed here: auto, cpu" in printed
    assert not (tmp_path / "results").exists() and not (tmp_path / "ck").exists()


def test_values_wrong_together_fail_in_the_schema():
    with pytest.raises(ConfigError, match=r"'milestones'=\[12\] is invalid with epochs=10"):
        tracking.normalize_run_config({"epochs": 10, "milestones": [12]})
    with pytest.raises(ConfigError, match=r"'train_subset'=60000 .* training split \(50000"):
        tracking.normalize_run_config({"dataset": "cifar10", "train_subset": 60000})
    with pytest.raises(ConfigError, match=r"'batch_size'=64 .*\(train_subset=32\)"):
        tracking.normalize_run_config({"dataset": "cifar10", "train_subset": 32, "batch_size": 64})
    # the recipe's milestones scaled to a 1-epoch run ([1, 1]) are nobody's mistake, and normalizing stays idempotent
    cfg = tracking.normalize_run_config({"dataset": "synthetic", "epochs": 1, "batch_size": 32,
                                         "synthetic_train_size": 128})
    assert tracking.normalize_run_config(cfg) == cfg


def test_a_corrupt_cifar_file_is_named(tmp_path):
    from pcl.data import load_cifar

    root = corrupt_cifar(tmp_path)
    with pytest.raises(ValueError, match=r"data_batch_3: not a readable CIFAR batch file .*truncated"):
        load_cifar("cifar10", root)  # was a bare EOFError / "pickle data was truncated"
    from pcl.data.check import DataError, check_data

    with pytest.raises(DataError, match=r"'data_root'=.*data_batch_3"):
        check_data("cifar10", root)


def test_misspelled_option_lists_the_valid_ones():
    from experiments import table2

    with pytest.raises(ConfigError) as info:
        run_script(table2.ex, {"method": "pcl", "options": {"temprature": 3.0}}, command="plan")
    message = str(info.value)
    assert "options.temprature" in message and "did you mean options.temperature" in message
    assert all(name in message for name in ("ema_decay", "peer_teacher", "rampup_length"))


_NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_NAMES, st.lists(_NAMES, max_size=3), st.integers(), st.none()), st.lists(_NAMES, max_size=8))
def test_a_hint_names_only_allowed_names_closest_to_what_was_given(given_name, allowed):
    """Whatever was typed (any text, a list, not a name at all): no hint, or one naming allowed names only, each
    the same name in another case (method=PCL: 'pcl') or else the closest to a given name."""
    from pcl.config_checks import did_you_mean

    hint = did_you_mean(given_name, allowed)
    if not hint:
        return
    assert hint.startswith("; did you mean ") and hint.endswith("?")
    given_names = [given_name] if isinstance(given_name, str) else given_name
    assert isinstance(given_names, list)
    for name in given_names:
        same = [a for a in reversed(allowed) if a.casefold() == name.casefold()][-1:]
        best = same or difflib.get_close_matches(name, allowed, n=1)
        assert not best or repr(best[0]) in hint
    assert did_you_mean("PCL", ["pcl", "pcl_e"]) == "; did you mean 'pcl'?"
    assert did_you_mean("CIFAR10", ["cifar10", "cifar100"]) == "; did you mean 'cifar10'?"


def test_plan_and_print_config_show_every_methods_resolved_options(capsys):
    from experiments import table2

    run_script(table2.ex, {"method": ["baseline", "pcl"], "backbone": "resnet32", "seeds": [0],
                           "options": {"temperature": 4.0}}, command="plan")
    out = capsys.readouterr().out
    assert "resolved options per method" in out
    pcl_line = next(line for line in out.splitlines() if line.strip().startswith("pcl:"))
    assert "temperature=4.0" in pcl_line and "ema_decay=0.999" in pcl_line and "peers=3" in pcl_line
    assert "[temperature=4.0]" in out  # the plan's row shows what a run sets apart from its method's defaults
    table2.ex.run("print_config", config_updates={"method": "pcl", "seeds": [0]}, options={"--unobserved": True})
    out = capsys.readouterr().out
    assert "pcl: " in out and "ema_decay=0.999" in out and "\x1b[" not in out


@pytest.mark.slow  # a real smoke run in a subprocess: about 20 s on a loaded 2-core CPU
def test_sacred_flags_are_honoured(tmp_path, mongo_url):
    out = drive(tmp_path, "-F", str(tmp_path / "filed"), "-m", mongo_url, "-c", "first try", "-n", "mine",
                "with", "smoke", "method=baseline", f"checkpoint_root={tmp_path / 'ck'}")
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "results").exists()  # -F replaced results_dir
    (rec,) = results.iter_records(tmp_path / "filed")
    assert rec["config"]["comment"] == "first try" and rec["experiment"]["name"] == "mine"
    assert rec["info"]["experiment"] == "mine"
    (mongo_rec,) = results.iter_records(mongo_url)  # -m: the record went to MongoDB too
    assert mongo_rec["config"]["comment"] == "first try"
    # the run a person follows: one plain line per epoch, no control characters, no Result dict
    assert not CONTROL.search(out.stdout), repr(out.stdout)
    assert "Result:" not in out.stdout + out.stderr and "Running command" not in out.stdout + out.stderr
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("epoch ")]
    for part in ("epoch 1/1", "lr 0.1", "loss ", "train err ", "test err ", "(net)", "best ", "ETA 0:00:00"):
        assert part in line, line
    assert f"record {tmp_path / 'filed'}" in out.stdout


def test_each_epoch_prints_one_line_and_progress_adds_bars(tiny_loaders, capsys):
    loaders = tiny_loaders(3)
    seed_everything(0)
    method = build_method("pcl", "tiny_resnet8", loaders[2], peers=3, rampup_length=4)
    lines: list[str] = []
    train(method, loaders[0], loaders[1], Recipe(epochs=3, milestones=(2,)), epoch_log=lines.append)
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "lr 0.1 " in lines[0] + " " and "lr 0.01" in lines[2]
    assert "ramp-up " in lines[0] and "train err " in lines[0] and "(peer1)" in lines[0]
    assert "test err " in lines[0] and "(mean_peer1)" in lines[0] and "best " in lines[0]
    assert lines[-1].endswith("ETA 0:00:00") and not any(CONTROL.search(line) for line in lines)
    train(method, loaders[0], loaders[1], Recipe(epochs=1, milestones=(1,)), progress=True, epoch_log=None)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "evaluation" in err  # a bar over training and one over evaluation


def test_epoch_line_best_so_far_and_eta():
    from pcl.engine import epoch_line

    history = [{"epoch": 1, "lr": 0.1, "train/loss/total": 2.0, "test/top1_err/net": 50.0},
               {"epoch": 2, "lr": 0.1, "train/loss/total": 1.5, "test/top1_err/net": 55.0}]
    line = epoch_line(history, 10, "net", 3.0, 3725.0)
    assert "epoch 2/10" in line and "test err 55.00% (net)" in line and "best 50.00% (epoch 1)" in line
    assert line.endswith("3.0s  ETA 1:02:05")


SMOKE_UPDATES = {"method": "baseline"}


def _smoke_runs(tmp_path, **overrides):
    from experiments import table2

    return run_script(table2.ex, _updates(tmp_path, **overrides), ["smoke"], command="plan")


def _updates(tmp_path, **overrides):
    return {**SMOKE_UPDATES, "results_dir": str(tmp_path / "results"), "checkpoint_root": str(tmp_path / "ck"),
            **overrides}


def test_a_run_says_how_it_starts_resumes_skips_and_restores(tmp_path, capsys):
    from experiments import table2

    runs = _smoke_runs(tmp_path, epochs=2)
    stop_after_first = [lambda epoch, metrics: tracking.request_stop()]
    report = tracking.run_grid(runs, results_dir=tmp_path / "results", callbacks=stop_after_first)
    captured = capsys.readouterr()
    assert [r.status for r in report.runs] == ["PREEMPTED"]
    assert "training from scratch, epochs 1-2" in captured.out and "epoch 1/2" in captured.out
    assert "PREEMPTED" in captured.out and "Aborted" not in captured.out + captured.err

    def drive_grid():  # the driver, in this process (experiments.common.run_script)
        return run_script(table2.ex, _updates(tmp_path, epochs=2), ["smoke"])

    assert drive_grid().exit_code == 0
    out = capsys.readouterr().out
    assert f"resuming at epoch 2/2 from checkpoint {tmp_path / 'ck' / runs[0]['run_key'] / 'checkpoint.pt'}" in out
    assert "epoch 2/2" in out and "epoch 1/2" not in out
    done = results.find_completed(tmp_path / "results", runs[0]["run_key"])
    err = done["result"]["deployed/top1_err"]

    drive_grid()
    out = capsys.readouterr().out
    assert f"SKIPPED (COMPLETED before, deployed top-1 error {err:.2f}%; record {done['path']}" in out

    (Path(done["path"]) / "run.json").unlink()  # the record is gone; the final checkpoint stays
    drive_grid()
    out = capsys.readouterr().out
    assert "its record is missing but checkpoint" in out and "restoring the record from the checkpoint" in out

    # Sacred archives every source file of the package with each run
    restored = results.find_completed(tmp_path / "results", runs[0]["run_key"])
    run_json = json.loads((Path(restored["path"]) / "run.json").read_text())
    archived = {Path(p).as_posix() for p, _ in run_json["experiment"]["sources"]}
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pcl").rglob("*.py")}
    assert package <= archived, sorted(package - archived)


def test_runs_locked_by_another_live_process_exit_0_and_say_so(tmp_path, capsys):
    runs = _smoke_runs(tmp_path)
    lock_dir = tmp_path / "ck" / runs[0]["run_key"]
    lock_dir.mkdir(parents=True)
    with open(lock_dir / ".lock", "w") as held:  # another open file description: flock conflicts as across processes
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        report = tracking.run_grid(runs, results_dir=tmp_path / "results")
    out = capsys.readouterr().out
    assert [r.status for r in report.runs] == ["LOCKED"]
    assert report.exit_code == 0
    assert "being trained by another live process" in out


def test_packaging_bounds_license_and_one_statement_of_versions():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools_req = next(r for r in project["build-system"]["requires"] if r.startswith("setuptools"))
    assert project["project"]["license"] == "MIT"
    assert re.search(r">=\s*(7[7-9]|[89]\d)", setuptools_req), setuptools_req  # PEP 639 license strings: >= 77
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Copyright (c) 2026 the PCL reproduction suite authors" in \
        license_text
    env_pins = dict(re.findall(r"^\s*-\s*(torch|torchvision)==([\w.+]+)", (ROOT / "environment.yml").read_text(),
                               re.M))
    shown = subprocess.run(["bash", "scripts/setup_env.sh", "--print-pins"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert dict(p.split("==") for p in shown.stdout.split()) == env_pins and set(env_pins) == {"torch",
                                                                                                "torchvision"}


def test_readme_points_only_inside_the_repository_and_gives_times():
    text = (ROOT / "README.md").read_text()
    for name in set(re.findall(r"[\w./-]+\.(?:md|py|sh|yml|toml)\b", text)):
        if "/" not in name and not (ROOT / name).exists():  # a bare file name must be at the top level or named
            matches = list(ROOT.rglob(name))
            assert matches, f"README names {name}, which is not in the repository"
        elif "/" in name and not name.startswith(("http", "python")):
            assert (ROOT / name).exists() or (ROOT / name.lstrip("./")).exists(), name
    # every command of the top block has its expected time on a CPU and on a GPU
    headers = re.findall(r"^\| command \| 2-core CPU \| one GPU \([\w ]+\) \|$", text, flags=re.M)
    assert len(headers) >= 2  # the top block's and the "Expected times" section's, each naming its card
    header = headers[0]
    top = text.split(header, 1)[1].split("\n\n", 1)[0]
    for command in ("scripts/setup_env.sh", "with quick dataset=cifar10", "pytest"):
        row = next(line for line in top.splitlines() if command in line)
        assert len([cell for cell in row.split("|") if cell.strip()]) == 3, row


def test_docs_list_every_option_with_default_and_meaning():
    from pcl.methods import METHODS, method_defaults

    text = (ROOT / "docs" / "methods.md").read_text()
    for name in METHODS:
        section = text.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for key, default in method_defaults(name).items():
            row = next((line for line in section.splitlines() if line.startswith(f"| `{key}` |")), None)
            assert row is not None, (name, key)
            assert f"`{default!r}`" in row and "(undocumented)" not in row, row


def test_loglevel_and_print_config_flags_do_what_they_say(tmp_path, monkeypatch):
    from experiments import table2
    from experiments.cli import cli

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        cli(table2.ex, ["experiments/table2.py", "plan", "-l", "INFO", "-p", "with", "smoke", "method=baseline"])
    text = printed.getvalue()
    assert "Running command 'plan'" in text  # -l INFO: the driver's log lines appear
    assert "checkpoint_root = " in text  # -p: the config is printed first
    assert "resolved options per method" in text


def test_imagenet_folder_is_checked_before_the_grid(tmp_path):
    from pcl.data.check import DataError, check_data

    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(DataError, match=r"'data_root'=.*ImageNet"):
        check_data("imagenet", tmp_path)


@pytest.mark.slow  # a preempted run's clean-up
def test_a_run_stopped_before_its_first_checkpoint_says_none_was_written(tmp_path, capsys, monkeypatch):
    import pcl.tracking.run as tracked

    runs = _smoke_runs(tmp_path, epochs=2)
    monkeypatch.setattr(tracked, "stop_requested", lambda: True)  # a stop before the first step
    report = tracking.run_grid(runs, results_dir=tmp_path / "results")
    out = capsys.readouterr().out
    assert [r.status for r in report.runs] == ["PREEMPTED"]
    assert "no checkpoint was written yet" in out and "stays and the next start resumes" not in out
    assert not (tmp_path / "ck" / runs[0]["run_key"] / "checkpoint.pt").exists()


# ---- review's finds: inputs that were a traceback, silently ignored or a second run_key of the same training -------
def _one_error_line(code: int, printed: str, *named: str) -> str:
    lines = printed.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), printed
    assert all(part in lines[0] for part in named), lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["plan", "print_config", "run"])
@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5", "'a'"])
def test_a_driver_seed_sacred_cannot_take_is_one_line_not_its_traceback(tmp_path, capsys, monkeypatch, seed, command):
    """Sacred seeds its generator with `seed` before the driver checked it: numpy's ValueError, rc 1."""
    args = ([] if command == "run" else [command]) + ["with", "smoke", f"seed={seed}"]
    code, printed = drive_in_process(tmp_path, args, capsys, monkeypatch)
    _one_error_line(code, printed, f"'seed'={seed}", "seeds=[...]", "an integer >= 0 and <= 4294967295")
    assert not (tmp_path / "results").exists() and not (tmp_path / "ck").exists()


def test_a_log_level_logging_does_not_know_is_one_line(tmp_path, capsys, monkeypatch):
    code, printed = drive_in_process(tmp_path, ["-l", "BAD", "plan", "with", "smoke"], capsys, monkeypatch)
    _one_error_line(code, printed, "-l (--loglevel) 'BAD'", "DEBUG, ERROR", "a number from 0 to 50")
    code, printed = drive_in_process(tmp_path, ["-l", "info", "plan", "with", "smoke"], capsys, monkeypatch)
    _one_error_line(code, printed, "did you mean 'INFO'?")


@pytest.mark.parametrize("update, named", [("method=foo", "unknown method(s) 'foo'"),
                                           ("seeds=[]", "'seeds'=[]"),
                                           ("dataset=imagenet", "'dataset'='imagenet'"),
                                           ("results_dir=''", "'results_dir'=''"),
                                           ("options.foo=1", "options.foo")])
def test_print_config_of_an_invalid_config_shows_it_then_its_error_exit_2(tmp_path, monkeypatch, update, named):
    """print_config printed "(method options not resolved: ...)" and exited 0."""
    from experiments import table2
    from experiments.cli import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        cli(table2.ex, ["experiments/table2.py", "print_config", "with", "smoke", update])
    assert "Configuration" in out.getvalue() and "not resolved" not in out.getvalue()  # what it can, shown
    _one_error_line(info.value.code, err.getvalue(), named)


@pytest.mark.parametrize("script, update, named", [
    ("ablations.peers", "peers=4", ("'peers'=4", "this grid varies it", "set peer_counts=[...] instead")),
    ("ablations.peers", "peers=None", ("'peers'=None", "set peer_counts=[...] instead")),
    ("experiments.two_stage", "teacher_run_key='0123456789abcdef'",
     ("'teacher_run_key'='0123456789abcdef'", "teacher_method= and teacher_backbone=")),
    ("experiments.two_stage", "options.teacher_backbone=resnet32",
     ("'options.teacher_backbone'='resnet32'", "set teacher_backbone= instead")),
])
def test_a_grid_refuses_a_key_its_cells_set(tmp_path, capsys, monkeypatch, script, update, named):
    """The cell's value silently won over the config's (`{**base, **cell}`): peers=4 planned m = 2..5."""
    code, printed = drive_in_process(tmp_path, ["plan", "with", "smoke", update], capsys, monkeypatch, script=script)
    _one_error_line(code, printed, *named)


@pytest.mark.parametrize("script, updates, named", [
    ("ablations.ensemble_teacher", ["options.ensemble_teacher=False"],
     ("options.ensemble_teacher=False", "cell 'logit_average/", "options.ensemble_form='logit_average'",
      "acts only with ensemble_teacher=True")),
    ("ablations.mean_teacher", ["options.mean_teacher=False"],
     ("options.mean_teacher=False", "options.peer_teacher='live_others'", "acts only with mean_teacher=True")),
    ("experiments.table2", ["method=pcl", "options.mean_teacher=False", "options.ema_decay=0.9"],
     ("'options.ema_decay'=0.9", "in any run", "options.mean_teacher=False")),
    ("experiments.table2", ["options.mean_teacher=False", "options.ema_buffers=copy"],
     ("'options.ema_buffers'='copy'", "options.mean_teacher=False")),
    ("experiments.table2", ["method=pcl", "options.peer_teacher=live_others", "options.ema_decay=0.9"],
     ("'options.ema_decay'=0.9", "options.peer_teacher='live_others'", "'mean_others', 'own_mean'")),
    ("experiments.table2", ["method=pcl", "options.ensemble_teacher=False", "options.detach_ensemble=False"],
     ("'options.detach_ensemble'=False", "options.ensemble_teacher=False")),
])
def test_an_option_without_effect_is_refused_not_a_second_run_key(tmp_path, capsys, monkeypatch, script, updates,
                                                                   named):
    """ensemble_teacher=False made three run_keys of one training (ensemble_form does nothing then)."""
    code, printed = drive_in_process(tmp_path, ["plan", "with", "smoke", *updates], capsys, monkeypatch,
                                     script=script)
    _one_error_line(code, printed, "has no effect", *named)
    assert not (tmp_path / "results").exists() and not (tmp_path / "ck").exists()


def test_options_without_effect_take_their_unset_value_and_default_run_keys_stay():
    """An option the others switch off is normalised (as `peers` of a single-network method): one training, one
    run_key; a config that left it unset keeps its run_key, so no default grid's run_key moves."""
    from experiments import registry

    base = {"method": "pcl", "dataset": "synthetic", "epochs": 1, "batch_size": 32, "synthetic_train_size": 128,
            "options": {"mean_teacher": False, "ensemble_teacher": False}}
    cfg = tracking.normalize_run_config(base)
    assert tracking.normalize_run_config(cfg) == cfg  # idempotent
    idle = dict(base, options={**base["options"], "ensemble_form": "gate", "detach_ensemble": False,
                               "peer_teacher": "own_mean", "ema_decay": 0.5, "ema_buffers": "copy"})
    assert tracking.normalize_run_config(idle) == cfg
    live = tracking.normalize_run_config(dict(base, options={"peer_teacher": "live_others"}))
    assert tracking.normalize_run_config(dict(live, options={**live["options"], "ema_decay": 0.5}))["run_key"] == \
        live["run_key"]
    default = {p["label"]: p["run_key"] for p in registry.plan("ablations.components", {}, ["smoke"])}
    decayed = {p["label"]: p["run_key"] for p in registry.plan("ablations.components",
                                                                {"options": {"ema_decay": 0.99}}, ["smoke"])}
    same = sorted(label for label in default if default[label] == decayed[label])
    assert same == ["+ multi-input/tiny_resnet8", "+ peer ensemble teacher/tiny_resnet8",
                    "multi-branch CE/tiny_resnet8"]  # without L_pm, ema_decay computes nothing: trained once


def test_the_teacher_is_given_once_and_its_run_key_is_one(tmp_path, capsys, monkeypatch):
    """teacher_path was silently replaced by the teacher_run_key's file; teacher_run_key='' blocked the run later
    with a blank name."""
    teacher = a_file(tmp_path)
    code, printed = drive_in_process(tmp_path, ["plan", "with", "smoke", "method=kd",
                                                "teacher_run_key='0123456789abcdef'",
                                                f"options.teacher_path={teacher}"], capsys, monkeypatch)
    _one_error_line(code, printed, f"'options.teacher_path'={teacher!r}", "teacher_run_key='0123456789abcdef'",
                    "give the teacher once")
    code, printed = drive_in_process(tmp_path, ["plan", "with", "smoke", "method=kd", "teacher_run_key=''"],
                                     capsys, monkeypatch)
    _one_error_line(code, printed, "'teacher_run_key'=''", "16 hexadecimal digits")
    code, printed = drive_in_process(tmp_path, ["plan", "with", "smoke", "options.teacher_path=" + teacher],
                                     capsys, monkeypatch, script="experiments.two_stage")
    _one_error_line(code, printed, "'options.teacher_path'=", "give the teacher once")


def test_an_empty_folder_is_refused_not_the_current_directory(tmp_path, capsys, monkeypatch):
    """-F '' fell back to ./results; checkpoint_root='' trained into the current directory; data_root='' read it."""
    monkeypatch.chdir(tmp_path)
    code, printed = drive_in_process(tmp_path, ["-F", "", "plan", "with", "smoke"], capsys, monkeypatch)
    _one_error_line(code, printed, "'results_dir'=''", "a non-empty path")
    code, printed = drive_in_process(tmp_path, ["with", "smoke", "method=baseline", "checkpoint_root=''"], capsys,
                                     monkeypatch)
    _one_error_line(code, printed, "'checkpoint_root'=''", "a non-empty path")
    for update in ("data_root=''", "data_root=' '", "checkpoint_root=' '"):  # a blank one: the current folder too
        code, printed = drive_in_process(tmp_path, ["with", "smoke", "method=baseline", update], capsys, monkeypatch)
        _one_error_line(code, printed, f"'{update.split('=')[0]}'=", "a non-empty path")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("update, named", [
    ("teacher_method=foo", ("'teacher_method'='foo'", "one of baseline")),
    ("teacher_backbone=foo", ("'teacher_backbone'='foo'", "one of densenet40_12")),
])
def test_the_teacher_keys_are_named_as_the_user_set_them(tmp_path, capsys, monkeypatch, update, named):
    """two_stage said `config key 'method'` for teacher_method=foo and `'backbone'` for teacher_backbone=foo."""
    code, printed = drive_in_process(tmp_path, ["plan", "with", "smoke", update], capsys, monkeypatch,
                                     script="experiments.two_stage")
    _one_error_line(code, printed, *named)


def test_kd_teacher_backbone_is_checked_against_the_backbones(tmp_path, capsys, monkeypatch):
    """options.teacher_backbone=foo was accepted by every check (and compared with a teacher file's later)."""
    code, printed = drive_in_process(tmp_path, ["plan", "with", "smoke", "method=kd",
                                                f"options.teacher_path={a_file(tmp_path)}",
                                                "options.teacher_backbone=resnet-32"], capsys, monkeypatch)
    _one_error_line(code, printed, "'options.teacher_backbone'='resnet-32'", "one of densenet40_12",
                    "did you mean 'resnet32'?")


def test_a_teacher_backbone_of_another_dataset_is_named_as_the_teacher(tmp_path, capsys, monkeypatch):
    """two_stage's teacher on a backbone not built for the dataset: refused naming teacher_backbone (the key the
    user set), not the teacher cell's 'backbone'."""
    code, printed = drive_in_process(tmp_path, ["plan", "with", "teacher_backbone=resnet18"], capsys, monkeypatch,
                                     script="experiments.two_stage")
    assert code == 2 and printed.splitlines() == [
        "error: config key 'teacher_backbone'='resnet18' is built for imagenet, synthetic, not dataset='cifar100'; "
        "allowed on cifar100: " + ", ".join(registry.dataset_backbones("cifar100"))]
