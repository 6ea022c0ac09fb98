"""What every index kind offers, and the one table that opens an index directory by its kind.

An index kind is a class with the `Index` shape below, named in `KINDS` (manifest `kind` →
"module:Class", imported only when an index of that kind is opened: `lsr search` on an
exact index never imports Numba). A new kind registers with one `register_kind` call.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from lsr.indexer.storage import IndexFormatError, read_manifest
from lsr.sparse import SparseVectors

THREADS_DOC = "threads: 0 = every core Numba may use, 1 = the calling thread only, n = n threads"
FILTER_DOC = "filter: None (every document), an array of allowed document ids, or a boolean mask over the documents"
NO_FILTER = np.zeros(0, np.bool_)  # what the kernels take for "every document allowed"


@runtime_checkable
class Index(Protocol):
    """A searchable sparse index stored as a directory (`manifest.json` + arrays).

    `search(queries, k, threads=..., **params)` returns `(ids int64[n, k], scores
    float32[n, k])` in query order, padded with -1 / -inf, `k` capped at `len(index)`;
    `threads` has one meaning for every kind (`THREADS_DOC`) and Numba's thread count is the
    same after the call as before. `params` are the kind's search knobs; a kind ignores the
    knobs it has no use for (an exact index ignores `query_cut`), so one call serves all kinds.
    `filter=` (`FILTER_DOC`) restricts the answer to a subset of the documents, top-k kept
    correct (exact: applied while scoring; Seismic: while evaluating candidates, exact over
    the subset when it is small). A kind that can grow (`segmented`) also has `add(vectors,
    ids)`, `delete(ids)` and `merge()`.
    Damage or a directory of another kind raises `IndexFormatError` (an `LsrError`).
    """

    kind: str
    path: Path | None  # where it was loaded from (for messages)

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def search(self, queries: SparseVectors, k: int = 10, *, threads: int = 1, **params) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> "Index": ...

    def forward_vectors(self) -> SparseVectors:
        """Every document's vector as CSR rows (exact search, pseudo-relevance feedback)."""
        ...

    def check_values(self, full: bool = False) -> None:
        """Scan every stored value the kernels use as an array position (`full`: everything
        `lsr info --verify` checks); raises `IndexFormatError` naming the damaged file."""
        ...


KINDS: dict[str, str | type] = {
    "exact": "lsr.indexer.exact:ExactIndex",
    "seismic": "lsr.indexer.seismic:SeismicIndex",
    "sharded": "lsr.indexer.sharded:ShardedIndex",
    "segmented": "lsr.indexer.segmented:SegmentedIndex",
}


def register_kind(kind: str, cls: str | type) -> None:
    """Make `load` open directories whose manifest says `kind` with `cls` (a class, or
    "module:Class" to import it only when needed)."""
    KINDS[kind] = cls


def index_class(kind: str, path: str | Path = "<index>") -> type:
    """The class registered for `kind`; an unknown kind is an `IndexFormatError` naming `path`."""
    target = KINDS.get(kind)
    if target is None:
        raise IndexFormatError(f"{path}: unknown index kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    if isinstance(target, str):
        module, name = target.split(":")
        target = getattr(importlib.import_module(module), name)
    return target


def load(path: str | Path, exact: bool = False) -> Index:
    """Open the index directory `path`, whatever its kind (read from its manifest).

    `exact=True` answers exactly from any kind: an approximate index's forward index is
    inverted into an exact index in memory."""
    path = Path(path)
    index = index_class(read_manifest(path)["kind"], path).load(path)
    if exact and index.kind != "exact":
        from lsr.indexer.exact import ExactIndex

        index = ExactIndex.build(index.forward_vectors())
        index.path = path
    return index


def filter_mask(filter: np.ndarray | None, n_docs: int) -> np.ndarray | None:
    """`filter` (`FILTER_DOC`) as a boolean mask over `n_docs` documents (None: no filter). A mask of another length or ids outside [0, n_docs) are a
    `ValueError` (a mask shorter than the index would silently drop documents)."""
    if filter is None:
        return None
    filter = np.asarray(filter)
    if filter.dtype == np.bool_:
        if filter.shape != (n_docs,):
            raise ValueError(f"a filter mask must have one entry per document ({n_docs}), got shape {filter.shape}")
        return filter
    if filter.size and not np.issubdtype(filter.dtype, np.integer):
        raise ValueError(f"a filter is a boolean mask or an array of document ids, got dtype {filter.dtype}")
    ids = filter.astype(np.int64, copy=False).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= n_docs):
        raise ValueError(f"filter ids must be in [0, {n_docs})")
    mask = np.zeros(n_docs, np.bool_)
    mask[ids] = True
    return mask


def check_kind(path: Path, manifest: dict, kind: str) -> None:
    """A kind's `load` refuses a directory of another kind with `IndexFormatError`."""
    if manifest.get("kind") != kind:
        raise IndexFormatError(f"{path}: a {manifest.get('kind')!r} index, not {kind!r} (open it with lsr.indexer.load)")


def resolve_threads(threads: int) -> int:
    """The number of threads `threads` asks for (`THREADS_DOC`), capped at Numba's maximum."""
    import numba

    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 ({THREADS_DOC}), got {threads!r}")
    most = numba.config.NUMBA_NUM_THREADS
    return most if threads == 0 else min(int(threads), most)


@contextlib.contextmanager
def numba_threads(n: int) -> Iterator[None]:
    """Run the body with Numba's thread count at `n`; the previous count is restored after,
    whether the body returns or raises."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)
