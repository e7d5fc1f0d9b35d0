"""Training throughput side by side on one device: fast path, eager path, naive reference; packed runs; profile.

    python bench/throughput.py                                   # the full comparison (a GPU: a few minutes)
    python bench/throughput.py --device cpu --steps 2 --warmup 1 --pack 1,2 --backbones resnet32
    python bench/throughput.py ... --write-epoch-times bench/epoch_times.csv   # update the launcher's figures

Paths (every figure: images/s of whole training steps, CIFAR-100 shapes, synthetic uint8 data):
  fast   pcl.fastpath.StaticStep: on-device views + step + temporal mean + metric sums, one CUDA graph per step
         on CUDA (uncaptured on the CPU); --precision and --channels-last apply. How fast_path=graph trains (the
         default, auto, on one CUDA device with CIFAR-shaped device-resident data).
  eager  pcl.step.train_step on the device-resident loader (GPU crop/flip), fp32 (TF32 off): fast_path=eager.
  naive  what the public re-implementations do: a torchvision CPU DataLoader (PIL images, RandomCrop(32, pad 4) +
         RandomHorizontalFlip + ToTensor + Normalize once per view, --naive-workers workers, pinned memory) feeding
         the eager step; PyTorch's default math (cuDNN TF32 on). The headline is fast / naive per network.
Packed: N separate processes train the fast path at once on the same device (--pack 1,2,4); their aggregate
images/s over the common timed window. Peak memory: torch.cuda.max_memory_allocated per run. GPU busy: the share
of the timed wall time during which some kernel ran, from torch.profiler (CUDA only), with the kernels per step and
their time per step beside the wall time per step: what limits a step (launches, or the kernels themselves).
On CUDA the timed steps of fast and eager run under torch.cuda.set_sync_debug_mode("error") (no host sync in a
step). A path or packed run that fails is reported with its traceback and the others go on (exit 1).
--write-epoch-times adds this card's rows (path graph for fast, eager) to the launcher's epoch-time file.
Imports only torch, torchvision, numpy and this package. Figures go to bench/RESULTS.md by hand, with the card,
driver, torch version and date printed in the header.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from pcl import fastpath
from pcl.data import MEANS_STDS, DeviceLoader, make_synthetic
from pcl.engine import Recipe, make_optimizer
from pcl.seeding import seed_everything
from pcl.step import train_step
from pcl.methods import build_method, method_defaults

PATHS = ("fast", "eager", "naive")
EPOCH_TIME_COLUMNS = ("card", "backbone", "method", "path", "images_per_s", "seconds_per_epoch", "source")
#: the benchmark's paths as the config key fast_path names the way a run trains (naive is no way a run trains)
TRAINING_PATHS = {"fast": "graph", "eager": "eager"}
CIFAR_TRAIN_IMAGES = 50_000
CLASSES = 100


# ---- one measurement ---------------------------------------------------------------------------------------------
def _build(method_name: str, backbone: str, peers: int, device: torch.device):
    seed_everything(0)
    options = {"peers": peers} if "peers" in method_defaults(method_name) else {}
    return build_method(method_name, backbone, CLASSES, **options).to(device)


def _device_loader(num_views: int, batch: int, steps: int, device: torch.device) -> DeviceLoader:
    train, _, _ = make_synthetic(CLASSES, train_size=batch * steps, test_size=CLASSES, seed=0)
    mean, std = MEANS_STDS["cifar100"]
    return DeviceLoader(train, batch_size=batch, num_views=num_views, train=True, mean=mean, std=std,
                        device=device, seed=0)


class _NaiveSet(torch.utils.data.Dataset):
    """uint8 HWC images served as PIL images through torchvision transforms, one augmented copy per view."""

    def __init__(self, images_u8: np.ndarray, labels: np.ndarray, num_views: int):
        from torchvision import transforms  # noqa: PLC0415

        mean, std = MEANS_STDS["cifar100"]
        self.images, self.labels, self.num_views = images_u8, labels, num_views
        self.tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                      transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image  # noqa: PLC0415

        img = Image.fromarray(self.images[i])
        return torch.stack([self.tf(img) for _ in range(self.num_views)]), int(self.labels[i])


def _naive_batches(num_views: int, batch: int, steps: int, workers: int, device: torch.device):
    train, _, _ = make_synthetic(CLASSES, train_size=batch * steps, test_size=CLASSES, seed=0)
    images = train.images.permute(0, 2, 3, 1).contiguous().numpy()
    loader = torch.utils.data.DataLoader(_NaiveSet(images, train.labels.numpy(), num_views), batch_size=batch,
                                         shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
                                         drop_last=True, persistent_workers=workers > 0)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield list(x.unbind(1)), y


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(path: str, method_name: str, backbone: str, args, device: torch.device, *,
            barrier: tuple[str, str] | None = None) -> dict:
    """Images/s (and peak memory, GPU busy share) of `path` for one method and backbone.

    barrier: (ready_file, go_file) for packed runs: the timed steps start when go_file appears.
    """
    steps, warmup, batch = args.steps, args.warmup, args.batch_size
    method = _build(method_name, backbone, args.peers, device)
    method.on_epoch_start(40)
    method.train()
    if path == "fast":
        precision, channels_last = args.precision, args.channels_last
    else:
        precision, channels_last = "fp32", False
    fastpath.set_precision(precision)
    if path == "naive":
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, as the public code runs
    if channels_last:
        fastpath.to_channels_last(method)
    optimizer = make_optimizer(method, Recipe(precision=precision))
    total_steps = warmup + steps + (args.profile_steps if args.profile else 0)

    if path == "fast":
        loader = _device_loader(method.num_views, batch, total_steps, device)
        fast = fastpath.StaticStep(method, optimizer, loader, precision=precision, channels_last=channels_last)
        fast.begin_epoch(loader)
        numbers = iter(range(total_steps))

        def one_step():
            fast.step(next(numbers))
    elif path == "eager":
        batches = iter(_device_loader(method.num_views, batch, total_steps, device))

        def one_step():
            train_step(method, optimizer, *next(batches), precision)
    else:
        batches = _naive_batches(method.num_views, batch, total_steps, args.naive_workers, device)

        def one_step():
            train_step(method, optimizer, *next(batches), "fp32")

    for _ in range(warmup):
        one_step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if barrier is not None:
        Path(barrier[0]).touch()
        while not os.path.exists(barrier[1]):
            time.sleep(0.005)
    check_sync = device.type == "cuda" and path != "naive" and not args.allow_sync
    if check_sync:
        torch.cuda.set_sync_debug_mode("error")
    start_wall, t0 = time.time(), time.perf_counter()
    try:
        for _ in range(steps):
            one_step()
        _sync(device)
    finally:
        if check_sync:
            torch.cuda.set_sync_debug_mode("default")
    elapsed = time.perf_counter() - t0
    out = {"path": path, "method": method_name, "backbone": backbone, "images_per_s": batch * steps / elapsed,
           "images": batch * steps, "start": start_wall, "end": start_wall + elapsed,
           "params_train": sum(p.numel() for p in method.trainable_parameters()), "views": method.num_views,
           "precision": precision if path != "naive" else "fp32 (cuDNN TF32 on)", "channels_last": channels_last,
           "peak_mem_mb": (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
           "gpu_busy": None}
    if args.profile and device.type == "cuda":
        out.update(_gpu_busy(one_step, args.profile_steps, device))
    return out


def _gpu_busy(one_step, steps: int, device: torch.device) -> dict:
    """What limits a step: `gpu_busy`, the share of the wall time of `steps` steps during which at least one kernel
    ran (union of kernel intervals); `kernels_per_step` and `kernel_ms_per_step` (the union's time per step) beside
    `wall_ms_per_step`. Busy near 100 %: the kernels themselves bound the step; far below: launches or the host."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    try:
        _sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            for _ in range(steps):
                one_step()
            _sync(device)
            wall_us = (time.perf_counter() - t0) * 1e6
        intervals = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                           if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start)
        busy, cur_s, cur_e = 0.0, None, None
        for s, e in intervals:
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    busy += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None:
            busy += cur_e - cur_s
        if not intervals:
            return {}
        return {"gpu_busy": min(1.0, busy / wall_us), "kernels_per_step": len(intervals) / steps,
                "kernel_ms_per_step": busy / 1e3 / steps, "wall_ms_per_step": wall_us / 1e3 / steps}
    except Exception as err:  # the profiler differs between versions: a missing figure, not a failed benchmark
        print(f"# profiler failed: {type(err).__name__}: {err}", file=sys.stderr)
        return {}


