"""The temporal mean: Mean Teacher's warm-up a_t = min(1 - 1/(t+1), decay), buffer modes, no gradient."""
import pytest
import torch
from torch import nn

from pcl.ema import TemporalMean


def _net():
    return nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2))


def test_warmup_then_decay_values():
    live = _net()
    with torch.no_grad():
        live[0].weight.fill_(0.0)
    tm = TemporalMean(live, decay=0.75)
    expected = 0.0
    alphas = []
    for t in range(1, 8):
        with torch.no_grad():
            live[0].weight.fill_(float(t))          # live value at step t
        tm.update(live)
        a = min(1 - 1 / (t + 1), 0.75)              # 0.5, 0.667, 0.75, 0.75, ...
        alphas.append(a)
        expected = a * expected + (1 - a) * t
        assert tm.mean[0].weight[0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert alphas[:3] == pytest.approx([0.5, 2 / 3, 0.75])
    assert tm.step.item() == 7


def test_uniform_average_with_decay_one():
    live = _net()
    w0 = live[0].weight.detach().clone()          # the mean network starts as a copy of the live one
    tm = TemporalMean(live, decay=1.0)
    values = [3.0, 5.0, 10.0]
    for v in values:
        with torch.no_grad():
            live[0].weight.fill_(v)
        tm.update(live)
    # a_t = 1 - 1/(t+1) uncapped: every weight seen so far (the initial copy included) counts equally
    assert torch.allclose(tm.mean[0].weight, (w0 + sum(values)) / 4)


def test_mean_network_gets_no_gradient_and_is_separate():
    live = _net()
    tm = TemporalMean(live)
    assert all(not p.requires_grad for p in tm.mean.parameters())
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(tm.mean.parameters(), live.parameters()))


@pytest.mark.parametrize("mode", ["forward", "copy", "average"])
def test_buffer_modes(mode):
    torch.manual_seed(0)
    live = _net()
    tm = TemporalMean(live, decay=0.5, buffer_mode=mode)
    tm.train()
    assert tm.mean.training == (mode == "forward")
    live.train()
    before = tm.mean[1].running_mean.clone()
    live(torch.randn(16, 2) * 3 + 5)                 # moves the live running stats
    tm.update(live)
    after = tm.mean[1].running_mean
    if mode == "forward":
        assert torch.equal(after, before)            # only the mean network's own passes move them
    elif mode == "copy":
        assert torch.equal(after, live[1].running_mean)
    else:
        assert torch.allclose(after, 0.5 * before + 0.5 * live[1].running_mean)


def test_bad_options():
    with pytest.raises(ValueError, match="1.5"):
        TemporalMean(_net(), decay=1.5)
    with pytest.raises(ValueError, match="forward, copy, average"):
        TemporalMean(_net(), buffer_mode="swap")
