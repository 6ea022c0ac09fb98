"""SeismicIndex: exactness with approximation switched off, recall, persistence, threads,
determinism, and the Seismic / BigANN binary formats (round trips with pyseismic-lsr)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.indexer.formats import FormatError, read_csr, read_seismic_bin, write_csr, write_seismic_bin
from lsr.indexer.seismic import SeismicIndex
from lsr.indexer.storage import IndexFormatError
from lsr.sparse import SparseVectors


def _random(n, dim, density, seed):
    rng = np.random.default_rng(seed)
    m = sp.random(n, dim, density=density, format="csr", random_state=rng, dtype=np.float32)
    m.sort_indices()
    return SparseVectors.from_scipy(m)


def _topical(n, dim, seed, n_topics=20, terms=30):
    """Documents that share topics (so clustering has structure to find)."""
    rng = np.random.default_rng(seed)
    topics = [rng.choice(dim, size=40, replace=False) for _ in range(n_topics)]
    rows = []
    for _ in range(n):
        t = topics[rng.integers(n_topics)]
        cols = np.unique(np.concatenate([rng.choice(t, terms // 2, replace=False), rng.integers(0, dim, terms // 2)]))
        vals = rng.gamma(2.0, 1.0, size=len(cols)).astype(np.float32)
        rows.append((cols.tolist(), vals.tolist()))
    return SparseVectors.from_rows(rows, dim)


def _exact(queries, docs, k):
    s = (queries.to_scipy() @ docs.to_scipy().T).toarray()
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(s, ids, 1)


def _recall(ids, gt):
    return np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(ids, gt)])


@pytest.fixture(scope="module")
def data():
    docs = _topical(3000, 1000, seed=1)
    queries = _topical(40, 1000, seed=2)
    return docs, queries


@pytest.fixture(scope="module")
def index(data):
    return SeismicIndex.build(data[0], n_postings=200, centroid_fraction=0.1, seed=0)


def test_exact_when_approximation_is_off(data):
    docs, queries = data
    idx = SeismicIndex.build(docs, n_postings=10**6, seed=0, values="float32")
    assert idx._a["fwd_words"].dtype == np.uint64
    ids, scores = idx.search(queries, k=10, query_cut=10**6, heap_factor=0.0)
    gt, gt_scores = _exact(queries, docs, 10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (40, 10)
    np.testing.assert_array_equal(ids, gt)
    np.testing.assert_allclose(scores, gt_scores, rtol=1e-5)


def test_recall_conservative(data, index):
    docs, queries = data
    gt, _ = _exact(queries, docs, 10)
    ids, _ = index.search(queries, k=10, query_cut=30, heap_factor=0.9)
    assert _recall(ids, gt) >= 0.99


def test_default_knobs_give_useful_recall(data, index):
    docs, queries = data
    gt, _ = _exact(queries, docs, 10)
    ids, scores = index.search(queries, k=10)
    assert _recall(ids, gt) >= 0.8
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_pruning_budget_and_cap():
    docs = _random(2000, 100, 0.1, seed=3)
    idx = SeismicIndex.build(docs, n_postings=10, max_fraction=1.5)
    a = idx._a
    lens = np.diff(a["list_block_ptr"])  # blocks per list
    post_lens = np.array([
        a["block_doc_ptr"][a["list_block_ptr"][t + 1]] - a["block_doc_ptr"][a["list_block_ptr"][t]]
        for t in range(100)
    ])
    assert post_lens.sum() <= 10 * 100
    assert post_lens.max() <= 15
    assert np.all(lens <= np.maximum(post_lens, 1))
    # the postings kept are the largest of their list
    m = docs.to_scipy().tocsc()
    t = int(np.argmax(post_lens))
    kept = a["post_docs"][a["block_doc_ptr"][a["list_block_ptr"][t]] : a["block_doc_ptr"][a["list_block_ptr"][t + 1]]]
    kept = a["doc_ids"][kept]  # index numbers → collection rows
    col = m[:, t].toarray().ravel()
    assert col[kept].min() >= np.sort(col)[::-1][len(kept) - 1]


def _kept_rows(idx, t):
    a = idx._a
    lo, hi = a["block_doc_ptr"][a["list_block_ptr"][t]], a["block_doc_ptr"][a["list_block_ptr"][t + 1]]
    return sorted(a["doc_ids"][a["post_docs"][lo:hi]].tolist())


@pytest.mark.parametrize(
    "values, cap, kept",
    [
        ([1.0, 2.0, 2.0, 3.0, 2.0, 2.0], 4, [1, 2, 3, 4]),  # ties at the cap: the lower rows
        ([-1.0, 2.0, -3.0, 0.5, 2.0, 2.0], 4, [1, 3, 4, 5]),  # signed values order as numbers
        ([-0.0, 0.0, -1.0, -2.0, -0.5, 0.0], 2, [1, 5]),  # -0.0 just below 0.0, as the global threshold
    ],
)
def test_list_cap_keeps_the_largest_ties_by_row(values, cap, kept):
    """Each list keeps its int(n_postings * max_fraction) largest postings, ties to the lower
    row (here no global pruning: the budget, n_postings * dim, holds every posting)."""
    docs = SparseVectors.from_rows([([0], [v]) for v in values], 6)
    idx = SeismicIndex.build(docs, n_postings=cap, max_fraction=1.0, min_cluster_size=0)
    assert _kept_rows(idx, 0) == kept


def test_top_components_are_the_largest_ties_in_stored_order():
    from lsr.indexer.seismic import _top_components

    rng = np.random.default_rng(4)
    rows = [(list(range(n)), rng.integers(0, 4, n).astype(float).tolist()) for n in rng.integers(1, 40, 300)]
    docs = SparseVectors.from_rows(rows, 40)
    top_c, top_v = _top_components(docs.indptr, docs.indices, docs.values, 15, 2)
    for d, (cols, vals) in enumerate(rows):
        if len(cols) <= 15:
            want = cols  # all of them, in stored order
        else:
            want = [cols[i] for i in np.argsort(-np.array(vals), kind="stable")[:15]]
        assert top_c[d, : len(want)].tolist() == want
        assert top_v[d, : len(want)].tolist() == [vals[cols.index(c)] for c in want]
        assert (top_c[d, len(want) :] == -1).all()


def test_padding_and_edge_queries(data):
    docs, _ = data
    small = docs[np.arange(5)]
    idx = SeismicIndex.build(small, n_postings=100)
    q = SparseVectors.from_rows([([], []), (small.row(0)[0].tolist(), small.row(0)[1].tolist())], docs.dim)
    ids, scores = idx.search(q, k=8, query_cut=100, heap_factor=0.0)
    assert np.all(ids[0] == -1) and np.all(np.isneginf(scores[0]))
    assert ids[1, 0] == 0 and np.all(ids[1, 5:] == -1) and np.all(np.isneginf(scores[1, 5:]))
    # queries with a larger dim than the index: out-of-range terms are ignored
    wide = SparseVectors(q.indptr, q.indices, q.values, docs.dim + 50)
    np.testing.assert_array_equal(idx.search(wide, k=8, query_cut=100, heap_factor=0.0)[0], ids)


def test_threads_equal_single(data, index):
    _, queries = data
    one = index.search(queries, k=10, query_cut=5, heap_factor=0.8, threads=1)
    two = index.search(queries, k=10, query_cut=5, heap_factor=0.8, threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    # single-query calls agree with the batch
    for i in range(0, 40, 7):
        r = index.search(queries[i : i + 1], k=10, query_cut=5, heap_factor=0.8)
        np.testing.assert_array_equal(r[0][0], one[0][i])


def test_concurrent_callers_equal_serial(data, index):
    """The search kernels release the GIL (lsr serve overlaps requests): callers on several
    Python threads at once each get their own scratch and the serial answers."""
    from concurrent.futures import ThreadPoolExecutor

    _, queries = data
    expected = index.search(queries, k=10, query_cut=5, heap_factor=0.8)

    def one(i):
        return index.search(queries[i : i + 1], k=10, query_cut=5, heap_factor=0.8)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            for i, (ids, scores) in enumerate(pool.map(one, range(len(queries)))):
                np.testing.assert_array_equal(ids[0], expected[0][i])
                np.testing.assert_array_equal(scores[0], expected[1][i])


def test_deterministic_for_a_seed(data, index):
    docs, _ = data
    again = SeismicIndex.build(docs, n_postings=200, centroid_fraction=0.1, seed=0, threads=1)
    for name, arr in index._a.items():
        np.testing.assert_array_equal(arr, again._a[name], err_msg=name)
    other = SeismicIndex.build(docs, n_postings=200, centroid_fraction=0.1, seed=1)
    assert not np.array_equal(index._a["post_docs"], other._a["post_docs"])


def test_build_from_chunks(data, index):
    docs, _ = data
    chunks = iter([docs[0:1000], docs[1000:1001], docs[1001:3000]])
    chunked = SeismicIndex.build(chunks, n_postings=200, centroid_fraction=0.1, seed=0)
    for name, arr in index._a.items():
        np.testing.assert_array_equal(arr, chunked._a[name], err_msg=name)


def test_build_streams_chunks_through_a_scratch_file(tmp_path, data, index):
    """An iterable of chunks is consumed one chunk at a time (the forward index goes to a
    memory-mapped scratch file, removed afterwards, also when the stream fails)."""
    import weakref

    docs, _ = data
    alive = []

    def chunks():
        for lo in range(0, len(docs), 700):
            c = docs[lo : lo + 700]
            alive.append(weakref.ref(c))
            # this chunk, and the previous one still held by the consumer's loop variable
            assert sum(r() is not None for r in alive) <= 2
            yield c

    built = SeismicIndex.build(chunks(), n_postings=200, centroid_fraction=0.1, seed=0, scratch_dir=tmp_path)
    for name, arr in index._a.items():
        np.testing.assert_array_equal(arr, built._a[name], err_msg=name)
    assert list(tmp_path.iterdir()) == []

    def failing():
        yield docs[:100]
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        SeismicIndex.build(failing(), scratch_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no vectors"):
        SeismicIndex.build(iter([]), scratch_dir=tmp_path)


def test_save_load(tmp_path, data, index):
    _, queries = data
    index.save(tmp_path / "idx")
    loaded = SeismicIndex.load(tmp_path / "idx")
    assert isinstance(loaded._a["fwd_words"], np.memmap)
    assert loaded.params == index.params and len(loaded) == len(index)
    a = index.search(queries, k=10, query_cut=8, heap_factor=0.7)
    b = loaded.search(queries, k=10, query_cut=8, heap_factor=0.7, threads=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # not a seismic index
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError):
        SeismicIndex.load(tmp_path / "empty")


# ---- formats -----------------------------------------------------------------------------


def test_seismic_bin_round_trip_and_layout(tmp_path):
    v = _random(50, 300, 0.05, seed=4)
    write_seismic_bin(tmp_path / "v.bin", v)
    assert read_seismic_bin(tmp_path / "v.bin", dim=300) == v
    # independent writer following Seismic's converter script layout
    with open(tmp_path / "ref.bin", "wb") as f:
        f.write(struct.pack("<I", len(v)))
        for i in range(len(v)):
            c, w = v.row(i)
            f.write(struct.pack("<I", len(c)))
            f.write(struct.pack(f"<{len(c)}I", *c.tolist()))
            f.write(struct.pack(f"<{len(c)}f", *w.tolist()))
    assert (tmp_path / "ref.bin").read_bytes() == (tmp_path / "v.bin").read_bytes()
    (tmp_path / "bad.bin").write_bytes(b"\x05\x00\x00\x00\x09\x00\x00\x00")
    with pytest.raises(FormatError):
        read_seismic_bin(tmp_path / "bad.bin")


def test_csr_round_trip(tmp_path):
    v = _random(40, 120, 0.1, seed=5)
    write_csr(tmp_path / "v.csr", v)
    assert read_csr(tmp_path / "v.csr") == v
    # rows with unsorted columns are sorted on read
    with open(tmp_path / "u.csr", "wb") as f:
        np.array([1, 10, 3], dtype="<i8").tofile(f)
        np.array([0, 3], dtype="<i8").tofile(f)
        np.array([7, 2, 5], dtype="<i4").tofile(f)
        np.array([1.0, 2.0, 3.0], dtype="<f4").tofile(f)
    u = read_csr(tmp_path / "u.csr")
    assert u.indices.tolist() == [2, 5, 7] and u.values.tolist() == [2.0, 3.0, 1.0]
    # several rows (one empty): columns may fall between rows, only the last row is unsorted
    with open(tmp_path / "m.csr", "wb") as f:
        np.array([4, 10, 6], dtype="<i8").tofile(f)
        np.array([0, 2, 4, 4, 6], dtype="<i8").tofile(f)
        np.array([5, 9, 1, 3, 8, 2], dtype="<i4").tofile(f)
        np.array([1, 2, 3, 4, 5, 6], dtype="<f4").tofile(f)
    m = read_csr(tmp_path / "m.csr")
    assert m.indptr.tolist() == [0, 2, 4, 4, 6]
    assert m.indices.tolist() == [5, 9, 1, 3, 2, 8] and m.values.tolist() == [1, 2, 3, 4, 6, 5]
    (tmp_path / "bad.csr").write_bytes(b"\x00" * 10)
    with pytest.raises(FormatError):
        read_csr(tmp_path / "bad.csr")


def test_pyseismic_reads_what_we_write(tmp_path):
    seismic = pytest.importorskip("seismic")
    docs = _topical(400, 200, seed=6)
    queries = _topical(5, 200, seed=7)
    write_seismic_bin(tmp_path / "docs.bin", docs)
    write_seismic_bin(tmp_path / "queries.bin", queries)
    theirs = seismic.SeismicIndexRaw.build(str(tmp_path / "docs.bin"), n_postings=10**4)
    assert theirs.len == len(docs) and theirs.nnz == docs.nnz
    ours = SeismicIndex.build(read_seismic_bin(tmp_path / "docs.bin", dim=200), n_postings=10**4)
    ids, scores = ours.search(read_seismic_bin(tmp_path / "queries.bin", dim=200), k=5, query_cut=1000, heap_factor=0.0)
    res = theirs.batch_search(str(tmp_path / "queries.bin"), 5, 1000, 0.0, 0, True, 1)
    for i, hits in enumerate(res):
        # pyseismic stores values as f16: compare scores loosely, ids where scores are well separated
        their_scores = np.array([s for s, _ in hits], dtype=np.float32)
        np.testing.assert_allclose(their_scores, scores[i], rtol=1e-2)
        assert [d for _, d in hits][0] == ids[i, 0]


def test_float16_forward_values(data):
    docs, queries = data
    idx = SeismicIndex.build(docs, n_postings=10**6)  # the default: float16, as pyseismic
    assert idx._a["fwd_words"].dtype == np.uint32 and idx.params["values"] == "float16"
    ids, scores = idx.search(queries, k=10, query_cut=10**6, heap_factor=0.0)
    gt, gt_scores = _exact(queries, docs, 10)
    assert _recall(ids, gt) >= 0.98
    np.testing.assert_allclose(scores, gt_scores, rtol=2e-3)
    # the forward index gives the vectors back to float16 precision
    back = idx.forward_vectors()
    np.testing.assert_array_equal(back.indptr, docs.indptr)
    np.testing.assert_array_equal(back.indices, docs.indices)
    np.testing.assert_allclose(back.values, docs.values, rtol=1e-3)
    with pytest.raises(ValueError):
        SeismicIndex.build(docs, values="float8")


def test_values_beyond_float16_or_wide_dims_fall_back_to_float32():
    big = SparseVectors.from_rows([([1, 3], [1e6, 2.0]), ([3], [7e5])], 10)
    idx = SeismicIndex.build(big)
    assert idx.params["values"] == "float32" and idx._a["fwd_words"].dtype == np.uint64
    ids, scores = idx.search(big[np.array([0])], k=2, query_cut=5, heap_factor=0.0)
    assert ids[0].tolist() == [0, 1] and scores[0, 0] == np.float32(1e12 + 4.0)
    wide = SparseVectors.from_rows([([70_000, 5], [2.0, 1.0]), ([70_000], [3.0])], 70_001)
    idx = SeismicIndex.build(wide)
    assert idx._a["fwd_words"].dtype == np.uint64
    ids, scores = idx.search(wide[np.array([0])], k=2, query_cut=5, heap_factor=0.0)
    assert ids[0].tolist() == [1, 0] and scores[0].tolist() == [6.0, 5.0]
    assert idx.forward_vectors() == wide


def _reference_summary_scores(index, docs, t, query):
    """Block summary scores of list t from first principles: per block the coordinate-wise
    max of its documents (their values as the forward index stores them, float16 by default),
    cut to the largest components holding `summary_energy` of its L1 mass (ties: first seen,
    the documents taken in the index's numbering, each one's words in stored order: by
    decreasing absolute value), quantised to u8 between the cut value and the max."""
    from lsr.indexer.seismic import unpack_words

    a = index._a
    energy = np.float32(index.params["summary_energy"])
    qd = np.zeros(docs.dim, np.float32)
    qd[query.indices] = query.values
    out = []
    for gb in range(a["list_block_ptr"][t], a["list_block_ptr"][t + 1]):
        maxv, order = {}, []
        for p in a["post_docs"][a["block_doc_ptr"][gb] : a["block_doc_ptr"][gb + 1]]:
            for c, v in zip(*unpack_words(a["fwd_words"][a["fwd_ptr"][p] : a["fwd_ptr"][p + 1]])):
                if c not in maxv:
                    order.append(c)
                    maxv[c] = v
                maxv[c] = max(maxv[c], v)
        ranked = sorted(order, key=lambda c: -maxv[c])  # stable: first seen first on ties
        total = np.float32(sum(np.float32(maxv[c]) for c in order))
        kept, acc = [], np.float32(0)
        for c in ranked:
            kept.append(c)
            acc += np.float32(maxv[c])
            if not acc < total * energy:
                break
        lo, hi = maxv[kept[-1]], max(maxv[c] for c in kept)
        scale = np.float32((hi - lo) / np.float32(255))
        codes = [np.round((maxv[c] - lo) / scale) if scale > 0 else 0 for c in kept]
        out.append(sum(np.float32(code * scale + lo) * qd[c] for c, code in zip(kept, codes)))
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("signed", [False, True])
def test_summaries_equal_their_definition(signed):
    """A list with more than 256 blocks (several summary groups) and over 16 components a group;
    also with negative values (a document's first word, its largest in absolute value, is
    then not always its largest)."""
    rng = np.random.default_rng(8)
    rows = []
    for _ in range(3000):
        cols = np.unique(np.concatenate([[0], rng.choice(np.arange(1, 60), 12, replace=False)]))
        vals = rng.gamma(2.0, 1.0, size=len(cols))
        if signed:
            vals[1:] *= rng.choice([-1, 1], size=len(cols) - 1)  # component 0 (the list tested) stays positive
        rows.append((cols.tolist(), vals.tolist()))
    docs = SparseVectors.from_rows(rows, 60)
    idx = SeismicIndex.build(docs, n_postings=10**6, centroid_fraction=0.2, min_cluster_size=0)
    a = idx._a
    nb = a["list_block_ptr"][1] - a["list_block_ptr"][0]
    assert nb > 256 and a["list_group_ptr"][1] - a["list_group_ptr"][0] == (nb + 255) // 256
    from lsr.indexer import seismic_search as ks

    queries = _topical(3, 60, seed=9)
    for t in (0, 7, 31):
        for i in range(len(queries)):
            q = queries[i : i + 1]
            qd = np.zeros(60, np.float32)
            qd[q.indices] = q.values
            acc = np.zeros((2, idx.max_blocks), np.float32)
            hits = np.zeros(len(q.indices), np.uint64), np.zeros(len(q.indices), np.uint64), np.zeros(len(q.indices), np.float32)
            nb = ks._summary_scores(t, q.indices, qd, acc[0], acc[1], *hits, idx._kernel_arrays)
            want = _reference_summary_scores(idx, docs, t, q)
            assert nb == len(want)
            np.testing.assert_allclose(acc[0, :nb], want, rtol=1e-5, atol=1e-4)


def _reference_blocks(docs, t, doc_cut, centroid_fraction, min_cluster_size, seed):
    """List t's blocks (sets of collection rows, in block order) from first principles, for a
    list that keeps every posting: sampled centroids (the kernel's own sampling), each document
    to the centroid of largest dot product between the centroid's full vector and the
    document's `doc_cut` largest components (ties: the lower centroid), clusters of at most
    `min_cluster_size` documents dissolved into the others, blocks in their centroids' row
    order."""
    from lsr.indexer import seismic_build as kb

    dense = docs.to_scipy().toarray()
    rows = np.flatnonzero(dense[:, t] != 0).astype(np.int32)
    n = len(rows)
    nc = min(max(int(np.float32(centroid_fraction) * np.float32(n)), 1), n)
    perm = np.empty(n, np.int32)
    kb._sample_centroids.py_func(rows, 0, n, nc, seed, t, perm)  # (no Python wrapper of its own)
    centroids = dense[perm[:nc]].astype(np.float64)
    top = np.zeros_like(dense, dtype=np.float64)
    for r in rows:
        cols, vals = docs.row(int(r))
        best = np.argsort(-vals, kind="stable")[:doc_cut] if len(cols) > doc_cut else np.arange(len(cols))
        top[r, cols[best]] = vals[best]
    scores = top[rows] @ centroids.T  # integer values: exact in any order
    assign = scores.argmax(axis=1)  # first of the largest
    sizes = np.bincount(assign, minlength=nc)
    removed = (sizes > 0) & (sizes <= min_cluster_size)
    if removed.all():
        assign[:] = 0
    elif removed.any():
        redo = removed[assign]
        assign[redo] = np.where(removed, -np.inf, scores[redo]).argmax(axis=1)
    return [set(rows[assign == c].tolist()) for c in np.argsort(perm[:nc], kind="stable") if (assign == c).any()]


def test_blocks_equal_their_definition():
    """Lists long enough for dense centroid rows (a component held by over 1/16 of the
    centroids) beside sparse ones, documents shorter and longer than doc_cut, small integer
    values (exact sums, so score ties happen and must go to the lower centroid)."""
    rng = np.random.default_rng(11)
    zipf = 1.0 / np.arange(1, 399)
    rows = []
    for _ in range(1200):
        rest = rng.choice(np.arange(2, 400), rng.integers(3, 30), p=zipf / zipf.sum())
        cols = np.unique(np.concatenate([[0, 1][: rng.integers(1, 3)], rest]))
        rows.append((cols.tolist(), rng.integers(1, 5, len(cols)).astype(float).tolist()))
    docs = SparseVectors.from_rows(rows, 400)
    for min_cluster_size in (0, 2):
        idx = SeismicIndex.build(docs, n_postings=10**6, max_fraction=10.0, centroid_fraction=0.1,
                                 min_cluster_size=min_cluster_size, doc_cut=8, threads=2)
        a = idx._a
        for t in (0, 1, 2, 40):
            blocks = range(a["list_block_ptr"][t], a["list_block_ptr"][t + 1])
            got = [set(a["doc_ids"][a["post_docs"][a["block_doc_ptr"][b] : a["block_doc_ptr"][b + 1]]].tolist())
                   for b in blocks]
            assert got == _reference_blocks(docs, t, 8, 0.1, min_cluster_size, 0)


@pytest.mark.parametrize("x", [0.0, 0.5, 1.5, 2.5, 3.4999998, 3.5, 126.5, 254.5, 254.50002, 255.0])
def test_summary_rounding_is_halves_to_even(x):
    from lsr.indexer.seismic_build import _round_half_even

    assert _round_half_even(np.float32(x)) == int(np.round(np.float32(x)))


def test_load_rejects_an_older_layout(tmp_path, index):
    import json

    index.save(tmp_path / "idx")
    path = next(p for p in (tmp_path / "idx").iterdir() if p.name == "manifest.json")
    m = json.loads(path.read_text())
    m["params"]["layout"] = 1
    path.write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="rebuild"):
        SeismicIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("values", ["float16", "float32"])
def test_tiny_collection_gets_every_matching_document(data_dir, values):
    """The 20-document toy set: with the default query_cut=10 Seismic returned 1-7 hits where
    exact search returns 10 (top-1 wrong on 2 of 5 queries); a short result is searched again
    with all the query's terms."""
    from lsr.indexer import ExactIndex

    toy = data_dir / "splade-toy"
    _, docs, vocab = SparseVectors.read_jsonl(toy / "documents.jsonl")
    _, queries, vocab = SparseVectors.read_jsonl(toy / "queries.jsonl", {t: i for i, t in enumerate(vocab)})
    docs = SparseVectors(docs.indptr, docs.indices, docs.values, len(vocab))
    queries = SparseVectors(queries.indptr, queries.indices, queries.values, len(vocab))
    assert np.diff(queries.indptr).min() > 10  # every query is longer than the default cut
    exact_ids, exact_scores = ExactIndex.build(docs).search(queries, k=10)
    ids, scores = SeismicIndex.build(docs, values=values).search(queries, k=10)  # default knobs
    assert ((ids >= 0).sum(1) == (exact_ids >= 0).sum(1)).all()
    np.testing.assert_array_equal(ids[:, 0], exact_ids[:, 0])
    for a, b in zip(ids, exact_ids):
        assert set(a[a >= 0]) == set(b[b >= 0])
    if values == "float32":
        np.testing.assert_allclose(scores[ids >= 0], exact_scores[exact_ids >= 0], rtol=1e-5)


def test_vectors_without_components_build_an_empty_index():
    """No posting at all (every vector empty): the list ranges of the build stay inside the
    lists (they ran one past the end: a crash in the kernel), and a search finds nothing."""
    empty = SparseVectors(np.zeros(4, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 10)
    index = SeismicIndex.build(empty, threads=2)
    assert index.stats()["postings"] == 0
    ids, _ = index.search(SparseVectors.from_rows([([1], [1.0])], 10), k=2)
    assert (ids == -1).all()


def test_renumbering_changes_no_result(data, index):
    """The index numbers documents by their largest components; the same blocks in collection
    numbering (postings mapped back, forward index in row order) answer every query alike."""
    from lsr.indexer.seismic import pack_forward

    docs, queries = data
    a, n = index._a, len(docs)
    identity = np.arange(n, dtype=np.int32)
    assert not np.array_equal(a["doc_ids"], identity)
    post = a["doc_ids"][a["post_docs"]]
    for lo, hi in zip(a["block_doc_ptr"][:-1], a["block_doc_ptr"][1:]):  # blocks in row order
        post[lo:hi].sort()
    ptr, words = pack_forward(docs.indptr, docs.indices, docs.values, identity, docs.dim, index.params["values"])
    plain = SeismicIndex(dict(a, post_docs=post, fwd_ptr=ptr, fwd_words=words, doc_ids=identity), index.params,
                         index.dim, n)
    for query_cut, heap_factor in [(3, 1.0), (5, 0.8), (10, 0.0)]:
        ours = index.search(queries, k=10, query_cut=query_cut, heap_factor=heap_factor)
        theirs = plain.search(queries, k=10, query_cut=query_cut, heap_factor=heap_factor)
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])
    assert index.forward_vectors() == plain.forward_vectors() == SparseVectors(
        docs.indptr, docs.indices, docs.values.astype(np.float16).astype(np.float32), docs.dim)
    rows = np.array([7, 2, 2999, 0])
    assert index.forward_vectors(rows) == plain.forward_vectors(rows)


