"""MS MARCO scale: lsr's Seismic index beside pyseismic on a synthetic 8.8M-document set,
built from disk without holding the collection in memory.

The documents are `bench_index.synthetic_docs` (SPLADE-like, ~112 terms a document, topics
from the real SPLADE++ ED MS MARCO dev queries), generated once in chunks into `--data`
(reused by later runs with the same `--docs`): a `lsr.formats.spill` folder (`vectors/`,
what lsr builds from, memory-mapped) and Seismic's binary file (`docs.bin`, what pyseismic
builds from). Each engine builds in a child process; this process samples the child's
memory every half second (peak resident and peak anonymous memory: the memory-mapped input's
page cache counts in the first, not in the second) and stops it past `--max-rss-gib`. The
ground truth (exact top-k) is computed over chunks of documents with scipy and kept in
`--data`. Search is single thread, one Python call per query, the engines alternating
configuration by configuration, as in `bench_index.py`; the table gives each engine's
fastest configuration reaching each recall@k level.

    python benchmarks/bench_msmarco.py --docs 1000000                      # both engines
    python benchmarks/bench_msmarco.py --docs 8800000 --engines lsr        # lsr alone
    python benchmarks/bench_msmarco.py --docs 8800000 --engines pyseismic
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_index import bert_vocab, dir_bytes, load_queries, recall, synthetic_docs
from harness import HERE, RESULT, markdown_table, status_mib, time_alternating
from lsr.sparse import SparseVectors

GIB = 2**30


def mem_available() -> int:
    """MemAvailable of /proc/meminfo, bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def split_queries(k_eval: int) -> tuple[SparseVectors, SparseVectors]:
    """(evaluated queries, topic queries) exactly as `bench_index.py` draws them."""
    all_q = load_queries(bert_vocab(), None)
    evaluated = np.sort(np.random.default_rng(1).choice(len(all_q), size=min(k_eval, len(all_q)), replace=False))
    return all_q[evaluated], all_q[np.setdiff1d(np.arange(len(all_q)), evaluated)]


def generate(folder: Path, topics: SparseVectors, n_docs: int) -> None:
    """The synthetic collection into `folder` (`vectors/` spill and `docs.bin`), chunk by chunk;
    nothing is left there unless both are complete."""
    from lsr.formats.spill import VectorSpill
    from lsr.formats.vectors import write_seismic_bin

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    spill = VectorSpill(tmp / "vectors")
    t0 = time.perf_counter()

    def chunks():
        for i, chunk in enumerate(synthetic_docs(topics, n_docs, chunk=100_000)):
            spill.add(chunk)
            if i % 10 == 9:
                print(f"  generated {spill.rows:,} documents ({time.perf_counter() - t0:.0f}s)", flush=True)
            yield chunk

    write_seismic_bin(tmp / "docs.bin", chunks())
    spill.close()
    tmp.rename(folder)


def ground_truth(folder: Path, queries: SparseVectors, k: int, doc_chunk: int = 500_000, query_block: int = 100) -> np.ndarray:
    """Exact top-k rows per query (scipy, float32), documents read `doc_chunk` at a time from
    the spill, kept as `gt-k{k}-q{n}.npy` in `folder`."""
    from lsr.formats.spill import read_spill

    cache = folder / f"gt-k{k}-q{len(queries)}.npy"
    if cache.exists():
        return np.load(cache)
    docs = read_spill(folder / "vectors", mode="r")
    QT = queries.to_scipy().T.tocsc()
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for lo in range(0, len(docs), doc_chunk):
        D = docs[lo : lo + doc_chunk].to_scipy()
        for q0 in range(0, len(queries), query_block):
            S = (D @ QT[:, q0 : q0 + query_block]).toarray().T  # [queries, docs of the chunk]
            kk = min(k, S.shape[1])
            top = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
            s = np.concatenate([best_s[q0 : q0 + query_block], np.take_along_axis(S, top, 1)], axis=1)
            i = np.concatenate([best_i[q0 : q0 + query_block], top + lo], axis=1)
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
            best_s[q0 : q0 + query_block] = np.take_along_axis(s, order, 1)
            best_i[q0 : q0 + query_block] = np.take_along_axis(i, order, 1)
        del D
    np.save(cache, best_i)
    return best_i


CHILD = r"""
import sys, time, json
from harness import child_report
which, data, out, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
t0 = time.perf_counter()
if which == "lsr":
    from lsr.formats.spill import read_spill
    from lsr.indexer.seismic import SeismicIndex
    v = read_spill(data + "/vectors")  # memory-mapped: built in place, never copied
    t1 = time.perf_counter()
    idx = SeismicIndex.build(v, **params)
    size = idx.nbytes
    t2 = time.perf_counter()
    idx.save(out)
else:
    import seismic
    t1 = time.perf_counter()
    idx = seismic.SeismicIndexRaw.build(data + "/docs.bin", **params)
    t2 = time.perf_counter()
    idx.save(out)
    size = None
    sys.stdout.flush()
    idx.print_space_usage_byte()  # "Total: N Bytes" (Rust's stdout)
t3 = time.perf_counter()
child_report(build_s=t2 - t1, read_s=t1 - t0, save_s=t3 - t2, size=size)
"""


