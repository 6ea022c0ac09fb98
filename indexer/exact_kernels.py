"""Numba kernels of the exact index: rank-safe block-max search over the inverted lists.

Documents are grouped in blocks of `BLOCK` consecutive rows. Per term, `block_bounds`
lists the blocks its postings fall in, with the term's largest weight in each block and
where the block's postings start. A query first adds up, per block, `weight × block max`
over its terms (an upper bound of every document score in the block, summed in the same
float32 order as the scores themselves), then scores whole blocks in decreasing bound and
stops at the first bound below the k-th best score: no document that could enter the top
k is skipped, and every score is the same float32 sum over the query terms in query order
as a plain term-at-a-time scan gives.
"""

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .topk import heap_push, heap_write_sorted

BLOCK_SHIFT = 6
BLOCK = 1 << BLOCK_SHIFT  # documents per block: 64 consecutive rows
N_BUCKETS = 256  # blocks are ordered by bound in this many groups
FIRST_ROUND = 32  # blocks scored first, for a k-th score that prunes the others


class _Scratch(NamedTuple):
    """One thread's working arrays, cleared after every query."""

    bound: np.ndarray  # float32[n_blocks]: Σ w·max of the current query
    block_seen: np.ndarray  # bool[n_blocks]
    touched: np.ndarray  # int64[n_blocks]: the blocks with a bound, then the second round's
    order: np.ndarray  # int64[n_blocks]: touched blocks, highest bounds first
    chosen: np.ndarray  # bool[n_blocks]: the blocks of the current round
    acc: np.ndarray  # float32[n_docs]: scores of the current round's documents
    doc_seen: np.ndarray  # bool[n_docs]: the documents sharing a term with the query
    heap_s: np.ndarray  # float32[k]
    heap_d: np.ndarray  # int64[k]


@njit(cache=True)
def block_bounds(list_ptr, list_docs, list_weights):
    """Per term, its blocks in ascending order: `(block_ptr int64[dim+1], blocks int32[e],
    block_max float32[e], block_start int64[e+1], ascending, nonnegative)`. Entry e's postings
    are `block_start[e]:block_start[e+1]`. `ascending` is False when a list's documents are
    not in ascending order (the entries are then meaningless); `nonnegative` is False when a
    weight is below 0 (a block max is then no upper bound where the term is missing)."""
    dim = len(list_ptr) - 1
    block_ptr = np.zeros(dim + 1, np.int64)
    ascending = True
    nonnegative = True
    for t in range(dim):  # count the entries
        n = 0
        last = -1
        for p in range(list_ptr[t], list_ptr[t + 1]):
            d = list_docs[p]
            if d < last:
                ascending = False
            if not list_weights[p] >= 0:
                nonnegative = False
            b = d >> BLOCK_SHIFT
            if b != last >> BLOCK_SHIFT:  # -1 >> shift is -1: the first posting opens an entry
                n += 1
            last = d
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
    return block_ptr, blocks, block_max, block_start, ascending, nonnegative


@njit(cache=True)
def _add_bounds(terms, weights, block_ptr, blocks, block_max, bound, block_seen, touched):
    """Per block, the upper bound Σ w·max over the query terms in query order (`bound`) and the
    blocks touched. Returns (blocks touched, whether the bounds hold: no negative query weight)."""
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
    return n_touched, holds


@njit(cache=True)
def _order_by_bound(bound, touched, n_touched, order):
    """`order[:n_touched]`: the touched blocks grouped by bound into N_BUCKETS buckets, highest
    bucket first (a counting sort: cheaper than sorting, and enough to pick the best blocks)."""
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


@njit(cache=True, inline="always")
def _bucket(value, scale):
    """0 for the highest bounds, N_BUCKETS - 1 for the lowest."""
    return N_BUCKETS - 1 - min(N_BUCKETS - 1, max(0, int(value * scale)))


