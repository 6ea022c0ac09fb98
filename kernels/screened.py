"""Exact screened CPU head (max pooling, fp32 inputs, no gradient): bf16 screening, a
certified bound, fp32 rescoring of the few terms that can be non-zero.

``w[b, v] = act(max(0, max_s h_bs·w_v + bias_v))`` is 0 for almost every term (SPLADE
vectors keep ~1-5% of the 30,522 terms). On a CPU with a native bf16 dot product
(AVX512-BF16 or AMX) a bf16 gemm runs at about twice the fp32 rate, so:

1. **Screen**: the blocked path's L2-sized tiles (:func:`.blocked.tiles_max`) on bf16-rounded
   ``h`` and ``W`` (fp32 accumulation, each logit rounded to bf16 once) give
   ``A[b, v] = max_s a_bsv``.
2. **Certify**: ``E[b, v]`` below bounds ``|x − a|`` for every position, ``x = h·w`` exact.
   Term ``v`` of document ``b`` is certified zero when ``A + E + bias_v ≤ 0``.
3. **Rescore**: each document's other terms (the candidates) are recomputed in fp32,
   ``h_b[L_b, D] @ W[C_b].T``, max over positions, bias, clamp; certified terms are exactly 0.
   The result is the fp32 algorithm's (the tests hold it to the reference within 1e-5).

The bound. ``u = 2^-8`` (bf16 unit roundoff), ``γ = D·2^-24 / (1 − D·2^-24)`` (fp32
summation of D terms in any order). For one position, with ``h̃ = bf(h)``, ``w̃ = bf(w)``
(``|h̃_i − h_i| ≤ u|h_i|``), ``f = fl32(h̃·w̃)`` (products of two bf16 are exact in fp32)
and ``a = bf(f)``:

* ``|h̃·w̃ − h·w| ≤ (2u + u²) Σ|h_i w_i| ≤ (2u + u²)‖h‖‖w‖`` (Cauchy-Schwarz);
* ``|f − h̃·w̃| ≤ γ Σ|h̃_i w̃_i| ≤ γ(1 + u)²‖h‖‖w‖``;
* ``|a − f| ≤ u|f| ≤ u/(1 − u)·|a|``;
* the fp32 logit ``r`` that the reference (and the rescoring) computes is within
  ``γ‖h‖‖w‖`` of ``x``; and bf16 dot products flush denormal inputs and outputs to zero,
  which adds at most ``D·2^-125·(1 + ‖h‖)(1 + ‖w‖)``.

So ``r ≤ a + u/(1−u)·|a| + c‖h‖‖w‖ + τ`` with ``c = 2u + u² + γ(1 + u)² + γ`` and the
denormal term ``τ``. ``a ↦ a + u/(1−u)·|a|`` is increasing, and ``‖h_bs‖ ≤ H_b = max_s
‖h_bs‖``, so every position's ``r_s ≤ A + u/(1−u)·|A| + c·H_b‖w_v‖ + τ``; and
``fl32(r_s + bias_v) > 0`` only when ``r_s + bias_v > 0``. ``E`` is those error terms
times a safety factor of 2, which also covers the fp32 rounding of the norms and of the
test ``A + E + bias ≤ 0`` itself (each ≤ 2^-20 relative, against error terms ≥ 2^-7·…).
A NaN anywhere makes the test false, i.e. a candidate; non-finite norms of ``h`` or ``W``
send the whole call to the plain fp32 path.
"""

from __future__ import annotations

import functools
import threading
import weakref

import torch

from ._common import apply_activation, check_args
from .blocked import _ROWS, _TILE_ELEMS, _parallel, splade_max_blocked, tiles_max
from .chunked import _gather, _needs_grad

