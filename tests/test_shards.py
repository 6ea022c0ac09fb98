"""Scale-out on Ray (`lsr.shards`): a local 2-CPU cluster, one per module (Ray starts in seconds)."""

import json
import os
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from lsr.encoders.bm25 import Bm25Encoder  # noqa: E402
from lsr.errors import LsrError  # noqa: E402
from lsr.retriever import Retriever  # noqa: E402
from lsr.shards import build_sharded  # noqa: E402

SEISMIC_EXHAUSTIVE = dict(n_postings=100_000, centroid_fraction=0.2)  # no pruning: searched exactly below


@pytest.fixture(scope="module")
def cluster():
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors need KillOnce below
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scifact_sample(tmp_path_factory, data_dir):
    """The first 600 SciFact documents (real text: BM25 statistics, ties and all)."""
    folder = tmp_path_factory.mktemp("corpus")
    with open(data_dir / "scifact" / "corpus.jsonl") as src, open(folder / "corpus.jsonl", "w") as dst:
        for _, line in zip(range(600), src):
            dst.write(line)
    queries = [json.loads(line)["text"] for _, line in zip(range(40), open(data_dir / "scifact" / "queries.jsonl"))]
    return folder / "corpus.jsonl", queries


def assert_same_results(single: Retriever, split: Retriever, queries, **options):
    assert len(single) == len(split)
    assert split.docs.all_ids().tolist() == single.docs.all_ids().tolist()
    for k in (10, 100):
        want_ids, want_scores = single.search_batch(queries, k=k, threads=2, **options)
        got_ids, got_scores = split.search_batch(queries, k=k, threads=2, **options)
        assert got_ids == want_ids
        np.testing.assert_array_equal(got_scores, want_scores)
    hits = split.search(queries[0], k=5, **options)
    assert [h.doc_id for h in hits] == [h.doc_id for h in single.search(queries[0], k=5, **options)]


@pytest.mark.parametrize("kind", ["exact", "seismic"])
def test_sharded_build_and_search_equal_a_single_node_index(cluster, scifact_sample, tmp_path, kind):
    corpus, queries = scifact_sample
    seismic = SEISMIC_EXHAUSTIVE if kind == "seismic" else None
    single = Retriever.build(corpus, model="bm25", path=tmp_path / "single", index=kind, seismic=seismic)
    seen = []
    report = build_sharded(
        corpus, model=Bm25Encoder(), path=tmp_path / "sharded", shards=3, actors=2, block_docs=64,
        index=kind, seismic=seismic, progress=lambda task, done, total, docs: seen.append((task, docs, total)),
    )  # fmt: skip
    assert (report.n_docs, report.n_shards, report.n_actors) == (600, 3, 2)
    assert seen[-1] == ("indexing", 600, 600) and len(seen) == 10  # one call per block of 64
    split = Retriever.load(tmp_path / "sharded")
    assert split.index.kind == "sharded" and [s.kind for s in split.index.shards] == [kind] * 3
    assert [len(s) for s in split.index.shards] == [200, 200, 200]
    assert split.manifest["nnz"] == single.manifest["nnz"]
    assert (tmp_path / "sharded" / "encoder" / "vocab.txt").read_text() == (tmp_path / "single" / "encoder" / "vocab.txt").read_text()
    options = dict(query_cut=1000, heap_factor=0.0) if kind == "seismic" else {}
    assert_same_results(single, split, queries, **options)
    assert split.verify() > 0


class KillOnce:
    """A BM25 analyzer that kills its process (the encoding actor) the first time it meets
    the document holding `marker`, leaving a file so that the restarted actor goes on."""

    def __init__(self, analyzer, marker: str, flag: str) -> None:
        self.analyzer, self.marker, self.flag = analyzer, marker, flag

    def __call__(self, text: str):
        if self.marker in text and not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os._exit(1)
        return self.analyzer(text)


