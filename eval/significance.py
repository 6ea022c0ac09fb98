"""Paired significance tests between two runs' per-query values of one metric.

Inputs are per-query values, e.g. `evaluate(qrels, run, ["ndcg@10"], per_query=True)["ndcg@10"]`
for each run: `{qid: value}` dicts (paired by query id; both must cover the same queries)
or equal-length arrays (paired by position).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lsr.errors import LsrError

PerQuery = Mapping[str, float] | Sequence[float] | np.ndarray


def _paired(a: PerQuery, b: PerQuery) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise LsrError("pass both runs' per-query values as {qid: value} dicts, or both as arrays")
    if isinstance(a, Mapping):
        if a.keys() != b.keys():
            only_a = sorted(set(a) - set(b))[:3]
            only_b = sorted(set(b) - set(a))[:3]
            raise LsrError(f"the two runs cover different queries (only in A: {only_a}, only in B: {only_b})")
        keys = list(a)
        x = np.array([a[k] for k in keys], dtype=np.float64)
        y = np.array([b[k] for k in keys], dtype=np.float64)
    else:
        x = np.asarray(a, dtype=np.float64).ravel()
        y = np.asarray(b, dtype=np.float64).ravel()
        if len(x) != len(y):
            raise LsrError(f"paired tests need as many values in A as in B ({len(x)} vs {len(y)})")
    if len(x) < 2:
        raise LsrError("paired tests need at least two queries")
    return x, y


def paired_t_test(a: PerQuery, b: PerQuery) -> float:
    """Two-sided paired Student t-test (scipy.stats.ttest_rel); returns the p-value.

    When the differences have no variance (scipy gives NaN) the p-value is 1.0 if they are
    all zero and 0.0 otherwise.
    """
    from scipy import stats

    x, y = _paired(a, b)
    d = x - y
    if np.all(d == d[0]):  # zero variance of the differences
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(x, y).pvalue)


def randomization_test(
    a: PerQuery, b: PerQuery, n_permutations: int = 10_000, seed: int = 0, batch: int = 1_000
) -> float:
    """Two-sided paired randomisation (sign-flip permutation) test on the mean difference.

    Each permutation swaps A and B on a random subset of queries (flips the sign of the
    per-query differences); p = (1 + #{|mean| >= |observed mean|}) / (1 + n_permutations).
    Seeded (`numpy.random.default_rng(seed)`), so the same inputs give the same p-value.
    """
    if n_permutations < 1:
        raise LsrError("n_permutations must be at least 1")
    x, y = _paired(a, b)
    d = x - y
    observed = abs(d.mean())
    # tolerance so that permutations equal to the observed statistic up to rounding count
    threshold = observed - 1e-12 * max(1.0, float(np.abs(d).max()))
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < n_permutations:
        m = min(batch, n_permutations - done)
        signs = rng.integers(0, 2, size=(m, len(d)), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ d) / len(d)
        hits += int(np.count_nonzero(means >= threshold))
        done += m
    return (hits + 1) / (n_permutations + 1)


def compare(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    n_permutations: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Both tests for every metric of two `evaluate(..., per_query=True)` results.

    Returns `{metric: {"mean_a", "mean_b", "t_test", "randomization"}}` for the metrics the
    two results share.
    """
    out = {}
    for metric in a:
        if metric not in b:
            continue
        x, y = _paired(a[metric], b[metric])
        out[metric] = {
            "mean_a": float(x.mean()),
            "mean_b": float(y.mean()),
            "t_test": paired_t_test(a[metric], b[metric]),
            "randomization": randomization_test(a[metric], b[metric], n_permutations, seed),
        }
    return out
