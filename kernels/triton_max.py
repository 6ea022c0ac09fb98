"""Fused SPLADE LM-head kernels in Triton: ``hidden @ W.T + b`` → running max → activation.

Importing this module does not import Triton; the kernels are built on first use
(``_kernels()``), so ``import lsr.kernels`` works where Triton is absent. On CPU the kernels
run under the Triton interpreter (``TRITON_INTERPRET=1`` set before Triton is imported).

Forward (``_fwd``): one program per (document b, vocabulary tile). It walks the document's
positions in blocks of ``BLOCK_S`` up to the last unmasked position, computes the
``[BLOCK_S, BLOCK_V]`` logits tile with ``tl.dot`` (fp32 accumulation, bias added per
position), masks padding to -inf, takes the block max with first-index arg-max and folds it
into a running max that starts at 0 (strict ``>`` keeps the lowest position on ties).
It writes the pre-activation max ``m`` and its position (int32); the activation is applied
to ``m`` in torch (``torch.log1p``: exact for small ``m``, where ``log(1 + m)`` in fp32 is not).
Documents are the fastest grid axis so the B programs sharing one W tile run together and
reuse it from L2.

Backward, with ``g = grad · act'(m) · [m > 0]`` on ``[B, V]`` (torch, elementwise):

* ``dbias = g.sum(0)`` (torch).
* ``_dw``: one program per (vocab tile, D tile); loops over documents, gathers
  ``hidden[b, argmax[b, v], d-tile]`` and accumulates ``g[b, v] · h`` in registers.
  Each program owns its output tile: no atomics.
* ``_dh``: one program per (b, position block, D tile); loops over vocabulary tiles and
  builds ``G[s, v] = g[b, v] · [argmax[b, v] == s]`` in registers, then
  ``acc += G @ W[v-tile, d-tile]`` with ``tl.dot``. This is the "scatter as a matmul" form:
  many vocabulary entries sharing one arg-max position add up inside the dot, never
  through contended atomics, and the ``[B, S, V]`` tensor never exists. Vocabulary tiles
  without any hit in the position block are skipped (SPLADE outputs are sparse).
"""

from __future__ import annotations

import functools
import os

import torch