@pytest.mark.parametrize("value_type", ["float16", "float32"])
def test_forward_rows_by_decreasing_magnitude_ties_in_stored_order(value_type):
    """`pack_forward`'s rows: words by decreasing absolute value, equal ones in stored order
    (`np.argsort(-|v|, kind="stable")`), for rows of every length its merge sort meets (runs
    of 8, merges of unequal halves), values of both signs, zeros and many ties; packed as
    NumPy's `pack_words` packs them (float16: the same rounding, halfway cases, subnormals
    and the largest float16 included)."""
    from lsr.indexer.seismic import pack_forward, pack_words

    rng = np.random.default_rng(5)
    special = np.array([1 + 2**-11, 1 + 3 * 2**-11, -(2 + 2**-10), 1e-6, -3e-7, 65504.0, 0.1, 1 / 3], np.float32)
    rows = []
    for n in [0, 1, 2, 7, 8, 9, 16, 17, 33, 64, 100, 257]:
        vals = rng.integers(-4, 5, n).astype(np.float32) / 2
        vals[vals == 0] = rng.choice([0.0, -0.0], int((vals == 0).sum()))
        vals[: len(special)] = special[: n]
        rows.append((np.sort(rng.choice(300, n, replace=False)).tolist(), vals.tolist()))
    docs = SparseVectors.from_rows(rows, 300)
    order = np.arange(len(docs), dtype=np.int32)[::-1].copy()
    ptr, words = pack_forward(docs.indptr, docs.indices, docs.values, order, 300, value_type)
    for r, d in enumerate(order):
        comps, vals = docs.row(int(d))
        want = np.argsort(-np.abs(vals), kind="stable")
        np.testing.assert_array_equal(words[ptr[r] : ptr[r + 1]], pack_words(comps[want], vals[want], 300, value_type))


