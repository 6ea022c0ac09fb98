"""An append-only folder of sparse vectors: CSR rows written chunk by chunk as they are
encoded, read back memory-mapped, so a corpus's vectors never have to sit in memory.

Layout: `indices.npy` (int32), `values.npy` (float32), `indptr.npy` (int64, rows + 1) and
`spill.json` (`{"format": "lsr-vectors", "dim", "rows", "nnz"}`), plain `.npy` files that
`np.load(mmap_mode=...)` opens. While writing, components and values are appended
(`lsr.formats.npy.NpyAppender`: plain writes, the header last) and only the row lengths are
kept in memory (8 bytes a row);
`close()` writes the headers, `indptr.npy` and `spill.json`. A folder without `spill.json`
is incomplete and is refused by `read_spill`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from lsr.formats.lines import FormatError
from lsr.formats.npy import NpyAppender
from lsr.sparse import SparseVectors

FORMAT = "lsr-vectors"
class VectorSpill:
    """Writes a spill folder (`directory`, created; it must not exist yet). `add(chunk)` appends
    rows; `close()` completes the folder; `vectors()` closes and returns its rows memory-mapped.
    As a context manager: closed at the end of the block, removed if it raises."""

    def __init__(self, directory: str | os.PathLike, dim: int = 0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True)
        self.dim, self.rows, self.nnz = int(dim), 0, 0
        self._lengths: list[np.ndarray] = []
        self._files = {name: NpyAppender(self.directory / f"{name}.npy", dtype) for name, dtype in (("indices", np.int32), ("values", np.float32))}
        self.closed = False

    def add(self, chunk: SparseVectors) -> None:
        """Append `chunk`'s rows (its components as int32, values as float32)."""
        if not isinstance(chunk, SparseVectors):
            raise TypeError(f"expected SparseVectors chunks, got {type(chunk).__name__}")
        self._files["indices"].write(chunk.indices)
        self._files["values"].write(chunk.values)
        self._lengths.append(np.diff(chunk.indptr))
        self.dim = max(self.dim, int(chunk.dim))
        self.rows += len(chunk)
        self.nnz += int(chunk.nnz)

    def close(self) -> None:
        """Write the headers, `indptr.npy` and `spill.json`: the folder is complete."""
        if self.closed:
            return
        for f in self._files.values():
            f.close()
        indptr = np.zeros(self.rows + 1, dtype=np.int64)
        if self._lengths:
            np.cumsum(np.concatenate(self._lengths), out=indptr[1:])
        self._lengths = []
        np.save(self.directory / "indptr.npy", indptr)
        meta = {"format": FORMAT, "dim": self.dim, "rows": self.rows, "nnz": self.nnz}
        (self.directory / "spill.json").write_text(json.dumps(meta) + "\n")
        self.closed = True

    def vectors(self) -> SparseVectors:
        """Close the folder and return its rows memory-mapped copy-on-write (see `read_spill`)."""
        self.close()
        return read_spill(self.directory)

    def remove(self) -> None:
        """Delete the folder (complete or not)."""
        for f in self._files.values():
            f.discard()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "VectorSpill":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None:
            self.remove()
        else:
            self.close()


def read_spill(directory: str | os.PathLike, mode: str = "c") -> SparseVectors:
    """The rows of a complete spill folder, memory-mapped (`mode` "c": copy-on-write, writable
    arrays whose writes never reach the files, what Numba kernels take; "r": read-only). An
    incomplete or damaged folder is a `FormatError` naming it."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "spill.json").read_text())
    except (OSError, ValueError):
        raise FormatError(f"{directory}: not a complete vector spill (no readable spill.json)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FormatError(f"{directory}/spill.json: not an {FORMAT} folder")
    arrays = {}
    for name, dtype, length in (("indptr", np.int64, meta["rows"] + 1), ("indices", np.int32, meta["nnz"]),
                                ("values", np.float32, meta["nnz"])):  # fmt: skip
        file = directory / f"{name}.npy"
        try:
            array = np.load(file, mmap_mode=mode, allow_pickle=False) if length else np.zeros(0, dtype)
        except (OSError, ValueError) as err:
            raise FormatError(f"{file}: unreadable ({err})") from None
        if array.dtype != dtype or array.shape != (length,):
            raise FormatError(f"{file}: {array.dtype} {array.shape}, expected {np.dtype(dtype)} ({length},)")
        arrays[name] = array
    if arrays["indptr"][0] != 0 or arrays["indptr"][-1] != meta["nnz"]:
        raise FormatError(f"{directory}/indptr.npy: offsets do not run from 0 to {meta['nnz']}")
    return SparseVectors(arrays["indptr"], arrays["indices"], arrays["values"], int(meta["dim"]))