# ---- packed runs -------------------------------------------------------------------------------------------------
def packed(n: int, method_name: str, backbone: str, args) -> dict:
    """n processes training the fast path at once; aggregate images/s over the window all of them ran in."""
    with tempfile.TemporaryDirectory() as tmp:
        go = os.path.join(tmp, "go")
        procs = []
        for i in range(n):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{method_name}:{backbone}",
                   "--ready-file", os.path.join(tmp, f"ready{i}"), "--go-file", go, "--device", args.device,
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
                   "--peers", str(args.peers), "--precision", args.precision]
            if args.channels_last:
                cmd.append("--channels-last")
            if args.allow_sync:
                cmd.append("--allow-sync")
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        deadline = time.time() + args.pack_timeout
        while not all(os.path.exists(os.path.join(tmp, f"ready{i}")) for i in range(n)):
            if time.time() > deadline or any(p.poll() not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                raise RuntimeError(f"packed run of {n} did not get ready")
            time.sleep(0.01)
        Path(go).touch()
        results = []
        for p in procs:
            stdout, _ = p.communicate(timeout=args.pack_timeout)
            if p.returncode:
                raise RuntimeError(f"a packed worker failed (exit {p.returncode})")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    window = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"runs": n, "method": method_name, "backbone": backbone,
            "aggregate_images_per_s": sum(r["images"] for r in results) / window,
            "per_run_images_per_s": [r["images_per_s"] for r in results],
            "peak_mem_mb": [r["peak_mem_mb"] for r in results]}


