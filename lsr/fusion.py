"""Fusion of ranked lists: score interpolation and reciprocal rank fusion (RRF).

A run is `{qid: {doc_id: score}}` (what `lsr.eval.load_run` returns); fusion works query
by query on each run's hits for that query.

- Ranks: a run's hits are ranked by score descending, ties by document id descending (byte
  order), the convention of trec_eval and `lsr.eval.metrics`.
- Interpolation: `score(d) = Σ_i w_i · norm_i(d)`; for two runs `w = (α, 1 − α)`, for more
  `w = (α, (1 − α)/(n − 1), …)`. Normalisation is per query over that run's hits:
  `minmax` (x − min)/(max − min) (all hits 1.0 when they share one score), `zscore`
  (x − mean)/std (all 0.0 when std is 0), or `none`.
- A document missing from one run's hits for a query gets that run's *lowest normalised
  score* for the query (the run did not retrieve it, so it ranks at best with its last
  hit): 0 under `minmax` (also when all hits share one score and normalise to 1, so a
  run's only hit still ranks above the documents it missed), the lowest z-score or raw
  score under `zscore` / `none`. A run with no hits at all for the query contributes 0.
- RRF: `score(d) = Σ_i 1 / (k + rank_i(d))`, ranks from 1, summed over the runs that
  retrieved d (k = 60 by default).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lsr.errors import LsrError

Run = Mapping[str, Mapping[str, float]]
NORMS = ("minmax", "zscore", "none")
METHODS = ("interp", "rrf")
RRF_K = 60


def ranked(hits: Mapping[str, float]) -> list[tuple[str, float]]:
    """Hits best first: score descending, ties by document id descending (trec_eval's order)."""
    return sorted(hits.items(), key=lambda h: (h[1], h[0].encode("utf-8", "surrogatepass")), reverse=True)


def normalize(hits: Mapping[str, float], norm: str = "minmax") -> dict[str, float]:
    """One query's hits normalised (`minmax`, `zscore` or `none`)."""
    if norm not in NORMS:
        raise LsrError(f"unknown normalisation {norm!r} (expected one of {', '.join(NORMS)})")
    if not hits or norm == "none":
        return dict(hits)
    values = np.fromiter(hits.values(), np.float64, len(hits))
    if norm == "minmax":
        lo, span = values.min(), values.max() - values.min()
        out = (values - lo) / span if span > 0 else np.ones_like(values)
    else:
        std = values.std()
        out = (values - values.mean()) / std if std > 0 else np.zeros_like(values)
    return dict(zip(hits, out.tolist()))


def weights_for(n_runs: int, alpha: float) -> list[float]:
    """α for the first run, the rest (1 − α) shared equally by the others."""
    if not 0.0 <= alpha <= 1.0:
        raise LsrError(f"alpha must be in [0, 1], got {alpha}")
    if n_runs == 1:
        return [1.0]
    return [alpha] + [(1.0 - alpha) / (n_runs - 1)] * (n_runs - 1)


def interpolate(hits: Sequence[Mapping[str, float]], alpha: float = 0.5, norm: str = "minmax") -> dict[str, float]:
    """One query: `Σ w_i · norm(run_i)` over the union of the runs' hits (see the module doc)."""
    weights = weights_for(len(hits), alpha)
    normed = [normalize(h, norm) for h in hits]
    floors = [min(n.values()) if n and norm != "minmax" else 0.0 for n in normed]
    docs = {d for n in normed for d in n}
    return {d: sum(w * n.get(d, f) for w, n, f in zip(weights, normed, floors)) for d in docs}


def rrf(hits: Sequence[Mapping[str, float]], k: int = RRF_K) -> dict[str, float]:
    """One query: reciprocal rank fusion, `Σ 1 / (k + rank)` over the runs that hold each doc."""
    if k < 0:
        raise LsrError(f"the RRF constant k must be >= 0, got {k}")
    fused: dict[str, float] = {}
    for h in hits:
        for rank, (doc, _) in enumerate(ranked(h), 1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


def fuse_hits(
    hits: Sequence[Mapping[str, float]], method: str = "rrf", alpha: float = 0.5, norm: str = "minmax", k: int = RRF_K
) -> dict[str, float]:
    """One query's runs fused by `method` (`interp` or `rrf`)."""
    if method == "rrf":
        return rrf(hits, k)
    if method == "interp":
        return interpolate(hits, alpha, norm)
    raise LsrError(f"unknown fusion method {method!r} (expected one of {', '.join(METHODS)})")


def fuse_runs(
    runs: Sequence[Run],
    method: str = "rrf",
    alpha: float = 0.5,
    norm: str = "minmax",
    k: int = RRF_K,
    depth: int | None = None,
) -> dict[str, list[tuple[str, float]]]:
    """Fuse whole runs query by query: `{qid: [(doc, score), …]}` best first, `depth` hits at
    most per query (None: all). Queries are those of any run, in first-seen order."""
    if not runs:
        raise LsrError("nothing to fuse: give at least one run")
    qids = list(dict.fromkeys(q for run in runs for q in run))
    out: dict[str, list[tuple[str, float]]] = {}
    for qid in qids:
        fused = fuse_hits([run.get(qid, {}) for run in runs], method, alpha, norm, k)
        out[qid] = ranked(fused)[:depth]
    return out
