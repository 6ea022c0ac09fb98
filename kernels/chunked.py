"""Chunked PyTorch path (CPU, or CUDA without Triton): tiles the vocabulary, never builds [B, S, V].

Forward
    1. Gather the unmasked rows of ``hidden`` into ``H_tok [N, D]`` (N = number of real
       tokens; padding costs nothing), documents stay contiguous in row-major order.
    2. For each vocabulary tile ``[v0, v1)`` compute ``H_tok @ W[v0:v1].T`` (``[N, T]``) and
       reduce it per document with one op per tile (``view(B, L, T).max`` for equal lengths,
       else ``torch.segment_reduce``; the first-index arg-max, when gradients are needed, is a
       second segment max over ``(N - row) * [logit == segment max]``), or segment-sum it.
    3. ``max``: bias is added on the ``[B, V]`` result (adding a per-v constant commutes with
       the max over positions, rounding included because fp addition is monotone), then
       ``clamp_min(0)`` (running max starting at 0) and the activation on ``[B, V]`` only.
       ``sum``: bias and activation are applied per tile before the segment sum.

Backward (``max``)
    Only the arg-max position of each (b, v) receives gradient. With
    ``g = grad * act'(m) * [m > 0]`` on ``[B, V]`` the non-zero entries ``(b, v)`` are
    assembled into a sparse matrix ``G [N, V]`` (one non-zero per (b, v), at the arg-max
    row) in CSR form, and the two products run as sparse-dense matmuls (MKL on CPU):
    ``dW = G^T @ H_tok`` and ``dH_tok = G @ W`` — O(nnz(g) · D) work instead of dense
    ``[N, V] @ [V, D]`` products, and many v sharing one arg-max row are summed inside the
    CSR row product rather than through contended scatter-adds.
Backward (``sum``)
    Recomputes each logits tile and uses dense tile matmuls (the gradient is dense).

Accumulation is float32 (float64 when an input is float64, for gradcheck); the output is
float32/float64, gradients come back in each input's dtype.
"""

from __future__ import annotations

import warnings

import torch

from ._common import activation_grad, apply_activation, check_args, compute_dtype

# Elements of one [N, T] logits tile (~16 MiB at fp32): small enough that the tile is still in
# the last-level cache when it is reduced (measured on a 2-core AVX2 machine at the MiniLM
# head: 148 GFLOP/s at 4M elements vs 122 at 16M).
_TILE_ELEMS = 4 * 1024 * 1024
# Ragged documents are padded to the longest one with copies of one of their own rows (which
# leaves every max unchanged) when that adds at most this share of rows: one view-max per
# tile then replaces the segment reduction, which costs more than the extra rows.
_PAD_SLACK = 0.25


