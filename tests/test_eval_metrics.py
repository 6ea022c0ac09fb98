"""Metric parity with trec_eval (through pytrec_eval), and the golden Anserini runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.errors import LsrError
from lsr.eval import evaluate, evaluate_arrays, load_qrels, load_run

pytrec_eval = pytest.importorskip("pytrec_eval")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# ---- random runs and qrels with ties, graded and negative labels, missing queries ----------

QIDS = ["q1", "q2", "q10", "q3", "7"]
DOCS = ["d1", "d2", "d10", "d11", "d3", "a", "b", "B", "d100", "7", "q1", "z9"]
# few distinct values so ties are frequent; two values equal only in float32
SCORES = st.sampled_from([0.0, 1.0, 1.0 + 1e-9, 2.5, -1.0, 3.0, 1e-3, 7.25])

qrels_st = st.dictionaries(
    st.sampled_from(QIDS),
    # labels down to -1 only: trec_eval reads -2 as its internal "unjudged" code, and
    # pytrec_eval crashes on queries judged only -2 (other negatives: test_negative_labels)
    st.dictionaries(st.sampled_from(DOCS), st.integers(-1, 3), min_size=1, max_size=8),
    min_size=1,
    max_size=5,
)
run_st = st.dictionaries(
    st.sampled_from(QIDS + ["only-in-run"]),
    st.dictionaries(st.sampled_from(DOCS), SCORES | st.floats(-5, 5, width=32), min_size=1, max_size=12),
    max_size=6,
)
CUTOFFS = [1, 3, 5, 10]


def trec_order(hits: dict[str, float]) -> list[tuple[str, float]]:
    """trec_eval's ranking: float32 score descending, then document id descending."""
    return sorted(hits.items(), key=lambda x: (np.float32(x[1]), x[0]), reverse=True)


def truncate(run, k):
    return {q: dict(trec_order(h)[:k]) for q, h in run.items()}


def reference(qrels, run, measure, level, trunc=None):
    """Per-query pytrec_eval values for every qrels query (-c: missing queries score 0)."""
    r = truncate(run, trunc) if trunc else run
    ev = pytrec_eval.RelevanceEvaluator(qrels, {measure}, relevance_level=level)
    res = ev.evaluate({q: h for q, h in r.items() if h})
    return {q: res.get(q, {}).get(measure, 0.0) for q in qrels}


def our_vs_ref(qrels, run, level):
    pairs = [("map", "map", None), ("ndcg", "ndcg", None), ("mrr", "recip_rank", None)]
    for k in CUTOFFS:
        pairs += [
            (f"ndcg@{k}", f"ndcg_cut_{k}", None),
            (f"p@{k}", f"P_{k}", None),
            (f"recall@{k}", f"recall_{k}", None),
            (f"map@{k}", f"map_cut_{k}", None),
            (f"map@{k}", "map", k),  # -M k map
            (f"mrr@{k}", "recip_rank", k),  # -M k recip_rank
        ]
    ours = evaluate(qrels, run, [p[0] for p in pairs], per_query=True, relevance_level=level)
    means = evaluate(qrels, run, [p[0] for p in pairs], relevance_level=level)
    for name, measure, trunc in pairs:
        ref = reference(qrels, run, measure, level, trunc)
        assert ours[name].keys() == ref.keys()
        for q in ref:
            assert ours[name][q] == pytest.approx(ref[q], abs=1e-6), (name, measure, q)
        assert means[name] == pytest.approx(np.mean(list(ref.values())), abs=1e-6), name


# derandomize: a fixed example set. A random draw once made pytrec_eval's C code (the
# reference, not ours) spin forever; CI must not depend on avoiding that input by luck.
@settings(max_examples=50, deadline=None, derandomize=True)
@given(qrels_st, run_st, st.sampled_from([1, 2]))
def test_parity_with_pytrec_eval(qrels, run, level):
    our_vs_ref(qrels, run, level)


@settings(max_examples=25, deadline=None)
@given(qrels_st, run_st)
def test_arrays_path_equals_dict_path(qrels, run):
    metrics = ["ndcg@3", "mrr@5", "recall@5", "map", "p@3", "ndcg"]
    qids = list(run)
    docs = [list(run[q]) for q in qids]
    scores = [np.array(list(run[q].values())) for q in qids]
    for remove in (False, True):
        a = evaluate(qrels, run, metrics, per_query=True, remove_query_id=remove)
        b = evaluate_arrays(qrels, qids, docs, scores, metrics, per_query=True, remove_query_id=remove)
        assert a == b


