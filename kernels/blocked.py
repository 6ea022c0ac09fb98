"""Cache-blocked CPU path (max pooling, every hidden size): logits tiles that stay in L2.

A ``[N, T]`` logits tile costs only ``2·D`` flops per element, so large tiles (the chunked
path's ~16 MiB) are bound by writing them to memory and reading them back for the max, at
``D = 128`` (splade-tiny) and, on the current 2-core host, at ``D = 384`` and ``768`` too
(docs/kernels.md has the figures). This path cuts both axes: blocks of about ``_ROWS``
positions (whole documents, padded to the block's longest document with copies of their own
last row, which leaves every max unchanged; an arg-max on a copy is clamped to the real row)
times vocabulary tiles of ``_TILE_ELEMS / rows`` columns, so each ``[rows, T]`` tile (~512 KiB) is reduced to the
per-document max while it is still in L2. Documents are ordered by length inside the call, so
blocks pad little even when the caller does not sort.

The matmul stays MKL's (``torch.mm`` into a reused buffer); a Numba register-blocked kernel
measured ~1.5 GFLOP/s on one core (LLVM does not keep the accumulator tile in registers)
with a 27 s first compile, far below MKL.

bf16 tiles: when ``hidden`` and ``weight`` are both bfloat16 and no gradient is needed, the
tiles are bf16 products (oneDNN's bf16 gemm: fp32 accumulation, each logit rounded to bf16
once), about twice the fp32 rate on CPUs with AVX512-BF16. Rounding is monotone, so the kept
max is the fp32-accumulated max rounded to bf16 (relative error ≤ 2^-8); bias, clamp and
activation then run in fp32 on ``[B, V]``.

Backward is the chunked path's sparse (CSR) backward: the forward returns the same
``(top, rows, h_tok)`` triple, ``rows`` indexing the unpadded gathered rows ``h_tok``.
"""

from __future__ import annotations

import torch

from ._common import apply_activation, check_args, compute_dtype, torch_single_threaded
from .chunked import _ChunkedMax, _gather, _needs_grad

# Positions per block and elements per [rows, T] logits tile (fp32: 512 KiB, in L2).
_ROWS = 256
_TILE_ELEMS = 128 * 1024


