"""`SparseVectors`: the one interchange type between encoders, indexes and evaluation.

A batch of sparse vectors in CSR layout: `indptr` (int64, n+1), `indices` (int32, sorted
within each row), `values` (float32), and the number of columns `dim`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from lsr.errors import LsrError

if TYPE_CHECKING:  # heavy imports stay out of `import lsr`
    import scipy.sparse
    import torch


@dataclass(frozen=True, eq=False)
class SparseVectors:
    """n sparse vectors over `dim` columns, stored as CSR arrays."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    dim: int

    def __post_init__(self) -> None:
        indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "dim", int(self.dim))
        if indptr.ndim != 1 or len(indptr) < 1 or indptr[0] != 0:
            raise ValueError("indptr must be a 1-d array starting at 0")
        if indptr[-1] != len(indices) or len(indices) != len(values):
            raise ValueError("indptr[-1], len(indices) and len(values) must agree")
        if len(indices) and (indices.min() < 0 or indices.max() >= self.dim):
            raise ValueError(f"column index out of range [0, {self.dim})")
        if len(indptr) > 1 and np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must be non-decreasing")

    # ---- basics -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Column ids and weights of row `i`."""
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.indices[lo:hi], self.values[lo:hi]

    def __getitem__(self, rows: slice | Sequence[int] | np.ndarray) -> "SparseVectors":
        """Select rows (a slice or an index array) as a new SparseVectors."""
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            if step == 1:
                lo, hi = self.indptr[start], self.indptr[max(start, stop)]
                return SparseVectors(
                    self.indptr[start : max(start, stop) + 1] - lo,
                    self.indices[lo:hi],
                    self.values[lo:hi],
                    self.dim,
                )
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        take = np.concatenate(
            [np.arange(self.indptr[r], self.indptr[r + 1]) for r in rows] or [np.zeros(0, np.int64)]
        )
        return SparseVectors(indptr, self.indices[take], self.values[take], self.dim)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseVectors):
            return NotImplemented
        return (
            self.dim == other.dim
            and np.array_equal(self.indptr, other.indptr)
            and np.array_equal(self.indices, other.indices)
            and np.array_equal(self.values, other.values)
        )

    def __repr__(self) -> str:
        return f"SparseVectors(n={len(self)}, dim={self.dim}, nnz={self.nnz})"

    @staticmethod
    def concatenate(parts: Sequence["SparseVectors"], dim: int | None = None) -> "SparseVectors":
        """Stack batches row-wise; `dim` defaults to the largest of the parts."""
        if not parts:
            return SparseVectors(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), dim or 0)
        dim = max(p.dim for p in parts) if dim is None else dim
        offsets = np.cumsum([0] + [p.nnz for p in parts])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets)])
        return SparseVectors(
            indptr,
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            dim,
        )

    # ---- constructors -------------------------------------------------------------------

    @staticmethod
    def from_rows(
        rows: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, sum_duplicates: bool = True
    ) -> "SparseVectors":
        """Build from per-row (column ids, weights); rows are sorted, duplicates summed."""
        indptr, all_idx, all_val = [0], [], []
        for idx, val in rows:
            idx = np.asarray(idx, dtype=np.int64)
            val = np.asarray(val, dtype=np.float32)
            if len(idx):
                order = np.argsort(idx, kind="stable")
                idx, val = idx[order], val[order]
                if sum_duplicates and np.any(idx[1:] == idx[:-1]):
                    idx, inverse = np.unique(idx, return_inverse=True)
                    val = np.bincount(inverse, weights=val, minlength=len(idx)).astype(np.float32)
            all_idx.append(idx)
            all_val.append(val)
            indptr.append(indptr[-1] + len(idx))
        if not all_idx:
            all_idx, all_val = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
        return SparseVectors(np.array(indptr), np.concatenate(all_idx), np.concatenate(all_val), dim)

    @staticmethod
    def from_dicts(
        rows: Iterable[Mapping[str, float]], vocab: Mapping[str, int], dim: int | None = None
    ) -> "SparseVectors":
        """From dict rows `{token: weight}`; `vocab` maps tokens to column ids. Unknown tokens raise."""
        dim = len(vocab) if dim is None else dim

        def convert(row: Mapping[str, float]) -> tuple[list[int], list[float]]:
            try:
                return [vocab[t] for t in row], list(row.values())
            except KeyError as err:
                raise LsrError(f"token {err.args[0]!r} is not in the vocabulary") from None

        return SparseVectors.from_rows((convert(r) for r in rows), dim)

    def to_dicts(self, vocab: Sequence[str]) -> list[dict[str, float]]:
        """To dict rows `{token: weight}`; `vocab[i]` is the token of column i."""
        out = []
        for i in range(len(self)):
            idx, val = self.row(i)
            out.append({vocab[j]: float(v) for j, v in zip(idx, val)})
        return out

    @staticmethod
    def from_scipy(matrix: "scipy.sparse.spmatrix | scipy.sparse.sparray") -> "SparseVectors":
        csr = matrix.tocsr().copy()
        csr.sum_duplicates()
        csr.sort_indices()
        return SparseVectors(csr.indptr, csr.indices, csr.data, csr.shape[1])

    def to_scipy(self) -> "scipy.sparse.csr_matrix":
        import scipy.sparse

        return scipy.sparse.csr_matrix((self.values, self.indices, self.indptr), shape=self.shape)

    @staticmethod
    def from_dense(array: "np.ndarray | torch.Tensor") -> "SparseVectors":
        """From a dense [n, dim] array or torch tensor (zeros dropped)."""
        if hasattr(array, "detach"):
            array = array.detach().to("cpu").float().numpy()
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError("expected a 2-d array")
        rows, cols = np.nonzero(array)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=array.shape[0]))])
        return SparseVectors(indptr, cols, array[rows, cols], array.shape[1])

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=np.float32)
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        out[rows, self.indices] = self.values
        return out

    @staticmethod
    def from_torch(tensor: "torch.Tensor") -> "SparseVectors":
        """From a torch tensor: dense, sparse COO or sparse CSR, shape [n, dim]."""
        import torch

        if tensor.layout == torch.sparse_csr:
            t = tensor.detach().cpu()
            return SparseVectors.from_rows(
                (
                    (t.col_indices()[lo:hi].numpy(), t.values()[lo:hi].float().numpy())
                    for lo, hi in zip(t.crow_indices()[:-1].tolist(), t.crow_indices()[1:].tolist())
                ),
                t.shape[1],
            )
        if tensor.layout == torch.sparse_coo:
            import scipy.sparse

            t = tensor.detach().cpu().coalesce()
            r, c = t.indices().numpy()
            m = scipy.sparse.coo_matrix((t.values().float().numpy(), (r, c)), shape=tuple(t.shape))
            return SparseVectors.from_scipy(m)
        return SparseVectors.from_dense(tensor)

    def to_torch(self, layout: str = "csr") -> "torch.Tensor":
        """To a torch tensor: layout 'csr' (sparse CSR), 'coo' or 'dense'."""
        import torch

        if layout == "dense":
            return torch.from_numpy(self.to_dense())
        with warnings.catch_warnings():  # torch warns that sparse CSR is "beta"
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(
                torch.from_numpy(self.indptr.copy()),
                torch.from_numpy(self.indices.astype(np.int64)),
                torch.from_numpy(self.values.copy()),
                size=self.shape,
                check_invariants=False,
            )
        if layout == "csr":
            return csr
        if layout == "coo":
            return csr.to_sparse_coo()
        raise ValueError(f"unknown layout {layout!r}: expected 'csr', 'coo' or 'dense'")

    # ---- Anserini JsonVectorCollection --------------------------------------------------

    def write_jsonl(
        self, path: str | Path, ids: Sequence[str], vocab: Sequence[str], contents: Sequence[str] | None = None
    ) -> None:
        """Write Anserini's JsonVectorCollection (`lsr.formats.vectors.write_json_vectors`)."""
        from lsr.formats.vectors import write_json_vectors

        write_json_vectors(path, self, ids, vocab, contents)

    @staticmethod
    def read_jsonl(
        path: str | Path, vocab: Mapping[str, int] | None = None
    ) -> tuple[list[str], "SparseVectors", list[str]]:
        """Read a JsonVectorCollection: (ids, vectors, vocabulary) (`lsr.formats.vectors.read_json_vectors`)."""
        from lsr.formats.vectors import read_json_vectors

        return read_json_vectors(path, vocab)

