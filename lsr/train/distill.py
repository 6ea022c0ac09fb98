"""Score distillation from several teachers: ensemble normalisation and the DiSCo loss.

Both take the teachers' scores stacked as `[T, B, C]`: T teachers, B queries, C candidate
documents per query (the same candidates, in the same order, for every teacher).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["ensemble_normalize", "disco_loss"]


def _teachers(teacher_scores: "Tensor") -> "Tensor":
    """`[T, B, C]` as given, `[B, C]` (one teacher) as `[1, B, C]`."""
    if teacher_scores.dim() == 2:
        return teacher_scores.unsqueeze(0)
    if teacher_scores.dim() != 3:
        raise ValueError(f"teacher scores must be [T, B, C] (or [B, C]), got shape {tuple(teacher_scores.shape)}")
    return teacher_scores


def ensemble_normalize(teacher_scores: "Tensor", scale: float = 1.0) -> "Tensor":
    """One `[B, C]` target from several teachers' `[T, B, C]` scores (Geng et al. 2024).

    Each teacher's scores are min-max normalised per query over its C candidates,
    `(s - min) / (max - min)`, so scores on different scales (BM25, dot products of sparse
    vectors, cosines) all span [0, 1]; the teachers are then averaged and multiplied by
    `scale`. A query whose candidates a teacher scores all alike (max == min) gets 0 from
    that teacher for every candidate: no preference, and no NaN.
    """
    scores = _teachers(teacher_scores).float()
    low = scores.amin(dim=-1, keepdim=True)
    span = scores.amax(dim=-1, keepdim=True) - low
    safe = span.clamp_min(1e-12)
    normalised = (scores - low) / safe * (span > 0)
    return normalised.mean(dim=0) * scale


def disco_loss(student_scores: "Tensor", teacher_scores: "Tensor", temperature: float = 1.0) -> "Tensor":
    """Multi-teacher score distillation (DiSCo, Lupart et al., SIGIR 2025).

    The student's score distribution over each query's C candidates is distilled from every
    teacher's at once:

        p_t = softmax(teacher_t / τ),  q = softmax(student / τ)   (per query, over C)
        loss = 1/T Σ_t 1/B Σ_b KL(p_t[b] ‖ q[b])

    i.e. DiSCo's KL distillation term (KL of the teacher's softmax to the student's, summed over
    candidates, averaged over queries) averaged over the T teachers. With one teacher it is
    the usual KL distillation loss. The average keeps the loss on one teacher's scale; DiSCo's
    "sum over teachers" differs by the constant factor T. Its gradient equals that of the
    cross-entropy of q against the teachers' mean distribution (the teachers' entropies are
    constants). Gradients flow to `student_scores` only.

    `student_scores`: [B, C]; `teacher_scores`: [T, B, C] (or [B, C] for one teacher).
    """
    import torch

    teachers = _teachers(teacher_scores)
    if student_scores.dim() != 2 or teachers.shape[1:] != student_scores.shape:
        raise ValueError(
            f"student scores {tuple(student_scores.shape)} and teacher scores {tuple(teacher_scores.shape)} "
            "must be [B, C] and [T, B, C]"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_q = torch.log_softmax(student_scores.float() / temperature, dim=-1)  # [B, C]
    log_p = torch.log_softmax(teachers.detach().float() / temperature, dim=-1)  # [T, B, C]
    kl = (log_p.exp() * (log_p - log_q.unsqueeze(0))).sum(dim=-1)  # [T, B]
    return kl.mean()
