"""Sparse vector collections, read into and written from `lsr.sparse.SparseVectors`.

* **Anserini's JsonVectorCollection** (`.jsonl`, `.jsonl.gz`): one
  ``{"id", "contents", "vector": {token: weight}}`` per line; pre-encoded queries use the same
  records (``_id`` accepted for ``id``).
* **Seismic's binary ("inner") format**, read by pyseismic-lsr's ``SeismicIndexRaw.build``
  and its query files: little-endian; ``u32 n_vectors``, then per vector ``u32 len``,
  ``u32 components[len]`` (ascending), ``f32 values[len]``.
* **BigANN ``.csr``** (big-ann-benchmarks sparse track): little-endian ``i64 nrow``,
  ``i64 ncol``, ``i64 nnz``, then ``i64 indptr[nrow+1]``, ``i32 indices[nnz]``,
  ``f32 data[nnz]``.

NumPy only at import; the Seismic reader imports Numba when called.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from lsr.formats.lines import FormatError, first_field, read_json_lines
from lsr.sparse import SparseVectors

__all__ = [
    "FormatError",
    "load_query_vectors",
    "read_csr",
    "read_json_vectors",
    "read_seismic_bin",
    "write_csr",
    "write_json_vectors",
    "write_seismic_bin",
]
ID_KEYS = ("id", "_id", "qid")


def _json_vectors(path: str | Path) -> tuple[list[str], list[dict[str, float]], list[int]]:
    """The ids, `{token: weight}` rows and line numbers of a JsonVectorCollection file."""
    ids: list[str] = []
    rows: list[dict[str, float]] = []
    lines: list[int] = []
    for number, record in read_json_lines(path):
        vid = first_field(record, ID_KEYS)
        if vid is None:
            raise FormatError(f"{path}:{number}: the record has no '_id' or 'id' field")
        vector = record.get("vector")
        if not isinstance(vector, dict):
            raise FormatError(f"{path}:{number}: expected a 'vector' object {{token: weight}}")
        try:
            rows.append({str(t): float(w) for t, w in vector.items()})
        except (TypeError, ValueError):
            raise FormatError(f"{path}:{number}: vector weights must be numbers") from None
        ids.append(str(vid))
        lines.append(number)
    return ids, rows, lines


def read_json_vectors(path: str | Path, vocab: Mapping[str, int] | None = None) -> tuple[list[str], SparseVectors, list[str]]:
    """Read a JsonVectorCollection: (ids, vectors, vocabulary). Tokens missing from `vocab` are
    appended to a copy of it; without `vocab` the columns are numbered in order of first appearance."""
    ids, rows, _ = _json_vectors(path)
    token_ids: dict[str, int] = dict(vocab or {})
    cols = [([token_ids.setdefault(t, len(token_ids)) for t in row], list(row.values())) for row in rows]
    vocabulary = [""] * len(token_ids)
    for t, i in token_ids.items():
        vocabulary[i] = t
    return ids, SparseVectors.from_rows(cols, len(vocabulary)), vocabulary


def write_json_vectors(
    path: str | Path, vectors: SparseVectors, ids: Sequence[str], vocab: Sequence[str], contents: Sequence[str] | None = None
) -> None:
    """Write a JsonVectorCollection: one `{"id", "contents", "vector"}` per line."""
    if len(ids) != len(vectors):
        raise ValueError("one id per vector is needed")
    with open(path, "w", encoding="utf-8") as f:
        for i, row in enumerate(vectors.to_dicts(vocab)):
            record = {"id": ids[i], "contents": contents[i] if contents else "", "vector": row}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def load_query_vectors(path: str | Path, vocab: Mapping[str, int] | None = None):
    """Read pre-encoded queries, one `{"id", "vector": {token: weight}}` per line (.gz or not).

    Returns `(ids, rows)` with `rows` a list of `{token: weight}` dicts or, given `vocab`
    (token -> column id), `(ids, SparseVectors)`; a token missing from `vocab` is an error.
    """
    ids, rows, lines = _json_vectors(path)
    if vocab is None:
        return ids, rows
    for number, row in zip(lines, rows):
        for t in row:
            if t not in vocab:
                raise FormatError(f"{path}:{number}: token {t!r} is not in the vocabulary")
    dim = max(vocab.values(), default=-1) + 1
    return ids, SparseVectors.from_dicts(rows, vocab, dim=max(dim, len(vocab)))


def read_seismic_bin(path: str | os.PathLike, dim: int | None = None) -> SparseVectors:
    """Read a file in Seismic's binary format."""
    size = os.path.getsize(path)
    if size < 4 or size % 4:
        raise FormatError(f"{path}: not a Seismic binary file (size {size} is not a multiple of 4)")
    from lsr.formats._seismic_scan import seismic_offsets

    buf = np.fromfile(path, dtype="<u4")
    lens, end = seismic_offsets(buf)
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


def write_seismic_bin(path: str | os.PathLike, vectors: SparseVectors | Iterable[SparseVectors]) -> None:
    """Write `vectors` in Seismic's binary format (components ascending, values f32); an
    iterable of chunks is written chunk by chunk (the row count is filled in at the end)."""
    chunks = [vectors] if isinstance(vectors, SparseVectors) else vectors
    n = 0
    with open(path, "wb") as f:
        np.zeros(1, dtype="<u4").tofile(f)
        for chunk in chunks:
            _seismic_rows(chunk).tofile(f)
            n += len(chunk)
        f.seek(0)
        np.array([n], dtype="<u4").tofile(f)


def _seismic_rows(vectors: SparseVectors) -> np.ndarray:
    """The rows of `vectors` as Seismic's binary records (`len`, components, values), as u32."""
    n = len(vectors)
    indptr = vectors.indptr
    lens = np.diff(indptr)
    buf = np.empty(n + 2 * vectors.nnz, dtype="<u4")
    starts = np.arange(n, dtype=np.int64) + 2 * indptr[:-1]
    buf[starts] = lens
    rows = np.repeat(np.arange(n, dtype=np.int64), lens)
    j = np.arange(vectors.nnz, dtype=np.int64)
    pos_comp = 1 + rows + indptr[rows] + j
    buf[pos_comp] = vectors.indices.astype("<u4")
    buf[pos_comp + lens[rows]] = vectors.values.astype("<f4").view("<u4")
    return buf


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
