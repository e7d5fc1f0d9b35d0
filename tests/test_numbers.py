"""Every number means what it says (issue: correctness): bookkeeping never changes what is computed, and a short
schedule keeps the recipe's proportions."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pcl import registry, schema, tracking
from pcl.data import DeviceLoader, make_synthetic
from pcl.losses import rampup

SMOKE = {"dataset": "synthetic", "backbone": "tiny_resnet8", "method": "pcl", "peers": 2, "epochs": 2,
         "batch_size": 32, "synthetic_classes": 4, "synthetic_train_size": 96, "synthetic_test_size": 64,
         "device": "cpu", "workers": 0}
TIMING = ("epoch_time_s", "images_per_s")


def _train(tmp_path: Path, name: str, mongo_url: str | None = None, db_name: str | None = None, **infra):
    cfg = {**SMOKE, "checkpoint_root": str(tmp_path / name / "ckpt"), **infra}
    report = tracking.run_grid([cfg], results_dir=tmp_path / name / "results", mongo_url=mongo_url,
                               db_name=db_name, log=lambda _m: None)
    (run,) = report.runs
    assert run.status == "COMPLETED", run.error
    (run_dir,) = [p for p in (tmp_path / name / "results").iterdir() if p.name.isdigit()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curves = {k: v["values"] for k, v in metrics.items() if not k.endswith(TIMING)}
    weights = torch.load(Path(run.info["deployed_path"]), weights_only=True)["state_dict"]
    return run.run_key, curves, weights


def test_settings_outside_the_run_key_leave_every_number_bit_identical(tmp_path, mongo_url):
    """progress, results_dir, checkpoint_root, stores, workers, labels, device placement and force: same curves
    and same final weights, to the bit (CPU)."""
    key, curves, weights = _train(tmp_path, "plain")
    variants = {
        "progress": {"progress": True},
        "labels": {"label": "another label", "experiment": "another_script", "workers": 3},
        "device": {"device": "auto", "deterministic": True},
        "force": {"force": True, "data_root": str(tmp_path / "unused")},
        "mongo": {"mongo_url": mongo_url, "db_name": "numbers"},
    }
    for name, infra in variants.items():
        other_key, other_curves, other_weights = _train(tmp_path, name, **infra)
        assert other_key == key, name
        assert other_curves.keys() == curves.keys(), name
        for metric, values in curves.items():
            assert other_curves[metric] == values, (name, metric)
        for param, tensor in weights.items():
            assert torch.equal(other_weights[param], tensor), (name, param)


def test_evaluation_cadence_changes_no_trained_number(tmp_path):
    """eval_every=2 over 3 epochs: the same run_key, train curves and final weights to the bit; the test curves
    have epochs 2 and 3 (the last epoch is always evaluated) with the values of an every-epoch run."""
    key, curves, weights = _train(tmp_path, "every_epoch", epochs=3)
    other_key, other_curves, other_weights = _train(tmp_path, "sparse", epochs=3, eval_every=2)
    assert other_key == key and other_curves.keys() == curves.keys()
    for metric, values in curves.items():
        assert other_curves[metric] == (values[1:] if metric.startswith("test/") else values), metric
    assert all(torch.equal(other_weights[p], w) for p, w in weights.items())


def test_iterating_a_loader_has_no_side_effects():
    """An epoch's order and augmentation are a function of (seed, epoch) set through set_epoch only."""
    split, _, _ = make_synthetic(4, 64, 16, seed=0, image_size=8)
    loader = DeviceLoader(split, batch_size=16, num_views=2, train=True, mean=(0.5,) * 3, std=(0.25,) * 3,
                          device="cpu", seed=3)
    loader.set_epoch(5)
    first = [v[0].clone() for v, _ in loader]
    extra = iter(loader)  # e.g. a progress bar or a probe asking for an iterator
    next(extra)
    second = [v[0].clone() for v, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    loader.set_epoch(6)
    assert not torch.equal(next(iter(loader))[0][0], first[0])


# ---- a short schedule keeps the recipe's proportions ------------------------------------------------------------
#: the declared methods with a ramp-up by default (a time constant of the paper's schedule)
RAMPED = tuple(name for name, spec in registry.methods().items()
               if spec.time_constants.get("rampup_length") == "epochs" and spec.defaults["rampup_length"] > 0)


def test_the_papers_300_epoch_recipe_is_unchanged():
    cfg = schema.normalize_run_config({"dataset": "cifar100", "method": "pcl"})
    assert cfg["epochs"] == 300 and cfg["milestones"] == [150, 225]
    assert cfg["options"]["rampup_length"] == 80 and cfg["options"]["ema_decay"] == 0.999
    assert "pcl" in RAMPED
    for method in RAMPED:
        default = registry.method(method).defaults["rampup_length"]
        assert schema.normalize_run_config({"method": method})["options"]["rampup_length"] == default


@pytest.mark.parametrize("method", RAMPED)
def test_quick_schedules_reach_full_distillation_before_the_last_lr_step(method):
    """`quick` (10 epochs on 5,000 images): every ramped method's weight reaches 1 before the last LR step."""
    cfg = schema.normalize_run_config({"dataset": "cifar10", "method": method, "epochs": 10,
                                       "train_subset": 5000})
    length = cfg["options"]["rampup_length"]
    last_step = cfg["milestones"][-1]
    assert rampup(last_step - 1, length) == 1.0, (length, last_step)
    assert 1 <= length < last_step


def test_quick_temporal_mean_is_not_the_uniform_average_of_the_run():
    """decay 0.999 averages ~1,000 steps: over a 390-step quick run that is the mean of every weight since the
    random init. Scaled, the averaging window keeps the paper's share of the run."""
    full = schema.normalize_run_config({"dataset": "cifar100", "method": "pcl"})
    quick = schema.normalize_run_config({"dataset": "cifar10", "method": "pcl", "epochs": 10,
                                         "train_subset": 5000})
    steps_full = 300 * (50_000 // 128)
    steps_quick = 10 * (5_000 // 128)
    window = lambda decay: 1.0 / (1.0 - decay)  # noqa: E731 - steps a temporal mean averages over
    assert window(quick["options"]["ema_decay"]) < 0.05 * steps_quick
    assert math.isclose(window(quick["options"]["ema_decay"]) / steps_quick,
                        window(full["options"]["ema_decay"]) / steps_full, rel_tol=1e-6)


def test_imagenet_ramp_up_scales_with_its_90_epochs():
    cfg = schema.normalize_run_config({"dataset": "imagenet", "backbone": "resnet18", "method": "pcl"})
    assert cfg["options"]["rampup_length"] == 24  # 80 of 300 epochs -> 24 of 90
    assert cfg["options"]["rampup_length"] < cfg["milestones"][0]


def test_an_explicit_time_constant_always_wins():
    cfg = schema.normalize_run_config({"method": "pcl", "epochs": 10,
                                       "options": {"rampup_length": 7, "ema_decay": 0.99}})
    assert cfg["options"]["rampup_length"] == 7 and cfg["options"]["ema_decay"] == 0.99
    assert schema.normalize_run_config(cfg) == cfg
