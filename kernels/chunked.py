"""Chunked PyTorch path (CPU, or CUDA without Triton): tiles the vocabulary, never builds [B, S, V].

Forward
    1. Gather the unmasked rows of ``hidden`` into ``H_tok [N, D]`` (N = number of real
       tokens; padding costs nothing), documents stay contiguous in row-major order.
    2. For each vocabulary tile ``[v0, v1)`` compute ``H_tok @ W[v0:v1].T`` (``[N, T]``) and
       reduce it per document (segment max with first-index arg-max, or segment sum).
    3. ``max``: bias is added on the ``[B, V]`` result (adding a per-v constant commutes with
       the max over positions, rounding included because fp addition is monotone), then
       ``clamp_min(0)`` (running max starting at 0) and the activation on ``[B, V]`` only.
       ``sum``: bias and activation are applied per tile before the segment sum.

Backward (``max``)
    Only the arg-max position of each (b, v) receives gradient. With
    ``g = grad * act'(m) * [m > 0]`` on ``[B, V]`` the non-zero entries ``(b, v)`` are
    processed in bounded chunks: ``dW[v] += g * H_tok[row(b, v)]`` and
    ``dH_tok[row(b, v)] += g * W[v]`` via ``index_add_`` — O(nnz(g) · D) work instead of a
    dense ``[N, V] @ [V, D]`` product; CPU ``index_add_`` has no atomic contention.
Backward (``sum``)
    Recomputes each logits tile and uses dense tile matmuls (the gradient is dense).

Accumulation is float32 (float64 when an input is float64, for gradcheck); the output is
float32/float64, gradients come back in each input's dtype.
"""

from __future__ import annotations

import torch

from ._common import activation_grad, apply_activation, check_args, compute_dtype

# Elements of one [N, T] logits tile; bounds the working memory (~32 MiB at fp32).
_TILE_ELEMS = 8 * 1024 * 1024
# Non-zero (b, v) gradient entries handled per index_add_ chunk in the max backward.
_NNZ_CHUNK = 32768


def _tile_size(n_tok: int, V: int, tile: int | None) -> int:
    if tile is not None:
        return max(1, int(tile))
    t = _TILE_ELEMS // max(n_tok, 1)
    t = max(256, min(4096, (t // 256) * 256 or 256))
    return min(t, max(V, 1))


def _gather(hidden, m, dt):
    """Unmasked rows [N, D] (compute dtype), per-document lengths and start offsets."""
    lengths = m.sum(dim=1)
    starts = torch.zeros_like(lengths)
    if lengths.numel() > 1:
        starts[1:] = torch.cumsum(lengths, 0)[:-1]
    h_tok = hidden[m]
    if h_tok.dtype != dt:
        h_tok = h_tok.to(dt)
    return h_tok, lengths.tolist(), starts.tolist()


def _max_forward(hidden, weight, bias, m, activation, dt, need_idx, tile):
    B, S, D = hidden.shape
    V = weight.shape[0]
    h_tok, lengths, starts = _gather(hidden, m, dt)
    n_tok = h_tok.shape[0]
    top = torch.full((B, V), float("-inf"), dtype=dt, device=hidden.device)
    rows = torch.zeros((B, V), dtype=torch.int64, device=hidden.device) if need_idx else None
    T = _tile_size(n_tok, V, tile)
    docs = [b for b in range(B) if lengths[b] > 0]
    uniform = n_tok > 0 and len(docs) == B and len(set(lengths)) == 1
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
                for b in docs:
                    seg = logits[starts[b] : starts[b] + lengths[b]]
                    if need_idx:
                        vals, idx = seg.max(dim=0)
                        rows[b, v0:v1] = idx + starts[b]
                    else:
                        vals = seg.amax(dim=0)
                    top[b, v0:v1] = vals
            del logits
    if bias is not None:
        top += bias.to(dt)
    top.clamp_min_(0.0)  # running max starts at 0; all-masked rows (-inf) become 0
    return top, rows, h_tok


def _sum_forward(hidden, weight, bias, m, activation, dt, tile):
    B, S, D = hidden.shape
    V = weight.shape[0]
    h_tok, lengths, starts = _gather(hidden, m, dt)
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
            bi, vi = g.nonzero(as_tuple=True)
            r = rows[bi, vi]
            gv = g[bi, vi]
            dh_tok = torch.zeros_like(h_tok) if need_h else None
            dw = torch.zeros(weight.shape, dtype=dt, device=weight.device) if need_w else None
            for k0 in range(0, gv.numel(), _NNZ_CHUNK):
                sl = slice(k0, k0 + _NNZ_CHUNK)
                g_c, v_c, r_c = gv[sl].unsqueeze(1), vi[sl], r[sl]
                if need_w:
                    dw.index_add_(0, v_c, h_tok[r_c] * g_c)
                if need_h:
                    dh_tok.index_add_(0, r_c, weight[v_c].to(dt) * g_c)
            if need_w:
                d_weight = dw.to(weight.dtype)
            if need_h:
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
    tile holds about 8M elements). Without autograd (``no_grad``/``inference_mode`` or no
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
