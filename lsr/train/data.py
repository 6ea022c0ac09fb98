"""Training examples: BEIR train qrels, MS MARCO-style triples, teacher score files; hard
negatives mined with lsr's own index.

An `Example` is a query with its positives and a pool of negatives (document ids), and,
for distillation, teacher scores. `TrainingData.batch(i)` is a pure function of the batch
number `i` and the seed: epochs are seeded permutations, negatives seeded draws, so a resumed
run sees exactly the batches an uninterrupted one would (the data position is the step).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lsr.errors import LsrError
from lsr.formats.lines import read_json_lines

logger = logging.getLogger(__name__)


@dataclass
class Example:
    """One query: positive and negative document ids; teacher scores per candidate id
    (`scores[t][doc_id]`, one dict per teacher) when distilling."""

    qid: str
    query: str
    positives: list[str]
    negatives: list[str]
    scores: list[dict[str, float]] | None = None


@dataclass
class Batch:
    """`docs[b]` are the candidates of query b: the positive first, then the negatives;
    `teacher` is float32 `[T, B, C]` (None without teacher scores)."""

    qids: list[str]
    queries: list[str]
    doc_ids: list[list[str]]
    docs: list[list[str]]
    teacher: np.ndarray | None = None


def load_corpus_texts(path: str | Path) -> dict[str, str]:
    """Document id → full text (title and body), read with `lsr.corpus.CorpusReader`."""
    from lsr.corpus import CorpusReader

    return {doc.doc_id: doc.full_text() for doc in CorpusReader(path)}


def corpus_path(dataset: str | Path) -> Path:
    """A BEIR folder's corpus file (`corpus.jsonl`, optionally gzipped), else the path itself."""
    dataset = Path(dataset)
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (dataset / name).is_file():
            return dataset / name
    return dataset


def mine_negatives(
    corpus: str | Path,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    model: str = "bm25",
    cache_dir: str | Path | None = None,
    depth: int = 100,
    skip_top: int = 0,
) -> dict[str, list[str]]:
    """Hard negatives per query from lsr's own index: the top `depth` documents retrieved by
    `model` (`bm25` or a model folder), judged positives (relevance > 0) excluded, the first
    `skip_top` remaining ranks skipped (they are often unjudged positives).

    The index is built once into `cache_dir` (reused when it already holds an index).
    """
    from lsr.retriever import Retriever

    if cache_dir is not None and (Path(cache_dir) / "manifest.json").exists():
        retriever = Retriever.load(cache_dir)
        logger.info("negatives: reusing the index %s", cache_dir)
    else:
        if cache_dir is None:
            raise LsrError("mining negatives needs a cache directory for the index")
        retriever = Retriever.build(corpus, model=model, path=cache_dir)
    qids = list(queries)
    ids, _ = retriever.search_batch([queries[q] for q in qids], k=depth + skip_top + 50)
    out: dict[str, list[str]] = {}
    for qid, ranked in zip(qids, ids):
        judged = {d for d, rel in qrels.get(qid, {}).items() if rel > 0}
        negatives = [d for d in ranked if d not in judged][skip_top : skip_top + depth]
        out[qid] = negatives
    return out


def beir_examples(
    dataset: str | Path,
    split: str = "train",
    negatives: dict[str, list[str]] | None = None,
) -> list[Example]:
    """One example per judged query of `split` with at least one positive (relevance > 0)."""
    from lsr.eval.loaders import load_beir

    queries, qrels = load_beir(dataset, split)
    examples = []
    for qid, judged in qrels.items():
        positives = sorted(d for d, rel in judged.items() if rel > 0)
        if positives:
            examples.append(Example(qid, queries[qid], positives, list((negatives or {}).get(qid, []))))
    return examples


