"""Document store: ids, titles and texts as UTF-8 blobs plus offsets, opened with mmap,
so showing a hit never loads the corpus."""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np

from lsr.errors import LsrError

FIELDS = ("ids", "titles", "texts")


class DocStoreWriter:
    """Appends documents to raw blob files; `close()` turns them into `.npy` arrays."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.blobs = {f: open(self.directory / f"{f}.raw", "wb") for f in FIELDS}
        # 8 bytes per entry (a list of Python ints takes ~36): millions of documents add up
        self.offsets: dict[str, array] = {f: array("q", [0]) for f in FIELDS}
        self.seen: dict[str, str] = {}

    def add(self, doc_id: str, title: str, text: str, where: str = "") -> None:
        if doc_id in self.seen:
            raise LsrError(f"{where}: duplicate document id {doc_id!r} (first at {self.seen[doc_id]})")
        self.seen[doc_id] = where
        for field, value in zip(FIELDS, (doc_id, title, text)):
            data = value.encode("utf-8", "surrogatepass")
            self.blobs[field].write(data)
            self.offsets[field].append(self.offsets[field][-1] + len(data))

    def __len__(self) -> int:
        return len(self.seen)

    def close(self) -> None:
        for field, blob in self.blobs.items():
            blob.close()
            raw = self.directory / f"{field}.raw"
            size = self.offsets[field][-1]
            out = np.lib.format.open_memmap(self.directory / f"{field}.npy", mode="w+", dtype=np.uint8, shape=(size,))
            with open(raw, "rb") as src:
                pos = 0
                for block in iter(lambda: src.read(1 << 24), b""):
                    out[pos : pos + len(block)] = np.frombuffer(block, np.uint8)
                    pos += len(block)
            out.flush()
            del out
            raw.unlink()
            np.save(self.directory / f"{field}.offsets.npy", np.frombuffer(self.offsets[field], np.int64))


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