U = 2.0**-8  # bf16 unit roundoff
SAFETY = 2.0
# candidate columns rescored per matmul: [L, 2048] fp32 logits, at most 2 MiB at L = 256
_RESCORE_COLS = 2048


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has a native bf16 dot product (AVX512-BF16 or AMX-BF16): there a bf16
    gemm runs at ~2x the fp32 rate; elsewhere oneDNN emulates it and screening would lose.
    Read from /proc/cpuinfo (Linux); False where that is missing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def screen_applies(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The screened head's conditions: CPU fp32 inputs, no gradient, a native bf16 gemm."""
    return (
        hidden.device.type == "cpu"
        and hidden.dtype == torch.float32
        and weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and not _needs_grad(hidden, weight, bias)
        and native_bf16()
    )


_cache_lock = threading.Lock()
_cache: dict = {}


def _bf16_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bf16 copy of weight, its rows' L2 norms)``, kept for the last weight seen: the
    encoder passes the same tensor object every batch. A hit needs that very object alive
    (a weak reference, so a new tensor at a freed address never matches) with the same
    storage and ``_version`` (an in-place update bumps it)."""
    key = (weight.data_ptr(), tuple(weight.shape), weight.stride(), weight._version)
    with _cache_lock:
        ref = _cache.get("ref")
        if ref is None or ref() is not weight or _cache["key"] != key:
            _cache.update(ref=weakref.ref(weight), key=key, value=(weight.to(torch.bfloat16), torch.linalg.vector_norm(weight, dim=1)))
        return _cache["value"]


def screen(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor,
    rows: int = _ROWS,
    tile_elems: int = _TILE_ELEMS,
    workers: int | None = None,
) -> tuple[torch.Tensor, list[int], torch.Tensor] | None:
    """Steps 1-2: ``(h_tok [N, D] fp32, lengths, candidates [B, V] bool)``; a term that is not
    a candidate is certified zero. None when ``h`` or ``W`` has a non-finite norm."""
    h_tok, lengths = _gather(hidden, mask, torch.float32)
    w16, w_norm = _bf16_weight(weight)
    h_norm = torch.linalg.vector_norm(h_tok, dim=1)
    if not (torch.isfinite(h_norm).all() and torch.isfinite(w_norm).all()):
        return None
    lens = torch.tensor(lengths, dtype=torch.int64)
    h_max = torch.segment_reduce(h_norm, "max", lengths=lens, unsafe=True, initial=0.0)  # [B], 0 if empty
    top, _ = tiles_max(h_tok.to(torch.bfloat16), lengths, w16, False, rows, tile_elems, workers)
    A = top.float()  # max_s a_bsv (-inf for an empty document)
    D = hidden.shape[-1]
    gamma = D * 2.0**-24 / (1 - D * 2.0**-24)
    c = 2 * U + U * U + gamma * (1 + U) ** 2 + gamma
    tau = D * 2.0**-125
    hw = h_max[:, None] * w_norm[None, :]
    bound = A + SAFETY * (U / (1 - U) * A.abs() + c * hw + tau * (1 + h_max[:, None] + w_norm[None, :] + hw))
    if bias is not None:
        bound += bias
    cand = ~(bound <= 0)  # NaN: a candidate
    cand[lens == 0] = False  # an empty document's terms are 0
    return h_tok, lengths, cand


def splade_max_screened(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    activation: str = "relu",
    *,
    pooling: str = "max",
    rows: int = _ROWS,
    tile_elems: int = _TILE_ELEMS,
    workers: int | None = None,
) -> torch.Tensor:
    """Screened SPLADE head (same contract and result as :func:`lsr.kernels.splade_max` for
    max pooling); fp32 inputs without gradient only. ``rows``, ``tile_elems`` and ``workers``
    as in :func:`.blocked.splade_max_blocked` (workers also share the rescoring's documents).
    """
    B, _, _, V, m = check_args(hidden, weight, bias, mask, activation, pooling)
    if pooling != "max":
        raise ValueError("the screened path implements max pooling only")
    if hidden.dtype != torch.float32 or weight.dtype != torch.float32 or _needs_grad(hidden, weight, bias):
        raise ValueError("the screened path takes fp32 hidden states and weight, without gradient")
    screened = screen(hidden, weight, bias, m, rows, tile_elems, workers)
    if screened is None:
        return splade_max_blocked(hidden, weight, bias, mask, activation, rows=rows, tile_elems=tile_elems, workers=workers)
    h_tok, lengths, cand = screened
    top = torch.zeros((B, V), dtype=torch.float32)
    starts = [0] * B
    for i in range(1, B):
        starts[i] = starts[i - 1] + lengths[i - 1]

    def run(next_doc):
        for b in iter(next_doc, None):
            cols = cand[b].nonzero().squeeze(1)
            if lengths[b] == 0 or cols.numel() == 0:
                continue
            h_b = h_tok[starts[b] : starts[b] + lengths[b]]
            for c0 in range(0, cols.numel(), _RESCORE_COLS):
                idx = cols[c0 : c0 + _RESCORE_COLS]
                best = torch.mm(h_b, weight.index_select(0, idx).T).amax(0)
                if bias is not None:
                    best += bias.index_select(0, idx)
                top[b].index_copy_(0, idx, best.clamp_min_(0.0))

    _parallel(run, B, workers)
    return apply_activation(top, activation)
