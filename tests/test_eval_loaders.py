"""Loaders: real files from ../shared/data, and malformed inputs named by file and line."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from lsr import LsrError, SparseVectors
from lsr.eval import (
    load_beir,
    load_qrels,
    load_queries,
    load_queries_smart,
    load_query_vectors,
    load_run,
    load_topics,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(path: Path, text: str, gz: bool = False) -> Path:
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ---- real data ----------------------------------------------------------------------------


def test_real_qrels_and_runs():
    cacm = load_qrels(DATA / "cacm/qrels.cacm.txt")
    assert len(cacm) == 52 and sum(map(len, cacm.values())) == 796
    assert cacm["1"]["CACM-1410"] == 1
    scifact = load_qrels(DATA / "scifact/qrels/test.tsv")  # BEIR TSV with a header
    assert len(scifact) == 300 and sum(map(len, scifact.values())) == 339
    assert scifact["1"] == {"31715818": 1}
    run = load_run(DATA / "reference-runs/run.seismic-toy.impact.anserini.txt")
    assert run["2"]["17"] == 12766.0 and list(run["2"])[:3] == ["17", "19", "11"]
    msmarco = load_qrels(DATA / "msmarco-dev/qrels.msmarco-passage.dev-subset.txt")
    assert sum(map(len, msmarco.values())) == 7437


def test_real_queries_autodetect():
    topics = load_queries(DATA / "cacm/topics.cacm.txt")
    assert len(topics) == 64
    assert topics["1"].startswith("What articles exist which deal with TSS")
    assert topics["2"] == "I am interested in articles written either by Prieve or Udo Pooch Prieve, B. Pooch, U."
    tsv = load_queries(DATA / "msmarco-dev/topics.msmarco-passage.dev-subset.tsv")
    assert len(tsv) == 6980 and tsv["1048585"] == "what is paula deen's brother"
    jsonl = load_queries(DATA / "scifact/queries.jsonl")
    assert len(jsonl) == 1109 and jsonl["0"] == "0-dimensional biomaterials lack inductive properties."


def test_load_beir():
    queries, qrels = load_beir(DATA / "scifact", "test")
    assert len(queries) == len(qrels) == 300 and set(queries) == set(qrels)
    queries, qrels = load_beir(DATA / "scifact", split="train")
    assert len(qrels) == 809
    with pytest.raises(LsrError, match="dev.tsv"):
        load_beir(DATA / "scifact", "dev")


def test_real_query_vectors():
    path = DATA / "msmarco-dev/queries.splade-pp-ed.jsonl.gz"
    ids, rows = load_query_vectors(path)
    assert len(ids) == 6980 and ids[0] == "1048585"
    assert rows[0]["brother"] == 2443.0
    assert np.mean([len(r) for r in rows]) == pytest.approx(43.9, abs=0.05)
    vocab = {}
    for r in rows[:50]:
        for t in r:
            vocab.setdefault(t, len(vocab))
    ids2, vecs = load_query_vectors_head(path, 50, vocab)
    assert isinstance(vecs, SparseVectors) and len(vecs) == 50 and vecs.dim == len(vocab)
    assert vecs.to_dicts(list(vocab))[0] == {t: float(np.float32(w)) for t, w in rows[0].items()}


def load_query_vectors_head(path, n, vocab, tmp=None):
    import tempfile

    with gzip.open(path, "rt", encoding="utf-8") as f:
        head = "".join(next(f) for _ in range(n))
    with tempfile.TemporaryDirectory() as d:
        return load_query_vectors(write(Path(d) / "q.jsonl", head), vocab)


# ---- small files and malformed lines ------------------------------------------------------


def test_trec_topics_top_format(tmp_path):
    path = write(
        tmp_path / "topics.txt",
        "<top>\n<num> Number: 301\n<title> International Organized Crime\n\n<desc> Description:\n"
        "Identify organizations.\n<narr> Narrative:\nA relevant document...\n</top>\n\n"
        "<top>\n<num> Number:302 \n<title> Topic: Poliomyelitis and\n Post-Polio\n</top>\n"
        "<top> <num> 303 </num> Free text, no title. </top>\n",
    )
    topics = load_topics(path)
    assert topics["301"] == "International Organized Crime"
    assert topics["302"] == "Poliomyelitis and Post-Polio"
    assert topics["303"] == "Free text, no title."
    assert load_queries(path)["301"] == "International Organized Crime"


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("<top>\n<num> 1\n<title> a\n", 1, "never closed"),
        ("<top>\n<title> a\n</top>\n", 1, "no <num>"),
        ("<top>\n<num> 1\n<title> a\n<top>\n", 4, "missing </top>"),
        ("<top>\n<num> 1\n<title> a\n</top>\nstray\n", 5, "outside"),
        ("<DOC>\n<DOCNO> 1 </DOCNO>\nx\n</top>\n", 4, "without a matching"),
    ],
)
def test_trec_topics_malformed(tmp_path, text, line, what):
    path = write(tmp_path / "t.txt", text)
    with pytest.raises(LsrError, match=what) as err:
        load_topics(path)
    assert str(err.value).startswith(f"{path}:{line}:")


def test_trec_topic_without_text(tmp_path):
    path = write(tmp_path / "t.txt", "<top>\n<num> 303\n<desc> Only a description.\n</top>\n")
    with pytest.raises(LsrError, match=r"t.txt:4: topic '303' has no text"):
        load_topics(path)


def test_qrels_formats_and_errors(tmp_path):
    assert load_qrels(write(tmp_path / "a.txt", "1 0 d1 1\n\n1 0 d2 0\n2 Q0 d1 2\n")) == {
        "1": {"d1": 1, "d2": 0},
        "2": {"d1": 2},
    }
    assert load_qrels(write(tmp_path / "b.tsv", "query-id\tcorpus-id\tscore\nq\td\t-1\n")) == {"q": {"d": -1}}
    assert load_qrels(write(tmp_path / "c.txt.gz", "1 0 d1 1\n", gz=True)) == {"1": {"d1": 1}}
    bad = write(tmp_path / "bad.txt", "1 0 d1 1\n1 0 d2\t0 extra\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:2: expected a qrels line"):
        load_qrels(bad)
    bad = write(tmp_path / "bad2.txt", "1 0 d1 1\n\n1 0 d2 high\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:3: the relevance label must be a whole number, got 'high'"):
        load_qrels(bad)
    with pytest.raises(LsrError, match="cannot open"):
        load_qrels(tmp_path / "missing.txt")


def test_classic_qrels_forms(tmp_path):
    """Float labels, SMART .REL files (`qid docid 0 0.000000`: each line a relevant document)
    and `qid docid` pairs."""
    assert load_qrels(write(tmp_path / "f.txt", "1 0 d1 1.000000\n1 0 d2 0.000000\n2 0 d1 2.0\n")) == {
        "1": {"d1": 1, "d2": 0},
        "2": {"d1": 2},
    }
    assert load_qrels(write(tmp_path / "f.tsv", "query-id\tcorpus-id\tscore\nq\td\t1.0\n")) == {"q": {"d": 1}}
    # CISI.REL / ADI.REL, and CACM's qrels.text with its leading zeros
    cisi = write(tmp_path / "CISI.REL", "     1     28\t0\t0.000000\n     1     35\t0\t0.000000\n    02     29 0 0\n")
    assert load_qrels(cisi) == {"1": {"28": 1, "35": 1}, "2": {"29": 1}}
    # MED.REL is TREC-ordered (qid 0 docid 1): read as TREC, not as SMART
    assert load_qrels(write(tmp_path / "MED.REL", "1 0 13 1\n1 0 14 1\n")) == {"1": {"13": 1, "14": 1}}
    assert load_qrels(write(tmp_path / "pairs.txt", "1 184\n1 29\n2 12\n")) == {"1": {"184": 1, "29": 1}, "2": {"12": 1}}
    bad = write(tmp_path / "half.txt", "1 0 d1 1\n1 0 d2 0.5\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:2: the relevance label must be a whole number, got '0.5'"):
        load_qrels(bad)


SMART_QUERIES = """.I 001
.W
What problems and concerns are there in making up descriptive titles?
What difficulties are involved in automatically retrieving articles from
approximate titles?
.I 2
.T
Cataloguing
.A
Someone
.W
How can actually pertinent data be retrieved?

