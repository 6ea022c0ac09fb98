"""Pseudo-relevance feedback: the query is changed as specified, on hand-made vectors and
through `Retriever` on a small BM25 index."""

import numpy as np
import pytest

from lsr.errors import LsrError
from lsr.prf import Prf, expand_dense, expand_sparse, forward_view
from lsr.sparse import SparseVectors


def _vectors(rows, dim):
    return SparseVectors.from_rows([(list(r), list(r.values())) for r in rows], dim)


DOCS = _vectors([{0: 1.0, 2: 4.0}, {2: 2.0, 3: 1.0, 4: 0.5}, {1: 9.0}], dim=5)


def test_sparse_prf_adds_the_pruned_mean_of_the_top_docs():
    queries = _vectors([{0: 1.0, 1: 2.0}], dim=5)
    # top-2 docs are rows 0 and 1: mean = {0: .5, 2: 3, 3: .5, 4: .25}; top-2 terms: 2 (3.0), then 0 and 3
    # tie at .5 -> the lower term id, 0; q' = q + .5 * {2: 3, 0: .5} = {0: 1.25, 1: 2, 2: 1.5}
    out = expand_sparse(queries, np.array([[0, 1, 2]]), DOCS, Prf(docs=2, terms=2, weight=0.5))
    assert out.to_dicts([str(i) for i in range(5)]) == [{"0": 1.25, "1": 2.0, "2": 1.5}]


def test_sparse_prf_keeps_every_original_term_and_skips_missing_hits():
    queries = _vectors([{3: 1.0}, {4: 1.0}], dim=5)
    # query 0: only row 2 was retrieved (-1 padding): mean = {1: 9}; query 1: nothing retrieved
    out = expand_sparse(queries, np.array([[2, -1], [-1, -1]]), DOCS, Prf(docs=2, terms=1, weight=1.0))
    assert out.to_dicts([str(i) for i in range(5)]) == [{"1": 9.0, "3": 1.0}, {"4": 1.0}]


def test_dense_rocchio_moves_towards_the_feedback_docs_and_renormalises():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    q = np.array([[1.0, 0.0]], np.float32)
    # q + 1.0 * mean(rows 1, 2) = (1.3, 0.9), normalised
    out = expand_dense(q, np.array([[1, 2, 0]]), emb, Prf(docs=2, weight=1.0))
    np.testing.assert_allclose(out[0], np.array([1.3, 0.9]) / np.hypot(1.3, 0.9), rtol=1e-6)


def test_forward_view_is_the_transpose_of_the_inverted_lists():
    from lsr.indexer import ExactIndex

    ix = ExactIndex.build(DOCS)
    assert forward_view(ix.list_ptr, ix.list_docs, ix.list_weights, ix.n_docs) == DOCS


def test_bad_settings_are_user_errors():
    with pytest.raises(LsrError, match="PRF"):
        Prf(docs=-1)
    assert not Prf(docs=0).enabled and not Prf(docs=3, weight=0).enabled and Prf(docs=3).enabled


CORPUS = [
    ("d1", "sparse retrieval with inverted indexes and term weights"),
    ("d2", "learned sparse retrieval expands documents with related terms"),
    ("d3", "inverted indexes store postings lists for every term"),
    ("d4", "cooking pasta needs boiling water and salt"),
    ("d5", "dense retrieval embeds queries and documents as vectors"),
]


@pytest.fixture(scope="module")
def bm25(tmp_path_factory):
    from lsr.retriever import Retriever

    root = tmp_path_factory.mktemp("prf")
    (root / "c.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in CORPUS))
    return Retriever.build(root / "c.tsv", model="bm25", path=root / "idx", index="exact")


def test_retriever_prf_is_a_second_round_with_the_expanded_query(bm25):
    prf = Prf(docs=2, terms=3, weight=0.5)
    queries = ["sparse retrieval", "postings"]
    vectors = bm25.encoder.encode_queries(queries)
    first, _ = bm25.index.search(vectors, k=5)
    expanded = expand_sparse(vectors, first, bm25.forward_vectors(), prf)
    assert expanded != vectors  # feedback added terms
    want = bm25.index.search(expanded, k=5)
    got = bm25.sparse_rows(queries, 5, prf=prf)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # with all of d3's terms fed back, "postings" reaches documents sharing no term with it
    assert [h.doc_id for h in bm25.search("postings", k=5)] == ["d3"]
    hits = bm25.search("postings", k=5, prf=Prf(docs=1, terms=10, weight=0.5))
    assert hits[0].doc_id == "d3" and {"d1", "d2"} <= {h.doc_id for h in hits}


def test_retriever_dense_mode_without_dense_index_is_a_user_error(bm25):
    with pytest.raises(LsrError, match="no dense index"):
        bm25.search("x", mode="dense")
    with pytest.raises(LsrError, match="mode"):
        bm25.search("x", mode="hybrid")
