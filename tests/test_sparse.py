import gzip
import json

import numpy as np
import pytest
import torch

import builders

from lsr import LsrError, SparseVectors


def random_vectors(n=7, dim=50, density=0.1, seed=0) -> SparseVectors:
    return builders.random_vectors(n, dim, density, seed)


def test_layout_and_validation():
    v = random_vectors()
    assert v.indptr.dtype == np.int64 and v.indices.dtype == np.int32 and v.values.dtype == np.float32
    for i in range(len(v)):
        idx, _ = v.row(i)
        assert np.all(np.diff(idx) > 0)
    with pytest.raises(ValueError):
        SparseVectors(np.array([0, 2]), np.array([1]), np.array([1.0]), 5)
    with pytest.raises(ValueError):
        SparseVectors(np.array([0, 1]), np.array([7]), np.array([1.0]), 5)


def test_scipy_dense_torch_round_trips():
    v = random_vectors()
    assert SparseVectors.from_scipy(v.to_scipy()) == v
    assert SparseVectors.from_dense(v.to_dense()) == v
    assert np.array_equal(v.to_dense(), v.to_scipy().toarray())
    for layout in ("csr", "coo", "dense"):
        assert SparseVectors.from_torch(v.to_torch(layout)) == v
    assert SparseVectors.from_dense(torch.from_numpy(v.to_dense())) == v


def test_from_rows_sorts_and_sums_duplicates():
    v = SparseVectors.from_rows([([3, 1, 3], [1.0, 2.0, 0.5]), ([], [])], dim=4)
    assert v.row(0)[0].tolist() == [1, 3] and v.row(0)[1].tolist() == [2.0, 1.5]
    assert len(v.row(1)[0]) == 0


def test_dicts_round_trip_and_unknown_token():
    vocab = ["a", "b", "c"]
    rows = [{"c": 1.5, "a": 0.5}, {}, {"b": 2.0}]
    v = SparseVectors.from_dicts(rows, {t: i for i, t in enumerate(vocab)})
    assert v.to_dicts(vocab) == [{"a": 0.5, "c": 1.5}, {}, {"b": 2.0}]
    with pytest.raises(LsrError, match="'z'"):
        SparseVectors.from_dicts([{"z": 1.0}], {"a": 0})


def test_slicing_selection_and_concatenation():
    v = random_vectors(n=10)
    assert np.array_equal(v[2:5].to_dense(), v.to_dense()[2:5])
    assert np.array_equal(v[[7, 0, 7]].to_dense(), v.to_dense()[[7, 0, 7]])
    assert np.array_equal(v[::3].to_dense(), v.to_dense()[::3])
    assert SparseVectors.concatenate([v[:4], v[4:]]) == v


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_anserini_jsonl_round_trip(tmp_path, suffix):
    v = random_vectors()
    vocab = [f"t{i}" for i in range(v.dim)]
    ids = [f"d{i}" for i in range(len(v))]
    plain = tmp_path / "vectors.jsonl"
    v.write_jsonl(plain, ids, vocab)
    path = plain
    if suffix.endswith(".gz"):
        path = tmp_path / ("vectors" + suffix)
        path.write_bytes(gzip.compress(plain.read_bytes()))
    first = json.loads(plain.read_text().splitlines()[0])
    assert set(first) == {"id", "contents", "vector"}
    read_ids, back, read_vocab = SparseVectors.read_jsonl(path, {t: i for i, t in enumerate(vocab)})
    assert read_ids == ids and read_vocab == vocab and back == v
    # without a vocabulary: columns numbered by first appearance, same dict rows
    _, back2, vocab2 = SparseVectors.read_jsonl(path)
    assert back2.to_dicts(vocab2) == v.to_dicts(vocab)


def test_jsonl_reader_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "vector": {"x": 1}}\n{"id": "b", "vector": 3}\n')
    with pytest.raises(LsrError, match=r"bad.jsonl:2:"):
        SparseVectors.read_jsonl(path)


def test_real_splade_toy_vectors(data_dir):
    ids, v, vocab = SparseVectors.read_jsonl(data_dir / "splade-toy" / "documents.jsonl")
    assert len(ids) == 20 and len(v) == 20
    assert v.nnz > 20 * 20 and np.all(v.values > 0)
