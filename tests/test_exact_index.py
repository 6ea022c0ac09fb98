import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import random_vectors

from lsr import SparseVectors
from lsr.indexer import ExactIndex, IndexFormatError


def brute_force(docs: SparseVectors, queries: SparseVectors, k: int):
    """Reference: scipy dot products, ties to the lower row, only docs sharing a term."""
    scores = (queries.to_scipy() @ docs.to_scipy().T).toarray().astype(np.float32)
    shares = ((queries.to_scipy() != 0).astype(np.int32) @ (docs.to_scipy() != 0).astype(np.int32).T).toarray() > 0
    out = []
    for q in range(len(queries)):
        cand = np.flatnonzero(shares[q])
        order = cand[np.lexsort((cand, -scores[q, cand]))][:k]
        out.append((order, scores[q, order]))
    return out




@settings(max_examples=40, deadline=None)
@given(
    n_docs=st.integers(1, 300),
    dim=st.integers(1, 80),
    density=st.floats(0.01, 0.3),
    k=st.integers(1, 20),
    integer=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_equals_brute_force(n_docs, dim, density, k, integer, seed):
    docs = random_vectors(n_docs, dim, density, seed, integer)
    queries = random_vectors(12, dim, density * 2 if density < 0.5 else density, seed + 1, integer)
    index = ExactIndex.build(docs)
    expected = brute_force(docs, queries, k)
    for threads in (1, 2):
        ids, scores = index.search(queries, k=k, threads=threads)
        for q, (order, exp_scores) in enumerate(expected):
            n = len(order)
            assert ids[q, :n].tolist() == order.tolist()
            np.testing.assert_allclose(scores[q, :n], exp_scores, rtol=1e-5)
            assert np.all(ids[q, n:] == -1) and np.all(np.isneginf(scores[q, n:]))
    # one query at a time (the NumPy path) gives bit-identical results
    batch_ids, batch_scores = index.search(queries, k=k)
    for q in range(len(queries)):
        one_ids, one_scores = index.search(queries[q : q + 1], k=k)
        assert np.array_equal(one_ids[0], batch_ids[q]) and np.array_equal(one_scores[0], batch_scores[q])


def test_query_terms_beyond_the_index_dimension_are_ignored():
    docs = random_vectors(50, 10, 0.3, 0)
    q = SparseVectors.from_rows([([3, 15], [1.0, 5.0])], dim=20)
    index = ExactIndex.build(docs)
    ids, scores = index.search(q, k=5)
    ref = SparseVectors.from_rows([([3], [1.0])], dim=10)
    assert np.array_equal(ids, index.search(ref, k=5)[0])


def test_save_load_round_trip_and_version_check(tmp_path):
    docs = random_vectors(500, 100, 0.05, 3)
    queries = random_vectors(20, 100, 0.1, 4)
    index = ExactIndex.build(docs)
    index.save(tmp_path / "ix")
    loaded = ExactIndex.load(tmp_path / "ix")
    assert isinstance(loaded.list_docs, np.memmap)
    for a, b in zip(index.search(queries, k=10), loaded.search(queries, k=10)):
        assert np.array_equal(a, b)
    manifest_path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 999
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="version 999"):
        ExactIndex.load(tmp_path / "ix")


def test_truncated_file_is_detected(tmp_path):
    ExactIndex.build(random_vectors(100, 30, 0.1, 5)).save(tmp_path / "ix")
    target = tmp_path / "ix" / "list_docs.npy"
    target.write_bytes(target.read_bytes()[:-8])
    with pytest.raises(IndexFormatError, match="truncated"):
        ExactIndex.load(tmp_path / "ix")


# ---- rank-safe pruning: the same answer as the term-at-a-time scan it replaced ----------------


def scan(index: ExactIndex, queries: SparseVectors, k: int):
    """The plain term-at-a-time scan: float32 sums in query-term order over every posting,
    only documents sharing a term, ties to the lower row (ids and scores as `search` returns)."""
    ids = np.full((len(queries), k), -1, np.int64)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    for q in range(len(queries)):
        acc = np.zeros(len(index), np.float32)
        seen = np.zeros(len(index), bool)
        for t, w in zip(*queries.row(q)):
            if t < index.dim:
                a, b = index.list_ptr[t], index.list_ptr[t + 1]
                acc[index.list_docs[a:b]] += np.float32(w) * index.list_weights[a:b]
                seen[index.list_docs[a:b]] = True
        cand = np.flatnonzero(seen)
        best = cand[np.lexsort((cand, -acc[cand]))][:k]
        ids[q, : len(best)], scores[q, : len(best)] = best, acc[best]
    return ids, scores


