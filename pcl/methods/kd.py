"""Two-stage KD (Hinton, Vinyals & Dean 2015): the offline-distillation comparison (README, "Paper map").

Stage 1 is an earlier completed run of this project; its deployed model file (pcl.runner.save_deployed:
{"backbone", "num_classes", "method", "head", "state_dict"}) is the teacher. Stage 2 trains a fresh student
(build_backbone(backbone)) with

    L = CE(z_s, y) + kd_weight * KD(z_s <- z_teacher),   T = 3 [ours],

the teacher frozen: always in eval mode (its BN statistics never move), no gradient, not a trainable parameter
(parameter_counts reports it as `params_teacher`, apart from `params_train`). A missing or mismatched teacher file
is refused before a grid starts (`KD.check_inputs`, called by pcl.methods.check_method_inputs), and again when the
run builds the method.
Heads: student, teacher. Deployed: the student.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pcl import registry
from pcl.declarations import Head, MethodSpec, Option
from pcl.checkpoint import CheckpointError, load_checkpoint, shown
from pcl.fsio import input_file_problem
from pcl.losses import kd_loss
from pcl.methods.base import LogitDict, LossDict, Method
from pcl.methods.common import check_positive
from pcl.models import Backbone, build_backbone, count_parameters


DECLARATION = MethodSpec(
    name="kd", display="KD (two-stage)", citation="Hinton, Vinyals & Dean 2015",
    trains="one {backbone} student; the teacher (here a {backbone} baseline run) is frozen", deploys="the student",
    heads=(Head("student", "network", "the student"), Head("teacher", "frozen", "the frozen teacher")),
    deployed="student",
    options=(
        Option("teacher_path", None, "deployed.pt of a completed run (required; set from `teacher_run_key`)",
               kind="path", infra=True),
        Option("teacher_backbone", None, "if given, must be the teacher file's backbone (a guard for configs)",
               kind="str", names="backbone"),
        Option("temperature", 3.0, "softmax temperature T of the KD term (scaled by T^2)", minimum=0,
               exclusive_minimum=True),
        Option("kd_weight", 1.0, "weight of the KD term (CE has weight 1)", minimum=0, exclusive_minimum=True),
    ),
    relative_cost=1.53, tables=("two_stage",), order=8, distills=False, frozen_note="the frozen teacher",
)

DEPLOYED_KEYS = ("backbone", "num_classes", "state_dict")


def _teacher_error(path: str | os.PathLike, problem: str) -> ValueError:
    """One line naming the option, its value and what it must be (before a grid starts, or when the run builds)."""
    return ValueError(f"config key 'options.teacher_path'={str(path)!r} (method 'kd'): {problem}; it must be the "
                      "deployed.pt of a completed run (pcl.runner.save_deployed), e.g. of a 'baseline' run")


def load_teacher(path: str | os.PathLike, num_classes: int,
                 teacher_backbone: str | None = None) -> tuple[Backbone, dict[str, Any]]:
    """Rebuild the teacher from a deployed-model file; every mismatch is a one-line ValueError naming the option,
    the path and what differs. The file is read as untrusted (weights_only: no code runs)."""
    problem = input_file_problem(path)
    if problem:
        raise _teacher_error(path, problem + (" (train the teacher first)" if "does not exist" in problem else ""))
    path = Path(path).expanduser()
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:  # not a torch file, or one that needs unpickling code
        raise _teacher_error(path, f"not a readable model file ({err.problem})") from None
    if not isinstance(state, dict) or any(k not in state for k in DEPLOYED_KEYS):
        raise _teacher_error(path, f"not a deployed-model file (it needs the keys {', '.join(DEPLOYED_KEYS)})")
    file_backbone, file_classes = state["backbone"], state["num_classes"]
    if not isinstance(file_backbone, str) or file_backbone not in registry.backbones():
        raise _teacher_error(path, f"its backbone {shown(file_backbone)} is not a backbone of this suite")
    if isinstance(file_classes, bool) or not isinstance(file_classes, int):
        raise _teacher_error(path, f"its num_classes {shown(file_classes)} is not an integer")
    if teacher_backbone is not None and teacher_backbone != file_backbone:
        raise ValueError(f"config key 'options.teacher_backbone'={teacher_backbone!r} (method 'kd'): the teacher "
                         f"file {str(path)!r} holds a {file_backbone!r}")
    if file_classes != num_classes:
        raise _teacher_error(path, f"its model has num_classes={file_classes}, the student {num_classes} (a teacher "
                                   "of another dataset)")
    teacher = build_backbone(file_backbone, file_classes)
    try:
        teacher.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as err:
        # torch's first line is a header ("Error(s) in loading state_dict for ..."); what differs follows it
        detail = " ".join(str(err).split()).removeprefix(f"Error(s) in loading state_dict for "
                                                         f"{type(teacher).__name__}:").strip()
        detail = detail if len(detail) <= 240 else detail[:239] + "…"
        raise _teacher_error(path, f"its weights do not load into a {file_backbone!r} "
                                   f"({detail or type(err).__name__})") from None
    if not all(torch.isfinite(t).all() for t in teacher.state_dict().values() if t.is_floating_point()):
        raise _teacher_error(path, "its weights hold NaN or infinite values (a diverged run)")
    info = {"path": str(path), "backbone": file_backbone, "num_classes": file_classes,
            "method": state.get("method", ""), "head": state.get("head", "")}
    return teacher, info


class KD(Method):
    declaration = DECLARATION

    @classmethod
    def check_inputs(cls, options: dict[str, Any], num_classes: int) -> None:
        """A teacher file the config names is read and rebuilt before the grid starts (a few MB, once per file)."""
        if options.get("teacher_path") is not None:
            load_teacher(options["teacher_path"], num_classes, options.get("teacher_backbone"))

    @classmethod
    def example_inputs(cls, workdir: Path, backbone: str, num_classes: int) -> dict[str, Any]:
        """An untrained `backbone` baseline's deployed model as the teacher, written by the runner's save_deployed."""
        from pcl.methods import build_method  # both import this module: imported when called
        from pcl.runner import save_deployed

        path = Path(workdir) / f"kd_teacher_{backbone}_{num_classes}.pt"
        if not path.exists():
            save_deployed(build_method("baseline", backbone, num_classes), path)
        return {"teacher_path": str(path)}

    def __init__(self, backbone: str, num_classes: int, *, teacher_path: str | None, teacher_backbone: str | None,
                 temperature: float, kd_weight: float, dropout: float | None = None):
        """
        teacher_path: deployed.pt of a completed run (required). teacher_backbone: if given, must be the file's
        backbone (a guard for configs). temperature: T. kd_weight: weight of the KD term (CE has weight 1).
        dropout: of the student (the teacher always runs in eval mode, where dropout is off).
        """
        super().__init__(backbone, num_classes, dropout=dropout)
        if teacher_path is None:
            raise ValueError("kd needs teacher_path: the deployed.pt of a completed run (e.g. method 'baseline' or "
                             "'pcl'), written by pcl.runner.save_deployed into the run's checkpoint folder")
        self.temperature = check_positive("temperature", temperature)
        check_positive("kd_weight", kd_weight)
        self.student = build_backbone(backbone, num_classes, dropout)
        self.teacher, self.teacher_info = load_teacher(teacher_path, num_classes, teacher_backbone)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        # a device tensor like distill_weight; not persistent: the option, not the checkpoint, decides it
        self.register_buffer("kd_weight", torch.tensor(float(kd_weight)), persistent=False)

    def train(self, mode: bool = True) -> "KD":
        """The teacher stays in eval mode: its BN statistics are part of what was trained in stage 1."""
        super().train(mode)
        self.teacher.eval()
        return self

    def training_step(self, views: list[torch.Tensor], targets: torch.Tensor) -> tuple[LossDict, LogitDict]:
        logits = self.student(views[0])
        with torch.no_grad():
            teacher_logits = self.teacher(views[0])
        losses: LossDict = {"ce": F.cross_entropy(logits, targets),
                            "kd": kd_loss(logits, teacher_logits, self.temperature)}
        return losses, {"student": logits, "teacher": teacher_logits}

    def loss_weights(self) -> dict[str, torch.Tensor]:
        return {"kd": self.kd_weight}

    def eval_heads(self, x: torch.Tensor) -> LogitDict:
        return {"student": self.student(x), "teacher": self.teacher(x)}

    def export_deployed(self) -> Backbone:
        return copy.deepcopy(self.student)

    def head_parameter_counts(self) -> dict[str, int]:
        return {"student": count_parameters(self.student), "teacher": count_parameters(self.teacher)}

    def parameter_counts(self) -> dict[str, int]:
        """The frozen teacher is held during training but never trained: counted apart."""
        return super().parameter_counts() | {"params_teacher": count_parameters(self.teacher)}
