"""Numba kernels of the exact index: rank-safe block-max search, and the plain scan.

Block-max (k up to `PRUNE_MAX_K`): the documents are renumbered once (`doc_order`: by their
two largest terms, so similar documents share blocks) and grouped in blocks of `BLOCK`
consecutive numbers; per term, `block_bounds` lists the blocks its postings fall in, with
its largest weight in each. A query adds up, per block, `weight × block max` over its terms
(an upper bound of every score in the block, summed in the same float32 order as the scores
themselves, so it bounds them exactly), then visits the blocks in about decreasing bound and
scores a block only when its bound reaches the current k-th score: no document that could
enter the top k is skipped. Scores are the same float32 sums over the query terms in query
order as the scan's, and ties go to the lower row in both, so the answers are identical.

The scan (larger k, where bounds prune little): every posting of the query's lists into one
accumulator, then a k-heap.
"""

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ._intrinsics import prefetch
from .topk import heap_push, heap_write_sorted

BLOCK_SHIFT = 6
BLOCK = 1 << BLOCK_SHIFT  # documents per block: 64 consecutive rows
N_BUCKETS = 256  # blocks are ordered by bound in this many groups
PRUNE_MAX_K = 50  # above this k the scan is as fast (k=100: even; k=1000: the scan 2× faster)
SLOT_BITS = 16  # a query's (block, term) slot: first posting << SLOT_BITS | number of postings
SLOT_MASK = (1 << SLOT_BITS) - 1
MAX_SLOTS = 1 << 24  # blocks × longest query of a batch above this (128 MiB of slots a thread): the scan


class _Scratch(NamedTuple):
    """One thread's working arrays, cleared after every query."""

    bound: np.ndarray  # float32[n_blocks]: Σ w·max of the current query
    block_seen: np.ndarray  # bool[n_blocks]
    touched: np.ndarray  # int64[n_blocks]: the blocks with a bound
    slot: np.ndarray  # int64[max query terms, n_blocks]: a term's postings in the block, or -1 (term-major:
    # a term's slots are written and cleared in block order, one stream, not one cache line each)
    order: np.ndarray  # int64[n_blocks]: touched blocks, highest bounds first
    acc: np.ndarray  # float32[BLOCK]: the scores of one block's documents
    doc_seen: np.ndarray  # bool[BLOCK]
    local: np.ndarray  # int64[BLOCK]: the block's documents sharing a term with the query
    heap_s: np.ndarray  # float32[k]
    heap_d: np.ndarray  # int64[k]


@njit(cache=True)
def doc_order(list_ptr, list_docs, list_weights, n_docs):
    """Rows ordered by (largest-weight term, second largest), ties by row: documents led by
    the same terms share blocks, which tightens the block maxima (3× fewer blocks to score on
    SPLADE-like data than in row order)."""
    first_w = np.full(n_docs, -np.inf, np.float32)
    second_w = np.full(n_docs, -np.inf, np.float32)
    first_t = np.full(n_docs, -1, np.int64)
    second_t = np.full(n_docs, -1, np.int64)
    for t in range(len(list_ptr) - 1):
        for p in range(list_ptr[t], list_ptr[t + 1]):
            d, w = list_docs[p], list_weights[p]
            if w > first_w[d]:
                second_w[d], second_t[d] = first_w[d], first_t[d]
                first_w[d], first_t[d] = w, t
            elif w > second_w[d]:
                second_w[d], second_t[d] = w, t
    key = (first_t + 1) * len(list_ptr) + (second_t + 1)
    return np.argsort(key, kind="mergesort")  # stable: equal keys keep row order


@njit(cache=True)
def relabel(list_ptr, list_docs, list_weights, rows):
    """The lists with each document numbered by its position in `rows` (ascending in each list)."""
    position = np.empty(len(rows), np.int32)
    for i in range(len(rows)):
        position[rows[i]] = i
    docs = np.empty(len(list_docs), np.int32)
    weights = np.empty(len(list_weights), np.float32)
    for t in range(len(list_ptr) - 1):
        a, z = list_ptr[t], list_ptr[t + 1]
        mapped = np.empty(z - a, np.int32)
        for p in range(a, z):
            mapped[p - a] = position[list_docs[p]]
        order = np.argsort(mapped)
        for i in range(z - a):
            docs[a + i] = mapped[order[i]]
            weights[a + i] = list_weights[a + order[i]]
    return docs, weights


