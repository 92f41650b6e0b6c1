"""Tests for harness.stats: nearest-rank percentiles, order-statistic intervals, LoadGen early stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from harness.analysis.stats import (
    DEFAULT_PERCENTILES,
    LatencySummary,
    QuantileCI,
    ci_relative_width,
    early_stopping_estimate,
    early_stopping_overage_allowed,
    min_queries_for_ci,
    min_queries_for_early_stopping,
    nearest_rank,
    quantile_ci,
    summarize,
)


def ranks(n: int) -> np.ndarray:
    """1..n as int64: each value equals its own 1-based rank, so bounds read back as ranks."""
    return np.arange(1, n + 1, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# nearest rank


@pytest.mark.parametrize(
    ("percentile", "expected"),
    [(1.0, 10), (20.0, 10), (20.1, 20), (40.0, 20), (50.0, 30), (80.0, 40), (90.0, 50), (100.0, 50)],
)
def test_nearest_rank_hand_checked(percentile: float, expected: int) -> None:
    # n = 5: rank = ceil(p/100 * 5), e.g. p50 -> ceil(2.5) = 3 -> 30; p20 -> ceil(1.0) = 1 -> 10
    assert nearest_rank(np.array([10, 20, 30, 40, 50]), percentile) == expected


def test_nearest_rank_single_sample_and_even_count() -> None:
    assert nearest_rank(np.array([7]), 0.001) == 7
    assert nearest_rank(np.array([7]), 99.9) == 7
    values = np.array([1, 2, 3, 4])
    assert nearest_rank(values, 50.0) == 2  # ceil(2.0) = 2, not an interpolated 2.5
    assert nearest_rank(values, 50.1) == 3
    assert nearest_rank(values, 25.0) == 1


def test_nearest_rank_is_robust_to_floating_point_products() -> None:
    # 99.9 / 100 * 1000 == 999.0000000000001 in binary floating point; the rank is still 999.
    assert nearest_rank(ranks(1000), 99.9) == 999
    assert nearest_rank(ranks(10_000), 99.9) == 9990
    assert nearest_rank(ranks(1001), 99.9) == 1000  # ceil(999.999)


@pytest.mark.parametrize("bad", [0.0, -1.0, 100.5, math.nan, math.inf])
def test_nearest_rank_rejects_bad_percentiles(bad: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank(ranks(10), bad)


def test_rejects_empty_and_multidimensional_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        nearest_rank(np.array([], dtype=np.int64), 50.0)
    with pytest.raises(ValueError, match="1-D"):
        quantile_ci(np.ones((3, 3)), 50.0)
    with pytest.raises(ValueError, match="empty"):
        summarize([])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, math.nan])
    with pytest.raises(ValueError, match="percentile"):
        quantile_ci(ranks(10), 100.0)  # the interval needs q < 1
    with pytest.raises(ValueError, match="confidence"):
        quantile_ci(ranks(10), 50.0, confidence=1.0)


# --------------------------------------------------------------------------------------------------
# order-statistic confidence intervals


@pytest.mark.parametrize(("percentile", "expected"), [(90.0, 36), (95.0, 72), (99.0, 368), (99.9, 3688)])
def test_min_queries_for_ci_known_values(percentile: float, expected: int) -> None:
    assert min_queries_for_ci(percentile, 0.95) == expected


@pytest.mark.parametrize(
    ("percentile", "confidence"),
    [(50.0, 0.95), (90.0, 0.95), (95.0, 0.95), (99.0, 0.95), (99.9, 0.95), (10.0, 0.95), (99.0, 0.99), (90.0, 0.8)],
)
def test_min_queries_for_ci_is_the_exact_threshold(percentile: float, confidence: float) -> None:
    n = min_queries_for_ci(percentile, confidence)
    both = quantile_ci(ranks(n), percentile, confidence)
    assert both.low is not None
    assert both.high is not None
    if n > 1:
        short = quantile_ci(ranks(n - 1), percentile, confidence)
        assert short.low is None or short.high is None
    # closed form: the missing side is the one whose extreme rank carries more than alpha/2
    tail = (1 - confidence) / 2
    q = percentile / 100
    assert max(q**n, (1 - q) ** n) <= tail
    assert n == 1 or max(q ** (n - 1), (1 - q) ** (n - 1)) > tail


def test_small_samples_report_none_not_an_invented_bound() -> None:
    ci = quantile_ci(ranks(367), 99.0)
    assert ci.high is None
    assert ci.low is not None
    assert ci.estimate == 364  # ceil(3.67 * 99) = 364 is still reported
    ci = quantile_ci(ranks(3687), 99.9)
    assert ci.high is None
    ci = quantile_ci(ranks(3), 50.0)
    assert ci.low is None
    assert ci.high is None
    assert ci.estimate == 2


def test_median_ci_matches_published_table() -> None:
    # Conover, Practical Nonparametric Statistics: n = 100, 95% -> X(40), X(61).
    ci = quantile_ci(ranks(100), 50.0, 0.95)
    assert (ci.low, ci.estimate, ci.high) == (40, 50, 61)
    assert ci == QuantileCI(percentile=50.0, estimate=50.0, low=40.0, high=61.0, confidence=0.95, n=100)


@pytest.mark.parametrize("n", [36, 50, 100, 368, 500, 1000, 3688, 10_000, 123_457])
@pytest.mark.parametrize("percentile", [10.0, 50.0, 90.0, 95.0, 99.0, 99.9])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_exact_binomial_coverage(n: int, percentile: float, confidence: float) -> None:
    ci = quantile_ci(ranks(n), percentile, confidence)
    q = percentile / 100
    tail = (1 - confidence) / 2
    # values are ranks; a missing side is an infinite bound: rank 0 below, rank n + 1 above
    r = 0 if ci.low is None else int(ci.low)
    s = n + 1 if ci.high is None else int(ci.high)
    # Pr[X(r) < m_q < X(s)] = Pr[r <= K <= s - 1], K ~ Bin(n, q)
    coverage = binom.cdf(s - 1, n, q) - binom.cdf(r - 1, n, q)
    assert coverage >= confidence
    # each tail within its half of the error budget ...
    assert binom.cdf(r - 1, n, q) <= tail
    assert binom.sf(s - 1, n, q) <= tail
    # ... and as tight as that allows: moving either bound inward breaks its tail
    if ci.low is not None:
        assert binom.cdf(r, n, q) > tail
    else:
        assert binom.pmf(0, n, q) > tail
    if ci.high is not None:
        assert binom.sf(s - 2, n, q) > tail
    else:
        assert binom.pmf(n, n, q) > tail


def test_monte_carlo_coverage_exponential_p90() -> None:
    rng = np.random.default_rng(20240607)
    trials, n, q = 2000, 500, 0.9
    true_p90 = -math.log(1 - q)  # Exp(1) quantile
    samples = np.sort(rng.exponential(1.0, size=(trials, n)), axis=1)
    hits = 0
    for row in samples:
        ci = quantile_ci(row, 90.0, 0.95)
        assert ci.low is not None
        assert ci.high is not None
        hits += ci.low < true_p90 < ci.high
    empirical = hits / trials
    first = quantile_ci(ranks(n), 90.0, 0.95)
    assert first.low is not None
    assert first.high is not None
    exact = binom.cdf(first.high - 1, n, q) - binom.cdf(first.low - 1, n, q)
    assert exact >= 0.95
    sd = math.sqrt(exact * (1 - exact) / trials)
    assert abs(empirical - exact) < 4 * sd, (empirical, exact)
    assert empirical >= 0.95 - 4 * sd


def test_ci_relative_width() -> None:
    ci = QuantileCI(percentile=50.0, estimate=100.0, low=90.0, high=120.0, confidence=0.95, n=10)
    assert ci_relative_width(ci) == pytest.approx(0.3)
    assert ci_relative_width(QuantileCI(99.0, 100.0, 90.0, None, 0.95, 10)) == math.inf
    assert ci_relative_width(QuantileCI(99.0, 100.0, None, 120.0, 0.95, 10)) == math.inf
    assert ci_relative_width(QuantileCI(50.0, 0.0, 0.0, 1.0, 0.95, 10)) == math.inf
    # shrinks like 1/sqrt(n) for a fixed distribution
    rng = np.random.default_rng(1)
    small = ci_relative_width(quantile_ci(np.sort(rng.exponential(size=1_000)), 90.0))
    large = ci_relative_width(quantile_ci(np.sort(rng.exponential(size=100_000)), 90.0))
    assert 5 < small / large < 20


# --------------------------------------------------------------------------------------------------
# LoadGen early stopping


@pytest.mark.parametrize(("percentile", "expected"), [(90.0, 64), (99.0, 662)])
def test_early_stopping_minimum_queries_match_loadgen(percentile: float, expected: int) -> None:
    assert min_queries_for_early_stopping(percentile, t=1, confidence=0.99) == expected
    assert early_stopping_overage_allowed(expected - 1, percentile) is None
    assert early_stopping_overage_allowed(expected, percentile) == 0
    assert early_stopping_estimate(ranks(expected - 1), percentile) is None
    assert early_stopping_estimate(ranks(expected), percentile) == expected  # t = 1: the maximum


@pytest.mark.parametrize(("n", "expected"), [(2048, 172), (2116, 178)])
def test_early_stopping_overage_matches_loadgen(n: int, expected: int) -> None:
    assert early_stopping_overage_allowed(n, 90.0, 0.99) == expected
    # the estimate is sorted[n - t] (0-based) with t = discarded + 1
    assert early_stopping_estimate(ranks(n), 90.0) == n - expected


def reference_overage(n: int, p: float, confidence: float) -> int | None:
    """Brute force: t = max{t : Pr[Bin(n, 1 - p) <= t] <= 1 - c}; discarded = t - 1."""
    cdf = binom.cdf(np.arange(n + 1), n, 1 - p)
    passing = np.flatnonzero(cdf <= 1 - confidence)
    if passing.size == 0 or passing[-1] < 1:
        return None
    return int(passing[-1]) - 1


@pytest.mark.parametrize("percentile", [50.0, 90.0, 95.0, 99.0])
def test_early_stopping_overage_matches_brute_force(percentile: float) -> None:
    for n in [1, 2, 10, 63, 64, 65, 100, 661, 662, 999, 1000, 2048, 2116, 5000, 12_345]:
        assert early_stopping_overage_allowed(n, percentile) == reference_overage(n, percentile / 100, 0.99), n


@pytest.mark.parametrize("percentile", [90.0, 99.0])
def test_early_stopping_thresholds_are_consistent(percentile: float) -> None:
    # N(t) = h(t) + t is exactly the run length at which t overages first pass
    for t in range(1, 8):
        n_t = min_queries_for_early_stopping(percentile, t=t)
        assert early_stopping_overage_allowed(n_t, percentile) == t - 1
        below = early_stopping_overage_allowed(n_t - 1, percentile)
        assert below == (None if t == 1 else t - 2)
        assert min_queries_for_early_stopping(percentile, t=t + 1) > n_t


def test_early_stopping_t0_is_the_plain_zero_failure_bound() -> None:
    # with no overage, the run passes once p**n <= 0.01 (LoadGen's y1 seed: ceil(log 0.01 / log p))
    assert min_queries_for_early_stopping(90.0, t=0) == math.ceil(math.log(0.01) / math.log(0.9)) == 44
    assert min_queries_for_early_stopping(99.0, t=0) == 459


# --------------------------------------------------------------------------------------------------
# summary


def test_summarize_known_array() -> None:
    latencies = (ranks(100) * 1000)[::-1].tolist()  # 1..100 us in ns, reversed to prove it sorts
    summary = summarize(latencies)
    assert isinstance(summary, LatencySummary)
    assert summary.n == 100
    assert summary.mean == 50_500.0
    assert summary.stdev == pytest.approx(1000 * math.sqrt(100 * 101 / 12))  # var of 1..n = n(n+1)/12
    assert (summary.min, summary.max) == (1000.0, 100_000.0)
    assert list(summary.percentiles) == list(DEFAULT_PERCENTILES)
    p50 = summary.percentiles[50.0]
    assert (p50.low, p50.estimate, p50.high) == (40_000.0, 50_000.0, 61_000.0)
    assert summary.percentiles[90.0].estimate == 90_000.0
    assert summary.percentiles[90.0].high is not None  # n = 100 >= 36
    assert summary.percentiles[99.0].estimate == 99_000.0
    assert summary.percentiles[99.0].high is None  # n = 100 < 368
    assert summary.percentiles[99.9].estimate == 100_000.0
    assert summary.early_stopping == {99.0: None}  # n = 100 < 662

    flat = summary.as_flat_dict()
    expected_keys = {"n", "mean_ms", "stdev_ms", "min_ms", "max_ms", "p99_early_stop_ms"}
    for key in ("p50", "p90", "p95", "p99", "p99_9"):
        expected_keys |= {f"{key}_ms", f"{key}_ci_low_ms", f"{key}_ci_high_ms"}
    assert set(flat) == expected_keys
    assert flat["n"] == 100
    assert flat["p50_ms"] == pytest.approx(0.05)
    assert flat["p50_ci_low_ms"] == pytest.approx(0.04)
    assert flat["p50_ci_high_ms"] == pytest.approx(0.061)
    assert flat["p99_9_ms"] == pytest.approx(0.1)
    assert flat["p99_ci_high_ms"] is None
    assert flat["p99_early_stop_ms"] is None
    assert flat["mean_ms"] == pytest.approx(0.0505)

    micro = summary.as_flat_dict(scale=1e-3, unit="us")
    assert micro["p90_us"] == pytest.approx(90.0)
    assert micro["max_us"] == pytest.approx(100.0)


def test_summarize_early_stopping_and_custom_percentiles() -> None:
    summary = summarize(ranks(2048)[::-1], percentiles=(90.0, 99.99), headline=(90.0, 99.0))
    assert summary.early_stopping == {90.0: 2048.0 - 172, 99.0: 2048.0 - early_stopping_overage_allowed(2048, 99.0)}
    flat = summary.as_flat_dict(scale=1.0, unit="ns")
    assert flat["p90_early_stop_ns"] == 1876.0
    assert "p99_99_ns" in flat
    assert summary.percentiles[99.99].high is None


def test_summarize_single_sample() -> None:
    summary = summarize(np.array([5_000_000]))
    assert summary.stdev == 0.0
    assert summary.percentiles[50.0].estimate == 5_000_000.0
    assert summary.percentiles[50.0].low is None


def test_summarize_million_samples_has_every_bound() -> None:
    # speed is measured in benchmarks/stats_speed.py, not asserted here (shared, noisy machines)
    rng = np.random.default_rng(3)
    latencies = rng.integers(500_000, 50_000_000, size=1_000_000, dtype=np.int64)
    summary = summarize(latencies, headline=(90.0, 99.0))
    assert summary.n == 1_000_000
    assert all(ci.low is not None and ci.high is not None for ci in summary.percentiles.values())


# --------------------------------------------------------------------------------------------------
# properties

latency_lists = st.lists(st.integers(min_value=0, max_value=10**10), min_size=1, max_size=800)
percentile_values = st.one_of(
    st.sampled_from(DEFAULT_PERCENTILES), st.floats(min_value=0.01, max_value=99.99, allow_nan=False)
)


@settings(max_examples=150, deadline=None)
@given(values=latency_lists, percentile=percentile_values, confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_property_bounds_bracket_estimate_and_are_samples(
    values: list[int], percentile: float, confidence: float
) -> None:
    arr = np.sort(np.array(values, dtype=np.int64))
    ci = quantile_ci(arr, percentile, confidence)
    assert ci.n == arr.size
    assert ci.estimate == nearest_rank(arr, percentile)
    members = set(arr.tolist())
    assert ci.estimate in members
    if ci.low is not None:
        assert ci.low in members
        assert ci.low <= ci.estimate
    if ci.high is not None:
        assert ci.high in members
        assert ci.estimate <= ci.high
    if arr.size >= min_queries_for_ci(percentile, confidence):
        assert ci.low is not None
        assert ci.high is not None
    estimate = early_stopping_estimate(arr, percentile)
    if estimate is not None:
        assert estimate in members
        assert estimate >= ci.estimate  # a one-sided upper bound never undercuts the point estimate


@settings(max_examples=150, deadline=None)
@given(
    values=latency_lists,
    percentiles=st.lists(percentile_values, min_size=2, max_size=2, unique=True).map(sorted),
)
def test_property_monotone_in_percentile(values: list[int], percentiles: list[float]) -> None:
    arr = np.sort(np.array(values, dtype=np.int64))
    lower, upper = (quantile_ci(arr, p) for p in percentiles)
    assert lower.estimate <= upper.estimate
    if lower.low is not None and upper.low is not None:
        assert lower.low <= upper.low
    if lower.low is not None:
        assert upper.low is not None  # a higher quantile's lower bound exists whenever a lower one's does
    if lower.high is not None and upper.high is not None:
        assert lower.high <= upper.high
    if lower.high is None:
        assert upper.high is None  # and its upper bound is missing whenever a lower one's is
    lo_es, hi_es = (early_stopping_estimate(arr, p) for p in percentiles)
    if lo_es is not None and hi_es is not None:
        assert lo_es <= hi_es


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=1, max_value=50_000), percentile=percentile_values)
def test_property_overage_is_monotone_in_n(n: int, percentile: float) -> None:
    here = early_stopping_overage_allowed(n, percentile)
    nxt = early_stopping_overage_allowed(n + 1, percentile)
    if here is not None:
        assert nxt is not None
        assert here <= nxt <= here + 1
        assert here <= n - math.ceil(percentile / 100 * n - 1e-9)  # never discards into the percentile
