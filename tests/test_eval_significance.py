"""Paired t-test and randomisation test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lsr import LsrError
from lsr.eval import compare, evaluate, paired_t_test, randomization_test


def test_t_test_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.random(50)
    b = a + rng.normal(0.05, 0.1, 50)
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    da = {f"q{i}": v for i, v in enumerate(a)}
    db = {f"q{i}": v for i, v in reversed(list(enumerate(b)))}  # paired by id, not order
    assert paired_t_test(da, db) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_t_test(a, a) == 1.0


def test_randomization_exact_and_seeded():
    # 4 queries: all 16 sign patterns are equally likely; |mean| >= observed for 2 of them
    a, b = np.array([1.0, 1.0, 1.0, 1.0]), np.zeros(4)
    p = randomization_test(a, b, n_permutations=20_000, seed=3)
    assert p == pytest.approx(2 / 16, abs=0.01)
    assert p == randomization_test(a, b, n_permutations=20_000, seed=3)
    assert randomization_test(a, a) == 1.0
    rng = np.random.default_rng(0)
    x = rng.random(200)
    assert randomization_test(x + 0.2, x, n_permutations=2000) == pytest.approx(1 / 2001)
    y = x + rng.normal(0, 0.01, 200)
    p1, p2 = randomization_test(x, y, 5000, seed=1), paired_t_test(x, y)
    assert abs(p1 - p2) < 0.05  # both tests agree on a near-normal difference


def test_errors_and_compare():
    with pytest.raises(LsrError, match="different queries"):
        paired_t_test({"a": 1.0, "b": 0.0}, {"a": 1.0, "c": 0.0})
    with pytest.raises(LsrError, match="as many values"):
        randomization_test([1.0, 2.0], [1.0])
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    run_a = {"q1": {"a": 2.0, "x": 1.0}, "q2": {"b": 1.0}, "q3": {"x": 1.0, "c": 0.5}}
    run_b = {"q1": {"x": 2.0, "a": 1.0}, "q2": {"x": 2.0, "b": 1.0}, "q3": {"x": 1.0, "y": 0.9, "c": 0.5}}
    pa = evaluate(qrels, run_a, ["mrr", "p@1"], per_query=True)
    pb = evaluate(qrels, run_b, ["mrr", "p@1"], per_query=True)
    out = compare(pa, pb, n_permutations=500)
    assert set(out) == {"mrr", "p@1"}
    assert out["mrr"]["mean_a"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert out["mrr"]["mean_b"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert 0 < out["mrr"]["randomization"] <= 1 and 0 < out["mrr"]["t_test"] <= 1