@njit(cache=True)
def block_bounds(list_ptr, list_docs, list_weights):
    """Per term, its blocks (lists ascending by document): `(block_ptr int64[dim+1], blocks
    int32[e], block_max float32[e], block_start int64[e+1], nonnegative)`. Entry e's postings
    are `block_start[e]:block_start[e+1]`; `nonnegative` is False when a weight is below 0 (a
    block max is then no upper bound where the term is missing)."""
    dim = len(list_ptr) - 1
    block_ptr = np.zeros(dim + 1, np.int64)
    nonnegative = True
    for t in range(dim):  # count the entries
        n = 0
        last = -1
        for p in range(list_ptr[t], list_ptr[t + 1]):
            if not list_weights[p] >= 0:
                nonnegative = False
            b = list_docs[p] >> BLOCK_SHIFT
            if b != last:
                n += 1
            last = b
        block_ptr[t + 1] = block_ptr[t] + n
    n_entries = block_ptr[dim]
    blocks = np.empty(n_entries, np.int32)
    block_max = np.empty(n_entries, np.float32)
    block_start = np.empty(n_entries + 1, np.int64)
    block_start[n_entries] = list_ptr[dim]
    e = 0
    for t in range(dim):
        current = -1
        for p in range(list_ptr[t], list_ptr[t + 1]):
            b = list_docs[p] >> BLOCK_SHIFT
            w = list_weights[p]
            if b != current:
                current = b
                blocks[e] = b
                block_max[e] = w
                block_start[e] = p
                e += 1
            elif w > block_max[e - 1]:
                block_max[e - 1] = w
    return block_ptr, blocks, block_max, block_start, nonnegative


@njit(cache=True)
def _add_bounds(terms, weights, block_ptr, blocks, block_max, block_start, bound, block_seen, touched, slot):
    """Per block, the upper bound Σ w·max over the query terms in query order (`bound`), the
    blocks touched, and per (block, query term) where the term's postings in the block are
    (`slot`: first posting << SLOT_BITS | count; -1 where none). Returns (blocks touched,
    whether the bounds hold: no negative query weight)."""
    n_touched = 0
    holds = True
    for j in range(len(terms)):
        t = terms[j]
        if t >= len(block_ptr) - 1:
            continue
        w = weights[j]
        if w < 0:
            holds = False
        for e in range(block_ptr[t], block_ptr[t + 1]):
            b = blocks[e]
            if not block_seen[b]:
                block_seen[b] = True
                touched[n_touched] = b
                n_touched += 1
            bound[b] += w * block_max[e]
            slot[j, b] = (block_start[e] << SLOT_BITS) | (block_start[e + 1] - block_start[e])
    return n_touched, holds


@njit(cache=True)
def _order_by_bound(bound, touched, n_touched, order):
    """`order[:n_touched]`: the touched blocks grouped by bound into N_BUCKETS buckets, highest
    bucket first (a counting sort: cheaper than sorting, and close enough to visit the blocks
    that raise the k-th score early)."""
    top = np.float32(0.0)
    for i in range(n_touched):
        top = max(top, bound[touched[i]])
    scale = N_BUCKETS / top if top > 0 else 0.0
    starts = np.zeros(N_BUCKETS + 1, np.int64)
    for i in range(n_touched):
        starts[_bucket(bound[touched[i]], scale) + 1] += 1
    for c in range(N_BUCKETS):
        starts[c + 1] += starts[c]
    for i in range(n_touched):
        b = touched[i]
        c = _bucket(bound[b], scale)
        order[starts[c]] = b
        starts[c] += 1


@njit(cache=True)
def _threshold(heap_s, size, k, prune):
    """The score a block's bound must reach to be scored: the k-th best so far once k are
    in the heap (-inf before, or when the bounds do not hold)."""
    return heap_s[0] if prune and size == k else -np.inf


@njit(cache=True)
def _next_block(order, bound, i, n, threshold):
    """The first position from i in `order[:n]` whose block's bound reaches `threshold`."""
    while i < n and bound[order[i]] < threshold:
        i += 1
    return i


@njit(cache=True)
def _bucket(value, scale):
    """0 for the highest bounds, N_BUCKETS - 1 for the lowest."""
    return N_BUCKETS - 1 - min(N_BUCKETS - 1, max(0, int(value * scale)))


@njit(cache=True)
def _prefetch_block(slot, b, n_terms, list_docs, list_weights):
    """Ask for the first cache line of each of block b's posting ranges (one miss each, all
    in flight at once instead of one after the other)."""
    for j in range(n_terms):
        v = slot[j, b]
        if v >= 0:
            prefetch(list_docs, v >> SLOT_BITS)
            prefetch(list_weights, v >> SLOT_BITS)


