"""Every index kind answers the same calls the same way (lsr.indexer.Index): search with one
meaning of `threads`, Numba's thread count left as found, save / load, `lsr.indexer.load`
by manifest kind, and one error type for a directory of the wrong kind."""

import json

import numba
import numpy as np
import pytest

from builders import random_vectors

import lsr.indexer
from lsr import LsrError, SparseVectors
from lsr.indexer import ExactIndex, Index, IndexFormatError
from lsr.indexer import exact_kernels
from lsr.indexer import seismic_search
from lsr.indexer.seismic import SeismicIndex
from lsr.indexer.segmented import SegmentedIndex
from lsr.indexer.sharded import ShardedIndex

KINDS = ["exact", "seismic", "sharded", "segmented"]
# the Numba batch kernel behind each kind's multi-threaded search (a sharded index's first shard is exact)
PARALLEL_KERNEL = {
    "exact": (exact_kernels, "search_parallel"),
    "seismic": (seismic_search, "search_batch_parallel"),
    "sharded": (exact_kernels, "search_parallel"),
    "segmented": (exact_kernels, "search_parallel"),
}
# settings under which Seismic is exact: no pruning, every query term, no block skipped
EXACT_KNOBS = {"query_cut": 1000, "heap_factor": 0.0}


def vectors(n, dim, density, seed):
    return random_vectors(n, dim, density, seed, offset=0.01)


DOCS = vectors(300, 60, 0.1, 0)
QUERIES = vectors(20, 60, 0.15, 1)


def seismic(docs: SparseVectors) -> SeismicIndex:
    return SeismicIndex.build(docs, n_postings=10**6, summary_energy=1.0, values="float32", threads=1)


def build(kind: str):
    if kind == "exact":
        return ExactIndex.build(DOCS)
    if kind == "sharded":  # one exact and one Seismic shard
        return ShardedIndex([ExactIndex.build(DOCS[:120]), seismic(DOCS[120:])])
    if kind == "segmented":  # two exact segments, and a deleted document added again
        grown = SegmentedIndex("exact")
        grown.add(DOCS[:250])
        grown.delete([3])
        grown.add(DOCS[250:])
        grown.add(DOCS[3:4], ids=[3])
        return grown
    return seismic(DOCS)


@pytest.fixture(params=KINDS)
def index(request):
    return build(request.param)


@pytest.fixture
def numba_one_thread():
    """Numba at one thread for the test (this machine has at least two), then as before."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


def test_shape_of_every_kind(index):
    assert isinstance(index, Index)
    assert index.kind in lsr.indexer.KINDS and isinstance(index.kind, str)
    assert index.dim == 60 and len(index) == 300
    assert index.forward_vectors() == DOCS
    index.check_values(full=True)


def test_same_call_same_answer_for_every_kind():
    """One call with the same knobs serves both kinds (the exact index ignores Seismic's);
    with those knobs Seismic is exact, so both give the brute-force top-k."""
    results = [build(kind).search(QUERIES, 5, threads=1, **EXACT_KNOBS) for kind in KINDS]
    dense = (QUERIES.to_scipy() @ DOCS.to_scipy().T).toarray()
    for ids, scores in results:
        assert ids.shape == scores.shape == (20, 5) and ids.dtype == np.int64 and scores.dtype == np.float32
        np.testing.assert_allclose(scores, -np.sort(-dense, axis=1)[:, :5], rtol=1e-5)
    for ids, _ in results[1:]:
        np.testing.assert_array_equal(ids, results[0][0])


def test_threads_has_one_meaning(index, numba_one_thread):
    """0 = every core Numba may use, 1 = the calling thread, n = n; all give the same
    answer; a negative count is refused."""
    answers = [index.search(QUERIES, 5, threads=t, **EXACT_KNOBS) for t in (0, 1, 2, 64)]
    for ids, scores in answers[1:]:
        np.testing.assert_array_equal(ids, answers[0][0])
        np.testing.assert_array_equal(scores, answers[0][1])
    with pytest.raises(ValueError, match="threads"):
        index.search(QUERIES, 5, threads=-1)


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_numba_thread_count_restored_after_a_search(index, numba_one_thread, threads):
    index.search(QUERIES, 5, threads=threads)
    assert numba.get_num_threads() == 1


def test_numba_thread_count_restored_after_an_error(index, numba_one_thread, monkeypatch):
    module, name = PARALLEL_KERNEL[index.kind]

    def failing(*args):
        assert numba.get_num_threads() == 2  # the search did set it
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(module, name, failing)
    with pytest.raises(RuntimeError, match="kernel failed"):
        index.search(QUERIES, 5, threads=2)
    assert numba.get_num_threads() == 1


def test_save_load_round_trip(index, tmp_path):
    index.save(tmp_path / "ix")
    expected = index.search(QUERIES, 5, threads=2)
    for loaded in (type(index).load(tmp_path / "ix"), lsr.indexer.load(tmp_path / "ix")):
        assert type(loaded) is type(index) and loaded.kind == index.kind
        assert loaded.dim == index.dim and len(loaded) == len(index)
        ids, scores = loaded.search(QUERIES, 5, threads=2)
        np.testing.assert_array_equal(ids, expected[0])
        np.testing.assert_array_equal(scores, expected[1])


def test_wrong_kind_is_an_index_format_error(tmp_path):
    for kind in KINDS:
        build(kind).save(tmp_path / kind)
    for kind, other in (("exact", SeismicIndex), ("seismic", ExactIndex)):
        with pytest.raises(IndexFormatError, match=f"a '{kind}' index") as err:
            other.load(tmp_path / kind)
        assert isinstance(err.value, LsrError)
    manifest = tmp_path / "exact" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "kind": "nonesuch"}))
    with pytest.raises(IndexFormatError, match="unknown index kind 'nonesuch'"):
        lsr.indexer.load(tmp_path / "exact")


def test_load_exact_answers_exactly_from_any_kind(tmp_path):
    SeismicIndex.build(DOCS, n_postings=5, values="float32").save(tmp_path / "ix")  # heavily pruned
    approx = lsr.indexer.load(tmp_path / "ix")
    exact = lsr.indexer.load(tmp_path / "ix", exact=True)
    assert approx.kind == "seismic" and exact.kind == "exact"
    want = ExactIndex.build(DOCS).search(QUERIES, 5, threads=2)
    got = exact.search(QUERIES, 5, threads=2)
    np.testing.assert_array_equal(got[0], want[0])
    assert not np.array_equal(approx.search(QUERIES, 5, threads=2)[0], want[0])


def test_a_registered_kind_opens_through_load(tmp_path, monkeypatch):
    class Wrapped(ExactIndex):
        kind = "wrapped"

        def save(self, path):
            super().save(path)
            manifest = path / "manifest.json"
            manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "kind": self.kind}))

        @classmethod
        def load(cls, path):
            loaded = cls.__new__(cls)
            loaded.__dict__.update(ExactIndex.build(DOCS).__dict__)
            return loaded

    monkeypatch.setitem(lsr.indexer.KINDS, "wrapped", "lsr.indexer.exact:ExactIndex")
    lsr.indexer.register_kind("wrapped", Wrapped)
    Wrapped.build(DOCS).save(tmp_path / "ix")
    loaded = lsr.indexer.load(tmp_path / "ix")
    assert type(loaded) is Wrapped and isinstance(loaded, Index)
