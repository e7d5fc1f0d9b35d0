"""One training step, the unit the loop (pcl.engine) runs and the fast path (pcl.fastpath) captures: the method's
weighted losses, backward, SGD, the temporal-mean hooks, and the device-side sums of what each step reports.

Nothing here synchronises with the host: losses and correct counts accumulate on the device and are read once per
epoch, and a non-finite loss is remembered on the device (the first bad step).
"""
from __future__ import annotations

import contextlib

import torch

from pcl.methods.base import Method


def autocast_for(device: torch.device, precision: str):
    """bf16: an autocast context on `device`; fp32 and tf32: none (pcl.fastpath.set_precision sets TF32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(method: Method, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
               targets: torch.Tensor, precision: str = "fp32"
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One optimisation step: losses, weighted sum, backward, SGD, temporal-mean hooks. No host sync.

    Returns (total loss, raw loss terms, logits per head), all still on the device. This is the unit a CUDA-graph
    fast path would capture.
    """
    with autocast_for(views[0].device, precision):
        losses, logits = method.training_step(views, targets)
        weights = method.loss_weights()
        total = sum(weights[name] * value if name in weights else value for name, value in losses.items())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    method.after_optimizer_step()
    return total, losses, logits


class EpochAccumulator:
    """Device-side sums of the step's losses and correct counts; read back once per epoch."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.images = 0
        self.step_index = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, total: torch.Tensor, losses: dict[str, torch.Tensor], logits: dict[str, torch.Tensor],
            targets: torch.Tensor) -> None:
        total = total.detach().float()
        bad = ~torch.isfinite(total) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, self.step_index, self.first_bad_step)
        self.step_index += 1
        self._add("train/loss/total", total)
        for name, value in losses.items():
            self._add(f"train/loss/{name}", value.detach().float())
        for name, z in logits.items():
            self._add(f"train/correct/{name}", (z.detach().argmax(dim=1) == targets).sum().float())
        self.steps += 1
        self.images += targets.shape[0]

    def _add(self, key: str, value: torch.Tensor) -> None:
        if key in self.sums:
            self.sums[key] += value
        else:
            self.sums[key] = value.clone()

    def read(self) -> tuple[dict[str, float], int]:
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys] + [self.first_bad_step.float()]).double().cpu().tolist()
        out: dict[str, float] = {}
        for k, v in zip(keys, values[:-1]):
            if k.startswith("train/correct/"):
                out["train/top1_err/" + k[len("train/correct/"):]] = 100.0 * (1.0 - v / max(self.images, 1))
            else:
                out[k] = v / max(self.steps, 1)
        return out, int(values[-1])
