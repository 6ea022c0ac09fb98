"""Ranking metrics that reproduce `trec_eval -c` exactly, computed with NumPy and Numba.

Conventions (all checked against pytrec_eval, the Python binding of trec_eval):

- A run is ranked by score descending, ties broken by document id descending (byte order);
  the rank column of a run file is ignored. Scores are compared as float32, as trec_eval
  stores them, so scores equal in float32 tie.
- Averages are over every query in the qrels (`-c`): a judged query absent from the run
  scores 0, and so does a judged query without relevant documents. Queries in the run but
  not in the qrels are ignored.
- A document is relevant when its label is >= `relevance_level` (trec_eval `-l`); this
  drives P, Recall, MRR and MAP. nDCG uses the label itself as a linear gain (labels <= 0
  give no gain) whatever the level, and its ideal ranking is built from all judged documents.
- `mrr@k` is trec_eval `-M k recip_rank`; `map@k` is `-M k map` (same as `map_cut_k`).

Only the ranks of judged, retrieved documents matter for these metrics, so a run is reduced
once to (query, rank, label) triples of its judged hits; every metric is then a few array
operations over those triples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain
from typing import Mapping, Sequence

import numpy as np
from numba import njit

from lsr.errors import LsrError

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map", "p@10")

# "ndcg@10", and trec_eval's spelling "ndcg_cut_10", "P_10", "recall_100", "map_cut_10"
_NAME = re.compile(r"^\s*([a-z_]+?)\s*(?:[@_]\s*(\d+))?\s*$", re.IGNORECASE)
_ALIASES = {
    "ndcg": "ndcg",
    "ndcg_cut": "ndcg",
    "mrr": "mrr",
    "recip_rank": "mrr",
    "rr": "mrr",
    "recall": "recall",
    "r": "recall",
    "map": "map",
    "ap": "map",
    "map_cut": "map",
    "p": "p",
    "precision": "p",
}
_NEEDS_CUTOFF = {"recall", "p"}


@dataclass(frozen=True)
class Metric:
    """A parsed metric name: `kind` in ndcg/mrr/recall/map/p, `k` the cutoff or None (no cutoff)."""

    kind: str
    k: int | None

    @staticmethod
    def parse(name: str) -> "Metric":
        m = _NAME.match(name)
        kind = _ALIASES.get(m.group(1).lower()) if m else None
        if kind is None:
            raise LsrError(
                f"unknown metric {name!r}: expected ndcg@k, mrr@k, recall@k, map, map@k or p@k "
                "(ndcg, mrr and map also without @k)"
            )
        k = int(m.group(2)) if m.group(2) is not None else None
        if k is not None and k < 1:
            raise LsrError(f"metric {name!r}: the cutoff must be at least 1")
        if k is None and kind in _NEEDS_CUTOFF:
            raise LsrError(f"metric {name!r} needs a cutoff, e.g. {kind}@10")
        return Metric(kind, k)


# ---- reducing a run to the ranks of its judged hits ---------------------------------------


@njit(cache=True)
def _count_above(scores, starts, hit_q, hit_score, greater, equal):  # pragma: no cover - numba
    for h in range(len(hit_q)):
        q = hit_q[h]
        s = hit_score[h]
        g = 0
        e = 0
        for i in range(starts[q], starts[q + 1]):
            v = scores[i]
            if v > s:
                g += 1
            elif v == s:
                e += 1
        greater[h] = g
        equal[h] = e


@dataclass
class JudgedRanks:
    """A run reduced against qrels: what every trec_eval metric here needs.

    `qids` are the qrels' queries (the `-c` population); `num_ret[i]` is the number of hits
    of query i; hit h is a judged document of query `hit_q[h]` found at 1-based `hit_rank[h]`
    with label `hit_rel[h]`; hits are sorted by (query, rank). `judged_q`/`judged_rel` list
    every judgment (for num_rel and the ideal DCG).
    """

    qids: list[str]
    num_ret: np.ndarray
    hit_q: np.ndarray
    hit_rank: np.ndarray
    hit_rel: np.ndarray
    judged_q: np.ndarray
    judged_rel: np.ndarray


def _qrels_arrays(qrels: Qrels) -> tuple[list[str], np.ndarray, np.ndarray]:
    qids = list(qrels)
    sizes = np.fromiter((len(qrels[q]) for q in qids), np.int64, count=len(qids))
    judged_q = np.repeat(np.arange(len(qids), dtype=np.int64), sizes)
    judged_rel = np.fromiter(
        chain.from_iterable(qrels[q].values() for q in qids), np.int64, count=int(sizes.sum())
    )
    return qids, judged_q, judged_rel


def _rank_hits(
    qids: list[str],
    scores: np.ndarray,
    starts: np.ndarray,
    hit_q: list[int],
    hit_score: list[float],
    hit_rel: list[int],
    hit_doc: list[str],
    docs_of,
    judged_q: np.ndarray,
    judged_rel: np.ndarray,
) -> JudgedRanks:
    """Ranks of judged hits from the concatenated float32 scores of each query's hits."""
    hq = np.asarray(hit_q, dtype=np.int64)
    hs = np.asarray(hit_score, dtype=np.float64).astype(np.float32)
    greater = np.zeros(len(hq), np.int64)
    equal = np.zeros(len(hq), np.int64)
    if len(hq):
        _count_above(scores, starts, hq, hs, greater, equal)
    rank = greater + 1
    for h in np.flatnonzero(equal > 1):  # ties: the larger document id comes first
        q = hq[h]
        seg = scores[starts[q] : starts[q + 1]]
        docs = docs_of(q)
        d = hit_doc[h]
        rank[h] += sum(1 for i in np.flatnonzero(seg == hs[h]) if docs[i] > d)
    rel = np.asarray(hit_rel, dtype=np.int64)
    order = np.lexsort((rank, hq))
    return JudgedRanks(
        qids=qids,
        num_ret=np.diff(starts),
        hit_q=hq[order],
        hit_rank=rank[order],
        hit_rel=rel[order],
        judged_q=judged_q,
        judged_rel=judged_rel,
    )


