"""The interface every training method implements (in the style of mdistiller's Distiller).

A method is an nn.Module built from (backbone name, number of classes, its own keyword options). The engine
calls, per training step, `training_step(views, targets)` and gets two dicts: named loss terms (raw, unweighted)
and named logits (for train accuracy); the total loss is sum(loss_weights().get(name, 1) * term). Every epoch it
evaluates `eval_heads(x)` (every head by name) and reports `deployed_head`. `export_deployed()` returns the model a
user would ship, as a plain backbone that loads into `pcl.models.build_backbone`.

Hooks: `on_epoch_start(epoch)` (ramp-up weights), `after_optimizer_step()` (temporal means), and the class's
`check_inputs` (a file the options name, checked before a grid starts). Loss weights are device buffers filled once
per epoch, so the step never synchronises with the host.

Every method builds its networks with the run's `dropout` (None = the zoo's default of the backbone, see
`pcl.models.DEFAULT_DROPOUT`), names its peers (`peer_heads`, whose diversity the engine logs), gives the optimiser
its parameter groups (`param_groups`) and the parameter count at deployment of each head (`head_parameter_counts`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from pcl.declarations import MethodSpec
from pcl.losses import rampup
from pcl.models import Backbone, count_parameters

LossDict = dict[str, torch.Tensor]
LogitDict = dict[str, torch.Tensor]


class Method(nn.Module):
    """Base class: a subclass sets `declaration` (its file's DECLARATION, pcl.declarations.MethodSpec; name,
    distills, deployed head and a fixed number of views come from it; a number of views set by an option, e.g.
    `views="peers"`, and a deployed head that depends on the options are set in `__init__`) and implements the
    abstract methods. Its
    `__init__` takes (backbone, num_classes, *, <every declared option>, dropout): `pcl.methods.build_method`
    passes the declared defaults merged with the run's options."""

    declaration: ClassVar[MethodSpec]
    #: the method's config name and whether it has ramped-up distillation terms (logged every epoch): declared
    name: ClassVar[str] = "method"
    distills: ClassVar[bool] = True
    #: views of each training image the step needs (1 = every branch sees the same augmented batch)
    num_views: int = 1
    #: the head whose error is the method's reported number
    deployed_head: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declaration = cls.__dict__.get("declaration")
        if declaration is not None:
            cls.name, cls.distills = declaration.name, declaration.distills
            cls.deployed_head = cls.__dict__.get("deployed_head", declaration.deployed)
            if isinstance(declaration.views, int):  # else an option sets it: the class's __init__ does
                cls.num_views = cls.__dict__.get("num_views", declaration.views)

    @classmethod
    def check_inputs(cls, options: dict[str, Any], num_classes: int) -> None:
        """The files the method will read, checked before a grid starts, before the launcher submits and in the
        distributed command (pcl.methods.check_method_inputs), so that a wrong one is a one-line error with
        nothing recorded instead of a run that fails: raise ValueError naming
        the option, its value and what it must be. `options`: the run's options (declared defaults merged) whose
        files are the config's to give, not resolved by the tracking layer later (kd's teacher_path when
        `teacher_run_key` names the teacher). The default reads no file."""

    @classmethod
    def example_inputs(cls, workdir: Path, backbone: str, num_classes: int) -> dict[str, Any]:
        """Options whose files a build needs, with such files written into `workdir`: what the generated docs and
        the tests parametrized over every method build it with (kd: an untrained `backbone` baseline's deployed
        model as its teacher). The default needs none."""
        return {}

    def __init__(self, backbone: str, num_classes: int, rampup_length: int = 0, dropout: float | None = None):
        """dropout: probability of the backbone's dropout layers in every network the method builds (checked by
        `pcl.models.build_backbone`: None = the zoo's default; a backbone without dropout refuses a value)."""
        super().__init__()
        if rampup_length < 0:
            raise ValueError(f"rampup_length must be >= 0, got {rampup_length}")
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.rampup_length = rampup_length
        self.dropout = dropout
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

    # ---- peers, optimiser groups, parameter counts ------------------------------------------------------
    @property
    def peer_heads(self) -> tuple[str, ...]:
        """Heads of `eval_heads` that are the method's peers (branches / networks that learn from each other).

        The engine logs their diversity (`pcl.diversity`) every epoch when there are at least two. Default: none.
        """
        return ()

    def trained_head_of(self, head: str) -> str:
        """The head whose training logits stand for `head` (a temporal mean's averaged head, as declared)."""
        return self.declaration.trained_head_of(head) if hasattr(self, "declaration") else head

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups, each a dict with "params" and "weight_decay".

        weight_decay: the recipe's. Default: one group of every trainable parameter with that weight decay; a
        method whose reference code decays a module differently (FFL's fusion module) overrides this.
        """
        return [{"params": list(self.trainable_parameters()), "weight_decay": weight_decay}]

    def head_parameter_counts(self) -> dict[str, int]:
        """Parameters needed at deployment to produce each head's predictions (head name -> count).

        Default: the deployed head only (the exported backbone). Methods with several heads count each: a peer is
        the shared layers + its branch, an ensemble head every network it averages plus its own module.
        """
        return {self.deployed_head: count_parameters(self.export_deployed())}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters trained (gradient-carrying) and deployed: the two costs the paper's tables compare.

        `params_deployed` is the deployed head's model; `params_deployed/<head>` gives the same count for every
        head of `head_parameter_counts` (e.g. PCL's two ensemble candidates, `ensemble` and `pcl_e`).
        """
        counts = {"params_train": sum(p.numel() for p in self.trainable_parameters()),
                  "params_deployed": count_parameters(self.export_deployed())}
        counts.update({f"params_deployed/{head}": n for head, n in self.head_parameter_counts().items()})
        return counts


def check_views(method: Method, views: list[torch.Tensor]) -> None:
    """Fail with a clear message when the loader was built for another number of views."""
    if len(views) != method.num_views:
        raise ValueError(f"method {method.name!r} needs {method.num_views} view(s) per step, got {len(views)}")
