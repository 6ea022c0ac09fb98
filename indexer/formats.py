"""Interchange formats for sparse vectors.

* **Seismic's binary ("inner") format**, read by pyseismic-lsr's ``SeismicIndexRaw.build``
  and its query files: little-endian; ``u32 n_vectors``, then per vector ``u32 len``,
  ``u32 components[len]`` (ascending), ``f32 values[len]``.
* **BigANN ``.csr``** (big-ann-benchmarks sparse track): little-endian ``i64 nrow``,
  ``i64 ncol``, ``i64 nnz``, then ``i64 indptr[nrow+1]``, ``i32 indices[nnz]``,
  ``f32 data[nnz]``.

Both return / take `lsr.sparse.SparseVectors`.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from lsr.sparse import SparseVectors


class FormatError(ValueError):
    """The file is not in the expected binary layout."""


@njit(cache=True)
def _seismic_offsets(buf):
    n = buf[0]
    lens = np.empty(n, dtype=np.int64)
    pos = 1
    total = buf.shape[0]
    for i in range(n):
        if pos >= total:
            return lens, -1
        m = buf[pos]
        lens[i] = m
        pos += 1 + 2 * m
    return lens, pos


def read_seismic_bin(path: str | os.PathLike, dim: int | None = None) -> SparseVectors:
    """Read a file in Seismic's binary format."""
    size = os.path.getsize(path)
    if size < 4 or size % 4:
        raise FormatError(f"{path}: not a Seismic binary file (size {size} is not a multiple of 4)")
    buf = np.fromfile(path, dtype="<u4")
    lens, end = _seismic_offsets(buf)
    if end != len(buf):
        raise FormatError(f"{path}: not a Seismic binary file (lengths do not match the file size)")
    n = len(lens)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    rows = np.repeat(np.arange(n, dtype=np.int64), lens)
    j = np.arange(indptr[-1], dtype=np.int64)
    pos_comp = 2 + rows + indptr[rows] + j
    pos_val = pos_comp + lens[rows]
    indices = buf[pos_comp].astype(np.int64)
    values = buf[pos_val].view("<f4").astype(np.float32)
    max_c = int(indices.max()) + 1 if len(indices) else 0
    if dim is None:
        dim = max_c
    elif max_c > dim:
        raise FormatError(f"{path}: component {max_c - 1} out of range for dim {dim}")
    return SparseVectors(indptr, indices.astype(np.int32), values, dim)


def write_seismic_bin(path: str | os.PathLike, vectors: SparseVectors) -> None:
    """Write `vectors` in Seismic's binary format (components ascending, values f32)."""
    n = len(vectors)
    indptr = vectors.indptr
    lens = np.diff(indptr)
    buf = np.empty(1 + n + 2 * vectors.nnz, dtype="<u4")
    buf[0] = n
    starts = 1 + np.arange(n, dtype=np.int64) + 2 * indptr[:-1]
    buf[starts] = lens
    rows = np.repeat(np.arange(n, dtype=np.int64), lens)
    j = np.arange(vectors.nnz, dtype=np.int64)
    pos_comp = 2 + rows + indptr[rows] + j
    buf[pos_comp] = vectors.indices.astype("<u4")
    buf[pos_comp + lens[rows]] = vectors.values.astype("<f4").view("<u4")
    with open(path, "wb") as f:
        buf.tofile(f)


def read_csr(path: str | os.PathLike) -> SparseVectors:
    """Read a BigANN sparse-track `.csr` file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = np.fromfile(f, dtype="<i8", count=3)
        if len(header) != 3:
            raise FormatError(f"{path}: not a .csr file (short header)")
        nrow, ncol, nnz = (int(x) for x in header)
        expected = 24 + 8 * (nrow + 1) + 4 * nnz + 4 * nnz
        if min(nrow, ncol, nnz) < 0 or size != expected:
            raise FormatError(f"{path}: not a .csr file (header {nrow}x{ncol}, {nnz} nnz; size {size})")
        indptr = np.fromfile(f, dtype="<i8", count=nrow + 1)
        indices = np.fromfile(f, dtype="<i4", count=nnz)
        data = np.fromfile(f, dtype="<f4", count=nnz)
    # rows of .csr files need not be sorted; SparseVectors wants sorted columns
    # (a decrease between neighbours counts unless a row starts there)
    unsorted = np.diff(indices) <= 0
    boundaries = indptr[1:-1]
    unsorted[boundaries[(boundaries > 0) & (boundaries < nnz)] - 1] = False
    if unsorted.any():
        rows = np.repeat(np.arange(nrow, dtype=np.int64), np.diff(indptr))
        order = np.lexsort((indices, rows))
        indices = indices[order]
        data = data[order]
    return SparseVectors(indptr, indices, data, ncol)


def write_csr(path: str | os.PathLike, vectors: SparseVectors) -> None:
    """Write a BigANN sparse-track `.csr` file."""
    with open(path, "wb") as f:
        np.array([len(vectors), vectors.dim, vectors.nnz], dtype="<i8").tofile(f)
        vectors.indptr.astype("<i8").tofile(f)
        vectors.indices.astype("<i4").tofile(f)
        vectors.values.astype("<f4").tofile(f)