@njit(cache=True)
def _score_block(b, weights, rows, list_docs, list_weights, slot, n_terms, acc, doc_seen, local, heap_s, heap_d, size, k,
                 allowed):
    """Score the documents of block b that share a term with the query (float32 sums in
    query-term order, as a full scan) into the heap, those `allowed` leaves out (a mask over
    rows, empty: all) excepted; returns the heap's new size."""
    filtered = allowed.shape[0] > 0
    first_doc = np.int64(b) << BLOCK_SHIFT
    n_local = 0
    for j in range(n_terms):
        v = slot[j, b]
        if v < 0:
            continue
        w = weights[j]
        p0 = v >> SLOT_BITS
        for p in range(p0, p0 + (v & SLOT_MASK)):
            d = list_docs[p] - first_doc
            if not doc_seen[d]:
                doc_seen[d] = True
                local[n_local] = d
                n_local += 1
            acc[d] += w * list_weights[p]
    for i in range(n_local):
        d = local[i]
        row = rows[first_doc + d]
        if not filtered or allowed[row]:
            size = heap_push(heap_s, heap_d, size, k, acc[d], row)  # ties: the lower row
        acc[d] = 0.0
        doc_seen[d] = False
    return size


@njit(cache=True)
def _search_query(terms, weights, rows, list_docs, list_weights, block_ptr, blocks, block_max, block_start,
                  k, allowed, s, out_ids, out_scores):
    """One query with the scratch arrays `s` (`_Scratch`), which come back cleared: blocks in
    about decreasing bound, each scored unless its bound is below the current k-th score."""
    n_terms = len(terms)
    n_touched, holds = _add_bounds(terms, weights, block_ptr, blocks, block_max, block_start, s.bound, s.block_seen,
                                   s.touched, s.slot)
    prune = holds  # with a negative query weight, every block is scored
    _order_by_bound(s.bound, s.touched, n_touched, s.order)
    size = np.int64(0)
    i = 0  # the next block to score: found (and its postings prefetched) one block ahead
    while i < n_touched:
        b = s.order[i]
        i = _next_block(s.order, s.bound, i + 1, n_touched, _threshold(s.heap_s, size, k, prune))
        if i < n_touched:
            _prefetch_block(s.slot, s.order[i], n_terms, list_docs, list_weights)
        size = _score_block(b, weights, rows, list_docs, list_weights, s.slot, n_terms, s.acc, s.doc_seen, s.local,
                            s.heap_s, s.heap_d, size, k, allowed)
        i = _next_block(s.order, s.bound, i, n_touched, _threshold(s.heap_s, size, k, prune))
    heap_write_sorted(s.heap_s, s.heap_d, size, out_ids, out_scores)
    for i in range(n_touched):
        b = s.touched[i]
        s.bound[b] = 0.0
        s.block_seen[b] = False
    for j in range(n_terms):  # the slots each term set, in block order
        t = terms[j]
        if t < len(block_ptr) - 1:
            for e in range(block_ptr[t], block_ptr[t + 1]):
                s.slot[j, blocks[e]] = -1


@njit(cache=True)
def new_scratch(n_blocks, max_terms, k):
    """Working arrays for queries of up to `max_terms` terms and top-`k` over `n_blocks`
    blocks, cleared (as `_search_query` leaves them)."""
    return _Scratch(
        bound=np.zeros(n_blocks, np.float32),
        block_seen=np.zeros(n_blocks, np.bool_),
        touched=np.empty(n_blocks, np.int64),
        slot=np.full((max_terms, n_blocks), -1, np.int64),
        order=np.empty(n_blocks, np.int64),
        acc=np.zeros(BLOCK, np.float32),
        doc_seen=np.zeros(BLOCK, np.bool_),
        local=np.empty(BLOCK, np.int64),
        heap_s=np.empty(k, np.float32),
        heap_d=np.empty(k, np.int64),
    )


def _search_chunk(q_indptr, q_indices, q_values, rows, list_docs, list_weights, block_ptr, blocks, block_max, block_start,
                  k, allowed, first, last, out_ids, out_scores, s):
    """Queries first..last-1 with the scratch arrays `s` (`new_scratch`: blocks of the index,
    at least the longest query's terms, top-k), which every query leaves cleared; `allowed` (a
    mask over rows, empty: all) leaves documents out of the ranking (the bounds still hold:
    they only ever over-estimate what is left)."""
    for q in range(first, last):
        a, z = q_indptr[q], q_indptr[q + 1]
        _search_query(q_indices[a:z], q_values[a:z], rows, list_docs, list_weights, block_ptr, blocks, block_max, block_start,
                      k, allowed, s, out_ids[q], out_scores[q])