def judged_ranks(qrels: Qrels, run: Run, remove_query_id: bool = False) -> JudgedRanks:
    """Reduce a dict run `{qid: {docid: score}}` against `qrels` (one pass over the run)."""
    qids, judged_q, judged_rel = _qrels_arrays(qrels)
    per_query: list[Mapping[str, float]] = []
    for qid in qids:
        hits = run.get(qid) or {}
        if remove_query_id and qid in hits:
            hits = {d: s for d, s in hits.items() if d != qid}
        per_query.append(hits)
    sizes = np.fromiter((len(h) for h in per_query), np.int64, count=len(qids))
    starts = np.zeros(len(qids) + 1, np.int64)
    np.cumsum(sizes, out=starts[1:])
    try:
        scores = np.fromiter(
            chain.from_iterable(h.values() for h in per_query), np.float64, count=int(starts[-1])
        ).astype(np.float32)
    except (TypeError, ValueError) as err:
        raise LsrError(f"run scores must be numbers ({err})") from None
    hit_q, hit_score, hit_rel, hit_doc = [], [], [], []
    for qi, qid in enumerate(qids):
        hits = per_query[qi]
        if not hits:
            continue
        for d, r in qrels[qid].items():
            s = hits.get(d)
            if s is not None:
                hit_q.append(qi)
                hit_score.append(s)
                hit_rel.append(r)
                hit_doc.append(d)
    return _rank_hits(
        qids, scores, starts, hit_q, hit_score, hit_rel, hit_doc,
        lambda q: list(per_query[q]), judged_q, judged_rel,
    )  # fmt: skip


def judged_ranks_arrays(
    qrels: Qrels,
    query_ids: Sequence[str],
    doc_ids: Sequence[Sequence[str]],
    scores: "np.ndarray | Sequence[np.ndarray]",
    remove_query_id: bool = False,
) -> JudgedRanks:
    """Reduce a run given as arrays: `doc_ids[i][j]` scored `scores[i][j]` for `query_ids[i]`.

    `scores` may be a 2-d array (one row per query) or a list of 1-d arrays; hits need not
    be sorted. A document id must not repeat within a query.
    """
    if len(doc_ids) != len(query_ids) or len(scores) != len(query_ids):
        raise ValueError("query_ids, doc_ids and scores must have one entry per query")
    qids, judged_q, judged_rel = _qrels_arrays(qrels)
    row_of = {q: i for i, q in enumerate(query_ids)}
    rows: list[tuple[Sequence[str], np.ndarray]] = []
    for qid in qids:
        i = row_of.get(qid)
        if i is None:
            rows.append(([], np.zeros(0, np.float32)))
            continue
        docs, sc = doc_ids[i], np.asarray(scores[i], dtype=np.float64).astype(np.float32)
        if len(docs) != len(sc):
            raise ValueError(f"query {qid!r}: {len(docs)} document ids but {len(sc)} scores")
        if remove_query_id and qid in docs:
            keep = [j for j, d in enumerate(docs) if d != qid]
            docs, sc = [docs[j] for j in keep], sc[keep]
        rows.append((docs, sc))
    sizes = np.fromiter((len(r[1]) for r in rows), np.int64, count=len(qids))
    starts = np.zeros(len(qids) + 1, np.int64)
    np.cumsum(sizes, out=starts[1:])
    flat = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.float32)
    hit_q, hit_score, hit_rel, hit_doc = [], [], [], []
    for qi, qid in enumerate(qids):
        docs, sc = rows[qi]
        if not len(docs):
            continue
        judged = qrels[qid]
        if len(judged) <= 8:
            docs_list = docs if isinstance(docs, list) else list(docs)
            for d, r in judged.items():
                try:
                    j = docs_list.index(d)
                except ValueError:
                    continue
                hit_q.append(qi), hit_score.append(sc[j]), hit_rel.append(r), hit_doc.append(d)
        else:
            for j, d in enumerate(docs):
                r = judged.get(d)
                if r is not None:
                    hit_q.append(qi), hit_score.append(sc[j]), hit_rel.append(r), hit_doc.append(d)
    return _rank_hits(
        qids, flat.astype(np.float32), starts, hit_q, hit_score, hit_rel, hit_doc,
        lambda q: list(rows[q][0]), judged_q, judged_rel,
    )  # fmt: skip


