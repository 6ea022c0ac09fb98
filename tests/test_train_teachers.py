"""Teachers (bm25, an lsr model folder, dense MiniLM) and `lsr teacher-scores`, on real SciFact data."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr.corpus import CorpusReader
from lsr.errors import LsrError
from lsr.eval.loaders import load_beir
from lsr.train import teachers as teachers_module
from lsr.train.teachers import Bm25Teacher, DenseTeacher, default_dense_model, load_teacher, write_teacher_scores

SPLADE_TINY = Path(__file__).resolve().parents[2] / "shared" / "models" / "splade-tiny"
LSR = shutil.which("lsr", path=str(Path(sys.executable).parent)) or shutil.which("lsr")


@pytest.fixture(scope="module")
def scifact(data_dir):
    return data_dir / "scifact"


@pytest.fixture(scope="module")
def corpus_texts(scifact):
    return {doc.doc_id: doc.full_text() for doc in CorpusReader(scifact / "corpus.jsonl")}


@pytest.fixture(scope="module")
def judged_with_random(scifact, corpus_texts):
    """6 train queries, each with its first judged positive then 3 random corpus documents."""
    queries, qrels = load_beir(scifact, "train")
    rng = random.Random(13)
    ids = sorted(corpus_texts)
    rows = []
    for qid in list(queries)[:6]:
        positive = next(iter(qrels[qid]))
        randoms = [d for d in rng.sample(ids, 4) if d not in qrels[qid]][:3]
        rows.append((queries[qid], [corpus_texts[d] for d in [positive, *randoms]]))
    return [q for q, _ in rows], [docs for _, docs in rows]


@pytest.fixture(scope="module")
def dense():
    return DenseTeacher(device="cpu")


def _positive_wins(scores) -> int:
    return sum(int(s[0] > s[1:].max()) for s in scores)


def test_teachers_prefer_the_judged_positive(scifact, judged_with_random, dense):
    queries, docs = judged_with_random
    for teacher in (load_teacher("bm25", corpus=scifact), load_teacher(str(SPLADE_TINY)), dense):
        scores = teacher.score(queries, docs)
        assert [s.shape for s in scores] == [(4,)] * len(queries)
        assert all(s.dtype == np.float32 and np.isfinite(s).all() for s in scores)
        assert _positive_wins(scores) >= 4, (teacher.name, scores)  # most of the 6 queries


def test_teacher_names():
    assert load_teacher(str(SPLADE_TINY)).name == "splade-tiny"
    assert teachers_module.parse_teacher("dense") == ("dense", None, "dense")
    assert teachers_module.parse_teacher(f"dense:{SPLADE_TINY}")[2] == "dense-splade-tiny"


def test_bm25_teacher_scores_equal_the_bm25_index(tmp_path, corpus_texts):
    from lsr.retriever import Retriever

    ids = sorted(corpus_texts)[:40]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d, "title": "", "text": corpus_texts[d]}) + "\n" for d in ids))
    retriever = Retriever.build(corpus, model="bm25", path=tmp_path / "index", index="exact")
    teacher = Bm25Teacher([corpus_texts[d] for d in ids])
    queries = ["cancer cells in mice", "protein expression in the brain", "risk of heart disease"]
    hits, index_scores = retriever.search_batch(queries, k=5)
    ours = teacher.score(queries, [[corpus_texts[d] for d in row] for row in hits])
    for row, got, expected in zip(hits, ours, index_scores):
        assert len(row) > 0
        np.testing.assert_allclose(got, expected[: len(row)], rtol=1e-5)
    # a text outside the corpus is weighed with the corpus's statistics; unknown words score nothing
    (alone,) = teacher.score(["cancer"], [["cancer zzzunknownword"]])
    assert alone[0] > 0 and teacher.score(["zzzunknownword"], [["zzzunknownword"]])[0][0] == 0


def test_a_document_is_encoded_once_per_teacher():
    teacher = Bm25Teacher(["green tea leaves", "black coffee beans", "tea and coffee"])
    encoded = []
    real = teacher._documents
    teacher._documents = lambda texts: (encoded.extend(texts), real(texts))[1]
    first = teacher.score(["tea", "coffee"], [["green tea leaves", "tea and coffee"], ["tea and coffee", "black coffee beans"]])
    again = teacher.score(["coffee"], [["black coffee beans", "green tea leaves"]])
    assert sorted(encoded) == ["black coffee beans", "green tea leaves", "tea and coffee"]
    assert first[1][1] == again[0][0] > 0 and first[0][0] > 0 == again[0][1]


def test_dense_cosines_equal_sentence_transformers(judged_with_random, dense):
    from sentence_transformers import SentenceTransformer

    queries, docs = judged_with_random
    queries, docs = queries[:2], docs[:2]
    model = SentenceTransformer(str(default_dense_model()), device="cpu")
    q = model.encode(queries, normalize_embeddings=True, convert_to_numpy=True)
    for i, got in enumerate(dense.score(queries, docs)):
        d = model.encode(docs[i], normalize_embeddings=True, convert_to_numpy=True)
        np.testing.assert_allclose(got, d @ q[i], atol=1e-5)
    assert dense.score(["x"], [[]])[0].shape == (0,)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "unknown teacher 'nope'"),
        ("dense:/no/such/folder", "is not a folder"),
    ],
)
def test_bad_teacher_specs(spec, message):
    with pytest.raises(LsrError, match=message):
        load_teacher(spec)
    with pytest.raises(LsrError, match="needs a corpus"):
        load_teacher("bm25")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lsr-cache")


def test_write_teacher_scores_leaves_nothing_when_a_teacher_fails(scifact, tmp_path, cache, monkeypatch):
    real = teachers_module.load_teacher

    def second_fails(spec, **kwargs):
        if spec != "bm25":
            raise LsrError("boom")
        return real(spec, **kwargs)

    monkeypatch.setattr(teachers_module, "load_teacher", second_fails)
    out = tmp_path / "scores"
    with pytest.raises(LsrError, match="boom"):
        write_teacher_scores(scifact, ["bm25", "dense"], out, negatives=2, max_queries=3, cache=cache)
    assert not out.exists() or list(out.iterdir()) == []


def _lsr(*args, env):
    assert LSR, "the lsr console script is not installed"
    return subprocess.run([LSR, *map(str, args)], capture_output=True, text=True, env={**os.environ, **env}, timeout=600)


def test_cli_writes_teacher_score_files(scifact, tmp_path, cache):
    _, qrels = load_beir(scifact, "train")
    out = tmp_path / "scores"
    result = _lsr("teacher-scores", scifact, "--split", "train", "--teacher", "bm25", "--teacher", SPLADE_TINY,
                  "--negatives", 2, "--max-queries", 5, "--output", out, env={"LSR_CACHE": str(cache)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bm25.jsonl", "splade-tiny.jsonl"]
    files = {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in out.iterdir()}
    for name, rows in files.items():
        assert [r["qid"] for r in rows] == list(qrels)[:5]
        for r in rows:
            assert set(r) == {"qid", "pos", "neg"}
            assert [d for d, _ in r["pos"]] == list(qrels[r["qid"]])
            assert len(r["neg"]) == 2 and not any(d in qrels[r["qid"]] for d, _ in r["neg"])
            assert all(isinstance(s, float) for _, s in r["pos"] + r["neg"])
    # both teachers scored the same candidates; bm25 ranks its own negatives in order
    strip = lambda rows: [(r["qid"], [d for d, _ in r["pos"]], [d for d, _ in r["neg"]]) for r in rows]  # noqa: E731
    assert strip(files["bm25"]) == strip(files["splade-tiny"])
    for r in files["bm25"]:
        assert np.all(np.diff([s for _, s in r["neg"]]) <= 1e-4)

    # one teacher: the output is the file itself; the same data gives the same candidates
    single = tmp_path / "bm25.jsonl"
    assert write_teacher_scores(scifact, ["bm25"], single, negatives=1, max_queries=5, cache=cache) == {"bm25": single}
    assert [json.loads(line)["neg"] for line in single.read_text().splitlines()] == [r["neg"][:1] for r in files["bm25"]]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_cli_bad_teacher_is_one_line(scifact, tmp_path):
    out = tmp_path / "x.jsonl"
    result = _lsr("teacher-scores", scifact, "--teacher", "no-such-teacher", "--output", out, env={})
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unknown teacher 'no-such-teacher' (expected bm25, dense, dense:PATH or a model folder)"
    assert not out.exists()