def assert_same_as_scan(index, queries, k):
    expected_ids, expected_scores = scan(index, queries, k)
    for threads in (1, 2):
        ids, scores = index.search(queries, k=k, threads=threads)
        assert np.array_equal(ids, expected_ids) and np.array_equal(scores, expected_scores)
    for q in range(len(queries)):  # one query at a time: the Numba kernel, and NumPy before Numba is imported
        for numpy_path in (False, True):
            with pytest.MonkeyPatch.context() as m:
                if numpy_path:
                    m.delitem(sys.modules, "numba")
                ids, scores = index.search(queries[q : q + 1], k=k)
            assert np.array_equal(ids[0], expected_ids[q]) and np.array_equal(scores[0], expected_scores[q])


@settings(max_examples=30, deadline=None)
@given(
    n_docs=st.integers(1, 1500),
    dim=st.integers(1, 200),
    density=st.floats(0.005, 0.2),
    k=st.integers(1, 120),
    integer=st.booleans(),
    signed=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_pruned_search_equals_the_scan(n_docs, dim, density, k, integer, signed, seed):
    """Random documents over many blocks of 64 rows; integer weights make ties, negative
    weights (documents and queries) make block maxima no bound, which must turn pruning off."""
    docs = random_vectors(n_docs, dim, density, seed, integer)
    queries = random_vectors(6, dim, min(0.5, density * 3), seed + 1, integer)
    if signed:
        docs.values[::3] *= -1
        queries.values[::4] *= -1
    assert_same_as_scan(ExactIndex.build(docs), queries, min(k, n_docs))


def test_pruned_search_equals_the_scan_on_scifact_bm25_and_splade_toy(data_dir):
    from lsr.encoders.bm25 import Bm25Encoder
    from lsr.formats.documents import CorpusReader, join_title

    texts = [join_title(d.title, d.text) for d in CorpusReader(data_dir / "scifact" / "corpus.jsonl")]
    encoder = Bm25Encoder()
    index = ExactIndex.build(encoder.encode_documents(texts))
    claims = [json.loads(line)["text"] for line in (data_dir / "scifact" / "queries.jsonl").open(encoding="utf-8")]
    for k in (1, 10, 100):
        assert_same_as_scan(index, encoder.encode_queries(claims[:40]), k)

    _, docs, vocab = SparseVectors.read_jsonl(data_dir / "splade-toy" / "documents.jsonl")
    _, queries, _ = SparseVectors.read_jsonl(data_dir / "splade-toy" / "queries.jsonl", {t: i for i, t in enumerate(vocab)})
    assert_same_as_scan(ExactIndex.build(docs), queries, 10)


def test_one_query_in_a_fresh_process_stays_out_of_numba_with_the_same_answer(tmp_path):
    """`lsr search` on an exact index: one query, NumPy only (no Numba start-up), and the
    answer the Numba kernel gives in a process that has it."""
    import subprocess

    docs, queries = random_vectors(3000, 300, 0.03, 11), random_vectors(1, 300, 0.1, 12)
    index = ExactIndex.build(docs)
    index.save(tmp_path / "ix")
    np.save(tmp_path / "q.npy", np.stack([queries.indices.astype(np.float64), queries.values]))
    code = (
        "import sys, numpy as np, lsr.indexer\n"
        "from lsr import SparseVectors\n"
        f"t, w = np.load({str(tmp_path / 'q.npy')!r})\n"
        "q = SparseVectors.from_rows([(t.astype(np.int64).tolist(), w.tolist())], 300)\n"
        f"ids, scores = lsr.indexer.load({str(tmp_path / 'ix')!r}).search(q, k=10)\n"
        "print('numba' in sys.modules, ids[0].tolist(), scores[0].tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    ids, scores = index.search(queries[[0, 0]], k=10)  # two rows: the Numba kernel
    assert out[0] == "False"
    assert out[1].strip() == f"{ids[0].tolist()} {scores[0].tolist()}"


def test_single_query_scratch_is_reused_and_grows_across_calls():
    """One-query calls reuse their thread's block-max scratch: longer queries, other k, and two
    threads at once give the scan's answer, and a short query after a long one still does."""
    import threading

    import numba  # noqa: F401 - one query takes the Numba kernel once Numba is imported

    docs = random_vectors(3000, 300, 0.03, seed=5)
    queries = random_vectors(40, 300, 0.02, seed=6)
    short_first = np.argsort(np.diff(queries.indptr), kind="stable")
    index = ExactIndex.build(docs)
    for k in (3, 10, 7):
        expected_ids, expected_scores = scan(index, queries, k)
        for q in list(short_first) + list(short_first[:5]):
            ids, scores = index.search(queries[q : q + 1], k=k)
            assert np.array_equal(ids[0], expected_ids[q]) and np.array_equal(scores[0], expected_scores[q])
    assert index._local.scratch.slot.shape[0] >= np.diff(queries.indptr).max()
    expected_ids, _ = scan(index, queries, 10)
    failures = []

    def run():
        for q in range(len(queries)):
            if not np.array_equal(index.search(queries[q : q + 1], k=10)[0][0], expected_ids[q]):
                failures.append(q)

    workers = [threading.Thread(target=run) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not failures
