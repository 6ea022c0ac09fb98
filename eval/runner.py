"""Evaluation runs: encode and index a dataset (cached), search every query, score, save.

Models are resolved as `lsr index` resolves them (`lsr.encoders.resolve_model`: --model >
$LSR_MODEL > the default hub model, and only the default falls back to BM25 with one warning). Encodings are cached as
complete index directories under the cache root, keyed by the resolved encoder's spec and a
fingerprint of the corpus files, so a second run with the same encoder and corpus only
searches and scores, and a BM25 fallback never shares an entry with the model it stood in for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.corpus import CorpusReader
from lsr.cache import cache_root
from lsr.encoders import Encoder
from lsr.errors import LsrError
from lsr.eval.loaders import load_beir, load_qrels, load_queries
from lsr.eval.metrics import DEFAULT_METRICS, evaluate_arrays
from lsr.formats.runs import trec_run_lines, write_trec_run  # noqa: F401  (trec_run_lines: re-exported)
from lsr.progress import Progress

log = logging.getLogger(__name__)
BASELINES = ("pyserini-bm25",)


# BEIR datasets whose queries are documents of the corpus: BEIR (ignore_identical_ids) and
# Anserini (-removeQuery) drop a hit whose id equals the query id on these, and only these.
REMOVE_QUERY_ID_DATASETS = ("arguana", "quora")


def removes_query_id(name: str) -> bool:
    """Whether a dataset named `name` (a folder name such as `arguana` or `beir-quora`) needs
    hits equal to the query id removed by default."""
    return any(part in REMOVE_QUERY_ID_DATASETS for part in re.split(r"[^a-z0-9]+", name.lower()))


@dataclass
class Dataset:
    """A corpus with queries and judgments: a BEIR folder, or explicit files."""

    name: str
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    remove_query_id: bool  # drop a hit whose doc id equals its query id (BEIR's ArguAna/Quora convention)

    @classmethod
    def open(
        cls,
        path: str | Path,
        split: str = "test",
        queries: str | Path | None = None,
        qrels: str | Path | None = None,
        remove_query_id: bool | None = None,
    ) -> "Dataset":
        """A BEIR folder (`queries`, `qrels` None) or a corpus with its queries and qrels files.

        `remove_query_id`: drop hits whose doc id equals the query id, from the scores and
        from the run files alike; None (default) does so only for the BEIR datasets that need
        it (`REMOVE_QUERY_ID_DATASETS`, by folder name), where query and document ids name the
        same texts. Elsewhere ids may share one numeric space and a judged-relevant document
        can carry its query's id, so it must stay.
        """
        path = Path(path)
        if not path.exists():
            raise LsrError(f"{path}: no such dataset")
        if queries is None and qrels is None:
            beir_queries, beir_qrels = load_beir(path, split)
            CorpusReader(path)  # its corpus.jsonl is there (an error now, not after the model loads)
            flag = removes_query_id(path.name) if remove_query_id is None else remove_query_id
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
    error: str | None = None  # why this run failed (then `metrics` is empty); None when it ran
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. the tuned fusion weight


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
    """`model` resolved as `lsr index` does: `model` > $LSR_MODEL > the default hub model; only
    the default falls back (offline, not cached) to BM25 after one warning, a model asked for
    that cannot be loaded is an error. The name is the model asked for, or `bm25` when BM25
    runs (asked for, or the fallback). `precision` applies to the SPLADE models (not to `bm25`)."""
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
    progress: Progress | None = None,
    prf: Any = None,
) -> EvalResult:
    """Encode + index (or reuse the cached index), search all queries, score.

    `model`: a name or path resolved by `resolve_system` (None: $LSR_MODEL, else the default
    hub model, else BM25), an encoder, or a `System` already resolved (see `resolve_systems`).
    The index is cached in `index_cache_dir(dataset, encoder.spec, cache)`. `prf` (an
    `lsr.prf.Prf`): a second, feedback round (the system is named `NAME+prf`).
    """
    system = resolve_system(model)
    prf = prf if prf is not None and prf.enabled else None
    start = time.perf_counter()
    retriever = cached_retriever(dataset, system.encoder, cache=cache, batch_size=batch_size, progress=progress)
    seconds = {"index": time.perf_counter() - start}
    qids = list(dataset.queries)
    start = time.perf_counter()
    rows = retriever.sparse_rows([dataset.queries[q] for q in qids], k, prf=prf)
    seconds["search"] = time.perf_counter() - start
    name = f"{system.name}+prf" if prf else system.name
    return score_rows(dataset, name, qids, rows, retriever, metrics, output, seconds)


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
    from lsr.eval.lucene import bm25_run

    cache = cache or cache_root()
    lucene_dir = cache / "lucene" / f"{_safe(dataset.name)}-{dataset.fingerprint()}"
    start = time.perf_counter()
    docs = ((d.doc_id, d.title, d.text) for d in CorpusReader(dataset.corpus))
    run = bm25_run(docs, dataset.queries, lucene_dir, k=k)
    seconds = {"total": time.perf_counter() - start}
    ranked = {q: sorted(hits.items(), key=lambda h: (-h[1], h[0])) for q, hits in run.items()}
    return score_run(dataset, baseline, ranked, metrics, output, seconds, tag=baseline)


def save_results(results: Sequence[EvalResult], path: Path) -> None:
    """All results as one JSON file (means, per-query values, timings, run files)."""
    payload = [
        {
            "dataset": r.dataset,
            "system": r.system,
            "metrics": r.metrics,
            "seconds": r.seconds,
            "run_file": str(r.run_file) if r.run_file else None,
            "error": r.error,
            **({"notes": r.notes} if r.notes else {}),
            "per_query": r.per_query,
        }
        for r in results
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)



# ---- dense, fusion and feedback rows (lsr eval --fuse, --prf-*) ------------------------------


def cached_retriever(
    dataset: Dataset,
    encoder: Encoder,
    dense: str | None = None,
    cache: Path | None = None,
    batch_size: int = 32,
    progress: Progress | None = None,
):
    """The `Retriever` over `dataset`'s corpus encoded by `encoder` (plus a dense index with
    `dense`): loaded from `index_cache_dir(dataset, key, cache)`, or built there first; the key
    is the encoder spec, with the resolved dense model added."""
    from lsr.dense import resolve_dense_model
    from lsr.retriever import Retriever

    spec = dict(encoder.spec)
    if dense is not None:
        spec["dense"] = resolve_dense_model(dense)
    index_dir = index_cache_dir(dataset, spec, cache)
    if (index_dir / "manifest.json").exists():
        try:
            retriever = Retriever.load(index_dir)
            log.info("reusing the cached index %s", index_dir)
            return retriever
        except LsrError as err:
            log.warning("rebuilding the cached index: %s", err)
    return Retriever.build(dataset.corpus, model=encoder, path=index_dir, batch_size=batch_size,
                           progress=progress, dense=dense)  # fmt: skip


def score_rows(
    dataset: Dataset,
    name: str,
    qids: Sequence[str],
    rows: tuple[Any, Any],
    retriever: Any,
    metrics: Sequence[str],
    output: Path | None = None,
    seconds: dict[str, float] | None = None,
) -> EvalResult:
    """Score `(rows, scores)` of `retriever` for `qids` (see `score_run`)."""
    all_ids = retriever.docs.all_ids()
    run = {}
    for qid, r, s in zip(qids, rows[0], rows[1]):
        found = r >= 0  # -1 / -inf padding
        run[qid] = list(zip(all_ids[r[found]].tolist(), s[found].tolist()))
    return score_run(dataset, name, run, metrics, output, seconds, tag=f"lsr-{_safe(name)}")


def score_run(
    dataset: Dataset,
    name: str,
    run: dict[str, list[tuple[str, float]]],
    metrics: Sequence[str],
    output: Path | None = None,
    seconds: dict[str, float] | None = None,
    tag: str | None = None,
) -> EvalResult:
    """Score a ranked run `{qid: [(doc_id, score), ...]}` as the system `name`: hits whose doc id
    equals the query id are dropped first when `dataset.remove_query_id`. With `output`, the
    run file `run.DATASET.NAME.txt` (tagged `tag`) holds exactly the hits scored, so scoring it
    again gives the same numbers."""
    if dataset.remove_query_id:
        run = {q: [(d, v) for d, v in hits if d != q] for q, hits in run.items()}
    qids = list(run)
    per_query = evaluate_arrays(
        dataset.qrels, qids, [[d for d, _ in run[q]] for q in qids],
        [np.array([v for _, v in run[q]], dtype=np.float64) for q in qids],
        metrics=list(metrics), per_query=True,
    )  # fmt: skip
    result = EvalResult(dataset.name, name, _means(per_query), per_query, seconds or {})
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        result.run_file = output / f"run.{_safe(dataset.name)}.{_safe(name)}.txt"
        write_trec_run(result.run_file, run, tag or _safe(name))
    return result


ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


def tune_alpha(
    dataset: Dataset,
    qids: Sequence[str],
    sparse: tuple[Any, Any],
    dense: tuple[Any, Any],
    all_ids: Any,
    k: int,
    fusion: str = "interp",
    norm: str = "minmax",
    metric: str = "ndcg@10",
    alphas: Sequence[float] = ALPHAS,
) -> tuple[float, dict[float, float]]:
    """The α of the grid with the best mean `metric` on `dataset` (the first best on ties),
    and the metric for every α."""
    from lsr.retriever import fuse_rows

    curve: dict[float, float] = {}
    for alpha in alphas:
        rows, scores = fuse_rows(sparse, dense, all_ids, k, fusion, alpha, norm)
        ids = [all_ids[r[r >= 0]].tolist() for r in rows]
        hit_scores = [s[: len(i)] for i, s in zip(ids, scores)]
        per_query = evaluate_arrays(dataset.qrels, list(qids), ids, hit_scores, metrics=[metric], per_query=True,
                                    remove_query_id=dataset.remove_query_id)  # fmt: skip
        curve[alpha] = _means(per_query)[metric]
    best = max(curve, key=lambda a: (curve[a], -alphas.index(a)))
    return best, curve


def run_fusion(
    test: Dataset,
    train: Dataset,
    model: str | Encoder | System | None = "bm25",
    dense: str = "minilm",
    k: int = 1000,
    metrics: Sequence[str] = DEFAULT_METRICS,
    output: Path | None = None,
    cache: Path | None = None,
    batch_size: int = 32,
    progress: Progress | None = None,
    prf: Any = None,
    fusion: str = "interp",
    norm: str = "minmax",
    tune_metric: str = "ndcg@10",
) -> list[EvalResult]:
    """Sparse, dense and fused rows on `test`, α tuned on `train` (same corpus) by a grid over
    `ALPHAS` on `tune_metric`. With `prf` enabled, also sparse+prf and its fusion with dense
    (α tuned again). The fused row is named `fused(SPARSE+dense,alpha=A)` (`rrf(SPARSE+dense)`
    with `fusion="rrf"`, nothing tuned); the α and the train curve are in its `notes`."""
    system = resolve_system(model)
    retriever = cached_retriever(test, system.encoder, dense=dense, cache=cache, batch_size=batch_size, progress=progress)
    all_ids = retriever.docs.all_ids()
    from lsr.dense import short_name

    dense_name = "dense-" + short_name(retriever.manifest["dense"]["model"])
    splits = {}
    for name, dataset in (("train", train), ("test", test)):
        qids = list(dataset.queries)
        texts = [dataset.queries[q] for q in qids]
        splits[name] = (dataset, qids, {
            system.name: retriever.sparse_rows(texts, k),
            dense_name: retriever.dense_rows(texts, k),
        })  # fmt: skip
        if prf is not None and prf.enabled:
            splits[name][2][f"{system.name}+prf"] = retriever.sparse_rows(texts, k, prf=prf)
    dataset, qids, rows = splits["test"]
    results = [score_rows(dataset, n, qids, rows[n], retriever, metrics, output) for n in rows]
    for sparse_name in [n for n in rows if n != dense_name]:
        tr_dataset, tr_qids, tr_rows = splits["train"]
        alpha, curve = 0.5, {}
        if fusion == "interp":
            alpha, curve = tune_alpha(tr_dataset, tr_qids, tr_rows[sparse_name], tr_rows[dense_name], all_ids, k,
                                      fusion, norm, tune_metric)  # fmt: skip
        log.info("alpha for %s + %s on %s/train: %s (%s)", sparse_name, dense_name, train.name, alpha, curve)
        from lsr.retriever import fuse_rows

        fused = fuse_rows(rows[sparse_name], rows[dense_name], all_ids, k, fusion, alpha, norm)
        name = f"fused({sparse_name}+dense,alpha={alpha})" if fusion == "interp" else f"rrf({sparse_name}+dense)"
        result = score_rows(dataset, name, qids, fused, retriever, metrics, output)
        result.notes = {"alpha": alpha, f"train {tune_metric} by alpha": curve}
        results.append(result)
    return results
