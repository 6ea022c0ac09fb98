"""A 1-D `.npy` file written by appending: a fixed-size header placeholder first, the values
as they come (plain writes, never memory-mapped ones: a full disk is an `OSError`, not a
SIGBUS), the real header once the length is known. `np.load(mmap_mode=...)` opens the result.
The document store and the vector spill write their arrays this way."""

from __future__ import annotations

import os
import struct

import numpy as np

HEADER_BYTES = 128  # room for a `.npy` 1.0 header of any 1-D length
_MAGIC = b"\x93NUMPY\x01\x00"


def npy_header(dtype: np.dtype, length: int) -> bytes:
    """A `.npy` 1.0 header of exactly `HEADER_BYTES` bytes for a 1-D array."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (int(length),)})
    body = HEADER_BYTES - len(_MAGIC) - 2
    return _MAGIC + struct.pack("<H", body) + text.ljust(body - 1).encode("latin1") + b"\n"


class NpyAppender:
    """Appends values of `dtype` to the `.npy` file `path`; `close()` writes the header."""

    def __init__(self, path: str | os.PathLike, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.length = 0
        self._file = open(path, "wb")
        self._file.write(bytes(HEADER_BYTES))

    def write(self, values: np.ndarray | bytes) -> None:
        """Append `values` (an array, converted to the file's dtype, or raw bytes of it)."""
        array = np.frombuffer(values, self.dtype) if isinstance(values, bytes) else np.ascontiguousarray(values, self.dtype)
        self._file.write(memoryview(array).cast("B"))
        self.length += array.size

    def close(self) -> None:
        """Write the header and close the file (again: nothing)."""
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(npy_header(self.dtype, self.length))
        self._file.close()

    def discard(self) -> None:
        """Close the file without completing it (its caller deletes it)."""
        self._file.close()
