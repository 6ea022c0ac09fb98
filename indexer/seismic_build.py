"""Index construction of the Seismic index (Numba): pruning, blocking, summaries.

See `lsr.indexer.seismic` for the algorithm. The kernels read the collection as three CSR
arrays (`fwd_ptr`, `fwd_idx`, `fwd_val` float32: pruning, top components, clustering), and
the summaries read the packed forward index the build makes first (`words_ptr`, `words`);
lists are processed in parallel, one list per thread at a time, each thread with its own
O(dim) scratch.

Kept cheap to compile (a cold build compiles all of them): no `parallel=True` (the callers
run ranges on a thread pool: the kernels release the GIL), one merge sort (`sorting`, for
float32 keys; integer keys, components and document numbers, go through `_radix_order`, and
the forward index's rows through `_sort_distinct` on uint64 keys),
copies as loops (an array-to-slice assignment compiles a shape check and its message
formatting), and no Python wrapper for the kernels only other kernels call (`no_cpython_wrapper`: about 0.7 s
of `build_lists`' 10 s compilation).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._intrinsics import f32_bits_to_f16, prefetch
from .layout import CODE_MAX, CODE_SHIFT, GROUP
from .seismic_search import _unpack
from .sorting import DESCENDING, stable_argsort


@njit(cache=True, inline="always")
def _mix64(x):
    # splitmix64 finaliser on uint64 (wrapping arithmetic)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True)
def top_components(fwd_ptr, fwd_idx, fwd_val, d_lo, d_hi, out, outv):
    """Per document of [d_lo, d_hi) its largest components (by value, ties in stored order)
    into its rows of out / outv ([n, doc_cut], filled with -1 / 0 beforehand; a document of
    at most doc_cut components gets them all, in stored order): one pass over the document
    keeping the best so far in order (a value enters when it beats the last kept one, after
    the kept ones it equals)."""
    doc_cut = out.shape[1]
    for d in range(d_lo, d_hi):
        if fwd_ptr[d + 1] - fwd_ptr[d] <= doc_cut:  # all of them, in stored order
            for j in range(fwd_ptr[d + 1] - fwd_ptr[d]):
                out[d, j] = fwd_idx[fwd_ptr[d] + j]
                outv[d, j] = fwd_val[fwd_ptr[d] + j]
            continue
        kept = 0
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            v = fwd_val[j]
            if kept == doc_cut:
                if not v > outv[d, kept - 1]:
                    continue
                kept -= 1  # the last one drops out
            i = kept
            while i > 0 and outv[d, i - 1] < v:
                out[d, i] = out[d, i - 1]
                outv[d, i] = outv[d, i - 1]
                i -= 1
            out[d, i] = fwd_idx[j]
            outv[d, i] = v
            kept += 1


@njit(cache=True, nogil=True)
def pack_rows(fwd_ptr, fwd_idx, fwd_val, order, ptr, lo, hi, words):
    """The forward index's rows order[lo:hi] into words[ptr[lo]:ptr[hi]] (row r at ptr[r]),
    each row's components in decreasing absolute value (ties in stored order), packed as
    `seismic.pack_words` packs them (the word type chooses: uint32 words hold float16 values).
    Each component is sorted as one uint64 key, its absolute value's bits (inverted:
    decreasing) above its position in the row (ties: stored order), by `_sort_distinct`: no
    indirect key loads, and merges without branches (`stable_argsort`'s mispredicted about
    every other comparison); the words are written in place, with no temporary."""
    longest = 0
    for r in range(lo, hi):
        longest = max(longest, fwd_ptr[order[r] + 1] - fwd_ptr[order[r]])
    keys = np.empty(longest, dtype=np.uint64)
    spare = np.empty(longest, dtype=np.uint64)
    bits = fwd_val.view(np.uint32)  # a non-negative float32's bits order as its value
    for r in range(lo, hi):
        a = fwd_ptr[order[r]]
        n = fwd_ptr[order[r] + 1] - a
        for i in range(n):
            magnitude = bits[a + i] & np.uint32(0x7FFFFFFF)
            keys[i] = (np.uint64(np.uint32(0x7FFFFFFF) - magnitude) << np.uint64(32)) | np.uint64(i)
        ordered = _sort_distinct(keys, spare, n)
        o = ptr[r]
        for i in range(n):
            p = a + np.int64(ordered[i] & np.uint64(0xFFFFFFFF))
            words[o + i] = _pack(fwd_idx[p], bits[p], words)


def _pack(comp, bits, words):  # pragma: no cover - replaced by the overload in compiled code
    """A forward-index word of the type of `words`: component `comp`, the float32 of `bits`."""
    raise NotImplementedError


@overload(_pack)
def _pack_word(comp, bits, words):
    if words.dtype == types.uint32:
        return lambda comp, bits, words: np.uint32(comp) | (f32_bits_to_f16(bits) << np.uint32(16))
    return lambda comp, bits, words: np.uint64(comp) | (np.uint64(bits) << np.uint64(32))


@njit(cache=True, inline="always")
def _insertion_sort(a, lo, hi):
    """a[lo:hi] in ascending order, in place (inlined into its callers, so the build's thread
    and the precompile child, which both use it, share no compiled kernel)."""
    for i in range(lo + 1, hi):
        x = a[i]
        j = i - 1
        while j >= lo and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@njit(cache=True, no_cpython_wrapper=True)
def _sort_distinct(a, b, n):
    """a[:n] (distinct uint64 keys) in ascending order, in the returned array (`a`, or `b`,
    scratch of at least n): insertion into runs of 8, then bottom-up merges whose output
    position and next inputs are computed without branching on the comparison."""
    run = 8
    for start in range(0, n, run):
        _insertion_sort(a, start, min(start + run, n))
    width = run
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, o = lo, mid, lo
            while i < mid and j < hi:
                x = a[i]
                y = a[j]
                right = y < x
                b[o] = y if right else x
                j += right
                i += 1 - right
                o += 1
            for k in range(i, mid):
                b[o] = a[k]
                o += 1
            for k in range(j, hi):
                b[o] = a[k]
                o += 1
        a, b = b, a
        width *= 2
    return a


@njit(cache=True, nogil=True)
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
    ptr = _cumsum(counts)
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
    new_ptr = _cumsum(new_counts)
    out = np.empty(new_ptr[dim], dtype=np.int32)
    bits = vals.view(np.int32)
    count = np.empty(256, dtype=np.int64)
    for t in range(dim):
        lo = ptr[t]
        hi = ptr[t + 1]
        o = new_ptr[t]
        if hi - lo <= cap:
            for j in range(lo, hi):
                out[o + j - lo] = docs[j]
            continue
        # the `cap` largest (ties: lower doc id: stored first), written in stored (doc) order
        kth = _kth_largest_key(bits, lo, hi, cap, count)
        eq_left = cap
        for j in range(lo, hi):
            eq_left -= _order_key(bits[j]) > kth
        for j in range(lo, hi):
            key = _order_key(bits[j])
            if key > kth or (key == kth and eq_left > 0):
                eq_left -= key == kth
                out[o] = docs[j]
                o += 1
    return new_ptr, out


@njit(cache=True, inline="always")
def _order_key(b):
    """A float32's bits (as int32) as a uint32 key of the same order (-0.0 just below 0.0)."""
    return np.uint32(b ^ ((b >> 31) & np.int32(0x7FFFFFFF))) ^ np.uint32(0x80000000)


