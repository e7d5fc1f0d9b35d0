"""The baselines PCL is compared against (docs/methods.md): losses against hand-computed values on forced logits, which
side of each distillation term carries gradient, the method-specific pieces (ONE's gate, OKDDip's attention, CL-ILR's
gradient rescaling, KDCL's min-logit target, KD's frozen teacher), exports, options, and docs/methods.md.

Expected values are computed here with plain Python math (softmax, CE, T^2 KL) from the logits forced into the
network, never with the code under test.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pcl.engine import Recipe, make_optimizer
from pcl.losses import rampup
from pcl.methods import METHODS, build_method, method_defaults
from pcl.methods.cl_ilr import rescale_gradient
from pcl.methods.kdcl import min_logit_target
from pcl import registry
from pcl.models import Head, build_backbone
from pcl.runner import save_deployed
from pcl.step import train_step

C = 4  # classes
T = 3.0
EVERY_METHOD = list(registry.methods())  # every declared method, the ones added later included
REPO = Path(__file__).resolve().parents[1]


# ---- hand formulas -----------------------------------------------------------------------------------------------
def _softmax(zs, t=1.0):
    e = [math.exp(z / t) for z in zs]
    return [v / sum(e) for v in e]


def _ce(z, y):
    return -math.log(_softmax(z)[y])


def _kd(student, teacher, t=T):
    """T^2 KL(p_teacher || p_student) for one sample."""
    p, q = _softmax(teacher, t), _softmax(student, t)
    return t * t * sum(a * math.log(a / b) for a, b in zip(p, q))


def _batch(fn, *rows):
    """Batch mean of fn over samples (rows are per-sample lists)."""
    return sum(fn(*r) for r in zip(*rows)) / len(rows[0])


def _kd_grad(student, teacher, batch, t=T):
    """d/dz_student of the batch-mean KD with the teacher fixed: T (softmax(z_s/T) - softmax(z_t/T)) / B."""
    return [t * (q - p) / batch for q, p in zip(_softmax(student, t), _softmax(teacher, t))]


def _kd_teacher_grad(student, teacher, batch, t=T):
    """d/dz_teacher of the batch-mean KD when the teacher carries gradient: T p_c [(log p_c - log q_c) - KL] / B."""
    p, q = _softmax(teacher, t), _softmax(student, t)
    kl = sum(a * math.log(a / b) for a, b in zip(p, q))
    return [t * pc * (math.log(pc / qc) - kl) / batch for pc, qc in zip(p, q)]


def _mean(rows):
    return [sum(v) / len(rows) for v in zip(*rows)]


def _flat(nested):
    return [v for item in nested for v in (_flat(item) if isinstance(item, list) else [item])]


def _approx(tensor, expected, rel=1e-5, abs_=1e-7):
    """A tensor equals nested lists of expected values (any depth), elementwise within tolerance."""
    return tensor.detach().double().flatten().tolist() == pytest.approx(_flat(expected), rel=rel, abs=abs_)


class Const(nn.Module):
    """Replaces a sub-module: returns a fixed (leaf) tensor whatever its input, so the logits are known."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        return self.value


def _leaf(rows):
    return torch.tensor(rows, dtype=torch.float32, requires_grad=True)


def _grad(loss, tensors):
    return torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)


def _images(batch=2, seed=1, views=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(views)]


def _build(name, teacher_file=None, **options):
    torch.manual_seed(0)
    inputs = METHODS[name].example_inputs(teacher_file.parent, "tiny_resnet8", C) if teacher_file else {}
    return build_method(name, "tiny_resnet8", C, **{**inputs, **options})


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A real deployed-model file, written by the runner's save_deployed from a built (untrained) baseline; its
    folder holds the files every method's options need (Method.example_inputs, declared by the method)."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("teacher") / "deployed.pt"
    save_deployed(build_method("baseline", "tiny_resnet8", C), path)
    return path


# Two samples, four classes, three networks/branches: z[k][b].
Z = [[[1.0, 0.0, -1.0, 0.5], [0.2, 0.1, 0.0, 2.0]],
     [[0.0, 2.0, 0.0, -0.5], [1.5, -1.0, 0.3, 0.0]],
     [[0.3, 0.3, 1.5, 0.0], [0.0, 0.0, -2.0, 1.0]]]
Y = [2, 3]


