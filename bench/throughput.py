"""Training throughput (images/s) of the baseline step and of multi-view method steps (PCL by default).

    python bench/throughput.py --backbone resnet32 --device cuda --batch-size 128 --peers 3 [--methods all]
Synthetic uint8 data on the device and the real DeviceLoader augmentation (so the figure includes the GPU-side
crop/flip); warm-up steps, then timed steps between device synchronisations. On CUDA the timed steps run under
torch.cuda.set_sync_debug_mode("error") unless --allow-sync: any host synchronisation inside the step fails.
Prints one line per configuration; results go to bench/RESULTS.md by hand, with the card's name.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from pcl.data import DeviceLoader, MEANS_STDS, make_synthetic  # noqa: E402
from pcl.engine import Recipe, make_optimizer, train_step  # noqa: E402
from pcl.methods import METHODS, build_method, method_defaults  # noqa: E402


def measure(method_name: str, backbone: str, batch_size: int, device: torch.device, steps: int,
            warmup: int, precision: str, check_sync: bool, options: dict) -> tuple[float, int, int]:
    """(images/s, trained parameters, views per step) of one method's training step."""
    torch.manual_seed(0)
    method = build_method(method_name, backbone, 100, **options).to(device)
    train, _, _ = make_synthetic(100, train_size=batch_size * (steps + warmup), test_size=100, seed=0)
    mean, std = MEANS_STDS["cifar100"]
    loader = DeviceLoader(train, batch_size=batch_size, num_views=method.num_views, train=True, mean=mean,
                          std=std, device=device, seed=0)
    opt = make_optimizer(method, Recipe(precision=precision))
    method.on_epoch_start(100)
    method.train()

    batches = iter(loader)
    for _ in range(warmup):
        train_step(method, opt, *next(batches), precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
        if check_sync:
            torch.cuda.set_sync_debug_mode("error")
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(method, opt, *next(batches), precision)
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return (batch_size * steps / elapsed, sum(p.numel() for p in method.trainable_parameters()),
            method.num_views)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--peers", type=int, default=3, help="peers / networks / branches of the multi-model methods")
    ap.add_argument("--methods", default="baseline,pcl",
                    help="comma-separated registered methods, or 'all' (every method but two-stage kd)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--allow-sync", action="store_true", help="do not fail on host syncs inside the step")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"# device: {name}; torch {torch.__version__}; backbone {args.backbone}; batch {args.batch_size}; "
          f"{args.precision}")
    names = [m for m in METHODS if m != "kd"] if args.methods == "all" else args.methods.split(",")
    for method in names:
        options = {"peers": args.peers} if "peers" in method_defaults(method) else {}
        note = ""
        try:
            ips, params, views = measure(method, args.backbone, args.batch_size, device, args.steps, args.warmup,
                                         args.precision, not args.allow_sync, options)
        except RuntimeError as err:  # a host sync inside the step: report it, then time the step anyway
            torch.cuda.set_sync_debug_mode("default")
            note = f"  HOST SYNC IN STEP: {str(err).splitlines()[0]}"
            ips, params, views = measure(method, args.backbone, args.batch_size, device, args.steps, args.warmup,
                                         args.precision, False, options)
        print(f"{method:10s} peers={options.get('peers', 1)} views={views} params_train={params:,} "
              f"images/s={ips:,.0f}  s/50k-epoch={50000 / ips:.2f}{note}", flush=True)


if __name__ == "__main__":
    main()
