"""Scale-out on Ray: a 1-shard vs an N-shard build on a local cluster, and the cost of scatter-gather.

Builds the first `--docs` SciFact documents three ways, in this one process: a single-node
`Retriever.build` (no Ray), `lsr.shards.build_sharded` with 1 shard and 1 encoding actor, and
with `--shards` shards and as many actors, on a local Ray cluster of `--cpus` CPUs. Prints
each build's time (and the Ray builds' encoding time and per-actor docs/s, the rate the
sizing in docs/scale.md starts from), checks that all three give identical search results
(ids and scores) for the SciFact queries, and measures the scatter-gather overhead per query
(the sharded search minus the single index's search over the same documents, one query at a
time and in batches): the shards in local threads (`ShardedIndex`) and in Ray actors, one
per shard (`RayShardedIndex`, asserted to give the same results). Never asserts on timings.

    .venv/bin/python benchmarks/bench_scale.py                                  # bm25, 2 shards, 2 CPUs
    .venv/bin/python benchmarks/bench_scale.py --model splade-tiny --docs 2000  # ../shared/models/splade-tiny
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
MODELS = ROOT.parent / "shared" / "models"


def sample(folder: Path, n: int) -> Path:
    out = folder / "corpus.jsonl"
    with open(SCIFACT / "corpus.jsonl") as src, open(out, "w") as dst:
        for _, line in zip(range(n), src):
            dst.write(line)
    return out


def best_of(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bm25", help="bm25, splade-tiny, or a model folder")
    parser.add_argument("--docs", type=int, default=5183, help="SciFact documents (5183: all)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--index", default="exact", choices=["exact", "seismic"])
    parser.add_argument("--rounds", type=int, default=5, help="search timing rounds (best kept)")
    args = parser.parse_args()

    import ray

    from lsr.encoders import load_encoder
    from lsr.retriever import Retriever
    from lsr.shards import RayShardedIndex, build_sharded

    model = str(MODELS / args.model) if (MODELS / args.model).is_dir() else args.model
    queries = [json.loads(line)["text"] for line in open(SCIFACT / "queries.jsonl")]
    # exhaustive Seismic (no pruning, no skipping): the sharded and single answers must agree
    seismic = dict(n_postings=1_000_000) if args.index == "seismic" else None
    options = dict(query_cut=10_000, heap_factor=0.0) if args.index == "seismic" else {}
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    if True:  # the indexes stay until the end (removed below)
        corpus = sample(tmp, args.docs)
        t = time.perf_counter()
        single = Retriever.build(corpus, model=load_encoder(model), path=tmp / "single", index=args.index, seismic=seismic)
        single_seconds = time.perf_counter() - t
        print(f"{args.docs} SciFact documents, model {args.model}, {args.index} shards, local Ray with {args.cpus} CPUs")
        print(f"{'build':<26}{'seconds':>9}{'encode s':>10}{'docs/s':>9}{'docs/s/actor':>14}")
        print(f"{'single node (no Ray)':<26}{single_seconds:>9.1f}{'':>10}{args.docs / single_seconds:>9.0f}")
        built = {}
        for shards in (1, args.shards):
            r = build_sharded(corpus, model=model, path=tmp / f"s{shards}", shards=shards, actors=shards,
                              index=args.index, seismic=seismic)  # fmt: skip
            built[shards] = Retriever.load(tmp / f"s{shards}")
            index_bytes = sum(f.stat().st_size for f in (tmp / f"s{shards}" / "index").rglob("*") if f.is_file())
            sizes = f"{built[shards].manifest['nnz'] / r.n_docs:.0f} postings/doc, index {index_bytes / r.n_docs:.0f} B/doc"
            rate = r.n_docs / r.encode_seconds
            print(f"{f'{shards} shard(s), {r.n_actors} actor(s)':<26}{r.seconds:>9.1f}{r.encode_seconds:>10.1f}"
                  f"{r.n_docs / r.seconds:>9.0f}{rate / r.n_actors:>14.0f}   {sizes}")  # fmt: skip

    # the N-shard index searched in Ray actors, one shard and one CPU each (the build's actors are gone)
    t = time.perf_counter()
    on_ray = RayShardedIndex(built[args.shards].index, actors=args.shards)
    print(f"{len(on_ray.actors)} Ray search actors started (shards opened) in {time.perf_counter() - t:.2f} s")
    indexes = {f"{shards} shard(s), threads": r.index for shards, r in built.items()}
    indexes[f"{args.shards} shard(s), {len(on_ray.actors)} Ray actors"] = on_ray
    vectors = single.encoder.encode_queries(queries)
    want = single.index.search(vectors, k=100, threads=2, **options)
    for name, index in indexes.items():
        got = index.search(vectors, k=100, threads=2, **options)
        same = np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        print(f"{name} vs single node, {len(queries)} queries top-100: {'identical' if same else 'DIFFERENT'}")
        assert same, name

    print(f"\nscatter-gather per query (best of {args.rounds}; sharded minus single, same documents)")
    one = [vectors[[i]] for i in range(len(queries))]
    for how, run in (("one query at a time", lambda ix: [ix.search(q, k=10, threads=1, **options) for q in one]),
                     ("batch, 2 threads", lambda ix: ix.search(vectors, k=10, threads=2, **options))):  # fmt: skip
        base = best_of(lambda: run(single.index), args.rounds)
        for name, index in indexes.items():
            t = best_of(lambda: run(index), args.rounds)
            print(f"  {how:<22}{name:<26}{t / len(queries) * 1e6:9.1f} µs/query "
                  f"(single {base / len(queries) * 1e6:.1f}, overhead {(t - base) / len(queries) * 1e6:+.1f})")  # fmt: skip
    on_ray.close()
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
