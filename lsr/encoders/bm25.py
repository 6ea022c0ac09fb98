"""Lexical BM25 vectors: document weights are BM25 term scores, query weights are term counts,
so a dot product is the BM25 score. No model; the vocabulary is the corpus's own terms."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.encoders.base import DocumentPass, Encoder, Progress
from lsr.sparse import SparseVectors
from lsr.text import Analyzer

VOCAB_FILE = "vocab.txt"


def lucene_length_norm(lengths: np.ndarray) -> np.ndarray:
    """Document lengths as Lucene stores them: one byte each (SmallFloat.intToByte4), decoded.

    Lengths below 24 are exact; larger ones keep 4 significant bits. Matching this makes
    our BM25 scores equal Lucene's (and so Anserini's) for the same terms.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    free = 24  # NUM_FREE_VALUES = 255 - longToInt4(Integer.MAX_VALUE)
    out = lengths.copy()
    big = lengths >= free
    x = lengths[big] - free
    bits = np.zeros_like(x)
    nz = x > 0
    bits[nz] = np.floor(np.log2(x[nz])).astype(np.int64) + 1  # bit length
    shift = np.maximum(bits - 4, 0)
    mantissa = x >> shift  # top 4 bits (or all bits when fewer than 4)
    decoded = np.where(bits < 4, x, (mantissa | 8) << shift)  # drop what the shift lost
    out[big] = free + decoded
    return out


class Bm25Encoder(Encoder):
    """BM25 with Lucene's idf `log(1 + (N - df + 0.5) / (df + 0.5))`, k1=0.9, b=0.4 by default."""

    def __init__(self, k1: float = 0.9, b: float = 0.4, vocab: Sequence[str] = ()) -> None:
        self.k1, self.b = float(k1), float(b)
        self.analyzer = Analyzer()
        self.vocab: list[str] = list(vocab)
        self.term_ids: dict[str, int] = {t: i for i, t in enumerate(self.vocab)}

    @property
    def spec(self) -> dict[str, Any]:
        return {"type": "bm25", "k1": self.k1, "b": self.b, "analyzer": "english-snowball"}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], directory: Path | None, device: str | None = None) -> "Bm25Encoder":
        """The query side of a bm25 index: its parameters and the corpus vocabulary in
        `directory` (without a directory: no corpus yet, an empty vocabulary)."""
        vocab = (Path(directory) / VOCAB_FILE).read_text(encoding="utf-8").split("\n")[:-1] if directory else []
        return cls(k1=spec["k1"], b=spec["b"], vocab=vocab)

    def save(self, directory: Path) -> dict[str, Any]:
        (Path(directory) / VOCAB_FILE).write_text("".join(t + "\n" for t in self.vocab), encoding="utf-8")
        return self.spec

    def encode_queries(self, texts: Sequence[str]) -> SparseVectors:
        """Term counts of the known terms of each query."""
        rows = []
        for text in texts:
            counts = Counter(t for t in self.analyzer(text) if t in self.term_ids)
            rows.append(([self.term_ids[t] for t in counts], list(counts.values())))
        return SparseVectors.from_rows(rows, self.dim)

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = 256, progress: Progress | None = None
    ) -> SparseVectors:
        """BM25 vectors of `texts` with statistics taken from `texts` themselves; this encoder
        takes on their vocabulary, so its queries match these vectors."""
        run = self.document_pass()
        run.add(texts)
        vectors = run.finish()
        self.vocab, self.term_ids = run.encoder.vocab, run.encoder.term_ids
        if progress:
            progress(len(vectors))
        return vectors

    def document_pass(self, batch_size: int = 32, max_length: int = 256) -> "Bm25Pass":
        """A pass over a corpus that grows its own copy of the vocabulary: `pass.encoder` is the
        encoder fitted to that corpus; this one is left as it is (so it can index many)."""
        return Bm25Pass(Bm25Encoder(self.k1, self.b, self.vocab))

    def statistics(self, counts: SparseVectors, lengths: np.ndarray) -> tuple[np.ndarray, float]:
        """The corpus statistics of term counts `counts`: idf per term and the average length."""
        n_docs = len(counts)
        df = np.bincount(counts.indices, minlength=self.dim).astype(np.float64)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        with_text = lengths > 0  # Lucene's docCount counts documents that have the field
        return idf, float(lengths.sum() / max(1, with_text.sum()))

    def weigh(
        self, counts: SparseVectors, lengths: np.ndarray, statistics: tuple[np.ndarray, float] | None = None
    ) -> SparseVectors:
        """Turn term counts into BM25 document weights using `statistics` (idf, average length),
        by default those of `counts` itself."""
        idf, avgdl = statistics if statistics is not None else self.statistics(counts, lengths)
        norm = self.k1 * (1 - self.b + self.b * lucene_length_norm(lengths) / max(avgdl, 1e-9))
        norm_per_posting = np.repeat(norm, np.diff(counts.indptr))
        tf = counts.values.astype(np.float64)
        weights = idf[counts.indices] * tf / (tf + norm_per_posting)
        return SparseVectors(counts.indptr, counts.indices, weights.astype(np.float32), self.dim)


class Bm25Pass(DocumentPass):
    """Counts terms while streaming (growing `encoder`'s vocabulary, the pass's own), weighs
    them at the end with the corpus statistics."""

    def __init__(self, encoder: Bm25Encoder) -> None:
        self.encoder = encoder
        self.indptr = [0]
        self.indices: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.lengths: list[int] = []

    def add(self, texts: Sequence[str]) -> None:
        enc = self.encoder
        term_ids, vocab = enc.term_ids, enc.vocab
        for text in texts:
            terms = enc.analyzer(text)
            counts = Counter(terms)
            ids = np.empty(len(counts), dtype=np.int32)
            for j, term in enumerate(counts):
                tid = term_ids.get(term)
                if tid is None:
                    tid = term_ids[term] = len(vocab)
                    vocab.append(term)
                ids[j] = tid
            order = np.argsort(ids)
            self.indices.append(ids[order])
            self.counts.append(np.fromiter(counts.values(), np.float32, len(counts))[order])
            self.indptr.append(self.indptr[-1] + len(counts))
            self.lengths.append(len(terms))

    def ready(self) -> list[SparseVectors]:
        """None before the end: BM25 weights need the whole corpus's statistics."""
        return []

    def chunks(self, rows: int = 65536):
        """BM25 weights need the whole corpus's statistics: weighed at the end, `rows`
        documents at a time (the same weights as `finish()`; the weighing's float64
        temporaries stay the size of one slice)."""
        counts, lengths = self.term_counts()
        statistics = self.encoder.statistics(counts, lengths)
        for lo in range(0, max(len(counts), 1), rows):
            yield self.encoder.weigh(counts[lo : lo + rows], lengths[lo : lo + rows], statistics)

    def term_counts(self) -> tuple[SparseVectors, np.ndarray]:
        """The documents added so far as raw term counts, and their lengths in terms."""
        empty = [np.zeros(0, np.int32)]
        counts = SparseVectors(
            np.array(self.indptr, np.int64),
            np.concatenate(self.indices or empty),
            np.concatenate(self.counts or empty),
            self.encoder.dim,
        )
        return counts, np.array(self.lengths, np.int64)

    def finish(self) -> SparseVectors:
        return self.encoder.weigh(*self.term_counts())
