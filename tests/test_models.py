"""Tests of pcl.models: backbone sizes (the zoo's parameter counts), split points and the multi-branch network."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision import models as tv_models

from pcl import registry
from pcl.models import (
    BACKBONES,
    CIFAR_BACKBONES,
    DEFAULT_DROPOUT,
    IMAGENET_BACKBONES,
    Backbone,
    Head,
    MultiBranchNet,
    build_backbone,
    count_parameters,
)

# Reference parameter counts (sum of p.numel()) of one plain network of the OKDDip/ONE zoo, for 10 and 100 classes.
EXPECTED_PARAMS: dict[str, dict[int, int]] = {
    "resnet32": {10: 466_906, 100: 472_756},
    "resnet110": {10: 1_147_738, 100: 1_170_868},
    "wrn20_8": {10: 6_848_090, 100: 6_871_220},
    "vgg16": {10: 15_253_578, 100: 15_299_748},
    "densenet40_12": {10: 176_122, 100: 188_092},
}
# Width of the pooled feature each head produces (also fixes the FC size: feature_dim * C + C).
FEATURE_DIM = {
    "resnet32": 64,
    "resnet110": 256,
    "wrn20_8": 256,
    "vgg16": 512,
    "densenet40_12": 132,
    "resnet18": 512,
    "resnet34": 512,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _first_bn(module: nn.Module) -> nn.BatchNorm2d:
    return next(mod for mod in module.modules() if isinstance(mod, nn.BatchNorm2d))


def _distinct_views(m: int, batch: int = 4) -> list[torch.Tensor]:
    """Views with clearly different distributions, so per-view and pooled BN statistics differ."""
    return [torch.randn(batch, 3, 32, 32) * (1.0 + j) + 2.0 * j for j in range(m)]


# --- backbones -----------------------------------------------------------------------------------------------


def test_every_declared_backbone_is_built_by_its_file() -> None:
    assert list(BACKBONES) == list(registry.backbones())
    assert set(CIFAR_BACKBONES) <= set(BACKBONES) and set(IMAGENET_BACKBONES) <= set(BACKBONES)
    assert set(EXPECTED_PARAMS) <= set(CIFAR_BACKBONES)  # the zoo's networks are the rows of the CIFAR table


@pytest.mark.parametrize("name", list(registry.backbones()))
def test_declared_parameter_counts_are_what_a_build_has(name: str) -> None:
    spec = registry.backbone(name)
    assert spec.params, f"{name} declares no parameter count"
    for num_classes, count in spec.params.items():
        assert count_parameters(build_backbone(name, num_classes)) == count, (name, num_classes)
    assert spec.name in DEFAULT_DROPOUT or spec.dropout is None


@pytest.mark.parametrize("name", list(registry.backbones()))
def test_every_declared_backbone_runs_forward_and_splits_into_shared_layers_and_a_branch(name: str) -> None:
    """Any backbone added later is covered: logits of the right shape from the whole network and from its shared
    part + head (the split the multi-branch methods use), a multi-branch network of it with two peers."""
    spec = registry.backbone(name)
    num_classes = min(spec.params)
    size = 64 if "imagenet" in spec.datasets and len(spec.datasets) == 1 else 32
    net = build_backbone(name, num_classes).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = net(x)
        assert logits.shape == (2, num_classes)
        feature, split_logits = net.head(net.shared(x))  # Head: (pooled feature, logits)
        assert torch.allclose(split_logits, logits) and feature.shape == (2, net.head.feature_dim)
        outputs = MultiBranchNet(name, num_classes, 2).eval().forward_views([x])
    assert len(outputs) == 2 and all(z.shape == (2, num_classes) for _, z in outputs)


def test_declared_counts_of_the_zoo_are_its_reference_counts() -> None:
    for name, counts in EXPECTED_PARAMS.items():
        assert registry.backbone(name).params == counts, name


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_cifar_parameter_count_matches_spec(name: str, num_classes: int) -> None:
    net = build_backbone(name, num_classes)
    assert isinstance(net, Backbone) and isinstance(net.head, Head)
    assert net.name == name and net.num_classes == num_classes
    assert net.head.feature_dim == FEATURE_DIM[name]
    assert count_parameters(net) == EXPECTED_PARAMS[name][num_classes]


@pytest.mark.parametrize("num_classes", [1000, 10])
@pytest.mark.parametrize("name", IMAGENET_BACKBONES)
def test_imagenet_parameter_count_matches_torchvision(name: str, num_classes: int) -> None:
    reference = getattr(tv_models, name)(weights=None, num_classes=num_classes)
    net = build_backbone(name, num_classes)
    assert count_parameters(net) == count_parameters(reference)
    assert net.head.feature_dim == 512


@pytest.mark.parametrize("name", ["resnet32", "densenet40_12", "vgg16"])
def test_cifar_output_shape(name: str) -> None:
    net = build_backbone(name, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
        feature, head_logits = net.head(net.shared(x))
    assert logits.shape == (2, 10)
    assert feature.shape == (2, FEATURE_DIM[name])
    torch.testing.assert_close(head_logits, logits)


def test_resnet18_output_shape_and_split() -> None:
    net = build_backbone("resnet18", 7).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert net(x).shape == (1, 7)
        assert net.shared(x).shape == (1, 256, 4, 4)  # stem + layer1-3: stride 16, 256 channels
    assert [n for n, _ in net.shared.named_children()] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"
    ]


def test_resnet18_matches_torchvision_forward() -> None:
    """Same modules as torchvision's: torchvision's weights, mapped by module name, give the same logits."""
    reference = tv_models.resnet18(weights=None, num_classes=5).eval()
    net = build_backbone("resnet18", 5).eval()
    ref_sd = reference.state_dict()
    mapped = {}
    for key in net.state_dict():
        if key.startswith("shared."):
            mapped[key] = ref_sd[key.removeprefix("shared.")]
        elif key.startswith("head.body."):
            mapped[key] = ref_sd["layer4." + key.removeprefix("head.body.")]
        else:
            mapped[key] = ref_sd["fc." + key.removeprefix("head.classifier.")]
    net.load_state_dict(mapped)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x))


def test_state_dict_key_prefixes() -> None:
    keys = list(build_backbone("resnet32", 10).state_dict())
    assert all(k.startswith(("shared.", "head.body.", "head.classifier.")) for k in keys)
    assert any(k.startswith("head.body.") for k in keys)
    assert any(k.startswith("head.classifier.") for k in keys)


def test_split_points() -> None:
    """The split at the last stage (README, "What is the paper's and what is ours"): what the shared layers output
    (channels, resolution) for the CIFAR backbones."""
    x = torch.randn(2, 3, 32, 32)
    expected = {"resnet32": (32, 16), "densenet40_12": (60, 8), "vgg16": (512, 2)}
    with torch.no_grad():
        for name, (channels, size) in expected.items():
            out = build_backbone(name, 10).eval().shared(x)
            assert out.shape == (2, channels, size, size), name
    # Checked structurally only (no forward on the big nets): shared = stem + stages 1-2, body = stage 3.
    for name in ("resnet110", "wrn20_8"):
        net = build_backbone(name, 10)
        assert [n for n, _ in net.shared.named_children()] == ["stem", "layer1", "layer2"]
        assert net.head.body[0].conv3.out_channels == 256
        assert net.head.body[0].conv2.stride == (2, 2)
    assert build_backbone("wrn20_8", 10).head.body[0].conv2.out_channels == 512  # width 64 * 8


def test_unknown_backbone_message_lists_names() -> None:
    with pytest.raises(ValueError) as info:
        build_backbone("resnet1234", 10)
    message = str(info.value)
    assert "resnet1234" in message
    for name in BACKBONES:
        assert name in message


@pytest.mark.parametrize("num_classes", [1, 0, -3])
def test_bad_num_classes(num_classes: int) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_backbone("resnet32", num_classes)


# --- initialisation and dropout as the OKDDip/ONE model zoo builds them ----------------------------------------
# The zoo's rule per backbone (models/model_cifar/{resnet,vgg,densenet}.py of the OKDDip code): how convolutions are
# scaled (kaiming normal for ReLU, std sqrt(2 / fan)), and how the Linear layers are drawn.
ZOO_INIT = {
    "resnet32": {"conv_fan": "fan_out", "linear_std": None, "linear_bias_zero": False},
    "vgg16": {"conv_fan": "fan_out", "linear_std": 0.01, "linear_bias_zero": True},
    "densenet40_12": {"conv_fan": "fan_in", "linear_std": None, "linear_bias_zero": True},
}


def _fan(weight: torch.Tensor, mode: str) -> int:
    """PyTorch's fans of a weight [out, in/groups, *kernel] (or [out, in]): fan_in = in * k*k, fan_out = out * k*k."""
    receptive = weight[0][0].numel()
    return (weight.shape[1] if mode == "fan_in" else weight.shape[0]) * receptive