def _tile_size(n_tok: int, V: int, tile: int | None) -> int:
    if tile is not None:
        return max(1, int(tile))
    t = _TILE_ELEMS // max(n_tok, 1)
    t = max(256, min(4096, (t // 256) * 256 or 256))
    return min(t, max(V, 1))


def _gather(hidden, m, dt):
    """Unmasked rows [N, D] (compute dtype, documents contiguous) and per-document lengths."""
    h_tok = hidden[m]
    if h_tok.dtype != dt:
        h_tok = h_tok.to(dt)
    return h_tok, m.sum(dim=1).tolist()


def _pad_with_duplicates(h_tok, lengths):
    """[B * L, D] rows, every document padded to the longest length L with copies of its
    last row (a max over the rows is unchanged by duplicates)."""
    dev = h_tok.device
    lens = torch.tensor(lengths, device=dev)
    starts = torch.cumsum(lens, 0) - lens
    L = max(lengths)
    offs = torch.minimum(torch.arange(L, device=dev)[None, :], (lens - 1)[:, None])
    return h_tok[(starts[:, None] + offs).reshape(-1)], [L] * len(lengths)


def _max_forward(hidden, weight, bias, m, activation, dt, need_idx, tile):
    B, S, D = hidden.shape
    V = weight.shape[0]
    h_tok, lengths = _gather(hidden, m, dt)
    if not need_idx and lengths and min(lengths) > 0 and max(lengths) * B <= (1 + _PAD_SLACK) * h_tok.shape[0]:
        h_tok, lengths = _pad_with_duplicates(h_tok, lengths)
    n_tok = h_tok.shape[0]
    top = torch.full((B, V), float("-inf"), dtype=dt, device=hidden.device)
    rows = torch.zeros((B, V), dtype=torch.int64, device=hidden.device) if need_idx else None
    T = _tile_size(n_tok, V, tile)
    uniform = n_tok > 0 and len(set(lengths)) == 1
    if n_tok > 0 and not uniform:
        lengths_t = torch.tensor(lengths, device=hidden.device)
        if need_idx:
            doc_of_row = torch.repeat_interleave(torch.arange(B, device=hidden.device), lengths_t)
            rev_rows = (n_tok - torch.arange(n_tok, device=hidden.device, dtype=dt)).unsqueeze(1)
    if n_tok > 0:
        for v0 in range(0, V, T):
            v1 = min(V, v0 + T)
            w_t = weight[v0:v1]
            if w_t.dtype != dt:
                w_t = w_t.to(dt)
            logits = h_tok @ w_t.T  # [N, T]
            if uniform:
                L = lengths[0]
                view = logits.view(B, L, v1 - v0)
                if need_idx:
                    vals, idx = view.max(dim=1)
                    rows[:, v0:v1] = idx + torch.arange(B, device=idx.device).unsqueeze(1) * L
                else:
                    vals = view.amax(dim=1)
                top[:, v0:v1] = vals
            else:
                # One segment reduction per tile (many small per-document ops are slow on a
                # contended CPU: each is a parallel region).
                vals = torch.segment_reduce(logits, "max", lengths=lengths_t, axis=0)
                if need_idx:
                    # First (lowest) row reaching the segment max: max of (N - row) over ties.
                    buf = vals.index_select(0, doc_of_row)
                    eq = logits == buf
                    torch.mul(eq, rev_rows, out=buf)
                    del eq
                    first = torch.segment_reduce(buf, "max", lengths=lengths_t, axis=0)
                    del buf
                    first.clamp_(1, n_tok)  # empty documents: -inf (their gradient is 0)
                    rows[:, v0:v1] = (n_tok - first).to(torch.int64)
                top[:, v0:v1] = vals
            del logits
        if not uniform and min(lengths) == 0:
            top[lengths_t == 0] = float("-inf")  # whatever segment_reduce gives empty segments
    if bias is not None:
        top += bias.to(dt)
    top.clamp_min_(0.0)  # running max starts at 0; all-masked rows (-inf) become 0
    return top, rows, h_tok


def _sum_forward(hidden, weight, bias, m, activation, dt, tile):
    B, S, D = hidden.shape
    V = weight.shape[0]
    h_tok, lengths = _gather(hidden, m, dt)
    n_tok = h_tok.shape[0]
    out = torch.zeros((B, V), dtype=dt, device=hidden.device)
    if n_tok == 0:
        return out, h_tok
    T = _tile_size(n_tok, V, tile)
    doc_of_row = torch.repeat_interleave(
        torch.arange(B, device=hidden.device), torch.tensor(lengths, device=hidden.device)
    )
    for v0 in range(0, V, T):
        v1 = min(V, v0 + T)
        w_t = weight[v0:v1].to(dt)
        if bias is not None:
            logits = torch.addmm(bias[v0:v1].to(dt), h_tok, w_t.T)
        else:
            logits = h_tok @ w_t.T
        z = apply_activation(logits.relu_(), activation)
        out[:, v0:v1].index_add_(0, doc_of_row, z)
        del logits, z
    return out, h_tok


def _csr(counts, cols, vals, size):
    crow = torch.zeros(size[0] + 1, dtype=torch.int64, device=vals.device)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, cols, vals, size=size, check_invariants=False)


def _spmm(sparse, dense):
    """sparse CSR [M, K] @ dense [K, D] -> dense [M, D] (MKL / cuSPARSE)."""
    if sparse.values().numel() == 0:
        return torch.zeros((sparse.shape[0], dense.shape[1]), dtype=dense.dtype, device=dense.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return sparse @ dense


class _ChunkedMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, mask, activation, tile):
        dt = compute_dtype(hidden, weight, bias)
        top, rows, h_tok = _max_forward(hidden, weight, bias, mask, activation, dt, True, tile)
        ctx.activation = activation
        ctx.has_bias = bias is not None
        ctx.hidden_meta = (hidden.shape, hidden.dtype)
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.save_for_backward(h_tok, weight, mask, top, rows)
        return apply_activation(top, activation)

    @staticmethod
    def backward(ctx, grad):
        h_tok, weight, mask, top, rows = ctx.saved_tensors
        dt = top.dtype
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        g = grad.to(dt) * activation_grad(top, ctx.activation)
        d_bias = g.sum(0).to(ctx.bias_dtype) if (need_b and ctx.has_bias) else None
        d_hidden = d_weight = None
        if need_h or need_w:
            n_tok = h_tok.shape[0]
            V = weight.shape[0]
            # G^T [V, N] in CSR: v-major nonzeros of g; within a v the rows grow with b
            # (documents are contiguous in H_tok), so the column indices are already sorted.
            vi, bi = g.T.nonzero(as_tuple=True)
            cols = rows[bi, vi]
            vals = g[bi, vi]
            if need_w:
                gt = _csr(torch.bincount(vi, minlength=V), cols, vals, (V, n_tok))
                d_weight = _spmm(gt, h_tok).to(weight.dtype)  # dW = G^T @ H_tok
            if need_h:
                order = torch.argsort(cols * V + vi)  # row-major for G [N, V]
                r_sorted = cols[order]
                gm = _csr(torch.bincount(r_sorted, minlength=n_tok), vi[order], vals[order], (n_tok, V))
                w = weight if weight.dtype == dt else weight.to(dt)
                dh_tok = _spmm(gm, w)  # dH_tok = G @ W
                shape, hdtype = ctx.hidden_meta
                d_hidden = torch.zeros(shape, dtype=hdtype, device=h_tok.device)
                d_hidden[mask] = dh_tok.to(hdtype)
        return d_hidden, d_weight, d_bias, None, None, None


class _ChunkedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, mask, activation, tile):
        dt = compute_dtype(hidden, weight, bias)
        out, h_tok = _sum_forward(hidden, weight, bias, mask, activation, dt, tile)
        ctx.activation = activation
        ctx.tile = tile
        ctx.hidden_meta = (hidden.shape, hidden.dtype)
        ctx.save_for_backward(h_tok, weight, bias, mask)
        return out

    @staticmethod
    def backward(ctx, grad):
        h_tok, weight, bias, mask = ctx.saved_tensors
        dt = h_tok.dtype
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        V = weight.shape[0]
        n_tok = h_tok.shape[0]
        grad = grad.to(dt)
        lengths = mask.sum(dim=1)
        doc_of_row = torch.repeat_interleave(torch.arange(mask.shape[0], device=mask.device), lengths)
        dh_tok = torch.zeros_like(h_tok) if need_h else None
        dw = torch.zeros(weight.shape, dtype=dt, device=weight.device) if need_w else None
        db = torch.zeros(V, dtype=dt, device=weight.device) if (need_b and bias is not None) else None
        if n_tok > 0 and (need_h or need_w or db is not None):
            T = _tile_size(n_tok, V, ctx.tile)
            for v0 in range(0, V, T):
                v1 = min(V, v0 + T)
                w_t = weight[v0:v1].to(dt)
                if bias is not None:
                    logits = torch.addmm(bias[v0:v1].to(dt), h_tok, w_t.T)
                else:
                    logits = h_tok @ w_t.T
                gt = activation_grad(logits, ctx.activation)
                gt *= grad[:, v0:v1].index_select(0, doc_of_row)
                if need_h:
                    dh_tok.addmm_(gt, w_t)
                if need_w:
                    dw[v0:v1] = gt.T @ h_tok
                if db is not None:
                    db[v0:v1] = gt.sum(0)
                del logits, gt
        d_hidden = d_weight = d_bias = None
        if need_h:
            shape, hdtype = ctx.hidden_meta
            d_hidden = torch.zeros(shape, dtype=hdtype, device=h_tok.device)
            d_hidden[mask] = dh_tok.to(hdtype)
        if need_w:
            d_weight = dw.to(weight.dtype)
        if db is not None:
            d_bias = db.to(bias.dtype)
        return d_hidden, d_weight, d_bias, None, None, None


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def splade_max_chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    activation: str = "relu",
    *,
    pooling: str = "max",
    tile: int | None = None,
) -> torch.Tensor:
    """Chunked-vocabulary SPLADE head (same contract as :func:`lsr.kernels.splade_max`).

    ``tile`` overrides the vocabulary tile width (default: sized so one ``[N, tile]`` logits
    tile holds about 4M elements, 256 to 4096 wide). Without autograd (``no_grad``/``inference_mode`` or no
    input requiring grad) nothing is saved and no arg-max is tracked.
    """
    _, _, _, _, m = check_args(hidden, weight, bias, mask, activation, pooling)
    dt = compute_dtype(hidden, weight, bias)
    if not _needs_grad(hidden, weight, bias):
        if pooling == "max":
            top, _, _ = _max_forward(hidden, weight, bias, m, activation, dt, False, tile)
            return apply_activation(top, activation)
        out, _ = _sum_forward(hidden, weight, bias, m, activation, dt, tile)
        return out
    fn = _ChunkedMax if pooling == "max" else _ChunkedSum
    return fn.apply(hidden, weight, bias, m, activation, tile)
