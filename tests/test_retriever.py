import json
import os
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from lsr import LsrError, Retriever, SparseVectors
from lsr.encoders import Encoder
from lsr.encoders.bm25 import Bm25Encoder, lucene_length_norm


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def scifact_index(tmp_path_factory, data_dir):
    return Retriever.build(data_dir / "scifact", model="bm25", path=tmp_path_factory.mktemp("sf") / "index")


def test_lucene_length_norm_matches_smallfloat():
    # SmallFloat.intToByte4 / byte4ToInt: exact below 24, then 4 significant bits.
    assert lucene_length_norm(np.arange(25)).tolist() == list(range(25))
    assert lucene_length_norm(np.array([100, 1000, 12345])).tolist() == [96, 984, 12312]


def test_bm25_scores_are_bm25():
    enc = Bm25Encoder()
    texts = ["the quick brown fox", "brown dogs and brown cats", "a fox"]
    docs = enc.encode_documents(texts)
    q = enc.encode_queries(["brown fox fox"])
    n, avgdl = 3, (3 + 4 + 1) / 3  # lengths after stopwords: quick brown fox / brown dogs brown cats / fox

    def bm25(tf, df, dl):
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * tf / (tf + 0.9 * (1 - 0.4 + 0.4 * dl / avgdl))

    expected = [bm25(1, 2, 3) + 2 * bm25(1, 2, 3), bm25(2, 2, 4), 2 * bm25(1, 2, 1)]
    got = (q.to_scipy() @ docs.to_scipy().T).toarray()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_search_and_search_batch(tmp_path):
    corpus = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"_id": "a", "title": "Cats", "text": "cats purr and sleep"},
            {"_id": "b", "title": "Dogs", "text": "dogs bark at cats"},
            {"_id": "c", "title": "", "text": ""},
        ],
    )
    r = Retriever.build(corpus, path=tmp_path / "ix")
    hits = r.search("sleeping cats", k=5)
    assert [h.doc_id for h in hits] == ["a", "b"]
    assert hits[0].title == "Cats" and hits[0].text == "cats purr and sleep" and hits[0].score > hits[1].score
    ids, scores = r.search_batch(["dogs", "sleeping", "zebra"], k=3)
    assert ids == [["b"], ["a"], []]
    assert scores.shape == (3, 3) and scores.dtype == np.float32 and np.isneginf(scores[2]).all()
    assert len(Retriever.load(tmp_path / "ix")) == 3


def test_scifact_bm25_quality(scifact_index, data_dir):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels: dict[str, dict[str, int]] = {}
    for line in (data_dir / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    queries = {}
    for line in (data_dir / "scifact" / "queries.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["_id"] in qrels:
            queries[record["_id"]] = record["text"]
    qids = list(queries)
    ids, scores = scifact_index.search_batch([queries[q] for q in qids], k=1000)
    run = {q: {d: float(s) for d, s in zip(i, sc) if d != q} for q, i, sc in zip(qids, ids, scores)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    ndcg = sum(v["ndcg_cut_10"] for v in per_query.values()) / len(qrels)
    assert ndcg >= 0.665, ndcg  # Anserini's Lucene BM25: 0.6789


def test_failed_build_keeps_previous_index(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"_id": "1", "text": "alpha beta"}])
    Retriever.build(good, path=tmp_path / "ix")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "2", "text": "gamma"}\n{broken\n')
    with pytest.raises(LsrError, match=r"bad.jsonl:2"):
        Retriever.build(bad, path=tmp_path / "ix")
    assert [h.doc_id for h in Retriever.load(tmp_path / "ix").search("alpha")] == ["1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.jsonl", "ix"]


def test_duplicate_ids_are_an_error(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "text": "a"}, {"_id": "1", "text": "b"}])
    with pytest.raises(LsrError, match=r"c.jsonl:2: duplicate document id '1' \(first at .*c.jsonl:1\)"):
        Retriever.build(corpus, path=tmp_path / "ix")