# ---- DML ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("peers", [2, 3])
def test_dml_loss_pairwise_weights_and_detached_peers(peers):
    z = Z[:peers]
    method = _build("dml", peers=peers)
    leaves = [_leaf(zk) for zk in z]
    for net, leaf in zip(method.nets, leaves):
        net.head.classifier = Const(leaf)
    losses, logits = method.training_step(_images(), torch.tensor(Y))
    assert set(logits) == {f"net{k + 1}" for k in range(peers)}
    ce = sum(_batch(_ce, zk, Y) for zk in z)
    kd = sum(_batch(_kd, z[k], z[l]) / (peers - 1) for k in range(peers) for l in range(peers) if l != k)
    assert losses["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert losses["kd"].item() == pytest.approx(kd, rel=1e-5)
    # d kd / d z_k comes only from network k's own terms (others' logits are fixed targets), weighted 1/(K-1)
    grads = _grad(losses["kd"], leaves)
    for k in range(peers):
        expected = [[sum(g[c] for g in (_kd_grad(z[k][b], z[l][b], 2) for l in range(peers) if l != k)) / (peers - 1)
                     for c in range(C)] for b in range(2)]
        assert _approx(grads[k], expected), k
    # DML has no ramp-up by default: w = 1 from epoch 0; T = 1 (original DML) is an option
    method.on_epoch_start(0)
    assert method.loss_weights()["kd"].item() == 1.0
    assert _build("dml", temperature=1.0).temperature == 1.0


def test_dml_target_mean_of_the_others_option():
    """target=mean_others (the OKDDip code's default): one KD term per network, from the others' mean logits."""
    assert method_defaults("dml")["target"] == "pairwise"
    method = _build("dml", target="mean_others")
    leaves = [_leaf(zk) for zk in Z]
    for net, leaf in zip(method.nets, leaves):
        net.head.classifier = Const(leaf)
    losses, _ = method.training_step(_images(), torch.tensor(Y))
    others = [[_mean([Z[l][b] for l in range(3) if l != k]) for b in range(2)] for k in range(3)]
    assert losses["kd"].item() == pytest.approx(sum(_batch(_kd, Z[k], others[k]) for k in range(3)), rel=1e-5)
    grads = _grad(losses["kd"], leaves)
    for k in range(3):  # the others' mean is a fixed target
        assert _approx(grads[k], [_kd_grad(Z[k][b], others[k][b], 2) for b in range(2)]), k


# ---- CL-ILR ------------------------------------------------------------------------------------------------------
def test_cl_ilr_loss_uses_mean_of_other_branches_detached():
    method = _build("cl_ilr")
    leaves = [_leaf(zk) for zk in Z]
    for branch, leaf in zip(method.net.branches, leaves):
        branch.classifier = Const(leaf)
    losses, _ = method.training_step(_images(), torch.tensor(Y))
    others = [[_mean([Z[l][b] for l in range(3) if l != j]) for b in range(2)] for j in range(3)]
    assert losses["ce"].item() == pytest.approx(sum(_batch(_ce, zk, Y) for zk in Z), rel=1e-5)
    assert losses["kd"].item() == pytest.approx(sum(_batch(_kd, Z[j], others[j]) for j in range(3)), rel=1e-5)
    grads = _grad(losses["kd"], leaves)
    for j in range(3):
        assert _approx(grads[j], [_kd_grad(Z[j][b], others[j][b], 2) for b in range(2)]), j
    method.on_epoch_start(0)
    assert method.loss_weights()["kd"].item() == pytest.approx(math.exp(-5))


def test_cl_ilr_target_with_gradient_option():
    """detach_target=False: the mean of the others carries gradient, so branch j's logits also get the teacher-side
    gradient of every other branch's term (weight 1/(m-1) each); the loss value is the same."""
    assert method_defaults("cl_ilr")["detach_target"] is True
    method = _build("cl_ilr", detach_target=False)
    leaves = [_leaf(zk) for zk in Z]
    for branch, leaf in zip(method.net.branches, leaves):
        branch.classifier = Const(leaf)
    losses, _ = method.training_step(_images(), torch.tensor(Y))
    others = [[_mean([Z[l][b] for l in range(3) if l != j]) for b in range(2)] for j in range(3)]
    assert losses["kd"].item() == pytest.approx(sum(_batch(_kd, Z[j], others[j]) for j in range(3)), rel=1e-5)
    grads = _grad(losses["kd"], leaves)
    for j in range(3):
        expected = [[_kd_grad(Z[j][b], others[j][b], 2)[c]
                     + sum(_kd_teacher_grad(Z[k][b], others[k][b], 2)[c] / 2 for k in range(3) if k != j)
                     for c in range(C)] for b in range(2)]
        assert _approx(grads[j], expected, rel=1e-4, abs_=1e-6), j


def test_gradient_rescale_function_is_identity_forward_and_divides_backward():
    x = torch.randn(3, 5, requires_grad=True)
    y = rescale_gradient(x, 4)
    assert torch.equal(y, x)
    (g,) = torch.autograd.grad((y * torch.arange(5.0)).sum(), x)
    assert torch.allclose(g, torch.arange(5.0).expand(3, 5) / 4)


@pytest.mark.parametrize("peers", [2, 3])
def test_cl_ilr_shared_gradient_is_plain_gradient_over_m(peers):
    """Same weights, same batch: the shared layers' gradient with rescaling = without / m; branches unchanged."""
    rescaled = _build("cl_ilr", peers=peers).double()  # float64: the comparison is exact up to rounding
    plain = _build("cl_ilr", peers=peers, gradient_rescale=False).double()
    plain.load_state_dict(rescaled.state_dict())
    x, y = [_images(batch=6)[0].double()], torch.tensor([0, 1, 2, 3, 0, 1])
    grads = []
    for method in (rescaled, plain):
        method.train()
        method.on_epoch_start(80)
        losses, _ = method.training_step(x, y)
        sum(method.loss_weights().get(k, 1.0) * v for k, v in losses.items()).backward()
        grads.append({n: p.grad for n, p in method.named_parameters()})
    shared = [n for n in grads[0] if n.startswith("net.shared.")]
    assert shared
    for n, g in grads[0].items():
        if n.startswith("net.shared."):
            assert torch.allclose(g * peers, grads[1][n], rtol=1e-9, atol=1e-12), n
        else:
            assert torch.allclose(g, grads[1][n], rtol=1e-9, atol=1e-12), n
    assert any(grads[0][n].abs().sum() > 0 for n in shared)


# ---- ONE ---------------------------------------------------------------------------------------------------------
def test_one_gate_weights_sum_to_one_and_teacher_is_gated_sum():
    method = _build("one", peers=4)
    method.train()
    weights, logits, teacher = method.forward_all(_images(batch=5)[0])
    assert weights.shape == (5, 4)
    assert torch.all(weights >= 0)
    assert torch.allclose(weights.sum(dim=1), torch.ones(5))
    by_hand = sum(weights[:, j:j + 1] * logits[j] for j in range(4))
    assert torch.allclose(teacher, by_hand, atol=1e-6)


def test_one_loss_by_hand_and_teacher_detached_in_kd():
    method = _build("one")
    leaves = [_leaf(zk) for zk in Z]
    for branch, leaf in zip(method.net.branches, leaves):
        branch.classifier = Const(leaf)
    g = [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]
    gate = _leaf(g)
    method.gate = Const(gate)
    losses, logits = method.training_step(_images(), torch.tensor(Y))
    teacher = [[sum(g[b][j] * Z[j][b][c] for j in range(3)) for c in range(C)] for b in range(2)]
    assert _approx(logits["ensemble"], teacher)
    assert losses["ce"].item() == pytest.approx(sum(_batch(_ce, zk, Y) for zk in Z), rel=1e-5)
    assert losses["ce_teacher"].item() == pytest.approx(_batch(_ce, teacher, Y), rel=1e-5)
    assert losses["kd"].item() == pytest.approx(sum(_batch(_kd, zk, teacher) for zk in Z), rel=1e-5)
    *branch_grads, gate_grad = _grad(losses["kd"], leaves + [gate])
    assert gate_grad is None  # KD never trains the gate: the teacher is a fixed target there
    for j in range(3):
        assert _approx(branch_grads[j], [_kd_grad(Z[j][b], teacher[b], 2) for b in range(2)]), j
    (gate_ce_grad,) = _grad(losses["ce_teacher"], [gate])
    assert gate_ce_grad is not None and gate_ce_grad.abs().sum() > 0  # the teacher's CE does train it
    assert set(method.loss_weights()) == {"kd"}


# ---- FFL ---------------------------------------------------------------------------------------------------------
def test_ffl_loss_by_hand_and_detached_targets():
    method = _build("ffl")
    leaves = [_leaf(zk) for zk in Z]
    for branch, leaf in zip(method.net.branches, leaves):
        branch.classifier = Const(leaf)
    zf = [[0.5, -0.5, 1.0, 0.0], [0.0, 0.4, 0.0, 0.8]]
    fused = _leaf(zf)
    method.fusion.classifier = Const(fused)
    losses, logits = method.training_step(_images(), torch.tensor(Y))
    mean = [_mean([Z[j][b] for j in range(3)]) for b in range(2)]
    assert losses["ce"].item() == pytest.approx(sum(_batch(_ce, zk, Y) for zk in Z), rel=1e-5)
    assert losses["ce_fused"].item() == pytest.approx(_batch(_ce, zf, Y), rel=1e-5)
    assert losses["kd_fused"].item() == pytest.approx(_batch(_kd, zf, mean), rel=1e-5)
    assert losses["kd_branches"].item() == pytest.approx(sum(_batch(_kd, zk, zf) for zk in Z), rel=1e-5)
    *branch_grads, fused_grad = _grad(losses["kd_fused"], leaves + [fused])
    assert all(g is None for g in branch_grads)  # the branches' mean is a fixed target
    assert _approx(fused_grad, [_kd_grad(zf[b], mean[b], 2) for b in range(2)])
    *branch_grads, fused_grad = _grad(losses["kd_branches"], leaves + [fused])
    assert fused_grad is None  # the fused logits are a fixed target
    for j in range(3):
        assert _approx(branch_grads[j], [_kd_grad(Z[j][b], zf[b], 2) for b in range(2)]), j
    assert set(method.loss_weights()) == {"kd_fused", "kd_branches"}
    assert set(logits) == {"branch1", "branch2", "branch3", "fused"}


def test_ffl_fusion_weight_decay_option_makes_its_own_optimiser_group():
    """Default: one group, the recipe's weight decay. fusion_weight_decay=1e-5 (the official code's): the fusion
    module in its own group with that decay, everything else in the recipe's group, each parameter exactly once."""
    assert method_defaults("ffl")["fusion_weight_decay"] is None
    recipe = Recipe(weight_decay=5e-4, nesterov=False)  # first step without Nesterov: w -= lr * wd * w
    default = make_optimizer(_build("ffl"), recipe)
    assert [g["weight_decay"] for g in default.param_groups] == [5e-4]
    method = _build("ffl", fusion_weight_decay=1e-5)
    optimizer = make_optimizer(method, recipe)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 1e-5]
    network, fusion = ({id(p) for p in g["params"]} for g in optimizer.param_groups)
    assert fusion == {id(p) for p in method.fusion.parameters()}
    assert not network & fusion and network | fusion == {id(p) for p in method.parameters() if p.requires_grad}
    # the decay acts: with zero gradients, one SGD step (lr 0.1) shrinks each weight by the factor lr * wd
    for p in method.parameters():
        p.grad = torch.zeros_like(p)
    watched = {1e-5: method.fusion.pointwise.weight, 5e-4: method.net.shared.stem[0].weight}
    before = {wd: w.detach().double().clone() for wd, w in watched.items()}
    optimizer.step()
    for wd, w in watched.items():
        shrink = ((before[wd] - w.detach().double()) * before[wd]).sum() / (before[wd] ** 2).sum()
        assert shrink.item() == pytest.approx(0.1 * wd, rel=1e-2), wd
    with pytest.raises(ValueError, match="fusion_weight_decay"):
        _build("ffl", fusion_weight_decay=-1.0)


