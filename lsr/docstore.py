"""Document store: ids, titles and texts as UTF-8 blobs plus offsets, opened with mmap,
so showing a hit never loads the corpus."""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np

from lsr.errors import LsrError
from lsr.indexer.storage import save_array

FIELDS = ("ids", "titles", "texts")


class DocStoreWriter:
    """Appends documents to `.npy` files whose header is written by `close()`: plain writes
    only (a full disk is an `OSError`, never a SIGBUS through a memory map), no second copy."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.blobs = {f: open(self.directory / f"{f}.npy", "wb") for f in FIELDS}
        for blob in self.blobs.values():
            blob.write(b"\0" * NPY_HEADER)  # room for the header, written once the size is known
        # 8 bytes per entry (a list of Python ints takes ~36): millions of documents add up
        self.offsets: dict[str, array] = {f: array("q", [0]) for f in FIELDS}
        self.seen: dict[str, str] = {}
        self.copied = 0  # rows copied from another store (copy_from)

    def add(self, doc_id: str, title: str, text: str, where: str = "") -> None:
        if doc_id in self.seen:
            raise LsrError(f"{where}: duplicate document id {doc_id!r} (first at {self.seen[doc_id]})")
        self.seen[doc_id] = where
        for field, value in zip(FIELDS, (doc_id, title, text)):
            data = value.encode("utf-8", "surrogatepass")
            self.blobs[field].write(data)
            self.offsets[field].append(self.offsets[field][-1] + len(data))

    def copy_from(self, store: "DocStore") -> None:
        """Append every row of `store` as it is (blobs copied whole; its ids are not checked
        against the ones added after: a caller adding a live id again replaces it)."""
        for field in FIELDS:
            blob, offsets = store._blobs[field], np.asarray(store._offsets[field])
            base = self.offsets[field][-1]
            self.blobs[field].write(memoryview(np.ascontiguousarray(blob)).cast("B"))
            self.offsets[field].extend((offsets[1:] + base).tolist())
        self.copied += len(store)

    def __len__(self) -> int:
        return self.copied + len(self.seen)

    def close(self) -> None:
        for field, blob in self.blobs.items():
            blob.seek(0)
            blob.write(_npy_header(self.offsets[field][-1]))
            blob.close()
            save_array(self.directory / f"{field}.offsets.npy", np.frombuffer(self.offsets[field], np.int64))


NPY_HEADER = 128  # bytes of a version 1.0 .npy header of a 1-D uint8 array (any length)


def _npy_header(size: int) -> bytes:
    """The .npy (format 1.0) header of a uint8 array of `size` entries, NPY_HEADER bytes long."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": (size,)})
    body = text.ljust(NPY_HEADER - 10 - 1).encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


class DocStore:
    """Read side: `doc_id(row)`, `title(row)`, `text(row)` decode only what is asked for."""

    def __init__(self, directory: Path, n_docs: int | None = None) -> None:
        """Open (memory-mapped) and check types and offsets (O(documents)); `n_docs`: the
        count the index manifest gives."""
        from lsr.indexer.storage import check_pointer, load_arrays

        self.directory = Path(directory)
        names = [f for field in FIELDS for f in (field, f"{field}.offsets")]
        dtypes = {f: ("uint8",) for f in FIELDS} | {f"{f}.offsets": ("int64",) for f in FIELDS}
        arrays = load_arrays(self.directory, names, dtypes=dtypes)
        self._blobs = {f: arrays[f] for f in FIELDS}
        self._offsets = {f: arrays[f"{f}.offsets"] for f in FIELDS}
        rows = len(self._offsets["ids"]) if n_docs is None else n_docs + 1
        for f in FIELDS:
            check_pointer(self.directory, f"{f}.offsets", self._offsets[f], rows, len(self._blobs[f]))
        self._all_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._offsets["ids"]) - 1

    def _get(self, field: str, row: int) -> str:
        lo, hi = self._offsets[field][row], self._offsets[field][row + 1]
        return _decode(bytes(self._blobs[field][lo:hi]), self.directory / f"{field}.npy")

    def doc_id(self, row: int) -> str:
        return self._get("ids", row)

    def title(self, row: int) -> str:
        return self._get("titles", row)

    def text(self, row: int) -> str:
        return self._get("texts", row)

    def all_ids(self) -> np.ndarray:
        """Every id as an object array (decoded once, cached): fast id lookup for batch search."""
        if self._all_ids is None:
            blob = _decode(bytes(self._blobs["ids"]), self.directory / "ids.npy")
            offsets = np.asarray(self._offsets["ids"])
            if blob.isascii():
                self._all_ids = np.array([blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])], dtype=object)
            else:
                self._all_ids = np.array([self.doc_id(i) for i in range(len(self))], dtype=object)
        return self._all_ids




def _decode(data: bytes, where: Path) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise LsrError(f"{where}: not valid UTF-8 (index is damaged; rebuild it)") from None