@pytest.mark.parametrize("name", sorted(ZOO_INIT))
def test_init_statistics_follow_the_zoo_rule_per_layer_type(name: str) -> None:
    """Convs: std sqrt(2/fan) with the zoo's fan, zero bias; BN 1/0; Linear: N(0, 0.01) (VGG) or PyTorch's default
    (std 1/sqrt(3 fan_in)), zero bias where the zoo zeroes it. Before the fix: VGG Linear std 0.026 with non-zero
    biases; DenseNet convs scaled by fan_out."""
    rule = ZOO_INIT[name]
    net = build_backbone(name, 100)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    scaled = torch.cat([(c.weight / (2.0 / _fan(c.weight, rule["conv_fan"])) ** 0.5).flatten() for c in convs])
    assert scaled.std().item() == pytest.approx(1.0, abs=0.03)  # all conv weights, each in units of its rule
    for c in convs:
        expected = (2.0 / _fan(c.weight, rule["conv_fan"])) ** 0.5
        if c.weight.numel() >= 2000:
            assert c.weight.std().item() == pytest.approx(expected, rel=0.12), c
        assert c.bias is None or torch.count_nonzero(c.bias) == 0
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert linears
    for lin in linears:
        std = rule["linear_std"] or (1.0 / (3.0 * lin.in_features)) ** 0.5
        assert lin.weight.std().item() == pytest.approx(std, rel=0.06), lin
        assert abs(lin.weight.mean().item()) < 0.1 * std
        assert (torch.count_nonzero(lin.bias) == 0) == rule["linear_bias_zero"], lin


