"""Document store: ids, titles and texts as UTF-8 blobs plus offsets, opened with mmap,
so showing a hit never loads the corpus."""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np

from lsr.errors import LsrError
from lsr.formats.npy import NpyAppender
from lsr.indexer.storage import save_array

FIELDS = ("ids", "titles", "texts")


class DocStoreWriter:
    """Appends documents to `.npy` files whose header is written by `close()`: plain writes
    only (a full disk is an `OSError`, never a SIGBUS through a memory map), no second copy."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.blobs = {f: NpyAppender(self.directory / f"{f}.npy", np.uint8) for f in FIELDS}
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
        """Append every row of `store` as it is, all its parts in one (blobs copied whole; its
        ids are not checked against the ones added after: a caller adding a live id again
        replaces it)."""
        for part in store._parts:
            for field in FIELDS:
                blob, offsets = part.blobs[field], np.asarray(part.offsets[field])
                base = self.offsets[field][-1]
                self.blobs[field].write(blob)
                self.offsets[field].extend((offsets[1:] + base).tolist())
            self.copied += len(part)

    def __len__(self) -> int:
        return self.copied + len(self.seen)

    def close(self) -> None:
        for field, blob in self.blobs.items():
            blob.close()
            save_array(self.directory / f"{field}.offsets.npy", np.frombuffer(self.offsets[field], np.int64))


class DocStore:
    """Read side: `doc_id(row)`, `title(row)`, `text(row)` decode only what is asked for.

    The store is its directory's files (part 0) followed by the parts `more-1/`, `more-2/`, …
    that `Retriever.append` adds (each the same files, rows numbered on), so an append writes
    only its new documents and links the rest."""

    def __init__(self, directory: Path, n_docs: int | None = None) -> None:
        """Open (memory-mapped) and check types and offsets (O(documents)); `n_docs`: the
        count the index manifest gives."""
        from lsr.indexer.storage import damaged

        self.directory = Path(directory)
        self._parts = [_Part(self.directory)]
        while (self.directory / part_name(len(self._parts))).is_dir():
            self._parts.append(_Part(self.directory / part_name(len(self._parts))))
        self._starts = np.cumsum([0] + [len(p) for p in self._parts])
        if n_docs is not None and self._starts[-1] != n_docs:
            raise damaged(self.directory / "ids.offsets.npy", f"{self._starts[-1]} documents, the index has {n_docs}")
        self._all_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def n_parts(self) -> int:
        return len(self._parts)

    def _get(self, field: str, row: int) -> str:
        k = int(np.searchsorted(self._starts, row, side="right")) - 1 if len(self._parts) > 1 else 0
        return self._parts[k].get(field, row - int(self._starts[k]))

    def doc_id(self, row: int) -> str:
        return self._get("ids", row)

    def title(self, row: int) -> str:
        return self._get("titles", row)

    def text(self, row: int) -> str:
        return self._get("texts", row)

    def all_ids(self) -> np.ndarray:
        """Every id as an object array (decoded once, cached): fast id lookup for batch search."""
        if self._all_ids is None:
            self._all_ids = np.concatenate([p.all_ids() for p in self._parts])
        return self._all_ids


def part_name(k: int) -> str:
    """The subdirectory of a document store holding its part `k` (k ≥ 1)."""
    return f"more-{k}"


class _Part:
    """One directory's ids, titles and texts: blobs and offsets, memory-mapped and checked."""

    def __init__(self, directory: Path) -> None:
        from lsr.indexer.storage import check_pointer, load_arrays

        self.directory = directory
        names = [f for field in FIELDS for f in (field, f"{field}.offsets")]
        dtypes = {f: ("uint8",) for f in FIELDS} | {f"{f}.offsets": ("int64",) for f in FIELDS}
        arrays = load_arrays(directory, names, dtypes=dtypes)
        self.blobs = {f: arrays[f] for f in FIELDS}
        self.offsets = {f: arrays[f"{f}.offsets"] for f in FIELDS}
        rows = len(self.offsets["ids"])
        for f in FIELDS:
            check_pointer(directory, f"{f}.offsets", self.offsets[f], rows, len(self.blobs[f]))

    def __len__(self) -> int:
        return len(self.offsets["ids"]) - 1

    def get(self, field: str, row: int) -> str:
        lo, hi = self.offsets[field][row], self.offsets[field][row + 1]
        return _decode(bytes(self.blobs[field][lo:hi]), self.directory / f"{field}.npy")

    def all_ids(self) -> np.ndarray:
        blob = _decode(bytes(self.blobs["ids"]), self.directory / "ids.npy")
        offsets = np.asarray(self.offsets["ids"])
        if blob.isascii():
            return np.array([blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])], dtype=object)
        return np.array([self.get("ids", i) for i in range(len(self))], dtype=object)


def _decode(data: bytes, where: Path) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise LsrError(f"{where}: not valid UTF-8 (index is damaged; rebuild it)") from None
