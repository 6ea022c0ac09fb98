"""Growth (lsr.indexer.segmented): after any sequence of adds, deletes, merges and save/load
round trips, exact search equals an exact index built afresh over the live documents, and a
grown Seismic index keeps the recall of a fresh Seismic build."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import random_vectors

import lsr.indexer
from lsr import SparseVectors
from lsr.indexer import ExactIndex
from lsr.indexer.segmented import SegmentedIndex, take_rows

DIM = 50


def vectors(n, seed, density=0.12):
    return random_vectors(n, DIM, density, seed, offset=0.01)


QUERIES = vectors(12, 99, 0.2)


class Reference:
    """What the index should hold: id -> vector row, live ids only."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, docs: SparseVectors, ids: np.ndarray) -> None:
        for i, doc_id in enumerate(ids):
            self.rows[int(doc_id)] = docs.row(i)

    def fresh(self) -> tuple[ExactIndex, np.ndarray]:
        ids = np.array(sorted(self.rows), np.int64)
        docs = SparseVectors.from_rows([self.rows[i] for i in ids], DIM)
        return ExactIndex.build(docs), ids


def assert_same_as_fresh(grown, reference, k, filter_ids=None):
    fresh, ids = reference.fresh()
    assert len(grown) == len(ids)
    if len(ids) == 0:
        got_ids, _ = grown.search(QUERIES, k)
        assert got_ids.shape == (len(QUERIES), 0)
        return
    mask = None if filter_ids is None else np.isin(ids, filter_ids)
    want_rows, want_scores = fresh.search(QUERIES, k, threads=1, filter=mask)
    want_ids = np.where(want_rows >= 0, ids[np.maximum(want_rows, 0)], -1)
    got_ids, got_scores = grown.search(QUERIES, k, threads=1, filter=filter_ids)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 40)),
        st.tuples(st.just("delete"), st.floats(0.0, 0.6)),
        st.tuples(st.just("merge"), st.just(0)),
        st.tuples(st.just("reload"), st.just(0)),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, seed=st.integers(0, 2**16), k=st.sampled_from([1, 5, 10]))
def test_exact_growth_equals_a_fresh_exact_index(tmp_path_factory, ops, seed, k):
    """Random add / delete / merge / save+load sequences against the reference; deleted ids
    never come back, and k hits come back whenever k live documents match."""
    rng = np.random.default_rng(seed)
    grown, reference = SegmentedIndex("exact"), Reference()
    where = tmp_path_factory.mktemp("grown") / "ix"
    for i, (op, arg) in enumerate(ops):
        if op == "add":
            docs = vectors(arg, seed + i)
            reference.add(docs, grown.add(docs))
        elif op == "delete" and reference.rows:
            live = np.array(sorted(reference.rows))
            gone = live[rng.random(len(live)) < arg]
            assert grown.delete(np.concatenate([gone, gone[:1], [grown.id_bound + 5]])) == len(gone)  # repeats, unknown ids: ignored
            for doc_id in gone:
                del reference.rows[int(doc_id)]
        elif op == "merge":
            grown.merge()
            assert len(grown.segments) <= 1
        elif op == "reload":
            grown.save(where)
            grown = lsr.indexer.load(where)
            assert grown.kind == "segmented"
        assert_same_as_fresh(grown, reference, k)
    live = np.array(sorted(reference.rows), np.int64)
    if len(live):
        assert_same_as_fresh(grown, reference, k, filter_ids=live[rng.random(len(live)) < 0.3])


def test_readding_a_deleted_id_replaces_it_and_live_ids_are_refused():
    grown = SegmentedIndex("exact")
    first, second = vectors(30, 1), vectors(1, 2)
    grown.add(first)
    with pytest.raises(ValueError, match="already in the index"):
        grown.add(second, ids=[7])
    grown.delete([7])
    grown.add(second, ids=[7])
    reference = Reference()
    reference.add(first, np.arange(30))
    reference.add(second, np.array([7]))
    assert_same_as_fresh(grown, reference, 10)
    with pytest.raises(ValueError, match="not unique"):
        grown.add(vectors(2, 3), ids=[40, 40])


def test_size_rule_keeps_few_segments_and_drops_deleted_documents():
    grown = SegmentedIndex("exact")
    for i in range(64):
        grown.add(vectors(1, i))
    assert len(grown) == 64 and len(grown.segments) <= 7  # log2(64) + 1
    grown.delete(np.arange(0, 64, 2))
    assert sum(len(ids) for ids in grown.ids) < 64  # mostly-deleted segments were rebuilt without them
    grown.delete(np.arange(64))
    assert len(grown) == 0 and grown.segments == []