def test_doc_order_groups_documents_by_their_largest_components():
    from lsr.indexer.seismic import doc_order

    top_c = np.array([[5, 1], [2, 9], [5, 0], [-1, -1], [2, 9], [5, 1]], dtype=np.int32)
    assert doc_order(top_c, 10).tolist() == [3, 1, 4, 2, 0, 5]  # no components first; ties in row order
    assert doc_order(np.zeros((3, 0), np.int32), 10).tolist() == [0, 1, 2]


def test_damaged_numbering_is_found(tmp_path, index):
    index.save(tmp_path / "ix")
    ids = np.load(tmp_path / "ix" / "doc_ids.npy", mmap_mode="r+")
    ids[0] = ids[1]
    ids.flush()
    with pytest.raises(IndexFormatError, match="doc_ids.npy: a collection row is numbered twice"):
        SeismicIndex.load(tmp_path / "ix").search(SparseVectors.from_rows([([1], [1.0])], index.dim), k=3)


@pytest.mark.parametrize("signed", [False, True])
def test_head_bound_is_rank_safe(signed):
    """Documents longer than HEAD words: with nothing pruned the search is exact, so a document
    whose tail the bound skipped could never have entered the top-k (also with negative
    weights, which the bound covers through absolute values)."""
    from lsr.indexer.layout import HEAD
    from lsr.indexer.seismic import unpack_words

    rng = np.random.default_rng(7)
    dim, n = 400, 1500
    rows = []
    for _ in range(n):
        cols = np.sort(rng.choice(dim, size=int(rng.integers(HEAD + 1, 3 * HEAD)), replace=False))
        vals = rng.gamma(1.0, 1.0, size=len(cols)) * (rng.choice([-1, 1], size=len(cols)) if signed else 1)
        rows.append((cols.tolist(), vals.tolist()))
    docs = SparseVectors.from_rows(rows, dim)
    queries = _random(30, dim, 0.08, seed=8)
    idx = SeismicIndex.build(docs, n_postings=10_000, values="float32")
    a = idx._a
    for d in range(0, n, 97):  # each document's words in decreasing absolute value
        _, v = unpack_words(a["fwd_words"][a["fwd_ptr"][d] : a["fwd_ptr"][d + 1]])
        assert np.all(np.diff(np.abs(v)) <= 0)
    ids, scores = idx.search(queries, k=10, query_cut=1000, heap_factor=0.0)
    gt_ids, gt_scores = _exact(queries, docs, 10)
    np.testing.assert_array_equal(ids, gt_ids)
    np.testing.assert_allclose(scores, gt_scores, rtol=1e-5, atol=1e-5)


