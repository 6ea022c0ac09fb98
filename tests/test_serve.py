"""`lsr serve`: the app in-process (ASGI test client), and once as a real subprocess on
127.0.0.1 with concurrent clients while the index is rebuilt (hot swap loses no request)."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from lsr.retriever import Retriever  # noqa: E402
from lsr.serve import create_app  # noqa: E402

CORPUS_A = [
    ("a1", "Sparse retrieval", "inverted indexes store postings for every term"),
    ("a2", "Dense retrieval", "bi-encoders embed queries and documents as vectors"),
    ("a3", "Cooking", "boil pasta in salted water"),
]
CORPUS_B = CORPUS_A + [("b1", "Fusion", "reciprocal rank fusion of sparse and dense runs"), ("b2", "Feedback", "pseudo relevance feedback expands the query")]


def _build(root, corpus, name="idx"):
    path = root / f"{name}.tsv"
    path.write_text("".join(f"{d}\t{t}\t{x}\n" for d, t, x in corpus))
    return Retriever.build(path, model="bm25", path=root / name, index="exact")


@pytest.fixture()
def client(tmp_path):
    _build(tmp_path, CORPUS_A)
    app = create_app(tmp_path / "idx", poll_seconds=0.0)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.root = tmp_path
        yield c


def test_search_one_query_and_a_batch(client):
    got = client.post("/search", json={"query": "sparse postings", "k": 2}).json()
    assert got["query"] == "sparse postings" and got["generation"] == 1
    assert [h["doc_id"] for h in got["hits"]] == ["a1"]
    hit = got["hits"][0]
    assert hit["rank"] == 1 and hit["title"] == "Sparse retrieval" and hit["score"] > 0 and "text" not in hit
    got = client.post("/search", json={"queries": ["pasta", "vectors", "nothing matches"], "text": True}).json()
    assert [[h["doc_id"] for h in r["hits"]] for r in got["results"]] == [["a3"], ["a2"], []]
    assert got["results"][0]["hits"][0]["text"] == "boil pasta in salted water"


def test_health_info_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "documents": 3, "generation": 1}
    info = client.get("/info").json()
    assert info["manifest"]["n_docs"] == 3 and info["manifest"]["encoder"]["type"] == "bm25" and "files" not in info["manifest"]
    assert client.get("/docs").status_code == 200
    assert "/search" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"query": "a", "queries": ["b"]},
        {"query": "a", "k": 0},
        {"query": "a", "mode": "hybrid"},
        {"query": "a", "alpha": 2},
        {"queries": []},
        {"query": 3},
    ],
)
def test_bad_requests_are_4xx_json(client, body):
    response = client.post("/search", json=body)
    assert response.status_code == 422
    assert "detail" in response.json()


def test_user_errors_are_400_json_without_traceback(client):
    response = client.post("/search", json={"query": "a", "mode": "dense"})
    assert response.status_code == 400
    assert "no dense index" in response.json()["error"] and "Traceback" not in response.text
    response = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert client.get("/nothing").status_code == 404


def test_hot_swap_in_process(client):
    assert client.get("/health").json()["documents"] == 3
    _build(client.root, CORPUS_B)  # renamed into place over the served index
    health = client.get("/health").json()
    assert health == {"status": "ok", "documents": 5, "generation": 2}
    assert client.post("/search", json={"query": "reciprocal rank fusion"}).json()["hits"][0]["doc_id"] == "b1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_concurrent_clients_and_hot_swap(tmp_path):
    _build(tmp_path, CORPUS_A)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "lsr.cli.app", "serve", "--index", str(tmp_path / "idx"), "--port", str(port), "--poll", "0.05"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        statuses: list[int] = []
        generations: set[int] = set()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=10) as c:
                for i in range(400):  # bounded: at most 400 requests per client
                    if stop.is_set() and i > 20:
                        break
                    r = c.post("/search", json={"query": ["sparse", "pasta", "vectors"][i % 3], "k": 3})
                    statuses.append(r.status_code)
                    generations.add(r.json().get("generation", 0) if r.status_code == 200 else -1)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        _build(tmp_path, CORPUS_B)  # two rebuilds renamed into place during the query loop
        time.sleep(0.3)
        _build(tmp_path, CORPUS_A)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(60)
        assert len(statuses) > 80 and set(statuses) == {200}
        assert {1, 2} <= generations  # answers came from both sides of the swap
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "documents": 3, "generation": 3}
    finally:
        server.terminate()
        server.wait(10)


def test_filters_where_and_ids(tmp_path):
    corpus = tmp_path / "c.jsonl"
    import json

    rows = [("d1", "sparse postings", 2019, "acm"), ("d2", "sparse postings lists", 2021, "acm"), ("d3", "sparse retrieval postings", 2023, "arxiv")]
    corpus.write_text("".join(json.dumps({"_id": d, "title": "", "text": t, "year": y, "venue": v}) + "\n" for d, t, y, v in rows))
    Retriever.build(corpus, model="bm25", path=tmp_path / "idx", index="exact", keep_fields=["year", "venue"])
    with TestClient(create_app(tmp_path / "idx"), raise_server_exceptions=False) as c:
        def ids(**body):
            got = c.post("/search", json={"query": "sparse postings", **body})
            assert got.status_code == 200, got.text
            return sorted(h["doc_id"] for h in got.json()["hits"])

        assert ids() == ["d1", "d2", "d3"]
        assert ids(where="year>=2021") == ["d2", "d3"]
        assert ids(where='venue="acm"') == ["d1", "d2"]
        assert ids(ids=["d1", "d3"]) == ["d1", "d3"]
        assert ids(where="year>=2021", ids=["d1", "d3"]) == ["d3"]
        assert ids(ids=[]) == []
        bad = c.post("/search", json={"query": "sparse", "where": "colour=red"})
        assert bad.status_code == 400 and "unknown field 'colour'" in bad.json()["error"]
        bad = c.post("/search", json={"query": "sparse", "where": "year>=2021", "mode": "dense"})
        assert bad.status_code == 400 and "sparse search only" in bad.json()["error"]
