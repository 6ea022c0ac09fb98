"""Growth and filters, single thread, one process: what an `add` costs beside a rebuild, what
segments and tombstones cost a search, and filtered Seismic search (latency and recall@10
against filtered exact search) from loose to very selective filters.

    python benchmarks/bench_growth.py [--docs 100000] [--queries 200]

Synthetic vectors: Zipf-distributed terms over 30,522 dimensions, 120 per document, 20 per
query (the figures compare lsr with itself; bench_index.py has SPLADE-like data and peers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from harness import markdown_table, time_alternating

from lsr.indexer import ExactIndex
from lsr.indexer.segmented import SegmentedIndex
import lsr.indexer.seismic as seismic_module
from lsr.indexer.seismic import EXACT_FILTER_FRACTION, SeismicIndex
from lsr.sparse import SparseVectors

DIM = 30_522
KNOBS = dict(query_cut=10, heap_factor=0.7)


def synthetic(n: int, nnz: int, seed: int) -> SparseVectors:
    rng = np.random.default_rng(seed)
    terms = (rng.zipf(1.3, (n, nnz)) % DIM).astype(np.int32)
    m = sp.csr_matrix((rng.random(n * nnz, dtype=np.float32) + 0.01, terms.ravel(), np.arange(0, n * nnz + 1, nnz)), shape=(n, DIM))
    m.sum_duplicates()
    return SparseVectors.from_scipy(m)


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, int((b >= 0).sum())) for a, b in zip(got, want)]))


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    docs, extra, queries = synthetic(args.docs, 120, 0), synthetic(args.docs // 100, 120, 1), synthetic(args.queries, 20, 2)
    exact = ExactIndex.build(docs)
    SeismicIndex.build(docs[:2000], threads=1).search(queries, 10, threads=1)  # compile before timing

    # 1. an add of 1% beside a rebuild of everything; a save that links the old segment
    build_s, seismic = timed(lambda: SeismicIndex.build(docs, threads=1))
    grown = SegmentedIndex.wrap(seismic)
    add_s, _ = timed(lambda: grown.add(extra))
    rebuild_s, _ = timed(lambda: SeismicIndex.build(SparseVectors.concatenate([docs, extra]), threads=1))
    with tempfile.TemporaryDirectory() as tmp:
        save_s, _ = timed(lambda: seismic.save(Path(tmp) / "base"))
        grown_on_disk = SegmentedIndex.wrap(SeismicIndex.load(Path(tmp) / "base"), source=Path(tmp) / "base")
        grown_on_disk.add(extra)
        append_save_s, _ = timed(lambda: grown_on_disk.save(Path(tmp) / "grown"))
    print(f"\n## Growth ({args.docs:,} documents + {len(extra):,}; Seismic defaults, 1 thread)\n")
    print(markdown_table(["step", "seconds"], [
        [f"build {args.docs:,}", f"{build_s:.2f}"], [f"add {len(extra):,} (a new segment)", f"{add_s:.2f}"],
        [f"rebuild {args.docs + len(extra):,}", f"{rebuild_s:.2f}"], ["save the base index", f"{save_s:.2f}"],
        ["save the grown index (base segment linked)", f"{append_save_s:.2f}"],
    ]))  # fmt: skip

    # 2. what segments and tombstones cost a search
    tombstoned = SegmentedIndex.wrap(seismic)
    tombstoned.delete(np.arange(0, args.docs, 10))
    truth_all = exact.search(queries, 10, threads=1)[0]
    live = np.ones(args.docs, bool)
    live[::10] = False
    truth_live = exact.search(queries, 10, threads=1, filter=live)[0]
    fns = {
        "one Seismic index": lambda: seismic.search(queries, 10, **KNOBS),
        "segmented: base + 1% segment": lambda: grown.search(queries, 10, **KNOBS),
        "segmented: 10% deleted": lambda: tombstoned.search(queries, 10, **KNOBS),
    }
    best, outs = time_alternating(fns, rounds=3)
    truth_grown = SegmentedIndex.wrap(exact)
    truth_grown.add(extra)
    truths = [truth_all, truth_grown.search(queries, 10, threads=1)[0], truth_live]
    print(f"\n## Search cost of segments and tombstones (ms/query, 1 thread, {KNOBS})\n")
    print(markdown_table(["index", "ms/query", "recall@10"], [
        [name, f"{best[name] * 1e3 / len(queries):.3f}", f"{recall(outs[name][0], t):.3f}"] for name, t in zip(fns, truths)
    ]))  # fmt: skip

    # 3. filtered search from loose to very selective: the kernel path and the exact path forced in turn
    rng = np.random.default_rng(3)
    rows = []
    one = queries[: min(20, len(queries))]
    for share in (0.5, 0.05, 0.02, 0.01, 0.004, 0.002):
        mask = rng.random(args.docs) < share
        truth = exact.search(queries, 10, threads=1, filter=mask)[0]
        row = [f"{share:.1%}"]
        for fraction in (0.0, 1.0):  # 0: never the exact path, 1: always
            seismic_module.EXACT_FILTER_FRACTION = fraction
            fns = {
                "batch": lambda m=mask: seismic.search(queries, 10, filter=m, **KNOBS),
                "one": lambda m=mask: [seismic.search(one[[i]], 10, filter=m, **KNOBS) for i in range(len(one))],
            }
            best, outs = time_alternating(fns, rounds=3)
            row += [f"{best['batch'] * 1e3 / len(queries):.3f}", f"{best['one'] * 1e3 / len(one):.3f}",
                    f"{recall(outs['batch'][0], truth):.3f}"]  # fmt: skip
        seismic_module.EXACT_FILTER_FRACTION = EXACT_FILTER_FRACTION
        row.append("exact" if mask.mean() <= EXACT_FILTER_FRACTION else "kernel")
        rows.append(row)
    print(f"\n## Filtered Seismic search (1 thread, {KNOBS}; recall@10 against filtered exact search)\n")
    print(markdown_table(
        ["allowed", "kernel ms/query (batch)", "kernel ms (one query)", "kernel recall@10",
         "exact path ms/query (batch)", "exact path ms (one query)", "exact path recall@10", "chosen"], rows,
    ))  # fmt: skip


if __name__ == "__main__":
    main()