@njit(cache=True, no_cpython_wrapper=True)
def _kth_largest_key(bits, lo, hi, k, count):
    """The order key (`_order_key`) of the k-th largest (1-based) of the float32 values whose
    bits are bits[lo:hi]: a radix selection, one byte a pass from the top, counting only the
    keys that share the bytes chosen so far."""
    prefix = np.uint32(0)
    mask = np.uint32(0)
    for shift in (24, 16, 8, 0):
        count[:] = 0  # not `_filled`: the build's thread calls that, and this is the child's side
        for j in range(lo, hi):
            key = _order_key(bits[j])
            if key & mask == prefix:
                count[(key >> np.uint32(shift)) & np.uint32(255)] += 1
        for b in range(255, -1, -1):
            if count[b] >= k:
                prefix |= np.uint32(b) << np.uint32(shift)
                mask |= np.uint32(255) << np.uint32(shift)
                break
            k -= count[b]
    return prefix


@njit(cache=True, no_cpython_wrapper=True)
def _cumsum(counts):
    """Inclusive running sum (int64), as np.cumsum."""
    out = np.empty(counts.shape[0], dtype=np.int64)
    total = np.int64(0)
    for i in range(counts.shape[0]):
        total += counts[i]
        out[i] = total
    return out


@njit(cache=True, no_cpython_wrapper=True)
def _block_max(words_ptr, words, docs, lo, hi, maxv, touched):
    """Coordinate-wise max of the documents docs[lo:hi] (index numbers) of the packed forward
    index (`words_ptr`, `words`: the values it stores, float16 by default, so that a summary
    bounds what search scores) into maxv, which must hold -inf everywhere on entry
    (`_energy_cut` resets it); touched[:nt] lists the components in first-seen order; returns
    (nt, the largest absolute value: a bound of the values, the histogram's range in
    `_energy_cut`). The loop over the words is branch-free, the next documents prefetched.
    A row's words are in decreasing absolute value, so its first one gives the bound (a
    running max over every word was a chain of dependent operations that bounded the loop)."""
    nt = 0
    top = np.float32(0.0)
    for i in range(lo, min(lo + 2, hi)):
        _prefetch_words(words_ptr, words, docs[i])
    for i in range(lo, hi):
        if i + 2 < hi:
            _prefetch_words(words_ptr, words, docs[i + 2])
        d = np.uint32(docs[i])
        x0 = np.uint64(words_ptr[d])
        x1 = np.uint64(words_ptr[d + np.uint32(1)])
        if x0 < x1:
            top = max(top, abs(_unpack(words[x0])[1]))
        for j in range(x0, x1):
            c, v = _unpack(words[j])
            m = maxv[c]
            touched[nt] = c
            nt += m == -np.inf
            maxv[c] = max(m, v)
    return nt, top