def test_build_killed_half_way_leaves_previous_index_loadable(tmp_path, data_dir):
    small = write_jsonl(tmp_path / "small.jsonl", [{"_id": "only", "text": "vitamin deficiency"}])
    Retriever.build(small, path=tmp_path / "ix")
    # a corpus big enough to still be indexing when killed
    source = (data_dir / "scifact" / "corpus.jsonl").read_text().splitlines()
    with open(tmp_path / "big.jsonl", "w") as f:
        for copy in range(8):
            for line in source:
                record = json.loads(line)
                record["_id"] = f"{copy}-{record['_id']}"
                f.write(json.dumps(record) + "\n")
    code = "from lsr import Retriever; import sys; Retriever.build(sys.argv[1], path=sys.argv[2])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "big.jsonl"), str(tmp_path / "ix")])
    deadline = time.time() + 60
    while time.time() < deadline and not any((p / "docs").exists() for p in tmp_path.glob(".ix.tmp-*")):
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = Retriever.load(tmp_path / "ix")
    assert len(r) == 1 and [h.doc_id for h in r.search("vitamin")] == ["only"]
    assert list(tmp_path.glob(".ix.tmp-*"))  # what the killed build left behind ...
    Retriever.build(small, path=tmp_path / "ix")
    assert not list(tmp_path.glob(".ix.tmp-*"))  # ... is removed by the next build


def test_seismic_index_through_the_retriever(tmp_path, data_dir):
    """index="seismic" builds the approximate index; exact=True answers exactly from its forward
    index (float32 values: the same hits and scores as the exact index)."""
    corpus = data_dir / "scifact"
    exact = Retriever.build(corpus, path=tmp_path / "exact", index="exact")
    approx = Retriever.build(
        corpus, path=tmp_path / "seismic", index="seismic", seismic={"summary_energy": 1.0, "values": "float32"}
    )
    assert approx.manifest["index_kind"] == "seismic" and exact.manifest["index_kind"] == "exact"
    queries = ["vitamin D and bone fractures", "microRNA in cancer", "statins reduce cholesterol"]
    exact_ids, exact_scores = exact.search_batch(queries, k=10)
    approx_ids, _ = approx.search_batch(queries, k=10, query_cut=20, heap_factor=0.9)
    recall = np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx_ids, exact_ids)])
    assert recall >= 0.9, recall
    forced = Retriever.load(tmp_path / "seismic", exact=True)
    forced_ids, forced_scores = forced.search_batch(queries, k=10)
    assert forced_ids == exact_ids
    np.testing.assert_allclose(forced_scores, exact_scores, rtol=1e-6)
    assert [h.doc_id for h in forced.search(queries[0], k=10)] == exact_ids[0]


def test_seismic_build_streams_a_neural_encoders_batches(tmp_path, data_dir):
    """With a model encoder the Seismic build takes the document pass batch by batch (each
    batch released once spilled): the index holds exactly the vectors the encoder gives."""
    import json
    import weakref

    from builders import build_tiny_mlm
    from lsr.encoders.base import DocumentPass
    from lsr.encoders.splade import SpladeEncoder

    enc = SpladeEncoder(build_tiny_mlm(tmp_path / "tiny"), device="cpu")
    run = DocumentPass(enc, batch_size=4, max_length=32)
    run.add(["alpha beta", "gamma"])
    run.add(["delta epsilon zeta"])
    first = weakref.ref(run.parts[0])
    chunks = run.chunks()
    assert len(next(chunks)) == 2 and run.parts == []
    assert first() is None  # handed out and released
    assert len(next(chunks)) == 1

    lines = (data_dir / "scifact" / "corpus.jsonl").read_text().splitlines()[:30]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    r = Retriever.build(corpus, model=enc, path=tmp_path / "ix", batch_size=8, max_length=32, index="seismic",
                        seismic={"values": "float32", "n_postings": 10**6})
    assert r.manifest["index_kind"] == "seismic"
    texts = []
    for line in lines:
        d = json.loads(line)
        texts.append(f"{d['title']} {d['text']}" if d.get("title") else d["text"])
    want = enc.encode_documents(texts, batch_size=8, max_length=32)
    got = Retriever.load(tmp_path / "ix").index.forward_vectors()
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-6)
    assert not [p for p in (tmp_path / "ix").rglob("lsr-seismic-*")]  # no scratch left behind


# ---- encoders through the registry ------------------------------------------------------------


class WordHash(Encoder):
    """A custom encoder kind for the registry test: each word → one of `dim` hashed columns
    (crc32), weight 1 per occurrence; nothing saved but the spec."""

    built_from_spec = 0

    def __init__(self, dim: int = 64) -> None:
        self.vocab = [f"h{i}" for i in range(dim)]

    @classmethod
    def from_spec(cls, spec, directory, device=None):
        cls.built_from_spec += 1
        return cls(spec["dim"])

    @property
    def spec(self):
        return {"type": "word-hash", "dim": self.dim}

    def encode_queries(self, texts):
        rows = []
        for text in texts:
            cols = [zlib.crc32(w.encode()) % self.dim for w in text.lower().split()]
            rows.append((cols, [1.0] * len(cols)))
        return SparseVectors.from_rows(rows, self.dim)

    def encode_documents(self, texts, batch_size=32, max_length=256, progress=None):
        return self.encode_queries(texts)


