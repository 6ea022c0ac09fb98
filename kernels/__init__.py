"""Fused SPLADE LM head: ``hidden @ W.T + b`` → activation → pooling over positions.

``splade_max(hidden[B,S,D], weight[V,D], bias[V] | None, mask[B,S], activation="relu",
pooling="max") -> scores[B,V]`` (float32; float64 for float64 inputs on the CPU path),
differentiable in hidden, weight and bias, without materialising the ``[B, S, V]`` logits.

* ``pooling="max"``: ``w[b,v] = act(max(0, max_{s: mask[b,s]=1} logit[b,s,v]))``; gradient
  flows through the lowest arg-max position only.
* ``pooling="sum"``: ``w[b,v] = sum_{s: mask[b,s]=1} act(relu(logit[b,s,v]))`` (SPLADE v1).
* ``activation="relu"``: ``act = log1p`` i.e. ``log(1 + relu(x))`` (standard SPLADE).
  ``activation="log1p_relu"``: ``act = log1p∘log1p`` i.e. ``log(1 + log(1 + relu(x)))`` —
  the same naming as sentence-transformers' ``SpladePooling`` (OpenSearch SPLADE models).

Dispatch: CUDA tensors with max pooling → Triton (:mod:`.triton_max`), falling back to the
chunked path when Triton cannot be imported; CPU tensors with max pooling → the screened
path (:mod:`.screened`: bf16 screening, a certified bound, fp32 rescoring; exact fp32) when
the inputs are fp32, no gradient is needed and the CPU has a native bf16 dot product (unless
``screen=False`` or the environment sets ``LSR_SCREEN=0``), else the cache-blocked path
(:mod:`.blocked`; bf16 logits tiles when hidden and weight are both bf16 and no gradient is
needed); sum pooling → the chunked torch path (:mod:`.chunked`). Triton is imported lazily,
never by ``import lsr.kernels``.
"""

from __future__ import annotations

import os

import torch

from . import screened
from ._common import ACTIVATIONS, POOLINGS, torch_single_threaded
from .blocked import splade_max_blocked
from .chunked import splade_max_chunked
from .reference import splade_max_reference
from .screened import splade_max_screened
from .triton_max import splade_max_triton

__all__ = [
    "ACTIVATIONS",
    "POOLINGS",
    "splade_max",
    "splade_max_blocked",
    "splade_max_chunked",
    "splade_max_reference",
    "splade_max_screened",
    "splade_max_triton",
    "torch_single_threaded",
    "triton_available",
]

_TRITON_OK: bool | None = None


def triton_available() -> bool:
    """True when ``import triton`` succeeds (checked once, lazily)."""
    global _TRITON_OK
    if _TRITON_OK is None:
        try:
            import triton  # noqa: F401

            _TRITON_OK = True
        except Exception:  # ImportError, or a broken install
            _TRITON_OK = False
    return _TRITON_OK


def splade_max(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    activation: str = "relu",
    *,
    pooling: str = "max",
    screen: bool | None = None,
) -> torch.Tensor:
    """SPLADE pooling of the LM-head logits; see the module docstring for the formulas.

    Args:
        hidden: ``[B, S, D]`` final hidden states (fp32/fp16/bf16; fp64 on CPU).
        weight: ``[V, D]`` LM-head projection.
        bias: ``[V]`` or None.
        mask: ``[B, S]``, 1/True for real tokens, 0/False for padding (None: all real).
        activation: ``"relu"`` (log1p(relu)) or ``"log1p_relu"`` (log1p(log1p(relu))).
        pooling: ``"max"`` (SPLADE v2+) or ``"sum"`` (SPLADE v1).
        screen: allow the screened CPU head where it applies (same fp32 result, faster);
            None: yes unless the environment sets ``LSR_SCREEN=0``.

    Returns:
        ``[B, V]`` float32 scores (≥ 0), accumulated in float32.
    """
    if hidden.is_cuda and pooling == "max" and triton_available():
        return splade_max_triton(hidden, weight, bias, mask, activation, pooling=pooling)
    if not hidden.is_cuda and pooling == "max" and hidden.dim() == 3:
        if screen is None:
            screen = os.environ.get("LSR_SCREEN", "1") != "0"
        if screen and screened.screen_applies(hidden, weight, bias):
            return splade_max_screened(hidden, weight, bias, mask, activation, pooling=pooling)
        return splade_max_blocked(hidden, weight, bias, mask, activation, pooling=pooling)
    return splade_max_chunked(hidden, weight, bias, mask, activation, pooling=pooling)
