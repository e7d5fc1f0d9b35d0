"""Real-data sanity run: ResNet-32, baseline vs PCL, the CIFAR recipe (docs/config.md) shortened to a few epochs.

    python bench/gpu_sanity.py --data-root DIR --epochs 8 [--out results.json]
DIR must hold cifar-10-batches-py: on this project that is the LOSSY CIFAR-10 stand-in (real images re-encoded as
JPEG q75), so the figures are a sanity check of the pipeline, never CIFAR-10 results; with
a shortened schedule (milestones 150/225 of 300 and the 80-epoch ramp-up scaled to --epochs) they are far from
the paper's 300-epoch numbers by design. Prints every head's test error and the epoch time after each epoch.
"""
from __future__ import annotations

import argparse
import json

import torch

from pcl.runner import environment_info, run
from pcl.schema import normalize_run_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--methods", default="baseline,pcl")
    ap.add_argument("--backbone", default="resnet32")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1")
    ap.add_argument("--fast-path", default="auto", choices=["auto", "eager", "graph"],
                    help="the config key fast_path: auto (the default: graph on one CUDA device), eager or graph")
    ap.add_argument("--train-subset", type=int, default=None, help="only for trying the script on a CPU")
    ap.add_argument("--out", default=None, help="write all per-epoch metrics as JSON here")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("# environment:", json.dumps(environment_info(torch.device(device))))
    report = {"environment": environment_info(torch.device(device)), "epochs": args.epochs, "runs": {}}
    for method, seed in [(m, int(s)) for m in args.methods.split(",") for s in args.seeds.split(",")]:
        # the recipe's time constants (LR steps, ramp-up, temporal-mean window) scale with `epochs` (pcl.schema)
        cfg = normalize_run_config({"dataset": "cifar10", "backbone": args.backbone, "method": method, "seed": seed,
                                    "data_root": args.data_root, "device": device, "epochs": args.epochs,
                                    "train_subset": args.train_subset, "precision": args.precision,
                                    "fast_path": args.fast_path})
        name = f"{method}/seed{seed}"
        print(f"# {name}: milestones {cfg['milestones']}, options {cfg['options']}, fast_path {args.fast_path}")

        def show(epoch: int, m: dict, method: str = name) -> None:
            errs = " ".join(f"{k.split('/')[-1]}={v:.2f}" for k, v in m.items() if k.startswith("test/top1_err/"))
            print(f"{method} epoch {epoch + 1}: {m['epoch_time_s']:.1f}s {m['images_per_s']:,.0f} img/s "
                  f"loss={m['train/loss/total']:.3f} top1_err% {errs}", flush=True)

        outcome = run(cfg, callbacks=[show])
        report["runs"][name] = {"history": outcome.result.history, "summary": outcome.result.summary,
                                "deployed_head": outcome.deployed_head, "params": outcome.parameter_counts}
        print(f"{name}: deployed {outcome.deployed_head} top1_err "
              f"{outcome.result.summary['deployed/top1_err']:.2f}% params {outcome.parameter_counts}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