from ._common import activation_grad, apply_activation, check_args


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _kernels():
    import triton
    import triton.language as tl

    if _interpreting():
        fwd_configs = [triton.Config({"BLOCK_S": 16, "BLOCK_V": 32, "BLOCK_D": 16}, num_warps=4)]
        dw_configs = [triton.Config({"BLOCK_V": 32, "BLOCK_D": 16}, num_warps=4)]
        dh_configs = [triton.Config({"BLOCK_S": 16, "BLOCK_V": 32, "BLOCK_D": 16}, num_warps=4)]
    else:
        fwd_configs = [
            triton.Config({"BLOCK_S": bs, "BLOCK_V": bv, "BLOCK_D": bd}, num_warps=w, num_stages=st)
            for bs, bv, bd, w, st in [
                (64, 128, 64, 4, 3),
                (128, 128, 64, 8, 3),
                (64, 256, 64, 8, 3),
                (128, 64, 64, 4, 4),
                (32, 128, 64, 4, 4),
                # fp32 ("ieee") dots run on FMA units: short reduction tiles keep the operands
                # in registers (configs that do not fit are skipped by the autotuner)
                (64, 64, 32, 4, 2),
                (32, 128, 32, 4, 2),
                (64, 128, 16, 8, 2),
            ]
        ]
        dw_configs = [
            triton.Config({"BLOCK_V": bv, "BLOCK_D": bd}, num_warps=w)
            for bv, bd, w in [(64, 64, 4), (128, 64, 4), (64, 128, 4), (32, 128, 4)]
        ]
        dh_configs = [
            triton.Config({"BLOCK_S": bs, "BLOCK_V": bv, "BLOCK_D": bd}, num_warps=w, num_stages=st)
            for bs, bv, bd, w, st in [
                (64, 64, 128, 4, 3),
                (64, 128, 64, 4, 3),
                (128, 64, 128, 8, 3),
                (32, 128, 128, 4, 3),
            ]
        ]

    # S is not a key: the loops stop at each document's last real position, and encoding with
    # dynamic padding would otherwise re-tune for every new padded length
    @triton.autotune(configs=fwd_configs, key=["D", "V", "HAS_BIAS", "PRECISION"])
    @triton.jit
    def _fwd(
        h_ptr, w_ptr, b_ptr, mask_ptr, seqend_ptr, m_ptr, idx_ptr,
        S, D, V,
        s_hb, s_hs, s_hd, s_wv, s_wd, s_mb, s_ms,
        HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_S: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_b = tl.program_id(0)
        pid_v = tl.program_id(1)
        offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        v_ok = offs_v < V
        run_max = tl.zeros([BLOCK_V], dtype=tl.float32)
        run_idx = tl.zeros([BLOCK_V], dtype=tl.int32)
        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_v, mask=v_ok, other=0.0).to(tl.float32)
        seq_end = tl.load(seqend_ptr + pid_b)
        h_base = h_ptr + pid_b.to(tl.int64) * s_hb
        for s0 in range(0, seq_end, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            s_ok = offs_s < seq_end
            acc = tl.zeros([BLOCK_S, BLOCK_V], dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                d_ok = offs_d < D
                h = tl.load(
                    h_base + offs_s[:, None] * s_hs + offs_d[None, :] * s_hd,
                    mask=s_ok[:, None] & d_ok[None, :], other=0.0,
                )
                w = tl.load(
                    w_ptr + offs_v[None, :].to(tl.int64) * s_wv + offs_d[:, None] * s_wd,
                    mask=d_ok[:, None] & v_ok[None, :], other=0.0,
                )
                if UPCAST:
                    h = h.to(tl.float32)
                    w = w.to(tl.float32)
                acc = tl.dot(h, w, acc, input_precision=PRECISION)
            if HAS_BIAS:
                acc = acc + bias[None, :]
            mk = tl.load(mask_ptr + pid_b * s_mb + offs_s * s_ms, mask=s_ok, other=0)
            valid = (mk != 0) & s_ok
            acc = tl.where(valid[:, None], acc, float("-inf"))
            blk_max, blk_idx = tl.max(acc, axis=0, return_indices=True, return_indices_tie_break_left=True)
            upd = blk_max > run_max
            run_max = tl.where(upd, blk_max, run_max)
            run_idx = tl.where(upd, blk_idx.to(tl.int32) + s0, run_idx)
        out_off = pid_b.to(tl.int64) * V + offs_v
        tl.store(m_ptr + out_off, run_max, mask=v_ok)
        tl.store(idx_ptr + out_off, run_idx, mask=v_ok)

    @triton.autotune(configs=dw_configs, key=["D", "V"])
    @triton.jit
    def _dw(
        h_ptr, g_ptr, idx_ptr, dw_ptr,
        B, D, V,
        s_hb, s_hs, s_hd,
        BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_v = tl.program_id(0)
        pid_d = tl.program_id(1)
        offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        v_ok = offs_v < V
        d_ok = offs_d < D
        acc = tl.zeros([BLOCK_V, BLOCK_D], dtype=tl.float32)
        # per-document pointers advance by one row each step (64-bit pointer arithmetic: no
        # b * stride product that could overflow int32 on large batches)
        g_row = g_ptr + offs_v
        i_row = idx_ptr + offs_v
        h_doc = h_ptr
        for b in range(0, B):
            g = tl.load(g_row, mask=v_ok, other=0.0)
            pos = tl.load(i_row, mask=v_ok, other=0)
            hit = v_ok & (g != 0.0)
            h = tl.load(
                h_doc + pos[:, None].to(tl.int64) * s_hs + offs_d[None, :] * s_hd,
                mask=hit[:, None] & d_ok[None, :], other=0.0,
            ).to(tl.float32)
            acc += g[:, None] * h
            g_row += V
            i_row += V
            h_doc += s_hb
        tl.store(
            dw_ptr + offs_v[:, None].to(tl.int64) * D + offs_d[None, :], acc,
            mask=v_ok[:, None] & d_ok[None, :],
        )

    @triton.autotune(configs=dh_configs, key=["S_BUCKET", "D", "V", "PRECISION"])
    @triton.jit
    def _dh(
        w_ptr, g_ptr, idx_ptr, dh_ptr,
        S, D, V, S_BUCKET,
        s_wv, s_wd,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_S: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_s = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_b = tl.program_id(2)
        offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        s_ok = offs_s < S
        d_ok = offs_d < D
        s_lo = pid_s * BLOCK_S
        acc = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
        base = pid_b.to(tl.int64) * V
        for v0 in range(0, V, BLOCK_V):
            offs_v = v0 + tl.arange(0, BLOCK_V)
            v_ok = offs_v < V
            g = tl.load(g_ptr + base + offs_v, mask=v_ok, other=0.0)
            pos = tl.load(idx_ptr + base + offs_v, mask=v_ok, other=-1)
            live = (g != 0.0) & (pos >= s_lo) & (pos < s_lo + BLOCK_S)
            if tl.sum(live.to(tl.int32), axis=0) > 0:
                sel = (pos[None, :] == offs_s[:, None]) & live[None, :]
                w = tl.load(
                    w_ptr + offs_v[:, None].to(tl.int64) * s_wv + offs_d[None, :] * s_wd,
                    mask=v_ok[:, None] & d_ok[None, :], other=0.0,
                )
                G = tl.where(sel, g[None, :], 0.0).to(w.dtype)
                if UPCAST:
                    G = G.to(tl.float32)
                    w = w.to(tl.float32)
                acc = tl.dot(G, w, acc, input_precision=PRECISION)
        tl.store(
            dh_ptr + pid_b.to(tl.int64) * S * D + offs_s[:, None] * D + offs_d[None, :], acc,
            mask=s_ok[:, None] & d_ok[None, :],
        )

    return triton, _fwd, _dw, _dh


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact fp32 products (no TF32) so results match the reference to ~1e-6.
    return "ieee" if dtype == torch.float32 else "tf32"


def _upcast(dtype: torch.dtype) -> bool:
    # The Triton interpreter's tl.dot mishandles bfloat16 operands (numpy has no bf16):
    # upcast them to fp32 there. Compiled kernels keep native bf16 tensor-core dots.
    return dtype == torch.bfloat16 and _interpreting()


def _prepare(hidden, weight, bias):
    """Common dtype for the dot operands (fp16/bf16/fp32); the kernels take strides, so
    nothing is copied when the dtypes already agree."""
    dt = torch.promote_types(hidden.dtype, weight.dtype)
    if dt == torch.float64:
        dt = torch.float32  # tl.dot has no fp64; accumulate in fp32
    if dt not in (torch.float16, torch.bfloat16, torch.float32):
        dt = torch.float32
    h = hidden.to(dt)
    w = weight.to(dt)
    b = bias.contiguous() if bias is not None else None
    return h, w, b


def _device_guard(t: torch.Tensor):
    """Launch on the tensors' GPU (Triton launches on the current device)."""
    import contextlib

    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _forward(hidden, weight, bias, mask_bool, activation):
    triton, fwd, _, _ = _kernels()
    B, S, D = hidden.shape
    V = weight.shape[0]
    h, w, b = _prepare(hidden, weight, bias)
    mask_i = mask_bool.to(torch.int8).contiguous()
    # One past the last unmasked position of each document: the kernel stops there.
    pos = torch.arange(1, S + 1, device=hidden.device, dtype=torch.int32)
    seq_end = torch.zeros(B, dtype=torch.int32, device=hidden.device)
    if S > 0:
        seq_end = (mask_bool.to(torch.int32) * pos).amax(dim=1).to(torch.int32).contiguous()
    m = torch.zeros((B, V), dtype=torch.float32, device=hidden.device)
    idx = torch.zeros((B, V), dtype=torch.int32, device=hidden.device)
    if B and V:
        grid = lambda meta: (B, triton.cdiv(V, meta["BLOCK_V"]))  # noqa: E731
        with _device_guard(hidden):
            fwd[grid](
                h, w, b if b is not None else w, mask_i, seq_end, m, idx,
                S, D, V,
                h.stride(0), h.stride(1), h.stride(2), w.stride(0), w.stride(1),
                mask_i.stride(0), mask_i.stride(1),
                HAS_BIAS=b is not None, PRECISION=_precision(h.dtype), UPCAST=_upcast(h.dtype),
            )
    return apply_activation(m, activation), m, idx


class _TritonMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, mask_bool, activation):
        out, m, idx = _forward(hidden, weight, bias, mask_bool, activation)
        ctx.activation = activation
        ctx.has_bias = bias is not None
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.save_for_backward(hidden, weight, m, idx)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        triton, _, dw_k, dh_k = _kernels()
        hidden, weight, m, idx = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        g = (grad.float() * activation_grad(m, ctx.activation)).contiguous()
        B, S, D = hidden.shape
        V = weight.shape[0]
        d_hidden = d_weight = d_bias = None
        if need_b and ctx.has_bias:
            d_bias = g.sum(0).to(ctx.dtypes[2])
        if need_h or need_w:
            h, w, _ = _prepare(hidden, weight, None)
            if need_w:
                dw = torch.zeros((V, D), dtype=torch.float32, device=g.device)
                grid = lambda meta: (triton.cdiv(V, meta["BLOCK_V"]), triton.cdiv(D, meta["BLOCK_D"]))  # noqa: E731
                if dw.numel() and B:
                    with _device_guard(h):
                        dw_k[grid](h, g, idx, dw, B, D, V, h.stride(0), h.stride(1), h.stride(2))
                d_weight = dw.to(ctx.dtypes[1])
            if need_h:
                dh = torch.zeros((B, S, D), dtype=torch.float32, device=g.device)
                grid = lambda meta: (  # noqa: E731
                    triton.cdiv(S, meta["BLOCK_S"]), triton.cdiv(D, meta["BLOCK_D"]), B,
                )
                if dh.numel() and V:
                    with _device_guard(w):
                        dh_k[grid](w, g, idx, dh, S, D, V, triton.next_power_of_2(S), w.stride(0),
                                   w.stride(1), PRECISION=_precision(w.dtype), UPCAST=_upcast(w.dtype))
                d_hidden = dh.to(ctx.dtypes[0])
        return d_hidden, d_weight, d_bias, None, None


def splade_max_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    activation: str = "relu",
    *,
    pooling: str = "max",
) -> torch.Tensor:
    """Triton SPLADE head (``pooling="max"`` only); returns float32 ``[B, V]``.

    Works on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1``. Sum pooling is not
    implemented in Triton: :func:`lsr.kernels.splade_max` routes it to the chunked path.
    """
    _, _, _, _, m = check_args(hidden, weight, bias, mask, activation, pooling)
    if pooling != "max":
        raise NotImplementedError("splade_max_triton supports pooling='max' only")
    return _TritonMax.apply(hidden, weight, bias, m, activation)
