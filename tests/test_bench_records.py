"""bench/records.py: its fast metrics.json writer writes what the store's writer (json, sort_keys, indent=2) writes,
and a cloned run's result is derived from its curves as the runner derives it."""
from __future__ import annotations

import json

from bench import records


def test_metrics_json_is_the_stores_format():
    series = {"test/top1_err/deployed": ([1, 2], ["2026-01-01T00:00:00.5", "2026-01-01T00:01:00"], [30.5, 1e-07]),
              "lr": ([1], ["2026-01-01T00:00:00"], [0.1]), "empty": ([], [], [])}
    plain = {k: {"steps": s, "timestamps": t, "values": v} for k, (s, t, v) in series.items()}
    assert records.metrics_json(series) == json.dumps(plain, sort_keys=True, indent=2)
    assert records.metrics_json({}) == json.dumps({}, sort_keys=True, indent=2)


def test_result_derived_from_the_curves():
    values = {"test/top1_err/peer1": [50.0, 20.0, 25.0], "test/top1_err/deployed": [40.0, 30.0, 26.0]}
    template = {"last/top1_err/peer1": 0.0, "best_on_test/top1_err/peer1": 0.0, "best_on_test_epoch/peer1": 0.0,
                "deployed/top1_err": 0.0, "epochs": 1.0, "other": 7}
    assert records.derive_result(template, values, [1, 2, 3], 3) == {
        "last/top1_err/peer1": 25.0, "best_on_test/top1_err/peer1": 20.0, "best_on_test_epoch/peer1": 2.0,
        "deployed/top1_err": 26.0, "epochs": 3.0, "other": 7}


def test_bad_sizes_and_limits_are_one_error_before_any_work(capsys):
    """--runs abc was a traceback, --runs -5 started the whole bench; nothing is built for a bad value."""
    import pytest

    for argv in (["--runs", "abc"], ["--runs", "-5"], ["--runs", "333,0"], ["--timeout", "nan"],
                 ["--mem-limit", "-1"], ["--curves", "x"]):
        with pytest.raises(SystemExit) as stopped:
            records.main(argv)
        assert stopped.value.code == 2
        assert f"argument {argv[0]}: {argv[1]!r} is invalid" in capsys.readouterr().err


def test_a_measured_command_ends_with_the_bench(tmp_path):
    """The bench stopped from outside (`timeout`, Ctrl-C) takes the command it measures with it: that runs in a
    session of its own (so that a memory or time limit kills its whole tree), and was left running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "pid"
    command = [sys.executable, "-c", f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); "
                                     "time.sleep(120)"]
    bench = subprocess.Popen([sys.executable, records.__file__, "--measure", str(tmp_path / "r.json"), "100",
                              "4096", "--", *command])
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(marker.read_text())
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the measured command outlived the bench")


def test_a_measurement_is_held_to_the_targets_of_its_stores_size():
    """At 30,000 runs the issue's targets are status and make_tables < 30 s, no memory bound (the records grow):
    the 3,000-run bounds marked a 16 s status there as failing time and memory, and a dry run as failing at all."""
    by_alias = {c.alias: c for c in records.COMMANDS}
    measured = records.Measured(seconds=16.5, mb=1138, ok=True)
    status, dry_run = by_alias["status"], by_alias["dry_run"]
    assert records.cell(status, measured, 3000) == "16.5 s / 1,138 MB ✗time ✗mem"
    assert records.cell(status, measured, records.LARGE) == "16.5 s / 1,138 MB ✓"
    assert records.cell(dry_run, measured, records.LARGE) == "16.5 s / 1,138 MB, no target"
    slow = records.Measured(seconds=31.0, mb=900, ok=True)
    assert records.cell(by_alias["make_tables"], slow, records.LARGE) == "31.0 s / 900 MB ✗time"
    assert status.target(large=True).endswith("30,000 runs: < 30 s")
    assert dry_run.target(large=True).endswith("30,000 runs: -") and "30,000" not in dry_run.target()
    startup = by_alias["startup"]  # plans one cell whatever the store: its bounds hold at any size
    assert records.cell(startup, measured, records.LARGE) == "16.5 s / 1,138 MB ✗time ✗mem"
    assert startup.target(large=True) == startup.target() == "< 2 s, < 300 MB"
