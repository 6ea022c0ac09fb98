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
3. **Summaries**: per block, the coordinate-wise max of its documents' full vectors as the
   forward index stores them (float16 values by default, as pyseismic's build uses: a summary
   then bounds what search scores), cut to the largest components holding ``summary_energy``
   of its L1 mass, quantised to u8 with a per-block ``min`` and ``scale``
   (``value ≈ min + code * scale``).
4. **Forward index**: every document's full vector, used for exact scoring, its components
   in decreasing absolute value (search scores the first ``HEAD`` and bounds the others by
   the next one's value); one word per component packing the component and its value:
   ``uint32`` words (u16 component, float16 value: pyseismic's precision, 4 bytes a
   component) when ``dim <= 65536`` and ``values="float16"`` (the default), else ``uint64``
   words (u32 component, float32 value).
5. **Numbering**: the documents are renumbered inside the index by their two largest
   components (`doc_order`), so that the documents of a block, which look alike, lie close
   together in the forward index (fewer cache and TLB misses when a block is scored);
   ``doc_ids`` maps the index's numbers back to collection rows. The forward index is packed
   first; blocks are made on collection rows, then renumbered and summarised from the packed
   forward index (neighbouring rows). They hold the same documents: results are those of the
   collection's own numbering (ties still rank the lower collection row first).

Layout (all flat NumPy arrays, saved as ``.npy`` and mmap'd on load): see
`lsr.indexer.layout`; summaries are stored per group of blocks, component-major, so a query
term finds the blocks of a group that contain it with one binary search.

Search (`SeismicIndex.search`): take the ``query_cut`` largest query terms; visit their lists
in decreasing query weight. In each list, score every block summary against the *full*
query; a block is skipped when ``summary_score < heap_factor * kth_best`` once ``k`` results
are in the heap; the documents of the other blocks are scored exactly with the forward
index (each document at most once per query). The blocks of the first list are visited in
decreasing summary score (pyseismic's ``sorted=True``). A query whose heap never filled (its
``query_cut`` lists hold fewer than ``k`` documents, as on a tiny collection) is searched again
with all its terms, so it gets every document its lists hold.

``heap_factor`` trades recall for speed: ``heap_factor = 1`` skips a block as soon as its
summary cannot beat the current k-th best score (summaries are approximate, so this is
already lossy); smaller values skip less (``0`` never skips, so with no pruning and
``query_cut`` >= query length the search is exact); values above 1 skip more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lsr.sparse import SparseVectors

from . import seismic_build as kb
from . import seismic_search as ks
from .exact import clamp_k
from .layout import BLOCK_MASK, CKPT, DTYPES, GROUP, LAYOUT, SeismicArrays
from .protocol import NO_FILTER, check_kind, filter_mask, numba_threads, resolve_threads
from .storage import (
    IndexFormatError,
    atomic_directory,
    check_length,
    check_pointer,
    check_range,
    damaged,
    load_arrays,
    read_manifest,
    save_arrays,
    write_manifest,
)

log = logging.getLogger(__name__)

KIND = "seismic"
VALUE_TYPES = ("float16", "float32")
# A filter allowing at most this share of the documents is answered exactly over the allowed
# documents' forward vectors (cost: their components, per query) instead of by the blocks,
# whose summaries know nothing of the filter: below it the kernel's recall falls (100k
# synthetic documents, docs/index.md: recall@10 0.98 at 1% allowed, 0.84 at 0.2%, where
# the exact path costs about what the kernel does and finds 0.999).
EXACT_FILTER_FRACTION = 0.005
F16_MAX = 65504.0
_ARRAYS = SeismicArrays._fields  # the saved arrays


def _value_range(values: np.ndarray, step: int = 1 << 24) -> float:
    """The largest absolute value of `values` (0 when empty), read in slices: no temporary
    the size of the collection."""
    top = 0.0
    for lo in range(0, len(values), step):
        part = np.asarray(values[lo : lo + step])
        top = max(top, float(part.max()), -float(part.min()))
    return top


def _order_keys(values: np.ndarray) -> np.ndarray:
    """float32 values as uint32 keys of the same order (-0.0 just below 0.0)."""
    bits = np.asarray(values, dtype=np.float32).view(np.int32)
    return (bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))).view(np.uint32) ^ np.uint32(0x80000000)