def test_an_actor_killed_mid_encode_still_gives_the_full_identical_index(cluster, scifact_sample, tmp_path):
    corpus, queries = scifact_sample
    single = Retriever.build(corpus, model="bm25", path=tmp_path / "single", index="exact")
    marker = single.docs.text(300)[:40]  # a document in the middle of the corpus
    encoder = Bm25Encoder()
    flag = tmp_path / "killed"
    encoder.analyzer = KillOnce(encoder.analyzer, marker, str(flag))
    report = build_sharded(corpus, model=encoder, path=tmp_path / "sharded", shards=2, actors=2, block_docs=50, index="exact")
    assert flag.exists()  # an actor did die
    assert report.n_docs == 600
    split = Retriever.load(tmp_path / "sharded")
    assert split.docs.all_ids().tolist() == single.docs.all_ids().tolist()  # no document lost or doubled
    assert sum(len(s) for s in split.index.shards) == 600
    assert_same_results(single, split, queries)


def test_a_failed_sharded_build_leaves_the_previous_index(cluster, scifact_sample, tmp_path):
    corpus, queries = scifact_sample
    build_sharded(corpus, model=Bm25Encoder(), path=tmp_path / "ix", shards=2, block_docs=200)
    before = (tmp_path / "ix" / "manifest.json").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(corpus.read_text() + "{not json\n")
    with pytest.raises(LsrError, match="bad.jsonl:601"):
        build_sharded(bad, model=Bm25Encoder(), path=tmp_path / "ix", shards=2, block_docs=200)
    assert (tmp_path / "ix" / "manifest.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ix.tmp-")]
    assert len(Retriever.load(tmp_path / "ix")) == 600


