"""MS MARCO scale without holding the collection: the vector spill (`lsr.formats.spill`), the
Seismic build's copy-free pruning threshold, and `Retriever.build` streaming encoded batches
to disk (same index as an in-memory build; nothing left behind when it fails)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from builders import random_vectors
from lsr import Retriever, SparseVectors
from lsr.encoders import Encoder
from lsr.encoders.base import DocumentPass
from lsr.formats import FormatError
from lsr.formats.spill import VectorSpill, read_spill
from lsr.indexer import ExactIndex
from lsr.indexer.seismic import SeismicIndex, _count_above, _kth_smallest, _value_range


def assert_same_vectors(a: SparseVectors, b: SparseVectors) -> None:
    assert a.dim == b.dim
    for name in ("indptr", "indices", "values"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# ---- the spill -------------------------------------------------------------------------------


def test_spill_round_trip_in_chunks_is_memory_mapped_npy(tmp_path):
    vectors = random_vectors(157, 40, 0.2, seed=3)
    with VectorSpill(tmp_path / "s") as spill:
        for chunk in (vectors[:10], vectors[10:10], vectors[10:100], vectors[100:]):  # an empty one included
            spill.add(chunk)
    got = spill.vectors()
    assert_same_vectors(got, vectors)
    assert isinstance(got.indices.base, np.memmap) or isinstance(got.indices, np.memmap)
    got.values[0] = -1.0  # copy-on-write: writable for Numba, the file unchanged
    assert read_spill(tmp_path / "s").values[0] == vectors.values[0]
    # plain .npy files any NumPy reads
    np.testing.assert_array_equal(np.load(tmp_path / "s" / "indices.npy"), vectors.indices)
    assert json.loads((tmp_path / "s" / "spill.json").read_text())["rows"] == 157


def test_spill_incomplete_or_failed_is_refused_or_removed(tmp_path):
    spill = VectorSpill(tmp_path / "s")
    spill.add(random_vectors(5, 10, 0.5, seed=1))
    with pytest.raises(FormatError, match="not a complete vector spill"):
        read_spill(tmp_path / "s")  # never closed: no spill.json
    spill.remove()
    assert not (tmp_path / "s").exists()
    with pytest.raises(RuntimeError, match="encoder died"):
        with VectorSpill(tmp_path / "t") as spill:
            spill.add(random_vectors(5, 10, 0.5, seed=1))
            raise RuntimeError("encoder died")
    assert list(tmp_path.iterdir()) == []
    with VectorSpill(tmp_path / "e") as spill:
        pass
    assert len(spill.vectors()) == 0 and spill.vectors().nnz == 0


# ---- the Seismic build's pruning threshold, without a copy of the values ---------------------


@pytest.mark.parametrize("seed", range(6))
def test_kth_smallest_is_np_partition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    values = [
        rng.normal(size=n),  # negatives
        rng.integers(0, 4, size=n) / 4,  # many exact ties
        np.concatenate([np.zeros(n), -np.zeros(n), rng.normal(size=3)]),  # 0.0 and -0.0
        rng.lognormal(size=n) * rng.choice([-1, 1], size=n),
    ][seed % 4].astype(np.float32)
    for k in rng.integers(0, len(values), size=20).tolist() + [0, len(values) - 1]:
        step = int(rng.integers(1, 700))
        got = _kth_smallest(values, k, step=step)
        assert got == np.partition(values, k)[k] and got.dtype == np.float32
        assert _count_above(values, got, step=step) == np.count_nonzero(values > got)
    assert _value_range(values, step=13) == float(np.abs(values).max())


def test_seismic_build_from_a_spill_equals_the_in_memory_build(tmp_path):
    """Global pruning active (postings over the budget): the memory-mapped input gives the
    same arrays as in-memory vectors and as a stream of chunks."""
    docs = random_vectors(1500, 300, 0.05, seed=7, offset=0.01)
    params = dict(n_postings=30, centroid_fraction=0.2, seed=0)
    assert docs.nnz > params["n_postings"] * docs.dim
    memory = SeismicIndex.build(docs, **params)
    with VectorSpill(tmp_path / "s") as spill:
        for lo in range(0, len(docs), 400):
            spill.add(docs[lo : lo + 400])
    mapped = SeismicIndex.build(read_spill(tmp_path / "s"), **params)
    streamed = SeismicIndex.build((docs[lo : lo + 400] for lo in range(0, len(docs), 400)), **params,
                                  scratch_dir=tmp_path)  # fmt: skip
    for name, array in memory._a.items():
        np.testing.assert_array_equal(array, mapped._a[name], err_msg=name)
        np.testing.assert_array_equal(array, streamed._a[name], err_msg=name)


# ---- Retriever.build streams the encoded batches to disk --------------------------------------


class HashEncoder(Encoder):
    """A deterministic toy encoder: each word hashes to one of 64 terms, weight 1 + its count
    / 4. `fail_after` batches raise; `passes` records the passes it hands out."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.vocab = [f"t{i}" for i in range(64)]
        self.spec = {"type": "hash-test"}
        self.fail_after, self.batches, self.passes = fail_after, 0, []

    def encode_queries(self, texts):
        return self._encode(texts)

    def encode_documents(self, texts, batch_size=32, max_length=256, progress=None):
        self.batches += 1
        if self.fail_after is not None and self.batches > self.fail_after:
            raise RuntimeError("the encoder died mid-corpus")
        return self._encode(texts)

    def _encode(self, texts):
        rows = []
        for text in texts:
            counts = {}
            for word in text.lower().split():
                t = zlib.crc32(word.encode()) % 64
                counts[t] = counts.get(t, 0) + 1
            rows.append((sorted(counts), [1 + counts[t] / 4 for t in sorted(counts)]))
        return SparseVectors.from_rows(rows, 64)

    def document_pass(self, batch_size=32, max_length=256):
        run = WatchedPass(self, batch_size, max_length)
        self.passes.append(run)
        return run