def test_a_registered_encoder_kind_round_trips_through_an_index(tmp_path, monkeypatch):
    """A new kind registers in one place (`register`); an index built with it is searched
    with the encoder in memory, and loads again through the table (its `from_spec`)."""
    from lsr.encoders import registry

    monkeypatch.setattr(registry, "ENCODERS", dict(registry.ENCODERS))
    corpus = write_jsonl(
        tmp_path / "c.jsonl",
        [{"_id": "a", "text": "red apples and pears"}, {"_id": "b", "text": "green pears"}, {"_id": "c", "text": "blue sky"}],
    )
    with pytest.raises(LsrError, match="unknown encoder type 'word-hash'"):
        registry.from_spec({"type": "word-hash", "dim": 64}, tmp_path)
    registry.register("word-hash", WordHash)
    enc = WordHash(64)
    built = Retriever.build(corpus, model=enc, path=tmp_path / "ix")
    assert built.encoder is enc and WordHash.built_from_spec == 0  # no second load
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["encoder"] == {"type": "word-hash", "dim": 64}
    loaded = Retriever.load(tmp_path / "ix")
    assert isinstance(loaded.encoder, WordHash) and WordHash.built_from_spec == 1
    for r in (built, loaded):
        assert [h.doc_id for h in r.search("pears", k=3)] == ["a", "b"]
        assert [h.doc_id for h in r.search("blue", k=3)] == ["c"]


def test_build_returns_the_encoder_in_memory_without_loading_the_model_again(tmp_path, monkeypatch):
    """`Retriever.build` keeps the model it indexed with: rebuilding one from the spec fails
    here, and the build still answers queries (as `Retriever.load` would, which rebuilds it)."""
    from builders import build_tiny_mlm

    from lsr.encoders.splade import SpladeEncoder

    enc = SpladeEncoder(build_tiny_mlm(tmp_path / "tiny"), device="cpu")
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"_id": "a", "text": "alpha beta"}, {"_id": "b", "text": "gamma"}])

    def no_second_load(*args, **kwargs):
        raise AssertionError("the model was loaded a second time")

    with monkeypatch.context() as patch:
        patch.setattr(SpladeEncoder, "from_spec", classmethod(no_second_load))
        built = Retriever.build(corpus, model=enc, path=tmp_path / "ix", max_length=32)
        assert built.encoder is enc
        first = built.search_batch(["alpha", "gamma"], k=2)
    again = Retriever.load(tmp_path / "ix")
    assert again.encoder is not enc and again.encoder.spec == enc.spec
    second = again.search_batch(["alpha", "gamma"], k=2)
    assert first[0] == second[0]
    np.testing.assert_allclose(first[1], second[1], rtol=1e-6)


def test_one_bm25_encoder_indexes_many_corpora(tmp_path):
    """BM25 fits its statistics inside its own document pass: the encoder given to
    `Retriever.build` is left as it was, so one instance builds independent indexes."""
    enc = Bm25Encoder()
    first = write_jsonl(tmp_path / "a.jsonl", [{"_id": "a1", "text": "cats purr"}, {"_id": "a2", "text": "dogs bark"}])
    second = write_jsonl(tmp_path / "b.jsonl", [{"_id": "b1", "text": "owls hoot"}, {"_id": "b2", "text": "cats hiss"}])
    ra = Retriever.build(first, model=enc, path=tmp_path / "ia")
    rb = Retriever.build(second, model=enc, path=tmp_path / "ib")
    assert enc.vocab == [] and ra.encoder is not enc
    assert ra.encoder.vocab == ["cat", "purr", "dog", "bark"] and rb.encoder.vocab == ["owl", "hoot", "cat", "hiss"]
    for r, query, best in ((ra, "cats", "a1"), (rb, "cats", "b2"), (rb, "owls", "b1")):
        assert [h.doc_id for h in r.search(query, k=1)] == [best]
        assert Retriever.load(r.path).encoder.vocab == r.encoder.vocab
