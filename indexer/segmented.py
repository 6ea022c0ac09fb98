"""A growable index: segments (ordinary exact or Seismic indexes) plus tombstones.

`add(vectors, ids)` builds the new documents into a new segment; `delete(ids)` marks them
dead in the segment holding them (a tombstone mask per segment). A search asks every
segment for its top k with the dead (and filtered-out) documents masked inside the segment's
own search, maps the segment's rows to document ids and merges by (score descending, id
ascending). A segment holds its documents in ascending id order, so its own tie rule (the
lower row first) is the lower id first, and the merge gives exactly what one exact index
over the live documents, in id order, gives.

Merging rebuilds segments from their live documents' forward vectors: automatically after
each `add` / `delete` by a size rule (the two newest segments while the older holds fewer
than `MERGE_FACTOR` times the newer's live documents, which keeps O(log n) segments; and
any segment whose deleted share reaches `REWRITE_DELETED`), or all at once with `merge()`.
Saving writes a new generation of the directory (`atomic_directory`), hard-linking the
files of segments that are already on disk unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.indexer.exact import clamp_k
from lsr.indexer.protocol import check_kind, filter_mask, index_class
from lsr.indexer.storage import (
    MANIFEST,
    atomic_directory,
    damaged,
    load_arrays,
    read_manifest,
    save_array,
    write_manifest,
)
from lsr.sparse import SparseVectors

KIND = "segmented"
SEGMENT_KINDS = ("exact", "seismic")
MERGE_FACTOR = 2  # the two newest segments merge while the older holds < MERGE_FACTOR x the newer's live documents
REWRITE_DELETED = 0.5  # a segment with at least this share of its documents deleted is rebuilt without them


def take_rows(vectors: SparseVectors, rows: np.ndarray) -> SparseVectors:
    """The rows `rows` of `vectors`, in that order (vectorised)."""
    rows = np.asarray(rows, np.int64)
    starts = vectors.indptr[rows]
    lengths = vectors.indptr[rows + 1] - starts
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    return SparseVectors(indptr, vectors.indices[take], vectors.values[take], vectors.dim)


def _segment_name(i: int) -> str:
    return f"seg-{i:04d}"


def _digest(directory: Path) -> str:
    return hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()


def link_tree(source: Path, target: Path) -> None:
    """`source` copied to `target` as hard links (the files are never written in place, so a
    link is a copy), plain copies where linking fails."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


