"""Bounded load test of `lsr serve` on 127.0.0.1: requests/s, p50/p99 latency and errors,
first on a steady index, then while the index is rebuilt and hot-swapped (errors must be 0).

    python benchmarks/bench_serve.py                 # SciFact BM25 index, 8 clients, 2,000 requests a phase
    python benchmarks/bench_serve.py --clients 4 --requests 500

The reference line is the same queries answered in-process by `Retriever.search` (one
thread): the HTTP layer's cost shows as the ratio. Traffic goes to 127.0.0.1 only, bounded
in count (--requests) and in time (--max-seconds a phase, 10 s a request).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from harness import markdown_table

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, queries: list[str], clients: int, total: int, max_seconds: float, until: threading.Event | None = None) -> dict:
    """`total` POST /search requests from `clients` threads (with `until`: more, up to 20 × total,
    until it is set); latencies, errors, index generations seen."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    generations: set[int] = set()
    counter = iter(range(20 * total if until is not None else total))
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None or (i >= total and (until is None or until.is_set())):
                    return
                start = time.perf_counter()
                try:
                    r = c.post("/search", json={"query": queries[i % len(queries)], "k": 10})
                    ok = r.status_code == 200
                    body = r.json()
                except (httpx.HTTPError, ValueError) as err:
                    ok, body = False, {"error": repr(err)}
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                        generations.add(body["generation"])
                    else:
                        errors.append(str(body)[:200])

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies) + len(errors),
        "ok": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": wall,
        "requests_per_s": (len(latencies) + len(errors)) / wall,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "generations": sorted(generations),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--workdir", type=Path, default=None, help="Where the index is built [default: a temporary folder].")
    args = ap.parse_args()
    import httpx

    from lsr.eval.loaders import load_queries_jsonl
    from lsr.retriever import Retriever

    queries = list(load_queries_jsonl(SCIFACT / "queries.jsonl").values())
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    index = work / "scifact-bm25"
    lsr_cmd = [sys.executable, "-m", "lsr.cli.app"]
    t = time.perf_counter()
    retriever = Retriever.build(SCIFACT, model="bm25", path=index, index="exact")
    build_s = time.perf_counter() - t
    print(f"index: {index} ({len(retriever):,} docs, built in {build_s:.1f} s); {len(queries)} SciFact queries, cycled")

    n_ref = min(args.requests, len(queries))
    t = time.perf_counter()
    for q in queries[:n_ref]:
        retriever.search(q, k=10)
    ref = n_ref / (time.perf_counter() - t)
    print(f"reference: in-process Retriever.search, 1 thread: {ref:,.0f} queries/s")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        lsr_cmd + ["serve", "--index", str(index), "--host", "127.0.0.1", "--port", str(port), "--poll", "0.2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {server.stderr.read()}")
            time.sleep(0.2)
        load(url, queries, args.clients, 50, 30)  # warm-up
        results = {"steady": load(url, queries, args.clients, args.requests, args.max_seconds)}

        rebuilds: list[float] = []
        swapped, stop = threading.Event(), threading.Event()

        def rebuild() -> None:  # rebuild the index into the served path (renamed into place), at most 3 times
            while not stop.is_set() and len(rebuilds) < 3:
                t0 = time.perf_counter()
                subprocess.run(lsr_cmd + ["index", str(SCIFACT), "--model", "bm25", "--index", str(index)],
                               env=env, check=True, capture_output=True)  # fmt: skip
                rebuilds.append(time.perf_counter() - t0)
                time.sleep(1.0)  # the server's poll sees it; then answers from the new index
                swapped.set()

        builder = threading.Thread(target=rebuild)
        builder.start()
        # at least --requests requests, and on until a rebuild has been swapped in under load
        results["hot swap"] = load(url, queries, args.clients, args.requests, args.max_seconds, until=swapped)
        results["hot swap"]["rebuilds_during_load"] = len(rebuilds)
        stop.set()
        builder.join()
        final = httpx.get(f"{url}/health").json()
    finally:
        server.terminate()
        server.wait(10)

    print(f"lsr serve on 127.0.0.1, {args.clients} concurrent clients, POST /search k=10 (bm25, exact index):")
    print(markdown_table(["phase", "requests", "errors", "req/s", "p50 ms", "p99 ms", "index generations"], [
        [name, r["requests"], r["errors"], f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", r["generations"]]
        for name, r in results.items()
    ]))  # fmt: skip
    for name, r in results.items():
        for e in r["first_errors"]:
            print(f"  error ({name}): {e}")
    print(f"rebuilds finished during the hot-swap phase: {results['hot swap']['rebuilds_during_load']}; "
          f"server generation at the end: {final['generation']}")  # fmt: skip
    print(f"HTTP / in-process: {results['steady']['requests_per_s'] / ref:.2f}x the queries/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