def test_ffl_fusion_runs_on_concatenated_feature_maps():
    """Depthwise over m*C channels, pointwise to C; fused logits = the module's formula applied to cat(maps)."""
    method = _build("ffl", peers=3)
    fc = method.net.feature_dim
    dw, pw = method.fusion.depthwise, method.fusion.pointwise
    assert (dw.in_channels, dw.out_channels, dw.groups, dw.kernel_size) == (3 * fc, 3 * fc, 3 * fc, (3, 3))
    assert (pw.in_channels, pw.out_channels, pw.kernel_size) == (3 * fc, fc, (1, 1))
    method.train()
    with torch.no_grad():  # move the BN statistics away from their init
        method.training_step(_images(batch=8, seed=3), torch.tensor([0, 1, 2, 3] * 2))
    method.eval()
    x = _images(batch=3)[0]
    f = method.fusion
    with torch.no_grad():
        shared = method.net.shared(x)
        u = torch.cat([b.body(shared) for b in method.net.branches], dim=1)
        u = torch.nn.functional.conv2d(u, dw.weight, padding=1, groups=3 * fc)
        u = ((u - f.bn1.running_mean[:, None, None]) / torch.sqrt(f.bn1.running_var[:, None, None] + f.bn1.eps)
             * f.bn1.weight[:, None, None] + f.bn1.bias[:, None, None]).clamp(min=0)
        u = torch.nn.functional.conv2d(u, pw.weight)
        u = ((u - f.bn2.running_mean[:, None, None]) / torch.sqrt(f.bn2.running_var[:, None, None] + f.bn2.eps)
             * f.bn2.weight[:, None, None] + f.bn2.bias[:, None, None]).clamp(min=0)
        expected = u.mean(dim=(2, 3)) @ f.classifier.weight.T + f.classifier.bias
        assert torch.allclose(method.eval_heads(x)["fused"], expected, atol=1e-5)


