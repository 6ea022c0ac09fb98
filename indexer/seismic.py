"""A Seismic-style approximate inverted index in Numba.

Seismic (Bruch, Nardini, Rulli, Venturini, SIGIR 2024) organises every inverted list into
*blocks* of documents that look alike, keeps a small *summary* vector per block (a quantised
upper-bound-like sketch of the block) and, at query time, scores a whole block with one
summary dot product before deciding whether to score its documents exactly.

Build (`SeismicIndex.build`):

1. **Static pruning** (global threshold, as pyseismic's ``GlobalThreshold``): keep the
   ``n_postings * dim`` largest postings of the whole collection (``dim`` = number of
   columns), so that lists hold ``n_postings`` postings *on average*; each list is then cut
   to its ``int(max_fraction * n_postings)`` largest postings.
2. **Blocking**: per list, ``max(1, int(centroid_fraction * len))`` of its documents are
   sampled (deterministically from ``seed`` and the term id) as centroids; every document is
   assigned to the centroid with the largest dot product between the centroid's full vector
   and the document's ``doc_cut`` largest components. Clusters with ``<= min_cluster_size``
   documents (pyseismic's rule) are dissolved and their documents re-assigned to the
   remaining centroids. A block is one cluster; documents are stored in ascending id order
   inside a block.
3. **Summaries**: per block, the coordinate-wise max of its documents' full vectors, cut to
   the largest components holding ``summary_energy`` of its L1 mass, quantised to u8 with a
   per-block ``min`` and ``scale`` (``value ≈ min + code * scale``).
4. **Forward index**: every document's full vector (CSR: u16 components when ``dim`` fits,
   else i32; float32 values, or ``values="bfloat16"`` to halve them as pyseismic's f16
   does), used for exact scoring.

Layout (all flat NumPy arrays, saved as ``.npy`` and mmap'd on load): postings as i32
document ids grouped by block (``list_block_ptr`` -> ``block_doc_ptr`` -> ``post_docs``);
summaries stored component-major per list: the list's distinct summary components
(``sum_ucomp``, sorted), the start of each one's entries (``sum_ustart``), and per entry the
block (``sum_block``) and u8 code (``sum_code``), so a query term finds the blocks that
contain it with one binary search.

Search (`SeismicIndex.search`): take the ``query_cut`` largest query terms; visit their lists
in decreasing query weight. In each list, score every block summary against the *full*
query; a block is skipped when ``summary_score < heap_factor * kth_best`` once ``k`` results
are in the heap; the documents of the other blocks are scored exactly with the forward
index (each document at most once per query). The blocks of the first list are visited in
decreasing summary score (pyseismic's ``sorted=True``).

``heap_factor`` trades recall for speed: ``heap_factor = 1`` skips a block as soon as its
summary cannot beat the current k-th best score (summaries are approximate, so this is
already lossy); smaller values skip less (``0`` never skips, so with no pruning and
``query_cut`` >= query length the search is exact); values above 1 skip more.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from lsr.sparse import SparseVectors

from .storage import atomic_directory, load_arrays, read_manifest, save_arrays, write_manifest

log = logging.getLogger(__name__)

KIND = "seismic"

_ARRAYS = [
    "fwd_ptr",
    "fwd_idx",
    "fwd_val",
    "post_docs",
    "list_block_ptr",
    "block_doc_ptr",
    "block_min",
    "block_scale",
    "list_sum_ptr",
    "list_uniq_ptr",
    "sum_ucomp",
    "sum_ustart",
    "sum_block",
    "sum_code",
]


# ---------------------------------------------------------------------------------------
# build kernels
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _mix64(x):
    # splitmix64 finaliser on uint64 (wrapping arithmetic)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, parallel=True)
def _top_components(fwd_ptr, fwd_idx, fwd_val, doc_cut):
    """Per document its `doc_cut` largest components (by value), padded with -1."""
    n = fwd_ptr.shape[0] - 1
    out = np.full((n, doc_cut), -1, dtype=np.int32)
    outv = np.zeros((n, doc_cut), dtype=np.float32)
    for d in prange(n):
        lo = fwd_ptr[d]
        hi = fwd_ptr[d + 1]
        m = hi - lo
        if m <= doc_cut:
            for j in range(m):
                out[d, j] = fwd_idx[lo + j]
                outv[d, j] = fwd_val[lo + j]
        else:
            order = np.argsort(-fwd_val[lo:hi], kind="mergesort")
            for j in range(doc_cut):
                out[d, j] = fwd_idx[lo + order[j]]
                outv[d, j] = fwd_val[lo + order[j]]
    return out, outv


@njit(cache=True)
def _invert(fwd_ptr, fwd_idx, fwd_val, dim, threshold, n_equal_keep, cap):
    """Inverted lists of the postings that survive global-threshold pruning and the cap.

    Keeps postings with value > threshold, plus the first `n_equal_keep` (in document order)
    with value == threshold; then each list keeps its `cap` largest (ties: lower doc id).
    Returns (list_ptr int64[dim+1], docs int32) with documents ascending within a list.
    """
    n = fwd_ptr.shape[0] - 1
    counts = np.zeros(dim + 1, dtype=np.int64)
    eq_left = n_equal_keep
    for d in range(n):
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            v = fwd_val[j]
            if v > threshold:
                counts[fwd_idx[j] + 1] += 1
            elif v == threshold and eq_left > 0:
                eq_left -= 1
                counts[fwd_idx[j] + 1] += 1
    ptr = np.cumsum(counts)
    total = ptr[dim]
    docs = np.empty(total, dtype=np.int32)
    vals = np.empty(total, dtype=np.float32)
    pos = ptr[:dim].copy()
    eq_left = n_equal_keep
    for d in range(n):
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            v = fwd_val[j]
            keep = False
            if v > threshold:
                keep = True
            elif v == threshold and eq_left > 0:
                eq_left -= 1
                keep = True
            if keep:
                t = fwd_idx[j]
                docs[pos[t]] = d
                vals[pos[t]] = v
                pos[t] += 1
    # cap every list to its `cap` largest postings
    new_counts = np.zeros(dim + 1, dtype=np.int64)
    for t in range(dim):
        new_counts[t + 1] = min(ptr[t + 1] - ptr[t], cap)
    new_ptr = np.cumsum(new_counts)
    out = np.empty(new_ptr[dim], dtype=np.int32)
    for t in range(dim):
        lo = ptr[t]
        hi = ptr[t + 1]
        o = new_ptr[t]
        if hi - lo <= cap:
            out[o : o + hi - lo] = docs[lo:hi]
        else:
            order = np.argsort(-vals[lo:hi], kind="mergesort")[:cap]
            kept = np.sort(docs[lo:hi][order])
            out[o : o + cap] = kept
    return new_ptr, out


@njit(cache=True)
def _block_max(fwd_ptr, fwd_idx, fwd_val, docs, lo, hi, maxv, mark, touched, stamp):
    """Coordinate-wise max of docs[lo:hi] into maxv; touched[:nt] in first-seen order."""
    nt = 0
    for i in range(lo, hi):
        d = docs[i]
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            c = fwd_idx[j]
            v = fwd_val[j]
            if mark[c] != stamp:
                mark[c] = stamp
                maxv[c] = v
                touched[nt] = c
                nt += 1
            elif v > maxv[c]:
                maxv[c] = v
    return nt


@njit(cache=True, inline="always")
def _sift_down_by_value(heap, size, i, maxv, touched):
    """Restore the max-heap of positions keyed by (maxv[touched[u]] desc, u asc) below i."""
    while True:
        l = 2 * i + 1
        if l >= size:
            return
        m = l
        r = l + 1
        if r < size:
            vr = maxv[touched[heap[r]]]
            vl = maxv[touched[heap[l]]]
            if vr > vl or (vr == vl and heap[r] < heap[l]):
                m = r
        vm = maxv[touched[heap[m]]]
        vi = maxv[touched[heap[i]]]
        if vm > vi or (vm == vi and heap[m] < heap[i]):
            heap[i], heap[m] = heap[m], heap[i]
            i = m
        else:
            return


@njit(cache=True)
def _energy_cut(maxv, touched, nt, energy, heap, kept):
    """Largest components (value desc, first-seen order on ties) until their running sum
    reaches `energy` of the total, inclusive. Returns (count, threshold, n_equal) where the
    kept set is {v > threshold} plus the first n_equal (first-seen order) with v == threshold."""
    total = np.float32(0.0)
    for u in range(nt):
        total += maxv[touched[u]]
    until = total * np.float32(energy)
    # max-heap of positions u keyed by (value desc, u asc)
    for u in range(nt):
        heap[u] = u
    for start in range((nt - 2) // 2, -1, -1):
        _sift_down_by_value(heap, nt, start, maxv, touched)
    size = nt
    acc = np.float32(0.0)
    cnt = 0
    thr = np.float32(0.0)
    n_eq = 0
    while size > 0:
        top = heap[0]
        v = maxv[touched[top]]
        if cnt == 0 or v < thr:
            thr = v
            n_eq = 1
        else:
            n_eq += 1
        acc += v
        kept[cnt] = touched[top]
        cnt += 1
        if not (acc < until):
            break
        size -= 1
        heap[0] = heap[size]
        _sift_down_by_value(heap, size, 0, maxv, touched)
    return cnt, thr, n_eq


@njit(cache=True)
def _cluster_list(t, docs, lo, hi, fwd_ptr, fwd_idx, fwd_val, top_c, top_v, centroid_fraction,
                  min_cluster_size, seed, cen_cnt, slot, scores, touched, perm, bounds):
    """Reorder docs[lo:hi] into blocks; write block ends into bounds[lo:...]; return n blocks."""
    n = hi - lo
    nc = int(np.float32(centroid_fraction) * np.float32(n))
    if nc < 1:
        nc = 1
    if nc > n:
        nc = n
    # deterministic sample of nc documents (partial Fisher-Yates)
    for i in range(n):
        perm[i] = docs[lo + i]
    base = _mix64(np.uint64(seed) * np.uint64(0x100000001B3) + np.uint64(t))
    for i in range(nc):
        r = _mix64(base + np.uint64(i))
        j = i + int(r % np.uint64(n - i))
        tmp = perm[i]
        perm[i] = perm[j]
        perm[j] = tmp
    # small inverted index over the centroids' full vectors; slot[c] = -1 when absent
    ntouch = 0
    for ci in range(nc):
        d = perm[ci]
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            c = fwd_idx[j]
            if slot[c] < 0:
                slot[c] = ntouch
                cen_cnt[ntouch] = 0
                touched[ntouch] = c
                ntouch += 1
            cen_cnt[slot[c]] += 1
    slot_ptr = np.empty(ntouch + 1, dtype=np.int64)
    slot_ptr[0] = 0
    for u in range(ntouch):
        slot_ptr[u + 1] = slot_ptr[u] + cen_cnt[u]
    total = slot_ptr[ntouch]
    cen_id = np.empty(total, dtype=np.int32)
    cen_val = np.empty(total, dtype=np.float32)
    for u in range(ntouch):
        cen_cnt[u] = slot_ptr[u]
    for ci in range(nc):
        d = perm[ci]
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            u = slot[fwd_idx[j]]
            cen_id[cen_cnt[u]] = ci
            cen_val[cen_cnt[u]] = fwd_val[j]
            cen_cnt[u] += 1
    tc = touched[:ntouch].copy()
    # components held by many centroids get a dense row (vectorised accumulation)
    dense_of = np.full(ntouch, -1, dtype=np.int64)
    n_dense = 0
    for u in range(ntouch):
        if (slot_ptr[u + 1] - slot_ptr[u]) * 4 > nc and nc >= 16:
            dense_of[u] = n_dense
            n_dense += 1
    dense = np.zeros((n_dense, nc), dtype=np.float32)
    for u in range(ntouch):
        r = dense_of[u]
        if r >= 0:
            for p in range(slot_ptr[u], slot_ptr[u + 1]):
                dense[r, cen_id[p]] = cen_val[p]
    removed = np.zeros(nc, dtype=np.bool_)
    assign = np.empty(n, dtype=np.int32)
    _assign_bs(docs, lo, hi, nc, removed, slot, slot_ptr, cen_id, cen_val, dense_of, dense, top_c,
               top_v, scores, assign, np.ones(n, dtype=np.bool_))
    sizes = np.zeros(nc, dtype=np.int64)
    for i in range(n):
        sizes[assign[i]] += 1
    n_removed = 0
    for ci in range(nc):
        if sizes[ci] <= min_cluster_size:
            removed[ci] = True
            n_removed += 1
    if n_removed == nc:
        for i in range(n):
            assign[i] = 0
    elif n_removed > 0:
        redo = np.zeros(n, dtype=np.bool_)
        for i in range(n):
            if removed[assign[i]]:
                redo[i] = True
        _assign_bs(docs, lo, hi, nc, removed, slot, slot_ptr, cen_id, cen_val, dense_of, dense,
                   top_c, top_v, scores, assign, redo)
    # counting sort by centroid, ascending doc id inside a block
    sizes[:] = 0
    for i in range(n):
        sizes[assign[i]] += 1
    start = np.empty(nc + 1, dtype=np.int64)
    start[0] = 0
    for ci in range(nc):
        start[ci + 1] = start[ci] + sizes[ci]
    pos = start[:nc].copy()
    for i in range(n):
        a = assign[i]
        perm[pos[a]] = docs[lo + i]
        pos[a] += 1
    nb = 0
    for ci in range(nc):
        if sizes[ci] > 0:
            blk = np.sort(perm[start[ci] : start[ci + 1]])
            docs[lo + start[ci] : lo + start[ci + 1]] = blk
            bounds[lo + nb] = start[ci + 1]
            nb += 1
    for u in range(ntouch):
        slot[tc[u]] = -1
    return nb


@njit(cache=True, fastmath=True)
def _assign_bs(docs, lo, hi, nc, removed, slot, slot_ptr, cen_id, cen_val, dense_of, dense,
               top_c, top_v, scores, assign, mask):
    """Best centroid (dot product of the doc's top components with the centroids' full
    vectors; ties: lowest centroid index) for docs[lo:hi] where mask is set."""
    for i in range(lo, hi):
        if not mask[i - lo]:
            continue
        d = docs[i]
        for ci in range(nc):
            scores[ci] = 0.0
        for j in range(top_c.shape[1]):
            c = top_c[d, j]
            if c < 0:
                break
            u = slot[c]
            if u < 0:
                continue
            v = top_v[d, j]
            r = dense_of[u]
            if r >= 0:
                for ci in range(nc):
                    scores[ci] += v * dense[r, ci]
            else:
                for p in range(slot_ptr[u], slot_ptr[u + 1]):
                    scores[cen_id[p]] += v * cen_val[p]
        best = -1
        best_s = -np.inf
        for ci in range(nc):
            if not removed[ci] and scores[ci] > best_s:
                best_s = scores[ci]
                best = ci
        if best < 0:
            best = 0
        assign[i - lo] = best


@njit(cache=True, parallel=True)
def _build_blocks(list_ptr, docs, fwd_ptr, fwd_idx, fwd_val, top_c, top_v, dim, centroid_fraction,
                  min_cluster_size, seed, energy, n_threads):
    """Pass 1: cluster every list in place; per block its end, summary size and cut."""
    n_lists = list_ptr.shape[0] - 1
    total = docs.shape[0]
    bounds = np.zeros(total, dtype=np.int64)  # block ends (relative), at list offset
    sum_cnt = np.zeros(total, dtype=np.int64)  # summary nnz per block, at list offset
    sum_thr = np.zeros(total, dtype=np.float32)  # summary cut value per block
    sum_neq = np.zeros(total, dtype=np.int32)  # kept components equal to the cut value
    n_blocks = np.zeros(n_lists, dtype=np.int64)
    n_uniq = np.zeros(n_lists, dtype=np.int64)
    max_len = 0
    for t in range(n_lists):
        max_len = max(max_len, list_ptr[t + 1] - list_ptr[t])
    for th in prange(n_threads):
        cen_cnt = np.zeros(dim + 1, dtype=np.int64)
        slot = np.full(dim, -1, dtype=np.int64)
        scores = np.zeros(max(max_len, 1), dtype=np.float32)
        touched = np.empty(dim + 1, dtype=np.int32)
        heap = np.empty(dim + 1, dtype=np.int32)
        perm = np.empty(max(max_len, 1), dtype=np.int32)
        maxv = np.zeros(dim, dtype=np.float32)
        mark = np.zeros(dim, dtype=np.int64)
        kept = np.empty(dim + 1, dtype=np.int32)
        lmark = np.full(dim, -1, dtype=np.int64)
        stamp = 0
        for t in range(th, n_lists, n_threads):
            lo = list_ptr[t]
            hi = list_ptr[t + 1]
            if hi == lo:
                continue
            nu = 0
            nb = _cluster_list(t, docs, lo, hi, fwd_ptr, fwd_idx, fwd_val, top_c, top_v,
                               centroid_fraction, min_cluster_size, seed, cen_cnt, slot, scores,
                               touched, perm, bounds)
            n_blocks[t] = nb
            b_lo = 0
            for b in range(nb):
                b_hi = bounds[lo + b]
                stamp += 1
                nt = _block_max(fwd_ptr, fwd_idx, fwd_val, docs, lo + b_lo, lo + b_hi, maxv, mark,
                                touched, stamp)
                cnt, thr, n_eq = _energy_cut(maxv, touched, nt, energy, heap, kept)
                for u in range(cnt):
                    c = kept[u]
                    if lmark[c] != t:
                        lmark[c] = t
                        nu += 1
                sum_cnt[lo + b] = cnt
                sum_thr[lo + b] = thr
                sum_neq[lo + b] = n_eq
                b_lo = b_hi
            n_uniq[t] = nu
    return bounds, sum_cnt, sum_thr, sum_neq, n_blocks, n_uniq


@njit(cache=True, parallel=True)
def _fill_summaries(list_ptr, docs, fwd_ptr, fwd_idx, fwd_val, dim, bounds, sum_cnt, sum_thr,
                    sum_neq, n_blocks, list_block_ptr, list_sum_ptr, block_doc_ptr, block_min,
                    block_scale, list_uniq_ptr, sum_ucomp, sum_ustart, sum_block, sum_code,
                    n_threads):
    """Pass 2: block pointers, quantised summaries stored component-major per list."""
    n_lists = list_ptr.shape[0] - 1
    for th in prange(n_threads):
        maxv = np.zeros(dim, dtype=np.float32)
        mark = np.zeros(dim, dtype=np.int64)
        touched = np.empty(dim + 1, dtype=np.int32)
        ccount = np.zeros(dim, dtype=np.int64)
        comps_seen = np.empty(dim + 1, dtype=np.int32)
        stamp = 0
        for t in range(th, n_lists, n_threads):
            lo = list_ptr[t]
            nb = n_blocks[t]
            if nb == 0:
                continue
            gb0 = list_block_ptr[t]
            s0 = list_sum_ptr[t]
            ne = list_sum_ptr[t + 1] - s0
            e_comp = np.empty(ne, dtype=np.int32)
            e_block = np.empty(ne, dtype=np.int32)
            e_code = np.empty(ne, dtype=np.uint8)
            w = 0
            n_seen = 0
            b_lo = 0
            for b in range(nb):
                b_hi = bounds[lo + b]
                block_doc_ptr[gb0 + b] = lo + b_lo
                stamp += 1
                nt = _block_max(fwd_ptr, fwd_idx, fwd_val, docs, lo + b_lo, lo + b_hi, maxv, mark,
                                touched, stamp)
                thr = sum_thr[lo + b]
                n_eq = sum_neq[lo + b]
                mx = thr
                for u in range(nt):
                    v = maxv[touched[u]]
                    if v > mx:
                        mx = v
                mn = thr
                scale = (mx - mn) / np.float32(255.0)
                block_min[gb0 + b] = mn
                block_scale[gb0 + b] = scale
                for u in range(nt):
                    c = touched[u]
                    v = maxv[c]
                    keep = v > thr
                    if not keep and v == thr and n_eq > 0:
                        n_eq -= 1
                        keep = True
                    if keep:
                        e_comp[w] = c
                        e_block[w] = b
                        if scale > 0:
                            q = np.round((v - mn) / scale)
                            e_code[w] = np.uint8(min(max(q, 0.0), 255.0))
                        else:
                            e_code[w] = 0
                        if ccount[c] == 0:
                            comps_seen[n_seen] = c
                            n_seen += 1
                        ccount[c] += 1
                        w += 1
                b_lo = b_hi
            # counting sort of the entries by component (stable: blocks stay ascending)
            cs = np.sort(comps_seen[:n_seen])
            run = s0
            u0 = list_uniq_ptr[t]
            for u in range(n_seen):
                c = cs[u]
                m = ccount[c]
                ccount[c] = run
                sum_ucomp[u0 + u] = c
                sum_ustart[u0 + u] = run - s0
                run += m
            for u in range(w):
                c = e_comp[u]
                p = ccount[c]
                sum_block[p] = e_block[u]
                sum_code[p] = e_code[u]
                ccount[c] = p + 1
            for u in range(n_seen):
                ccount[cs[u]] = 0


# ---------------------------------------------------------------------------------------
# search kernels
# ---------------------------------------------------------------------------------------


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Software prefetch (read, keep in all cache levels) of &arr[idx]; no bounds check."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        ptr = builder.gep(ary.data, [i])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _bf16_to_f32(typingctx, bits):
    """bfloat16 bits (uint16) -> float32: the bits are the high half of the float32."""
    if not isinstance(bits, types.Integer):
        return None
    sig = types.float32(bits)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        wide = builder.zext(args[0], i32) if signature.args[0].bitwidth < 32 else builder.trunc(args[0], i32) if signature.args[0].bitwidth > 32 else args[0]
        return builder.bitcast(builder.shl(wide, i32(16)), ir.FloatType())

    return sig, codegen


def _load_val(arr, x):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_load_val, inline="always")
def _load_val_impl(arr, x):
    if isinstance(arr, types.Array) and arr.dtype == types.uint16:
        return lambda arr, x: _bf16_to_f32(arr[x])
    return lambda arr, x: arr[x]


def _to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounding to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


@njit(cache=True, inline="always")
def _heap_push(hs, hid, size, k, s, d):
    """Min-heap of (score, id) of capacity k; returns the new size."""
    if size < k:
        i = size
        size += 1
        while i > 0:
            p = (i - 1) >> 1
            if hs[p] > s or (hs[p] == s and hid[p] < d):
                hs[i] = hs[p]
                hid[i] = hid[p]
                i = p
            else:
                break
        hs[i] = s
        hid[i] = d
        return size
    if s < hs[0] or (s == hs[0] and d > hid[0]):
        return size
    # replace root and sift down
    i = 0
    while True:
        l = 2 * i + 1
        if l >= size:
            break
        r = l + 1
        m = l
        if r < size and (hs[r] < hs[l] or (hs[r] == hs[l] and hid[r] > hid[l])):
            m = r
        if hs[m] < s or (hs[m] == s and hid[m] > d):
            hs[i] = hs[m]
            hid[i] = hid[m]
            i = m
        else:
            break
    hs[i] = s
    hid[i] = d
    return size


@njit(cache=True)
def _search_one(q_idx, q_val, k, query_cut, heap_factor, fwd_ptr, fwd_idx, fwd_val, post_docs,
                list_block_ptr, block_doc_ptr, block_min, block_scale, list_sum_ptr, list_uniq_ptr, sum_ucomp, sum_ustart,
                sum_block, sum_code, qdense, visited, epoch, acc, hs, hid, out_ids, out_scores,
                counters):
    dim = qdense.shape[0]
    nq = q_idx.shape[0]
    for j in range(nq):
        c = q_idx[j]
        if c < dim:
            qdense[c] += q_val[j]
    # terms by decreasing weight (ties: lower term id)
    order = np.argsort(-q_val, kind="mergesort")
    n_use = min(query_cut, nq)
    size = 0
    blocks = np.empty(0, dtype=np.int64)
    for r in range(n_use):
        t = q_idx[order[r]]
        if t >= dim:
            continue
        b0 = list_block_ptr[t]
        nb = list_block_ptr[t + 1] - b0
        if nb == 0:
            continue
        for b in range(nb):
            acc[b] = 0.0
        # summary scores against the full query (entries sorted by component)
        s0 = list_sum_ptr[t]
        ne = list_sum_ptr[t + 1] - s0
        u_hi = list_uniq_ptr[t + 1]
        pos = list_uniq_ptr[t]
        for j in range(nq):
            c = q_idx[j]
            if c >= dim:
                break
            # lower bound of c in sum_ucomp[pos:u_hi] (query terms ascend)
            a = pos
            z = u_hi
            while a < z:
                mid = (a + z) >> 1
                if sum_ucomp[mid] < c:
                    a = mid + 1
                else:
                    z = mid
            pos = a
            if pos >= u_hi:
                break
            if sum_ucomp[pos] == c:
                qv = qdense[c]
                e0 = s0 + sum_ustart[pos]
                e1 = s0 + (sum_ustart[pos + 1] if pos + 1 < u_hi else ne)
                for e in range(e0, e1):
                    bl = sum_block[e]
                    acc[bl] += (np.float32(sum_code[e]) * block_scale[b0 + bl] + block_min[b0 + bl]) * qv
                pos += 1
        if r == 0:
            blocks = np.argsort(-acc[:nb], kind="mergesort")
        for bi in range(nb):
            b = blocks[bi] if r == 0 else bi
            if size == k and acc[b] < heap_factor * hs[0]:
                continue
            counters[0] += 1
            p0 = block_doc_ptr[b0 + b]
            p1 = block_doc_ptr[b0 + b + 1]
            # prefetch the rows of the block's unvisited documents before scoring them
            for p in range(p0, p1):
                d = post_docs[p]
                if visited[d] == epoch:
                    continue
                x0 = fwd_ptr[d]
                x1 = fwd_ptr[d + 1]
                for x in range(x0, x1, 32):
                    _prefetch(fwd_idx, x)
                _prefetch(fwd_idx, x1 - 1)
                for x in range(x0, x1, 16):
                    _prefetch(fwd_val, x)
                _prefetch(fwd_val, x1 - 1)
            for p in range(p0, p1):
                d = post_docs[p]
                if visited[d] == epoch:
                    continue
                visited[d] = epoch
                counters[1] += 1
                x0 = fwd_ptr[d]
                x1 = fwd_ptr[d + 1]
                s0 = np.float32(0.0)
                s1 = np.float32(0.0)
                s2 = np.float32(0.0)
                s3 = np.float32(0.0)
                x = x0
                while x + 4 <= x1:
                    s0 += qdense[fwd_idx[x]] * _load_val(fwd_val, x)
                    s1 += qdense[fwd_idx[x + 1]] * _load_val(fwd_val, x + 1)
                    s2 += qdense[fwd_idx[x + 2]] * _load_val(fwd_val, x + 2)
                    s3 += qdense[fwd_idx[x + 3]] * _load_val(fwd_val, x + 3)
                    x += 4
                while x < x1:
                    s0 += qdense[fwd_idx[x]] * _load_val(fwd_val, x)
                    x += 1
                s = (s0 + s1) + (s2 + s3)
                size = _heap_push(hs, hid, size, k, s, d)
    for j in range(nq):
        c = q_idx[j]
        if c < dim:
            qdense[c] = 0.0
    # sort heap: score desc, id asc
    sc = hs[:size].copy()
    ids = hid[:size].copy()
    o = np.argsort(-sc, kind="mergesort")
    # stable on score; fix ties by id
    res_s = sc[o]
    res_i = ids[o]
    i = 0
    while i < size:
        jj = i + 1
        while jj < size and res_s[jj] == res_s[i]:
            jj += 1
        if jj - i > 1:
            res_i[i:jj] = np.sort(res_i[i:jj])
        i = jj
    for i in range(size):
        out_ids[i] = res_i[i]
        out_scores[i] = res_s[i]
    for i in range(size, out_ids.shape[0]):
        out_ids[i] = -1
        out_scores[i] = -np.inf


@njit(cache=True)
def _search_serial(q_ptr, q_idx, q_val, k, query_cut, heap_factor, fwd_ptr, fwd_idx, fwd_val,
                   post_docs, list_block_ptr, block_doc_ptr, block_min, block_scale, list_sum_ptr,
                   list_uniq_ptr, sum_ucomp, sum_ustart, sum_block, sum_code, qdense, visited, epochs, acc, out_ids, out_scores,
                   counters):
    nq = q_ptr.shape[0] - 1
    hs = np.empty(k + 1, dtype=np.float32)
    hid = np.empty(k, dtype=np.int64)
    for qi in range(nq):
        epochs[0] += 1
        if epochs[0] == 2147483647:
            visited[0, :] = 0
            epochs[0] = 1
        lo = q_ptr[qi]
        hi = q_ptr[qi + 1]
        _search_one(q_idx[lo:hi], q_val[lo:hi], k, query_cut, heap_factor, fwd_ptr, fwd_idx, fwd_val,
                    post_docs, list_block_ptr, block_doc_ptr, block_min, block_scale, list_sum_ptr,
                    list_uniq_ptr, sum_ucomp, sum_ustart, sum_block, sum_code, qdense[0], visited[0],
                    epochs[0], acc[0], hs, hid,
                    out_ids[qi], out_scores[qi], counters[0])


@njit(cache=True, parallel=True)
def _search_parallel(q_ptr, q_idx, q_val, k, query_cut, heap_factor, fwd_ptr, fwd_idx, fwd_val,
                     post_docs, list_block_ptr, block_doc_ptr, block_min, block_scale, list_sum_ptr,
                     list_uniq_ptr, sum_ucomp, sum_ustart, sum_block, sum_code, qdense, visited, epochs,
                     acc, out_ids, out_scores, counters, n_threads):
    nq = q_ptr.shape[0] - 1
    for th in prange(n_threads):
        hs = np.empty(k + 1, dtype=np.float32)
        hid = np.empty(k, dtype=np.int64)
        for qi in range(th, nq, n_threads):
            epochs[th] += 1
            if epochs[th] == 2147483647:
                visited[th, :] = 0
                epochs[th] = 1
            lo = q_ptr[qi]
            hi = q_ptr[qi + 1]
            _search_one(q_idx[lo:hi], q_val[lo:hi], k, query_cut, heap_factor, fwd_ptr, fwd_idx,
                        fwd_val, post_docs, list_block_ptr, block_doc_ptr, block_min, block_scale,
                        list_sum_ptr, list_uniq_ptr, sum_ucomp, sum_ustart, sum_block, sum_code, qdense[th], visited[th],
                        epochs[th], acc[th], hs, hid, out_ids[qi], out_scores[qi], counters[th])


# ---------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------


def _as_chunks(vectors) -> list[SparseVectors]:
    if isinstance(vectors, SparseVectors):
        return [vectors]
    chunks = list(vectors)
    if not chunks:
        raise ValueError("no vectors to index")
    for c in chunks:
        if not isinstance(c, SparseVectors):
            raise TypeError(f"expected SparseVectors chunks, got {type(c).__name__}")
    return chunks


def _concat_forward(chunks: list[SparseVectors]):
    dim = max(c.dim for c in chunks)
    n = sum(len(c) for c in chunks)
    nnz = sum(c.nnz for c in chunks)
    comp_dtype = np.uint16 if dim <= 65536 else np.int32
    ptr = np.empty(n + 1, dtype=np.int64)
    idx = np.empty(nnz, dtype=comp_dtype)
    val = np.empty(nnz, dtype=np.float32)
    ptr[0] = 0
    r = 0
    o = 0
    for c in chunks:
        m = len(c)
        ptr[r + 1 : r + m + 1] = c.indptr[1:] + o
        idx[o : o + c.nnz] = c.indices
        val[o : o + c.nnz] = c.values
        r += m
        o += c.nnz
        # chunks can be dropped by the caller as soon as they are copied
    return ptr, idx, val, dim


class SeismicIndex:
    """Seismic-style approximate index (see the module docstring for the algorithm)."""

    def __init__(self, arrays: dict[str, np.ndarray], params: dict, dim: int, n_docs: int):
        self._a = arrays
        self.params = dict(params)
        self.dim = int(dim)
        self.n_docs = int(n_docs)
        self.max_blocks = int(np.max(np.diff(arrays["list_block_ptr"]))) if self.dim else 0
        self._scratch_threads = 0
        self._qdense = self._visited = self._epochs = self._acc = self._counters = None

    # ---- build ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        vectors: SparseVectors | Iterable[SparseVectors],
        n_postings: int = 3500,
        max_fraction: float = 1.5,
        centroid_fraction: float = 0.1,
        summary_energy: float = 0.4,
        min_cluster_size: int = 2,
        doc_cut: int = 15,
        seed: int = 0,
        values: str = "float32",
        threads: int | None = None,
    ) -> "SeismicIndex":
        """Build from a SparseVectors or an iterable of SparseVectors chunks (rows numbered
        in order). Parameters have pyseismic-lsr's meaning; `threads` defaults to all."""
        if values not in ("float32", "bfloat16"):
            raise ValueError("values must be 'float32' or 'bfloat16'")
        t0 = time.perf_counter()
        chunks = _as_chunks(vectors)
        fwd_ptr, fwd_idx, fwd_val, dim = _concat_forward(chunks)
        del chunks
        n_docs = len(fwd_ptr) - 1
        nnz = len(fwd_val)
        n_threads = int(threads or numba.get_num_threads())
        n_threads = max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS))
        # 1. global-threshold pruning
        budget = int(n_postings) * dim
        if nnz <= budget:
            threshold = np.float32(-np.inf)
            n_equal = 0
        else:
            threshold = np.partition(fwd_val, nnz - budget)[nnz - budget]
            n_equal = budget - int(np.count_nonzero(fwd_val > threshold))
        cap = max(1, int(np.float32(n_postings) * np.float32(max_fraction)))
        list_ptr, docs = _invert(fwd_ptr, fwd_idx, fwd_val, dim, np.float32(threshold), n_equal, cap)
        t1 = time.perf_counter()
        # 2. blocking
        prev = numba.get_num_threads()
        numba.set_num_threads(n_threads)
        try:
            top_c, top_v = _top_components(fwd_ptr, fwd_idx, fwd_val, int(doc_cut))
            bounds, sum_cnt, sum_thr, sum_neq, n_blocks, n_uniq = _build_blocks(
                list_ptr, docs, fwd_ptr, fwd_idx, fwd_val, top_c, top_v, dim,
                float(centroid_fraction), int(min_cluster_size), int(seed), float(summary_energy),
                n_threads,
            )
            del top_c, top_v
            t2 = time.perf_counter()
            # 3. summaries
            list_block_ptr = np.zeros(dim + 1, dtype=np.int64)
            np.cumsum(n_blocks, out=list_block_ptr[1:])
            n_total_blocks = int(list_block_ptr[-1])
            # summary entries per list = sum of its blocks' counts
            starts = list_ptr[:-1]
            list_sum = np.zeros(dim, dtype=np.int64)
            nz = np.flatnonzero(n_blocks)
            if len(nz):
                cs = np.concatenate([[0], np.cumsum(sum_cnt)])
                list_sum[nz] = cs[starts[nz] + n_blocks[nz]] - cs[starts[nz]]
            list_sum_ptr = np.zeros(dim + 1, dtype=np.int64)
            np.cumsum(list_sum, out=list_sum_ptr[1:])
            n_entries = int(list_sum_ptr[-1])
            block_doc_ptr = np.empty(n_total_blocks + 1, dtype=np.int64)
            block_doc_ptr[-1] = len(docs)
            block_min = np.empty(n_total_blocks, dtype=np.float32)
            block_scale = np.empty(n_total_blocks, dtype=np.float32)
            max_nb = int(n_blocks.max()) if len(n_blocks) else 0
            list_uniq_ptr = np.zeros(dim + 1, dtype=np.int64)
            np.cumsum(n_uniq, out=list_uniq_ptr[1:])
            sum_ucomp = np.empty(int(list_uniq_ptr[-1]), dtype=fwd_idx.dtype)
            max_entries = int(list_sum.max()) if len(list_sum) else 0
            sum_ustart = np.empty(
                int(list_uniq_ptr[-1]), dtype=np.uint16 if max_entries <= 65535 else np.uint32
            )
            sum_block = np.empty(n_entries, dtype=np.uint16 if max_nb <= 65536 else np.int32)
            sum_code = np.empty(n_entries, dtype=np.uint8)
            _fill_summaries(
                list_ptr, docs, fwd_ptr, fwd_idx, fwd_val, dim, bounds, sum_cnt, sum_thr, sum_neq,
                n_blocks, list_block_ptr, list_sum_ptr, block_doc_ptr, block_min, block_scale,
                list_uniq_ptr, sum_ucomp, sum_ustart, sum_block, sum_code, n_threads,
            )
        finally:
            numba.set_num_threads(prev)
        t3 = time.perf_counter()
        log.info(
            "seismic build: %d docs, %d postings kept, %d blocks, %d summary entries; "
            "prune %.2fs, blocks %.2fs, summaries %.2fs",
            n_docs, len(docs), n_total_blocks, n_entries, t1 - t0, t2 - t1, t3 - t2,
        )
        if values == "bfloat16":
            fwd_val = _to_bf16(fwd_val)
        arrays = dict(
            fwd_ptr=fwd_ptr, fwd_idx=fwd_idx, fwd_val=fwd_val, post_docs=docs,
            list_block_ptr=list_block_ptr, block_doc_ptr=block_doc_ptr, block_min=block_min,
            block_scale=block_scale, list_sum_ptr=list_sum_ptr,
            list_uniq_ptr=list_uniq_ptr, sum_ucomp=sum_ucomp, sum_ustart=sum_ustart,
            sum_block=sum_block, sum_code=sum_code,
        )
        params = dict(
            n_postings=int(n_postings), max_fraction=float(max_fraction),
            centroid_fraction=float(centroid_fraction), summary_energy=float(summary_energy),
            min_cluster_size=int(min_cluster_size), doc_cut=int(doc_cut), seed=int(seed),
            values=values,
        )
        return cls(arrays, params, dim, n_docs)

    # ---- info ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_docs

    @property
    def nbytes(self) -> int:
        """Bytes of the index arrays (forward index, postings, blocks, summaries)."""
        return int(sum(a.nbytes for a in self._a.values()))

    def stats(self) -> dict:
        a = self._a
        return dict(
            n_docs=self.n_docs, dim=self.dim, nnz=int(len(a["fwd_val"])),
            postings=int(len(a["post_docs"])), blocks=int(len(a["block_min"])),
            summary_entries=int(len(a["sum_code"])), bytes=self.nbytes,
        )

    # ---- search --------------------------------------------------------------------------

    def _ensure_scratch(self, n_threads: int) -> None:
        if self._scratch_threads >= n_threads:
            return
        self._qdense = np.zeros((n_threads, max(self.dim, 1)), dtype=np.float32)
        self._visited = np.zeros((n_threads, max(self.n_docs, 1)), dtype=np.int32)
        self._epochs = np.zeros(n_threads, dtype=np.int32)
        self._acc = np.zeros((n_threads, max(self.max_blocks, 1)), dtype=np.float32)
        old = self._counters
        self._counters = np.zeros((n_threads, 2), dtype=np.int64)
        if old is not None:
            self._counters[: len(old)] = old
        self._scratch_threads = n_threads

    def search(
        self,
        queries: SparseVectors,
        k: int = 10,
        query_cut: int = 10,
        heap_factor: float = 0.7,
        threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by dot product: (ids int64[n, k], scores float32[n, k]), padded -1 / -inf."""
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        n = len(queries)
        out_ids = np.empty((n, k), dtype=np.int64)
        out_scores = np.empty((n, k), dtype=np.float32)
        if n == 0:
            return out_ids, out_scores
        threads = max(1, min(int(threads), n, numba.config.NUMBA_NUM_THREADS))
        self._ensure_scratch(threads)
        a = self._a
        q_idx = queries.indices
        q_val = queries.values
        args = (
            queries.indptr, q_idx, q_val, k, int(query_cut), np.float32(heap_factor),
            a["fwd_ptr"], a["fwd_idx"], a["fwd_val"], a["post_docs"], a["list_block_ptr"],
            a["block_doc_ptr"], a["block_min"], a["block_scale"], a["list_sum_ptr"],
            a["list_uniq_ptr"], a["sum_ucomp"], a["sum_ustart"],
            a["sum_block"], a["sum_code"], self._qdense, self._visited, self._epochs, self._acc,
            out_ids, out_scores, self._counters,
        )
        if threads == 1:
            _search_serial(*args)
        else:
            prev = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                _search_parallel(*args, threads)
            finally:
                numba.set_num_threads(prev)
        return out_ids, out_scores

    def forward_vectors(self) -> SparseVectors:
        """Every document's full vector (the forward index), as float32 SparseVectors."""
        a = self._a
        values = np.asarray(a["fwd_val"])
        if values.dtype == np.uint16:  # bfloat16 bits
            values = (values.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return SparseVectors(np.asarray(a["fwd_ptr"]), np.asarray(a["fwd_idx"]), values, self.dim)

    @property
    def search_counters(self) -> dict:
        """Cumulative work done by `search` on this object: blocks and documents scored."""
        c = self._counters.sum(axis=0) if self._counters is not None else np.zeros(2, np.int64)
        return {"blocks_scored": int(c[0]), "docs_scored": int(c[1])}

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        with atomic_directory(path) as tmp:
            save_arrays(tmp, {name: np.asarray(self._a[name]) for name in _ARRAYS})
            write_manifest(tmp, KIND, params=self.params, dim=self.dim, n_docs=self.n_docs,
                           counts=self.stats())

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "SeismicIndex":
        manifest = read_manifest(path)
        if manifest.get("kind") != KIND:
            from .storage import IndexFormatError

            raise IndexFormatError(f"{path}: a {manifest.get('kind')!r} index, not {KIND!r}")
        arrays = load_arrays(Path(path), _ARRAYS, mmap=mmap)
        return cls(arrays, manifest["params"], manifest["dim"], manifest["n_docs"])
