"""The sharded index kind (no Ray): exact per-shard top-k merge, persistence, damage checks."""

import json

import numpy as np
import pytest

from builders import random_vectors

import lsr.indexer
from lsr import SparseVectors
from lsr.indexer import ExactIndex, IndexFormatError
from lsr.indexer.seismic import SeismicIndex
from lsr.indexer.sharded import ShardedIndex, merge_top_k, shard_ranges




def sharded(vectors: SparseVectors, n_shards: int, build) -> ShardedIndex:
    return ShardedIndex([build(vectors[a:b]) for a, b in shard_ranges(len(vectors), n_shards)])


def test_shard_ranges_cover_every_row_once():
    assert shard_ranges(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_ranges(7, 2) == [(0, 3), (3, 7)]
    with pytest.raises(ValueError):
        shard_ranges(5, 0)


@pytest.mark.parametrize("n_shards", [1, 2, 5])
@pytest.mark.parametrize("threads", [1, 4])
def test_exact_shards_equal_one_exact_index_ties_included(n_shards, threads):
    docs = random_vectors(300, 40, 0.1, seed=n_shards, integer=True)
    queries = random_vectors(12, 40, 0.2, seed=99, integer=True)
    single = ExactIndex.build(docs)
    split = sharded(docs, n_shards, ExactIndex.build)
    for k in (1, 7, 50, 400):
        want = single.search(queries, k=k, threads=threads)
        got = split.search(queries, k=k, threads=threads)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # one query (the NumPy path per shard, shards side by side in threads)
    want = single.search(queries[[3]], k=10)
    got = split.search(queries[[3]], k=10, threads=threads)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_seismic_shards_equal_one_seismic_index_when_the_search_is_exhaustive():
    """No pruning, no block skipping, every query term: Seismic is exact over its float16
    forward values, so sharding must not change a single id or score."""
    docs = random_vectors(400, 60, 0.08, seed=3)
    queries = random_vectors(10, 60, 0.2, seed=4)
    params = dict(n_postings=10_000, centroid_fraction=0.2)
    single = SeismicIndex.build(docs, **params)
    split = sharded(docs, 3, lambda v: SeismicIndex.build(v, **params))
    search = dict(k=20, query_cut=60, heap_factor=0.0, threads=2)
    want, got = single.search(queries, **search), split.search(queries, **search)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_merge_puts_padding_last_and_breaks_ties_by_lower_id():
    ids = np.array([[5, -1, 2, 9, -1]])
    scores = np.array([[1.0, -np.inf, 1.0, 3.0, -np.inf]], np.float32)
    got_ids, got_scores = merge_top_k(ids, scores, 5)
    assert got_ids.tolist() == [[9, 2, 5, -1, -1]]
    assert got_scores[0, :3].tolist() == [3.0, 1.0, 1.0]


def test_save_load_round_trip_and_forward_vectors(tmp_path):
    docs = random_vectors(120, 30, 0.15, seed=5)
    queries = random_vectors(6, 30, 0.3, seed=6)
    shards = [ExactIndex.build(docs[:50]), SeismicIndex.build(docs[50:], n_postings=10_000)]
    index = ShardedIndex(shards)
    index.save(tmp_path / "ix")
    loaded = ShardedIndex.load(tmp_path / "ix")
    assert (loaded.kind, len(loaded), loaded.dim) == ("sharded", 120, 30)
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert [(s["start"], s["n_docs"], s["kind"]) for s in manifest["shards"]] == [(0, 50, "exact"), (50, 70, "seismic")]
    for a, b in zip(index.search(queries, k=15, threads=2), loaded.search(queries, k=15, threads=2)):
        np.testing.assert_array_equal(a, b)
    forward = loaded.forward_vectors()
    np.testing.assert_array_equal(forward.indptr, docs.indptr)
    np.testing.assert_array_equal(forward.indices, docs.indices)
    np.testing.assert_allclose(forward.values, docs.values, rtol=1e-3)  # the Seismic shard keeps float16
    exact = lsr.indexer.load(tmp_path / "ix", exact=True)
    assert exact.kind == "exact" and len(exact) == 120
    want = ExactIndex.build(forward).search(queries, k=15, threads=2)
    for a, b in zip(want, exact.search(queries, k=15, threads=2)):
        np.testing.assert_array_equal(a, b)
    loaded.check_values(full=True)


def test_a_shard_changed_after_the_build_is_refused(tmp_path):
    docs = random_vectors(60, 20, 0.2, seed=7)
    sharded(docs, 2, ExactIndex.build).save(tmp_path / "ix")
    shard_manifest = tmp_path / "ix" / "shard-0001" / "manifest.json"
    shard_manifest.write_text(shard_manifest.read_text().replace('"created"', '"created_"'))
    with pytest.raises(IndexFormatError, match="shard-0001.*checksum"):
        ShardedIndex.load(tmp_path / "ix")
    top = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(top.read_text())
    manifest["shards"][1]["start"] = 31
    top.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="starts at 31, expected 30"):
        ShardedIndex.load(tmp_path / "ix")