class WatchedPass(DocumentPass):
    """Records the most batches the pass ever held at once."""

    most_held = 0

    def add(self, texts):
        super().add(texts)
        self.most_held = max(self.most_held, len(self.parts))


@pytest.fixture
def corpus(tmp_path, data_dir):
    lines = (data_dir / "scifact" / "corpus.jsonl").read_text().splitlines()[:300]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    texts = [f"{d['title']} {d['text']}" if d.get("title") else d["text"] for d in map(json.loads, lines)]
    return path, texts


def index_arrays(index) -> dict[str, np.ndarray]:
    if isinstance(index, SeismicIndex):
        return {name: np.asarray(a) for name, a in index._a.items()}
    return {name: np.asarray(getattr(index, name)) for name in ("list_ptr", "list_docs", "list_weights")}


@pytest.mark.parametrize("kind", ["exact", "seismic"])
def test_streaming_build_equals_the_in_memory_build(tmp_path, corpus, kind):
    path, texts = corpus
    encoder = HashEncoder()
    r = Retriever.build(path, model=encoder, path=tmp_path / "ix", batch_size=16, index=kind,
                        seismic={"n_postings": 40, "values": "float32"})  # fmt: skip
    assert encoder.passes[0].most_held == 1  # each batch went to disk as soon as it was encoded
    vectors = HashEncoder().encode_documents(texts)
    want = ExactIndex.build(vectors) if kind == "exact" else SeismicIndex.build(vectors, n_postings=40, values="float32")
    got, want_arrays = index_arrays(r.index), index_arrays(want)
    assert got.keys() == want_arrays.keys()
    for name, array in want_arrays.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)
    assert r.manifest["nnz"] == vectors.nnz and r.manifest["dim"] == 64
    assert not any("spill" in str(p) for p in (tmp_path / "ix").rglob("*"))
    queries = HashEncoder().encode_queries(texts[:5])
    np.testing.assert_array_equal(r.index.search(queries, k=5)[0], want.search(queries, k=5)[0])


def test_a_failure_mid_encode_leaves_no_index_and_no_spill(tmp_path, corpus):
    path, _ = corpus
    with pytest.raises(RuntimeError, match="died mid-corpus"):
        Retriever.build(path, model=HashEncoder(fail_after=5), path=tmp_path / "ix", batch_size=16, index="seismic")
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.jsonl"]  # no index, no .ix.tmp-*, no spill
    # an index already there is untouched by the failed rebuild
    Retriever.build(path, model=HashEncoder(), path=tmp_path / "ix", batch_size=16)
    before = {p: p.read_bytes() for p in (tmp_path / "ix").rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="died mid-corpus"):
        Retriever.build(path, model=HashEncoder(fail_after=5), path=tmp_path / "ix", batch_size=16)
    assert {p: p.read_bytes() for p in (tmp_path / "ix").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "ix"]


def test_bm25_build_through_the_spill_matches_its_encoder(tmp_path, corpus):
    """BM25 weighs at the end (its pass hands out no batch early): one chunk, same vectors."""
    path, texts = corpus
    r = Retriever.build(path, model="bm25", path=tmp_path / "ix", index="exact")
    want = r.encoder.__class__().encode_documents(texts)
    assert_same_vectors(r.index.forward_vectors(), want)


def test_bm25_pass_weighs_in_slices_exactly_as_at_once(corpus):
    from lsr.encoders.bm25 import Bm25Encoder

    _, texts = corpus
    run = Bm25Encoder().document_pass()
    for lo in range(0, len(texts), 32):
        run.add(texts[lo : lo + 32])
    assert run.ready() == []  # nothing before the corpus statistics are known
    slices = list(run.chunks(rows=7))
    assert [len(s) for s in slices[:2]] == [7, 7]
    assert_same_vectors(SparseVectors.concatenate(slices, dim=run.encoder.dim), run.finish())