@njit(cache=True, inline="always")
def _prefetch_words(words_ptr, words, d):
    # not seismic_search._prefetch_doc: the precompile child compiles that one, and the
    # build's thread and the child must share no cached kernel (see `precompile`)
    x0 = words_ptr[d]
    x1 = words_ptr[d + 1]
    for x in range(x0, x1, 64 // words.itemsize):
        prefetch(words, x)
    prefetch(words, x1 - 1)


@njit(cache=True, inline="always")
def _prefetch_row(fwd_ptr, fwd_idx, fwd_val, d):
    x0 = fwd_ptr[d]
    x1 = fwd_ptr[d + 1]
    for x in range(x0, x1, 16):
        prefetch(fwd_idx, x)
        prefetch(fwd_val, x)
    prefetch(fwd_idx, x1 - 1)
    prefetch(fwd_val, x1 - 1)


@njit(cache=True, no_cpython_wrapper=True)
def _energy_cut(maxv, touched, nt, vmax, energy, vals, cand, cvals, kept, hist, order, start):
    """The largest components (value desc, first-seen order on ties) until their running sum
    reaches `energy` of the total, inclusive: their positions u in touched[:nt] (component
    touched[u], value vals[u]) into kept[:count]; returns (count, the last value kept).
    `vmax`: at least the largest of them. Resets maxv to -inf at the components it reads.

    The same as popping a max-heap of all of them, but only the values that can be needed get
    ordered: a 64-bin histogram of the mass, made in the pass that gathers the values, tells
    which (the bins from the top down to the one where the mass reaches the target, with a
    margin), and those are ordered bin by bin (a counting sort over the bins, then insertion
    inside each bin). `hist` holds 4 such histograms (4 × 64), position u adding to histogram
    u % 4: consecutive values often fall in one bin, and a single histogram made each addition
    wait for the previous one (the histogram only chooses the candidates, so the order of its
    sums does not change the result)."""
    binned = vmax > 0 and nt > 64
    scale = 64.0 / vmax if binned else 0.0
    if binned:
        _filled(hist, 0.0)
    total = np.float32(0.0)
    for u in range(nt):
        c = touched[u]
        v = maxv[c]
        maxv[c] = -np.inf
        vals[u] = v
        total += v
        if binned and v > 0:
            hist[(u & 3) * 64 + min(63, int(v * scale))] += v
    until = total * np.float32(energy)
    if binned:
        mass = 0.0
        for b_cut in range(63, 0, -1):
            mass += (hist[b_cut] + hist[64 + b_cut]) + (hist[128 + b_cut] + hist[192 + b_cut])
            if mass >= until * 1.001:
                nc = _order_by_bins(vals, nt, scale, b_cut, cand, order, start)
                if nc >= 0:
                    cnt, last = _take_until(vals, order, nc, until, kept)
                    if cnt > 0:
                        return cnt, last
                break  # a crowded bin, or rounding kept the candidates short: order them all
    for u in range(nt):
        cvals[u] = vals[u]
    by_value = stable_argsort(cvals, np.int64(0), nt, DESCENDING)  # ties: first seen first
    cnt, last = _take_until(vals, by_value, nt, until, kept)
    if cnt > 0:
        return cnt, last
    return nt, vals[by_value[nt - 1]] if nt else np.float32(0.0)  # all taken


@njit(cache=True, no_cpython_wrapper=True)
def _order_by_bins(vals, nt, scale, b_cut, cand, order, start):
    """Into order[:nc] the positions u < nt whose bin min(63, int(vals[u] * scale)) is at
    least b_cut, by value descending, ties in position order; returns nc, or -1 when a bin
    holds over 64 of them (insertion there could be quadratic: the caller sorts instead).
    (`cand`: scratch.)"""
    nc = np.int64(0)
    for u in range(nt):
        cand[nc] = u
        nc += min(63, int(vals[u] * scale)) >= b_cut
    n_bins = 64 - b_cut
    for r in range(n_bins + 1):
        start[r] = 0
    for i in range(nc):
        start[64 - min(63, int(vals[cand[i]] * scale))] += 1  # bin r = 63 - bin, counted at r + 1
    for r in range(n_bins):
        if start[r + 1] > 64:
            return -1
        start[r + 1] += start[r]
    for i in range(nc):
        r = 63 - min(63, int(vals[cand[i]] * scale))
        order[start[r]] = cand[i]
        start[r] += 1
    lo = 0
    for r in range(n_bins):  # bin r now ends at start[r]
        hi = start[r]
        for i in range(lo + 1, hi):
            x = order[i]
            vx = vals[x]
            j = i - 1
            while j >= lo and vals[order[j]] < vx:
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = x
        lo = hi
    return nc


@njit(cache=True, no_cpython_wrapper=True)
def _take_until(vals, order, n, until, kept):
    """The positions order[i] in order until their values' running float32 sum reaches
    `until` into kept; (count, last value), or (0, 0) when the n of them fall short."""
    acc = np.float32(0.0)
    for i in range(n):
        u = order[i]
        acc += vals[u]
        kept[i] = u
        if not (acc < until):
            return i + 1, vals[u]
    return 0, np.float32(0.0)


class Forward(NamedTuple):
    """The collection as CSR rows (float32 values): what the build kernels read."""

    ptr: np.ndarray
    idx: np.ndarray
    val: np.ndarray


class Centroids(NamedTuple):
    """A small inverted index over one list's centroids' full vectors. Component c has the
    code `code[c]` (`code[dim]` = -1, for the -1 that pads `top_components`' rows): -1, no
    centroid has it; u >= 0, its centroids and values are
    `cen_id / cen_val[slot_ptr[u]:slot_ptr[u + 1]]`; -2 - r, held by many centroids, its
    values are the dense row `dense[r]` (over the centroids)."""

    code: np.ndarray
    slot_ptr: np.ndarray
    cen_id: np.ndarray
    cen_val: np.ndarray
    dense: np.ndarray


class ClusterScratch(NamedTuple):
    """One thread's scratch for `_cluster_list`: `code` (int32 per component and one more, all
    -1 between lists), `count` (int32 per component, all 0 between lists: half the cache
    lines of int64; it counts a list's centroid entries, at most centroid_fraction × the list's
    cap rows), `touched` (O(dim)),
    `scores`, `perm`, `bounds` (O(longest list))."""

    code: np.ndarray
    count: np.ndarray
    touched: np.ndarray
    scores: np.ndarray
    perm: np.ndarray
    bounds: np.ndarray


@njit(cache=True, no_cpython_wrapper=True)
def _cluster_list(t, docs, lo, hi, fwd, top_c, top_v, centroid_fraction, min_cluster_size, seed, scratch, doc_bits):
    """Reorder docs[lo:hi] (list t) into blocks; write the block ends (relative to lo) into
    scratch.bounds[0:nb]; return nb. (`doc_bits`: document numbers are below 2**doc_bits.)"""
    code, count, touched, scores, perm, bounds = scratch
    n = hi - lo
    nc = min(max(int(np.float32(centroid_fraction) * np.float32(n)), 1), n)
    _sample_centroids(docs, lo, n, nc, seed, t, perm)
    cen, n_slots = _centroid_index(fwd, perm, nc, code, count, touched)
    assign = _assign_dissolving(docs, lo, hi, nc, min_cluster_size, cen, top_c, top_v, scores)
    for u in range(n_slots):
        code[touched[u]] = -1
    return _group_blocks(docs, lo, n, nc, perm, assign, bounds, doc_bits)


@njit(cache=True, no_cpython_wrapper=True)
def _sample_centroids(docs, lo, n, nc, seed, t, perm):
    """perm[:nc] = a sample of nc of the documents docs[lo:lo+n], deterministic from `seed`
    and the list `t` (a partial Fisher-Yates shuffle of perm[:n], a copy of them)."""
    for i in range(n):
        perm[i] = docs[lo + i]
    base = _mix64(np.uint64(seed) * np.uint64(0x100000001B3) + np.uint64(t))
    for i in range(nc):
        r = _mix64(base + np.uint64(i))
        j = i + int(r % np.uint64(n - i))
        tmp = perm[i]
        perm[i] = perm[j]
        perm[j] = tmp


@njit(cache=True, no_cpython_wrapper=True)
def _centroid_index(fwd, perm, nc, code, count, touched):
    """The `Centroids` of the documents perm[:nc] (`code`, -1 everywhere on entry, gets their
    codes; `count`, 0 everywhere on entry and on return), and the number of their distinct
    components, listed in touched[:n] in first-seen order (reset `code` there after use).
    Two passes over the centroids' rows (count, then place), prefetching two rows ahead; the
    first keys its counts by component (no code lookup in between) and records first sights
    without a branch."""
    n_slots = 0
    for ci in range(nc):
        if ci + 2 < nc:
            _prefetch_row(fwd.ptr, fwd.idx, fwd.val, perm[ci + 2])
        d = perm[ci]
        for j in range(fwd.ptr[d], fwd.ptr[d + 1]):
            c = fwd.idx[j]
            seen = count[c]
            touched[n_slots] = c
            n_slots += seen == 0
            count[c] = seen + 1
    # components held by over 1/16 of the centroids get a dense row (vectorised accumulation
    # beats scattered updates from there on); the others are numbered in first-seen order, and
    # their count becomes the position of their next entry (slot_ptr: room for every
    # component, the sparse ones use the first n_sparse + 1)
    n_dense = 0
    n_sparse = 0
    total = np.int64(0)
    slot_ptr = np.empty(n_slots + 1, dtype=np.int64)
    for u in range(n_slots):
        c = touched[u]
        held = count[c]
        if held * 16 > nc and nc >= 16:
            code[c] = -2 - n_dense
            n_dense += 1
        else:
            code[c] = n_sparse
            slot_ptr[n_sparse] = total
            n_sparse += 1
            count[c] = total
            total += held
    slot_ptr[n_sparse] = total
    cen_id = np.empty(total, dtype=np.int32)
    cen_val = np.empty(total, dtype=np.float32)
    dense = _filled(np.empty(n_dense * nc, dtype=np.float32), 0.0).reshape((n_dense, nc))
    for ci in range(nc):
        if ci + 2 < nc:
            _prefetch_row(fwd.ptr, fwd.idx, fwd.val, perm[ci + 2])
        d = perm[ci]
        for j in range(fwd.ptr[d], fwd.ptr[d + 1]):
            c = fwd.idx[j]
            u = code[c]
            if u < 0:
                dense[-2 - u, ci] = fwd.val[j]
            else:
                p = count[c]
                cen_id[p] = ci
                cen_val[p] = fwd.val[j]
                count[c] = p + 1
    for u in range(n_slots):
        count[touched[u]] = 0
    return Centroids(code, slot_ptr, cen_id, cen_val, dense), n_slots


@njit(cache=True, no_cpython_wrapper=True)
def _assign_dissolving(docs, lo, hi, nc, min_cluster_size, cen, top_c, top_v, scores):
    """Each document of docs[lo:hi] assigned to its best centroid; then pyseismic's rule: a
    cluster that got documents but no more than `min_cluster_size` is dissolved and its
    documents go to their best remaining centroid (an empty one stays available)."""
    n = hi - lo
    penalty = _filled(np.empty(nc, dtype=np.float32), 0.0)
    assign = np.empty(n, dtype=np.int32)
    _assign_bs(docs, lo, hi, nc, penalty, cen, top_c, top_v, scores, assign, _filled(np.empty(n, dtype=np.bool_), True))
    sizes = _filled(np.empty(nc, dtype=np.int64), 0)
    for i in range(n):
        sizes[assign[i]] += 1
    n_removed = 0
    for ci in range(nc):
        if 0 < sizes[ci] <= min_cluster_size:
            penalty[ci] = _REMOVED
            n_removed += 1
    if n_removed == nc:
        _filled(assign, 0)
    elif n_removed > 0:
        redo = np.empty(n, dtype=np.bool_)
        for i in range(n):
            redo[i] = penalty[assign[i]] != 0
        _assign_bs(docs, lo, hi, nc, penalty, cen, top_c, top_v, scores, assign, redo)
    return assign


@njit(cache=True, no_cpython_wrapper=True)
def _group_blocks(docs, lo, n, nc, perm, assign, bounds, doc_bits):
    """Rewrite docs[lo:lo+n] (ascending ids, as `_invert` leaves every list) block by block:
    blocks in the order of their centroids' document ids perm[:nc] (as pyseismic orders
    them), ascending document id inside a block (a stable counting sort by block keeps the
    list's order); the ends of the non-empty blocks into bounds[:nb]; returns nb."""
    label = np.empty(nc, dtype=np.int32)
    by_id = _radix_order(perm, np.int64(0), nc, doc_bits, np.empty(nc, dtype=np.int64), np.empty(nc, dtype=np.int64),
                         np.empty(257, dtype=np.int64))
    for r in range(nc):
        label[by_id[r]] = r
    sizes = _filled(np.empty(nc, dtype=np.int64), 0)
    for i in range(n):
        assign[i] = label[assign[i]]
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
    for i in range(n):
        docs[lo + i] = perm[i]
    nb = 0
    for ci in range(nc):
        if sizes[ci] > 0:
            bounds[nb] = start[ci + 1]
            nb += 1
    return nb


_REMOVED = np.float32(-3.0e38)  # added to the score of a dissolved centroid


@njit(cache=True, no_cpython_wrapper=True)
def _argmax(scores, n):
    """Index of the largest of scores[:n], the lowest on ties, in one branch-free pass: each
    float becomes an integer of the same order, shifted up, with n - i in the low bits."""
    bits = scores[:n].view(np.int32)
    m = np.int64(-(2**63) + 1)
    for i in range(n):
        b = np.int64(bits[i])
        m = max(m, ((b ^ ((b >> 31) & np.int64(0x7FFFFFFF))) << 32) | (n - i))
    return n - (m & np.int64(0xFFFFFFFF))


@njit(cache=True, fastmath=True, no_cpython_wrapper=True)
def _assign_bs(docs, lo, hi, nc, penalty, cen, top_c, top_v, scores, assign, mask):
    """Best centroid (dot product of the doc's top components with the centroids' full
    vectors, `Centroids`; ties: lowest centroid index; dissolved centroids carry `_REMOVED`
    in `penalty`) for docs[lo:hi] where mask is set.

    Per document, its components are first sorted into dense and sparse ones without a branch
    (which kind a component is follows no pattern a branch predictor could learn), then the
    dense rows are added and the sparse ones scattered."""
    code, slot_ptr, cen_id, cen_val, dense = cen
    n_top = top_c.shape[1]
    no_comp = code.shape[0] - 1  # code[dim] = -1: a padding -1 of top_c
    rows = np.empty(n_top, dtype=np.int64)
    row_v = np.empty(n_top, dtype=np.float32)
    slots = np.empty(n_top, dtype=np.int64)
    slot_v = np.empty(n_top, dtype=np.float32)
    for i in range(lo, hi):
        if not mask[i - lo]:
            continue
        if i + 4 < hi:
            prefetch(top_c, np.uint32(docs[i + 4]) * n_top)
            prefetch(top_v, np.uint32(docs[i + 4]) * n_top)
        d = np.uint32(docs[i])
        n_rows = 0
        n_slots = 0
        for j in range(n_top):
            c = top_c[d, j]
            u = code[c if c >= 0 else no_comp]
            v = top_v[d, j]
            rows[n_rows] = -2 - u
            row_v[n_rows] = v
            n_rows += u < -1
            slots[n_slots] = u
            slot_v[n_slots] = v
            n_slots += u >= 0
        for ci in range(nc):
            scores[ci] = penalty[ci]
        for r in range(n_rows):
            row = dense[rows[r]]
            v = row_v[r]
            for ci in range(nc):
                scores[ci] += v * row[ci]
        for s in range(n_slots):
            u = slots[s]
            v = slot_v[s]
            for p in range(slot_ptr[u], slot_ptr[u + 1]):
                scores[cen_id[p]] += v * cen_val[p]
        assign[i - lo] = _argmax(scores, nc)


@njit(cache=True, nogil=True)
def build_lists(t_lo, t_hi, list_ptr, docs, fwd, top_c, top_v, dim, centroid_fraction, min_cluster_size, seed,
                energy, new_id, words_ptr, words):
    """Blocks and summaries of the lists [t_lo, t_hi), in list order.

    Reorders each list's documents in `docs` into its blocks (clustering on the collection's
    rows: `fwd`, `top_c`, `top_v`), renumbers each block through `new_id` (`_renumber_block`;
    lists own disjoint ranges, so concurrent calls on different lists are safe) and summarises
    it from the packed forward index, whose rows are in the new numbering (`words_ptr`,
    `words`: `seismic.pack_forward`). Returns, concatenated over the lists:
    blocks per list; per block its end (relative to the list), summary min and scale; per
    summary group (GROUP blocks) its number of distinct components; per distinct component
    its id and entry count - 1; per entry `block_in_group | code << CODE_SHIFT`.
    """
    n_lists = t_hi - t_lo
    n_post = list_ptr[t_hi] - list_ptr[t_lo]
    max_len = 1
    for t in range(t_lo, t_hi):
        max_len = max(max_len, list_ptr[t + 1] - list_ptr[t])
    # scratch (O(dim) + O(longest list))
    touched = np.empty(dim + 1, dtype=np.int32)
    bounds = np.empty(max_len, dtype=np.int64)
    code = np.empty(dim + 1, dtype=np.int32)
    for c in range(dim + 1):
        code[c] = -1
    scratch = ClusterScratch(code, _filled(np.empty(dim, dtype=np.int32), 0), touched,
                             np.empty(max_len, dtype=np.float32), np.empty(max_len, dtype=np.int32), bounds)
    maxv = _filled(np.empty(dim, dtype=np.float32), -np.inf)
    bvals = np.empty(dim + 1, dtype=np.float32)
    cvals = np.empty(dim + 1, dtype=np.float32)
    cand = np.empty(dim + 1, dtype=np.int64)
    kept = np.empty(dim + 1, dtype=np.int32)
    hist = np.empty(4 * 64, dtype=np.float64)
    bin_order = np.empty(dim + 1, dtype=np.int64)
    bin_start = np.empty(65, dtype=np.int64)
    # outputs (entries grow by doubling)
    n_blocks = _filled(np.empty(n_lists, dtype=np.int64), 0)
    block_end = np.empty(n_post, dtype=np.int64)
    block_min = np.empty(n_post, dtype=np.float32)
    block_scale = np.empty(n_post, dtype=np.float32)
    group_uniq = np.empty(n_post, dtype=np.int64)
    ucomp = np.empty(max(16, n_post), dtype=np.int32)
    ucount = np.empty(max(16, n_post), dtype=np.uint8)
    entry = np.empty(max(16, 4 * n_post), dtype=np.uint16)
    # per list: its entries before grouping (comp, block, code)
    l_comp = np.empty(16, dtype=np.int32)
    l_block = np.empty(16, dtype=np.int32)
    l_code = np.empty(16, dtype=np.uint8)
    # radix sort scratch of the summary groups (components below 2**comp_bits)
    comp_bits = 8
    while (1 << comp_bits) < dim:
        comp_bits += 8
    doc_bits = 8  # document numbers, for the radix sorts of the blocks
    while (1 << doc_bits) < new_id.shape[0]:
        doc_bits += 8
    rad_a = np.empty(16, dtype=np.int64)
    rad_b = np.empty(16, dtype=np.int64)
    rad_count = np.empty(257, dtype=np.int64)
    nbk = 0
    ngr = 0
    nu = np.int64(0)  # counters passed to _grow: int64, not the literal 0 (see topk)
    ne = np.int64(0)
    for t in range(t_lo, t_hi):
        lo = list_ptr[t]
        hi = list_ptr[t + 1]
        if hi == lo:
            continue
        nb = _cluster_list(t, docs, lo, hi, fwd, top_c, top_v, centroid_fraction, min_cluster_size, seed, scratch,
                           doc_bits)
        n_blocks[t - t_lo] = nb
        m = np.int64(0)
        b_lo = 0
        for b in range(nb):
            b_hi = bounds[b]
            block_end[nbk + b] = b_hi
            _renumber_block(docs, lo + b_lo, lo + b_hi, new_id, doc_bits, rad_count)
            nt, vmax = _block_max(words_ptr, words, docs, lo + b_lo, lo + b_hi, maxv, touched)
            cnt, thr = _energy_cut(maxv, touched, nt, vmax, energy, bvals, cand, cvals, kept, hist, bin_order,
                                   bin_start)
            mx = thr
            for u in range(cnt):
                mx = max(mx, bvals[kept[u]])
            scale = (mx - thr) / np.float32(CODE_MAX)
            block_min[nbk + b] = thr
            block_scale[nbk + b] = scale
            if m + cnt > l_comp.shape[0]:
                size = max(2 * l_comp.shape[0], m + cnt)
                l_comp = _grow(l_comp, size, m)
                l_block = _grow(l_block, size, m)
                l_code = _grow(l_code, size, m)
            for u in range(cnt):
                u_kept = kept[u]
                l_comp[m] = touched[u_kept]
                l_block[m] = b
                if scale > 0:
                    q = _round_half_even((bvals[u_kept] - thr) / scale)
                    l_code[m] = np.uint8(min(max(q, 0), CODE_MAX))
                else:
                    l_code[m] = 0
                m += 1
            b_lo = b_hi
        nbk += nb
        # summary groups: the entries of GROUP consecutive blocks, sorted by component
        # (stable: blocks ascend within a component)
        e_lo = np.int64(0)
        for g0 in range(0, nb, GROUP):
            e_hi = e_lo
            while e_hi < m and l_block[e_hi] < g0 + GROUP:
                e_hi += 1
            if rad_a.shape[0] < e_hi - e_lo:
                rad_a = np.empty(l_comp.shape[0], dtype=np.int64)
                rad_b = np.empty(l_comp.shape[0], dtype=np.int64)
            order = _radix_order(l_comp, e_lo, e_hi, comp_bits, rad_a, rad_b, rad_count)
            if nu + (e_hi - e_lo) > ucomp.shape[0]:
                size = max(2 * ucomp.shape[0], nu + e_hi - e_lo)
                ucomp = _grow(ucomp, size, nu)
                ucount = _grow(ucount, size, nu)
            if ne + (e_hi - e_lo) > entry.shape[0]:
                entry = _grow(entry, max(2 * entry.shape[0], ne + e_hi - e_lo), ne)
            u_start = nu
            prev = -1
            for i in range(e_hi - e_lo):
                e = e_lo + order[i]
                c = l_comp[e]
                if c != prev:
                    ucomp[nu] = c
                    ucount[nu] = 0
                    nu += 1
                    prev = c
                else:
                    ucount[nu - 1] += 1
                entry[ne] = np.uint16((l_block[e] - g0) | (np.int64(l_code[e]) << CODE_SHIFT))
                ne += 1
            group_uniq[ngr] = nu - u_start
            ngr += 1
            e_lo = e_hi
    return (n_blocks, block_end[:nbk].copy(), block_min[:nbk].copy(), block_scale[:nbk].copy(),
            group_uniq[:ngr].copy(), ucomp[:nu].copy(), ucount[:nu].copy(), entry[:ne].copy())


@njit(cache=True, no_cpython_wrapper=True)
def _radix_order(keys, lo, hi, n_bits, order, spare, count):
    """Positions 0 .. hi-lo-1 of keys[lo:hi] (non-negative, below 2**n_bits) in stable
    ascending key order, in the returned array (`order` or `spare`, both scratch of at least
    hi-lo): a least-significant-digit radix sort, one byte a pass."""
    n = hi - lo
    for i in range(n):
        order[i] = i
    for shift in range(0, n_bits, 8):
        _filled(count, 0)
        for i in range(n):
            count[((keys[lo + order[i]] >> shift) & 255) + 1] += 1
        for b in range(256):
            count[b + 1] += count[b]
        for i in range(n):
            x = order[i]
            b = (keys[lo + x] >> shift) & 255
            spare[count[b]] = x
            count[b] += 1
        order, spare = spare, order
    return order


@njit(cache=True, no_cpython_wrapper=True)
def _filled(a, value):
    """`a` with every element set to `value` (np.zeros / np.full / slice assignment each
    compile an implementation of their own per type)."""
    for i in range(a.shape[0]):
        a[i] = value
    return a


_ROUNDER = np.float32(1.5 * 2**23)


@njit(cache=True, inline="always")
def _round_half_even(x):
    """`np.round(x)` (halves to even) as an integer, for a float32 0 <= x < 2**22, without a
    branch: the float32 sum x + 1.5 * 2**23 has a spacing of 1, so its own rounding (to
    nearest, halves to even) rounds x; subtracting the constant again is exact. (np.round
    compiles two implementations; a floor-and-compare version mispredicts half the time.)"""
    return int((x + _ROUNDER) - _ROUNDER)


@njit(cache=True, no_cpython_wrapper=True)
def _grow(a, size, used):
    out = np.empty(size, dtype=a.dtype)
    for i in range(used):
        out[i] = a[i]
    return out


@njit(cache=True, no_cpython_wrapper=True)
def _renumber_block(post_docs, lo, hi, new_id, doc_bits, count):
    """Map the block post_docs[lo:hi] through `new_id` (old document number → new, below
    2**doc_bits) and sort it ascending again, in place: the block holds the same documents,
    and its documents are read from the forward index in memory order. (`count`: radix
    scratch, 257.)"""
    for p in range(lo, hi):
        post_docs[p] = new_id[post_docs[p]]
    if hi - lo <= 32:  # most blocks hold a dozen documents
        _insertion_sort(post_docs, lo, hi)
    else:
        order = _radix_order(post_docs, lo, hi, doc_bits, np.empty(hi - lo, dtype=np.int64),
                             np.empty(hi - lo, dtype=np.int64), count)
        tmp = np.empty(hi - lo, dtype=post_docs.dtype)
        for i in range(hi - lo):
            tmp[i] = post_docs[lo + order[i]]
        for i in range(hi - lo):
            post_docs[lo + i] = tmp[i]
