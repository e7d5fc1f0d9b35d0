"""Every baseline method learns on CPU: a few epochs on synthetic data, every head clearly beats chance.

PCL's own end-to-end check lives in tests/test_pcl.py. Chance is 75 % top-1 error for 4 classes; the thresholds
leave a wide margin at these fixed seeds (the runs land far lower), so they test learning, not luck.
"""
from __future__ import annotations

import pytest

from pcl import registry
from pcl.engine import Recipe, train
from pcl.seeding import seed_everything
from pcl.methods import build_method, method_class

CLASSES = 4
EPOCHS = 4

#: every declared method's heads with its default options (PCL's own end-to-end check is in tests/test_pcl.py)
EXPECTED_HEADS = {name: [h for head in spec.heads for h in head.names(spec.defaults.get("peers"))]
                  for name, spec in registry.methods().items() if name != "pcl"}
#: the fast tier learns with one distilling method; CI runs every one
METHODS = [pytest.param(name, marks=() if i == 1 else pytest.mark.slow) for i, name in enumerate(EXPECTED_HEADS)]


# Methods whose KD weight is constant by default (no ramp-up): their total loss is comparable across epochs.
CONSTANT_WEIGHTS = tuple(name for name, spec in registry.methods().items()
                         if not spec.defaults.get("rampup_length"))


@pytest.mark.parametrize("name", METHODS)
def test_method_learns_every_head_beats_chance(name, tiny_loaders, tmp_path):
    seed_everything(1)  # the files it reads, as it declares them (kd: an untrained teacher)
    options: dict = method_class(name).example_inputs(tmp_path, "tiny_resnet8", CLASSES)
    if name not in CONSTANT_WEIGHTS:
        options["rampup_length"] = 2  # the ramp-up reaches w = 1 within the run, so distillation is exercised
    seed_everything(0)
    method = build_method(name, "tiny_resnet8", CLASSES, **options)
    train_loader, test_loader, _ = tiny_loaders(method.num_views, classes=CLASSES, train_size=512, test_size=256)
    result = train(method, train_loader, test_loader, Recipe(epochs=EPOCHS, lr=0.05, milestones=(3,)))
    first, last = result.history[0], result.history[-1]
    assert last["train/loss/ce"] < 0.7 * first["train/loss/ce"]
    if name in CONSTANT_WEIGHTS:
        assert last["train/loss/total"] < first["train/loss/total"]
    else:
        assert last["rampup_weight"] == 1.0 and first["rampup_weight"] < 0.01
    frozen = {h for head in registry.method(name).heads if head.role == "frozen"
              for h in head.names(registry.method(name).defaults.get("peers"))}
    for head in set(EXPECTED_HEADS[name]) - frozen:  # what the method trains (kd's example teacher is untrained)
        err = last[f"test/top1_err/{head}"]
        assert err < 40.0, (name, head, err)  # chance: 75 %
    assert result.summary["deployed/top1_err"] == last[f"test/top1_err/{method.deployed_head}"]
