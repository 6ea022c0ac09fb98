"""A sharded index: a manifest over shard directories, each an ordinary exact or Seismic index.

Shard `i` holds the documents `start_i .. start_i + n_docs_i - 1` of the collection, in
order, numbered from 0 inside the shard. A search asks every shard for its top k and merges
the answers by (score descending, document id ascending), the order a single index breaks
ties in (`topk.py`): since a shard keeps its documents in collection order, the union of
the shards' top k holds the collection's top k, so the merge is exact.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.indexer.exact import clamp_k
from lsr.indexer.protocol import check_kind, filter_mask, index_class, resolve_threads
from lsr.indexer.storage import (
    IndexFormatError,
    MANIFEST,
    atomic_directory,
    damaged,
    read_manifest,
    write_manifest,
)
from lsr.sparse import SparseVectors

KIND = "sharded"
SHARD_KINDS = ("exact", "seismic")


def shard_name(i: int) -> str:
    return f"shard-{i:04d}"


def shard_ranges(n_docs: int, n_shards: int) -> list[tuple[int, int]]:
    """`n_shards` contiguous (start, stop) row ranges of about equal size covering `n_docs`."""
    if n_shards < 1:
        raise ValueError(f"the number of shards must be >= 1, got {n_shards}")
    bounds = [n_docs * i // n_shards for i in range(n_shards + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def manifest_digest(directory: str | Path) -> str:
    """sha256 of a shard's manifest.json (which lists every file of the shard with its own sha256)."""
    return hashlib.sha256((Path(directory) / MANIFEST).read_bytes()).hexdigest()


def load_shard(path: Path, kind: str):
    """One shard directory opened as the index kind its entry names (`lsr.indexer.KINDS`)."""
    if kind == KIND:
        raise IndexFormatError(f"{path}: a shard cannot itself be sharded")
    return index_class(kind, path).load(path)