@njit(cache=True)
def _score_blocks(terms, weights, block_ptr, blocks, block_start, list_docs, list_weights, chosen, picked, n_picked,
                  acc, doc_seen, heap_s, heap_d, size, k):
    """Score exactly every document of the blocks `picked[:n_picked]` (flagged in `chosen`) that
    shares a term with the query: one walk over the query's lists in query order, reading only
    the postings of chosen blocks (float32 sums in query-term order, as a full scan). Offers
    them to the heap, clears the flags and accumulators; returns the heap's new size."""
    for j in range(len(terms)):
        t = terms[j]
        if t >= len(block_ptr) - 1:
            continue
        w = weights[j]
        for e in range(block_ptr[t], block_ptr[t + 1]):
            if chosen[blocks[e]]:
                for p in range(block_start[e], block_start[e + 1]):
                    d = list_docs[p]
                    acc[d] += w * list_weights[p]
                    doc_seen[d] = True
    n_docs = len(acc)
    for i in range(n_picked):
        b = picked[i]
        chosen[b] = False
        for d in range(np.int64(b) << BLOCK_SHIFT, min(n_docs, (np.int64(b) + 1) << BLOCK_SHIFT)):
            if doc_seen[d]:
                size = heap_push(heap_s, heap_d, size, k, acc[d], d)
                acc[d] = 0.0
                doc_seen[d] = False
    return size


@njit(cache=True)
def _search_query(terms, weights, list_docs, list_weights, block_ptr, blocks, block_max, block_start, prune,
                  k, s, out_ids, out_scores):
    """One query with the scratch arrays `s` (`_Scratch`), which come back cleared. Two rounds:
    the FIRST_ROUND blocks of highest bound give a k-th score; then every other block whose
    bound reaches it (all of them when the bounds do not hold)."""
    n_touched, holds = _add_bounds(terms, weights, block_ptr, blocks, block_max, s.bound, s.block_seen, s.touched)
    prune = prune and holds
    _order_by_bound(s.bound, s.touched, n_touched, s.order)
    first = min(n_touched, FIRST_ROUND) if prune else n_touched
    for i in range(first):
        s.chosen[s.order[i]] = True
    size = _score_blocks(terms, weights, block_ptr, blocks, block_start, list_docs, list_weights, s.chosen, s.order,
                         first, s.acc, s.doc_seen, s.heap_s, s.heap_d, np.int64(0), k)
    n_picked = 0
    for i in range(first, n_touched):
        b = s.order[i]
        if size < k or s.bound[b] >= s.heap_s[0]:  # a block below the k-th score holds no top-k document
            s.chosen[b] = True
            s.touched[n_picked] = b  # `touched` is read no more: it lists the second round
            n_picked += 1
    if n_picked:
        size = _score_blocks(terms, weights, block_ptr, blocks, block_start, list_docs, list_weights, s.chosen,
                             s.touched, n_picked, s.acc, s.doc_seen, s.heap_s, s.heap_d, size, k)
    heap_write_sorted(s.heap_s, s.heap_d, size, out_ids, out_scores)
    for i in range(n_touched):
        b = s.order[i]
        s.bound[b] = 0.0
        s.block_seen[b] = False


def _search_chunk(q_indptr, q_indices, q_values, list_docs, list_weights, block_ptr, blocks, block_max, block_start,
                  prune, n_docs, k, first, last, out_ids, out_scores):
    """Queries first..last-1 with one set of scratch arrays (cleared by each query)."""
    n_blocks = (n_docs + BLOCK - 1) >> BLOCK_SHIFT
    s = _Scratch(
        bound=np.zeros(n_blocks, np.float32),
        block_seen=np.zeros(n_blocks, np.bool_),
        touched=np.empty(n_blocks, np.int64),
        order=np.empty(n_blocks, np.int64),
        chosen=np.zeros(n_blocks, np.bool_),
        acc=np.zeros(n_docs, np.float32),
        doc_seen=np.zeros(n_docs, np.bool_),
        heap_s=np.empty(k, np.float32),
        heap_d=np.empty(k, np.int64),
    )
    for q in range(first, last):
        a, z = q_indptr[q], q_indptr[q + 1]
        _search_query(q_indices[a:z], q_values[a:z], list_docs, list_weights, block_ptr, blocks, block_max, block_start,
                      prune, k, s, out_ids[q], out_scores[q])


search_serial = njit(cache=True, nogil=True)(_search_chunk)  # nogil: lsr serve overlaps concurrent batches
_search_chunk_inner = njit(cache=True)(_search_chunk)


@njit(cache=True, parallel=True)
def search_parallel(q_indptr, q_indices, q_values, list_docs, list_weights, block_ptr, blocks, block_max, block_start,
                    prune, n_docs, k, n_chunks, out_ids, out_scores):
    n_queries = len(q_indptr) - 1
    per_chunk = (n_queries + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        first = c * per_chunk
        last = min(n_queries, first + per_chunk)
        _search_chunk_inner(q_indptr, q_indices, q_values, list_docs, list_weights, block_ptr, blocks, block_max,
                            block_start, prune, n_docs, k, first, last, out_ids, out_scores)
