"""Query processing of the Seismic index (Numba): summaries decide, the forward index scores.

One query (`search_one`): take the `query_cut` largest query terms and visit their lists in
decreasing query weight. In each list, score every block summary against the *full* query
(summaries are stored component-major per list, so only the entries of the query's terms
are touched); skip a block when `summary_score < heap_factor * kth_best` once `k` results
are held; otherwise score the block's not-yet-seen documents exactly from the forward index.
The first list's blocks are visited in decreasing summary score.

Forward index words pack a component and its value: `uint32` = component (low 16 bits) |
float16 value (high 16); `uint64` = component (low 32) | float32 value (high 32). A
document's words come in decreasing absolute value: its first HEAD words are scored, and the
others only when their bound (the next value times the query's L1 norm) could lift the
document into the heap (about three documents in four need only their head on the
benchmark's data). A dot product with the dense query is one loop over words (vectorised:
fastmath lets LLVM reorder the sum). Documents are prefetched a few ahead of the one being
scored, so the cache misses of the forward index overlap with work. Documents are the
index's own numbers (`layout`: similar documents side by side); the heap holds their
collection rows (`doc_ids`), looked up only for a document whose score may enter it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ._intrinsics import f16_to_f32, prefetch
from .layout import BLOCK_MASK, CKPT, CODE_SHIFT, GROUP, HEAD, SeismicArrays
from .sorting import DESCENDING, stable_argsort
from .topk import heap_push, heap_write_sorted

PREFETCH_AHEAD = 4  # documents prefetched ahead of the one being scored


# Array indices below are cast to unsigned where the compiler cannot prove them
# non-negative: Numba's negative-index wraparound would otherwise cost a few instructions per
# access and block the vectorisation of the dot products.


def _unpack(word):  # pragma: no cover - replaced by the overload in compiled code
    """(component, float32 value) of a forward-index word."""
    raise NotImplementedError


@overload(_unpack)
def _unpack_word(word):
    if word == types.uint32:
        return lambda word: (word & np.uint32(0xFFFF), f16_to_f32(word >> np.uint32(16)))
    return lambda word: (word & np.uint64(0xFFFFFFFF), np.uint32(word >> np.uint64(32)).view(np.float32))


# One function for both word types, unpacking through a scalar overload: a wrapper that picked
# a per-type function would take the arrays as arguments and pay two atomic reference-count
# updates per array per document (Numba cannot prune them around a call that may raise).
@njit(cache=True, fastmath=True, no_cpython_wrapper=True)
def doc_dot(words, x0, x1, qdense):
    """Dot product of the document words[x0:x1] with the dense query."""
    s = np.float32(0.0)
    for x in range(np.uint64(x0), np.uint64(x1)):
        c, v = _unpack(words[x])
        s += qdense[c] * v
    return s


@njit(cache=True, no_cpython_wrapper=True)
def _prefetch_doc(fwd_ptr, words, d, line):
    x0 = fwd_ptr[d]
    x1 = fwd_ptr[d + np.uint32(1)]
    for x in range(x0, x1, line):
        prefetch(words, x)
    prefetch(words, x1 - 1)



@njit(cache=True)
def _summary_scores(t, q_idx, qdense, acc, aux, hit_lo, hit_hi, hit_q, ix):
    """acc[:nb] = dot products of list t's block summaries with the full query; returns nb.

    A list's summaries are stored per group of GROUP blocks, component-major: the group's
    distinct components (sorted), each with its entry count, and per entry the block inside
    the group (low byte) and the u8 code (high byte). A code stands for min + code * scale
    of its block, so a block's score is scale * sum(code * q) + min * sum(q). The query's
    terms are first looked up (their entries prefetched), then the entries are added up."""
    b0 = ix.list_block_ptr[t]
    nb = ix.list_block_ptr[t + 1] - b0
    for b in range(nb):
        acc[b] = 0.0
        aux[b] = 0.0
    g0 = ix.list_group_ptr[t]
    for g in range(g0, ix.list_group_ptr[t + 1]):
        n_hit = _find_query_terms(q_idx, qdense, ix.group_uniq_ptr[g], ix.group_uniq_ptr[g + 1], ix.sum_ucomp,
                                  ix.sum_ucount, ix.sum_ckpt, ix.sum_entry, hit_lo, hit_hi, hit_q)
        _add_entries(ix.sum_entry, (g - g0) * GROUP, n_hit, hit_lo, hit_hi, hit_q, acc, aux)
    for b in range(nb):
        acc[b] = acc[b] * ix.block_scale[b0 + b] + aux[b] * ix.block_min[b0 + b]
    return nb


@njit(cache=True, no_cpython_wrapper=True)
def _find_query_terms(q_idx, qdense, pos, u_hi, sum_ucomp, sum_ucount, sum_ckpt, sum_entry, hit_lo, hit_hi, hit_q):
    """The entry ranges hit_lo[:n] / hit_hi[:n] of the query terms found among one group's
    components sum_ucomp[pos:u_hi] (one binary search each, the query terms ascending), with
    their query weights in hit_q; returns n. Their first entries are prefetched."""
    dim = qdense.shape[0]
    n_hit = 0
    for j in range(q_idx.shape[0]):
        c = q_idx[j]
        if c >= dim:
            break
        a = pos  # lower bound of c in sum_ucomp[pos:u_hi]
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
            first = np.uint64(pos) - np.uint64(pos) % np.uint64(CKPT)
            e0 = np.uint64(sum_ckpt[first // np.uint64(CKPT)])
            for i in range(first, np.uint64(pos)):
                e0 += np.uint64(sum_ucount[i]) + np.uint64(1)
            prefetch(sum_entry, e0)
            hit_lo[n_hit] = e0
            hit_hi[n_hit] = e0 + np.uint64(sum_ucount[pos]) + np.uint64(1)
            hit_q[n_hit] = qdense[c]
            n_hit += 1
            pos += 1
    return n_hit


@njit(cache=True, no_cpython_wrapper=True)
def _add_entries(sum_entry, base, n_hit, hit_lo, hit_hi, hit_q, acc, aux):
    """Add the found entries to their blocks (acc: code * q, aux: q), blocks from `base`."""
    for h in range(n_hit):
        qv = hit_q[h]
        for e in range(hit_lo[h], hit_hi[h]):
            w = sum_entry[e]
            bl = base + (w & np.uint16(BLOCK_MASK))
            acc[bl] += np.float32(w >> np.uint16(CODE_SHIFT)) * qv
            aux[bl] += qv


@njit(cache=True, no_cpython_wrapper=True)
def _next_block(scores, blocks, by_score, bi, nb, full, threshold):
    """Position >= bi of the next block whose summary score passes `threshold` (nb if none)."""
    if not full:
        return bi
    while bi < nb:
        b = blocks[bi] if by_score else bi
        if scores[b] >= threshold:
            return bi
        bi += 1
    return nb


@njit(cache=True, no_cpython_wrapper=True)
def _take_unseen(post_docs, fwd_ptr, p0, p1, visited, seen, n_seen, allowed):
    """Append the documents post_docs[p0:p1] not yet visited to `seen` (marking them in the
    `visited` bitset, their forward pointers prefetched); returns the new length of `seen`.
    `allowed` (a mask over documents, empty: all) keeps the others out (the filter)."""
    filtered = allowed.shape[0] > 0
    for p in range(np.uint64(p0), np.uint64(p1)):
        d = np.uint32(post_docs[p])
        if filtered and not allowed[d]:
            continue
        w = d >> np.uint32(6)
        bit = np.uint64(1) << np.uint64(d & np.uint32(63))
        if not (visited[w] & bit):
            visited[w] |= bit
            seen[n_seen] = d
            n_seen += 1
            prefetch(fwd_ptr, d)
    return n_seen


@njit(cache=True, no_cpython_wrapper=True)
def _score_docs(fwd_ptr, fwd_words, post_docs, doc_ids, seen, c0, n_c, np0, np1, primed, qdense, q_l1, hs, hid,
                size, k):
    """Score the documents seen[c0:c0+n_c] exactly and offer them to the heap under their
    collection rows (`doc_ids`: ties rank the lower row first); returns the heap's size.

    A document's words come in decreasing absolute value: once the heap is full, its first
    HEAD words are scored, and the rest only when they could lift it to the k-th best: they
    add at most |next value| x q_l1 (q_l1: the query's L1 norm), so a document skipped here
    could not have entered the heap (rank-safe; a relative margin covers float rounding).
    Documents are prefetched PREFETCH_AHEAD ahead, running on into the next block's
    post_docs[np0:np1]; `primed`: the first ones were prefetched by the last block."""
    line = 64 // fwd_words.itemsize
    if not primed:
        for i in range(min(PREFETCH_AHEAD, n_c)):
            _prefetch_doc(fwd_ptr, fwd_words, np.uint32(seen[c0 + i]), line)
    for i in range(n_c):
        j = i + PREFETCH_AHEAD
        if j < n_c:
            _prefetch_doc(fwd_ptr, fwd_words, np.uint32(seen[c0 + j]), line)
        elif np0 + j - n_c < np1:
            _prefetch_doc(fwd_ptr, fwd_words, np.uint32(post_docs[np0 + j - n_c]), line)
        d = np.uint32(seen[c0 + i])
        x0 = fwd_ptr[d]
        x1 = fwd_ptr[d + np.uint32(1)]
        xh = min(x0 + HEAD, x1)
        s = doc_dot(fwd_words, x0, xh, qdense)
        if xh < x1:
            if size == k:
                _, v = _unpack(fwd_words[xh])
                rest = abs(v) * q_l1
                if s + rest + np.float32(1e-4) * (abs(s) + rest) < hs[0]:
                    continue
            s += doc_dot(fwd_words, xh, x1, qdense)
        if size < k or s >= hs[0]:  # the row is looked up only for a document that may enter
            size = heap_push(hs, hid, size, k, s, np.int64(doc_ids[d]))
    return size


@njit(cache=True, no_cpython_wrapper=True)
def _scan_list(ix, t, sc, blocks, by_score, nb, heap_factor, k, qdense, q_l1, visited, seen, n_seen, hs, hid, size,
               allowed):
    """Visit list t's blocks (in `blocks` order when `by_score`, else stored order) whose
    summary score sc[b] passes heap_factor x the k-th best, scoring their unseen documents;
    returns (heap size, length of `seen`). The next passing block is found ahead of time so
    that its first documents are prefetched while this one is scored (a block skipped now
    stays skipped: the threshold only grows)."""
    b0 = ix.list_block_ptr[t]
    bi = _next_block(sc, blocks, by_score, np.int64(0), nb, size == k, heap_factor * hs[0])
    primed = np.bool_(False)  # not the literal False (see topk's note on literals)
    while bi < nb:
        b = blocks[bi] if by_score else bi
        if size == k and sc[b] < heap_factor * hs[0]:
            bi = _next_block(sc, blocks, by_score, bi + 1, nb, np.bool_(True), heap_factor * hs[0])
            primed = False
            continue
        c0 = n_seen
        n_seen = _take_unseen(ix.post_docs, ix.fwd_ptr, ix.block_doc_ptr[b0 + b], ix.block_doc_ptr[b0 + b + 1],
                              visited, seen, n_seen, allowed)
        n_c = n_seen - c0
        nbi = _next_block(sc, blocks, by_score, bi + 1, nb, size == k, heap_factor * hs[0])
        np0 = np1 = np.int64(0)  # int64, not the literal 0 (see topk's note on literals)
        if nbi < nb:
            nb_ = blocks[nbi] if by_score else nbi
            np0 = ix.block_doc_ptr[b0 + nb_]
            np1 = ix.block_doc_ptr[b0 + nb_ + 1]
            for p in range(np0, min(np1, np0 + PREFETCH_AHEAD)):
                prefetch(ix.fwd_ptr, ix.post_docs[p])
        size = _score_docs(ix.fwd_ptr, ix.fwd_words, ix.post_docs, ix.doc_ids, seen, c0, n_c, np0, np1, primed,
                           qdense, q_l1, hs, hid, size, k)
        primed = n_c >= PREFETCH_AHEAD
        bi = nbi
    return size, n_seen


@njit(cache=True, no_cpython_wrapper=True)
def search_one(q_idx, q_val, k, query_cut, heap_factor, ix, qdense, visited, seen, acc, hs, hid, out_ids, out_scores,
               allowed):
    """Top-k of one query (q_idx ascending) into out_ids / out_scores.

    `qdense` (the query, dense) is all zero and `visited` (a bitset over the documents) all
    clear between queries: what is set here is cleared at the end, `visited` through `seen`,
    the documents scored, in order."""
    dim = qdense.shape[0]
    nq = q_idx.shape[0]
    q_l1 = np.float32(0.0)
    for j in range(nq):
        if q_idx[j] < dim:
            qdense[q_idx[j]] += q_val[j]
            q_l1 += abs(q_val[j])
    order = stable_argsort(q_val, np.int64(0), nq, DESCENDING)  # ties: lower term id first
    hit_lo = np.empty(nq, dtype=np.uint64)  # the query terms' entry ranges in one summary group
    hit_hi = np.empty(nq, dtype=np.uint64)
    hit_q = np.empty(nq, dtype=np.float32)
    sc = acc[0]  # block summary scores of the current list (acc[1]: scratch)
    size = np.int64(0)  # int64, not the literal 0 (see topk's note on literals)
    n_seen = np.int64(0)
    blocks = np.empty(0, dtype=np.int64)
    for r in range(min(query_cut, nq)):
        t = q_idx[order[r]]
        if t >= dim:
            continue
        nb = _summary_scores(t, q_idx, qdense, sc, acc[1], hit_lo, hit_hi, hit_q, ix)
        if nb == 0:
            continue
        if r == 0:  # the first list's blocks in decreasing summary score
            blocks = stable_argsort(sc, np.int64(0), nb, DESCENDING)
        size, n_seen = _scan_list(ix, t, sc, blocks, r == 0, nb, heap_factor, k, qdense, q_l1, visited, seen,
                                  n_seen, hs, hid, size, allowed)
    for j in range(nq):
        if q_idx[j] < dim:
            qdense[q_idx[j]] = 0.0
    for i in range(n_seen):
        visited[np.uint32(seen[i]) >> np.uint32(6)] = 0
    heap_write_sorted(hs, hid, size, out_ids, out_scores)


# The entry points take the index arrays one by one (`*arrays`, in `SeismicArrays` order) and
# bundle them inside: Numba's dispatcher types a tuple argument in Python (~20 us a call for
# 13 arrays), separate arrays in C (~1 us).


@njit(cache=True, nogil=True)  # nogil: concurrent searches (lsr serve) overlap
def search_batch(q_ptr, q_idx, q_val, k, query_cut, heap_factor, qdense, visited, seen, acc, out_ids, out_scores,
                 allowed, *arrays):
    """Queries one after the other on the calling thread (scratch row 0)."""
    ix = SeismicArrays(*arrays)
    hs = np.empty(k, dtype=np.float32)
    hid = np.empty(k, dtype=np.int64)
    for qi in range(q_ptr.shape[0] - 1):
        lo = q_ptr[qi]
        hi = q_ptr[qi + 1]
        search_one(q_idx[lo:hi], q_val[lo:hi], k, query_cut, heap_factor, ix, qdense[0], visited[0], seen[0],
                   acc[0], hs, hid, out_ids[qi], out_scores[qi], allowed)


@njit(cache=True, parallel=True, nogil=True)
def search_batch_parallel(q_ptr, q_idx, q_val, k, query_cut, heap_factor, qdense, visited, seen, acc, out_ids,
                          out_scores, n_threads, allowed, *arrays):
    """Queries spread over `n_threads` (query i on thread i % n_threads; results in query order)."""
    ix = SeismicArrays(*arrays)
    nq = q_ptr.shape[0] - 1
    for th in prange(n_threads):
        hs = np.empty(k, dtype=np.float32)
        hid = np.empty(k, dtype=np.int64)
        for qi in range(th, nq, n_threads):
            lo = q_ptr[qi]
            hi = q_ptr[qi + 1]
            search_one(q_idx[lo:hi], q_val[lo:hi], k, query_cut, heap_factor, ix, qdense[th], visited[th], seen[th],
                       acc[th], hs, hid, out_ids[qi], out_scores[qi], allowed)
