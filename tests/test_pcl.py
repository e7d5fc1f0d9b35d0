"""PCL: the loss against hand-computed values, gradients, the temporal mean, views, every ablation switch."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pcl.engine import Recipe, train
from pcl.seeding import seed_everything
from pcl.losses import rampup
from pcl.methods import build_method
from pcl.models import build_backbone

C = 4  # classes


def _pcl(**options):
    torch.manual_seed(0)
    return build_method("pcl", "tiny_resnet8", C, **options)


def _views(m, batch=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(m)]


# ---- hand-computed loss on forced logits -------------------------------------------------------------------
def _softmax(zs, t=1.0):
    e = [math.exp(z / t) for z in zs]
    return [v / sum(e) for v in e]


def _ce(z, y):
    return -math.log(_softmax(z)[y])


def _kd(student, teacher, t):
    p, q = _softmax(teacher, t), _softmax(student, t)
    return t * t * sum(a * math.log(a / b) for a, b in zip(p, q))


def test_total_loss_matches_hand_computation(monkeypatch):
    """m=3, batch of one: L = sum CE(z_j) + CE(z_e) + w (sum KD(z_j<-z_e) + sum_j 1/2 sum_{l!=j} KD(z_j<-z'_l))."""
    m, t, y = 3, 3.0, 2
    peer = [[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, -0.5], [0.3, 0.3, 1.5, 0.0]]
    mean = [[0.5, 0.5, 0.0, 0.0], [-1.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]]
    method = _pcl(peers=m, temperature=t)
    feats = [torch.full((1, method.net.feature_dim), float(j + 1)) for j in range(m)]
    monkeypatch.setattr(method.net, "forward_views",
                        lambda views: [(f, torch.tensor([z])) for f, z in zip(feats, peer)])
    monkeypatch.setattr(method.mean_net, "forward_views", lambda views: [(f, torch.tensor([z]))
                                                                         for f, z in zip(feats, mean)])
    with torch.no_grad():
        method.ensemble.weight.zero_()
        method.ensemble.bias.copy_(torch.tensor([0.2, -0.3, 1.0, 0.0]))
    ens = [0.2, -0.3, 1.0, 0.0]
    method.on_epoch_start(40)
    losses, logits = method.training_step(_views(m, batch=1), torch.tensor([y]))

    ce_peers = sum(_ce(z, y) for z in peer)
    pe = sum(_kd(z, ens, t) for z in peer)
    pm = sum(_kd(peer[j], mean[l], t) / (m - 1) for j in range(m) for l in range(m) if l != j)
    w = math.exp(-1.25)
    assert losses["ce_peers"].item() == pytest.approx(ce_peers, rel=1e-5)
    assert losses["ce_ensemble"].item() == pytest.approx(_ce(ens, y), rel=1e-5)
    assert losses["pe"].item() == pytest.approx(pe, rel=1e-5)
    assert losses["pm"].item() == pytest.approx(pm, rel=1e-5)
    weights = method.loss_weights()
    total = sum(weights.get(k, 1.0) * v for k, v in losses.items())
    assert total.item() == pytest.approx(ce_peers + _ce(ens, y) + w * (pe + pm), rel=1e-5)
    assert set(logits) == {"peer1", "peer2", "peer3", "ensemble"}


# ---- gradients -------------------------------------------------------------------------------------------
def _grads(method, views, targets, terms):
    method.zero_grad(set_to_none=True)
    losses, _ = method.training_step(views, targets)
    sum(losses[k] for k in terms).backward()
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in method.named_parameters()}


def test_no_gradient_reaches_mean_network_or_detached_ensemble():
    method = _pcl(peers=3)
    method.train()
    views, targets = _views(3), torch.tensor([0, 1, 2, 3, 0, 1])
    g = _grads(method, views, targets, ["ce_peers", "ce_ensemble", "pe", "pm"])
    assert all(v is None for n, v in g.items() if n.startswith("temporal_mean."))
    assert all(not p.requires_grad for p in method.temporal_mean.parameters())
    # KD terms alone put no gradient on the ensemble classifier when its logits are a detached target...
    g_kd = _grads(method, views, targets, ["pe", "pm"])
    assert g_kd["ensemble.weight"] is None
    assert g_kd["net.branches.0.classifier.weight"].abs().sum() > 0
    # ...and do when detach_ensemble=False
    method2 = _pcl(peers=3, detach_ensemble=False)
    method2.train()
    g2 = _grads(method2, views, targets, ["pe"])
    assert g2["ensemble.weight"] is not None and g2["ensemble.weight"].abs().sum() > 0


def test_peers_start_from_different_weights():
    method = _pcl(peers=3)
    w = [b.classifier.weight for b in method.net.branches]
    c = [b.body[0].conv1.weight for b in method.net.branches]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert not torch.equal(c[0], c[1])


# ---- temporal mean ---------------------------------------------------------------------------------------
def test_mean_network_follows_ema_warmup_after_each_step():
    method = _pcl(peers=2, multi_input=False)
    method.train()
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    views, targets = _views(1), torch.tensor([0, 1, 2, 3, 0, 1])
    mean_before = method.mean_net.branches[0].classifier.weight.clone()
    expected = mean_before
    for t in (1, 2, 3):
        losses, _ = method.training_step(views, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        method.after_optimizer_step()
        a = min(1 - 1 / (t + 1), 0.999)
        live = method.net.branches[0].classifier.weight
        expected = a * expected + (1 - a) * live.detach()
        assert torch.allclose(method.mean_net.branches[0].classifier.weight, expected, atol=1e-6)
    assert method.temporal_mean.step.item() == 3


def test_mean_teacher_l_sees_view_l(monkeypatch):
    """pm equals the value computed with mean peer l run on view l, and differs if views were permuted."""
    m, t = 3, 3.0
    method = _pcl(peers=m, temperature=t)
    method.train()
    views, targets = _views(m, batch=4, seed=3), torch.tensor([0, 1, 2, 3])
    state = {k: v.clone() for k, v in method.state_dict().items()}
    live = [z.detach() for _, z in method.net.forward_views(views)]
    method.load_state_dict(state)  # undo the BN-statistics update of that forward

    def pm_with(mean_views):
        mean = method.mean_net
        with torch.no_grad():
            zs = [mean.branches[l](mean.shared(v))[1] for l, v in enumerate(mean_views)]
        return sum(F.kl_div(F.log_softmax(live[j] / t, 1), F.softmax(zs[l] / t, 1), reduction="batchmean")
                   * t * t / (m - 1) for j in range(m) for l in range(m) if l != j).item()

    expected = pm_with(views)
    method.load_state_dict(state)
    swapped = pm_with([views[1], views[2], views[0]])
    method.load_state_dict(state)
    losses, _ = method.training_step(views, targets)
    assert losses["pm"].item() == pytest.approx(expected, rel=1e-4)
    assert abs(expected - swapped) > 1e-3


# ---- every switch changes the computation ----------------------------------------------------------------
def test_switch_multi_input():
    assert _pcl(peers=4).num_views == 4
    method = _pcl(peers=4, multi_input=False)
    assert method.num_views == 1
    losses, _ = method.training_step(_views(1), torch.tensor([0, 1, 2, 3, 0, 1]))
    assert set(losses) == {"ce_peers", "ce_ensemble", "pe", "pm"}


def test_switch_ensemble_teacher_off():
    method = _pcl(peers=3, ensemble_teacher=False)
    assert not hasattr(method, "ensemble")
    losses, logits = method.training_step(_views(3), torch.tensor([0, 1, 2, 3, 0, 1]))
    assert "pe" not in losses and "ce_ensemble" not in losses and "ensemble" not in logits
    assert "ensemble" not in method.eval().eval_heads(_views(1)[0])


def test_switch_mean_teacher_off():
    method = _pcl(peers=3, mean_teacher=False)
    assert not hasattr(method, "temporal_mean") and method.deployed_head == "peer1"
    losses, _ = method.training_step(_views(3), torch.tensor([0, 1, 2, 3, 0, 1]))
    assert "pm" not in losses
    heads = method.eval().eval_heads(_views(1)[0])
    assert not any(h.startswith("mean_peer") for h in heads) and "pcl_e" not in heads


def test_switch_peer_teacher_sources():
    views, targets = _views(3), torch.tensor([0, 1, 2, 3, 0, 1])
    values = {}
    for source in ("mean_others", "live_others", "own_mean"):
        method = _pcl(peers=3, peer_teacher=source)
        method.train()
        values[source] = method.training_step(views, targets)[0]["pm"].item()
    # at initialisation the mean network equals the live one: own_mean is exactly zero, the others are not
    assert values["own_mean"] == pytest.approx(0.0, abs=1e-6)
    assert values["live_others"] > 1e-4 and values["mean_others"] > 1e-4
    live = _pcl(peers=3, peer_teacher="live_others")
    assert not hasattr(live, "temporal_mean") and live.deployed_head == "peer1"
    # live peers as teachers: the target side is detached, so pm's gradient equals the student-side one only
    live.train()
    live.zero_grad()
    losses, _ = live.training_step(views, targets)
    losses["pm"].backward()
    assert live.net.branches[0].classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("form", ["logit_average", "gate"])
def test_switch_ensemble_form(form):
    method = _pcl(peers=3, ensemble_form=form)
    method.eval()
    x = _views(1)[0]
    heads = method.eval_heads(x)
    peers = torch.stack([heads[f"peer{j}"] for j in (1, 2, 3)])
    if form == "logit_average":
        assert torch.allclose(heads["ensemble"], peers.mean(0), atol=1e-6)
        assert not any(n.startswith("ensemble") for n, _ in method.named_parameters())
    else:
        g = method.ensemble(method.net.shared_features(x))
        assert torch.allclose(g.sum(1), torch.ones(len(x)), atol=1e-6)
        assert torch.allclose(heads["ensemble"], (g.T[:, :, None] * peers).sum(0), atol=1e-5)


def test_switch_ema_buffers_mode_sets_mean_network_mode():
    for mode, train_mode in (("forward", True), ("copy", False), ("average", False)):
        method = _pcl(peers=2, ema_buffers=mode)
        method.train()
        assert method.mean_net.training is train_mode


@pytest.mark.parametrize("bad,match", [(dict(peers=1), "peers"), (dict(peers=0), "peers"),
                                       (dict(ensemble_form="vote"), "concat_fc"),
                                       (dict(peer_teacher="self"), "mean_others"),
                                       (dict(ema_buffers="x"), "forward"), (dict(temperature=0), "temperature"),
                                       (dict(ema_decay=1.5, mean_teacher=False), "ema_decay"),
                                       (dict(multi_input="False"), "multi_input"),
                                       (dict(colour="red"), "allowed")])
def test_bad_options_fail_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        _pcl(**bad)


# ---- heads and deployment --------------------------------------------------------------------------------
def test_eval_heads_and_deployed_export_equals_mean_peer1():
    method = _pcl(peers=3)
    method.train()
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    for _ in range(2):  # move live and mean apart, and the BN statistics
        losses, _ = method.training_step(_views(3), torch.tensor([0, 1, 2, 3, 0, 1]))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        method.after_optimizer_step()
    method.eval()
    x = _views(1, seed=9)[0]
    heads = method.eval_heads(x)
    assert set(heads) == {"peer1", "peer2", "peer3", "mean_peer1", "mean_peer2", "mean_peer3", "ensemble", "pcl_e"}
    assert torch.allclose(heads["pcl_e"], torch.stack([heads[f"mean_peer{j}"] for j in (1, 2, 3)]).mean(0))
    assert not torch.allclose(heads["peer1"], heads["mean_peer1"])
    plain = build_backbone("tiny_resnet8", C)
    plain.load_state_dict(method.export_deployed().state_dict())
    plain.eval()
    assert torch.equal(plain(x), heads["mean_peer1"])
    counts = method.parameter_counts()
    assert counts["params_deployed"] == sum(p.numel() for p in plain.parameters())
    assert counts["params_train"] > 2 * counts["params_deployed"]


# ---- end to end on CPU -----------------------------------------------------------------------------------
def test_pcl_learns_on_synthetic_data_every_head_beats_chance(tiny_loaders):
    train_loader, test_loader, classes = tiny_loaders(3, classes=C, train_size=512, test_size=256)
    seed_everything(0)
    method = build_method("pcl", "tiny_resnet8", classes, rampup_length=2)
    logged = []
    result = train(method, train_loader, test_loader, Recipe(epochs=4, lr=0.05, milestones=(3,)),
                   callbacks=[lambda e, m: logged.append(m)])
    first, last = result.history[0], result.history[-1]
    assert last["train/loss/ce_peers"] < first["train/loss/ce_peers"]
    heads = ["peer1", "peer2", "peer3", "mean_peer1", "mean_peer2", "mean_peer3", "ensemble", "pcl_e"]
    for head in heads:
        assert last[f"test/top1_err/{head}"] < 45.0, (head, last[f"test/top1_err/{head}"])  # chance = 75 %
    for term in ("ce_peers", "ce_ensemble", "pe", "pm", "total"):
        assert f"train/loss/{term}" in logged[-1]
    assert logged[0]["rampup_weight"] == pytest.approx(rampup(0, 2))
    assert logged[-1]["train/weight/pe"] == pytest.approx(1.0)
    assert result.summary["deployed/top1_err"] == last["test/top1_err/mean_peer1"]


@pytest.mark.slow
def test_two_epoch_resnet32_run_on_cifar100_shaped_synthetic_data(tiny_loaders):
    """The issue's acceptance run: resnet32, 100 classes, 2 epochs, every head and loss term logged."""
    train_loader, test_loader, classes = tiny_loaders(3, classes=100, train_size=256, test_size=128, batch_size=64)
    seed_everything(0)
    method = build_method("pcl", "resnet32", classes)
    result = train(method, train_loader, test_loader, Recipe(epochs=2, milestones=(1,)))
    last = result.history[-1]
    for head in ["peer1", "peer2", "peer3", "mean_peer1", "mean_peer2", "mean_peer3", "ensemble", "pcl_e"]:
        assert f"test/top1_err/{head}" in last and f"test/top5_err/{head}" in last
    for term in ("ce_peers", "ce_ensemble", "pe", "pm"):
        assert math.isfinite(last[f"train/loss/{term}"])
    assert last["rampup_weight"] == pytest.approx(rampup(1))
