"""Scale-out on Ray: encode a corpus on an actor pool and write a sharded index (docs/scale.md).

The driver reads the corpus with the same readers and error rules as `Retriever.build`
(`lsr.corpus`) and writes the document store; Ray Data hands blocks of documents to a pool
of encoding actors (the model loaded once per actor, one GPU each when the cluster has
GPUs); a dying actor is restarted and its block redone. Shard `i` gets the `i`-th contiguous
range of documents and is built as an ordinary exact or Seismic index by a Ray task. The
result is one index directory (`lsr.indexer.sharded`), written atomically: the encoder spec
and the document store once at the top level, the shards under `index/`.

BM25 needs the statistics of the whole corpus: the actors count terms per block, and the
driver numbers the terms in corpus order and weighs the counts with the global statistics,
so every vector equals a single-node build's.

Search: `RayShardedIndex` searches a sharded index in Ray actors, each holding a group of
shards, and merges their top k as `ShardedIndex` does (`Retriever.load(path, ray=ADDRESS)`).
"""

from __future__ import annotations

import copy
import logging
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsr.corpus import CorpusReader
from lsr.docstore import DocStoreWriter
from lsr.encoders import Encoder, load_encoder
from lsr.encoders.bm25 import Bm25Encoder, Bm25Pass
from lsr.errors import LsrError
from lsr.indexer.sharded import shard_name, shard_ranges, write_shard_manifest
from lsr.indexer.storage import atomic_directory, check_target, write_manifest
from lsr.progress import Progress
from lsr.sparse import SparseVectors

log = logging.getLogger(__name__)

# a Ray actor restarts this often after dying, and redoes the block it held as often
MAX_RESTARTS = 4


@dataclass
class ShardedBuildReport:
    """What a sharded build did: counts, timings, the cluster it ran on."""

    n_docs: int = 0
    n_shards: int = 0
    n_actors: int = 0
    gpus_per_actor: float = 0.0
    skipped: list[str] | None = None
    ignored_files: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0

    @property
    def docs_per_second(self) -> float:
        return self.n_docs / self.seconds if self.seconds else 0.0


class _EncodeActor:
    """One encoding actor of the pool: the encoder is unpickled (or loaded by name) once;
    each call encodes one block of documents into a pickled payload."""

    def __init__(self, encoder: Any, precision: str, batch_size: int, max_length: int) -> None:
        self.encoder = load_encoder(encoder, precision=precision) if isinstance(encoder, str) else encoder
        self.batch_size, self.max_length = batch_size, max_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = [pickle.dumps(self.encode(list(texts)), protocol=5) for texts in batch["texts"]]
        return {"start": np.asarray(batch["start"], np.int64), "payload": np.array(payloads, dtype=object)}

    def encode(self, texts: list[str]) -> Any:
        if isinstance(self.encoder, Bm25Encoder):  # term counts over this block's own term numbers
            blank = copy.copy(self.encoder)
            blank.vocab, blank.term_ids = [], {}
            run = Bm25Pass(blank)
            run.add(texts)
            counts, lengths = run.term_counts()
            return blank.vocab, counts, lengths
        # batch by batch as `Retriever.build` feeds the encoder (blocks start at a multiple of
        # batch_size): a model's numbers depend on the batch it runs in, so the vectors are the same
        run = self.encoder.document_pass(batch_size=self.batch_size, max_length=self.max_length)
        for i in range(0, len(texts), self.batch_size):
            run.add(texts[i : i + self.batch_size])
        return run.finish()


def _build_shard(vectors: SparseVectors, kind: str, seismic: dict[str, Any], directory: str) -> int:
    """A Ray task: one shard's index saved (atomically) into `directory`; its document count."""
    if kind == "exact":
        from lsr.indexer import ExactIndex

        index = ExactIndex.build(vectors)
    else:
        from lsr.indexer.seismic import SeismicIndex

        index = SeismicIndex.build(vectors, **seismic)
    index.save(directory)
    return len(index)


