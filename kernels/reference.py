"""Naive PyTorch reference for the SPLADE head: materialises the [B, S, V] logits.

Used by the tests as ground truth and by the benchmark as the "eager" baseline.
"""

from __future__ import annotations

import torch

from ._common import apply_activation, check_args, compute_dtype


def splade_max_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    activation: str = "relu",
    *,
    pooling: str = "max",
) -> torch.Tensor:
    """SPLADE pooling of ``hidden @ weight.T + bias`` over the unmasked positions.

    * ``pooling="max"``: ``w[b, v] = act(max(0, max_{s: mask[b,s]} logit[b, s, v]))``;
      gradients flow through the first (lowest) arg-max position only.
    * ``pooling="sum"``: ``w[b, v] = sum_{s: mask[b,s]} act(relu(logit[b, s, v]))``.

    ``act`` is ``log1p`` for ``activation="relu"`` and ``log1p∘log1p`` for
    ``activation="log1p_relu"`` (sentence-transformers' SpladePooling naming). Computes in
    float32 (float64 if any input is float64); returns that dtype.
    """
    _, _, _, _, m = check_args(hidden, weight, bias, mask, activation, pooling)
    dt = compute_dtype(hidden, weight, bias)
    logits = hidden.to(dt) @ weight.to(dt).T
    if bias is not None:
        logits = logits + bias.to(dt)
    keep = m.unsqueeze(-1)
    if pooling == "max":
        z = logits.masked_fill(~keep, 0.0).relu()
        top = z.max(dim=1).values  # ties -> lowest index; grad to that index only
        return apply_activation(top, activation)
    z = apply_activation(logits.relu(), activation)
    return z.masked_fill(~keep, 0.0).sum(dim=1)