def test_vgg16_dropout_defaults_to_the_zoo_and_is_settable() -> None:
    assert DEFAULT_DROPOUT["vgg16"] == 0.5
    default = build_backbone("vgg16", 10)
    assert [m.p for m in default.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    set_03 = build_backbone("vgg16", 10, dropout=0.3)
    assert [m.p for m in set_03.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    # dropout has no parameters and the layers are always there: same keys (and count) for any p
    off = build_backbone("vgg16", 10, dropout=0.0)
    assert list(off.state_dict()) == list(default.state_dict())
    assert count_parameters(off) == EXPECTED_PARAMS["vgg16"][10]


def test_dropout_is_active_in_train_mode_only() -> None:
    """Same batch twice: train mode differs (BN in train mode is deterministic, so only dropout can), eval equal."""
    x = torch.randn(4, 3, 32, 32)
    net = build_backbone("vgg16", 10, dropout=0.5)
    with torch.no_grad():
        net.train()
        assert not torch.equal(net(x), net(x))
        net.eval()
        assert torch.equal(net(x), net(x))
        no_dropout = build_backbone("vgg16", 10, dropout=0.0).train()
        assert torch.equal(no_dropout(x), no_dropout(x))


@pytest.mark.parametrize("name", [n for n, spec in registry.backbones().items() if spec.dropout is None])
@pytest.mark.parametrize("value", [0.5, 0.0])
def test_backbone_without_dropout_refuses_a_value(name: str, value: float) -> None:
    num_classes = min(registry.backbone(name).params)
    with pytest.raises(ValueError) as info:
        build_backbone(name, num_classes, dropout=value)
    message = str(info.value)
    assert f"dropout={value!r}" in message and name in message and "vgg16" in message
    build_backbone(name, num_classes, dropout=None)  # None: the zoo's default, i.e. no dropout layer


@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "pcl"])
@pytest.mark.parametrize("name", list(registry.backbones()))
def test_every_declared_backbone_trains_a_step_of_the_baseline_and_of_pcl(name: str, method: str) -> None:
    """A backbone added later trains under the methods, not only forward: one step of the baseline and of PCL
    (shared layers, m = 2 branches, temporal means) at the backbone's input size gives a finite loss, a gradient in
    every trainable parameter, and a deployed network that predicts as the deployed head does."""
    from pcl.methods import build_method

    spec = registry.backbone(name)
    num_classes = min(spec.params)
    size = 64 if "imagenet" in spec.datasets and len(spec.datasets) == 1 else 32
    torch.manual_seed(0)
    model = build_method(method, name, num_classes, **({"peers": 2} if method == "pcl" else {}))
    views = [torch.randn(2, 3, size, size) for _ in range(model.num_views)]
    losses, _ = model.training_step(views, torch.tensor([0, num_classes - 1]))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for _, p in trained), [n for n, p in trained if p.grad is None]
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(model.export_deployed().eval()(x), model.eval_heads(x)[model.deployed_head], atol=1e-5)