# ---- metrics over judged ranks ------------------------------------------------------------


def _first_per_query(q: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values in sorted `q`."""
    first = np.ones(len(q), dtype=bool)
    first[1:] = q[1:] != q[:-1]
    return first


def _per_query(jr: JudgedRanks, metric: Metric, relevance_level: int) -> np.ndarray:
    nq = len(jr.qids)
    k = metric.k
    within = jr.hit_rank <= k if k is not None else np.ones(len(jr.hit_rank), dtype=bool)
    if metric.kind == "ndcg":
        gain = np.where(jr.hit_rel > 0, jr.hit_rel, 0).astype(np.float64)
        sel = within & (gain > 0)
        dcg = np.bincount(
            jr.hit_q[sel], weights=gain[sel] / np.log2(jr.hit_rank[sel] + 1.0), minlength=nq
        )
        # ideal: judged gains sorted descending within each query
        pos_mask = jr.judged_rel > 0
        iq, ig = jr.judged_q[pos_mask], jr.judged_rel[pos_mask].astype(np.float64)
        order = np.lexsort((-ig, iq))
        iq, ig = iq[order], ig[order]
        first = np.flatnonzero(_first_per_query(iq))
        group_start = np.repeat(first, np.diff(np.append(first, len(iq))))
        irank = np.arange(len(iq)) - group_start + 1
        keep = irank <= k if k is not None else np.ones(len(iq), dtype=bool)
        idcg = np.bincount(iq[keep], weights=ig[keep] / np.log2(irank[keep] + 1.0), minlength=nq)
        out = np.zeros(nq)
        np.divide(dcg, idcg, out=out, where=idcg > 0)
        return out
    relevant = jr.hit_rel >= relevance_level
    sel = relevant & within
    if metric.kind == "p":
        return np.bincount(jr.hit_q[sel], minlength=nq) / float(k)
    num_rel = np.bincount(jr.judged_q[jr.judged_rel >= relevance_level], minlength=nq).astype(np.float64)
    out = np.zeros(nq)
    if metric.kind == "recall":
        np.divide(np.bincount(jr.hit_q[sel], minlength=nq), num_rel, out=out, where=num_rel > 0)
        return out
    q, rank = jr.hit_q[sel], jr.hit_rank[sel]  # sorted by (query, rank)
    first = _first_per_query(q)
    if metric.kind == "mrr":
        out[q[first]] = 1.0 / rank[first]
        return out
    # map: precision at each relevant hit, summed, over the number of relevant documents
    starts = np.flatnonzero(first)
    group_start = np.repeat(starts, np.diff(np.append(starts, len(q))))
    nth = np.arange(len(q)) - group_start + 1
    total = np.bincount(q, weights=nth / rank, minlength=nq)
    np.divide(total, num_rel, out=out, where=num_rel > 0)
    return out


def _report(jr: JudgedRanks, metrics, per_query: bool, relevance_level: int):
    names = list(DEFAULT_METRICS if metrics is None else ([metrics] if isinstance(metrics, str) else metrics))
    parsed = [Metric.parse(n) for n in names]
    result = {}
    for name, metric in zip(names, parsed):
        values = _per_query(jr, metric, relevance_level)
        if per_query:
            result[name] = dict(zip(jr.qids, values.tolist()))
        else:
            result[name] = float(values.mean()) if len(values) else 0.0
    return result


def evaluate(
    qrels: Qrels,
    run: Run,
    metrics: Sequence[str] | str | None = None,
    per_query: bool = False,
    remove_query_id: bool = False,
    relevance_level: int = 1,
) -> dict:
    """Score a run against qrels as `trec_eval -c` does.

    `qrels`: `{qid: {docid: label}}`; `run`: `{qid: {docid: score}}`. `metrics` default to
    ndcg@10, mrr@10, recall@100, map, p@10. Returns `{metric: mean}` over all qrels queries,
    or with `per_query=True` `{metric: {qid: value}}`. `remove_query_id` drops a hit whose
    document id equals its query id (BEIR's convention); `relevance_level` is trec_eval `-l`.
    """
    return _report(judged_ranks(qrels, run, remove_query_id), metrics, per_query, relevance_level)


def evaluate_arrays(
    qrels: Qrels,
    query_ids: Sequence[str],
    doc_ids: Sequence[Sequence[str]],
    scores: "np.ndarray | Sequence[np.ndarray]",
    metrics: Sequence[str] | str | None = None,
    per_query: bool = False,
    remove_query_id: bool = False,
    relevance_level: int = 1,
) -> dict:
    """`evaluate` for a run given as arrays (a search engine's output), without building dicts.

    `doc_ids[i]` and `scores[i]` are the hits of `query_ids[i]`, in any order.
    """
    jr = judged_ranks_arrays(qrels, query_ids, doc_ids, scores, remove_query_id)
    return _report(jr, metrics, per_query, relevance_level)
