"""Teachers on SciFact train: time per teacher and how well the teachers agree.

For each train query (809), its judged positives and N bm25 hard negatives (top bm25 hits
that are not judged) are scored by each teacher with `lsr.train.teachers.write_teacher_scores`
(one teacher at a time, timed: model load + scoring; the bm25 index for the negatives is built
or reused first and not counted). Then, per teacher and for the ensemble
(`lsr.train.distill.ensemble_normalize` over all teachers):

- MRR of the positive among its candidates (the best-ranked positive; ties count against it),
- top-1: the share of queries whose best candidate is a positive,
- Kendall's tau between each pair of teachers over each query's candidates (mean over queries).

Time: wall seconds and CPU seconds of this process (all its threads; on a shared machine the
CPU figure is the steadier one), model load and the candidate lookup (~1 s) included.

    .venv/bin/python benchmarks/bench_teachers.py                       # all 809 queries, 8 negatives
    .venv/bin/python benchmarks/bench_teachers.py --max-queries 50     # quicker
    .venv/bin/python benchmarks/bench_teachers.py --output DIR          # keep the score files
    .venv/bin/python benchmarks/bench_teachers.py --scores DIR/*.jsonl  # compare files written before

The negatives are bm25's own top hits, so bm25 is the weakest possible judge of them by
construction: its figure is a floor, not a comparison on equal terms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import markdown_table

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
SPLADE_TINY = ROOT.parent / "shared" / "models" / "splade-tiny"


def read_scores(path: Path) -> dict[str, tuple[int, np.ndarray]]:
    """qid → (number of positives, scores of positives then negatives)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out[row["qid"]] = (len(row["pos"]), np.array([s for _, s in row["pos"] + row["neg"]], np.float64))
    return out


def candidate_ids(path: Path) -> list[tuple[str, list[str]]]:
    with open(path, encoding="utf-8") as f:
        return [(r["qid"], [d for d, _ in r["pos"] + r["neg"]]) for r in map(json.loads, f)]


def rank_of_positive(n_pos: int, scores: np.ndarray) -> int:
    """1-based rank of the best positive; candidates scoring the same rank above it."""
    best = scores[:n_pos].max()
    return 1 + int((scores[n_pos:] >= best).sum())


def summary(rows: dict[str, tuple[int, np.ndarray]]) -> tuple[float, float]:
    ranks = np.array([rank_of_positive(n, s) for n, s in rows.values()])
    return float((1.0 / ranks).mean()), float((ranks == 1).mean())


def main() -> None:
    from lsr.train.teachers import write_teacher_scores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(SCIFACT))
    parser.add_argument("--teacher", action="append", help="teacher specs (default: bm25, splade-tiny, dense)")
    parser.add_argument("--negatives", type=int, default=8)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, default=None, help="folder for the score files (default: a temporary one)")
    parser.add_argument("--scores", type=Path, nargs="+", help="only compare score files written before (NAME.jsonl)")
    args = parser.parse_args()
    if args.scores:
        if any(candidate_ids(p) != candidate_ids(args.scores[0]) for p in args.scores[1:]):
            raise SystemExit("the score files do not hold the same candidates")
        agreement({p.stem: read_scores(p) for p in args.scores})
        return
    specs = args.teacher or ["bm25", str(SPLADE_TINY), "dense"]

    import torch

    print(f"torch threads {torch.get_num_threads()}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.output or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        # the bm25 index for the negatives: built (or reused from the cache) outside the timings
        write_teacher_scores(args.dataset, ["bm25"], folder / "warm.jsonl", negatives=args.negatives, max_queries=1)
        files, seconds, cpu = {}, {}, {}
        for spec in specs:
            start, start_cpu = time.perf_counter(), time.process_time()
            written = write_teacher_scores(
                args.dataset, [spec], folder / "one.jsonl", negatives=args.negatives,
                max_queries=args.max_queries, batch_size=args.batch_size,
            )  # fmt: skip
            seconds[spec] = time.perf_counter() - start
            cpu[spec] = time.process_time() - start_cpu
            name = Path(spec).name if Path(spec).is_dir() else spec
            files[name] = written[next(iter(written))].rename(folder / f"{name}.jsonl")
        scores = {name: read_scores(path) for name, path in files.items()}

    n = len(next(iter(scores.values())))
    print(f"{n} queries, {args.negatives} bm25 negatives")
    print(markdown_table(["teacher", "wall s", "CPU s", "queries/s"],
                         [[name, f"{seconds[spec]:.1f}", f"{cpu[spec]:.1f}", f"{n / seconds[spec]:.2f}"] for spec, name in zip(specs, scores)]))  # fmt: skip
    agreement(scores)


def agreement(scores: dict[str, dict[str, tuple[int, np.ndarray]]]) -> None:
    """MRR and top-1 per teacher and for the ensemble; Kendall's tau between teachers."""
    import torch
    from scipy.stats import kendalltau

    from lsr.train.distill import ensemble_normalize

    names = list(scores)
    qids = list(scores[names[0]])
    n_cands = np.mean([len(scores[names[0]][q][1]) for q in qids])
    print(f"{len(qids)} queries, {n_cands:.2f} candidates per query")
    ensemble = {}
    for q in qids:
        n_pos = scores[names[0]][q][0]
        stacked = torch.tensor(np.stack([scores[n][q][1] for n in names]))[:, None, :]
        ensemble[q] = (n_pos, ensemble_normalize(stacked)[0].double().numpy())
    rows = [[name, *(f"{x:.4f}" for x in summary(scores[name]))] for name in names]
    rows.append([f"ensemble (min-max per query, mean of {len(names)})", *(f"{x:.4f}" for x in summary(ensemble))])
    print(markdown_table(["teacher", "MRR", "top-1"], rows))
    for a, b in itertools.combinations(names, 2):
        taus = [kendalltau(scores[a][q][1], scores[b][q][1]).statistic for q in qids]
        print(f"kendall tau {a} vs {b}: {np.nanmean(taus):.3f}")


if __name__ == "__main__":
    main()
