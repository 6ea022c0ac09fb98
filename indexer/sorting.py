"""The comparison sort the index kernels use (Numba): a stable merge sort of positions by key.
(Where the keys are small non-negative integers, the Seismic build sorts by radix instead:
`seismic_build._radix_order`.)

Numba's own `np.argsort` / `np.sort` are generic implementations that each compile for
seconds per kind and type (quicksort, mergesort, int32, float32 ...), and slice copies
between arrays compile a shape check with its error formatting. Every kernel here sorts
through `stable_argsort` instead, and copies with loops: one small function, compiled once
per key type, keeps a cold build's compilation short.
"""

from __future__ import annotations

import numpy as np
from numba import njit

RUN = 16  # sorted by insertion before merging


# Not cached on disk: the build and the search kernels, compiled at the same time in two
# processes (`lsr.indexer.precompile`), both call it with different key types, and two
# processes adding signatures to one kernel's cache index at once can lose or mismatch
# entries. Its callers' cache entries hold its code.
@njit(cache=False, nogil=True)
def stable_argsort(keys, lo, hi, descending):
    """Positions `0 .. hi-lo-1` of `keys[lo:hi]` ordered by key (descending or ascending),
    equal keys in position order: `np.argsort(±keys[lo:hi], kind="stable")`, int64."""
    n = hi - lo
    a = np.empty(n, dtype=np.int64)
    for i in range(n):
        a[i] = i
    # runs of RUN by insertion (an element moves left past strictly later-ordered ones only)
    for start in range(0, n, RUN):
        for i in range(start + 1, min(start + RUN, n)):
            x = a[i]
            kx = keys[lo + x]
            j = i - 1
            while j >= start and (keys[lo + a[j]] < kx if descending else keys[lo + a[j]] > kx):
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = x
    b = np.empty(n, dtype=np.int64)
    width = RUN
    while width < n:
        for start in range(0, n, 2 * width):
            mid = min(start + width, n)
            end = min(start + 2 * width, n)
            i, j = start, mid
            for o in range(start, end):
                if j < end and i < mid:
                    ki, kj = keys[lo + a[i]], keys[lo + a[j]]
                    right_first = kj > ki if descending else kj < ki
                else:
                    right_first = i >= mid
                if right_first:
                    b[o] = a[j]
                    j += 1
                else:
                    b[o] = a[i]
                    i += 1
        a, b = b, a
        width *= 2
    return a


# the `descending` argument at the call sites: module constants, so each site's direction is
# a compile-time constant (Numba types a global as a literal); callers pass `lo` and `hi`
# typed int64 (`np.int64(0)`, not `0`), or the literal compiles one more copy
ASCENDING, DESCENDING = False, True