def test_hand_checked_example():
    qrels = {"q1": {"a": 2, "b": 1, "c": 0, "d": -1}, "q2": {"x": 0}, "q3": {"y": 1}}
    # ranking: d(3) c(2) then the tie at 1.0 by id descending: e, b, a
    run = {"q1": {"a": 1.0, "b": 1.0, "c": 2.0, "d": 3.0, "e": 1.0}, "q2": {"x": 1.0}, "q9": {"k": 1.0}}
    r = evaluate(qrels, run, ["map", "mrr", "mrr@3", "p@5", "recall@4"], per_query=True)
    assert r["map"]["q1"] == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert r["mrr"]["q1"] == pytest.approx(1 / 4)
    assert r["mrr@3"]["q1"] == 0.0
    assert r["p@5"] == {"q1": 0.4, "q2": 0.0, "q3": 0.0}  # q9 ignored; q2, q3 count as 0
    assert r["recall@4"]["q1"] == 0.5
    # relevance level 2: only "a" is relevant
    assert evaluate(qrels, run, "map", per_query=True, relevance_level=2)["map"]["q1"] == pytest.approx(1 / 5)
    # means are over the 3 judged queries
    assert evaluate(qrels, run, ["p@5"])["p@5"] == pytest.approx(0.4 / 3)


@settings(max_examples=25, deadline=None)
@given(qrels_st, run_st, st.integers(-9, -1))
def test_negative_labels_are_non_relevant(qrels, run, neg):
    """Any negative label scores like 0: no gain, not relevant (checked beyond trec_eval's -1)."""
    metrics = ["ndcg@3", "ndcg", "mrr", "map", "p@5", "recall@3"]
    as_zero = {q: {d: max(r, 0) for d, r in j.items()} for q, j in qrels.items()}
    as_neg = {q: {d: (neg if r <= 0 and len(d) % 2 else r) for d, r in j.items()} for q, j in as_zero.items()}
    assert evaluate(as_neg, run, metrics, per_query=True) == evaluate(as_zero, run, metrics, per_query=True)


def test_remove_query_id():
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 9.0, "d1": 1.0}}
    assert evaluate(qrels, run, ["mrr"])["mrr"] == 0.5
    assert evaluate(qrels, run, ["mrr"], remove_query_id=True)["mrr"] == 1.0


def test_metric_names():
    qrels, run = {"q": {"a": 1}}, {"q": {"a": 1.0}}
    r = evaluate(qrels, run, ["nDCG@10", "MRR@10", "R@100", "P@10", "MAP", "recip_rank", "map@5"])
    assert r == {"nDCG@10": 1.0, "MRR@10": 1.0, "R@100": 1.0, "P@10": 0.1, "MAP": 1.0, "recip_rank": 1.0, "map@5": 1.0}
    trec_names = evaluate(qrels, run, ["ndcg_cut_10", "P_10", "recall_100", "map_cut_5"])
    assert list(trec_names.values()) == [1.0, 0.1, 1.0, 1.0]
    for bad in ["bpref", "recall", "p", "ndcg@0", "ndcg@x", "ndcg@10@2"]:
        with pytest.raises(LsrError):
            evaluate(qrels, run, [bad])


def test_defaults_and_empty_run():
    qrels = {"q": {"a": 1}, "r": {"b": 0}}
    r = evaluate(qrels, {})
    assert list(r) == ["ndcg@10", "mrr@10", "recall@100", "map", "p@10"]
    assert all(v == 0.0 for v in r.values())


# ---- golden Anserini runs (trec_eval -c figures) ------------------------------------------


@pytest.fixture(scope="module")
def scifact():
    return load_qrels(DATA / "scifact/qrels/test.tsv"), load_run(DATA / "reference-runs/run.scifact.bm25-flat.anserini.txt.gz")


def test_scifact_bm25_golden(scifact):
    qrels, run = scifact
    r = evaluate(qrels, run, ["ndcg@10", "recall@100", "recall@1000"])
    assert round(r["ndcg@10"], 4) == 0.6789
    assert round(r["recall@100"], 4) == 0.9253
    assert round(r["recall@1000"], 4) == 0.9767


def test_scifact_matches_pytrec_eval_per_query(scifact):
    qrels, run = scifact
    ours = evaluate(qrels, run, ["ndcg@10", "map", "p@10", "recall@100"], per_query=True)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "map", "P_10", "recall_100"}).evaluate(run)
    for name, measure in [("ndcg@10", "ndcg_cut_10"), ("map", "map"), ("p@10", "P_10"), ("recall@100", "recall_100")]:
        for q in qrels:
            assert ours[name][q] == pytest.approx(ref.get(q, {}).get(measure, 0.0), abs=1e-9)


def test_cacm_bm25_golden():
    qrels = load_qrels(DATA / "cacm/qrels.cacm.txt")
    run = load_run(DATA / "reference-runs/run.cacm.bm25.anserini.txt.gz")
    r = evaluate(qrels, run, ["map", "p@30"])
    assert round(r["map"], 4) == 0.3123
    assert round(r["p@30"], 4) == 0.1942