class SegmentedIndex:
    """Segments of one kind (`segment_kind`, built with `params`) searched together; see the
    module docstring. Document ids are int64 >= 0 chosen by `add` (by default the next ones);
    `len()` counts the live documents, `id_bound` is one past the largest id ever added."""

    kind = KIND

    def __init__(self, segment_kind: str, params: dict[str, Any] | None = None, dim: int = 0) -> None:
        if segment_kind not in SEGMENT_KINDS:
            raise ValueError(f"segments are one of {', '.join(SEGMENT_KINDS)}, not {segment_kind!r}")
        self.segment_kind = segment_kind
        self.params = {k: v for k, v in (params or {}).items() if k != "layout"}  # build parameters
        self.segments: list[Any] = []
        self.ids: list[np.ndarray] = []  # per segment: its documents' ids, ascending
        self.dead: list[np.ndarray] = []  # per segment: tombstones over its rows
        self.sources: list[Path | None] = []  # per segment: a directory holding it unchanged, if any
        self.id_bound = 0
        self._dim = int(dim)
        self.path: Path | None = None

    @classmethod
    def wrap(cls, index: Any, source: str | Path | None = None) -> "SegmentedIndex":
        """A growable index whose one segment is `index` (exact or Seismic), ids 0..n-1;
        `source`: the directory `index` was loaded from (its files are linked, not rewritten)."""
        grown = cls(index.kind, getattr(index, "params", None), index.dim)
        grown._append(index, np.arange(len(index), dtype=np.int64), None if source is None else Path(source))
        return grown

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return sum(self._live(i) for i in range(len(self.segments)))

    @property
    def nnz(self) -> int:
        """Components stored in the segments (deleted documents' included, until merged)."""
        return int(sum(s.stats()["nnz"] if s.kind == "seismic" else len(s.list_docs) for s in self.segments))

    def live_ids(self) -> np.ndarray:
        """The ids of the live documents, ascending."""
        return np.sort(np.concatenate([ids[~dead] for ids, dead in zip(self.ids, self.dead)] or [np.zeros(0, np.int64)]))

    # ---- growth -----------------------------------------------------------------------

    def _append(self, segment: Any, ids: np.ndarray, source: Path | None = None) -> None:
        self.segments.append(segment)
        self.ids.append(ids)
        self.dead.append(np.zeros(len(ids), np.bool_))
        self.sources.append(source)
        self._dim = max(self._dim, segment.dim)
        if len(ids):
            self.id_bound = max(self.id_bound, int(ids[-1]) + 1)

    def _build(self, vectors: SparseVectors) -> Any:
        cls = index_class(self.segment_kind)
        return cls.build(vectors, **self.params) if self.segment_kind == "seismic" else cls.build(vectors)

    def add(self, vectors: SparseVectors, ids: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Index `vectors` as a new segment under `ids` (default: `id_bound` onwards); returns
        the ids. An id may not be live already (`ValueError`): delete it first to replace it."""
        n = len(vectors)
        ids = np.arange(self.id_bound, self.id_bound + n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64).reshape(-1)
        if len(ids) != n:
            raise ValueError(f"{n} vectors but {len(ids)} ids")
        if n == 0:
            return ids
        if ids.min() < 0:
            raise ValueError("document ids must be >= 0")
        order = np.argsort(ids, kind="stable")
        if np.any(np.diff(ids[order]) == 0):
            raise ValueError("the ids added are not unique")
        live = np.intersect1d(ids, self.live_ids())
        if len(live):
            raise ValueError(f"{len(live)} ids are already in the index (first: {live[0]}); delete them first")
        self._append(self._build(take_rows(vectors, order)), ids[order])
        self._auto_merge()
        return ids

    def delete(self, ids: Sequence[int] | np.ndarray) -> int:
        """Mark the live documents among `ids` deleted; returns how many were."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        deleted = 0
        for seg_ids, dead in zip(self.ids, self.dead):
            hit = np.isin(seg_ids, ids) & ~dead
            dead |= hit
            deleted += int(np.count_nonzero(hit))
        if deleted:
            self._auto_merge()
        return deleted

    def _merge(self, which: list[int]) -> None:
        """Replace the segments `which` by one built from their live documents (none: dropped)."""
        parts, ids = [], []
        for i in which:
            live = np.flatnonzero(~self.dead[i])
            parts.append(take_rows(self.segments[i].forward_vectors(), live))
            ids.append(self.ids[i][live])
        all_ids = np.concatenate(ids)
        order = np.argsort(all_ids, kind="stable")
        keep = [i for i in range(len(self.segments)) if i not in which]
        self.segments = [self.segments[i] for i in keep]
        self.ids = [self.ids[i] for i in keep]
        self.dead = [self.dead[i] for i in keep]
        self.sources = [self.sources[i] for i in keep]
        if len(all_ids):
            merged = take_rows(SparseVectors.concatenate(parts, dim=self.dim), order)
            self._append(self._build(merged), all_ids[order])

    def _live(self, i: int) -> int:
        return len(self.ids[i]) - int(np.count_nonzero(self.dead[i]))

    def _auto_merge(self) -> None:
        """The size rule of the module docstring."""
        for i in reversed(range(len(self.segments))):
            if np.count_nonzero(self.dead[i]) >= max(1, REWRITE_DELETED * len(self.ids[i])):
                self._merge([i])
        while len(self.segments) >= 2 and self._live(len(self.segments) - 2) < MERGE_FACTOR * self._live(len(self.segments) - 1):
            self._merge([len(self.segments) - 2, len(self.segments) - 1])

    def merge(self) -> None:
        """Merge every segment into one holding only the live documents."""
        if len(self.segments) > 1 or any(dead.any() for dead in self.dead):
            self._merge(list(range(len(self.segments))))

    # ---- search -----------------------------------------------------------------------

    def search(
        self, queries: SparseVectors, k: int = 10, *, threads: int = 1, filter: np.ndarray | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k document ids and scores per query, `(int64[n, k], float32[n, k])`, padded
        with -1 / -inf; `filter` (`protocol.FILTER_DOC`) is over ids `0 .. id_bound - 1`;
        `params` go to the segments' own search (Seismic's knobs)."""
        from lsr.indexer.sharded import merge_top_k

        allowed = filter_mask(filter, self.id_bound)
        k = clamp_k(k, len(self))
        n = len(queries)
        ids_out = np.full((n, k), -1, np.int64)
        scores_out = np.full((n, k), -np.inf, np.float32)
        if n == 0 or k == 0:
            return ids_out, scores_out
        parts = []
        for segment, ids, dead in zip(self.segments, self.ids, self.dead):
            local = ~dead if dead.any() else None
            if allowed is not None:
                local = allowed[ids] if local is None else local & allowed[ids]
            if local is not None and not local.any():
                continue
            rows, scores = segment.search(queries, k=min(k, len(segment)), threads=threads, filter=local, **params)
            parts.append((np.where(rows >= 0, ids[np.maximum(rows, 0)], -1), scores))
        if parts:
            ids, scores = merge_top_k(np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1), k)
            ids_out[:, : ids.shape[1]], scores_out[:, : ids.shape[1]] = ids, scores
        return ids_out, scores_out

    def forward_vectors(self) -> SparseVectors:
        """Row i is document id i's vector (empty for deleted and unused ids)."""
        parts, ids = [], []
        for segment, seg_ids, dead in zip(self.segments, self.ids, self.dead):
            live = np.flatnonzero(~dead)
            parts.append(take_rows(segment.forward_vectors(), live))
            ids.append(seg_ids[live])
        all_ids = np.concatenate(ids or [np.zeros(0, np.int64)])
        vectors = take_rows(SparseVectors.concatenate(parts, dim=self.dim), np.argsort(all_ids, kind="stable"))
        lengths = np.zeros(self.id_bound, np.int64)
        lengths[np.sort(all_ids)] = np.diff(vectors.indptr)
        indptr = np.zeros(self.id_bound + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return SparseVectors(indptr, vectors.indices, vectors.values, self.dim)

    def check_values(self, full: bool = False) -> None:
        for segment in self.segments:
            segment.check_values(full=full)
        if full and self.path is not None:
            for i in range(len(self.segments)):
                read_manifest(self.path / _segment_name(i), verify=True)

    # ---- persistence ------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """A new generation of `path`: segments already on disk are hard-linked, new ones saved,
        then ids, tombstones and the manifest; the old generation stays whole until the swap."""
        path = Path(path)
        names = [_segment_name(i) for i in range(len(self.segments))]
        with atomic_directory(path) as tmp:
            entries = []
            for name, segment, ids, dead, source in zip(names, self.segments, self.ids, self.dead, self.sources):
                try:
                    if source is None:
                        raise FileNotFoundError
                    link_tree(source, tmp / name)
                except OSError:
                    shutil.rmtree(tmp / name, ignore_errors=True)
                    segment.save(tmp / name)
                save_array(tmp / f"{name}.ids.npy", ids)
                save_array(tmp / f"{name}.deleted.npy", dead)
                entries.append({"path": name, "kind": segment.kind, "n_docs": len(ids), "manifest_sha256": _digest(tmp / name)})
            write_manifest(
                tmp, KIND, skip_subdirectories=names, n_docs=len(self), dim=self.dim, id_bound=self.id_bound,
                segment_kind=self.segment_kind, params=self.params, segments=entries,
            )  # fmt: skip
        self.sources = [path / name for name in names]

    @classmethod
    def load(cls, path: str | Path) -> "SegmentedIndex":
        """Open a saved segmented index: each segment (memory-mapped) checked against the digest
        in the manifest, its ids ascending and below `id_bound`, one tombstone per document."""
        path = Path(path)
        manifest = read_manifest(path)
        check_kind(path, manifest, KIND)
        entries, id_bound = manifest.get("segments"), manifest.get("id_bound")
        if not isinstance(entries, list) or not isinstance(id_bound, int) or manifest.get("segment_kind") not in SEGMENT_KINDS:
            raise damaged(path / MANIFEST, "segment fields missing or of the wrong type")
        index = cls(manifest["segment_kind"], manifest.get("params") or {}, manifest.get("dim", 0))
        for i, entry in enumerate(entries):
            name = _segment_name(i)
            if not isinstance(entry, dict) or entry.get("path") != name or entry.get("kind") not in SEGMENT_KINDS:
                raise damaged(path / MANIFEST, f"bad segment entry {entry!r}")
            where = path / name
            try:
                if _digest(where) != entry.get("manifest_sha256"):
                    raise damaged(where / MANIFEST, "does not match the segmented manifest's checksum")
            except OSError:
                raise damaged(where, "segment missing") from None
            segment = index_class(entry["kind"], where).load(where)
            a = load_arrays(path, [f"{name}.ids", f"{name}.deleted"], dtypes={f"{name}.ids": ("int64",), f"{name}.deleted": ("bool",)})
            ids, dead = np.asarray(a[f"{name}.ids"]), np.array(a[f"{name}.deleted"])  # tombstones: a private, writable copy
            if len(ids) != len(segment) or len(dead) != len(segment):
                raise damaged(path / f"{name}.ids.npy", f"{len(ids)} ids and {len(dead)} tombstones for {len(segment)} documents")
            if len(ids) and (ids[0] < 0 or ids[-1] >= id_bound or np.any(np.diff(ids) <= 0)):
                raise damaged(path / f"{name}.ids.npy", f"ids not ascending in [0, {id_bound})")
            index._append(segment, ids, where)
            index.dead[-1] = dead
        index.id_bound = id_bound
        if len(index) != manifest["n_docs"]:
            raise damaged(path / MANIFEST, f"{len(index)} live documents, the manifest says {manifest['n_docs']}")
        index.path = path
        return index
