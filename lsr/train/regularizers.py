"""Sparsity regularisers and the statistics reported while training.

`flops(w) = Σ_j (mean_i w_ij)²` (Paria et al.), `l1(w) = mean_i Σ_j |w_ij|`, and the
IDF-aware FLOPS of inference-free models, where the penalty of term j is divided by its idf
(rare, informative terms are penalised less): `Σ_j (mean_i w_ij)² / idf_j`. Queries and
documents have their own λ, each reached through a quadratic warm-up `λ · min(1, t/T)²`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("flops", "l1", "idf-flops", "none")


def flops(w: torch.Tensor) -> torch.Tensor:
    return (w.mean(0) ** 2).sum()


def l1(w: torch.Tensor) -> torch.Tensor:
    return w.abs().sum(-1).mean()


def idf_flops(w: torch.Tensor, idf: torch.Tensor, min_idf: float = 1e-2) -> torch.Tensor:
    return ((w.mean(0) ** 2) / idf.clamp_min(min_idf).to(w.dtype)).sum()


def warmup(lam: float, step: int, steps: int) -> float:
    """`λ · min(1, step/steps)²` (λ from the start when `steps` is 0)."""
    if steps <= 0:
        return lam
    return lam * min(1.0, step / steps) ** 2


@dataclass
class Regularizer:
    """λ_q · R(q) + λ_d · R(d), each λ warmed up quadratically over `warmup_steps`.
    `idf` ([V]) is needed by `idf-flops`; λ_q applies only when query vectors are given."""

    kind: str = "flops"
    lambda_q: float = 0.0
    lambda_d: float = 0.0
    warmup_steps: int = 0
    idf: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown regulariser {self.kind!r}; expected one of {KINDS}")
        if self.kind == "idf-flops" and self.idf is None:
            raise ValueError("idf-flops needs an idf table")

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "flops":
            return flops(w)
        if self.kind == "l1":
            return l1(w)
        if self.kind == "idf-flops":
            return idf_flops(w, self.idf.to(w.device))
        return w.new_zeros(())

    def __call__(self, q: torch.Tensor | None, d: torch.Tensor, step: int) -> torch.Tensor:
        total = d.new_zeros(())
        if self.kind == "none":
            return total
        lam_d = warmup(self.lambda_d, step, self.warmup_steps)
        if lam_d:
            total = total + lam_d * self.penalty(d)
        lam_q = warmup(self.lambda_q, step, self.warmup_steps)
        if q is not None and lam_q:
            total = total + lam_q * self.penalty(q)
        return total


@torch.no_grad()
def active_terms(w: torch.Tensor) -> float:
    """Mean number of non-zero terms per vector."""
    return float((w > 0).sum(-1).float().mean()) if len(w) else 0.0


@torch.no_grad()
def flops_metric(q: torch.Tensor, d: torch.Tensor) -> float:
    """Expected multiply-adds of a query-document dot product over the batch:
    `Σ_j P(q_j ≠ 0) · P(d_j ≠ 0)` (the FLOPS figure of the SPLADE papers)."""
    return float(((q > 0).float().mean(0) * (d > 0).float().mean(0)).sum())
