"""Numba kernels of the exact index: accumulate over inverted lists, keep a top-k heap."""

import numpy as np
from numba import njit, prange

from .topk import heap_push, heap_write_sorted


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


def _search_chunk(q_indptr, q_indices, q_values, list_ptr, list_docs, list_weights, n_docs, k, allowed, first, last, out_ids,
                  out_scores):
    """Queries first..last-1 with one accumulator, reset through the list of touched docs;
    `allowed` (a mask over documents, empty: all): the others are summed but never ranked
    (checked per candidate, not per posting: the accumulation loop stays as it was)."""
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


search_serial = njit(cache=True, nogil=True)(_search_chunk)  # nogil: lsr serve overlaps concurrent batches
_search_chunk_inner = njit(cache=True)(_search_chunk)


@njit(cache=True, parallel=True)
def search_parallel(q_indptr, q_indices, q_values, list_ptr, list_docs, list_weights, n_docs, k, allowed, n_chunks, out_ids,
                    out_scores):
    n_queries = len(q_indptr) - 1
    per_chunk = (n_queries + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        first = c * per_chunk
        last = min(n_queries, first + per_chunk)
        _search_chunk_inner(q_indptr, q_indices, q_values, list_ptr, list_docs, list_weights, n_docs, k, allowed, first, last,
                            out_ids, out_scores)


