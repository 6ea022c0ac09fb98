"""Ranking losses on sparse vectors and scores.

Shapes: queries `q [B, V]`, candidates `d [B, C, V]` (candidate 0 of each query is its
positive), scores `[B, C]`, teacher scores `[B, C]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Dot products of each query with its own candidates: `[B, C]`."""
    return torch.einsum("bv,bcv->bc", q, d)


def info_nce(q: torch.Tensor, d: torch.Tensor, temperature: float = 1.0, in_batch: bool = True) -> torch.Tensor:
    """Cross-entropy of the positive among the candidates, scores divided by `temperature`.

    With `in_batch`, every candidate of every query in the batch (B·C documents) is a
    negative for each query; otherwise only the query's own hard negatives.
    """
    B, C, V = d.shape
    if in_batch:
        logits = q @ d.reshape(B * C, V).T  # [B, B*C]
        target = torch.arange(B, device=q.device) * C
    else:
        logits = scores(q, d)
        target = torch.zeros(B, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, target)


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's and the teacher's margins `s_pos - s_neg`,
    over every (query, negative) pair."""
    s = student[:, :1] - student[:, 1:]
    t = teacher[:, :1] - teacher[:, 1:]
    return F.mse_loss(s, t.to(s.dtype))


def kl_distill(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """`T² · KL(softmax(teacher/T) ‖ softmax(student/T))` over each query's candidates,
    averaged over queries."""
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher.to(student.dtype) / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()
    return kl * temperature**2