def test_assemble_joins_the_ranges_results_as_they_come():
    """`_assemble` joins each range's result as it arrives and keeps no reference to it (the
    build feeds it while later ranges still run; holding them all would double the peak),
    and the joined columns equal the concatenation of the pieces (component ids narrowed to
    u16 under 65,536 columns)."""
    import gc
    import weakref

    from lsr.indexer.precompile import no_postings
    from lsr.indexer.seismic import _assemble

    rng = np.random.default_rng(3)
    dim, n_ranges = 50, 6
    list_bounds = np.linspace(0, dim, n_ranges + 1).astype(int)
    list_ptr = np.zeros(dim + 1, np.int64)
    list_ptr[1:] = np.cumsum(rng.integers(1, 40, dim))
    kinds = no_postings(1)  # the kernel's types
    pieces, alive = [], []

    def result(lo, hi):
        n_lists = hi - lo
        n_blocks = rng.integers(0, 4, n_lists).astype(np.int64)
        nb = int(n_blocks.sum())
        block_end = np.concatenate([np.sort(rng.integers(1, 9, b)) for b in n_blocks] + [np.zeros(0, np.int64)])
        ng = int(rng.integers(1, 5))
        group_uniq = rng.integers(1, 4, ng).astype(np.int64)
        nu = int(group_uniq.sum())
        ucount = rng.integers(0, 3, nu).astype(np.uint8)
        arrays = (n_blocks, block_end, rng.random(nb), rng.random(nb), group_uniq, rng.integers(0, dim, nu),
                  ucount, rng.integers(0, 2**16, int(ucount.sum()) + nu))  # fmt: skip
        return tuple(a.astype(k.dtype) for a, k in zip(arrays, kinds))

    def results():
        for lo, hi in zip(list_bounds[:-1], list_bounds[1:]):
            part = result(lo, hi)
            pieces.append([a.copy() for a in part])
            alive.append([weakref.ref(a) for a in part])
            yield part
            del part
            gc.collect()
            assert all(ref() is None for ref in alive[-1]), "a joined result is still referenced"

    joined = _assemble(results(), list_ptr, dim)
    assert len(alive) == n_ranges
    columns = [np.concatenate(c) for c in zip(*pieces)]
    assert joined["sum_ucomp"].dtype == np.uint16
    np.testing.assert_array_equal(joined["sum_ucomp"], columns[5])
    np.testing.assert_array_equal(joined["sum_ucount"], columns[6])
    np.testing.assert_array_equal(joined["sum_entry"], columns[7])
    np.testing.assert_array_equal(joined["block_min"], columns[2])
    np.testing.assert_array_equal(joined["block_scale"], columns[3])
    np.testing.assert_array_equal(np.diff(joined["list_block_ptr"]), columns[0])
    np.testing.assert_array_equal(np.diff(joined["group_uniq_ptr"]), columns[4])
    want_ptr = np.repeat(list_ptr[:-1], columns[0]) + columns[1]
    np.testing.assert_array_equal(joined["block_doc_ptr"][1:], want_ptr)
