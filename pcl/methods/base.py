"""The interface every training method implements (in the style of mdistiller's Distiller).

A method is an nn.Module built from (backbone name, number of classes, its own keyword options). The engine
calls, per training step, `training_step(views, targets)` and gets two dicts: named loss terms (raw, unweighted)
and named logits (for train accuracy); the total loss is sum(loss_weights().get(name, 1) * term). Every epoch it
evaluates `eval_heads(x)` (every head by name) and reports `deployed_head`. `export_deployed()` returns the model a
user would ship, as a plain backbone that loads into `pcl.models.build_backbone`.

Hooks: `on_epoch_start(epoch)` (ramp-up weights), `after_optimizer_step()` (temporal means). Loss weights are
device buffers filled once per epoch, so the step never synchronises with the host.
"""
from __future__ import annotations

from typing import ClassVar, Iterator

import torch
from torch import nn

from pcl.losses import rampup
from pcl.models import Backbone, count_parameters

LossDict = dict[str, torch.Tensor]
LogitDict = dict[str, torch.Tensor]


class Method(nn.Module):
    """Base class: subclasses set `name`, `num_views`, `deployed_head` and implement the abstract methods."""

    name: ClassVar[str] = "method"
    #: views of each training image the step needs (1 = every branch sees the same augmented batch)
    num_views: int = 1
    #: the head whose error is the method's reported number
    deployed_head: str = ""
    #: whether the method has ramped-up distillation terms (then the ramp-up weight is logged every epoch)
    distills: ClassVar[bool] = True

    def __init__(self, backbone: str, num_classes: int, rampup_length: int = 0):
        super().__init__()
        if rampup_length < 0:
            raise ValueError(f"rampup_length must be >= 0, got {rampup_length}")
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.rampup_length = rampup_length
        # w(e) of the current epoch, a device tensor so changing it never recompiles or synchronises.
        self.register_buffer("distill_weight", torch.ones(()), persistent=True)

    # ---- the step -------------------------------------------------------------------------------------
    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        raise NotImplementedError

    def loss_weights(self) -> dict[str, torch.Tensor]:
        """Weights of the loss terms that are not 1 (device tensors)."""
        return {}

    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        raise NotImplementedError

    def export_deployed(self) -> Backbone:
        raise NotImplementedError

    # ---- hooks ----------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self.distill_weight.fill_(rampup(epoch, self.rampup_length))

    def after_optimizer_step(self) -> None:
        pass

    def scalars(self) -> dict[str, torch.Tensor]:
        """Per-epoch scalars worth logging besides the losses: by default the ramp-up weight w(e)."""
        return {"rampup_weight": self.distill_weight} if self.distills else {}

    # ---- helpers --------------------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters trained (gradient-carrying) and deployed: the two costs the paper's tables compare."""
        return {"params_train": sum(p.numel() for p in self.trainable_parameters()),
                "params_deployed": count_parameters(self.export_deployed())}


def check_views(method: Method, views: list[torch.Tensor]) -> None:
    """Fail with a clear message when the loader was built for another number of views."""
    if len(views) != method.num_views:
        raise ValueError(f"method {method.name!r} needs {method.num_views} view(s) per step, got {len(views)}")