# ---- OKDDip ------------------------------------------------------------------------------------------------------
def _okddip_forced(**options):
    """OKDDip (3 peers + leader) with known pooled features (constant 2x2 maps) and known logits."""
    method = _build("okddip", **options)
    fd = method.net.feature_dim
    g = torch.Generator().manual_seed(5)
    maps = [torch.randn(2, fd, 2, 2, generator=g) for _ in range(3)]
    leaves = [_leaf(zk) for zk in Z]
    for branch, fmap, leaf in zip(method.net.branches[:3], maps, leaves):
        branch.body = Const(fmap)
        branch.classifier = Const(leaf)
    leader = _leaf([[0.0, 1.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]])
    method.net.branches[3].classifier = Const(leader)
    return method, maps, leaves, leader


def _hand_attention(method, maps):
    """A[b][j][l] = softmax_l(q_j . k_l) from the projection weights, in float64 and explicit loops."""
    wq = method.attention.query.weight.detach().double()
    wk = method.attention.key.weight.detach().double()
    out = []
    for b in range(2):
        feats = [maps[j][b].double().mean(dim=(1, 2)) for j in range(3)]
        q = [(wq @ f).tolist() for f in feats]
        k = [(wk @ f).tolist() for f in feats]
        out.append([_softmax([sum(a * c for a, c in zip(q[j], k[l])) for l in range(3)]) for j in range(3)])
    return out