def _kth_smallest(values: np.ndarray, k: int, step: int = 1 << 24) -> np.float32:
    """`np.partition(values, k)[k]` without a copy of `values`: a two-pass radix selection on
    the values' order keys (high 16 bits, then low 16 bits of the bucket that holds the k-th),
    each pass one read of `values` in slices."""
    high = np.zeros(1 << 16, dtype=np.int64)
    for lo in range(0, len(values), step):
        high += np.bincount(_order_keys(values[lo : lo + step]) >> np.uint32(16), minlength=1 << 16)
    below = np.cumsum(high)
    bucket = int(np.searchsorted(below, k, side="right"))
    rank = k - (int(below[bucket - 1]) if bucket else 0)
    low = np.zeros(1 << 16, dtype=np.int64)
    for lo in range(0, len(values), step):
        keys = _order_keys(values[lo : lo + step])
        keys = keys[(keys >> np.uint32(16)) == bucket]
        low += np.bincount(keys & np.uint32(0xFFFF), minlength=1 << 16)
    key = np.uint32((bucket << 16) | int(np.searchsorted(np.cumsum(low), rank, side="right")))
    bits = (key ^ np.uint32(0x80000000)).view(np.int32)
    return np.array(bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF)), dtype=np.int32).view(np.float32)[()]


def _count_above(values: np.ndarray, threshold: np.float32, step: int = 1 << 24) -> int:
    """How many of `values` exceed `threshold`, counted in slices."""
    return sum(int(np.count_nonzero(values[lo : lo + step] > threshold)) for lo in range(0, len(values), step))


