"""Evaluation runs: encode and index a dataset (cached), search every query, score, save.

Models are resolved as `lsr index` resolves them (`lsr.encoders.resolve_model`: --model >
$LSR_MODEL > the default hub model, else BM25 with one warning). Encodings are cached as
complete index directories under the cache root, keyed by the resolved encoder's spec and a
fingerprint of the corpus files, so a second run with the same encoder and corpus only
searches and scores, and a BM25 fallback never shares an entry with the model it stood in for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lsr.encoders import Encoder
from lsr.errors import LsrError
from lsr.eval.loaders import load_beir, load_qrels, load_queries
from lsr.eval.metrics import DEFAULT_METRICS, evaluate, evaluate_arrays

log = logging.getLogger(__name__)
BASELINES = ("pyserini-bm25",)


def cache_root() -> Path:
    """`$LSR_CACHE`, else `$XDG_CACHE_HOME/lsr`, else `~/.cache/lsr`."""
    if "LSR_CACHE" in os.environ:
        return Path(os.environ["LSR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lsr"


@dataclass
class Dataset:
    """A corpus with queries and judgments: a BEIR folder, or explicit files."""

    name: str
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    remove_query_id: bool  # BEIR's convention (Anserini's -removeQuery)

    @classmethod
    def open(
        cls,
        path: str | Path,
        split: str = "test",
        queries: str | Path | None = None,
        qrels: str | Path | None = None,
        remove_query_id: bool | None = None,
    ) -> "Dataset":
        path = Path(path)
        if not path.exists():
            raise LsrError(f"{path}: no such dataset")
        if queries is None and qrels is None:
            beir_queries, beir_qrels = load_beir(path, split)
            flag = True if remove_query_id is None else remove_query_id
            return cls(path.name, path, beir_queries, beir_qrels, flag)
        if queries is None or qrels is None:
            raise LsrError("give both --queries and --qrels (or a BEIR folder with neither)")
        judged = load_qrels(qrels)
        topics = load_queries(queries)
        return cls(path.stem, path, {q: t for q, t in topics.items() if q in judged}, judged, bool(remove_query_id))

    def fingerprint(self) -> str:
        """Cheap and stable: every corpus file's path, size and modification time."""
        files = [self.corpus] if self.corpus.is_file() else sorted(p for p in self.corpus.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for f in files:
            st = f.stat()
            digest.update(f"{f.absolute()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]


@dataclass
class EvalResult:
    dataset: str
    system: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    run_file: Path | None = None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass(frozen=True)
class System:
    """A resolved model: the name shown in results (what actually runs) and its encoder."""

    name: str
    encoder: Encoder

    @property
    def key(self) -> str:
        return spec_key(self.encoder.spec)


def spec_key(spec: dict[str, Any]) -> str:
    """A stable hash of an encoder spec: sha256 of its canonical JSON (sorted keys), 16 hex digits."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def index_cache_dir(dataset: Dataset, spec: dict[str, Any], cache: Path | None = None) -> Path:
    """Where `run_model` caches `dataset` encoded by the encoder with `spec`:
    `CACHE/indexes/DATASET-FINGERPRINT/TYPE-SPECKEY` (TYPE: the spec's type, for reading)."""
    cache = cache or cache_root()
    kind = _safe(str(spec.get("type", "encoder")))
    return cache / "indexes" / f"{_safe(dataset.name)}-{dataset.fingerprint()}" / f"{kind}-{spec_key(spec)}"


def resolve_system(model: str | Encoder | System | None = None, precision: str = "fp32") -> System:
    """`model` resolved as `lsr index` does: `model` > $LSR_MODEL > the default hub model; when
    that cannot be loaded (offline, not cached), BM25 after one warning. The name is the model
    asked for, or `bm25` when BM25 runs (asked for, or the fallback). `precision` applies to
    the SPLADE models (not to `bm25`)."""
    if isinstance(model, System):
        return model
    if isinstance(model, Encoder):
        return System(str(model.spec.get("type", "encoder")), model)
    from lsr.encoders import chosen_model, resolve_model

    chosen = chosen_model(model)
    encoder = resolve_model(chosen, precision="fp32" if chosen == "bm25" else precision)
    return System("bm25" if encoder.spec.get("type") == "bm25" else chosen, encoder)


def resolve_systems(models: Sequence[str | None], precision: str = "fp32") -> list[System]:
    """Resolve each model once, in order (`None`: the default resolution); models that resolve
    to the same encoder spec (`bm25` and a fallback to it) are evaluated once."""
    systems: dict[str, System] = {}
    for model in models:
        system = resolve_system(model, precision)
        if system.key in systems:
            log.info("%s resolves to the same encoder as %s: evaluated once", model, systems[system.key].name)
            continue
        systems[system.key] = system
    return list(systems.values())


def _build_encoder(encoder: Encoder) -> Encoder:
    """The encoder instance for one build: BM25 grows its vocabulary over the corpus it indexes,
    so each build gets a fresh one; model encoders are shared (their weights load once)."""
    from lsr.encoders.bm25 import Bm25Encoder

    if isinstance(encoder, Bm25Encoder):
        return Bm25Encoder(k1=encoder.k1, b=encoder.b)
    return encoder


def write_trec_run(path: Path, run: dict[str, list[tuple[str, float]]], tag: str) -> None:
    """TREC run format, hits in rank order; written to a temporary file and renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, hits in run.items():
            for rank, (doc, score) in enumerate(hits, 1):
                f.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")
    os.replace(tmp, path)


def _means(per_query: dict[str, dict[str, float]]) -> dict[str, float]:
    """trec_eval -c means: per-query values cover every judged query (0 where missing)."""
    return {m: sum(v.values()) / len(v) if v else 0.0 for m, v in per_query.items()}


def run_model(
    dataset: Dataset,
    model: str | Encoder | System | None = None,
    k: int = 1000,
    metrics: Sequence[str] = DEFAULT_METRICS,
    output: Path | None = None,
    cache: Path | None = None,
    batch_size: int = 32,
    progress: Callable[[int, int, int], None] | None = None,
) -> EvalResult:
    """Encode + index (or reuse the cached index), search all queries, score.

    `model`: a name or path resolved by `resolve_system` (None: $LSR_MODEL, else the default
    hub model, else BM25), an encoder, or a `System` already resolved (see `resolve_systems`).
    The index is cached in `index_cache_dir(dataset, encoder.spec, cache)`.
    """
    from lsr.retriever import Retriever

    system = resolve_system(model)
    index_dir = index_cache_dir(dataset, system.encoder.spec, cache)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    retriever = None
    if (index_dir / "manifest.json").exists():
        try:
            retriever = Retriever.load(index_dir)
            log.info("reusing the cached index %s", index_dir)
        except LsrError as err:
            log.warning("rebuilding the cached index: %s", err)
    if retriever is None:
        encoder = _build_encoder(system.encoder)
        retriever = Retriever.build(dataset.corpus, model=encoder, path=index_dir, batch_size=batch_size, progress=progress)
    seconds["index"] = time.perf_counter() - start
    qids = list(dataset.queries)
    start = time.perf_counter()
    ids, scores = retriever.search_batch([dataset.queries[q] for q in qids], k=k)
    seconds["search"] = time.perf_counter() - start
    hit_scores = [s[: len(i)] for i, s in zip(ids, scores)]  # drop the -inf padding
    per_query = evaluate_arrays(
        dataset.qrels, qids, ids, hit_scores,
        metrics=list(metrics), per_query=True, remove_query_id=dataset.remove_query_id,
    )  # fmt: skip
    result = EvalResult(dataset.name, system.name, _means(per_query), per_query, seconds)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        result.run_file = output / f"run.{_safe(dataset.name)}.{_safe(system.name)}.txt"
        run = {q: list(zip(i, s.tolist())) for q, i, s in zip(qids, ids, hit_scores)}
        write_trec_run(result.run_file, run, f"lsr-{_safe(system.name)}")
    return result


def run_baseline(
    dataset: Dataset,
    baseline: str,
    k: int = 1000,
    metrics: Sequence[str] = DEFAULT_METRICS,
    output: Path | None = None,
    cache: Path | None = None,
) -> EvalResult:
    """A reference system in the same table: `pyserini-bm25` (Anserini BM25, k1=0.9 b=0.4)."""
    if baseline not in BASELINES:
        raise LsrError(f"unknown baseline {baseline!r} (known: {', '.join(BASELINES)})")
    from lsr.corpus import CorpusReader
    from lsr.eval.lucene import bm25_run

    cache = cache or cache_root()
    lucene_dir = cache / "lucene" / f"{_safe(dataset.name)}-{dataset.fingerprint()}"
    start = time.perf_counter()
    docs = ((d.doc_id, d.title, d.text) for d in CorpusReader(dataset.corpus))
    run = bm25_run(docs, dataset.queries, lucene_dir, k=k)
    seconds = {"total": time.perf_counter() - start}
    per_query = evaluate(dataset.qrels, run, metrics=list(metrics), per_query=True, remove_query_id=dataset.remove_query_id)
    result = EvalResult(dataset.name, baseline, _means(per_query), per_query, seconds)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        result.run_file = output / f"run.{_safe(dataset.name)}.{baseline}.txt"
        ranked = {q: sorted(hits.items(), key=lambda h: (-h[1], h[0])) for q, hits in run.items()}
        write_trec_run(result.run_file, ranked, baseline)
    return result


def save_results(results: Sequence[EvalResult], path: Path) -> None:
    """All results as one JSON file (means, per-query values, timings, run files)."""
    payload = [
        {
            "dataset": r.dataset,
            "system": r.system,
            "metrics": r.metrics,
            "seconds": r.seconds,
            "run_file": str(r.run_file) if r.run_file else None,
            "per_query": r.per_query,
        }
        for r in results
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)