.B
1984
"""


def test_smart_queries(tmp_path):
    path = write(tmp_path / "CISI.QRY", SMART_QUERIES)
    expected = {
        "1": "What problems and concerns are there in making up descriptive titles? What difficulties "
        "are involved in automatically retrieving articles from approximate titles?",
        "2": "Cataloguing How can actually pertinent data be retrieved?",
    }
    assert load_queries_smart(path) == expected
    assert load_queries(path) == expected  # sniffed from its first line
    bad = write(tmp_path / "bad.QRY", ".I 1\n.W\nok\n.I 2\n.A\nonly an author\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:4: query '2' has no .W \(or .T\) text"):
        load_queries(bad)
    bad = write(tmp_path / "bad2.QRY", ".I 1\n.W\nok\n.I 1 2\n.W\nx\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:4: expected '.I ID' \(one record id\)"):
        load_queries(bad)


def test_run_errors(tmp_path):
    run = load_run(write(tmp_path / "r.txt", "q1 Q0 d1 1 2.5 tag\nq1 Q0 d2 2 1 tag\n"))
    assert run == {"q1": {"d1": 2.5, "d2": 1.0}}
    bad = write(tmp_path / "r1.txt", "q1 Q0 d1 1 2.5 tag\nq1 Q0 d2 2 1\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:2: expected a run line"):
        load_run(bad)
    bad = write(tmp_path / "r2.txt", "q1 Q0 d1 1 abc tag\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:1: the score must be a number"):
        load_run(bad)
    bad = write(tmp_path / "r3.txt.gz", "q1 Q0 d1 1 1 t\nq1 Q0 d1 2 0.5 t\n", gz=True)
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:2: document 'd1' appears twice"):
        load_run(bad)


def test_queries_errors(tmp_path):
    bad = write(tmp_path / "q.tsv", "1\thello\n2 no tab\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:2: expected 'qid<TAB>query text'"):
        load_queries(bad)
    bad = write(tmp_path / "q.jsonl", '{"_id": "1", "text": "a"}\n{"_id": "2", "text": \n')
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:2: invalid JSON \(Expecting value at column 22\)$"):
        load_queries(bad)
    bad = write(tmp_path / "q2.jsonl", '{"_id": "1", "title": 3}\n')
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:1: the record has no 'text' field"):
        load_queries(bad)
    bad = write(tmp_path / "q3.jsonl", '{"text": "x"}\n')
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:1: the record has no '_id'"):
        load_queries(bad)
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("1\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:1: not valid UTF-8"):
        load_queries(bad)


def test_query_vectors_errors(tmp_path):
    good = '{"id": "a", "vector": {"x": 1, "y": 2.5}}\n'
    path = write(tmp_path / "v.jsonl.gz", good + '{"id": "b", "vector": {"y": 3}}\n', gz=True)
    ids, rows = load_query_vectors(path)
    assert ids == ["a", "b"] and rows == [{"x": 1.0, "y": 2.5}, {"y": 3.0}]
    ids, vecs = load_query_vectors(path, {"x": 0, "y": 1, "z": 2})
    assert vecs.dim == 3 and vecs.to_dense().tolist() == [[1.0, 2.5, 0.0], [0.0, 3.0, 0.0]]
    with pytest.raises(LsrError, match=rf"^{re.escape(str(path))}:1: token 'y' is not in the vocabulary"):
        load_query_vectors(path, {"x": 0})
    bad = write(tmp_path / "v2.jsonl", good + '{"id": "b", "vector": [1, 2]}\n')
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:2: expected a 'vector' object"):
        load_query_vectors(bad)
    bad = write(tmp_path / "v3.jsonl", good + json.dumps({"id": "c", "vector": {"x": "heavy"}}) + "\n")
    with pytest.raises(LsrError, match=rf"^{re.escape(str(bad))}:2: vector weights must be numbers"):
        load_query_vectors(bad)
