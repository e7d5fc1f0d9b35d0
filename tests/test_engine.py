"""The training engine: recipe, metrics, checkpoints, exact resume, interruption, non-finite losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pcl.checkpoint import load_checkpoint
from pcl.engine import NonFiniteLossError, Recipe, TrainingInterrupted, make_optimizer, summarize, train
from pcl.seeding import seed_everything
from pcl.step import train_step
from pcl.methods import build_method
from pcl.methods.baseline import Baseline

TIME_KEYS = {"epoch_time_s", "images_per_s"}


def _strip_time(history):
    return [{k: v for k, v in h.items() if k not in TIME_KEYS} for h in history]


def _run(method_name, loaders, epochs, ckpt=None, stop_after_epochs=None, **options):
    seed_everything(0)
    method = build_method(method_name, "tiny_resnet8", loaders[2], **options)
    recipe = Recipe(epochs=epochs, lr=0.05, milestones=(2, 3))
    return method, train(method, loaders[0], loaders[1], recipe, checkpoint_path=ckpt)


def test_recipe_defaults_and_schedule():
    r = Recipe()
    assert (r.epochs, r.lr, r.momentum, r.nesterov, r.weight_decay, r.milestones) == (
        300, 0.1, 0.9, True, 5e-4, (150, 225))
    assert r.lr_at(0) == pytest.approx(0.1) and r.lr_at(149) == pytest.approx(0.1)
    assert r.lr_at(150) == pytest.approx(0.01) and r.lr_at(224) == pytest.approx(0.01)
    assert r.lr_at(225) == pytest.approx(0.001) and r.lr_at(299) == pytest.approx(0.001)
    assert Recipe.scaled_milestones(4) == (2, 3)
    assert Recipe.scaled_milestones(30) == (15, 22)


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(epochs=-3), dict(lr=0), dict(momentum=1.0),
                                 dict(milestones=(5, 2)), dict(precision="fp8"), dict(gamma=0)])
def test_recipe_rejects_bad_values_naming_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        Recipe(**bad)


@pytest.mark.parametrize("method_name,views,options", [("baseline", 1, {}), ("pcl", 2, {"peers": 2}),
                                                      ("ffl", 1, {"peers": 2, "fusion_weight_decay": 1e-5})])
def test_resume_continues_exactly(tmp_path, tiny_loaders, method_name, views, options):
    """4 epochs straight == 2 epochs + resume (fresh objects) + 2 epochs: identical weights and metrics."""
    loaders = tiny_loaders(views)
    straight, res_a = _run(method_name, loaders, 4, tmp_path / "a.pt", **options)

    _, first = _run(method_name, loaders, 2, tmp_path / "b.pt", **options)
    assert len(first.history) == 2
    torch.manual_seed(12345)  # a different global RNG state: resume must restore the saved one
    resumed, res_b = _run(method_name, loaders, 4, tmp_path / "b.pt", **options)
    assert res_b.resumed_from_epoch == 2

    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert _strip_time(res_a.history) == _strip_time(res_b.history)
    # and the checkpoint loads with weights_only=True
    state = load_checkpoint(tmp_path / "b.pt")
    assert state["epoch"] == 4


def test_metrics_callback_gets_every_head_loss_and_rate(tiny_loaders):
    loaders = tiny_loaders(1)
    seen = []
    seed_everything(0)
    method = build_method("baseline", "tiny_resnet8", loaders[2])
    train(method, loaders[0], loaders[1], Recipe(epochs=2, milestones=(1,)),
          callbacks=[lambda e, m: seen.append((e, m))])
    assert [e for e, _ in seen] == [0, 1]
    m = seen[-1][1]
    for key in ("train/loss/total", "train/loss/ce", "train/top1_err/net", "test/top1_err/net",
                "test/top5_err/net", "lr", "epoch_time_s", "images_per_s", "epoch"):
        assert key in m, key
    assert seen[0][1]["lr"] == pytest.approx(0.1) and m["lr"] == pytest.approx(0.01)
    assert m["images_per_s"] > 0 and 0 <= m["test/top1_err/net"] <= 100


class _NanAtStep(Baseline):
    """Produces a NaN loss at one (0-based) step of the first epoch."""

    def __init__(self, backbone, num_classes, bad_step=2):
        super().__init__(backbone, num_classes)
        self.bad_step, self.calls = bad_step, 0

    def training_step(self, views, targets):
        losses, logits = super().training_step(views, targets)
        if self.calls == self.bad_step:
            losses["ce"] = losses["ce"] * float("nan")
        self.calls += 1
        return losses, logits


def test_nonfinite_loss_stops_with_epoch_and_step(tiny_loaders, tmp_path):
    loaders = tiny_loaders(1)
    method = _NanAtStep("tiny_resnet8", loaders[2], bad_step=2)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3"):
        train(method, loaders[0], loaders[1], Recipe(epochs=2), checkpoint_path=tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()  # the poisoned epoch is never checkpointed


def test_stop_request_raises_after_last_checkpoint(tiny_loaders, tmp_path):
    loaders = tiny_loaders(1)
    steps_per_epoch = len(loaders[0])
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > steps_per_epoch + 1  # during the second epoch

    seed_everything(0)
    method = build_method("baseline", "tiny_resnet8", loaders[2])
    with pytest.raises(TrainingInterrupted) as info:
        train(method, loaders[0], loaders[1], Recipe(epochs=3), checkpoint_path=tmp_path / "s.pt",
              should_stop=should_stop)
    assert info.value.completed_epochs == 1
    assert load_checkpoint(tmp_path / "s.pt")["epoch"] == 1


def test_checkpoint_of_other_method_is_refused(tiny_loaders, tmp_path):
    loaders = tiny_loaders(1)
    _run("baseline", loaders, 1, tmp_path / "x.pt")
    method = build_method("pcl", "tiny_resnet8", loaders[2], peers=2, multi_input=False)
    with pytest.raises(ValueError, match="checkpoint"):
        train(method, loaders[0], loaders[1], Recipe(epochs=2), checkpoint_path=tmp_path / "x.pt")


def test_summarize_labels_best_as_selected_on_test():
    history = [{"epoch": 1, "test/top1_err/a": 50.0, "test/top1_err/b": 40.0},
               {"epoch": 2, "test/top1_err/a": 30.0, "test/top1_err/b": 45.0}]
    s = summarize(history, "b")
    assert s["deployed/top1_err"] == 45.0            # last epoch, not best
    assert s["last/top1_err/a"] == 30.0
    assert s["best_on_test/top1_err/b"] == 40.0 and s["best_on_test_epoch/b"] == 1.0
    assert all(isinstance(v, float) and math.isfinite(v) for v in s.values())


def test_step_makes_no_host_sync(tiny_loaders, forbid_host_sync):
    """The whole step (losses, backward, fused SGD with a tensor lr, EMA update) reads nothing back."""
    loaders = tiny_loaders(3)
    method = build_method("pcl", "tiny_resnet8", loaders[2])
    optimizer = make_optimizer(method, Recipe())
    views, targets = next(iter(loaders[0]))
    before = method.temporal_mean.mean.shared.stem[0].weight.clone()
    with forbid_host_sync():
        for _ in range(2):
            total, _, _ = train_step(method, optimizer, views, targets)
    assert torch.isfinite(total)
    assert not torch.equal(before, method.temporal_mean.mean.shared.stem[0].weight)


def test_progress_bar_per_epoch(tiny_loaders, capsys):
    loaders = tiny_loaders(1)
    seed_everything(0)
    method = build_method("baseline", "tiny_resnet8", loaders[2])
    train(method, loaders[0], None, Recipe(epochs=2, milestones=(1,)), progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert f"{len(loaders[0])}/{len(loaders[0])}" in err  # every batch of the epoch went through the bar


def test_a_heartbeat_line_every_interval_inside_a_phase():
    from pcl.engine import Heartbeat

    now = [0.0]
    lines: list[str] = []
    beat = Heartbeat(lines.append, interval_s=60.0, clock=lambda: now[0])
    beat.start("epoch 3/10", total=400, images_per_batch=128)
    for step in range(400):
        now[0] = step * 1.0  # one step a second: a line at 60 s, 120 s, ...
        beat.tick(step)
    assert len(lines) == 6 and lines[0].startswith("epoch 3/10  step 60/400 (15%)  128 images/s")
    assert lines[0].endswith("0:05:40 left in this phase")
    beat.start("evaluation", total=10, images_per_batch=0)
    beat.tick(0)
    assert len(lines) == 6  # the first step of a phase never logs


def test_a_long_epoch_without_a_bar_talks(tiny_loaders):
    """No bar (progress None on a non-terminal): the epoch log gets progress lines inside the epoch (every
    heartbeat_s) and during evaluation, and one line per epoch."""
    loaders = tiny_loaders()
    torch.manual_seed(0)
    method = build_method("baseline", "tiny_resnet8", loaders[2])
    lines: list[str] = []
    train(method, loaders[0], loaders[1], Recipe(epochs=1, milestones=(1,)), progress=None,
          epoch_log=lines.append, heartbeat_s=0.0)
    assert any(" step " in line and "images/s" in line and line.startswith("epoch 1/1") for line in lines)
    assert any(line.startswith("evaluation  step ") for line in lines)
    assert lines[-1].startswith("epoch 1/1  lr ")