def _join_bm25(encoder: Bm25Encoder, blocks: list[tuple[list[str], SparseVectors, np.ndarray]]):
    """Per-block BM25 term counts → the corpus's counts over one vocabulary, numbered in
    corpus order (as a single-node pass numbers them); sets `encoder`'s vocabulary."""
    vocab, term_ids = encoder.vocab, encoder.term_ids
    parts, lengths = [], []
    for local_vocab, counts, block_lengths in blocks:
        mapping = np.fromiter((term_ids.setdefault(t, len(term_ids)) for t in local_vocab), np.int32, len(local_vocab))
        vocab.extend(local_vocab[i] for i in np.flatnonzero(mapping >= len(vocab)))
        rows = np.repeat(np.arange(len(counts), dtype=np.int64), np.diff(counts.indptr))
        indices = mapping[counts.indices]
        order = np.lexsort((indices, rows))  # columns ascending within a row again
        parts.append(SparseVectors(counts.indptr, indices[order], counts.values[order], len(term_ids)))
        lengths.append(block_lengths)
    counts = SparseVectors.concatenate(parts, dim=len(vocab))
    return counts, np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address` unless Ray is initialised already: "local" starts one
    on this machine (it stops with the process, or `ray.shutdown()`), "auto" joins the one this
    machine belongs to, "HOST:PORT" or "ray://HOST:10001" a remote one, None lets Ray choose
    (`$RAY_ADDRESS`, else the cluster last started here, else a local one). True when this
    call initialised Ray. Ray missing or an address Ray rejects is an `LsrError` (an
    unreachable one, Ray retries)."""
    try:
        import ray
    except ImportError:
        raise LsrError("--ray needs Ray: pip install 'lsr[ray]'") from None
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError) as err:
        raise LsrError(f"cannot join the Ray cluster at {address}: {err}") from None
    return True


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def build_sharded(
    corpus_path: str | Path,
    model: str | Encoder = "bm25",
    path: str | Path = ".lsr",
    shards: int | None = None,
    address: str | None = None,
    actors: int | None = None,
    block_docs: int = 1024,
    batch_size: int = 32,
    max_length: int = 256,
    skip_bad: bool = False,
    index: str = "auto",
    seismic: dict[str, Any] | None = None,
    precision: str = "fp32",
    progress: Progress | None = None,
    encoder: Encoder | None = None,
) -> ShardedBuildReport:
    """Encode every document under `corpus_path` on a Ray actor pool into a sharded index at `path`.

    `model`: an encoder, or a name each actor loads itself (`lsr.encoders.load_encoder`,
    at `precision`; on a GPU when the cluster has one); `encoder`: the driver's copy of that
    model when already loaded (it saves the query side). `shards`: default one per actor. `address`: the Ray cluster ("auto",
    "ray://host:10001"), None or "local" for a local one (started and stopped here unless Ray
    is already initialised). `actors`: encoding actors (default: one per GPU, else one per
    CPU of the cluster); `block_docs`: documents per block (the unit an actor encodes, and
    redoes after a failure; whole batches of `batch_size`, as a single-node build encodes them). `index`: each shard's kind, as in `Retriever.build`.
    `progress("indexing", docs_encoded, docs_total, docs=docs_encoded)` after each block
    (`lsr.progress.Progress`). The previous index
    at `path` stays intact until the whole sharded index is complete.
    """
    import ray

    from lsr.retriever import INDEX_TYPES, KIND, SEISMIC_THRESHOLD

    if index not in INDEX_TYPES:
        raise LsrError(f"unknown index type {index!r} (expected one of {', '.join(INDEX_TYPES)})")
    if shards is not None and shards < 1:
        raise LsrError(f"--shards must be at least 1, got {shards}")
    reader = CorpusReader(corpus_path, skip_bad=skip_bad)
    path, protect = Path(path), (Path(corpus_path),)
    check_target(path, protect)
    if encoder is None:
        encoder = load_encoder(model, precision=precision) if isinstance(model, str) else model
    started_here = connect(address)
    try:
        start = time.perf_counter()
        with atomic_directory(path, protect, expected_bytes=2 * reader.bytes_total) as tmp:
            docs = DocStoreWriter(tmp / "docs")
            texts: list[str] = []
            for doc in reader:
                docs.add(doc.doc_id, doc.title, doc.text, doc.where)
                texts.append(doc.full_text())
            n_docs = len(docs)
            if n_docs == 0:
                raise LsrError(f"{corpus_path}: no documents to index")
            docs.close()
            gpus = _cluster_gpus()
            n_actors = actors or int(gpus) or max(1, int(ray.cluster_resources().get("CPU", 1)))
            size = max(1, min(block_docs, -(-n_docs // n_actors)))  # every actor gets a block
            size = -(-size // batch_size) * batch_size  # whole batches, as a single-node build makes them
            blocks = [{"start": i, "texts": texts[i : i + size]} for i in range(0, n_docs, size)]
            del texts
            n_actors = min(n_actors, len(blocks))
            payloads = _encode_blocks(blocks, encoder, model, precision, batch_size, max_length, n_actors,
                                      1.0 if gpus else 0.0, n_docs, progress)  # fmt: skip
            encode_seconds = time.perf_counter() - start
            shard_vectors = _shard_vectors(encoder, payloads, n_docs, min(shards or n_actors, n_docs))
            kind = "exact" if index == "exact" or (index == "auto" and n_docs < SEISMIC_THRESHOLD) else "seismic"
            (tmp / "index").mkdir()
            names = [shard_name(i) for i in range(len(shard_vectors))]
            task = ray.remote(_build_shard).options(max_retries=MAX_RESTARTS)
            built = ray.get(
                [task.remote(v, kind, seismic or {}, str(tmp / "index" / name)) for v, name in zip(shard_vectors, names)]
            )
            starts = np.cumsum([0, *built[:-1]])
            dim = encoder.dim
            write_shard_manifest(tmp / "index", names, starts, dim)
            (tmp / "encoder").mkdir()
            spec = encoder.save(tmp / "encoder")
            write_manifest(
                tmp, KIND, encoder=spec, n_docs=n_docs, dim=dim, nnz=int(sum(v.nnz for v in shard_vectors)),
                index_kind="sharded", shard_kind=kind, shards=len(names), corpus=str(Path(corpus_path).absolute()),
                skipped=len(reader.skipped), skip_subdirectories=["index"],
            )  # fmt: skip
        return ShardedBuildReport(
            n_docs=n_docs, n_shards=len(names), n_actors=n_actors, gpus_per_actor=1.0 if gpus else 0.0,
            skipped=reader.skipped, ignored_files=len(reader.ignored_files),
            seconds=time.perf_counter() - start, encode_seconds=encode_seconds,
        )  # fmt: skip
    finally:
        if started_here:
            ray.shutdown()


def _encode_blocks(blocks, encoder, model, precision, batch_size, max_length, n_actors, gpus, n_docs, progress):
    """The blocks through Ray Data and an actor pool; the payloads in block order, each block
    exactly once (checked: a redone block must not add or lose a document)."""
    import ray

    # a learned model is loaded by name in each actor (on its GPU); BM25 or an Encoder object is shipped
    shipped = model if isinstance(model, str) and not isinstance(encoder, Bm25Encoder) else encoder
    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller shows progress
    dataset = ray.data.from_items(blocks, override_num_blocks=len(blocks))
    with warnings.catch_warnings():  # Ray 2.60 deprecates **ray_remote_args, the only way to set these
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = dataset.map_batches(
            _EncodeActor,
            fn_constructor_args=(shipped, precision, batch_size, max_length),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_gpus=gpus,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS,
        )
    sizes = {b["start"]: len(b["texts"]) for b in blocks}
    payloads: dict[int, Any] = {}
    done = 0
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        for start, payload in zip(batch["start"].tolist(), batch["payload"]):
            if start in payloads or start not in sizes:
                raise LsrError(f"block at document {start} came back twice or was never sent (a Ray retry went wrong)")
            payloads[start] = pickle.loads(payload)
            done += sizes[start]
            if progress:
                progress("indexing", done, n_docs, docs=done)
    if len(payloads) != len(blocks):
        raise LsrError(f"{len(blocks) - len(payloads)} of {len(blocks)} blocks never came back from the encoding actors")
    return [payloads[b["start"]] for b in blocks]


def _shard_vectors(encoder: Encoder, payloads: list[Any], n_docs: int, n_shards: int) -> list[SparseVectors]:
    """The encoded blocks as one SparseVectors per shard (contiguous document ranges)."""
    if isinstance(encoder, Bm25Encoder):
        counts, lengths = _join_bm25(encoder, payloads)
        statistics = encoder.statistics(counts, lengths)
        parts = [encoder.weigh(counts[a:b], lengths[a:b], statistics) for a, b in shard_ranges(n_docs, n_shards)]
    else:
        vectors = SparseVectors.concatenate(payloads, dim=encoder.dim)
        parts = [vectors[a:b] for a, b in shard_ranges(n_docs, n_shards)]
    if sum(len(p) for p in parts) != n_docs:
        raise LsrError(f"encoded {sum(len(p) for p in parts)} documents, read {n_docs}")
    return parts


class _ShardActor:
    """A Ray actor holding a group of shards (memory-mapped from the index directory, each
    checked against the digest the top-level manifest recorded: a rebuilt index is refused,
    never mixed with the driver's)."""

    def __init__(self, directory: str, entries: list[dict[str, Any]]) -> None:
        from lsr.indexer.sharded import ShardedIndex, load_shard, manifest_digest
        from lsr.indexer.storage import MANIFEST, damaged

        shards = []
        for entry in entries:
            where = Path(directory) / entry["path"]
            if manifest_digest(where) != entry["manifest_sha256"]:
                raise damaged(where / MANIFEST, "does not match the sharded manifest's checksum (rebuilt meanwhile?)")
            shards.append(load_shard(where, entry["kind"]))
        self.index = ShardedIndex(shards, starts=[e["start"] for e in entries])

    def ready(self) -> int:
        return len(self.index)

    def search(self, queries: SparseVectors, k: int, threads: int, params: dict[str, Any]):
        return self.index.search(queries, k, threads=threads, **params)


def actor_threads(threads: int, cpus: int) -> int:
    """The threads each search actor uses for a search asked to run on `threads` (the
    protocol's rule, `lsr.indexer.protocol.THREADS_DOC`, on the `cpus` an actor reserved):
    0 = all of them, n = n up to that."""
    from lsr.indexer.protocol import THREADS_DOC

    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 ({THREADS_DOC}), got {threads!r}")
    return cpus if threads == 0 else min(int(threads), cpus)


class RayShardedIndex:
    """A sharded index searched in Ray actors, each holding a group of shards (mmap): the
    index protocol (`lsr.indexer.Index`) and the results of `ShardedIndex`, for a cluster whose
    nodes all see the index directory. Actors are spread over the cluster's nodes, `cpus` CPUs
    reserved each. `forward_vectors`, `check_values` and `save` read the local `ShardedIndex`
    of the same directory. Usually made by `Retriever.load(path, ray=ADDRESS, actors=N)`.

    Actors reserve no CPUs (Ray's `num_cpus=0`; `SPREAD` still places them on different nodes
    first): a busy cluster never holds them back, and a hot swap (`lsr serve`) starts the new
    index's actors while the old ones still answer."""

    kind = "sharded"
    START_SECONDS = 120  # actors not all started by then (a node down, no memory): an error

    def __init__(self, index: Any, actors: int | None = None, cpus: int = 1) -> None:
        """`index`: a loaded `ShardedIndex` or its directory; `actors`: default one per shard;
        `cpus`: the threads each actor searches with at most."""
        import ray

        from lsr.indexer.sharded import ShardedIndex

        # a path is opened here first: manifests and digests checked, the arrays only mapped
        self.local = index if isinstance(index, ShardedIndex) else ShardedIndex.load(index)
        if self.local.path is None:
            raise ValueError("RayShardedIndex needs a ShardedIndex loaded from a directory (its actors open the shards there)")
        if cpus < 1:
            raise ValueError(f"cpus must be >= 1, got {cpus}")
        self.path, self.cpus = Path(self.local.path).absolute(), cpus
        n_shards = len(self.local.shards)
        actors = min(actors or n_shards, n_shards)
        groups = [g.tolist() for g in np.array_split(np.arange(n_shards), actors)]
        actor = ray.remote(num_cpus=0, scheduling_strategy="SPREAD")(_ShardActor)
        self.actors = [actor.remote(str(self.path), [self.local.entries[i] for i in g]) for g in groups]
        try:
            held = sum(ray.get([a.ready.remote() for a in self.actors], timeout=self.START_SECONDS))
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise LsrError(f"{self.path}: {actors} Ray search actors did not start within {self.START_SECONDS} s") from None
        except ray.exceptions.RayError as err:
            self.close()
            cause = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise LsrError(f"{self.path}: a Ray search actor could not open its shards ({cause})") from None
        assert held == len(self.local), (held, len(self.local))

    @classmethod
    def load(cls, path: str | Path) -> "RayShardedIndex":
        return cls(path)

    @property
    def dim(self) -> int:
        return self.local.dim

    def __len__(self) -> int:
        return len(self.local)

    def search(self, queries: SparseVectors, k: int = 10, *, threads: int = 1, **params: Any):
        """Every actor's top k (collection-wide ids), merged as `ShardedIndex.search` merges;
        `threads` per actor (`actor_threads`); the actors search side by side."""
        import ray

        from lsr.indexer.exact import clamp_k
        from lsr.indexer.sharded import merge_top_k

        if params.get("filter") is not None:
            raise LsrError("filtered search is not available on Ray actors (search without --ray)")
        params.pop("filter", None)
        k = clamp_k(k, len(self))
        threads = actor_threads(threads, self.cpus)
        if len(queries) == 0 or k == 0:
            return np.empty((len(queries), k), np.int64), np.empty((len(queries), k), np.float32)
        parts = ray.get([a.search.remote(queries, k, threads, params) for a in self.actors])
        ids = np.concatenate([p[0] for p in parts], axis=1)
        scores = np.concatenate([p[1] for p in parts], axis=1)
        return merge_top_k(ids, scores, k)

    def forward_vectors(self) -> SparseVectors:
        return self.local.forward_vectors()

    def check_values(self, full: bool = False) -> None:
        self.local.check_values(full=full)

    def save(self, path: str | Path) -> None:
        self.local.save(path)

    def close(self) -> None:
        """Stop the actors now (else they stop when this object is garbage-collected)."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def search_on_ray(index: Any, address: str | None, actors: int | None = None, cpus: int = 1) -> RayShardedIndex:
    """A loaded sharded index (`lsr.indexer.load`) searched in Ray actors instead of local
    threads: joins the cluster (`connect`); anything but a sharded index is an `LsrError`."""
    if getattr(index, "kind", None) != "sharded":
        raise LsrError(
            f"{index.path}: --ray searches a sharded index (built with lsr index --ray); this index is {index.kind!r}"
        )
    connect(address)
    return RayShardedIndex(index, actors=actors, cpus=cpus)