def merge_top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the k best of `(ids, scores)` [n, m] by score descending, id ascending; padding
    (id -1) last. Returns `(ids int64[n, k], scores float32[n, k])`."""
    key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key, -scores), axis=-1)[:, :k]
    return np.take_along_axis(ids, order, -1), np.take_along_axis(scores, order, -1)


class ShardedIndex:
    """Shards searched one after another (each over all threads) for batches, or side by side
    in threads for fewer queries than threads; per-shard top k merged exactly."""

    kind = KIND

    def __init__(self, shards: Sequence[Any], starts: Sequence[int] | None = None) -> None:
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        self.shards = list(shards)
        sizes = [len(s) for s in self.shards]
        self.starts = np.cumsum([0, *sizes[:-1]]).astype(np.int64) if starts is None else np.asarray(starts, np.int64)
        self.n_docs = int(sum(sizes))
        self.path: Path | None = None
        self.entries: list[dict[str, Any]] = []  # the loaded manifest's shard entries

    @property
    def dim(self) -> int:
        return max(s.dim for s in self.shards)

    def __len__(self) -> int:
        return self.n_docs

    def search(
        self, queries: SparseVectors, k: int = 10, *, threads: int = 1, filter: np.ndarray | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows (collection-wide) and scores per query, `(int64[n, k], float32[n, k])`,
        padded with -1 / -inf; `filter` (collection-wide) is cut into each shard's part;
        `params` (query_cut, heap_factor) go to the Seismic shards."""
        allowed = filter_mask(filter, self.n_docs)
        k = clamp_k(k, self.n_docs)
        n = len(queries)
        if n == 0 or k == 0:
            return np.empty((n, k), np.int64), np.empty((n, k), np.float32)
        threads = resolve_threads(threads)

        def one(i: int, shard_threads: int) -> tuple[np.ndarray, np.ndarray]:
            shard = self.shards[i]
            part = None if allowed is None else allowed[self.starts[i] : self.starts[i] + len(shard)]
            ids, scores = shard.search(queries, k=k, threads=shard_threads, filter=part, **params)
            return np.where(ids >= 0, ids + self.starts[i], -1), scores

        if n >= threads or threads == 1 or len(self.shards) == 1:
            parts = [one(i, threads) for i in range(len(self.shards))]
        else:  # a few queries: the shards side by side (the kernels release the GIL)
            with ThreadPoolExecutor(min(threads, len(self.shards))) as pool:
                parts = list(pool.map(lambda i: one(i, 1), range(len(self.shards))))
        ids = np.concatenate([p[0] for p in parts], axis=1)
        scores = np.concatenate([p[1] for p in parts], axis=1)
        return merge_top_k(ids, scores, k)

    def forward_vectors(self) -> SparseVectors:
        """Every document's vector in collection order (for PRF and exact answers)."""
        return SparseVectors.concatenate([s.forward_vectors() for s in self.shards], dim=self.dim)

    def check_values(self, full: bool = False) -> None:
        for shard in self.shards:
            shard.check_values(full=full)
        if full and self.path is not None:  # each shard's files against the digests in its manifest
            for entry in self.entries:
                read_manifest(self.path / entry["path"], verify=True)

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Each shard saved into its own directory, then the top-level manifest."""
        with atomic_directory(path) as tmp:
            for i, shard in enumerate(self.shards):
                shard.save(tmp / shard_name(i))
            write_shard_manifest(tmp, [shard_name(i) for i in range(len(self.shards))], self.starts, self.dim)

    @classmethod
    def load(cls, path: str | Path) -> "ShardedIndex":
        """Open a sharded index: every shard listed (memory-mapped), its document range
        contiguous with the previous one and its manifest matching the recorded digest."""
        path = Path(path)
        manifest = read_manifest(path)
        check_kind(path, manifest, KIND)
        entries = manifest.get("shards")
        if not isinstance(entries, list) or not entries:
            raise damaged(path / MANIFEST, "no shards listed")
        shards, starts, next_start = [], [], 0
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or "/" in entry["path"]:
                raise damaged(path / MANIFEST, f"bad shard entry {entry!r}")
            where = path / entry["path"]
            if entry.get("start") != next_start:
                raise damaged(path / MANIFEST, f"shard {entry['path']} starts at {entry.get('start')!r}, expected {next_start}")
            try:
                digest = manifest_digest(where)
            except OSError:
                raise damaged(where, "shard missing") from None
            if digest != entry.get("manifest_sha256"):
                raise damaged(where / MANIFEST, "does not match the sharded manifest's checksum")
            shard = load_shard(where, read_manifest(where)["kind"])
            if len(shard) != entry.get("n_docs"):
                raise damaged(where / MANIFEST, f"{len(shard)} documents, the sharded manifest says {entry.get('n_docs')!r}")
            shards.append(shard)
            starts.append(next_start)
            next_start += len(shard)
        if next_start != manifest["n_docs"]:
            raise damaged(path / MANIFEST, f"shards hold {next_start} documents, the manifest says {manifest['n_docs']}")
        index = cls(shards, starts)
        index.path, index.entries = path, entries
        return index


def write_shard_manifest(directory: Path, names: Sequence[str], starts: Sequence[int], dim: int) -> dict[str, Any]:
    """The top-level manifest of shard directories already written under `directory`: each
    one's path, document range, kind and manifest digest."""
    entries = []
    for name, start in zip(names, starts):
        shard_manifest = read_manifest(directory / name)
        entries.append(
            {
                "path": name,
                "start": int(start),
                "n_docs": int(shard_manifest["n_docs"]),
                "kind": shard_manifest["kind"],
                "manifest_sha256": manifest_digest(directory / name),
            }
        )
    n_docs = sum(e["n_docs"] for e in entries)
    return write_manifest(directory, KIND, skip_subdirectories=list(names), n_docs=n_docs, dim=int(dim), shards=entries)