@pytest.mark.parametrize("value", [1.0, -0.1, True, "0.5"])
def test_bad_dropout_value_fails_naming_key_and_range(value: object) -> None:
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)") as info:
        build_backbone("vgg16", 10, dropout=value)
    assert repr(value) in str(info.value)


def test_multibranch_dropout_reaches_every_branch_and_the_export() -> None:
    net = MultiBranchNet("vgg16", 10, 3, dropout=0.2)
    for branch in net.branches:
        assert [m.p for m in branch.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    assert [m.p for m in net.export_branch(2).modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    default = MultiBranchNet("vgg16", 10, 2)
    assert {m.p for m in default.modules() if isinstance(m, nn.Dropout)} == {0.5}
    with pytest.raises(ValueError, match="dropout"):
        MultiBranchNet("resnet32", 10, 2, dropout=0.5)


# --- MultiBranchNet ------------------------------------------------------------------------------------------


def test_branches_initialised_differently() -> None:
    net = MultiBranchNet("resnet32", 10, 3)
    assert net.num_branches == 3 and len(net.branches) == 3
    assert net.feature_dim == 64 and net.backbone_name == "resnet32" and net.num_classes == 10
    convs = [next(iter(b.parameters())) for b in net.branches]
    fcs = [b.classifier.weight for b in net.branches]
    for i in range(3):
        for j in range(i + 1, 3):
            assert convs[i].data_ptr() != convs[j].data_ptr()
            assert not torch.equal(convs[i], convs[j])
            assert not torch.equal(fcs[i], fcs[j])


@pytest.mark.parametrize("name,m", [("resnet32", 3), ("densenet40_12", 4), ("vgg16", 2)])
def test_shared_parameters_counted_once(name: str, m: int) -> None:
    net = MultiBranchNet(name, 100, m)
    plain = build_backbone(name, 100)
    assert count_parameters(net) == count_parameters(plain) + (m - 1) * count_parameters(plain.head)
    assert count_parameters(net.shared) == count_parameters(plain.shared)


def test_forward_views_per_view_batchnorm() -> None:
    """m views: shared layers run on each view alone (own BN batch statistics), branch j on view j."""
    m = 3
    net = MultiBranchNet("resnet32", 10, m).train()
    manual = copy.deepcopy(net)
    views = _distinct_views(m)
    outputs = net.forward_views(views)
    assert len(outputs) == m
    for j, view in enumerate(views):  # reference: each view alone through shared, in view order
        feature, logits = manual.branches[j](manual.shared(view))
        assert outputs[j][0].shape == (4, 64) and outputs[j][1].shape == (4, 10)
        torch.testing.assert_close(outputs[j][0], feature)
        torch.testing.assert_close(outputs[j][1], logits)
    # Shared BN running statistics equal those of m separate passes, one update per view.
    for (name, buf), (_, ref) in zip(net.shared.named_buffers(), manual.shared.named_buffers()):
        torch.testing.assert_close(buf, ref, msg=name)
    assert _first_bn(net.shared).num_batches_tracked.item() == m


def test_forward_views_is_not_pooled_batchnorm() -> None:
    """Per-view BN differs from running the shared layers once on the concatenated views."""
    m = 2
    net = MultiBranchNet("resnet32", 10, m).train()
    views = _distinct_views(m)
    with torch.no_grad():
        per_view = net.forward_views(views)
        joint_logits = net.branches[1](net.shared(torch.cat(views))[4:])[1]
    assert not torch.allclose(per_view[1][1], joint_logits, atol=1e-3)


def test_forward_views_single_view_broadcasts() -> None:
    net = MultiBranchNet("resnet32", 10, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = net.forward_views([x])
        shared = net.shared_features(x)
        assert len(outputs) == 3
        for j, (feature, logits) in enumerate(outputs):
            ref_feature, ref_logits = net.branches[j](shared)
            torch.testing.assert_close(feature, ref_feature)
            torch.testing.assert_close(logits, ref_logits)
        # In eval mode, m copies of one view give what broadcasting it gives.
        for (_, l1), (_, l2) in zip(outputs, net.forward_views([x, x, x])):
            torch.testing.assert_close(l1, l2)
    assert not torch.allclose(outputs[0][1], outputs[1][1])  # independent branches


def test_forward_views_single_view_runs_shared_once() -> None:
    net = MultiBranchNet("resnet32", 10, 3).train()
    net.forward_views([torch.randn(2, 3, 32, 32)])
    assert _first_bn(net.shared).num_batches_tracked.item() == 1


@pytest.mark.parametrize("count", [0, 2, 4])
def test_forward_views_wrong_count_raises(count: int) -> None:
    net = MultiBranchNet("resnet32", 10, 3)
    with pytest.raises(ValueError, match="views"):
        net.forward_views([torch.randn(2, 3, 32, 32)] * count)


@pytest.mark.parametrize("name", ["resnet32", "densenet40_12"])
def test_export_branch_matches_branch(name: str) -> None:
    m = 3
    net = MultiBranchNet(name, 10, m).train()
    with torch.no_grad():  # make BN running stats non-trivial, so the export must carry buffers over
        for _ in range(2):
            net.forward_views(_distinct_views(m))
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = net.forward_views([x])
        for j in range(m):
            exported = net.export_branch(j)
            assert isinstance(exported, Backbone)
            assert exported.name == name and exported.num_classes == 10 and not exported.training
            assert count_parameters(exported) == EXPECTED_PARAMS[name][10]
            torch.testing.assert_close(exported(x), outputs[j][1], rtol=0, atol=0)
        # The export is an independent copy.
        exported = net.export_branch(0)
        next(exported.parameters()).add_(1.0)
    assert not torch.equal(next(exported.parameters()), next(net.shared.parameters()))


def test_export_branch_bad_index() -> None:
    net = MultiBranchNet("resnet32", 10, 2)
    for j in (-1, 2):
        with pytest.raises(ValueError):
            net.export_branch(j)


def test_single_branch() -> None:
    net = MultiBranchNet("resnet32", 10, 1)
    assert count_parameters(net) == EXPECTED_PARAMS["resnet32"][10]
    outputs = net.forward_views([torch.randn(2, 3, 32, 32)])
    assert len(outputs) == 1 and outputs[0][1].shape == (2, 10)
    assert net.export_branch().name == "resnet32"


@pytest.mark.parametrize("m", [0, -1])
def test_zero_branches_raises(m: int) -> None:
    with pytest.raises(ValueError, match="num_branches"):
        MultiBranchNet("resnet32", 10, m)


def test_multibranch_unknown_backbone_raises() -> None:
    with pytest.raises(ValueError, match="nope"):
        MultiBranchNet("nope", 10, 3)


def test_multibranch_imagenet_backbone() -> None:
    net = MultiBranchNet("resnet18", 10, 2).eval()
    with torch.no_grad():
        outputs = net.forward_views([torch.randn(1, 3, 64, 64)])
    assert [tuple(o[1].shape) for o in outputs] == [(1, 10), (1, 10)]
    assert net.feature_dim == 512


@pytest.mark.parametrize("name", ["resnet32", "densenet40_12"])
def test_backward_through_views(name: str) -> None:
    """Gradients reach the shared layers and every branch (no in-place op breaks autograd)."""
    m = 2
    net = MultiBranchNet(name, 10, m).train()
    loss = sum(logits.logsumexp(1).mean() for _, logits in net.forward_views(_distinct_views(m, batch=2)))
    loss.backward()
    assert all(p.grad is not None for p in net.shared.parameters())
    for branch in net.branches:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.classifier.parameters())


def test_tiny_backbone_is_small_and_split_like_resnet32() -> None:
    """The smoke/test backbone shares resnet32's code path, only narrower and shallower."""
    net = build_backbone("tiny_resnet8", 10)
    assert count_parameters(net) < 10_000
    assert list(dict(net.shared.named_children())) == ["stem", "layer1", "layer2"]
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