def read_triples(path: str | Path, queries: dict[str, str] | None = None, corpus: dict[str, str] | None = None) -> tuple[list[Example], dict[str, str]]:
    """MS MARCO-style triples `query<TAB>positive<TAB>negative`, as texts, or as ids when
    `queries` and `corpus` are given and every field of the line is an id found there.

    Returns the examples and a text table for the documents they name (ids are the texts
    themselves for text triples). Lines sharing a query are merged into one example.
    """
    path = Path(path)
    texts: dict[str, str] = dict(corpus or {})
    by_query: dict[str, Example] = {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for line_no, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != 3:
                    raise LsrError(f"{path}:{line_no}: expected 3 tab-separated fields (query, positive, negative), got {len(row)}")
                q, pos, neg = (x.strip() for x in row)
                if queries is not None and corpus is not None and q in queries and pos in corpus and neg in corpus:
                    qid, query = q, queries[q]
                else:
                    qid, query = q, q
                    texts.setdefault(pos, pos)
                    texts.setdefault(neg, neg)
                ex = by_query.setdefault(qid, Example(qid, query, [], []))
                if pos not in ex.positives:
                    ex.positives.append(pos)
                if neg not in ex.negatives:
                    ex.negatives.append(neg)
    except OSError as err:
        raise LsrError(f"{path}: cannot read triples ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise LsrError(f"{path}: not UTF-8 text") from None
    return list(by_query.values()), texts


def read_teacher_scores(paths: Sequence[str | Path]) -> dict[str, tuple[list[str], list[str], list[dict[str, float]]]]:
    """Teacher score files (one teacher each; JSONL `{"qid", "pos": [[docid, score], ...],
    "neg": [[docid, score], ...]}`) → qid → (positive ids, negative ids, one score dict per
    teacher). The candidates are the first file's; every other file must score them all."""
    merged: dict[str, tuple[list[str], list[str], list[dict[str, float]]]] = {}
    for t, path in enumerate(paths):
        path = Path(path)
        seen: set[str] = set()
        for line_no, rec in read_json_lines(path):
            where = f"{path}:{line_no}"
            try:
                qid = str(rec["qid"])
                pos = [(str(d), float(s)) for d, s in rec["pos"]]
                neg = [(str(d), float(s)) for d, s in rec["neg"]]
            except (ValueError, KeyError, TypeError) as err:
                raise LsrError(f"{where}: expected {{\"qid\", \"pos\": [[docid, score], ...], \"neg\": [...]}} ({err})") from None
            seen.add(qid)
            scores = dict(pos + neg)
            if t == 0:
                merged[qid] = ([d for d, _ in pos], [d for d, _ in neg], [scores])
                continue
            if qid not in merged:
                raise LsrError(f"{where}: query {qid!r} is not in the first teacher's file {paths[0]}")
            p, n, per = merged[qid]
            missing = [d for d in p + n if d not in scores]
            if missing:
                raise LsrError(f"{where}: no score for document {missing[0]!r} of query {qid!r}")
            per.append(scores)
        if t > 0 and len(seen) != len(merged):
            gone = next(q for q in merged if q not in seen)
            raise LsrError(f"{path}: no scores for query {gone!r} (in {paths[0]})")
    return merged


def teacher_examples(scores: dict, queries: dict[str, str]) -> list[Example]:
    """Examples from `read_teacher_scores`' output (queries must have a text)."""
    examples = []
    for qid, (pos, neg, per) in scores.items():
        if qid not in queries:
            raise LsrError(f"teacher scores: query {qid!r} has no text in the dataset's queries")
        if pos and neg:
            examples.append(Example(qid, queries[qid], pos, neg, per))
    return examples


@dataclass
class TrainingData:
    """Batches of `batch_size` examples with one positive and `n_negatives` negatives each.

    Epoch e visits the examples in a permutation drawn from `seed + e`; the positive and
    negatives of the j-th example of batch i are drawn from a generator seeded by
    `(seed, i, j)`. Examples with fewer negatives than `n_negatives` are dropped (logged).
    """

    examples: list[Example]
    texts: Callable[[str], str] | dict[str, str]
    batch_size: int
    n_negatives: int = 1
    seed: int = 0
    _perm: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        kept = [e for e in self.examples if e.positives and len(e.negatives) >= self.n_negatives]
        if len(kept) < len(self.examples):
            logger.info("%d of %d examples dropped: fewer than %d negatives", len(self.examples) - len(kept), len(self.examples), self.n_negatives)
        if not kept:
            raise LsrError(f"no training examples with a positive and {self.n_negatives} negatives")
        self.examples = kept

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def batches_per_epoch(self) -> int:
        return max(1, len(self.examples) // self.batch_size)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))}
        return self._perm[epoch]

    def _text(self, doc_id: str) -> str:
        try:
            return self.texts(doc_id) if callable(self.texts) else self.texts[doc_id]
        except KeyError:
            raise LsrError(f"document {doc_id!r} is not in the corpus") from None

    def batch(self, i: int) -> Batch:
        """Batch number `i` (0-based, across epochs; the last partial batch of an epoch is dropped)."""
        epoch, k = divmod(i, self.batches_per_epoch)
        rows = self._order(epoch)[k * self.batch_size : (k + 1) * self.batch_size]
        qids, queries, ids, docs, teach = [], [], [], [], []
        for j, r in enumerate(rows):
            ex = self.examples[int(r)]
            rng = np.random.default_rng([self.seed, i, j])
            pos = ex.positives[int(rng.integers(len(ex.positives)))]
            neg = [ex.negatives[int(x)] for x in rng.choice(len(ex.negatives), self.n_negatives, replace=False)]
            cand = [pos] + neg
            qids.append(ex.qid)
            queries.append(ex.query)
            ids.append(cand)
            docs.append([self._text(d) for d in cand])
            if ex.scores is not None:
                teach.append([[s[d] for d in cand] for s in ex.scores])
        teacher = np.asarray(teach, dtype=np.float32).transpose(1, 0, 2) if teach else None
        return Batch(qids, queries, ids, docs, teacher)
