"""Ensemble normalisation and the DiSCo loss against plain-Python references."""

import math
import random

import pytest
import torch

from lsr.train.distill import disco_loss, ensemble_normalize


def _random_scores(rng, t, b, c, low=-5.0, high=20.0):
    return [[[rng.uniform(low, high) for _ in range(c)] for _ in range(b)] for _ in range(t)]


def _reference_normalize(scores, scale):
    t, b, c = len(scores), len(scores[0]), len(scores[0][0])
    out = [[0.0] * c for _ in range(b)]
    for teacher in scores:
        for i, row in enumerate(teacher):
            lo, hi = min(row), max(row)
            for j, s in enumerate(row):
                out[i][j] += ((s - lo) / (hi - lo) if hi > lo else 0.0) / t
    return [[v * scale for v in row] for row in out]


def _softmax(row, temperature):
    m = max(row)
    e = [math.exp((x - m) / temperature) for x in row]
    total = sum(e)
    return [x / total for x in e]


def _reference_disco(student, teachers, temperature):
    total = 0.0
    for teacher in teachers:
        for s_row, t_row in zip(student, teacher):
            q = _softmax(s_row, temperature)
            p = _softmax(t_row, temperature)
            total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / (len(teachers) * len(student))


@pytest.mark.parametrize("t, b, c, scale", [(1, 2, 3, 1.0), (3, 4, 5, 30.0), (2, 1, 2, 0.5)])
def test_ensemble_normalize_matches_reference(t, b, c, scale):
    scores = _random_scores(random.Random(t * 100 + c), t, b, c)
    got = ensemble_normalize(torch.tensor(scores, dtype=torch.float64), scale=scale)
    assert got.shape == (b, c)
    assert torch.allclose(got.double(), torch.tensor(_reference_normalize(scores, scale), dtype=torch.float64), atol=1e-6)


def test_ensemble_normalize_constant_row_and_range():
    scores = torch.tensor([[[2.0, 2.0, 2.0], [1.0, 3.0, 2.0]], [[5.0, 0.0, 10.0], [7.0, 7.0, 7.0]]])
    got = ensemble_normalize(scores, scale=2.0)
    assert not torch.isnan(got).any()
    # query 0: teacher 0 is constant (0), teacher 1 gives 0.5, 0, 1; query 1: teacher 0 gives 0, 1, 0.5
    expected = torch.tensor([[0.25, 0.0, 0.5], [0.0, 0.5, 0.25]]) * 2.0
    assert torch.allclose(got, expected)
    assert ensemble_normalize(scores[0]).shape == (2, 3)  # one teacher as [B, C]


@pytest.mark.parametrize("t, b, c, temperature", [(1, 2, 4, 1.0), (3, 3, 5, 2.0), (2, 4, 2, 0.5)])
def test_disco_loss_matches_reference(t, b, c, temperature):
    rng = random.Random(7 * t + c)
    student = [[rng.uniform(-3, 3) for _ in range(c)] for _ in range(b)]
    teachers = _random_scores(rng, t, b, c, -3.0, 3.0)
    got = disco_loss(torch.tensor(student, dtype=torch.float64), torch.tensor(teachers, dtype=torch.float64), temperature)
    assert got.item() == pytest.approx(_reference_disco(student, teachers, temperature), rel=1e-5, abs=1e-7)


def test_disco_loss_zero_when_student_matches_and_gradients_flow():
    teacher = torch.tensor([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]])
    assert disco_loss(teacher[0].clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    # a shift per query does not change a softmax: still zero
    assert disco_loss(teacher[0] + torch.tensor([[4.0], [-2.0]]), teacher).item() == pytest.approx(0.0, abs=1e-6)

    student = torch.zeros(2, 3, requires_grad=True)
    teachers = torch.stack([teacher[0], teacher[0] * 2])
    loss = disco_loss(student, teachers)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    # the gradient of mean_t KL(p_t || q) in the student's scores is (q - mean_t p_t) / B
    q = torch.softmax(student.detach(), -1)
    p = torch.softmax(teachers, -1).mean(0)
    assert torch.allclose(student.grad, (q - p) / 2, atol=1e-6)
    # a gradient step lowers the loss
    with torch.no_grad():
        stepped = student - 1.0 * student.grad
    assert disco_loss(stepped, teachers).item() < loss.item()


def test_disco_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must be"):
        disco_loss(torch.zeros(2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="temperature"):
        disco_loss(torch.zeros(2, 3), torch.zeros(1, 2, 3), temperature=0)
