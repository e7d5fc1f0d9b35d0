"""The command line of multi-GPU training, `python -m pcl.distributed` (torchrun / srun start it on every process):
flags -> one untracked run config -> pcl.runner.run, rank 0 writing the run's files in --out-dir.

The library it drives (process group, DDP, sharded data, rank 0 leading) is pcl.distributed itself, which never
imports the runner; pcl/distributed/__main__.py only calls `main` here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pcl import registry
from pcl.checkpoint import CheckpointError
from pcl.data.check import check_data
from pcl.distributed import DistEnv, cleanup, detect_env
from pcl.flags import OneLineParser
from pcl.fsio import folder_problem, read_regular
from pcl.methods import check_method_inputs
from pcl.process_env import EnvError
from pcl.runner import resolve_device, run
from pcl.schema import BATCH_NORMS, KEYS, ConfigError, identity_config, normalize_run_config


def main(argv: list[str] | None = None) -> int:
    """One untracked run on every process of the job (pcl.runner.run, the same run config and recipe as the tracked
    scripts: defaults and time-constant scaling from pcl.schema); rank 0 writes OUT_DIR/config.json (first),
    checkpoint.pt, deployed.pt and history.json. Started again with the same flags it resumes; with flags that
    make another run it refuses (one line, exit 2), as it does for any bad flag. `gpus` is the job's number of
    processes.

        torchrun --nproc_per_node=4 -m pcl.distributed --dataset imagenet --data-root DIR --method pcl \
            --backbone resnet18 --out-dir DIR
    --batch-size is the GLOBAL batch (split over the processes); recipe flags left out take the dataset's recipe.
    Records (Sacred, MongoDB): run the experiment scripts under torchrun instead (README, "Several GPUs").
    """
    ap = OneLineParser(prog="python -m pcl.distributed", description=main.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="imagenet")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--download", action="store_true", help="fetch CIFAR through torchvision when missing")
    ap.add_argument("--method", default="pcl")
    ap.add_argument("--options", default="{}", help="method options as JSON, e.g. '{\"temperature\": 3}'")
    ap.add_argument("--backbone", default=None,
                    help="default: resnet18 where it is built for --dataset (ImageNet, synthetic), else the "
                         "config's default (resnet32 on CIFAR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="global batch, divided over the processes")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--milestones", default=None, help="comma-separated epochs")
    ap.add_argument("--weight-decay", type=float, default=None)
    ap.add_argument("--precision", default=None)
    ap.add_argument("--batch-norm", default=None, choices=BATCH_NORMS)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--workers", type=int, default=None, help="ImageNet decoding workers per process")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--synthetic-train-size", type=int, default=None)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    try:
        env = detect_env()
    except EnvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    try:
        cfg = _cli_config(args, env)
        check_method_inputs([cfg])  # kd's teacher model, before config.json is written
    except ConfigError as err:  # one line, exit 2, nothing written (every rank stops; rank 0 says why)
        if env.is_main:
            print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    resumed = (out / "checkpoint.pt").exists()
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=1))
    try:
        try:
            outcome = run(cfg, checkpoint_dir=out)
        except CheckpointError as err:  # the folder's checkpoint.pt is damaged or foreign: said, not resumed
            if env.is_main:
                print(f"error: {' '.join(str(err).split())}; remove it or use another --out-dir", file=sys.stderr)
            return 2
        if env.is_main:
            (out / "history.json").write_text(json.dumps(
                {"config": cfg, "history": outcome.result.history, "summary": outcome.result.summary,
                 "world_size": env.world_size}, indent=1))
            err = outcome.result.summary.get("deployed/top1_err")
            print(f"run {cfg['run_key']}: {'resumed from' if resumed else 'trained, checkpoint'} {out / 'checkpoint.pt'}"
                  f"; {cfg['epochs']} epochs done, deployed top-1 error {err:.2f}%; {out / 'history.json'}")
    finally:
        cleanup()
    return 0


def default_backbone(dataset: str) -> str:
    """--backbone left out: resnet18, the command's default before, where it is built for `dataset` (ImageNet, the
    synthetic stand-in: a run started without --backbone resumes as itself), else the run config's default
    (resnet32 on CIFAR, where resnet18 was refused), else the first backbone declared for the dataset."""
    built = registry.dataset_backbones(dataset) if isinstance(dataset, str) else ()
    for name in (PREVIOUS_DEFAULT_BACKBONE, KEYS["backbone"].default):
        if name in built:
            return name
    return built[0] if built else PREVIOUS_DEFAULT_BACKBONE  # none: the dataset check names the dataset


#: --backbone's default for every dataset until it was refused on CIFAR
PREVIOUS_DEFAULT_BACKBONE = "resnet18"


def _cli_config(args: Any, env: DistEnv) -> dict[str, Any]:
    """The run config of `python -m pcl.distributed`'s flags, checked like the scripts' (ConfigError, one line):
    values, data, device, and that --out-dir is a folder this user can write ('' would be the current directory)
    holding no other run's checkpoint (it would be resumed as this one)."""
    problem = folder_problem(args.out_dir)
    if problem is not None:
        raise ConfigError(f"--out-dir {args.out_dir!r} is invalid: {problem}; must be a folder this user can create "
                          "and write")
    try:
        options = json.loads(args.options)
    except ValueError as err:
        raise ConfigError(f"--options {args.options!r} is not JSON ({err}); e.g. '{{\"temperature\": 3}}'") from None
    try:
        milestones = None if args.milestones is None else [int(m) for m in args.milestones.split(",") if m.strip()]
    except ValueError:
        raise ConfigError(f"--milestones {args.milestones!r} is invalid: must be comma-separated epochs") from None
    backbone = args.backbone if args.backbone is not None else default_backbone(args.dataset)
    given = {"dataset": args.dataset, "data_root": args.data_root, "method": args.method, "backbone": backbone,
             "options": options, "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size,
             "lr": args.lr, "weight_decay": args.weight_decay, "precision": args.precision,
             "batch_norm": args.batch_norm, "channels_last": args.channels_last, "workers": args.workers,
             "train_subset": args.train_subset, "device": args.device, "milestones": milestones,
             "download": args.download or None,
             "synthetic_train_size": args.synthetic_train_size, "gpus": env.world_size}
    cfg = normalize_run_config({k: v for k, v in given.items() if v is not None})
    device = resolve_device(cfg["device"])
    if cfg["batch_norm"] == "sync" and device.type != "cuda":
        raise ConfigError("--batch-norm sync needs CUDA devices (SyncBatchNorm has no CPU kernel); allowed here: local")
    check_data(cfg["dataset"], cfg["data_root"], cfg["download"])
    written = Path(args.out_dir) / "config.json"  # written before the first step: also a run killed mid-way
    if written.exists() or written.is_symlink():
        try:
            before = json.loads(read_regular(written, 1 << 20) or b"null")
        except ValueError as err:  # a link, a FIFO, too big (UnreadableFile), not JSON
            raise ConfigError(f"--out-dir {args.out_dir!r} holds a config.json that is not this suite's ({err}): "
                              "use another --out-dir, or remove the folder's files") from None
        if not isinstance(before, dict):
            raise ConfigError(f"--out-dir {args.out_dir!r} holds a config.json that is not a run config: use "
                              "another --out-dir, or remove the folder's files")
        if before.get("run_key") != cfg["run_key"]:
            mine, theirs = identity_config(cfg), identity_config(before)
            changed = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
            files = [f"options.{k}" for k in registry.method(cfg["method"]).file_options if cfg["options"].get(k)]
            why = (f"it differs in {', '.join(changed)}" if changed else
                   f"the same config, but a file it reads ({', '.join(files)}) changed since" if files else
                   "the same config, keyed by an older version of the suite: the run_key's formula changed since "
                   "(docs/guide.md, 'Skip, resume, preemption')")
            raise ConfigError(f"--out-dir {args.out_dir!r} holds the checkpoint of another run ({before.get('run_key')}"
                              f"; {why}): it would be resumed as this one; use another --out-dir")
    return cfg
