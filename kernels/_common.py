"""Shared helpers for the SPLADE head kernels: argument checks and the activations.

Activations follow sentence-transformers 6.2.0 ``SpladePooling`` exactly, where the name
is the transform applied *before* the common ``log1p``:

* ``"relu"``       -> ``log1p(relu(x))``          (standard SPLADE)
* ``"log1p_relu"`` -> ``log1p(log1p(relu(x)))``   (OpenSearch SPLADE variant: a second log1p)

Both are monotone non-decreasing in ``x``, so for ``max`` pooling
``max_s act(x_s) == act(max(0, max_s x_s))``: the kernels reduce the raw logits and apply the
activation once on the ``[B, V]`` result.
"""

from __future__ import annotations

import contextlib
import threading

import torch

ACTIVATIONS = ("relu", "log1p_relu")
POOLINGS = ("max", "sum")


def check_args(hidden, weight, bias, mask, activation, pooling):
    """Validate shapes/options; returns (B, S, D, V) and a boolean mask [B, S]."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, S, D], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [V, D], got shape {tuple(weight.shape)}")
    B, S, D = hidden.shape
    V = weight.shape[0]
    if weight.shape[1] != D:
        raise ValueError(f"hidden dim {D} does not match weight dim {weight.shape[1]}")
    if bias is not None and tuple(bias.shape) != (V,):
        raise ValueError(f"bias must be [V]={V}, got shape {tuple(bias.shape)}")
    if mask is None:
        mask = torch.ones(B, S, dtype=torch.bool, device=hidden.device)
    else:
        if tuple(mask.shape) != (B, S):
            raise ValueError(f"mask must be [B, S]=({B}, {S}), got shape {tuple(mask.shape)}")
        mask = mask.to(device=hidden.device) != 0
    return B, S, D, V, mask


def compute_dtype(*tensors) -> torch.dtype:
    """float64 if any input is float64 (gradcheck), else float32 (fp32 accumulation)."""
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def apply_activation(m: torch.Tensor, activation: str) -> torch.Tensor:
    """act(m) for m >= 0 (already relu'd)."""
    out = torch.log1p(m)
    if activation == "log1p_relu":
        out = torch.log1p(out)
    return out


def activation_grad(m: torch.Tensor, activation: str) -> torch.Tensor:
    """d act / d m at m (m >= 0), zero where m <= 0 (relu's sub-gradient at 0 is 0)."""
    mp = m.clamp_min(0)
    d = torch.reciprocal(1.0 + mp)
    if activation == "log1p_relu":
        d = d * torch.reciprocal(1.0 + torch.log1p(mp))
    return torch.where(m > 0, d, torch.zeros_like(d))


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 1


@contextlib.contextmanager
def torch_single_threaded():
    """torch intra-op threads set to 1 for the block (process-wide), restored when the last of
    any overlapping blocks (on other Python threads) ends."""
    global _threads_users, _threads_saved
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)
