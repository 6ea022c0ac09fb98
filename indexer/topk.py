"""The bounded top-k heap both indexes keep (Numba): best score first, ties to the lower id."""

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _worse(score_a, id_a, score_b, id_b):
    """True when (score_a, id_a) ranks below (score_b, id_b): lower score, or equal and higher id."""
    return score_a < score_b or (score_a == score_b and id_a > id_b)


# Callers pass counters typed int64 (`np.int64(0)`, not `0`): while Numba types a caller, a
# variable first bound to a constant is still the literal `0`, and a jitted callee is compiled
# once for that literal and again for int64 (two compilations of every callee on the way).
# The array functions here are plain calls (LLVM inlines them where it pays): with Numba's
# IR inlining (inline="always") nested inside the Seismic query loop, Numba 0.68 gave a wrong
# top-k, and IR-inlined array arguments cost reference-count updates on every call.
@njit(cache=True)
def _sift_down(hs, hid, size, s, d):
    """Place (s, d) at the root of a heap of `size` entries, moving the hole down."""
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _worse(hs[child + 1], hid[child + 1], hs[child], hid[child]):
            child += 1
        if not _worse(hs[child], hid[child], s, d):
            break
        hs[i] = hs[child]
        hid[i] = hid[child]
        i = child
    hs[i] = s
    hid[i] = d


@njit(cache=True)
def heap_push(hs, hid, size, k, s, d):
    """Offer (s, d) to a min-heap of capacity k (the worst entry at the root); returns the new
    size. `hs[0]` is the k-th best score once the heap is full."""
    if size < k:
        i = size
        while i > 0:
            parent = (i - 1) >> 1
            if not _worse(s, d, hs[parent], hid[parent]):
                break
            hs[i] = hs[parent]
            hid[i] = hid[parent]
            i = parent
        hs[i] = s
        hid[i] = d
        return size + 1
    if _worse(s, d, hs[0], hid[0]):
        return size
    _sift_down(hs, hid, size, s, np.int64(d))  # as heap_write_sorted: one compilation
    return size


@njit(cache=True)
def heap_write_sorted(hs, hid, size, out_ids, out_scores):
    """Empty the heap into out_* best first (score desc, id asc), padding with -1 / -inf."""
    for pos in range(size, out_ids.shape[0]):
        out_ids[pos] = -1
        out_scores[pos] = -np.inf
    n = size
    while n > 0:
        n -= 1
        out_ids[n] = hid[0]
        out_scores[n] = hs[0]
        _sift_down(hs, hid, n, hs[n], hid[n])
