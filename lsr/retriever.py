"""`Retriever`: corpus → encoder → index → an index directory; queries → ranked hits.

An index directory holds `manifest.json` (format, encoder spec, counts), `encoder/` (what
the query side needs), `docs/` (the document store) and `index/` (the sparse index with
its own manifest). It is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import logging
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.corpus import CorpusReader, join_title
from lsr.docstore import DocStore, DocStoreWriter
from lsr.encoders import Encoder, from_spec, resolve_model
from lsr.errors import LsrError
from lsr.fields import FIELDS_DIR, FieldsWriter
from lsr.formats.spill import VectorSpill
from lsr.indexer.protocol import Index, load as load_index
from lsr.indexer.storage import (
    Generation,
    IndexFormatError,
    atomic_directory,
    check_target,
    damaged,
    open_generation,
    read_manifest,
    write_manifest,
)
from lsr.progress import Progress
from lsr.sparse import SparseVectors

log = logging.getLogger(__name__)
KIND = "retriever"
# Below this many documents `index="auto"` builds the exact index: it is fast enough there
# and returns the true top-k. Above, the Seismic approximate index.
SEISMIC_THRESHOLD = 100_000
INDEX_TYPES = ("auto", "exact", "seismic")
SPILL_DIR = "spill"  # the encoded vectors while a build runs (inside its temporary folder)


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    title: str
    text: str


@dataclass
class BuildReport:
    """What a build did: counts, skipped records, timings."""

    n_docs: int = 0
    skipped: list[str] | None = None
    ignored_files: int = 0
    seconds: float = 0.0
    index_kind: str = ""
    replaced: int = 0  # append: documents whose id was already in the index

    @property
    def docs_per_second(self) -> float:
        return self.n_docs / self.seconds if self.seconds else 0.0


def _encode_documents(
    reader: CorpusReader, run: Any, batch_size: int, progress: Progress | None, spill: VectorSpill | None = None
):
    """Each document of `reader`, yielded before its text goes to the encoder's document pass
    `run` in batches of `batch_size` (the last one when the reader ends), with progress by bytes
    read and documents seen: the one corpus loop of `build` and `append`. With `spill` (a
    `lsr.formats.spill.VectorSpill`), the vectors the pass has ready go there after each batch."""
    batch: list[str] = []
    n = 0
    for doc in reader:
        yield doc
        n += 1
        batch.append(doc.full_text())
        if len(batch) == batch_size:
            _add_batch(run, batch, spill)
            batch = []
            if progress:
                progress("indexing", reader.bytes_read, reader.bytes_total, docs=n)
    if batch:
        _add_batch(run, batch, spill)
    if progress:
        progress("indexing", reader.bytes_total, reader.bytes_total, docs=n)


def _add_batch(run: Any, texts: list[str], spill: VectorSpill | None) -> None:
    """One batch to the pass; what it has ready to the spill."""
    run.add(texts)
    if spill is not None:
        for chunk in run.ready():
            spill.add(chunk)


def _build_dense(tmp: Path, model: str, batch_size: int) -> dict[str, Any]:
    """Embed the documents already in `tmp/docs` (title + text) into `tmp/dense`; the spec."""
    from lsr.dense import DENSE_DIR, DenseEncoder, write_embeddings

    docs = DocStore(tmp / "docs")
    texts = (join_title(docs.title(r), docs.text(r)) for r in range(len(docs)))
    return write_embeddings(tmp / DENSE_DIR, DenseEncoder(model), texts, len(docs), batch_size=batch_size)


class Retriever:
    """Search a built index by text: `Retriever.build(corpus, ...)` or `Retriever.load(path)`."""

    def __init__(self, path: Path, encoder: Encoder, index: Index, docs: DocStore, manifest: dict[str, Any]) -> None:
        self.path, self.encoder, self.index, self.docs, self.manifest = path, encoder, index, docs, manifest
        self.last_build: BuildReport | None = None
        self._generation: Generation | None = None

    def __len__(self) -> int:
        """The documents searched (deleted ones stay in the document store, unsearched)."""
        return int(self.manifest.get("n_live", self.manifest["n_docs"]))

    # ---- building ---------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        corpus_path: str | Path,
        model: str | Encoder | None = "bm25",
        path: str | Path = ".lsr",
        batch_size: int = 32,
        max_length: int = 256,
        skip_bad: bool = False,
        progress: Progress | None = None,
        index: str = "auto",
        seismic: dict[str, Any] | None = None,
        dense: str | None = None,
        keep_fields: Sequence[str] = (),
    ) -> "Retriever":
        """Encode and index every document under `corpus_path` into the directory `path`.

        `index`: "exact", "seismic", or "auto" (Seismic from `SEISMIC_THRESHOLD` documents
        on); `seismic`: build parameters of `SeismicIndex.build`; `dense`: also embed every
        document with this sentence-transformers model ("minilm": the packaged
        all-MiniLM-L6-v2) into `dense/` (see `lsr.dense`); `keep_fields`: fields of the
        corpus's JSONL records stored for filtered search (`lsr.fields`, `search(filter=...)`).
        `progress("indexing", bytes_read, bytes_total, docs=documents_so_far)`
        (`lsr.progress.Progress`) is called after each batch. The previous index at `path`,
        if any, stays intact until the new one is complete; anything at `path` that is not
        an lsr index or an empty folder, or a `path` inside the corpus (or around it), is
        refused (`LsrError`) before anything is written.
        """
        if index not in INDEX_TYPES:
            raise LsrError(f"unknown index type {index!r} (expected one of {', '.join(INDEX_TYPES)})")
        reader = CorpusReader(corpus_path, skip_bad=skip_bad)
        path = Path(path)
        protect = (Path(corpus_path),)
        check_target(path, protect)  # before loading a model: refuse early
        encoder = model if isinstance(model, Encoder) else resolve_model(model)
        start = time.perf_counter()  # after the encoder: a model's loading is not indexing time
        # a rough size for "no space left" messages: the texts once, the index about as much
        with atomic_directory(path, protect, expected_bytes=2 * reader.bytes_total) as tmp:
            docs = DocStoreWriter(tmp / "docs")
            fields = FieldsWriter(keep_fields)
            run = encoder.document_pass(batch_size=batch_size, max_length=max_length)
            # the vectors go to disk as they are encoded, inside the temporary folder (removed
            # with it on failure); the index is built from them memory-mapped
            spill = VectorSpill(tmp / SPILL_DIR)
            compiling = None  # Seismic's kernels compile (a thread, a child process) while the documents encode
            for doc in _encode_documents(reader, run, batch_size, progress, spill):
                docs.add(doc.doc_id, doc.title, doc.text, doc.where)
                fields.add(doc.record)
                if compiling is None and (index == "seismic" or (index == "auto" and len(docs) == SEISMIC_THRESHOLD)):
                    from lsr.indexer import precompile

                    compiling = precompile.start(encoder.dim, (seismic or {}).get("values", "float16"))
            if len(docs) == 0:
                raise LsrError(f"{corpus_path}: no documents to index")
            docs.close()
            fields.save(tmp / FIELDS_DIR)
            for chunk in run.chunks():  # what the pass held back (BM25: every vector, weighed now)
                spill.add(chunk)
            spill.dim = max(spill.dim, run.encoder.dim)
            vectors = spill.vectors()
            if compiling is not None:
                compiling.wait_build()  # its first kernels come from the cache, not compiled twice
            built = cls._build_index(vectors, index, seismic or {})
            dim, nnz = vectors.dim, vectors.nnz
            del vectors
            if compiling is not None:
                compiling.join()
            built.save(tmp / "index")
            spill.remove()
            (tmp / "encoder").mkdir()
            encoder = run.encoder  # the query side of these vectors (BM25: fitted to this corpus)
            spec = encoder.save(tmp / "encoder")
            extra = {"dense": _build_dense(tmp, dense, batch_size)} if dense else {}
            write_manifest(
                tmp,
                KIND,
                encoder=spec,
                n_docs=len(docs),
                dim=dim,
                nnz=nnz,
                index_kind=built.kind,
                corpus=str(Path(corpus_path).absolute()),
                skipped=len(reader.skipped),
                skip_subdirectories=["index"],
                fields=fields.names,
                **extra,
            )
        retriever = cls.load(path, encoder=encoder)  # the index from disk, the model already in memory
        retriever.warm_up()
        retriever.last_build = BuildReport(
            n_docs=len(docs),
            skipped=reader.skipped,
            ignored_files=len(reader.ignored_files),
            seconds=time.perf_counter() - start,
            index_kind=built.kind,
        )
        return retriever

    @staticmethod
    def _build_index(vectors: SparseVectors, index: str, seismic: dict[str, Any]) -> Index:
        """An exact or Seismic index (by `index` and the number of documents) over `vectors`."""
        from lsr.indexer import ExactIndex

        if index == "exact" or (index == "auto" and len(vectors) < SEISMIC_THRESHOLD):
            return ExactIndex.build(vectors)
        from lsr.indexer.seismic import SeismicIndex

        return SeismicIndex.build(vectors, **seismic)

    # ---- growing ----------------------------------------------------------------------

    def _growable(self, action: str):
        """This index's sparse index as a `SegmentedIndex` read from its own generation (an
        exact or Seismic one wrapped, its files linked when saved), or `LsrError` why not."""
        from lsr.indexer.segmented import SEGMENT_KINDS, SegmentedIndex

        if "dense" in self.manifest:
            raise LsrError(f"{self.path}: cannot {action} an index with a dense part (--dense); rebuild it")
        root = self._generation.root if self._generation else self.path
        index = load_index(root / "index")
        if index.kind == "segmented":
            return index
        if index.kind not in SEGMENT_KINDS:
            raise LsrError(f"{self.path}: cannot {action} a {index.kind} index; rebuild it")
        return SegmentedIndex.wrap(index, source=root / "index")

    def _live_rows(self, index) -> dict[str, int]:
        """Document id → row of every live document."""
        rows = index.live_ids()
        return dict(zip(self.docs.all_ids()[rows].tolist(), rows.tolist()))

    def _write_generation(self, index, new_docs=None, fields=None, compact_docs: bool = False) -> "Retriever":
        """A new generation of this index directory: encoder and document store linked, with
        `new_docs` (id, title, text, where) written as a new part of the store (or, with
        `compact_docs`, every part copied into one); kept fields written; `index` saved (its
        unchanged segments linked). Returns a Retriever on it."""
        from lsr.docstore import part_name
        from lsr.indexer.segmented import link_tree

        root = self._generation.root if self._generation else self.path
        with atomic_directory(self.path) as tmp:
            link_tree(root / "encoder", tmp / "encoder")
            if compact_docs:
                writer = DocStoreWriter(tmp / "docs")
                writer.copy_from(self.docs)
                writer.close()
            else:
                link_tree(root / "docs", tmp / "docs")
            if new_docs:
                writer = DocStoreWriter(tmp / "docs" / part_name(self.docs.n_parts))
                for doc in new_docs:
                    writer.add(*doc)
                writer.close()
            if fields is not None:
                fields.save(tmp / FIELDS_DIR)
            elif (root / FIELDS_DIR).is_dir():
                link_tree(root / FIELDS_DIR, tmp / FIELDS_DIR)
            index.save(tmp / "index")
            keep = {k: v for k, v in self.manifest.items() if k not in ("format", "format_version", "kind", "created", "files")}
            write_manifest(
                tmp, KIND, skip_subdirectories=["index"], linked_from=(root, self.manifest),
                **{**keep, "n_docs": index.id_bound, "n_live": len(index), "nnz": index.nnz, "dim": index.dim,
                   "index_kind": index.kind},
            )  # fmt: skip
        return type(self).load(self.path, encoder=self.encoder)

    def append(
        self,
        corpus_path: str | Path,
        batch_size: int = 32,
        max_length: int = 256,
        skip_bad: bool = False,
        progress: Progress | None = None,
    ) -> "Retriever":
        """Encode the documents under `corpus_path` with this index's encoder and add them as a
        new segment (`lsr.indexer.segmented`), without rebuilding the rest; a document whose
        id is already in the index replaces it. Returns a Retriever on the new generation of
        the directory (written atomically; this one keeps reading the old). A BM25 index
        cannot grow (its weights depend on the whole corpus's statistics): rebuild it."""
        from lsr.encoders.bm25 import Bm25Encoder
        from lsr.fields import read_raw_columns

        if isinstance(self.encoder, Bm25Encoder):
            raise LsrError(f"{self.path}: a bm25 index cannot grow (its weights depend on the whole corpus); rebuild it with lsr index")
        reader = CorpusReader(corpus_path, skip_bad=skip_bad)
        check_target(self.path, (Path(corpus_path),))
        start = time.perf_counter()
        index = self._growable("add to")
        live = self._live_rows(index)
        root = self._generation.root if self._generation else self.path
        names = self.manifest.get("fields", [])
        fields = FieldsWriter(names, read_raw_columns(root / FIELDS_DIR, names, len(self.docs))) if names else None
        run = self.encoder.document_pass(batch_size=batch_size, max_length=max_length)
        new_docs, seen = [], {}
        for doc in _encode_documents(reader, run, batch_size, progress):
            if doc.doc_id in seen:
                raise LsrError(f"{doc.where}: duplicate document id {doc.doc_id!r} (first at {seen[doc.doc_id]})")
            seen[doc.doc_id] = doc.where
            new_docs.append((doc.doc_id, doc.title, doc.text, doc.where))
            if fields:
                fields.add(doc.record)
        if not new_docs:
            raise LsrError(f"{corpus_path}: no documents to add")
        replaced = [live[d[0]] for d in new_docs if d[0] in live]
        index.delete(replaced)
        index.add(run.finish(), ids=np.arange(len(self.docs), len(self.docs) + len(new_docs)))
        retriever = self._write_generation(index, new_docs, fields)
        retriever.last_build = BuildReport(
            n_docs=len(new_docs), skipped=reader.skipped, ignored_files=len(reader.ignored_files),
            seconds=time.perf_counter() - start, index_kind=index.kind, replaced=len(replaced),
        )  # fmt: skip
        return retriever

    def delete(self, doc_ids: Sequence[str]) -> "Retriever":
        """Delete the documents `doc_ids` (tombstones; `lsr.indexer.segmented`); an id not in
        the index is an `LsrError` naming it, and nothing is deleted. Returns a Retriever on
        the new generation of the directory (written atomically)."""
        index = self._growable("delete from")
        live = self._live_rows(index)
        missing = [d for d in dict.fromkeys(doc_ids) if d not in live]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise LsrError(f"{self.path}: no document {', '.join(map(repr, missing[:5]))}{more} in the index; nothing deleted")
        index.delete([live[d] for d in doc_ids])
        return self._write_generation(index)

    def merge(self) -> "Retriever":
        """Merge a grown index's segments into one holding only the live documents (searches
        get faster) and the document store's parts into one (the store keeps deleted
        documents' rows until a rebuild: rows are the index's document ids)."""
        index = self._growable("merge")
        index.merge()
        return self._write_generation(index, compact_docs=self.docs.n_parts > 1)

    @classmethod
    def load(
        cls, path: str | Path = ".lsr", exact: bool = False, encoder: Encoder | None = None,
        ray: str | None = None, actors: int | None = None,
    ) -> "Retriever":  # fmt: skip
        """Open an index directory written by `build` (arrays are memory-mapped).

        `encoder`: the query encoder to use, one equal to the index's (as `build` passes the
        encoder it indexed with); by default it is rebuilt from the index's spec.

        `exact=True` answers with exact top-k even when the index is approximate (Seismic):
        its forward index is inverted in memory at load time. Everything is read from one
        generation of the directory, even while a rebuild replaces it: the directory is
        opened once and read through that handle (kept open while the Retriever or its
        encoder lives).

        `ray`: search a sharded index (`lsr index --ray`) in Ray actors, each holding a group of
        shards, instead of local threads: the cluster's address ("local", "auto", "HOST:PORT",
        "ray://HOST:10001"; `lsr.shards.connect`), `actors` of them (default one per shard).
        Same results; another kind of index, or `exact`, is an `LsrError` (docs/scale.md).
        """
        if ray is not None and exact:
            raise LsrError("--exact cannot be combined with --ray (build the shards with --index-type exact instead)")
        if actors is not None and ray is None:
            raise LsrError("--actors needs --ray ADDRESS ('local' for a cluster on this machine)")
        path = Path(path)
        for attempt in range(5):
            handle = open_generation(path)
            try:
                retriever = cls._load(path, handle.root, exact, encoder)
            except (LsrError, OSError) as err:
                handle.close()
                if attempt < 4 and handle.replaced():  # the old generation was deleted under us
                    continue
                if isinstance(err, OSError):
                    err = LsrError(f"{path}: cannot read the index ({err.strerror or err})")
                raise LsrError(str(err).replace(str(handle.root), str(path))) from None
            # the handle closes when neither the Retriever nor its encoder (whose files may be
            # read again, e.g. when saved elsewhere) holds it any more
            retriever._generation = handle
            if encoder is None:  # the encoder was read from this generation
                with contextlib.suppress(AttributeError):
                    retriever.encoder._lsr_generation = handle
            if ray is not None:
                from lsr.shards import search_on_ray

                retriever.index = search_on_ray(retriever.index, ray, actors)
            return retriever
        raise AssertionError("unreachable")

    @classmethod
    def _load(cls, path: Path, root: Path, exact: bool, encoder: Encoder | None = None) -> "Retriever":
        manifest = read_manifest(root)
        if manifest["kind"] != KIND:
            raise IndexFormatError(f"{root}: a bare {manifest['kind']} index, not a retriever index")
        if not isinstance(manifest.get("encoder"), dict):
            raise damaged(root / "manifest.json", "no encoder spec")
        index = load_index(root / "index", exact=exact)
        docs = DocStore(root / "docs", manifest["n_docs"])
        rows = getattr(index, "id_bound", len(index))  # a segmented index's ids are the store's rows
        if rows != manifest["n_docs"]:
            raise damaged(root / "index" / "manifest.json", f"{rows} documents, the index has {manifest['n_docs']}")
        try:
            encoder = encoder or from_spec(manifest["encoder"], root / "encoder")
        except (OSError, ValueError, KeyError, TypeError) as err:  # damaged spec or encoder files
            raise damaged(root / "encoder", f"cannot rebuild the query encoder ({err})") from None
        index.path, docs.directory = path / "index", path / "docs"  # for messages
        return cls(path, encoder, index, docs, manifest)

    def verify(self) -> int:
        """Check every file against its sha256 in the manifests and every array value the
        searches use as a position (reads the whole index); returns the number of files
        checked. Raises `LsrError` naming the first damaged file."""
        root = self._generation.root if self._generation else self.path
        try:
            files = sum(len(read_manifest(d, verify=True)["files"]) for d in (root, root / "index"))
        except LsrError as err:
            raise LsrError(str(err).replace(str(root), str(self.path))) from None
        self.index.check_values(full=True)
        return files

    def warm_up(self) -> None:
        """Compile (and cache on disk) the one-query search code (`search`, `lsr search`, `lsr
        serve`) now rather than at the first query. The parallel batch code is left to its
        first batch (`lsr eval`): compiling it here would cost every build seconds."""
        self._search(self.encoder.encode_queries([""]), 1, 1, {})

    # ---- searching --------------------------------------------------------------------

    def _search(self, vectors: SparseVectors, k: int, threads: int, options: dict[str, Any]):
        if options.get("filter") is not None:
            options = {**options, "filter": self.filter_mask(options["filter"])}
        return self.index.search(vectors, k=k, threads=threads, **options)

    @property
    def columns(self) -> dict[str, Any]:
        """The fields kept at indexing (`lsr.fields.Column` by name), read once."""
        if getattr(self, "_columns", None) is None:
            from lsr.fields import read_columns

            root = self._generation.root if self._generation else self.path
            self._columns = read_columns(root / FIELDS_DIR, self.manifest.get("fields", []), len(self.docs))
        return self._columns

    def filter_mask(self, filter: Any) -> np.ndarray:
        """A search filter as a mask over the document rows: a `--where` predicate (a string,
        over the kept fields, `lsr.fields`), an iterable of document ids (strings), or a
        boolean mask over the rows (as it is)."""
        from lsr.fields import where_mask

        if isinstance(filter, str):
            return where_mask(filter, self.columns)
        if isinstance(filter, np.ndarray) and filter.dtype == np.bool_:
            return filter
        wanted = set(filter)
        bad = next((d for d in wanted if not isinstance(d, str)), None)
        if bad is not None:
            raise TypeError(f"a filter is a predicate string, document ids (strings) or a boolean mask, got {type(bad).__name__}")
        return np.fromiter((d in wanted for d in self.docs.all_ids()), np.bool_, len(self.docs))

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        """One query's rows and scores as hits (padding, row -1, dropped)."""
        return [
            Hit(self.docs.doc_id(r), float(s), self.docs.title(r), self.docs.text(r))
            for r, s in zip(rows, scores)
            if r >= 0
        ]

    def _doc_ids(self, rows: np.ndarray) -> list[list[str]]:
        """Per query the doc ids of its rows (padding, row -1, dropped)."""
        all_ids = self.docs.all_ids()
        return [all_ids[r[r >= 0]].tolist() for r in rows]

    def search(self, query: str, k: int = 10, mode: str = "sparse", **options: Any) -> list[Hit]:
        """The k best documents for one query, best first, with title and text for display.

        `options` go to an approximate index's search (`query_cut`, `heap_factor`); `mode`
        ("sparse", "dense", "fused") and the fusion/PRF keywords of `search_rows` go there."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        if mode != "sparse" or options.keys() & ROW_OPTIONS:
            return self.search_mode(query, k, mode=mode, **options)
        rows, scores = self._search(self.encoder.encode_queries([query]), k, 1, options)
        return self._hits(rows[0], scores[0])

    def search_batch(
        self, queries: Sequence[str] | SparseVectors, k: int = 100, threads: int = 0, **options: Any
    ) -> tuple[list[list[str]], np.ndarray]:
        """Search many queries (texts, or vectors already encoded) in parallel threads.

        Returns `(ids, scores)`: per query the list of the corpus's doc ids (shorter than k
        when fewer documents match) and a float32 `[n, k]` array (-inf where no hit; k is
        capped at the number of documents).
        """
        if isinstance(queries, (str, bytes)):
            raise TypeError("search_batch takes a list of query strings, not one string (use search)")
        if not isinstance(queries, SparseVectors):
            queries = list(queries)
            bad = next((q for q in queries if not isinstance(q, str)), "")
            if not isinstance(bad, str):
                raise TypeError(f"queries must be strings, got a {type(bad).__name__}")
        vectors = queries if isinstance(queries, SparseVectors) else self.encoder.encode_queries(queries)
        rows, scores = self._search(vectors, k, threads, options)
        return self._doc_ids(rows), scores

    # ---- dense, fused and feedback search (lsr.dense, lsr.fusion, lsr.prf) -------------

    @property
    def dense_index(self):
        """The `DenseIndex` stored beside the sparse one (`lsr index --dense`), or None."""
        if "dense" not in self.manifest:
            return None
        if getattr(self, "_dense", None) is None:
            from lsr.dense import DenseIndex

            self._dense = DenseIndex.load(self.path, self.manifest["dense"])
        return self._dense

    def forward_vectors(self) -> SparseVectors:
        """Every document's sparse vector (CSR rows), built from the index once, for PRF."""
        if getattr(self, "_forward", None) is None:
            self._forward = self.index.forward_vectors()
        return self._forward

    def search_rows(
        self,
        queries: Sequence[str],
        k: int = 10,
        mode: str = "sparse",
        alpha: float = 0.5,
        fusion: str = "interp",
        norm: str = "minmax",
        prf: Any = None,
        depth: int | None = None,
        threads: int = 0,
        **options: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search texts in `mode` sparse, dense or fused: `(rows int64[n, k], scores float32[n, k])`.

        fused: the sparse and the dense top-`depth` (default max(k, 100)) fused by `fusion`
        (`interp`: `alpha·norm(sparse) + (1−alpha)·norm(dense)`, `rrf`), see `lsr.fusion`.
        `prf` (an `lsr.prf.Prf`): a second round with feedback from the first round's hits,
        for the sparse and the dense side each."""
        from lsr.prf import Prf

        if mode not in MODES:
            raise LsrError(f"unknown search mode {mode!r} (expected one of {', '.join(MODES)})")
        prf = prf or Prf()
        if mode == "sparse":
            return self.sparse_rows(queries, k, prf, threads, **options)
        if options.get("filter") is not None:
            raise LsrError(f"filters apply to sparse search only, not mode {mode!r}")
        if self.dense_index is None:
            raise LsrError(f"{self.path}: no dense index here (build it with `lsr index CORPUS --dense minilm`)")
        if mode == "dense":
            return self.dense_rows(queries, k, prf)
        depth = max(k, 100) if depth is None else depth
        sparse = self.sparse_rows(queries, depth, prf, threads, **options)
        dense = self.dense_rows(queries, depth, prf)
        return fuse_rows(sparse, dense, self.docs.all_ids(), k, fusion, alpha, norm)

    def sparse_rows(self, queries: Sequence[str], k: int, prf: Any = None, threads: int = 0, **options: Any):
        """Sparse `(rows, scores)` for texts, with a PRF round when `prf` is enabled."""
        from lsr.prf import Prf

        prf = prf or Prf()
        vectors = self.encoder.encode_queries(list(queries))
        rows, scores = self._search(vectors, k, threads, options)
        if prf.enabled:
            from lsr.prf import expand_sparse

            first = rows if k >= prf.docs else self._search(vectors, prf.docs, threads, options)[0]
            vectors = expand_sparse(vectors, first, self.forward_vectors(), prf)
            rows, scores = self._search(vectors, k, threads, options)
        return rows, scores

    def dense_rows(self, queries: Sequence[str], k: int, prf: Any = None):
        """Dense `(rows, scores)` for texts, with a Rocchio round when `prf` is enabled."""
        from lsr.prf import Prf

        prf = prf or Prf()
        dense = self.dense_index
        if dense is None:
            raise LsrError(f"{self.path}: no dense index here (build it with `lsr index CORPUS --dense minilm`)")
        vectors = dense.encode_queries(list(queries))
        rows, scores = dense.search(vectors, max(k, prf.docs) if prf.enabled else k)
        if prf.enabled:
            from lsr.prf import expand_dense

            rows, scores = dense.search(expand_dense(vectors, rows, dense.embeddings, prf), k)
        return rows[:, :k], scores[:, :k]

    def search_mode(self, query: str, k: int = 10, mode: str = "sparse", **kwargs: Any) -> list[Hit]:
        """`search` in any mode (see `search_rows` for the keyword arguments)."""
        rows, scores = self.search_rows([query], k, mode=mode, threads=1, **kwargs)
        return self._hits(rows[0], scores[0])

    def search_batch_mode(
        self, queries: Sequence[str], k: int = 100, mode: str = "sparse", **kwargs: Any
    ) -> tuple[list[list[str]], np.ndarray]:
        """`search_batch` in any mode (see `search_rows`): per query its doc ids, and scores `[n, k]`."""
        rows, scores = self.search_rows(queries, k, mode=mode, **kwargs)
        return self._doc_ids(rows), scores


MODES = ("sparse", "dense", "fused")
ROW_OPTIONS = {"alpha", "fusion", "norm", "prf", "depth"}


def fuse_rows(
    sparse: tuple[np.ndarray, np.ndarray],
    dense: tuple[np.ndarray, np.ndarray],
    all_ids: np.ndarray,
    k: int,
    method: str = "interp",
    alpha: float = 0.5,
    norm: str = "minmax",
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse two `(rows, scores)` results query by query into the top k (`lsr.fusion`; ties:
    document id descending, `all_ids[row]` the document ids)."""
    from lsr.fusion import fuse_hits, ranked

    n = len(sparse[0])
    rows = np.full((n, k), -1, np.int64)
    scores = np.full((n, k), -np.inf, np.float32)
    for i in range(n):
        runs, row_of = [], {}
        for r, s in (sparse, dense):
            keep = r[i] >= 0
            ids = all_ids[r[i][keep]].tolist()
            row_of.update(zip(ids, r[i][keep].tolist()))
            runs.append(dict(zip(ids, s[i][keep].tolist())))
        best = ranked(fuse_hits(runs, method, alpha, norm))[:k]
        rows[i, : len(best)] = [row_of[d] for d, _ in best]
        scores[i, : len(best)] = [v for _, v in best]
    return rows, scores
