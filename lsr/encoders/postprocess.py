"""Post-processing of sparse vectors: minimum weight, top-k per vector, integer impacts.

Standalone functions on `SparseVectors` (NumPy only) and `PostProcessing`, the same steps as
an encoder option recorded in the encoder's spec. Order: min weight, then top-k, then
quantisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lsr.sparse import SparseVectors


def _keep(vectors: SparseVectors, keep: np.ndarray) -> SparseVectors:
    rows = np.repeat(np.arange(len(vectors)), np.diff(vectors.indptr))
    counts = np.bincount(rows[keep], minlength=len(vectors))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return SparseVectors(indptr, vectors.indices[keep], vectors.values[keep], vectors.dim)


def min_weight(vectors: SparseVectors, threshold: float) -> SparseVectors:
    """Drop the entries whose weight is below `threshold` (and zeros)."""
    return _keep(vectors, (vectors.values >= threshold) & (vectors.values != 0))


def top_k(vectors: SparseVectors, k: int) -> SparseVectors:
    """Keep the `k` largest weights of each vector (ties: lowest column first); columns stay sorted."""
    if k < 0:
        raise ValueError("k must be >= 0")
    keep = np.zeros(vectors.nnz, dtype=bool)
    for i in range(len(vectors)):
        lo, hi = int(vectors.indptr[i]), int(vectors.indptr[i + 1])
        if hi - lo <= k:
            keep[lo:hi] = True
        elif k > 0:
            # stable sort on -value keeps the lowest column among equal weights
            order = np.argsort(-vectors.values[lo:hi], kind="stable")[:k]
            keep[lo + order] = True
    return _keep(vectors, keep)


def quantize(vectors: SparseVectors, scale: float) -> SparseVectors:
    """Integer impacts for Lucene/Anserini: `round(weight × scale)`; entries rounding to 0 are dropped.

    Values stay float32 (holding whole numbers) so the result is still a `SparseVectors`.
    """
    if scale <= 0:
        raise ValueError("scale must be > 0")
    q = np.rint(vectors.values.astype(np.float64) * scale).astype(np.float32)
    out = SparseVectors(vectors.indptr, vectors.indices, q, vectors.dim)
    return _keep(out, q != 0)


@dataclass(frozen=True)
class PostProcessing:
    """Options applied to every vector an encoder returns (all off by default)."""

    max_active_dims: int | None = None
    min_weight: float | None = None
    quantization_scale: float | None = None

    def __call__(self, vectors: SparseVectors) -> SparseVectors:
        if self.min_weight is not None:
            vectors = min_weight(vectors, self.min_weight)
        if self.max_active_dims is not None:
            vectors = top_k(vectors, self.max_active_dims)
        if self.quantization_scale is not None:
            vectors = quantize(vectors, self.quantization_scale)
        return vectors

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_active_dims, self.min_weight, self.quantization_scale))

    def to_spec(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> "PostProcessing":
        return cls(**(spec or {}))
