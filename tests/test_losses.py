"""kd_loss and rampup against values computed by hand (independent formulas, not the code under test)."""
import math

import pytest
import torch

from pcl.losses import kd_loss, rampup


def _softmax(zs, t):
    e = [math.exp(z / t) for z in zs]
    return [v / sum(e) for v in e]


def _hand_kd(student, teacher, t):
    p_t, p_s = _softmax(teacher, t), _softmax(student, t)
    return t * t * sum(a * math.log(a / b) for a, b in zip(p_t, p_s))


def test_kd_loss_matches_hand_computation_with_temperature_factor():
    student = [[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]]
    teacher = [[1.5, -0.5, 0.0], [0.0, 0.0, 3.0]]
    for t in (1.0, 3.0, 4.0):
        expected = sum(_hand_kd(s, q, t) for s, q in zip(student, teacher)) / 2  # batch mean
        got = kd_loss(torch.tensor(student), torch.tensor(teacher), t).item()
        assert got == pytest.approx(expected, rel=1e-5)
    # T^2 factor: at T=3 the value is 9 KL, not KL nor 3 KL
    kl = _hand_kd([0.0, 1.0], [1.0, 0.0], 3.0) / 9
    assert kd_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), 3.0).item() == pytest.approx(9 * kl, rel=1e-5)


def test_kd_loss_direction_is_kl_teacher_to_student():
    student, teacher = [0.0, 0.0, 0.0], [4.0, 0.0, -2.0]
    forward = _hand_kd(student, teacher, 1.0)     # KL(teacher || student)
    reverse = _hand_kd(teacher, student, 1.0)     # KL(student || teacher)
    assert abs(forward - reverse) > 0.1
    got = kd_loss(torch.tensor([student]), torch.tensor([teacher]), 1.0).item()
    assert got == pytest.approx(forward, rel=1e-5)


def test_kd_loss_no_gradient_into_teacher_unless_asked():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    kd_loss(student, teacher, 3.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    kd_loss(student, teacher, 3.0, detach_teacher=False).backward()
    assert teacher.grad is not None and teacher.grad.abs().sum() > 0


def test_kd_loss_zero_when_equal():
    z = torch.randn(3, 7)
    assert kd_loss(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_rampup_values():
    assert rampup(0) == pytest.approx(math.exp(-5))
    assert rampup(40) == pytest.approx(math.exp(-1.25))
    assert rampup(20) == pytest.approx(math.exp(-5 * 0.75 ** 2))
    assert rampup(2) == pytest.approx(math.exp(-5 * (1 - 2 / 80) ** 2))
    assert rampup(80) == 1.0 and rampup(81) == 1.0 and rampup(300) == 1.0
    # strictly increasing over the ramp: a wrong divisor (e.g. clipping at 1 after 2 epochs) would break this
    values = [rampup(e) for e in range(81)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert rampup(79) < 1.0
    assert rampup(10, length=20) == pytest.approx(math.exp(-1.25))
    assert rampup(5, length=0) == 1.0
    with pytest.raises(ValueError, match="-1"):
        rampup(3, length=-1)