def _prune(fwd_ptr, fwd_idx, fwd_val, dim: int, n_postings: int, max_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The inverted lists (`list_ptr`, `docs`) of the postings kept by global-threshold pruning
    (`n_postings * dim` largest values) and the per-list cap (`seismic_build._invert`)."""
    nnz = len(fwd_val)
    budget = int(n_postings) * dim
    if nnz <= budget:
        threshold = np.float32(-np.inf)
        n_equal = 0
    else:
        threshold = _kth_smallest(fwd_val, nnz - budget)
        n_equal = budget - _count_above(fwd_val, threshold)
    cap = max(1, int(np.float32(n_postings) * np.float32(max_fraction)))
    return kb._invert(fwd_ptr, fwd_idx, fwd_val, dim, np.float32(threshold), n_equal, cap)


def _top_components(fwd_ptr, fwd_idx, fwd_val, doc_cut: int, n_threads: int,
                    pool=None) -> tuple[np.ndarray, np.ndarray]:
    """Per document its `doc_cut` largest components and values (`[n, doc_cut]`, padded with
    -1 / 0), from `seismic_build.top_components` over document ranges on `n_threads` tasks
    (of `pool`, or of a pool of their own)."""
    n = len(fwd_ptr) - 1
    top_c = np.full((n, doc_cut), -1, dtype=np.int32)
    top_v = np.zeros((n, doc_cut), dtype=np.float32)
    bounds = np.linspace(0, n, n_threads + 1).astype(np.int64)
    with _pool_or(pool, n_threads) as run:
        for done in [run.submit(kb.top_components, fwd_ptr, fwd_idx, fwd_val, int(lo), int(hi), top_c, top_v)
                     for lo, hi in zip(bounds[:-1], bounds[1:])]:  # fmt: skip
            done.result()
    return top_c, top_v


def _list_ranges(list_ptr: np.ndarray, dim: int, n_threads: int) -> np.ndarray:
    """Bounds of ranges of lists holding about equal numbers of postings: 64 per thread, so
    that the last ones end close together (with 16, at 100k documents, one thread idled for
    the last 0.3 s of a 7 s build)."""
    total = int(list_ptr[-1])
    n_ranges = max(1, min(dim, n_threads * 64))
    cuts = np.searchsorted(list_ptr, np.linspace(0, total, n_ranges + 1)[1:-1], side="right")
    return np.unique(np.concatenate([[0], np.minimum(cuts, dim), [dim]]))  # no postings: cuts = dim + 1


def _build_lists_parallel(list_ptr, docs, fwd_ptr, fwd_idx, fwd_val, top_c, top_v, dim, centroid_fraction,
                          min_cluster_size, seed, energy, new_id, words_ptr, words, n_threads,
                          pool=None) -> Iterator[tuple]:
    """`seismic_build.build_lists` over `_list_ranges` as tasks of `pool` (or of a pool of
    `n_threads` of their own; the kernel releases the GIL), yielding the results in list order
    as they are done, so that the caller joins them while the later ranges still run. They do
    not depend on the number of threads."""
    forward = kb.Forward(fwd_ptr, fwd_idx, fwd_val)
    bounds = _list_ranges(list_ptr, dim, n_threads)

    def run(i: int) -> tuple:
        return kb.build_lists(int(bounds[i]), int(bounds[i + 1]), list_ptr, docs, forward, top_c, top_v, dim,
                              centroid_fraction, min_cluster_size, seed, energy, new_id, words_ptr, words)

    with _pool_or(pool, n_threads) as runner:
        pending = [runner.submit(run, i) for i in range(len(bounds) - 1)]
        for i in range(len(pending)):
            done, pending[i] = pending[i], None
            yield done.result()


@contextlib.contextmanager
def _pool_or(pool, n_threads: int):
    """`pool`, or a thread pool of `n_threads` for the body."""
    if pool is not None:
        yield pool
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n_threads) as own:
        yield own


class _Column:
    """A growing array: `append` copies a piece onto its end (growing by `ndarray.resize`,
    a realloc: large arrays move by remapping their pages, not copying them; NumPy fills the
    new room with zeros, so a column holds up to twice its size in memory until `array` trims
    it to what it holds)."""

    def __init__(self, dtype):
        self.data, self.used = np.empty(0, dtype=dtype), 0

    def append(self, piece: np.ndarray) -> None:
        end = self.used + len(piece)
        if end > len(self.data):
            self.data.resize(max(end, 2 * len(self.data)), refcheck=False)
        self.data[self.used : end] = piece  # (the casts here are to narrower types that hold the values)
        self.used = end

    def array(self) -> np.ndarray:
        self.data.resize(self.used, refcheck=False)
        return self.data


def _assemble(parts: Iterable[tuple], list_ptr: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """The index's block and summary arrays from the per-range results of `build_lists`, in
    list order, each joined onto the columns as it comes (from `_build_lists_parallel`: while
    the later ranges still run) and then released: no result is held after it is joined
    (the columns' doubling is the only slack, see `_Column`)."""
    types = (np.int64, np.int64, np.float32, np.float32, np.int64, np.uint16 if dim <= 65536 else np.int32,
             np.uint8, np.uint16)
    columns = [_Column(t) for t in types]
    for part in parts:
        for column, piece in zip(columns, part):
            column.append(piece)
        part = piece = None  # released before the next result comes
    n_blocks, block_end, block_min, block_scale, group_uniq, ucomp, ucount, entry = (c.array() for c in columns)
    del columns
    list_block_ptr = np.zeros(dim + 1, dtype=np.int64)
    np.cumsum(n_blocks, out=list_block_ptr[1:])
    block_doc_ptr = np.empty(len(block_end) + 1, dtype=np.int64)
    block_doc_ptr[0] = 0
    block_doc_ptr[1:] = np.repeat(list_ptr[:-1], n_blocks) + block_end
    list_group_ptr = np.zeros(dim + 1, dtype=np.int64)
    np.cumsum((n_blocks + GROUP - 1) // GROUP, out=list_group_ptr[1:])
    group_uniq_ptr = np.zeros(len(group_uniq) + 1, dtype=np.int64)
    np.cumsum(group_uniq, out=group_uniq_ptr[1:])
    # entry start of every CKPT-th distinct component (the others add up counts from there):
    # component i holds ucount[i] + 1 entries
    n_ckpt = -(-len(ucount) // CKPT)
    padded = np.zeros(n_ckpt * CKPT, dtype=np.uint8)
    padded[: len(ucount)] = ucount
    per_ckpt = padded.reshape(n_ckpt, CKPT).sum(axis=1, dtype=np.int64) + CKPT
    del padded
    ckpt = np.zeros(n_ckpt, dtype=np.int64)
    np.cumsum(per_ckpt[:-1], out=ckpt[1:])
    ckpt_dtype = np.uint32 if len(entry) < 2**32 else np.int64
    return dict(
        list_block_ptr=list_block_ptr, block_doc_ptr=block_doc_ptr, block_min=block_min,
        block_scale=block_scale, list_group_ptr=list_group_ptr, group_uniq_ptr=group_uniq_ptr,
        sum_ucomp=ucomp, sum_ucount=ucount, sum_ckpt=ckpt.astype(ckpt_dtype), sum_entry=entry,
    )


def doc_order(top_c: np.ndarray, dim: int) -> np.ndarray:
    """The index's document numbering (int32: position → collection row): documents sorted by
    their largest component, then their second largest (the first two columns of `top_c`,
    -1 for none; a document of at most `doc_cut` components has them in stored order), ties
    in row order. Documents that share blocks usually share these, so the documents of a
    block lie close together in the forward index, and reading them misses the caches less."""
    n = len(top_c)
    if n == 0 or top_c.shape[1] == 0:
        return np.arange(n, dtype=np.int32)
    first = top_c[:, 0].astype(np.int64) + 1
    second = top_c[:, 1].astype(np.int64) + 1 if top_c.shape[1] > 1 else np.zeros(n, np.int64)
    return np.argsort(first * (dim + 1) + second, kind="stable").astype(np.int32)


def pack_forward(fwd_ptr, fwd_idx, fwd_val, order: np.ndarray, dim: int, value_type: str, pool=None):
    """(pointers, words) of the forward index with its rows in `order` (`pack_words`' words),
    each row's words in decreasing absolute value (ties in stored order), packed by
    `seismic_build.pack_rows` in slices of rows (tasks of `pool`, or of a thread of their own)."""
    lengths = np.diff(fwd_ptr)[order]
    ptr = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    small = value_type == "float16" and dim <= 65536
    words = np.empty(int(ptr[-1]), dtype=np.uint32 if small else np.uint64)
    step = 1 << 13
    with _pool_or(pool, 1) as run:
        for done in [run.submit(kb.pack_rows, fwd_ptr, fwd_idx, fwd_val, order, ptr, lo, min(lo + step, len(order)),
                                words) for lo in range(0, len(order), step)]:  # fmt: skip
            done.result()
    return ptr, words


def _by_component(ptr: np.ndarray, comps: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (components, values) in increasing component order (in slices of rows)."""
    step = 1 << 15
    for lo in range(0, len(ptr) - 1, step):
        hi = min(lo + step, len(ptr) - 1)
        a, b = int(ptr[lo]), int(ptr[hi])
        row = np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(ptr[lo : hi + 1]))
        o = np.argsort((row << 32) | comps[a:b].astype(np.int64), kind="stable")
        comps[a:b], vals[a:b] = comps[a:b][o], vals[a:b][o]
    return comps, vals


def pack_words(indices: np.ndarray, values: np.ndarray, dim: int, value_type: str) -> np.ndarray:
    """Forward-index words: u16 component | float16 value << 16 (uint32) when `dim` allows it
    and `value_type` is float16, else u32 component | float32 value << 32 (packed in slices,
    so the temporaries stay small)."""
    small = value_type == "float16" and dim <= 65536
    out = np.empty(len(indices), dtype=np.uint32 if small else np.uint64)
    step = 1 << 24
    for lo in range(0, len(indices), step):
        c = np.asarray(indices[lo : lo + step])
        v = np.asarray(values[lo : lo + step], dtype=np.float32)
        if small:
            bits = v.astype(np.float16).view(np.uint16).astype(np.uint32)
            out[lo : lo + step] = c.astype(np.uint32) | (bits << np.uint32(16))
        else:
            bits = v.view(np.uint32).astype(np.uint64)
            out[lo : lo + step] = c.astype(np.uint64) | (bits << np.uint64(32))
    return out


def unpack_words(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `pack_words`: (int32 components, float32 values)."""
    words = np.asarray(words)
    if words.dtype == np.uint32:
        comps = (words & np.uint32(0xFFFF)).astype(np.int32)
        vals = (words >> np.uint32(16)).astype(np.uint16).view(np.float16).astype(np.float32)
    else:
        comps = (words & np.uint64(0xFFFFFFFF)).astype(np.int32)
        vals = (words >> np.uint64(32)).astype(np.uint32).view(np.float32)
    return comps, vals


class SeismicIndex:
    """Seismic-style approximate index (see the module docstring for the algorithm)."""

    kind = KIND

    def __init__(self, arrays: dict[str, np.ndarray], params: dict, dim: int, n_docs: int):
        self._a = arrays
        self.params = dict(params)
        self.dim = int(dim)
        self.n_docs = int(n_docs)
        self.max_blocks = int(np.max(np.diff(arrays["list_block_ptr"]))) if self.dim else 0
        # block score rows cover every slot of a list's groups: a damaged summary entry (block
        # number in its group) cannot write past them
        self._block_slots = GROUP * int(np.max(np.diff(arrays["list_group_ptr"]))) if self.dim else 0
        self._kernel_arrays = SeismicArrays(**{name: arrays[name] for name in _ARRAYS})
        self._local = threading.local()  # per calling thread: search scratch
        self.path: Path | None = None  # where it was loaded from (for error messages)
        self._checked = True  # built here; a loaded index is checked in full before Numba reads it
        self._position_of: np.ndarray | None = None  # see `_positions`

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
        values: str = "float16",
        threads: int | None = None,
        scratch_dir: str | os.PathLike | None = None,
    ) -> "SeismicIndex":
        """Build from a SparseVectors (memory-mapped ones included, e.g. `lsr.formats.spill`:
        the build reads them in place and makes no copy of them), or from an iterable of
        SparseVectors chunks (rows numbered in order) spilled to a `VectorSpill` folder (in
        `scratch_dir`, default: the system's temporary directory; removed when done). Parameters have
        pyseismic-lsr's meaning; `values` is the forward index's value type (float16, as
        pyseismic, or float32); `threads`: as in `search`, None or 0 for every core."""
        if values not in VALUE_TYPES:
            raise ValueError(f"values must be one of {VALUE_TYPES}, got {values!r}")
        if isinstance(vectors, SparseVectors):
            return cls._build(vectors.indptr, vectors.indices, vectors.values, vectors.dim, n_postings,
                              max_fraction, centroid_fraction, summary_energy, min_cluster_size,
                              doc_cut, seed, values, threads)
        import tempfile

        from lsr.formats.spill import VectorSpill

        with tempfile.TemporaryDirectory(prefix="lsr-seismic-", dir=scratch_dir) as scratch:
            spill = VectorSpill(Path(scratch) / "vectors")
            for chunk in vectors:
                spill.add(chunk)
            if spill.rows == 0:
                raise ValueError("no vectors to index")
            return cls.build(spill.vectors(), n_postings, max_fraction, centroid_fraction, summary_energy,
                             min_cluster_size, doc_cut, seed, values, threads)

    @classmethod
    def _build(cls, fwd_ptr, fwd_idx, fwd_val, dim, n_postings, max_fraction, centroid_fraction,
               summary_energy, min_cluster_size, doc_cut, seed, values, threads) -> "SeismicIndex":
        t0 = time.perf_counter()
        if values == "float16" and dim > 65536:
            log.info("dim %d > 65536: forward values stored as float32", dim)
            values = "float32"
        if values == "float16" and _value_range(fwd_val) > F16_MAX:
            log.warning("vector values exceed float16's range (%g): forward values stored as float32", F16_MAX)
            values = "float32"
        fwd_ptr = np.array(fwd_ptr, dtype=np.int64)  # the index's own (the input may be a mapped file)
        n_docs = len(fwd_ptr) - 1
        n_threads = resolve_threads(threads or 0)
        from concurrent.futures import ThreadPoolExecutor

        # One pool for every step, so that the steps that do not depend on each other overlap
        # (the kernels and most NumPy calls release the GIL): pruning beside the top
        # components and the forward index's packing, which the summaries then read.
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            # 1. global-threshold pruning
            pruned = pool.submit(_prune, fwd_ptr, fwd_idx, fwd_val, dim, n_postings, max_fraction)
            top_c, top_v = _top_components(fwd_ptr, fwd_idx, fwd_val, int(doc_cut), n_threads, pool)
            doc_ids = doc_order(top_c, dim)
            # 4.-5. the forward index, in the index's numbering (the summaries read it)
            words_ptr, fwd_words = pack_forward(fwd_ptr, fwd_idx, fwd_val, doc_ids, dim, values, pool)
            new_id = np.empty(n_docs, dtype=np.int32)
            new_id[doc_ids] = np.arange(n_docs, dtype=np.int32)
            list_ptr, docs = pruned.result()
            t1 = time.perf_counter()
            # 2.-3. blocking, the blocks' renumbering and summaries, list ranges of about equal
            # postings, joined in list order as they are done
            parts = _build_lists_parallel(
                list_ptr, docs, fwd_ptr, fwd_idx, fwd_val, top_c, top_v, dim, float(centroid_fraction),
                int(min_cluster_size), int(seed), float(summary_energy), new_id, words_ptr, fwd_words, n_threads,
                pool,
            )
            del top_c, top_v, new_id
            summaries = _assemble(parts, list_ptr, dim)
            fwd_ptr = words_ptr
        t2 = time.perf_counter()
        log.info(
            "seismic build: %d docs, %d postings kept, %d blocks, %d summary entries; "
            "prune, top components and forward index %.2fs, blocks and summaries %.2fs",
            n_docs, len(docs), len(summaries["block_min"]), len(summaries["sum_entry"]), t1 - t0, t2 - t1,
        )
        del fwd_idx, fwd_val
        arrays = dict(fwd_ptr=fwd_ptr, fwd_words=fwd_words, post_docs=docs, **summaries, doc_ids=doc_ids)
        params = dict(
            n_postings=int(n_postings), max_fraction=float(max_fraction),
            centroid_fraction=float(centroid_fraction), summary_energy=float(summary_energy),
            min_cluster_size=int(min_cluster_size), doc_cut=int(doc_cut), seed=int(seed),
            values=values, layout=LAYOUT,
        )
        return cls(arrays, params, dim, n_docs)

    # ---- info ----------------------------------------------------------------------------

    kind = KIND

    def __len__(self) -> int:
        return self.n_docs

    @property
    def nbytes(self) -> int:
        """Bytes of the index arrays (forward index, postings, blocks, summaries)."""
        return int(sum(a.nbytes for a in self._a.values()))

    def stats(self) -> dict:
        a = self._a
        return dict(
            n_docs=self.n_docs, dim=self.dim, nnz=int(len(a["fwd_words"])),
            postings=int(len(a["post_docs"])), blocks=int(len(a["block_min"])),
            summary_entries=int(len(a["sum_entry"])), bytes=self.nbytes,
        )

    # ---- search --------------------------------------------------------------------------

    def _thread_scratch(self, n_threads: int) -> tuple:
        """The calling thread's scratch (per Numba thread: dense query, visited bitset,
        documents seen, block scores). Per calling thread because the search kernels release
        the GIL: concurrent searches (`lsr serve`) must not share it."""
        local = self._local
        if getattr(local, "scratch", None) is None or len(local.scratch[0]) < n_threads:
            local.scratch = (
                np.zeros((n_threads, max(self.dim, 1)), dtype=np.float32),
                np.zeros((n_threads, (self.n_docs + 63) // 64 + 1), dtype=np.uint64),
                np.zeros((n_threads, max(self.n_docs, 1)), dtype=np.int32),
                np.zeros((n_threads, 2, max(self.max_blocks, self._block_slots, 1)), dtype=np.float32),
            )
        return local.scratch

    def search(
        self,
        queries: SparseVectors,
        k: int = 10,
        *,
        threads: int = 1,
        query_cut: int = 10,
        heap_factor: float = 0.7,
        filter: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by dot product: (ids int64[n, k], scores float32[n, k]), padded -1 / -inf;
        `k` is capped at the number of documents; `threads`: see `protocol.THREADS_DOC`.

        `filter` (`protocol.FILTER_DOC`): documents outside it are skipped where candidates
        are collected, so they neither appear nor raise the heap's threshold; a filter allowing
        at most `EXACT_FILTER_FRACTION` of the documents is answered exactly over them.

        A query that gets fewer than k hits from its `query_cut` largest terms is searched
        again with all its terms, so it never returns fewer hits than its (statically pruned)
        lists hold: on a small collection, every matching document."""
        allowed = filter_mask(filter, self.n_docs)
        k = clamp_k(k, self.n_docs)
        n = len(queries)
        out_ids = np.empty((n, k), dtype=np.int64)
        out_scores = np.empty((n, k), dtype=np.float32)
        if n == 0 or k == 0:
            return out_ids, out_scores
        if not self._checked:
            self.check_values()
        inner = NO_FILTER  # the filter over the index's own document numbers
        if allowed is not None:
            if np.count_nonzero(allowed) <= EXACT_FILTER_FRACTION * self.n_docs:
                return self._search_subset(queries, k, np.flatnonzero(allowed))
            inner = allowed[self._a["doc_ids"]]
        # one thread (the default, and a single query's case) without the checks' cost
        threads = 1 if type(threads) is int and threads == 1 else min(resolve_threads(threads), n)
        args = (
            queries.indptr, queries.indices, queries.values, k, int(query_cut), np.float32(heap_factor),
            *self._thread_scratch(threads), out_ids, out_scores,
        )
        if threads == 1:
            ks.search_batch(*args, inner, *self._kernel_arrays)
        else:
            with numba_threads(threads):
                ks.search_batch_parallel(*args, threads, inner, *self._kernel_arrays)
        if out_ids[0, -1] < 0 if n == 1 else (out_ids[:, -1] < 0).any():  # a heap never filled
            self._search_again(queries, k, threads, query_cut, heap_factor, allowed, out_ids, out_scores)
        return out_ids, out_scores

    def _search_again(self, queries, k, threads, query_cut, heap_factor, allowed, out_ids, out_scores) -> None:
        """Search again, with every term, the queries that got fewer than k hits while they
        have more than `query_cut` terms (the cut terms' lists hold < k documents)."""
        short = np.flatnonzero(out_ids[:, -1] < 0)
        lengths = np.diff(queries.indptr)[short]
        short, lengths = short[lengths > query_cut], lengths[lengths > query_cut]
        if len(short):
            more = self.search(queries[short], k, threads=threads, query_cut=int(lengths.max()),
                               heap_factor=heap_factor, filter=allowed)
            out_ids[short], out_scores[short] = more

    def _search_subset(self, queries: SparseVectors, k: int, rows: np.ndarray):
        """Exact top-k over the documents `rows` (ascending) from their forward vectors, query
        by query in NumPy (cost: their components, per query); as everywhere, only documents
        sharing a term with the query, ties to the lower row."""
        sub = self.forward_vectors(rows)
        starts = sub.indptr[:-1][np.diff(sub.indptr) > 0]
        nonempty = np.diff(sub.indptr) > 0
        out_ids = np.full((len(queries), k), -1, np.int64)
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        qdense = np.zeros(self.dim, np.float32)
        scores, matched = np.zeros(len(rows), np.float32), np.zeros(len(rows), np.bool_)
        for i in range(len(queries)):
            terms, weights = queries.row(i)
            terms, weights = terms[terms < self.dim], weights[terms < self.dim]
            qdense[terms] = weights
            if len(starts):
                q = qdense[sub.indices]
                scores[nonempty] = np.add.reduceat(q * sub.values, starts)
                matched[nonempty] = np.logical_or.reduceat(q != 0, starts)
            candidates = np.flatnonzero(matched)
            best = candidates[np.lexsort((candidates, -scores[candidates]))[:k]]
            out_ids[i, : len(best)], out_scores[i, : len(best)] = rows[best], scores[best]
            qdense[terms] = 0.0
        return out_ids, out_scores

    def forward_vectors(self, rows: np.ndarray | None = None) -> SparseVectors:
        """Every document's full vector (the forward index), as float32 SparseVectors in
        collection order; `rows`: only those documents, in that order."""
        ptr, words = np.asarray(self._a["fwd_ptr"]), self._a["fwd_words"]
        positions = self._positions() if rows is None else self._positions()[rows]
        starts, lengths = ptr[positions], ptr[positions + 1] - ptr[positions]
        ptr = np.zeros(len(positions) + 1, np.int64)
        np.cumsum(lengths, out=ptr[1:])
        words = words[np.repeat(starts - ptr[:-1], lengths) + np.arange(ptr[-1])]
        comps, vals = _by_component(ptr, *unpack_words(words))
        return SparseVectors(ptr, comps, vals, self.dim)

    def _positions(self) -> np.ndarray:
        """Each collection row's number inside the index (the inverse of `doc_ids`), made once."""
        if self._position_of is None:
            positions = np.empty(self.n_docs, dtype=np.int64)
            positions[np.asarray(self._a["doc_ids"])] = np.arange(self.n_docs)
            self._position_of = positions
        return self._position_of

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        with atomic_directory(path) as tmp:
            save_arrays(tmp, {name: np.asarray(self._a[name]) for name in _ARRAYS})
            write_manifest(tmp, KIND, params=self.params, dim=self.dim, n_docs=self.n_docs,
                           counts=self.stats())

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "SeismicIndex":
        """Open a saved index (memory-mapped). Types, sizes and every offset array are checked
        here (O(documents + blocks + lists)); the values used as array positions before the
        first search or by `check_values()`."""
        path = Path(path)
        manifest = read_manifest(path)
        check_kind(path, manifest, KIND)
        if not isinstance(manifest.get("params"), dict) or manifest["params"].get("layout") != LAYOUT:
            raise IndexFormatError(f"{path}: a Seismic index from an older lsr version; rebuild it")
        a = load_arrays(path, _ARRAYS, mmap=mmap, dtypes=DTYPES)
        dim, n_docs = manifest.get("dim"), manifest["n_docs"]
        if not isinstance(dim, int) or dim < 0 or (a["fwd_words"].dtype == np.uint32 and dim > 65536):
            raise damaged(path / "manifest.json", f"dimension {dim!r} does not fit the forward index")
        n_blocks, n_groups = len(a["block_min"]), len(a["group_uniq_ptr"]) - 1
        check_pointer(path, "fwd_ptr", a["fwd_ptr"], n_docs + 1, len(a["fwd_words"]))
        check_pointer(path, "list_block_ptr", a["list_block_ptr"], dim + 1, n_blocks)
        check_pointer(path, "block_doc_ptr", a["block_doc_ptr"], n_blocks + 1, len(a["post_docs"]))
        check_length(path, "block_scale", a["block_scale"], n_blocks)
        check_length(path, "doc_ids", a["doc_ids"], n_docs)
        check_pointer(path, "list_group_ptr", a["list_group_ptr"], dim + 1, max(n_groups, 0))
        check_pointer(path, "group_uniq_ptr", a["group_uniq_ptr"], n_groups + 1, len(a["sum_ucomp"]))
        check_length(path, "sum_ucount", a["sum_ucount"], len(a["sum_ucomp"]))
        check_length(path, "sum_ckpt", a["sum_ckpt"], -(-len(a["sum_ucomp"]) // CKPT))
        groups = np.diff(a["list_group_ptr"])  # each list's groups hold its blocks, GROUP at most
        if not np.array_equal(groups, (np.diff(a["list_block_ptr"]) + GROUP - 1) // GROUP):
            raise damaged(path / "list_group_ptr.npy", "group counts do not match the block counts")
        index = cls(a, manifest["params"], dim, n_docs)
        index.path, index._checked = path, False
        return index

    def check_values(self, full: bool = False) -> None:
        """Every value the Numba kernels use as an array position is in range: document ids,
        forward components, summary components and checkpoints (a full scan, once per loaded
        index, before its first search: the kernels do not check bounds). `full=True` also
        checks that every summary entry names a block of its group (`lsr info --verify`;
        searches cannot go out of bounds without it: the block scores have a row per group
        slot)."""
        if self._checked and not full:
            return
        a, path = self._a, self.path
        check_range(path, "post_docs", a["post_docs"], self.n_docs)
        check_range(path, "doc_ids", a["doc_ids"], self.n_docs)
        if self.n_docs and np.bincount(a["doc_ids"], minlength=self.n_docs).max() > 1:
            raise damaged(path / "doc_ids.npy", "a collection row is numbered twice")
        if self.dim < 65536 or a["fwd_words"].dtype == np.uint64:
            words, step = a["fwd_words"], 1 << 24  # in slices: unpacking all of them takes 3x the forward index
            for lo in range(0, len(words), step):
                check_range(path, "fwd_words", unpack_words(words[lo : lo + step])[0], self.dim)
        check_range(path, "sum_ucomp", a["sum_ucomp"], max(self.dim, 1))
        # entry ranges: checkpoint i must be the number of entries of components < 16 i
        n_u = len(a["sum_ucount"])
        padded = np.zeros(len(a["sum_ckpt"]) * CKPT, dtype=np.uint8)
        padded[:n_u] = a["sum_ucount"]
        grid = padded.reshape(-1, CKPT)
        counts = np.zeros(len(grid), dtype=np.uint16)  # 16 x 255 fits; column adds: ~20x a row sum
        for j in range(CKPT):
            counts += grid[:, j]
        per_ckpt = counts.astype(np.int64) + CKPT
        per_ckpt[-1:] -= len(padded) - n_u
        ends = np.cumsum(per_ckpt)
        if (len(ends) and ends[-1] != len(a["sum_entry"])) or np.any(np.asarray(a["sum_ckpt"][1:]) != ends[:-1]) or (
            len(ends) and a["sum_ckpt"][0] != 0
        ):
            raise damaged(path / "sum_ckpt.npy", "summary entry offsets do not match the entry counts")
        if full:  # the block of an entry (its low byte) exists in the entry's group
            starts = np.zeros(n_u + 1, dtype=np.int64)
            np.cumsum(np.asarray(a["sum_ucount"], dtype=np.int64) + 1, out=starts[1:])
            nb = np.diff(a["list_block_ptr"])
            group_list = np.repeat(np.arange(self.dim), np.diff(a["list_group_ptr"]))
            in_list = np.arange(len(group_list)) - np.asarray(a["list_group_ptr"])[group_list]
            blocks = np.minimum(GROUP, nb[group_list] - GROUP * in_list).astype(np.uint16)
            per_group = np.diff(starts[np.asarray(a["group_uniq_ptr"])])
            if np.any((a["sum_entry"] & BLOCK_MASK) >= np.repeat(blocks, per_group)):
                raise damaged(path / "sum_entry.npy", "summary entries name blocks outside their group")
        self._checked = True

