"""Pseudo-relevance feedback: a second retrieval round with the query moved towards its
first round's top documents.

- Sparse: `q' = q + β · top_t(mean of the top-f documents' vectors)`. The feedback vector
  (the mean) is pruned to its `t` largest terms before it is added, so the original query
  terms are always kept (RM3-style for BM25, where the document vectors are the stored BM25
  weights; vector PRF for learned encoders).
- Dense (Rocchio): `q' = normalise(q + β · mean of the top-f documents' embeddings)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsr.errors import LsrError
from lsr.sparse import SparseVectors


@dataclass(frozen=True)
class Prf:
    """Feedback settings: `docs` (f, 0 = off), `terms` (t), `weight` (β)."""

    docs: int = 0
    terms: int = 20
    weight: float = 0.1

    def __post_init__(self) -> None:
        if self.docs < 0 or self.terms < 1 or self.weight < 0:
            raise LsrError(f"PRF needs docs >= 0, terms >= 1 and weight >= 0 (got {self.docs}, {self.terms}, {self.weight})")

    @property
    def enabled(self) -> bool:
        return self.docs > 0 and self.weight > 0


def forward_view(list_ptr: np.ndarray, list_docs: np.ndarray, list_weights: np.ndarray, n_docs: int) -> SparseVectors:
    """Documents as CSR rows (terms ascending) from inverted lists: the transpose of an exact index."""
    list_docs = np.asarray(list_docs)
    terms = np.repeat(np.arange(len(list_ptr) - 1, dtype=np.int32), np.diff(np.asarray(list_ptr)))
    order = np.argsort(list_docs, kind="stable")  # stable: terms stay ascending within a document
    indptr = np.zeros(n_docs + 1, np.int64)
    np.cumsum(np.bincount(list_docs, minlength=n_docs), out=indptr[1:])
    return SparseVectors(indptr, terms[order], np.asarray(list_weights)[order], len(list_ptr) - 1)


def expand_sparse(queries: SparseVectors, rows: np.ndarray, docs: SparseVectors, prf: Prf) -> SparseVectors:
    """Each query plus β times the pruned mean of its first `prf.docs` hits (`rows[i]`, -1 = none)."""
    dim = max(queries.dim, docs.dim)
    out_rows = []
    for i in range(len(queries)):
        terms, weights = queries.row(i)
        acc = dict(zip(terms.tolist(), weights.astype(np.float64).tolist()))
        top = [int(r) for r in rows[i][: prf.docs] if r >= 0]
        if top:
            fb = docs[top]
            mean = np.bincount(fb.indices, weights=fb.values.astype(np.float64), minlength=dim) / len(top)
            nz = np.flatnonzero(mean)
            keep = nz[np.lexsort((nz, -mean[nz]))[: prf.terms]]  # largest first, ties: lower term id
            for t in keep.tolist():
                acc[t] = acc.get(t, 0.0) + prf.weight * mean[t]
        cols = sorted(acc)
        out_rows.append((cols, [acc[c] for c in cols]))
    return SparseVectors.from_rows(out_rows, dim)


def expand_dense(queries: np.ndarray, rows: np.ndarray, embeddings: np.ndarray, prf: Prf) -> np.ndarray:
    """Rocchio on embeddings: each query plus β times the mean of its first hits, re-normalised."""
    out = np.array(queries, dtype=np.float32, copy=True)
    for i in range(len(out)):
        top = [int(r) for r in rows[i][: prf.docs] if r >= 0]
        if top:
            out[i] += prf.weight * np.asarray(embeddings[top], dtype=np.float32).mean(axis=0)
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
    return out