def lsr_cli(*args):
    import shutil
    import subprocess

    script = shutil.which("lsr", path=os.path.dirname(sys.executable))
    return subprocess.run([script, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cli_index_on_the_running_cluster_then_search_info_and_serve_unchanged(cluster, scifact_sample, tmp_path):
    """`lsr index --ray ADDRESS` joins this module's cluster; search, info and serve need no flag."""
    corpus, queries = scifact_sample
    address = ray.get_runtime_context().gcs_address
    result = lsr_cli("index", corpus, "-m", "bm25", "-i", tmp_path / "sharded", "--ray", address, "--shards", "2", "--actors", "2")
    assert result.returncode == 0, result.stderr
    assert "indexed 600 documents" in result.stdout and "2 shards, 2 encoding actors" in result.stdout
    result = lsr_cli("index", corpus, "-m", "bm25", "-i", tmp_path / "single")
    assert result.returncode == 0, result.stderr
    searches = [lsr_cli("search", queries[1], "--json", "-k", "20", "-i", tmp_path / name) for name in ("single", "sharded")]
    assert all(r.returncode == 0 for r in searches), searches[1].stderr
    assert json.loads(searches[1].stdout) == json.loads(searches[0].stdout)
    info = lsr_cli("info", "--json", "--verify", "-i", tmp_path / "sharded")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["index_kind"] == "sharded"
    bad = lsr_cli("index", corpus, "-m", "bm25", "-i", tmp_path / "x", "--shards", "2")
    assert bad.returncode == 1 and "need --ray ADDRESS" in bad.stderr

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lsr.serve import create_app

    with TestClient(create_app(tmp_path / "sharded")) as client:
        got = client.post("/search", json={"query": queries[1], "k": 20}).json()
    want = json.loads(searches[0].stdout)
    assert [h["doc_id"] for h in got["hits"]] == [h["doc_id"] for h in want]


@pytest.mark.slow
def test_a_splade_model_loaded_in_each_actor_gives_the_single_node_vectors(cluster, scifact_sample, tmp_path, data_dir):
    """The real splade-tiny, loaded by path in each actor: batches as a single-node build makes
    them (a model's numbers depend on its batch), so the scores are bit-identical."""
    model = data_dir.parent / "models" / "splade-tiny"
    corpus, queries = scifact_sample
    small = tmp_path / "small.jsonl"
    small.write_text("".join(corpus.read_text().splitlines(keepends=True)[:48]))
    single = Retriever.build(small, model=str(model), path=tmp_path / "single", batch_size=8, index="exact")
    build_sharded(small, model=str(model), path=tmp_path / "sharded", shards=2, actors=2, block_docs=10, batch_size=8)
    split = Retriever.load(tmp_path / "sharded")
    assert split.manifest["encoder"] == single.manifest["encoder"]
    assert_same_results(single, split, queries[:10])


def test_search_in_ray_actors_holding_shards_equals_local_threads(cluster, scifact_sample, tmp_path):
    from lsr.indexer import Index
    from lsr.prf import Prf
    from lsr.shards import RayShardedIndex

    corpus, queries = scifact_sample
    build_sharded(corpus, model=Bm25Encoder(), path=tmp_path / "ix", shards=3, index="exact")
    local = Retriever.load(tmp_path / "ix")
    remote = Retriever.load(tmp_path / "ix", ray=ray.get_runtime_context().gcs_address, actors=2)
    try:
        assert isinstance(remote.index, RayShardedIndex) and isinstance(remote.index, Index)
        assert (len(remote.index), remote.index.dim, remote.index.kind, len(remote.index.actors)) == (600, local.index.dim, "sharded", 2)
        assert_same_results(local, remote, queries)
        vectors = local.encoder.encode_queries(queries[:5])
        for threads in (0, 1, 7):  # the protocol's threads rule, capped at the CPUs an actor reserved
            got = remote.index.search(vectors, k=10, threads=threads)
            np.testing.assert_array_equal(got[0], local.index.search(vectors, k=10, threads=1)[0])
        with pytest.raises(ValueError, match="threads must be"):
            remote.index.search(vectors, k=10, threads=-1)
        assert remote.index.search(vectors, k=0)[0].shape == (5, 0)
        prf = Prf(docs=3, terms=10, weight=0.5)  # feedback vectors come from the local forward view
        want = local.search_rows(queries[:5], k=10, prf=prf)
        got = remote.search_rows(queries[:5], k=10, prf=prf)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        remote.index.check_values(full=True)
    finally:
        remote.index.close()


def test_cli_search_and_serve_with_ray_answer_as_local_threads(cluster, scifact_sample, tmp_path):
    """`lsr search --ray ADDRESS` joins this module's cluster; `lsr serve`'s app over a
    Ray-backed retriever answers as the local one; --ray on an unsharded index is one line."""
    corpus, queries = scifact_sample
    address = ray.get_runtime_context().gcs_address
    build_sharded(corpus, model=Bm25Encoder(), path=tmp_path / "sharded", shards=3, index="exact")
    searches = [
        lsr_cli("search", queries[2], "--json", "-k", "20", "-i", tmp_path / "sharded", *extra)
        for extra in ((), ("--ray", address))  # 3 shards, 3 actors (default) on 2 CPUs: they reserve none
    ]
    assert all(r.returncode == 0 for r in searches), searches[1].stderr
    assert json.loads(searches[1].stdout) == json.loads(searches[0].stdout) and len(json.loads(searches[0].stdout)) == 20

    Retriever.build(corpus, model="bm25", path=tmp_path / "single", index="exact")
    bad = lsr_cli("search", "x", "-i", tmp_path / "single", "--ray", address)
    assert bad.returncode == 1 and "--ray searches a sharded index" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = lsr_cli("search", "x", "-i", tmp_path / "sharded", "--actors", "2")
    assert bad.returncode == 1 and "--actors needs --ray ADDRESS" in bad.stderr

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lsr.serve import create_app

    requests = [{"query": queries[2], "k": 20}, {"queries": queries[:8], "k": 5, "prf_docs": 2}]
    answers = []
    for options in ({}, {"ray": address, "actors": 2}):
        app = create_app(tmp_path / "sharded", **options)
        with TestClient(app) as client:
            answers.append([client.post("/search", json=r).json() for r in requests])
        if options:
            assert type(app.state.holder.retriever.index).__name__ == "RayShardedIndex"
            app.state.holder.retriever.index.close()
    assert answers[1] == answers[0]
    assert [h["doc_id"] for h in answers[0][0]["hits"]] == [h["doc_id"] for h in json.loads(searches[0].stdout)]


def test_search_actors_that_cannot_start_or_ray_missing_are_one_clear_error(cluster, scifact_sample, tmp_path, monkeypatch):
    from lsr.shards import RayShardedIndex

    corpus, _ = scifact_sample
    build_sharded(corpus, model=Bm25Encoder(), path=tmp_path / "ix", shards=3, block_docs=300)
    monkeypatch.setattr(RayShardedIndex, "START_SECONDS", 0)  # an actor takes more than 0 s to start
    with pytest.raises(LsrError, match="3 Ray search actors did not start within 0 s"):
        RayShardedIndex(tmp_path / "ix" / "index")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as without the extra
    with pytest.raises(LsrError, match=r"--ray needs Ray: pip install 'lsr\[ray\]'"):
        Retriever.load(tmp_path / "ix", ray="local")
