"""What a new user meets when following the README (issue 22): the test command needs nothing unannounced, the run
outputs of the README's commands are ignored by git, --help lists only flags that work, `plan` ends with a summary."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import slurm_packages

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_names_the_packages_the_test_suite_installs_and_the_script_that_does():
    readme = (ROOT / "README.md").read_text()
    tests_section = readme.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    packages = slurm_packages()
    assert packages == ["slurm-wlm", "munge", "slurmdbd", "mariadb-server"]
    for name in [*packages, "slurm/local_cluster.sh", "/etc/slurm/slurm.conf", "tests/test_slurm.py"]:
        assert name in tests_section, name
    head = readme.split("\n## ", 1)[0]  # the test command at the top says it too
    assert "bash scripts/setup_env.sh && .venv/bin/python -m pytest" in head and "slurm/local_cluster.sh" in head


def test_the_slurm_fixture_announces_what_it_does_to_the_machine(tmp_path):
    source = (ROOT / "tests" / "conftest.py").read_text()
    fixture = source.split("def slurm_cluster(", 1)[1]
    start = fixture.index('"start"]')
    assert "say(request.config" in fixture[:start]  # the line comes before the script runs
    assert "slurm_cluster_answers()" in fixture[:fixture.index("say(")]  # a running cluster (CI's) is reused


@pytest.mark.slow
def test_a_fixture_line_reaches_the_terminal_although_pytest_captures(tmp_path):
    """`say` (what slurm_cluster uses) writes to the terminal from a session fixture; print() there stays captured."""
    (tmp_path / "test_noisy.py").write_text(
        "import importlib.util, pytest\n"
        f"spec = importlib.util.spec_from_file_location('pcl_conftest', {str(ROOT / 'tests' / 'conftest.py')!r})\n"
        "conftest = importlib.util.module_from_spec(spec); spec.loader.exec_module(conftest)\n"
        "@pytest.fixture(scope='session')\n"
        "def noisy(request):\n"
        "    conftest.say(request.config, 'tests: installing the packages X (one-off)')\n"
        "    print('captured, not shown')\n"
        "    yield\n"
        "def test_it(noisy):\n"
        "    pass\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_noisy.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tests: installing the packages X (one-off)" in out.stdout and "captured, not shown" not in out.stdout


@pytest.mark.parametrize("path", ["logs/slurm/123/123_0_log.out", "results/1/run.json", "checkpoints/k/checkpoint.pt",
                                  "tables/table2.md", "figures/curves.png", "report/report.md", "data/x"])
def test_what_the_readme_commands_write_in_the_repository_is_ignored_by_git(path):
    out = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, capture_output=True, timeout=60)
    if out.returncode == 128:  # not a git work tree (e.g. an unpacked archive): read .gitignore itself
        assert f"/{path.split('/')[0]}/" in (ROOT / ".gitignore").read_text().split(), path
        return
    assert out.returncode == 0, f"{path} is not ignored by git (.gitignore)"


def test_help_lists_only_the_flags_that_are_honoured(capsys):
    from experiments import cli, table2

    with pytest.raises(SystemExit) as stop:
        cli.cli(table2.ex, ["experiments/table2.py", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    options = text.split("Options (", 1)[1].split("\nArguments:", 1)[0]
    listed = [line.split()[0].rstrip(",") for line in options.splitlines() if line.startswith("  -")]
    assert sorted(listed) == sorted(h.split(":")[0].split()[0] for h in cli.HONOURED_FLAGS.values())
    for flag in cli.REFUSED_FLAGS:
        assert flag not in options.split("are refused")[0]
    assert "-q" in options.split("Sacred's other flags")[1] and "-u" in options.split("Sacred's other flags")[1]
    assert "host:port:db" not in text  # Sacred's -m form, which the suite refuses


def test_plan_ends_with_one_summary_line(tmp_path, capsys, monkeypatch):
    from experiments import table2
    from experiments.common import run_script

    monkeypatch.delenv("PCL_MONGO_URL", raising=False)
    updates = {"method": ["baseline", "pcl"], "backbone": ["resnet32", "resnet110"], "seeds": [0, 1],
               "results_dir": str(tmp_path / "results")}
    runs = run_script(table2.ex, updates, command="plan")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == ("plan: 8 run(s); per dataset: cifar100 8; per method: baseline 4, pcl 4; per backbone: resnet32 "
                    f"4, resnet110 4; 2 seed(s); none COMPLETED yet (no file store at {tmp_path / 'results'})")
    assert len(runs) == 8


@pytest.mark.slow
def test_plan_counts_the_runs_already_completed_in_the_file_store(tmp_path, capsys, monkeypatch):
    from experiments import table2
    from experiments.common import run_script
    from pcl import tracking

    monkeypatch.delenv("PCL_MONGO_URL", raising=False)

    smoke = run_script(table2.ex, {"method": "baseline", "seeds": [0], "results_dir": str(tmp_path / "s"),
                                   "checkpoint_root": str(tmp_path / "ck")}, ["smoke"], command="plan")
    tracking.run_grid(smoke, results_dir=str(tmp_path / "s"), log=lambda _: None)
    capsys.readouterr()
    run_script(table2.ex, {"method": ["baseline", "pcl"], "seeds": [0], "results_dir": str(tmp_path / "s")},
               ["smoke"], command="plan")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(f"; 1 already COMPLETED in {tmp_path / 's'} (the grid skips them; force=True trains them "
                         "again)"), last
    assert "per method: baseline 1, pcl 1" in last
