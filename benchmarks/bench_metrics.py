"""Metric speed: lsr.eval.evaluate vs pytrec_eval (and ranx) on an MS MARCO-sized run.

A synthetic run over the real MS MARCO dev qrels (6,980 queries): every query gets `--hits`
random passage ids, with its relevant passages mixed in for about 60% of queries; scores
are rounded to 2 decimals so that ties occur. Each tool scores the same dict run; times are
the best of `--repeat` rounds, the tools alternating within each round, after one warm-up
each (Numba compilation is not counted).

    .venv/bin/python benchmarks/bench_metrics.py [--hits 1000] [--queries 6980] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import warnings
from pathlib import Path

import numpy as np

from harness import markdown_table, time_alternating
from lsr.eval import evaluate, evaluate_arrays, load_qrels

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METRICS = ["ndcg@10", "mrr@10", "recall@100", "map", "p@10"]
TREC = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "map": "map", "p@10": "P_10", "mrr@10": "recip_rank"}
RANX = {"ndcg@10": "ndcg@10", "mrr@10": "mrr@10", "recall@100": "recall@100", "map": "map", "p@10": "precision@10"}


def synthetic_run(qrels, hits: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    qids, docs, scores, run = [], [], [], {}
    for qid, judged in qrels.items():
        ids = rng.choice(8_841_823, size=hits, replace=False).astype(str).tolist()
        if rng.random() < 0.6:  # put the relevant passages near the top, geometrically
            for d in judged:
                if d not in ids:
                    ids[min(int(rng.geometric(0.2)) - 1, hits - 1)] = d
        sc = np.sort(np.round(rng.random(hits) * 10, 2))[::-1]  # 2 decimals: many ties
        run[qid] = dict(zip(ids, sc.tolist()))
        qids.append(qid)
        docs.append(list(run[qid]))
        scores.append(np.fromiter(run[qid].values(), np.float64))
    return run, qids, docs, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hits", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=None, help="use only the first N judged queries")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ranx", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", module="ranx")
    warnings.filterwarnings("ignore", message=".*unsafe cast.*")

    qrels = load_qrels(DATA / "msmarco-dev/qrels.msmarco-passage.dev-subset.txt")
    if args.queries:
        qrels = dict(list(qrels.items())[: args.queries])
    run, qids, docs, scores = synthetic_run(qrels, args.hits)
    n = sum(map(len, run.values()))
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}; "
          f"run: {len(run)} queries x {args.hits} hits = {n:,} entries; metrics: {', '.join(METRICS)}")  # fmt: skip

    import pytrec_eval

    def trec():
        ev = pytrec_eval.RelevanceEvaluator(qrels, set(TREC.values()))
        res = ev.evaluate(run)
        return {m: sum(res.get(q, {}).get(TREC[m], 0.0) for q in qrels) / len(qrels) for m in METRICS}

    tools = {
        "lsr.eval.evaluate (dict run)": lambda: evaluate(qrels, run, METRICS),
        "lsr.eval.evaluate_arrays": lambda: evaluate_arrays(qrels, qids, docs, scores, METRICS),
        "pytrec_eval (build + evaluate + -c mean)": trec,
    }
    if not args.no_ranx:
        try:
            import ranx
        except ImportError:
            ranx = None
        if ranx is not None:
            def with_ranx():  # noqa: E306
                res = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(RANX.values()))
                # ranx averages over the run's queries; every judged query is in this run
                return {m: float(res[RANX[m]]) for m in METRICS}

            tools["ranx (Qrels + Run + evaluate)"] = with_ranx
    seconds, results = time_alternating(tools, args.repeat)
    ours, trec_res = results["lsr.eval.evaluate (dict run)"], results["pytrec_eval (build + evaluate + -c mean)"]
    # MRR@10 is trec_eval -M 10 recip_rank: pytrec_eval has no -M, so score a truncated run
    cut = {q: dict(sorted(h.items(), key=lambda x: (np.float32(x[1]), x[0]), reverse=True)[:10]) for q, h in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    trec_res["mrr@10"] = sum(rr.get(q, {}).get("recip_rank", 0.0) for q in qrels) / len(qrels)

    t_ours = seconds["lsr.eval.evaluate (dict run)"]
    rows = [[name, f"{t:.3f}", f"{t / t_ours:.1f}x", *(f"{results[name][m]:.6f}" for m in METRICS)] for name, t in seconds.items()]
    print("\n" + markdown_table(["tool", "seconds", "vs ours", *METRICS], rows))
    worst = max(abs(ours[m] - trec_res[m]) for m in METRICS)
    print(f"\nlargest |ours - pytrec_eval| over the metrics: {worst:.2e}")


if __name__ == "__main__":
    main()