def test_okddip_attention_rows_sum_to_one_and_loss_by_hand():
    method, maps, leaves, leader = _okddip_forced()
    attention, _, _ = method.forward_all(_images()[0])
    assert attention.shape == (2, 3, 3)
    assert torch.allclose(attention.sum(dim=2), torch.ones(2, 3))
    a = _hand_attention(method, maps)
    assert _approx(attention, a, rel=1e-4)
    losses, logits = method.training_step(_images(), torch.tensor(Y))
    targets = [[[sum(a[b][j][l] * Z[l][b][c] for l in range(3)) for c in range(C)] for b in range(2)]
               for j in range(3)]
    zl = leader.tolist()
    mean = [_mean([Z[j][b] for j in range(3)]) for b in range(2)]
    assert losses["ce"].item() == pytest.approx(sum(_batch(_ce, zk, Y) for zk in Z) + _batch(_ce, zl, Y), rel=1e-5)
    assert losses["kd_peers"].item() == pytest.approx(sum(_batch(_kd, Z[j], targets[j]) for j in range(3)),
                                                      rel=1e-4)
    assert losses["kd_leader"].item() == pytest.approx(_batch(_kd, zl, mean), rel=1e-5)
    # peers' logits inside the targets are fixed: d kd_peers / d z_j is peer j's own student-side term only
    grads = _grad(losses["kd_peers"], leaves)
    for j in range(3):
        assert _approx(grads[j], [_kd_grad(Z[j][b], targets[j][b], 2) for b in range(2)], rel=1e-4), j
    *peer_grads, leader_grad = _grad(losses["kd_leader"], leaves + [leader])
    assert all(g is None for g in peer_grads)
    assert _approx(leader_grad, [_kd_grad(zl[b], mean[b], 2) for b in range(2)])
    assert set(logits) == {"peer1", "peer2", "peer3", "leader"}
    assert set(method.loss_weights()) == {"kd_peers", "kd_leader"}


