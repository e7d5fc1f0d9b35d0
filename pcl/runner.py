"""One training run from plain values: seed -> method -> device data -> engine -> deployed model on disk.

This is what the Sacred experiments, the benchmarks and the tests call; it knows nothing of Sacred or MongoDB.
"""
from __future__ import annotations

import platform
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torchvision

from pcl.data import DATASETS, NUM_CLASSES, build_loaders
from pcl.engine import MetricsCallback, Recipe, TrainResult, save_atomic, seed_everything, train
from pcl.methods import build_method

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunSpec:
    """Everything that defines one run. `method_options` are the method's own keyword options."""

    dataset: str = "cifar100"
    backbone: str = "resnet32"
    method: str = "pcl"
    method_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 128
    recipe: Recipe = field(default_factory=Recipe)
    data_root: str | None = None
    download: bool = False
    train_subset: int | None = None
    synthetic_classes: int = 10
    synthetic_train_size: int = 2048
    synthetic_test_size: int = 512
    device: str = "auto"
    deterministic: bool = False
    workers: int = 8

    def resolved_device(self) -> torch.device:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device={self.device!r} is invalid; allowed: {', '.join(DEVICES)} or cuda:N")
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} requested but no CUDA device is available")
        return torch.device(self.device)


@dataclass
class RunOutcome:
    result: TrainResult
    deployed_head: str
    deployed_path: str | None
    parameter_counts: dict[str, int]
    determinism: dict[str, Any]
    num_classes: int
    heads: list[str]


def environment_info(device: torch.device | None = None) -> dict[str, str]:
    """Host, versions (as strings) and accelerator name: enough to tell two runs' environments apart."""
    info = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": str(np.__version__),
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "device": str(device) if device is not None else "",
        "gpu": "none",
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run(spec: RunSpec, *, checkpoint_dir: str | Path | None = None, resume: bool = True,
        callbacks: Iterable[MetricsCallback] = (), progress: bool = False,
        should_stop: Callable[[], bool] | None = None,
        on_start: Callable[[dict[str, Any]], None] | None = None) -> RunOutcome:
    """Train one run. Checkpoint and deployed model go to `checkpoint_dir` (checkpoint.pt, deployed.pt).

    `on_start` receives what is known before the first step (parameter counts, heads, determinism flags), so a
    tracker can record it even if the run later fails.
    """
    if spec.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {spec.dataset!r}; allowed: {', '.join(DATASETS)}")
    device = spec.resolved_device()
    determinism = seed_everything(spec.seed, spec.deterministic)
    num_classes = spec.synthetic_classes if spec.dataset == "synthetic" else NUM_CLASSES.get(spec.dataset, 0)
    method = build_method(spec.method, spec.backbone, num_classes, **spec.method_options).to(device)
    train_loader, test_loader, data_classes = build_loaders(
        spec.dataset, data_root=spec.data_root, download=spec.download, batch_size=spec.batch_size,
        num_views=method.num_views, device=device, seed=spec.seed, train_subset=spec.train_subset,
        synthetic_classes=spec.synthetic_classes, synthetic_train_size=spec.synthetic_train_size,
        synthetic_test_size=spec.synthetic_test_size, workers=spec.workers)
    if data_classes != num_classes:
        raise ValueError(f"dataset {spec.dataset!r} under {spec.data_root!r} has {data_classes} classes, "
                         f"expected {num_classes}")
    counts = method.parameter_counts()
    with torch.no_grad():
        method.eval()
        probe = next(iter(test_loader))[0][0][:2]
        heads = list(method.eval_heads(probe))
    if on_start is not None:
        on_start({"parameter_counts": counts, "heads": heads, "deployed_head": method.deployed_head,
                  "determinism": determinism, "num_classes": num_classes, "num_views": method.num_views,
                  "environment": environment_info(device), "recipe": asdict(spec.recipe)})
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    result = train(method, train_loader, test_loader, spec.recipe,
                   checkpoint_path=ckpt_dir / "checkpoint.pt" if ckpt_dir else None, resume=resume,
                   callbacks=callbacks, progress=progress, should_stop=should_stop)
    deployed_path = None
    if ckpt_dir is not None:
        deployed_path = str(ckpt_dir / "deployed.pt")
        save_deployed(method, deployed_path)
    return RunOutcome(result=result, deployed_head=method.deployed_head, deployed_path=deployed_path,
                      parameter_counts=counts, determinism=determinism, num_classes=num_classes, heads=heads)


def save_deployed(method, path: str | Path) -> None:
    """The deployed model as a plain backbone state dict plus what is needed to rebuild it (two-stage KD's input)."""
    model = method.export_deployed()
    save_atomic({"backbone": method.backbone_name, "num_classes": method.num_classes, "method": method.name,
                 "head": method.deployed_head,
                 "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