def _blocks(lengths: list[int], rows: int):
    """Documents (indices) in descending length, cut into blocks of about ``rows`` padded rows.

    Yields ``(docs, L)`` with ``docs`` a list of document indices all padded to length ``L``.
    Empty documents are left out (their max stays -inf, clamped to 0 later).
    """
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
    j = 0
    while j < len(order):
        L = lengths[order[j]]
        k = max(1, rows // L)
        yield order[j : j + k], L
        j += k


def bf16_tiles(hidden: torch.Tensor, weight: torch.Tensor, need_idx: bool) -> bool:
    """Whether the logits tiles are bfloat16: both operands bf16 and no gradient (the arg-max
    is not tracked). The gemm accumulates in fp32 and rounds each logit to bf16 once; rounding
    is monotone, so the max is the fp32 max rounded to bf16."""
    return not need_idx and hidden.dtype == torch.bfloat16 and weight.dtype == torch.bfloat16


def _max_forward_blocked(hidden, weight, bias, m, dt, need_idx, rows=_ROWS, tile_elems=_TILE_ELEMS, workers=None):
    """Same contract as chunked's ``_max_forward``: ``(top [B, V] clamped, rows | None, h_tok)``."""
    tile_dt = torch.bfloat16 if bf16_tiles(hidden, weight, need_idx) else dt
    h_tok, lengths = _gather(hidden, m, tile_dt)
    w = weight if weight.dtype == tile_dt else weight.to(tile_dt)
    top, arg = tiles_max(h_tok, lengths, w, need_idx, rows, tile_elems, workers)
    top = top.to(dt)
    if bias is not None:
        top += bias.to(dt)
    top.clamp_min_(0.0)
    return top, arg, h_tok


def tiles_max(h_tok, lengths, w, need_idx=False, rows=_ROWS, tile_elems=_TILE_ELEMS, workers=None):
    """Per-document max of ``h_tok @ w.T`` over each document's rows, in L2-sized tiles.

    ``h_tok`` is ``[N, D]`` (documents' rows contiguous, ``lengths`` of them each) in ``w``'s
    dtype. Returns ``(top [B, V], arg [B, V] | None)``: ``top`` in the tiles' dtype, ``-inf``
    for empty documents; ``arg`` the first arg-max row of ``h_tok`` when ``need_idx``.

    bf16 tiles without arg-max are reduced over their bit patterns as int16 (an int16 max and
    min cost ~15 µs per ``[256, 512]`` tile, a bf16 max ~50): bf16 is sign-magnitude, so a
    non-negative value orders like its bits and is a non-negative int16, and among negative
    values (negative int16s) the largest is the one of least magnitude, the smallest int16.
    The max is the int16 max where that is ≥ 0, else the int16 min: exactly the bf16 max.
    """
    B, V = len(lengths), w.shape[0]
    dev, tile_dt = w.device, w.dtype
    sign_bits = tile_dt == torch.bfloat16 and not need_idx
    red_dt = torch.int16 if sign_bits else tile_dt
    starts = [0] * B
    for i in range(1, B):
        starts[i] = starts[i - 1] + lengths[i - 1]
    blocks = []  # (first output row, k, L, h_blk)
    perm: list[int] = []
    for docs, L in _blocks(lengths, rows):
        idx = [starts[i] + min(r, lengths[i] - 1) for i in docs for r in range(L)]
        h_blk = h_tok.index_select(0, torch.tensor(idx, dtype=torch.int64, device=dev))
        blocks.append((len(perm), len(docs), L, h_blk))
        perm.extend(docs)
    top = torch.full((B, V), float("-inf"), dtype=tile_dt, device=dev)
    arg = torch.zeros((B, V), dtype=torch.int64, device=dev) if need_idx else None
    if not blocks:
        return top, arg
    n_rows = max(k * L for _, k, L, _ in blocks)
    T = max(16, min(V, tile_elems // n_rows))
    tiles = list(range(0, V, T))
    out_top = torch.empty((len(perm), V), dtype=red_dt, device=dev)
    out_arg = torch.empty((len(perm), V), dtype=torch.int64, device=dev) if need_idx else None
    out_min = torch.empty((len(perm), V), dtype=red_dt, device=dev) if sign_bits else None

    def run(next_tile):
        buf = torch.empty((n_rows, T), dtype=tile_dt, device=dev)
        for t in iter(next_tile, None):
            v0 = tiles[t]
            v1 = min(V, v0 + T)
            w_t = w[v0:v1].T
            for r0, k, L, h_blk in blocks:
                out = buf[: k * L, : v1 - v0]
                torch.mm(h_blk, w_t, out=out)
                view = (out.view(red_dt) if sign_bits else out).view(k, L, v1 - v0)
                if need_idx:
                    torch.max(view, dim=1, out=(out_top[r0 : r0 + k, v0:v1], out_arg[r0 : r0 + k, v0:v1]))
                else:
                    torch.amax(view, dim=1, out=out_top[r0 : r0 + k, v0:v1])
                if sign_bits:
                    torch.amin(view, dim=1, out=out_min[r0 : r0 + k, v0:v1])

    _parallel(run, len(tiles), workers)
    if sign_bits:
        out_top = torch.where(out_top >= 0, out_top, out_min).view(tile_dt)
    p = torch.tensor(perm, dtype=torch.int64, device=dev)
    top.index_copy_(0, p, out_top)
    if need_idx:
        # a padding copy of a document's last row stands for that row: torch.max does not
        # always return the first of equal values (a hypothesis case, V = 4, sent a tie to the copy)
        last = torch.tensor([lengths[i] - 1 for i in perm], dtype=torch.int64, device=dev)[:, None]
        torch.minimum(out_arg, last, out=out_arg)
        out_arg += torch.tensor([starts[i] for i in perm], dtype=torch.int64, device=dev)[:, None]
        arg.index_copy_(0, p, out_arg)
    return top, arg


def _parallel(run, n_tiles, workers):
    """Run ``run(next_tile)`` on ``workers`` Python threads pulling tile numbers from one
    counter (dynamic: a descheduled thread does not hold the others up), torch single-threaded
    meanwhile; ``workers=0`` runs it on this thread with torch's own threads."""
    import itertools
    import threading

    if workers == 0:
        it = iter(range(n_tiles))
        run(lambda: next(it, None))
        return
    n = workers or torch.get_num_threads()
    counter = itertools.count()

    def next_tile():
        t = next(counter)
        return t if t < n_tiles else None

    errors = []
    inference = torch.is_inference_mode_enabled()  # grad modes are per thread

    def guarded():
        try:
            with torch.inference_mode(inference), torch.no_grad():
                run(next_tile)
        except BaseException as err:  # re-raised on the calling thread
            errors.append(err)

    with torch_single_threaded():
        threads = [threading.Thread(target=guarded) for _ in range(n - 1)]
        for th in threads:
            th.start()
        guarded()
        for th in threads:
            th.join()
    if errors:
        raise errors[0]


class _BlockedMax(_ChunkedMax):
    """Blocked forward; backward inherited from the chunked path (sparse CSR products)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, mask, activation, opts):
        dt = compute_dtype(hidden, weight, bias)
        top, rows, h_tok = _max_forward_blocked(hidden, weight, bias, mask, dt, True, *opts)
        ctx.activation = activation
        ctx.has_bias = bias is not None
        ctx.hidden_meta = (hidden.shape, hidden.dtype)
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.save_for_backward(h_tok, weight, mask, top, rows)
        return apply_activation(top, activation)


def splade_max_blocked(
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
    """Cache-blocked SPLADE head, max pooling only (same contract as :func:`lsr.kernels.splade_max`).

    ``rows`` (positions per block) and ``tile_elems`` (elements per logits tile) size the
    tiles; ``workers`` is the number of Python threads sharing the vocabulary tiles (default:
    torch's thread count; 0 = this thread, with torch's own intra-op threads).
    """
    _, _, _, _, m = check_args(hidden, weight, bias, mask, activation, pooling)
    if pooling != "max":
        raise ValueError("the blocked path implements max pooling only")
    dt = compute_dtype(hidden, weight, bias)
    if not _needs_grad(hidden, weight, bias):
        top, _, _ = _max_forward_blocked(hidden, weight, bias, m, dt, False, rows, tile_elems, workers)
        return apply_activation(top, activation)
    return _BlockedMax.apply(hidden, weight, bias, m, activation, (rows, tile_elems, workers))