# ---- epoch-time file ---------------------------------------------------------------------------------------------
def read_epoch_times(path: str | os.PathLike) -> list[dict]:
    """Rows of the epoch-time file (columns EPOCH_TIME_COLUMNS); [] if it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != EPOCH_TIME_COLUMNS:
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {list(EPOCH_TIME_COLUMNS)}")
        return list(reader)


def write_epoch_times(path: str | os.PathLike, new_rows: list[dict]) -> None:
    """Insert or replace rows keyed by (card, backbone, method, path); keep the others; sorted; atomic rename."""
    key = ("card", "backbone", "method", "path")
    rows = {tuple(r[k] for k in key): r for r in read_epoch_times(path)}
    for r in new_rows:
        rows[tuple(r[k] for k in key)] = {k: r[k] for k in EPOCH_TIME_COLUMNS}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EPOCH_TIME_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for key in sorted(rows):
            writer.writerow(rows[key])
    os.replace(tmp, path)


def epoch_time_rows(results: list[dict], card: str, date: str, precision: str) -> list[dict]:
    """One row per (backbone, method, training path) measured: images/s and seconds per 50k-image CIFAR epoch."""
    return [{"card": card, "backbone": r["backbone"], "method": r["method"], "path": TRAINING_PATHS[r["path"]],
             "images_per_s": f"{r['images_per_s']:.0f}",
             "seconds_per_epoch": f"{CIFAR_TRAIN_IMAGES / r['images_per_s']:.2f}",
             "source": f"bench/throughput.py {r['path']} {precision if r['path'] == 'fast' else 'fp32'} {date}"}
            for r in results if r["path"] in TRAINING_PATHS]


# ---- the issue's targets (H100/H200, batch 128, CIFAR-100 shapes) ---------------------------------------------------
TARGETS = (("fast", "pcl", "resnet32", 12_000), ("fast", "baseline", "resnet32", 35_000))
TARGET_FAST_OVER_NAIVE = ("pcl", "resnet32", 5.0)
TARGET_PACKED = (4, "pcl", "resnet32", 20_000)


def target_lines(results: list[dict], packs: list[dict]) -> list[str]:
    """'# target ...: met/MISSED' for every target this run measured (meaningful on an H100/H200 only)."""
    by = {(r["path"], r["method"], r["backbone"]): r["images_per_s"] for r in results}
    lines = []
    for path, method, backbone, goal in TARGETS:
        if (path, method, backbone) in by:
            got = by[(path, method, backbone)]
            lines.append(f"# target {method} {backbone} {path} >= {goal:,} images/s: {got:,.0f} "
                         f"{'met' if got >= goal else 'MISSED'}")
    method, backbone, goal = TARGET_FAST_OVER_NAIVE
    if ("fast", method, backbone) in by and ("naive", method, backbone) in by:
        ratio = by[("fast", method, backbone)] / by[("naive", method, backbone)]
        lines.append(f"# target {method} {backbone} fast / naive >= {goal:.0f}x: {ratio:.2f}x "
                     f"{'met' if ratio >= goal else 'MISSED'}")
    n, method, backbone, goal = TARGET_PACKED
    for p in packs:
        if (p["runs"], p["method"], p["backbone"]) == (n, method, backbone):
            got = p["aggregate_images_per_s"]
            lines.append(f"# target {n} packed {method} {backbone} >= {goal:,} images/s aggregate: {got:,.0f} "
                         f"{'met' if got >= goal else 'MISSED'}")
    return lines


# ---- main --------------------------------------------------------------------------------------------------------
def _card(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU x{torch.get_num_threads()} threads"


def _driver() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except Exception:  # no nvidia-smi (CPU)
        return "n/a"


def _fmt(x, spec: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbones", default="resnet32,resnet110")
    ap.add_argument("--fast-only-backbones", default="wrn20_8", help="backbones measured on the fast path only")
    ap.add_argument("--methods", default="baseline,pcl")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--precision", default="fp32", choices=list(fastpath.PRECISIONS), help="of the fast path")
    ap.add_argument("--channels-last", action="store_true", help="fast path in channels_last")
    ap.add_argument("--naive-workers", type=int, default=4, help="CPU DataLoader workers of the naive reference")
    ap.add_argument("--pack", default="1,2,4", help="numbers of packed fast-path runs ('' = none)")
    ap.add_argument("--pack-method", default="pcl:resnet32")
    ap.add_argument("--pack-timeout", type=float, default=300)
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                    help="GPU busy share from torch.profiler (CUDA only)")
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--allow-sync", action="store_true", help="do not fail on host syncs inside a step")
    ap.add_argument("--write-epoch-times", default=None, metavar="CSV",
                    help="insert/replace this card's rows (columns " + ",".join(EPOCH_TIME_COLUMNS) + ") from the "
                         "fast (path graph) and eager measurements: the launcher's GPU-hours (slurm.plan)")
    ap.add_argument("--out", default=None, help="write every figure as JSON here")
    # internal: one packed worker
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--go-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "peers"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if args.write_epoch_times and (args.precision != "fp32" or args.channels_last):
        ap.error(f"--write-epoch-times takes fp32 figures without --channels-last (the launcher costs every run at "
                 f"those: the default); got --precision {args.precision}"
                 f"{' --channels-last' if args.channels_last else ''}")
    bad = [p for p in args.paths.split(",") if p not in PATHS]
    if bad:
        ap.error(f"--paths has unknown path(s) {', '.join(bad)}; allowed: {', '.join(PATHS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.worker:
        if device.type == "cpu":  # packed CPU runs share the cores
            torch.set_num_threads(1)
        method_name, backbone = args.worker.split(":")
        r = measure("fast", method_name, backbone, args, device, barrier=(args.ready_file, args.go_file))
        print(json.dumps(r))
        return 0
    card = _card(device)
    date = _dt.date.today().isoformat()
    header = (f"# device: {card}; driver {_driver()}; torch {torch.__version__}; {date}; batch {args.batch_size}; "
              f"{args.steps} timed steps after {args.warmup}; fast path {args.precision}"
              f"{' channels_last' if args.channels_last else ''}; naive: {args.naive_workers} workers")
    print(header, flush=True)
    paths = args.paths.split(",")
    jobs = [(p, m, b) for b in args.backbones.split(",") if b for m in args.methods.split(",") for p in paths]
    jobs += [("fast", m, b) for b in args.fast_only_backbones.split(",") if b and "fast" in paths
             for m in args.methods.split(",")]
    results, failed = [], []
    print(f"{'backbone':10s} {'method':9s} {'path':6s} {'images/s':>9s} {'s/epoch':>8s} {'peak MB':>8s} "
          f"{'GPU busy':>8s} {'kernels':>8s} {'GPU ms':>7s} {'wall ms':>7s}", flush=True)
    for path, method_name, backbone in jobs:
        try:
            r = measure(path, method_name, backbone, args, device)
        except Exception as err:  # one failed path (a capture error, say) must not lose the other figures
            failed.append({"path": path, "method": method_name, "backbone": backbone, "error": _error(err)})
            print(f"{backbone:10s} {method_name:9s} {path:6s} FAILED {failed[-1]['error']}", flush=True)
            traceback.print_exc()
            continue
        finally:
            if device.type == "cuda":  # the next measurement's peak memory is its own
                torch.cuda.empty_cache()
        results.append(r)
        print(f"{backbone:10s} {method_name:9s} {path:6s} {r['images_per_s']:9,.0f} "
              f"{CIFAR_TRAIN_IMAGES / r['images_per_s']:8.2f} {_fmt(r['peak_mem_mb'])!s:>8s} "
              f"{_fmt(r['gpu_busy'], '.0%')!s:>8s} {_fmt(r.get('kernels_per_step'))!s:>8s} "
              f"{_fmt(r.get('kernel_ms_per_step'), '.2f')!s:>7s} {_fmt(r.get('wall_ms_per_step'), '.2f')!s:>7s}",
              flush=True)
    by = {(r["path"], r["method"], r["backbone"]): r["images_per_s"] for r in results}
    headline = []
    for b in args.backbones.split(","):
        for m in args.methods.split(","):
            if ("fast", m, b) in by and ("naive", m, b) in by:
                ratio = by[("fast", m, b)] / by[("naive", m, b)]
                eager = by.get(("eager", m, b))
                headline.append({"backbone": b, "method": m, "fast_over_naive": ratio,
                                 "fast_over_eager": by[("fast", m, b)] / eager if eager else None})
                print(f"# headline {b} {m}: fast / naive = {ratio:.2f}x"
                      + (f"; fast / eager = {by[('fast', m, b)] / eager:.2f}x" if eager else ""), flush=True)
    packs = []
    if args.pack:
        method_name, backbone = args.pack_method.split(":")
        for n in (int(x) for x in args.pack.split(",")):
            try:
                p = packed(n, method_name, backbone, args)
            except Exception as err:
                failed.append({"packed": n, "method": method_name, "backbone": backbone, "error": _error(err)})
                print(f"# packed {n} x {method_name} {backbone} FAILED {failed[-1]['error']}", flush=True)
                continue
            packs.append(p)
            print(f"# packed {n} x {method_name} {backbone} fast: aggregate {p['aggregate_images_per_s']:,.0f} "
                  f"images/s; per run {', '.join(f'{x:,.0f}' for x in p['per_run_images_per_s'])}; peak MB "
                  f"{', '.join(_fmt(x) for x in p['peak_mem_mb'])}", flush=True)
    for line in target_lines(results, packs):
        print(line, flush=True)
    if args.write_epoch_times:
        rows = epoch_time_rows(results, card, date, args.precision)
        write_epoch_times(args.write_epoch_times, rows)
        print(f"# wrote {len(rows)} row(s) for {card!r} to {args.write_epoch_times}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"header": header, "results": results, "headline": headline, "packed": packs,
                       "failed": failed}, f, indent=1)
    return 1 if failed else 0


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


if __name__ == "__main__":
    sys.exit(main())
