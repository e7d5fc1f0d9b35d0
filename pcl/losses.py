"""Loss pieces shared by every method: temperature-scaled distillation and the sigmoid-shaped ramp-up."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            detach_teacher: bool = True) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch.

    The T^2 factor keeps the gradient scale of the soft term comparable to the CE term (Hinton et al.).
    The teacher carries no gradient unless `detach_teacher=False` (OKDDip trains its attention through the
    target, so it needs the gradient).
    """
    if detach_teacher:
        teacher_logits = teacher_logits.detach()
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def rampup(epoch: int | float, length: int = 80) -> float:
    """exp(-5 (1 - min(epoch, length)/length)^2): 0.0067 at epoch 0, 1 from `length` on; length 0 means no ramp-up.

    Laine & Aila / Mean Teacher / ONE. Epoch is 0-based. Dividing by anything but `length` (a known bug of a public
    re-implementation) switches distillation off for most of training; tests pin the values.
    """
    if length < 0:
        raise ValueError(f"rampup length must be >= 0, got {length}")
    if length == 0:
        return 1.0
    progress = min(max(float(epoch), 0.0), float(length)) / float(length)
    return math.exp(-5.0 * (1.0 - progress) ** 2)