def test_okddip_attention_learns_through_kd_only_and_switches():
    x, y = _images(batch=4), torch.tensor([0, 1, 2, 3])
    method = _build("okddip")
    method.train()
    losses, _ = method.training_step(x, y)
    wq, wk = method.attention.query.weight, method.attention.key.weight
    grad_q, grad_k = _grad(losses["kd_peers"], [wq, wk])
    assert grad_q is not None and grad_q.abs().sum() > 0 and grad_k.abs().sum() > 0
    assert _grad(losses["ce"], [wq])[0] is None
    assert method.projection_dim == max(1, method.net.feature_dim // 8)
    frozen = _build("okddip", attention_grad=False)
    losses, _ = frozen.training_step(x, y)
    assert _grad(losses["kd_peers"], [frozen.attention.query.weight])[0] is None
    # detach_targets=False (the OKDDip code): the targets' logits now carry gradient, so the grads change
    m1, _, leaves1, _ = _okddip_forced()
    m2, _, leaves2, _ = _okddip_forced(detach_targets=False)
    g1 = _grad(m1.training_step(_images(), torch.tensor(Y))[0]["kd_peers"], leaves1)
    g2 = _grad(m2.training_step(_images(), torch.tensor(Y))[0]["kd_peers"], leaves2)
    assert not torch.allclose(g1[0], g2[0])


# ---- KDCL --------------------------------------------------------------------------------------------------------
def test_kdcl_min_logit_target_by_hand():
    target = min_logit_target([torch.tensor(zk) for zk in Z], torch.tensor(Y))
    expected = [[min(Z[k][b][c] - Z[k][b][Y[b]] for k in range(3)) for c in range(C)] for b in range(2)]
    assert _approx(target, expected)
    assert all(target[b, Y[b]].item() == 0.0 for b in range(2))


@pytest.mark.parametrize("ensemble", ["naive", "min_logit"])
def test_kdcl_loss_by_hand_each_network_on_its_own_view(ensemble):
    method = _build("kdcl", ensemble=ensemble)
    assert method.num_views == 3
    leaves = [_leaf(zk) for zk in Z]
    seen = []
    for net, leaf in zip(method.nets, leaves):
        net.head.classifier = Const(leaf)
        net.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    views = _images(views=3)
    losses, _ = method.training_step(views, torch.tensor(Y))
    assert all(s is v for s, v in zip(seen, views)) and len(seen) == 3
    if ensemble == "naive":
        target = [_mean([Z[k][b] for k in range(3)]) for b in range(2)]
    else:
        target = [[min(Z[k][b][c] - Z[k][b][Y[b]] for k in range(3)) for c in range(C)] for b in range(2)]
    assert losses["ce"].item() == pytest.approx(sum(_batch(_ce, zk, Y) for zk in Z), rel=1e-5)
    assert losses["kd"].item() == pytest.approx(sum(_batch(_kd, zk, target) for zk in Z), rel=1e-5)
    grads = _grad(losses["kd"], leaves)
    for k in range(3):
        assert _approx(grads[k], [_kd_grad(Z[k][b], target[b], 2) for b in range(2)]), k
    method.on_epoch_start(0)
    assert method.loss_weights()["kd"].item() == 1.0  # no ramp-up by default


# ---- two-stage KD ------------------------------------------------------------------------------------------------
def test_kd_loss_by_hand_and_teacher_frozen(teacher_file):
    method = _build("kd", teacher_file, teacher_path=str(teacher_file), kd_weight=0.5)
    teacher_params = list(method.teacher.parameters())
    assert all(not p.requires_grad for p in teacher_params)
    trainable = {id(p) for p in method.trainable_parameters()}
    assert not any(id(p) in trainable for p in teacher_params)
    counts = method.parameter_counts()
    n_student = sum(p.numel() for p in method.student.parameters())
    assert counts["params_train"] == n_student and counts["params_teacher"] == n_student
    method.train()
    assert method.student.training and not method.teacher.training
    running = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    losses, logits = method.training_step(_images(batch=4), torch.tensor([0, 1, 2, 3]))
    sum(method.loss_weights().get(k, 1.0) * v for k, v in losses.items()).backward()
    assert all(p.grad is None for p in teacher_params)
    assert all(torch.equal(v, method.teacher.state_dict()[k]) for k, v in running.items())  # BN stats untouched
    assert method.loss_weights()["kd"].item() == 0.5
    # the loss on forced logits
    zs, zt = [[1.0, 0.0, -1.0, 0.5], [0.0, 0.0, 1.0, 0.0]], [[2.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 3.0]]
    student = _leaf(zs)
    method.student.head.classifier = Const(student)
    method.teacher.head.classifier = Const(torch.tensor(zt))
    losses, _ = method.training_step(_images(), torch.tensor(Y))
    assert losses["ce"].item() == pytest.approx(_batch(_ce, zs, Y), rel=1e-5)
    assert losses["kd"].item() == pytest.approx(_batch(_kd, zs, zt), rel=1e-5)
    assert _approx(_grad(losses["kd"], [student])[0], [_kd_grad(zs[b], zt[b], 2) for b in range(2)])


def test_kd_teacher_predictions_are_the_saved_model(teacher_file):
    method = _build("kd", teacher_file, teacher_path=str(teacher_file))
    method.eval()
    plain = build_backbone("tiny_resnet8", C)
    plain.load_state_dict(torch.load(teacher_file, weights_only=True)["state_dict"])
    plain.eval()
    x = _images(batch=3)[0]
    assert torch.equal(method.eval_heads(x)["teacher"], plain(x))


def test_kd_bad_teacher_fails_at_construction(teacher_file, tmp_path):
    with pytest.raises(ValueError, match="teacher_path"):
        build_method("kd", "tiny_resnet8", C)
    missing = tmp_path / "nowhere" / "deployed.pt"
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        build_method("kd", "tiny_resnet8", C, teacher_path=str(missing))
    with pytest.raises(ValueError, match=r"num_classes=4, the student 10"):
        build_method("kd", "tiny_resnet8", 10, teacher_path=str(teacher_file))
    with pytest.raises(ValueError, match=r"teacher_backbone'='resnet32'.*'tiny_resnet8'"):
        build_method("kd", "tiny_resnet8", C, teacher_path=str(teacher_file), teacher_backbone="resnet32")
    with pytest.raises(ValueError, match="kd_weight"):
        build_method("kd", "tiny_resnet8", C, teacher_path=str(teacher_file), kd_weight=0)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        build_method("kd", "tiny_resnet8", C, teacher_path=str(garbage))
    not_deployed = tmp_path / "other.pt"
    torch.save({"epoch": 3}, not_deployed)
    with pytest.raises(ValueError, match="not a deployed-model file"):
        build_method("kd", "tiny_resnet8", C, teacher_path=str(not_deployed))
    # a matching teacher_backbone, and a teacher written from another method's export, are fine
    build_method("kd", "tiny_resnet8", C, teacher_path=str(teacher_file), teacher_backbone="tiny_resnet8")
    from_dml = tmp_path / "dml.pt"
    save_deployed(build_method("dml", "tiny_resnet8", C, peers=2), from_dml)
    assert build_method("kd", "tiny_resnet8", C, teacher_path=str(from_dml)).teacher_info["method"] == "dml"


# ---- every method ------------------------------------------------------------------------------------------------
def test_every_declared_method_has_its_class():
    assert list(METHODS) == EVERY_METHOD
    for name in EVERY_METHOD:
        assert METHODS[name].name == name and METHODS[name].declaration == registry.method(name)


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_export_loads_into_plain_backbone_with_identical_predictions(name, teacher_file):
    method = _build(name, teacher_file)
    method.train()
    with torch.no_grad():  # move the BN running statistics away from their init
        method.training_step(_images(batch=8, seed=3, views=method.num_views), torch.tensor([0, 1, 2, 3] * 2))
    method.eval()
    x = _images(batch=5, seed=9)[0]
    deployed = method.eval_heads(x)[method.deployed_head]
    plain = build_backbone("tiny_resnet8", C)
    plain.load_state_dict(method.export_deployed().state_dict())
    plain.eval()
    assert torch.equal(plain(x), deployed)
    assert method.parameter_counts()["params_deployed"] == sum(p.numel() for p in plain.parameters())


# Methods with peers (declared option `peers`), and every declared option with a value its declaration refuses.
MULTI_PEER = tuple(name for name, spec in registry.methods().items() if "peers" in spec.defaults)


def _refused(option):
    """Values the declared checks of `option` refuse: one past each declared bound, a choice it does not have, a
    string for a bool (none when every value of its kind is allowed)."""
    if option.choices:
        return ["no-such-choice"]
    if option.kind == "bool":
        return ["False"]  # a string, not a bool
    values = []
    if option.kind in ("int", "float") and option.minimum is not None:
        values.append(option.minimum if option.exclusive_minimum else option.minimum - 1)
    if option.kind in ("int", "float") and option.maximum is not None:
        values.append(option.maximum + 1)
    return values


BAD_OPTIONS = [(name, o.name, value) for name, spec in registry.methods().items() for o in spec.options
               for value in _refused(o)]


@pytest.mark.parametrize("name", MULTI_PEER)
@pytest.mark.parametrize("peers", [2, 4])
def test_peers_option_sets_the_number_of_heads(name, peers, teacher_file):
    method = _build(name, teacher_file, peers=peers)
    method.eval()
    heads = method.eval_heads(_images(batch=2)[0])
    assert len(method.peer_heads) == peers and set(method.peer_heads) <= set(heads)
    if name == "okddip":
        assert method.net.num_branches == peers + 1 and "leader" in heads
    losses, logits = _build(name, teacher_file, peers=peers).training_step(
        _images(batch=4, views=method.num_views), torch.tensor([0, 1, 2, 3]))
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("name", MULTI_PEER)
@pytest.mark.parametrize("peers", [1, 0, True, 2.5])
def test_too_few_or_non_integer_peers_fail_clearly(name, peers):
    with pytest.raises(ValueError, match="peers"):
        _build(name, peers=peers)


@pytest.mark.parametrize("name,option,value", BAD_OPTIONS)
def test_bad_option_values_fail_naming_option_and_allowed(name, option, value, teacher_file):
    with pytest.raises(ValueError) as info:
        _build(name, teacher_file, **{option: value})
    assert option in str(info.value) and registry.method(name).option(option).allowed in str(info.value)


def test_unknown_option_fails_listing_allowed():
    with pytest.raises(ValueError, match=r"no option\(s\) bogus; allowed: .*peers.*temperature"):
        build_method("dml", "tiny_resnet8", C, bogus=1)


RAMPED = [name for name, spec in registry.methods().items() if "rampup_length" in spec.defaults]


@pytest.mark.parametrize("name", RAMPED)
def test_rampup_defaults_and_weights_of_the_distillation_terms(name, teacher_file):
    length = registry.method(name).defaults["rampup_length"]
    method = _build(name, teacher_file)
    losses, _ = method.training_step(_images(batch=4, views=method.num_views), torch.tensor([0, 1, 2, 3]))
    weights = method.loss_weights()
    assert weights and set(weights) <= set(losses)  # only terms the step computes; CE terms keep weight 1
    for epoch in (0, 40, 80):
        method.on_epoch_start(epoch)
        for w in method.loss_weights().values():
            assert w.item() == pytest.approx(rampup(epoch, length))
        assert method.scalars()["rampup_weight"].item() == pytest.approx(rampup(epoch, length))


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_step_makes_no_host_sync(name, teacher_file, forbid_host_sync):
    method = _build(name, teacher_file)
    optimizer = make_optimizer(method, Recipe())
    views = _images(batch=4, views=method.num_views)
    targets = torch.tensor([0, 1, 2, 3])
    with forbid_host_sync():
        total, _, _ = train_step(method, optimizer, views, targets)
    assert torch.isfinite(total)




def test_dropout_is_a_run_argument_not_a_method_option():
    assert set(registry.methods()) == set(METHODS)
    for name in METHODS:
        assert "dropout" not in method_defaults(name), name


@pytest.mark.parametrize("name", list(registry.methods()))
def test_dropout_reaches_every_network_and_is_active_in_train_mode(name, teacher_file):
    """vgg16 with dropout=0.3: every classifier of every network/branch (PCL: live and temporal-mean peers) has
    p = 0.3; in train mode two passes over the same batch differ in every peer and the deployed head."""
    options = {"peers": 2} if name in MULTI_PEER else {}
    # the files a method reads, of a tiny_resnet8 (kd's teacher: no dropout of its own)
    options.update(METHODS[name].example_inputs(teacher_file.parent, "tiny_resnet8", C))
    torch.manual_seed(0)
    method = build_method(name, "vgg16", C, dropout=0.3, **options)
    frozen = {id(m) for m in getattr(method, "teacher", nn.Module()).modules()}
    heads = [m for m in method.modules() if isinstance(m, Head) and id(m) not in frozen]
    assert len(heads) >= max(1, options.get("peers", 1))  # one classifier per network / branch
    for head in heads:  # VGG-16's classifier has two dropout layers: both at the run's p
        assert [m.p for m in head.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert sum(isinstance(m, nn.Dropout) for m in method.modules()) == 2 * len(heads)
    assert {m.p for m in method.export_deployed().modules() if isinstance(m, nn.Dropout)} == {0.3}
    x = _images(batch=2)[0]
    with torch.no_grad():
        method.train()
        first, second = method.eval_heads(x), method.eval_heads(x)
        for head in (*method.peer_heads, method.deployed_head):
            assert not torch.equal(first[head], second[head]), head
        method.eval()
        first, second = method.eval_heads(x), method.eval_heads(x)
        assert all(torch.equal(first[h], second[h]) for h in first)


def test_dropout_default_and_refusal_through_build_method(teacher_file):
    method = build_method("one", "vgg16", C, peers=2)  # None: the zoo's 0.5
    assert {m.p for m in method.modules() if isinstance(m, nn.Dropout)} == {0.5}
    for name in METHODS:
        options = METHODS[name].example_inputs(teacher_file.parent, "tiny_resnet8", C)
        with pytest.raises(ValueError, match=r"dropout=0\.5 cannot be used with backbone 'tiny_resnet8'"):
            build_method(name, "tiny_resnet8", C, dropout=0.5, **options)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_peer_heads_and_parameter_counts_of_every_head(name, teacher_file):
    """peer_heads are heads of eval_heads (none for single-network methods); every head has a deployment count;
    the deployed head's is params_deployed and each is recorded as params_deployed/<head>."""
    method = _build(name, teacher_file)
    method.eval()
    heads = method.eval_heads(_images(batch=2)[0])
    peers = method.peer_heads
    assert set(peers) <= set(heads)
    assert len(peers) == (3 if name in MULTI_PEER else 0)
    counts = method.head_parameter_counts()
    assert set(counts) == set(heads)
    totals = method.parameter_counts()
    assert counts[method.deployed_head] == totals["params_deployed"]
    assert all(totals[f"params_deployed/{h}"] == n for h, n in counts.items())
    plain = sum(p.numel() for p in build_backbone("tiny_resnet8", C).parameters())
    for head in peers:
        assert counts[head] == plain  # a peer alone is the plain backbone


@pytest.mark.parametrize("name", list(registry.methods()))
def test_the_declaration_describes_the_built_method(name, teacher_file):
    """Every head the method evaluates is declared with its role; the peers are the declared peer heads; a temporal
    mean's declared source is a head too; the deployed head and the views are the declared ones (default options)."""
    spec = registry.method(name)
    method = _build(name, teacher_file)
    method.eval()
    heads = method.eval_heads(_images(batch=2)[0])
    for head in heads:
        assert spec.head(head) is not None, f"{name}: head {head!r} is not declared"
        assert method.trained_head_of(head) in heads
    assert set(method.peer_heads) == {h for h in heads if spec.head(h).role == "peer"}
    assert method.deployed_head == spec.deployed and method.name == name and method.distills == spec.distills
    views = spec.views if isinstance(spec.views, int) else spec.defaults[spec.views]
    assert method.num_views == views
    assert set(inspect.signature(type(method).__init__).parameters) == {"self", "backbone", "num_classes",
                                                                      "dropout", *spec.defaults}


def test_pcl_e_candidates_parameter_counts():
    """ensemble (the peer ensemble teacher) = pcl_e (mean of the temporal-mean peers) + its Linear(m*d, C)."""
    method = _build("pcl")
    counts = method.head_parameter_counts()
    d = method.net.feature_dim
    assert counts["ensemble"] - counts["pcl_e"] == 3 * d * C + C
    shared = sum(p.numel() for p in method.net.shared.parameters())
    branch = sum(p.numel() for p in method.net.branches[0].parameters())
    assert counts["pcl_e"] == shared + 3 * branch
    assert "ensemble" not in _build("pcl", ensemble_teacher=False).head_parameter_counts()
    assert _build("pcl", ensemble_form="logit_average").head_parameter_counts()["ensemble"] == counts["pcl_e"]


# ---- docs/methods.md ---------------------------------------------------------------------------------------------
def test_methods_doc_is_the_table_the_code_generates():
    from pcl.methods.table import markdown

    text = markdown()
    for name in METHODS:
        assert f"| {name} |" in text
    # resnet32's reference parameter count (tests/test_models.py)
    assert "| baseline | one resnet32, CE only | the network | 472,756 | 472,756 |" in text
    # the options where the reference codes disagree, with the defaults the code has
    for row in ("| dml | `target` | `'pairwise'` | `'mean_others'` |", "| cl_ilr | `detach_target` | `True` | `False` |",
                "| ffl | `peers` | `3` | `2` |", "| ffl | `fusion_weight_decay` | `None` | `1e-05` |"):
        assert row in text, row
    assert "`ensemble` 1,212,384" in text and "`pcl_e` 1,193,084" in text and "0.019M" in text  # 192*100 + 100