def build_child(which: str, data: Path, out: str, params: dict, max_rss: int) -> dict | None:
    """Build in a child process, sampling its anonymous resident memory every 0.5 s; stopped
    when its resident anonymous memory passes `max_rss` bytes. None (and one line) on failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        child = subprocess.Popen([sys.executable, "-c", CHILD, which, str(data), out, json.dumps(params)],
                                 stdout=out_f, stderr=err_f, text=True, env=env)  # fmt: skip
        peak_anon = 0.0
        killed = False
        while child.poll() is None:
            anon = status_mib("RssAnon", child.pid) * 2**20
            peak_anon = max(peak_anon, anon)
            if anon > max_rss:
                child.kill()
                killed = True
            time.sleep(0.5)
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    if killed:
        print(f"{which}: build stopped at {peak_anon / GIB:.1f} GiB of anonymous memory (limit {max_rss / GIB:.1f} GiB); left out")
        return None
    if child.returncode or not lines:
        print(f"{which}: build failed ({(stderr.strip().splitlines() or [f'exit status {child.returncode}'])[-1]}); left out")
        return None
    result = json.loads(lines[-1][len(RESULT):])
    result["peak_anon_mib"] = peak_anon / 2**20
    totals = [line for line in stdout.splitlines() if line.strip().startswith("Total:")]
    if result["size"] is None and totals:
        result["size"] = int(totals[-1].split()[1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=8_800_000, help="synthetic documents (default 8.8M)")
    ap.add_argument("--data", default="/tmp/msmarco", help="where the collection is generated (once) and kept")
    ap.add_argument("--queries", type=int, default=1000, help="queries evaluated (of 6980)")
    ap.add_argument("--search-queries", type=int, help="search only the first N of those queries (the collection "
                    "still excludes all of them from its topics): a cheaper ground truth at 8.8M")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--engines", default="lsr,pyseismic", help="lsr, pyseismic or both (comma-separated); none: "
                    "generate the collection only")
    ap.add_argument("--query-cuts", default="3,4,5,6,8,10")
    ap.add_argument("--heap-factors", default="0.9,1.0,1.1,1.2")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per configuration (the fastest counts)")
    ap.add_argument("--max-rss-gib", type=float, help="stop a build past this much anonymous memory "
                    "(default: MemAvailable at the start less 3 GiB)")
    ap.add_argument("--ground-truth-only", action="store_true",
                    help="generate the collection if needed, compute (and keep) the ground truth, and stop")
    ap.add_argument("--reuse-indexes", action="store_true", help="search the indexes already in --keep-indexes "
                    "instead of building them")
    ap.add_argument("--keep-indexes", help="save the built indexes in this folder instead of a temporary one")
    args = ap.parse_args()

    queries, topics = split_queries(args.queries)
    folder = Path(args.data) / f"synthetic-{args.docs}-q{len(queries)}"  # the topics are the other queries
    t = time.perf_counter()
    if not (folder / "vectors" / "spill.json").exists():
        print(f"generating {args.docs:,} documents into {folder}", flush=True)
        generate(folder, topics, args.docs)
    from lsr.formats.spill import read_spill

    docs = read_spill(folder / "vectors", mode="r")
    print(f"documents: synthetic (bench_index.synthetic_docs), {len(docs):,} docs, {docs.nnz / len(docs):.1f} terms/doc, "
          f"dim {docs.dim}; {folder} ({dir_bytes(str(folder)) / GIB:.1f} GiB; ready in {time.perf_counter() - t:.0f}s)")
    print(f"queries: {len(queries)} SPLADE++ ED MS MARCO dev queries, {queries.nnz / len(queries):.1f} terms/query")
    print(f"machine: {os.cpu_count()} CPUs, {mem_available() / GIB:.1f} GiB available, load average {os.getloadavg()[0]:.2f}", flush=True)
    dim = docs.dim
    del docs
    if args.search_queries:
        queries = queries[: args.search_queries]
        print(f"searched: the first {len(queries)} of them")
    if args.ground_truth_only:
        t = time.perf_counter()
        ground_truth(folder, queries, args.k)
        print(f"ground truth (exact, scipy over chunks of documents): {time.perf_counter() - t:.1f}s")
        return

    params = dict(n_postings=3500, max_fraction=1.5, centroid_fraction=0.1, summary_energy=0.4, min_cluster_size=2, doc_cut=15)
    max_rss = int(args.max_rss_gib * GIB) if args.max_rss_gib else mem_available() - 3 * GIB
    keep = args.keep_indexes or tempfile.mkdtemp(prefix="bench_msmarco.")
    wanted = [e for e in args.engines.split(",") if e != "none"]
    if set(wanted) - {"lsr", "pyseismic"}:
        sys.exit(f"--engines: lsr, pyseismic or none, not {args.engines}")
    if "lsr" in wanted:  # compile (or load from the cache) our kernels outside the timed build
        from lsr.indexer.seismic import SeismicIndex

        tiny = SparseVectors.from_rows([([1, 5], [1.0, 2.0]), ([5, 7], [0.5, 1.0])] * 10, dim)
        SeismicIndex.build(tiny, **params).search(tiny[np.arange(2)], k=2)
    builds = {}
    for which in wanted:
        if which == "pyseismic":
            import importlib.util

            if importlib.util.find_spec("seismic") is None:
                print("pyseismic is not installed: skipped (pip install lsr[peers])")
                continue
        out = f"{keep}/{which}"
        if args.reuse_indexes and Path(out).exists():
            builds[which] = {"reused": out}
            print(f"{which}: reusing {out}")
            continue
        shutil.rmtree(out, ignore_errors=True)
        print(f"building {which} (load average {os.getloadavg()[0]:.2f}, {mem_available() / GIB:.1f} GiB available)", flush=True)
        built = build_child(which, folder, out, params, max_rss)
        if built is not None:
            built["disk"] = dir_bytes(out)
            builds[which] = built
            print(f"  {which}: {json.dumps(built)}", flush=True)

    names = {"lsr": "lsr Seismic", "pyseismic": "pyseismic"}
    print(f"\n## Build ({', '.join(f'{a}={b}' for a, b in params.items())}; lsr values=float16)")
    print(markdown_table(["", "build s", "peak RSS MiB", "peak anonymous MiB", "index in memory MiB", "index on disk MiB"], [
        [names[w], f"{b['build_s']:.1f}", f"{b['peak_rss_mib']:.0f}", f"{b['peak_anon_mib']:.0f}",
         f"{b['size'] / 2**20:.0f}" if b.get("size") else "—", f"{b['disk'] / 2**20:.0f}"] for w, b in builds.items()
        if "reused" not in b
    ]))  # fmt: skip
    if not builds:
        return

    t = time.perf_counter()
    gt = ground_truth(folder, queries, args.k)
    print(f"\nground truth (exact, scipy over chunks of documents): {time.perf_counter() - t:.1f}s", flush=True)

    k = args.k
    singles = [queries[i : i + 1] for i in range(len(queries))]
    grid = [(int(qc), float(hf)) for qc in args.query_cuts.split(",") for hf in map(float, args.heap_factors.split(","))]
    configs = {}
    if "lsr" in builds:
        from lsr.indexer.seismic import SeismicIndex

        index = SeismicIndex.load(f"{keep}/lsr")  # memory-mapped, as `Retriever.load` opens it

        def run_lsr(qc, hf):
            ids = np.empty((len(singles), k), dtype=np.int64)
            for i, q in enumerate(singles):
                ids[i] = index.search(q, k=k, query_cut=qc, heap_factor=hf)[0][0]
            return ids

        configs["lsr Seismic"] = [lambda qc=qc, hf=hf: run_lsr(qc, hf) for qc, hf in grid]
    if "pyseismic" in builds:
        import seismic

        peer = seismic.SeismicIndexRaw.load(f"{keep}/pyseismic")
        q_comps = [q.indices.astype(np.int32) for q in singles]
        q_vals = [q.values for q in singles]

        def run_peer(qc, hf):
            ids = np.full((len(singles), k), -1, dtype=np.int64)
            for i, (c, v) in enumerate(zip(q_comps, q_vals)):
                row = [int(d) for _, d in peer.search(c, v, k, qc, hf, 0, True)][:k]
                ids[i, : len(row)] = row
            return ids

        configs["pyseismic"] = [lambda qc=qc, hf=hf: run_peer(qc, hf) for qc, hf in grid]
    for fns in configs.values():  # warm-up: page cache, first-call work
        fns[0]()
    results: dict[str, list[tuple[str, float, float]]] = {name: [] for name in configs}
    print(f"\n## Single-thread latency (ms/query, Python call included; fastest of {args.repeats} passes, "
          f"engines alternating config by config) and recall@{k}")
    print(f"| query_cut | heap_factor | " + " | ".join(f"{n} ms | {n} R@{k}" for n in configs) + " |")
    print("|---|---|" + "---|---|" * len(configs))
    for i, (qc, hf) in enumerate(grid):
        best, outputs = time_alternating({n: fns[i] for n, fns in configs.items()}, args.repeats, warmup=False)
        cells = []
        for n in configs:
            row = (f"qc={qc} hf={hf}", best[n] / len(singles) * 1e3, recall(outputs[n], gt))
            results[n].append(row)
            cells += [f"{row[1]:.3f}", f"{row[2]:.4f}"]
        print(f"| {qc} | {hf} | " + " | ".join(cells) + " |", flush=True)

    print(f"\n## Latency at matched recall: each engine's fastest configuration reaching recall@{k} ≥ target (ms/query)")
    rows = []
    for target in (0.90, 0.95, 0.97, 0.99):
        row = [f"{target:.2f}"]
        for n in configs:
            hit = min(((ms, label) for label, ms, r in results[n] if r >= target), default=None)
            row.append(f"{hit[0]:.3f} ({hit[1]})" if hit else "not reached")
        rows.append(row)
    print(markdown_table([f"recall@{k} ≥", *configs], rows))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    if not args.keep_indexes:
        shutil.rmtree(keep, ignore_errors=True)


if __name__ == "__main__":
    main()
