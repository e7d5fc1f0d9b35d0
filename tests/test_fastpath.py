"""The fast path computes the eager step's function: the static-buffer step (what a CUDA graph captures) run
uncaptured on the CPU against pcl.step.train_step, every method, same seed, a few steps."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from pcl import fastpath
from pcl.engine import Recipe, make_optimizer, train
from pcl.seeding import seed_everything
from pcl.step import EpochAccumulator, train_step
from pcl.methods import METHODS, build_method

CLASSES = 4
STEPS = 3
TIME_KEYS = {"epoch_time_s", "images_per_s"}
# The methods' options that make every term live in 3 steps: a ramp-up epoch with w(e) > 0 is set below.
SMALL = {"peers": 2}


def _options(name, tmp_path):
    options = {k: v for k, v in SMALL.items() if k in _defaults(name)}
    seed_everything(1)  # the files a method reads (kd's teacher), as declared by the method
    return {**options, **METHODS[name].example_inputs(tmp_path, "tiny_resnet8", CLASSES)}


def _defaults(name):
    from pcl.methods import method_defaults

    return method_defaults(name)


def _pair(name, tmp_path, recipe=None, channels_last=False):
    """Two identical copies of a method with their optimisers, in train mode at an epoch with w(e) > 0."""
    seed_everything(0)
    a = build_method(name, "tiny_resnet8", CLASSES, **_options(name, tmp_path))
    if channels_last:
        fastpath.to_channels_last(a)
    b = copy.deepcopy(a)
    recipe = recipe or Recipe(epochs=4, lr=0.05)
    out = []
    for m in (a, b):
        m.on_epoch_start(40)
        m.train()
        out.append((m, make_optimizer(m, recipe)))
    return out


def _eager_steps(method, opt, loader, steps, precision="fp32"):
    loader.set_epoch(0)
    torch.manual_seed(123)  # the same global RNG state for both paths (dropout, where a backbone has it)
    acc = EpochAccumulator(torch.device("cpu"))
    for i, (views, targets) in enumerate(loader):
        if i == steps:
            break
        total, losses, logits = train_step(method, opt, views, targets, precision)
        acc.add(total, losses, logits, targets)
    return acc.read()


def _fast_steps(fast, loader, steps):
    loader.set_epoch(0)
    torch.manual_seed(123)
    acc = fast.begin_epoch(loader)
    for i, batch in enumerate(fast.batches(loader)):
        if i == steps:
            break
        fast.step(batch)
    return acc.read()


def _assert_same_state(a, opt_a, b, opt_b, **tol):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], msg=lambda m, k=k: f"{k}: {m}", **tol)
    params_a = [p for g in opt_a.param_groups for p in g["params"]]
    params_b = [p for g in opt_b.param_groups for p in g["params"]]
    assert len(params_a) == len(params_b)
    for pa, pb in zip(params_a, params_b):
        torch.testing.assert_close(opt_b.state[pb]["momentum_buffer"], opt_a.state[pa]["momentum_buffer"], **tol)


def _assert_same_metrics(ma, mb, rel=1e-6):
    assert ma[1] == mb[1] == -1
    assert ma[0].keys() == mb[0].keys() and any(k.startswith("train/top1_err/") for k in ma[0])
    for k in ma[0]:
        assert mb[0][k] == pytest.approx(ma[0][k], rel=rel, abs=1e-6), k


@pytest.mark.parametrize("name", sorted(METHODS))
def test_static_step_equals_eager_step_for_every_method(name, tmp_path, tiny_loaders):
    """3 steps of the static-buffer step (after 2 warm-up steps that must leave no trace) == 3 eager steps:
    weights, BN statistics, temporal means and their step counters, momentum buffers, loss and accuracy sums."""
    (a, opt_a), (b, opt_b) = _pair(name, tmp_path)
    train_loader = tiny_loaders(a.num_views, classes=CLASSES)[0]
    metrics_a = _eager_steps(a, opt_a, train_loader, STEPS)

    fast = fastpath.StaticStep(b, opt_b, train_loader, capture=False, warmup=2)
    assert fast.draws_mode
    train_loader.set_epoch(0)
    fast.begin_epoch(train_loader)
    before = copy.deepcopy(b.state_dict())
    fast.run_warmup()
    for k, v in b.state_dict().items():  # the warm-up (2 real steps) was undone in place
        assert torch.equal(v, before[k]), k
    metrics_b = _fast_steps(fast, train_loader, STEPS)
    _assert_same_state(a, opt_a, b, opt_b)
    _assert_same_metrics(metrics_a, metrics_b)
    assert int(fast.batch_index) == STEPS


def test_copy_in_mode_for_other_loaders_equals_eager(tmp_path, tiny_loaders):
    """A loader without on-device draws (e.g. ImageNet's) is copied into static view buffers: same function."""
    (a, opt_a), (b, opt_b) = _pair("pcl", tmp_path)
    train_loader = tiny_loaders(a.num_views, classes=CLASSES)[0]
    metrics_a = _eager_steps(a, opt_a, train_loader, STEPS)

    class PlainLoader:  # only the engine's Loader protocol
        def __init__(self, inner):
            self.inner = inner

        def set_epoch(self, e):
            self.inner.set_epoch(e)

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            return iter(self.inner)

    plain = PlainLoader(train_loader)
    fast = fastpath.StaticStep(b, opt_b, plain, capture=False)
    assert not fast.draws_mode
    metrics_b = _fast_steps(fast, plain, STEPS)
    _assert_same_state(a, opt_a, b, opt_b)
    _assert_same_metrics(metrics_a, metrics_b)


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_precisions_match_eager_of_the_same_precision(precision, tmp_path, tiny_loaders):
    (a, opt_a), (b, opt_b) = _pair("pcl", tmp_path, Recipe(epochs=4, lr=0.05, precision=precision))
    train_loader = tiny_loaders(a.num_views, classes=CLASSES)[0]
    metrics_a = _eager_steps(a, opt_a, train_loader, STEPS, precision)
    fast = fastpath.StaticStep(b, opt_b, train_loader, capture=False, precision=precision)
    metrics_b = _fast_steps(fast, train_loader, STEPS)
    _assert_same_state(a, opt_a, b, opt_b)
    _assert_same_metrics(metrics_a, metrics_b)


def test_channels_last_matches_eager_channels_last(tmp_path, tiny_loaders):
    """With channels_last weights, the fast step (channels_last views too) equals the eager step."""
    (a, opt_a), (b, opt_b) = _pair("pcl", tmp_path, channels_last=True)
    convs = [p for p in b.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    train_loader = tiny_loaders(a.num_views, classes=CLASSES)[0]
    with fastpath.memory_format_kernels("cpu", channels_last=True):  # as engine.train steps on the CPU
        metrics_a = _eager_steps(a, opt_a, train_loader, STEPS)
        fast = fastpath.StaticStep(b, opt_b, train_loader, capture=False, channels_last=True)
        metrics_b = _fast_steps(fast, train_loader, STEPS)
    _assert_same_state(a, opt_a, b, opt_b)
    _assert_same_metrics(metrics_a, metrics_b)


def test_a_channels_last_run_trains_on_the_cpu_and_leaves_the_kernels_as_they_were(tmp_path):
    """engine.train with channels_last on the CPU: oneDNN's AVX2 1x1-convolution backward crashed this very step
    (a PCL step of tiny_resnet8) on CPUs without AVX-512; the run uses PyTorch's kernels and restores the switch.
    In a child process, so that a crash is a failed test, not a lost test worker."""
    script = (
        "import torch\n"
        "from pcl.data import build_loaders\n"
        "from pcl.engine import Recipe, train\n"
        "from pcl.methods import build_method\n"
        "from pcl.seeding import seed_everything\n"
        "seed_everything(0)\n"
        "m = build_method('pcl', 'tiny_resnet8', 4, peers=2)\n"
        "tr, te = build_loaders('synthetic', batch_size=64, num_views=m.num_views, device='cpu', seed=0,\n"
        "                       synthetic_classes=4, synthetic_train_size=192, synthetic_test_size=64)[:2]\n"
        "result = train(m, tr, te, Recipe(epochs=1, lr=0.05), channels_last=True, epoch_log=None)\n"
        "assert torch.backends.mkldnn.enabled, 'the oneDNN switch was not restored'\n"
        "print('trained', len(result.history))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 1" in done.stdout


def test_memory_format_kernels_changes_only_a_channels_last_cpu_run():
    assert torch.backends.mkldnn.enabled
    with fastpath.memory_format_kernels("cpu", channels_last=True):
        assert not torch.backends.mkldnn.enabled
    with fastpath.memory_format_kernels("cpu", channels_last=False), \
            fastpath.memory_format_kernels("cuda", channels_last=True):
        assert torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled


def test_fast_step_never_reads_the_device(tmp_path, tiny_loaders, forbid_host_sync):
    """What a CUDA graph captures must not synchronise with the host (no .item(), bool(), .cpu())."""
    (_, _), (b, opt_b) = _pair("pcl", tmp_path)
    train_loader = tiny_loaders(b.num_views, classes=CLASSES)[0]
    fast = fastpath.StaticStep(b, opt_b, train_loader, capture=False)
    fast.begin_epoch(train_loader)
    fast.step(0)  # first step creates the accumulators
    with forbid_host_sync():
        fast.step(1)
        fast.step(2)
    metrics, bad = fast.acc.read()
    assert bad == -1 and fast.acc.steps == 3 and metrics["train/loss/total"] > 0


@pytest.mark.parametrize("name", ["baseline", "pcl"])
def test_engine_graph_path_equals_eager_path_with_resume(name, tmp_path, tiny_loaders):
    """train(fast_path="graph") on the CPU (uncaptured) == train(fast_path="eager"): every per-epoch metric
    (train losses and errors, large-batch test errors of every head) and the final weights; and 1 epoch +
    resume + 1 epoch on the fast path == 2 epochs straight."""
    options = _options(name, tmp_path)
    loaders = tiny_loaders(2 if name == "pcl" else 1, classes=CLASSES)
    recipe = Recipe(epochs=2, lr=0.05, milestones=(1,))
    runs = {}
    for path in ("eager", "graph"):
        seed_everything(0)
        method = build_method(name, "tiny_resnet8", CLASSES, **options)
        result = train(method, loaders[0], loaders[1], recipe, fast_path=path,
                       checkpoint_path=tmp_path / f"{path}.pt")
        runs[path] = (method, [{k: v for k, v in h.items() if k not in TIME_KEYS} for h in result.history])
    (ma, ha), (mb, hb) = runs["eager"], runs["graph"]
    assert [h.keys() for h in ha] == [h.keys() for h in hb]
    for ea, eb in zip(ha, hb):
        for k in ea:
            assert eb[k] == pytest.approx(ea[k], rel=1e-5, abs=1e-5), k
    for k, v in ma.state_dict().items():
        torch.testing.assert_close(mb.state_dict()[k], v)

    seed_everything(0)
    first = build_method(name, "tiny_resnet8", CLASSES, **options)
    train(first, loaders[0], loaders[1], Recipe(epochs=1, lr=0.05, milestones=(1,)), fast_path="graph",
          checkpoint_path=tmp_path / "resumed.pt")
    seed_everything(0)
    resumed = build_method(name, "tiny_resnet8", CLASSES, **options)
    res = train(resumed, loaders[0], loaders[1], recipe, fast_path="graph", checkpoint_path=tmp_path / "resumed.pt")
    assert res.resumed_from_epoch == 1
    for k, v in mb.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_bad_values_fail_naming_the_key(tmp_path, tiny_loaders):
    loaders = tiny_loaders(1, classes=CLASSES)
    method = build_method("baseline", "tiny_resnet8", CLASSES)
    with pytest.raises(ValueError, match="fast_path='cuda_graph'.*eager, graph"):
        train(method, loaders[0], loaders[1], Recipe(epochs=1), fast_path="cuda_graph")
    with pytest.raises(ValueError, match="precision='fp16'"):
        fastpath.set_precision("fp16")
    loaders[0].drop_last = False
    with pytest.raises(ValueError, match="drop_last"):
        fastpath.StaticStep(method, make_optimizer(method, Recipe()), loaders[0], capture=False)
    with pytest.raises(ValueError, match="CUDA"):
        fastpath.StaticStep(method, make_optimizer(method, Recipe()), loaders[1], capture=True)


def test_precision_switches_tf32():
    with fastpath.precision_scope("tf32"):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        fastpath.set_precision("fp32")
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        fastpath.set_precision("bf16")
        assert not torch.backends.cudnn.allow_tf32


def test_large_batch_eval_yields_the_whole_split_once(tiny_loaders):
    _, test_loader, _ = tiny_loaders(1, classes=CLASSES, test_size=130)
    big = fastpath.LargeBatchEval(test_loader, batch_size=100, channels_last=True)
    batches = list(big)
    assert [t.shape[0] for _, t in batches] == [100, 30] and len(big) == 2
    assert batches[0][0][0].is_contiguous(memory_format=torch.channels_last)
    small = torch.cat([v[0] for v, _ in test_loader])
    torch.testing.assert_close(torch.cat([v[0] for v, _ in batches]), small)


def _load_bench(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GPU_CHECK_TINY = ["--device", "cpu", "--backbone", "tiny_resnet8", "--classes", "4", "--batch-size", "16",
                  "--steps", "4", "--peers", "2", "--methods", "baseline,pcl"]


def test_gpu_check_script_passes_on_equal_paths_and_fails_on_a_different_step(tmp_path, monkeypatch, capsys):
    """bench/gpu_check.py (uncaptured on the CPU): exit 0 and zero differences for the real fast path; exit 1 and
    FAIL when the fast step computes something else (here: bf16 autocast instead of fp32)."""
    gpu_check = _load_bench("gpu_check")
    out = tmp_path / "check.json"
    assert gpu_check.main(GPU_CHECK_TINY + ["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pcl" in text and "all passed" in text
    import json

    report = json.loads(out.read_text())["methods"]
    assert report["pcl"]["state"] == report["pcl"]["first_step"] == 0.0 and report["pcl"]["steps"] == 4

    real_step = fastpath.train_step
    monkeypatch.setattr(fastpath, "train_step", lambda m, o, v, t, precision: real_step(m, o, v, t, "bf16"))
    assert gpu_check.main(GPU_CHECK_TINY) == 1
    text = capsys.readouterr().out
    assert "FAIL" in text and "FAILED: baseline, pcl" in text
    assert gpu_check.main(["--methods", "nope"]) == 2


@pytest.mark.slow  # 15-25 s on 2 busy cores (a packed run starts a second interpreter)
def test_throughput_script_side_by_side_and_epoch_time_file(tmp_path, capsys):
    """bench/throughput.py on the CPU, tiny: every path and a packed run are measured and printed, the headline
    ratio is printed, and --write-epoch-times inserts this device's rows while keeping the others."""
    throughput = _load_bench("throughput")
    csv_path = tmp_path / "epoch_times.csv"
    throughput.write_epoch_times(csv_path, [{"card": "NVIDIA H100 80GB HBM3", "backbone": "resnet32",
                                             "method": "pcl", "path": "eager", "images_per_s": "2680",
                                             "seconds_per_epoch": "18.66", "source": "seed"}])
    out = tmp_path / "tp.json"
    rc = throughput.main(["--device", "cpu", "--backbones", "tiny_resnet8", "--fast-only-backbones", "",
                          "--methods", "pcl", "--peers", "2", "--steps", "1", "--warmup", "1", "--batch-size", "16",
                          "--naive-workers", "0", "--pack", "1", "--pack-method", "baseline:tiny_resnet8",
                          "--write-epoch-times", str(csv_path), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "# headline tiny_resnet8 pcl: fast / naive" in text and "# packed 1 x baseline" in text
    lines = throughput.target_lines([{"path": "fast", "method": "pcl", "backbone": "resnet32", "images_per_s": 13e3},
                                     {"path": "naive", "method": "pcl", "backbone": "resnet32", "images_per_s": 3e3}],
                                    [{"runs": 4, "method": "pcl", "backbone": "resnet32",
                                      "aggregate_images_per_s": 19e3}])
    assert lines == ["# target pcl resnet32 fast >= 12,000 images/s: 13,000 met",
                     "# target pcl resnet32 fast / naive >= 5x: 4.33x MISSED",
                     "# target 4 packed pcl resnet32 >= 20,000 images/s aggregate: 19,000 MISSED"]
    import json

    report = json.loads(out.read_text())
    assert {r["path"] for r in report["results"]} == {"fast", "eager", "naive"}
    assert all(r["images_per_s"] > 0 for r in report["results"]) and report["packed"][0]["aggregate_images_per_s"] > 0
    rows = throughput.read_epoch_times(csv_path)
    assert list(rows[0]) == ["card", "backbone", "method", "path", "images_per_s", "seconds_per_epoch", "source"]
    assert {(r["card"], r["backbone"], r["method"], r["path"]) for r in rows} == {
        ("NVIDIA H100 80GB HBM3", "resnet32", "pcl", "eager"), ("CPU x1 threads", "tiny_resnet8", "pcl", "eager"),
        ("CPU x1 threads", "tiny_resnet8", "pcl", "graph")}  # the fast path is how fast_path=graph trains
    for mine in (r for r in rows if r["card"].startswith("CPU")):
        assert float(mine["seconds_per_epoch"]) == pytest.approx(50000 / float(mine["images_per_s"]), rel=0.01)
        assert {"graph": "fast", "eager": "eager"}[mine["path"]] in mine["source"]


def test_the_epoch_time_file_holds_the_h200_figures_of_the_kept_raw_output():
    """bench/epoch_times.csv's measured ResNet-32 rows are what bench/throughput.py makes of the JSON kept from the
    H200 lease (bench/results/h200_2026-12-04), every method on both training paths. (ResNet-110's baseline rows
    come from that lease's backbones.txt: the phase was cut before its JSON was written.)"""
    import json
    from pathlib import Path

    throughput = _load_bench("throughput")
    bench = Path(__file__).resolve().parents[1] / "bench"
    raw = bench / "results" / "h200_2026-12-04"
    results = [r for name in ("throughput_main.json", "throughput_methods.json")
               for r in json.loads((raw / name).read_text())["results"]]
    expected = {(r["backbone"], r["method"], r["path"]): r["images_per_s"]
                for r in throughput.epoch_time_rows(results, "NVIDIA H200", "2026-12-04", "fp32")}
    rows = {(r["backbone"], r["method"], r["path"]): r["images_per_s"]
            for r in throughput.read_epoch_times(bench / "epoch_times.csv") if r["card"] == "NVIDIA H200"}
    assert expected and {k: v for k, v in rows.items() if k in expected} == expected
    from pcl import registry

    # every method measured on resnet32 is a declared one, and each has both paths (the others are costed from
    # their declared relative_cost: slurm.plan.throughput)
    measured = {m for (b, m, _) in rows if b == "resnet32"}
    assert {"baseline", "pcl"} <= measured <= set(registry.methods())
    assert all(("resnet32", m, p) in rows for m in measured for p in ("graph", "eager"))


def test_ema_decay_is_a_device_tensor_the_step_reads(tmp_path, tiny_loaders):
    """Changing the temporal mean's decay in place changes what the (static) step computes, with no rebuild."""
    (_, _), (b, opt_b) = _pair("pcl", tmp_path)
    train_loader = tiny_loaders(b.num_views, classes=CLASSES)[0]
    tm = b.temporal_mean
    assert "decay_cap" not in b.state_dict() and tm.decay_cap.device == next(b.parameters()).device
    tm.step.fill_(1000.0)
    b.temporal_mean.set_decay(0.5)
    fast = fastpath.StaticStep(b, opt_b, train_loader, capture=False)
    fast.begin_epoch(train_loader)
    before = tm.mean.branches[0].classifier.weight.clone()
    fast.step(0)
    live = b.net.branches[0].classifier.weight
    torch.testing.assert_close(tm.mean.branches[0].classifier.weight, 0.5 * before + 0.5 * live)
    with pytest.raises(ValueError, match="decay"):
        tm.set_decay(1.5)


# ---- fast_path=auto: which path a run takes, and that it is not part of the run_key ------------------------------
@pytest.mark.parametrize("value, cuda, processes, resident, expected", [
    ("auto", True, 1, True, "graph"),     # one CUDA device, CIFAR/synthetic: the case checked on a GPU
    ("auto", False, 1, True, "eager"),    # the CPU: a graph would only run uncaptured
    ("auto", True, 2, True, "eager"),     # data-parallel processes: the captured step is single-process
    ("auto", True, 1, False, "eager"),    # ImageNet's loader decodes on the CPU
    ("eager", True, 1, True, "eager"),
    ("graph", False, 1, False, "graph"),  # asked for: uncaptured on the CPU, copy-in mode for other loaders
])
def test_auto_takes_the_graph_on_one_cuda_device_with_device_resident_data(value, cuda, processes, resident,
                                                                           expected):
    from pcl.schema import resolve_fast_path

    assert resolve_fast_path(value, cuda=cuda, processes=processes, device_resident=resident) == expected


def test_the_planned_path_follows_the_config():
    from pcl.schema import normalize_run_config, planned_fast_path

    base = {"dataset": "cifar100", "backbone": "resnet32", "method": "pcl"}
    assert normalize_run_config(base)["fast_path"] == "auto"
    assert planned_fast_path(normalize_run_config(base)) == "graph"  # the launcher's jobs run on GPU nodes
    for change in ({"device": "cpu"}, {"fast_path": "eager"}, {"gpus": 2, "batch_size": 128},
                   {"dataset": "imagenet", "backbone": "resnet18"}):
        assert planned_fast_path(normalize_run_config({**base, **change})) == "eager", change


def test_the_fast_path_is_not_part_of_the_run_key():
    """Both paths compute the same function (bit-identical here, checked on a GPU: bench/RESULTS.md), like
    `deterministic`: the key of a run does not depend on how its steps are launched."""
    from pcl.schema import normalize_run_config

    base = {"dataset": "synthetic", "backbone": "tiny_resnet8", "method": "pcl"}
    keys = {normalize_run_config({**base, **({"fast_path": v} if v else {})})["run_key"]
            for v in (None, "auto", "eager", "graph")}
    assert len(keys) == 1


def test_auto_trains_eager_on_the_cpu_and_graph_takes_the_static_step(tmp_path, tiny_loaders, monkeypatch):
    built = []
    real = fastpath.StaticStep
    monkeypatch.setattr(fastpath, "StaticStep", lambda *a, **k: built.append(1) or real(*a, **k))
    for path, expected in (("auto", []), ("eager", []), ("graph", [1])):
        built.clear()
        (m, _), _ = _pair("baseline", tmp_path)
        loaders = tiny_loaders(m.num_views, classes=CLASSES)
        train(m, loaders[0], None, Recipe(epochs=1, lr=0.05, milestones=(1,)), fast_path=path, epoch_log=None)
        assert built == expected, path


def test_auto_never_picks_a_loader_the_static_step_refuses():
    from pcl.data import DeviceLoader, make_synthetic

    train, _, _ = make_synthetic(4, train_size=40, test_size=8, seed=0)
    for drop_last, capturable in ((True, True), (False, False)):
        loader = DeviceLoader(train, batch_size=16, num_views=1, train=True, mean=(0.5,) * 3, std=(0.5,) * 3,
                              device="cpu", seed=0, drop_last=drop_last)
        assert fastpath.has_draws(loader) is capturable


def test_a_run_records_the_path_its_steps_took(tmp_path):
    from pcl.runner import run

    cfg = {"dataset": "synthetic", "backbone": "tiny_resnet8", "method": "baseline", "epochs": 1, "batch_size": 32,
           "synthetic_classes": 4, "synthetic_train_size": 64, "synthetic_test_size": 32, "device": "cpu"}
    outcomes = {}
    for path, expected in (("auto", "eager"), ("graph", "graph")):  # auto on the CPU; graph asked: uncaptured
        started = []
        outcomes[path] = run({**cfg, "fast_path": path}, checkpoint_dir=tmp_path / path, on_start=started.append)
        assert started[0]["environment"]["fast_path"] == expected
    # the same function: the same history to the last bit on the CPU (the time keys aside)
    strip = [{k: v for k, v in m.items() if k not in TIME_KEYS} for m in outcomes["auto"].result.history]
    assert strip == [{k: v for k, v in m.items() if k not in TIME_KEYS} for m in outcomes["graph"].result.history]