def test_forward_vectors_are_indexed_by_id():
    grown = SegmentedIndex("exact")
    docs = vectors(20, 0)
    grown.add(docs, ids=np.arange(20) * 2)
    grown.delete([4])
    forward = grown.forward_vectors()
    assert len(forward) == 39
    assert forward[[0, 2, 6]] == docs[[0, 1, 3]]
    assert forward.row(4)[0].size == 0 and forward.row(1)[0].size == 0


def test_save_is_atomic_and_links_unchanged_segments(tmp_path, monkeypatch):
    """A save that fails half-way leaves the previous generation loadable; a segment already
    on disk is linked, not written again."""
    grown = SegmentedIndex("exact")
    grown.add(vectors(100, 0))
    grown.save(tmp_path / "ix")
    loaded = SegmentedIndex.load(tmp_path / "ix")
    loaded.add(vectors(5, 1))
    expected = loaded.search(QUERIES, 5)

    def broken(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ExactIndex, "save", broken)  # the new segment cannot be written
    with pytest.raises(Exception):
        loaded.save(tmp_path / "ix")
    assert len(SegmentedIndex.load(tmp_path / "ix")) == 100
    monkeypatch.undo()
    loaded.save(tmp_path / "ix")
    again = SegmentedIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(again.search(QUERIES, 5)[0], expected[0])
    first = tmp_path / "ix" / "seg-0000" / "list_docs.npy"
    assert first.stat().st_nlink == 1  # the old generation is gone, its files live on here
    assert [len(ids) for ids in again.ids] == [100, 5]


def test_wrap_an_existing_index_and_damage_is_one_error(tmp_path):
    docs = vectors(50, 0)
    ExactIndex.build(docs).save(tmp_path / "exact")
    grown = SegmentedIndex.wrap(lsr.indexer.load(tmp_path / "exact"), source=tmp_path / "exact")
    grown.add(vectors(3, 1))
    grown.save(tmp_path / "grown")
    assert (tmp_path / "grown" / "seg-0000" / "list_docs.npy").stat().st_nlink == 2  # linked to the source
    ids = np.load(tmp_path / "grown" / "seg-0000.ids.npy")
    np.save(tmp_path / "grown" / "seg-0000.ids.npy", ids[::-1].copy())
    with pytest.raises(lsr.indexer.IndexFormatError, match="seg-0000.ids.npy"):
        lsr.indexer.load(tmp_path / "grown")


def test_seismic_growth_keeps_recall():
    """A Seismic index grown by random adds and deletes finds, against exact search over the
    live documents, at least the recall@10 of a Seismic index built afresh over them, less 0.05."""
    from lsr.indexer.seismic import SeismicIndex

    rng = np.random.default_rng(0)
    params = dict(n_postings=40, centroid_fraction=0.2, summary_energy=0.5, threads=1)
    base = vectors(800, 0)
    grown = SegmentedIndex.wrap(SeismicIndex.build(base, **params))
    reference = Reference()
    reference.add(base, np.arange(800))
    for step in range(6):
        docs = vectors(int(rng.integers(20, 120)), step + 1)
        reference.add(docs, grown.add(docs))
        live = np.array(sorted(reference.rows))
        gone = live[rng.random(len(live)) < 0.1]
        grown.delete(gone)
        for doc_id in gone:
            del reference.rows[int(doc_id)]
    assert len(grown.segments) > 1
    fresh_exact, ids = reference.fresh()
    queries = vectors(40, 77, 0.2)
    truth = ids[fresh_exact.search(queries, 10, threads=1)[0]]
    fresh_seismic = SeismicIndex.build(fresh_exact.forward_vectors(), **params)
    knobs = dict(query_cut=5, heap_factor=0.8)
    fresh_ids = ids[np.maximum(fresh_seismic.search(queries, 10, **knobs)[0], 0)]
    grown_ids = grown.search(queries, 10, **knobs)[0]
    assert not np.isin(grown_ids, np.setdiff1d(np.arange(grown.id_bound), ids)).any()  # no deleted id
    recall = lambda got: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])  # noqa: E731
    assert recall(grown_ids) >= recall(fresh_ids) - 0.05
    assert recall(grown_ids) > 0.5


def test_take_rows_matches_indexing():
    docs = vectors(30, 0)
    rows = np.array([5, 0, 29, 5])
    assert take_rows(docs, rows) == docs[rows]
