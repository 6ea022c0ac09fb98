"""Training data: BEIR train qrels, triples, teacher score files, hard negatives from lsr's index."""

import json

import numpy as np
import pytest

from lsr.errors import LsrError
from lsr.train import data as D

def test_mined_negatives_exclude_positives_and_skip_top(tmp_path, make_beir):
    folder, docs, queries = make_beir(tmp_path / "beir")
    from lsr.eval.loaders import load_beir

    qs, qrels = load_beir(folder, "train")
    full = D.mine_negatives(folder / "corpus.jsonl", qs, qrels, "bm25", tmp_path / "cache", depth=20)
    assert set(full) == set(qs)
    for qid, negs in full.items():
        assert not set(negs) & set(qrels[qid]), "a judged positive was mined as a negative"
        assert len(negs) == len(set(negs))
    skipped = D.mine_negatives(folder / "corpus.jsonl", qs, qrels, "bm25", tmp_path / "cache", depth=5, skip_top=2)
    assert (tmp_path / "cache" / "manifest.json").exists()  # built once, then reused
    for qid in qs:
        assert skipped[qid] == full[qid][2:7]


def test_beir_batches_are_deterministic_and_cover_an_epoch(tmp_path, make_beir):
    folder, docs, queries = make_beir(tmp_path / "beir")
    negs = {q: [d for d in docs if d not in (f"d{q[1:]}", f"d{int(q[1:]) + 10}")] for q in queries}
    examples = D.beir_examples(folder, "train", negs)
    assert [e.qid for e in examples] == [f"q{i}" for i in range(6)]
    assert examples[0].positives == ["d0", "d10"]
    data = D.TrainingData(examples, docs, batch_size=2, n_negatives=3, seed=7)
    again = D.TrainingData(D.beir_examples(folder, "train", negs), docs, batch_size=2, n_negatives=3, seed=7)
    assert data.batches_per_epoch == 3
    epoch = [data.batch(i) for i in range(3)]
    assert sorted(q for b in epoch for q in b.qids) == sorted(queries)
    for i in (4, 1, 0, 5):  # any order: a batch depends on its number only
        a, b = data.batch(i), again.batch(i)
        assert (a.qids, a.doc_ids) == (b.qids, b.doc_ids)
    for b in epoch:
        for qid, cand, texts in zip(b.qids, b.doc_ids, b.docs):
            ex = next(e for e in examples if e.qid == qid)
            assert cand[0] in ex.positives and set(cand[1:]) <= set(ex.negatives) and len(set(cand[1:])) == 3
            assert texts == [docs[c] for c in cand]
    other = D.TrainingData(D.beir_examples(folder, "train", negs), docs, batch_size=2, n_negatives=3, seed=8)
    assert [other.batch(i).doc_ids for i in range(3)] != [data.batch(i).doc_ids for i in range(3)]


def test_triples_as_texts_and_as_ids(tmp_path):
    p = tmp_path / "triples.tsv"
    p.write_text("what is x\tx is a letter\tthe sky\nwhat is x\tx marks\tblue\nwho\tme\tyou\n")
    examples, texts = D.read_triples(p)
    assert [e.query for e in examples] == ["what is x", "who"]
    assert examples[0].positives == ["x is a letter", "x marks"] and examples[0].negatives == ["the sky", "blue"]
    assert texts["blue"] == "blue"
    p.write_text("q1\td1\td2\n")
    examples, texts = D.read_triples(p, {"q1": "query one"}, {"d1": "doc one", "d2": "doc two"})
    assert examples[0].query == "query one" and texts["d2"] == "doc two"
    p.write_text("q1\td1\n")
    with pytest.raises(LsrError, match=r"triples.tsv:1: expected 3"):
        D.read_triples(p)


def test_teacher_scores_give_a_T_by_B_by_C_array(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    rec = lambda q, s: json.dumps({"qid": q, "pos": [["d1", s]], "neg": [["d2", s - 1], ["d3", s - 2]]}) + "\n"  # noqa: E731
    a.write_text(rec("q1", 10.0) + rec("q2", 5.0))
    b.write_text(rec("q2", 0.5) + rec("q1", 0.9))
    scores = D.read_teacher_scores([a, b])
    examples = D.teacher_examples(scores, {"q1": "one", "q2": "two"})
    data = D.TrainingData(examples, {"d1": "x", "d2": "y", "d3": "z"}, batch_size=2, n_negatives=2, seed=0)
    batch = data.batch(0)
    assert batch.teacher.shape == (2, 2, 3)
    for j, qid in enumerate(batch.qids):
        first = 10.0 if qid == "q1" else 5.0
        second = 0.9 if qid == "q1" else 0.5
        expect = {"d1": 0.0, "d2": -1.0, "d3": -2.0}
        assert batch.teacher[0, j].tolist() == [first + expect[d] for d in batch.doc_ids[j]]
        assert batch.teacher[1, j].tolist() == pytest.approx([second + expect[d] for d in batch.doc_ids[j]])
    b.write_text(json.dumps({"qid": "q1", "pos": [["d1", 1]], "neg": [["d2", 0]]}) + "\n")
    with pytest.raises(LsrError, match=r"b.jsonl:1: no score for document 'd3'"):
        D.read_teacher_scores([a, b])
    b.write_text("{not json\n")
    with pytest.raises(LsrError, match=r"b.jsonl:1: invalid JSON"):
        D.read_teacher_scores([a, b])
