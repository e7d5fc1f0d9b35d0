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
