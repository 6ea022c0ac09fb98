"""Exact top-k by dot product over inverted lists (ground truth, and small corpora).

Searches run in Numba (`exact_kernels`: rank-safe block-max pruning up to k = 50, the plain
scan above); until this process has imported Numba, a single query runs in NumPy with the
same float32 summation order, so `lsr search` gives identical results without paying Numba's
start-up.
"""

from __future__ import annotations

import numbers
import sys
import threading
from pathlib import Path

import numpy as np

from lsr.errors import LsrError
from lsr.indexer.protocol import NO_FILTER, check_kind, filter_mask, numba_threads, resolve_threads
from lsr.indexer.storage import (
    atomic_directory,
    check_pointer,
    check_range,
    damaged,
    load_arrays,
    read_manifest,
    save_arrays,
    write_manifest,
)
from lsr.sparse import SparseVectors

KIND = "exact"


def invert(vectors: SparseVectors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR rows → inverted lists (list_ptr over columns, doc ids, weights), doc ids ascending."""
    order = np.argsort(vectors.indices, kind="stable")
    rows = np.repeat(np.arange(len(vectors), dtype=np.int32), np.diff(vectors.indptr))
    list_ptr = np.zeros(vectors.dim + 1, np.int64)
    np.cumsum(np.bincount(vectors.indices, minlength=vectors.dim), out=list_ptr[1:])
    return list_ptr, rows[order], vectors.values[order]


def clamp_k(k: int, n_docs: int) -> int:
    """`k` checked (an integer >= 0) and capped at the number of documents, before anything
    of size k is allocated."""
    if type(k) is not int and (isinstance(k, bool) or not isinstance(k, numbers.Integral)):  # int first: 1 µs a call
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if k < 0:
        raise LsrError(f"k must be >= 0, got {k}")
    return min(int(k), int(n_docs))


class ExactIndex:
    """Every posting, exact top-k. Ties rank the lower row id first; only documents sharing a
    term with the query are candidates (missing slots are id -1, score -inf)."""

    kind = KIND

    def __init__(self, list_ptr: np.ndarray, list_docs: np.ndarray, list_weights: np.ndarray, n_docs: int) -> None:
        self.list_ptr, self.list_docs, self.list_weights = list_ptr, list_docs, list_weights
        self.n_docs = int(n_docs)
        self.path: Path | None = None  # where it was loaded from (for error messages)
        self._checked = True  # built here; a loaded index is checked in full before Numba reads it
        self._blocks: tuple | None = None  # `_search_arrays`, made at the first block-max search
        self._local = threading.local()  # per calling thread: block-max scratch (`_thread_scratch`)

    @property
    def dim(self) -> int:
        return len(self.list_ptr) - 1

    def __len__(self) -> int:
        return self.n_docs

    @classmethod
    def build(cls, vectors: SparseVectors) -> "ExactIndex":
        return cls(*invert(vectors), n_docs=len(vectors))

    def search(
        self, queries: SparseVectors, k: int = 10, *, threads: int = 1, filter: np.ndarray | None = None, **params
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and scores per query: `(ids int64[n, k], scores float32[n, k])`, in query
        order; `k` is capped at the number of documents. `threads`: see `protocol.THREADS_DOC` (a single
        query runs in NumPy on the calling thread); `filter`: see `protocol.FILTER_DOC` (documents
        it leaves out are never ranked, so the top-k of the others is exact); `params` (other
        kinds' knobs, such as `query_cut`) have no effect: the answer is exact. A single query
        runs in NumPy while Numba is not imported in this process (`lsr search`), in the Numba
        kernel otherwise (a server, a benchmark): the same answer either way."""
        allowed = filter_mask(filter, self.n_docs)
        k = clamp_k(k, self.n_docs)
        n = len(queries)
        ids = np.empty((n, k), np.int64)
        scores = np.empty((n, k), np.float32)
        if n == 0 or k <= 0:
            return ids, scores
        if n == 1 and "numba" not in sys.modules:
            self._search_one(*queries.row(0), k, ids[0], scores[0], allowed)
            return ids, scores
        from lsr.indexer import exact_kernels

        self.check_values()
        allowed = NO_FILTER if allowed is None else allowed
        slots = -(-self.n_docs // exact_kernels.BLOCK) * int(np.diff(queries.indptr).max())
        if k <= exact_kernels.PRUNE_MAX_K and slots <= exact_kernels.MAX_SLOTS and self._search_arrays() is not None:
            serial, parallel = exact_kernels.search_serial, exact_kernels.search_parallel
            arrays = self._search_arrays()
        else:
            serial, parallel = exact_kernels.scan_serial, exact_kernels.scan_parallel
            arrays = (self.list_ptr, self.list_docs, self.list_weights)
        args = (queries.indptr, queries.indices, queries.values, *arrays)
        threads = min(resolve_threads(threads), n)
        if threads == 1 and serial is exact_kernels.search_serial:
            scratch = self._thread_scratch(int(np.diff(queries.indptr).max()), k)
            self._local.scratch = None  # dropped if the kernel fails half-way (it clears as it goes)
            serial(*args, k, allowed, 0, n, ids, scores, scratch)
            self._local.scratch = scratch
        elif threads == 1:
            serial(*args, self.n_docs, k, allowed, 0, n, ids, scores)
        else:
            with numba_threads(threads):
                parallel(*args, self.n_docs, k, allowed, threads, ids, scores)
        return ids, scores

    def _thread_scratch(self, max_terms: int, k: int):
        """The calling thread's block-max scratch (`exact_kernels.new_scratch`), kept between
        calls: made again when a query has more terms than it holds, its heap when k changes. Per calling
        thread: the kernel releases the GIL, so concurrent searches (`lsr serve`) each have
        their own."""
        from lsr.indexer import exact_kernels

        held = getattr(self._local, "scratch", None)
        if held is None or held.slot.shape[0] < max_terms:
            n_blocks = -(-self.n_docs // exact_kernels.BLOCK)
            held = exact_kernels.new_scratch(n_blocks, -(-max_terms // 16) * 16, k)  # room for longer queries
        elif len(held.heap_s) != k:
            held = held._replace(heap_s=np.empty(k, np.float32), heap_d=np.empty(k, np.int64))
        return held

    def _search_arrays(self) -> tuple | None:
        """What the block-max kernel reads: the rows in block order (`exact_kernels.doc_order`),
        the lists renumbered in that order and their block entries; None when a weight is
        negative (block maxima bound nothing then: the scan answers). Made once per index, at
        its first block-max search: O(postings) time and a second copy of the postings in
        memory (the stored lists stay as they are)."""
        if self._blocks is None:
            from lsr.indexer import exact_kernels as kernels

            rows = kernels.doc_order(self.list_ptr, self.list_docs, self.list_weights, self.n_docs)
            docs, weights = kernels.relabel(self.list_ptr, self.list_docs, self.list_weights, rows)
            *entries, nonnegative = kernels.block_bounds(self.list_ptr, docs, weights)
            if len(docs) and np.diff(entries[3]).max() > kernels.SLOT_MASK:  # only with repeated postings
                raise damaged(Path(self.path or "<memory>") / "list_docs.npy", "a document repeated in a list")
            self._blocks = (rows, docs, weights, *entries) if nonnegative else ()
        return self._blocks or None

    @property
    def search_nbytes(self) -> int:
        """Bytes of the arrays the block-max search reads (made at the first one: before it,
        only `list_ptr`'s); the scan reads the stored lists instead."""
        return sum(a.nbytes for a in self._blocks or ()) + self.list_ptr.nbytes

    def _search_one(
        self, terms: np.ndarray, weights: np.ndarray, k: int, out_ids: np.ndarray, out_scores: np.ndarray,
        allowed: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """One query in NumPy: same candidates, float32 sums in the same order, same tie rule."""
        keep = terms < self.dim
        spans = [(self.list_ptr[t], self.list_ptr[t + 1], w) for t, w in zip(terms[keep], weights[keep])]
        out_ids[:] = -1
        out_scores[:] = -np.inf
        if not spans:
            return
        docs = np.concatenate([self.list_docs[a:b] for a, b, _ in spans])
        if len(docs) and (docs.min() < 0 or docs.max() >= self.n_docs):  # only the lists read
            raise damaged(Path(self.path or "<memory>") / "list_docs.npy", f"document ids outside [0, {self.n_docs})")
        contributions = np.concatenate([np.float32(w) * self.list_weights[a:b] for a, b, w in spans])
        if allowed is not None:
            keep_docs = allowed[docs]
            docs, contributions = docs[keep_docs], contributions[keep_docs]
        unique, inverse = np.unique(docs, return_inverse=True)
        acc = np.zeros(len(unique), np.float32)
        np.add.at(acc, inverse, contributions)
        best = np.lexsort((unique, -acc))[:k]
        out_ids[: len(best)] = unique[best]
        out_scores[: len(best)] = acc[best]

    def forward_vectors(self) -> SparseVectors:
        """Every document's vector as CSR rows (terms ascending): the transpose of the lists."""
        list_docs = np.asarray(self.list_docs)
        terms = np.repeat(np.arange(self.dim, dtype=np.int32), np.diff(np.asarray(self.list_ptr)))
        order = np.argsort(list_docs, kind="stable")  # stable: terms stay ascending within a document
        indptr = np.zeros(self.n_docs + 1, np.int64)
        np.cumsum(np.bincount(list_docs, minlength=self.n_docs), out=indptr[1:])
        return SparseVectors(indptr, terms[order], np.asarray(self.list_weights)[order], self.dim)

    def save(self, path: str | Path, **manifest_fields) -> None:
        with atomic_directory(path) as tmp:
            save_arrays(tmp, {"list_ptr": self.list_ptr, "list_docs": self.list_docs, "list_weights": self.list_weights})
            write_manifest(tmp, KIND, n_docs=self.n_docs, dim=self.dim, nnz=int(len(self.list_docs)), **manifest_fields)

    def check_values(self, full: bool = False) -> None:
        """Every document id in range (a full scan of the postings, once per loaded index:
        the Numba kernels do not check bounds; `full=True`: again)."""
        if full or not self._checked:
            check_range(self.path, "list_docs", self.list_docs, self.n_docs)
            self._checked = True

    @classmethod
    def load(cls, path: str | Path) -> "ExactIndex":
        """Open a saved index (memory-mapped). Types, sizes and the list offsets are checked
        here (O(dim)); document ids before the first batch search or by `check_values()`."""
        path = Path(path)
        manifest = read_manifest(path)
        check_kind(path, manifest, KIND)
        dtypes = {"list_ptr": ("int64",), "list_docs": ("int32",), "list_weights": ("float32",)}
        a = load_arrays(path, list(dtypes), dtypes=dtypes)
        nnz, dim = len(a["list_docs"]), manifest.get("dim", len(a["list_ptr"]) - 1)
        check_pointer(path, "list_ptr", a["list_ptr"], dim + 1, nnz)
        if len(a["list_weights"]) != nnz or manifest.get("nnz", nnz) != nnz:
            raise damaged(path / "list_weights.npy", f"{len(a['list_weights'])} weights for {nnz} postings")
        index = cls(a["list_ptr"], a["list_docs"], a["list_weights"], manifest["n_docs"])
        index.path, index._checked = path, False
        return index