# nogil: lsr serve overlaps concurrent batches; its scratch comes from the caller, reused
# across calls (a 1M-document index's slots are 5 MiB a query: allocating and clearing them
# for each single-query call cost about as much as the search)
search_serial = njit(cache=True, nogil=True)(_search_chunk)
_search_chunk_inner = njit(cache=True)(_search_chunk)


@njit(cache=True, parallel=True)
def search_parallel(q_indptr, q_indices, q_values, rows, list_docs, list_weights, block_ptr, blocks, block_max, block_start,
                    n_docs, k, allowed, n_chunks, out_ids, out_scores):
    n_queries = len(q_indptr) - 1
    per_chunk = (n_queries + n_chunks - 1) // n_chunks
    n_blocks = (n_docs + BLOCK - 1) >> BLOCK_SHIFT
    for c in prange(n_chunks):
        first = c * per_chunk
        last = min(n_queries, first + per_chunk)
        max_terms = 1
        for q in range(first, last):
            max_terms = max(max_terms, q_indptr[q + 1] - q_indptr[q])
        _search_chunk_inner(q_indptr, q_indices, q_values, rows, list_docs, list_weights, block_ptr, blocks, block_max,
                            block_start, k, allowed, first, last, out_ids, out_scores,
                            new_scratch(n_blocks, max_terms, k))


# ---- the plain scan ----------------------------------------------------------------------


@njit(cache=True)
def top_k_of(candidates, n_candidates, acc, k, out_ids, out_scores, allowed):
    """Write the k best (score desc, id asc) of acc[candidates[:n]] into out_* (padded -1/-inf);
    `allowed` (a mask over documents, empty: all): only those candidates."""
    filtered = allowed.shape[0] > 0
    heap_s = np.empty(k, np.float32)
    heap_d = np.empty(k, np.int64)
    size = np.int64(0)  # not the literal 0: see topk's note on literals
    for j in range(n_candidates):
        d = candidates[j]
        if filtered and not allowed[d]:
            continue
        size = heap_push(heap_s, heap_d, size, k, acc[d], d)
    heap_write_sorted(heap_s, heap_d, size, out_ids, out_scores)


def _scan_chunk(q_indptr, q_indices, q_values, list_ptr, list_docs, list_weights, n_docs, k, allowed, first, last, out_ids,
                out_scores):
    """The plain term-at-a-time scan of every posting of the query's lists (for large k, where
    block bounds prune little): queries first..last-1 with one accumulator, reset through the
    list of touched docs; `allowed` (a mask over documents, empty: all): the others are summed
    but never ranked (checked per candidate, not per posting)."""
    acc = np.zeros(n_docs, np.float32)
    seen = np.zeros(n_docs, np.bool_)
    touched = np.empty(n_docs, np.int32)
    for q in range(first, last):
        n_touched = 0
        for j in range(q_indptr[q], q_indptr[q + 1]):
            term = q_indices[j]
            if term >= len(list_ptr) - 1:
                continue
            w = q_values[j]
            for p in range(list_ptr[term], list_ptr[term + 1]):
                d = list_docs[p]
                if not seen[d]:
                    seen[d] = True
                    touched[n_touched] = d
                    n_touched += 1
                acc[d] += w * list_weights[p]
        top_k_of(touched, n_touched, acc, k, out_ids[q], out_scores[q], allowed)
        for j in range(n_touched):
            acc[touched[j]] = 0.0
            seen[touched[j]] = False


scan_serial = njit(cache=True, nogil=True)(_scan_chunk)
_scan_chunk_inner = njit(cache=True)(_scan_chunk)


@njit(cache=True, parallel=True)
def scan_parallel(q_indptr, q_indices, q_values, list_ptr, list_docs, list_weights, n_docs, k, allowed, n_chunks, out_ids,
                  out_scores):
    n_queries = len(q_indptr) - 1
    per_chunk = (n_queries + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        first = c * per_chunk
        last = min(n_queries, first + per_chunk)
        _scan_chunk_inner(q_indptr, q_indices, q_values, list_ptr, list_docs, list_weights, n_docs, k, allowed, first, last,
                          out_ids, out_scores)
