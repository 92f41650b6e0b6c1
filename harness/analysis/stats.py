"""Latency statistics: nearest-rank percentiles, their confidence intervals, and LoadGen early stopping.

Latencies are measured per query in integer nanoseconds; every value this module returns that is a
latency (estimates, interval bounds, mean, ...) is in the unit of its input, i.e. nanoseconds unless the
caller passes something else. Percentiles are given on the 0-100 scale (``99.9`` is the 99.9th).

Three things are computed:

* **Point estimates** use the nearest-rank definition: the ``ceil(p/100 * n)``-th smallest sample
  (1-based).

* **Confidence intervals** are distribution-free, built from order statistics. If ``K ~ Bin(n, q)``
  counts the samples below the true ``q``-quantile ``m_q``, then
  ``Pr[X(r) < m_q < X(s)] = Pr[r <= K <= s - 1]`` for any continuous distribution (ties only widen the
  closed interval). The interval is *equal-tailed*: ``r`` is the largest rank with
  ``Pr[K <= r - 1] <= (1 - confidence) / 2`` and ``s`` the smallest rank with
  ``Pr[K >= s] <= (1 - confidence) / 2``, so each side misses with probability at most half the error
  budget and the exact coverage is at least ``confidence``. A side whose rank would fall outside
  ``1..n`` does not exist and is reported as ``None``; a two-sided 95% interval therefore needs
  ``n >= 36`` samples for p90, 72 for p95, 368 for p99 and 3688 for p99.9.

* **Early stopping** follows MLPerf LoadGen (``loadgen/early_stopping.cc`` and
  ``PerformanceSummary::EarlyStopping`` in ``loadgen/results.cc`` of mlcommons/inference). For a run of
  ``n`` queries, ``t`` is the largest count of "over-the-bound" queries for which
  ``Pr[X <= t] <= 1 - confidence`` with ``X ~ Bin(n, 1 - p)``; LoadGen finds it as the first ``i`` whose
  minimal passing run ``h(i) + i`` exceeds ``n``, minus one, which is the same number. The estimate is
  the ``t``-th largest latency (0-based index ``n - t`` of the sorted array), so it discards ``t - 1``
  queries and is a one-sided ``confidence`` upper bound on the percentile. A run needs at least
  ``h(1) + 1`` queries (64 for p90, 662 for p99 at 0.99) for any estimate.

Every search over ranks or run lengths is a bisection over the monotone binomial CDF (``O(log n)``
scalar evaluations), so after the single sort the cost does not grow with ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = [
    "DEFAULT_PERCENTILES",
    "LatencySummary",
    "QuantileCI",
    "ci_relative_width",
    "early_stopping_estimate",
    "early_stopping_overage_allowed",
    "min_queries_for_ci",
    "min_queries_for_early_stopping",
    "nearest_rank",
    "quantile_ci",
    "summarize",
]

DEFAULT_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)
"""Percentiles reported by default, on the 0-100 scale."""

# Relative slack when deciding whether p/100 * n is an integer: 99.9/100 * 1000 is 999.0000000000001 in
# binary floating point, and must still give rank 999, not 1000.
_RANK_REL_TOL = 1e-9


# --------------------------------------------------------------------------------------------------
# validation and binomial helpers


def _check_percentile(percentile: float, *, allow_100: bool) -> float:
    """Return ``percentile / 100`` after checking that ``percentile`` lies in (0, 100) or (0, 100]."""
    p = float(percentile)
    upper_ok = p <= 100.0 if allow_100 else p < 100.0
    if not (math.isfinite(p) and p > 0.0 and upper_ok):
        interval = "(0, 100]" if allow_100 else "(0, 100)"
        raise ValueError(f"percentile must lie in {interval}, got {percentile!r}")
    return p / 100.0


def _check_confidence(confidence: float) -> float:
    """Return ``confidence`` after checking that it lies in (0, 1)."""
    c = float(confidence)
    if not (math.isfinite(c) and 0.0 < c < 1.0):
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return c


def _as_sorted_1d(sorted_values: np.ndarray) -> np.ndarray:
    """View the input as a non-empty 1-D array (assumed already sorted ascending; not checked)."""
    arr = np.asarray(sorted_values)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of latencies, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("expected at least one latency, got an empty array")
    return arr


def _binom_cdf(k: int, n: int, prob: float) -> float:
    """``Pr[K <= k]`` for ``K ~ Bin(n, prob)``, exact at the edges (``k < 0`` -> 0, ``k >= n`` -> 1)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return float(special.bdtr(k, n, prob))


def _binom_sf(k: int, n: int, prob: float) -> float:
    """``Pr[K > k]`` for ``K ~ Bin(n, prob)``, computed directly (accurate far into the upper tail)."""
    if k < 0:
        return 1.0
    if k >= n:
        return 0.0
    return float(special.bdtrc(k, n, prob))


def _first_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """Smallest ``k`` in ``[lo, hi]`` with ``pred(k)`` true, for ``pred`` monotone false -> true.

    Returns ``hi + 1`` when ``pred`` is false on the whole range. ``O(log(hi - lo))`` calls.
    """
    while lo <= hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid - 1
        else:
            lo = mid + 1
    return lo


def _ci_ranks(n: int, q: float, confidence: float) -> tuple[int | None, int | None]:
    """1-based ranks ``(r, s)`` of the equal-tailed order-statistic interval for quantile ``q``.

    ``r`` is the largest rank with ``Pr[K <= r - 1] <= alpha/2`` and ``s`` the smallest rank with
    ``Pr[K >= s] <= alpha/2``, ``K ~ Bin(n, q)``, ``alpha = 1 - confidence``. Either is ``None`` when it
    would fall outside ``1..n`` (the sample is too small for that side to exist).
    """
    tail = (1.0 - confidence) / 2.0
    # r - 1 = (first k with cdf(k) > tail) - 1; r = first such k. cdf(n) = 1 > tail, so r <= n.
    r = _first_true(lambda k: _binom_cdf(k, n, q) > tail, 0, n)
    # s - 1 = first k with sf(k) = Pr[K > k] <= tail; sf(n) = 0, so s <= n + 1.
    s = _first_true(lambda k: _binom_sf(k, n, q) <= tail, 0, n) + 1
    return (r if r >= 1 else None), (s if s <= n else None)


def _early_stopping_t(n: int, p: float, confidence: float) -> int:
    """LoadGen's ``t`` for a run of ``n`` queries: the largest ``t`` with ``Pr[Bin(n, 1-p) <= t] <= 1-c``.

    Returns 0 when even ``t = 1`` does not pass (then LoadGen reports no estimate).
    """
    alpha = 1.0 - confidence
    # first t whose CDF exceeds alpha, minus one; cdf(n) = 1 > alpha so the search always succeeds.
    return _first_true(lambda t: _binom_cdf(t, n, 1.0 - p) > alpha, 0, n) - 1


# --------------------------------------------------------------------------------------------------
# point estimates and intervals


def nearest_rank(sorted_values: np.ndarray, percentile: float) -> float:
    """Nearest-rank percentile of ``sorted_values`` (sorted ascending; returned in the same unit).

    The result is the ``ceil(percentile/100 * n)``-th smallest value (1-based rank, at least 1), so it is
    always an element of the sample. ``percentile`` is on the 0-100 scale and must lie in (0, 100];
    ``percentile=100`` gives the maximum.

    Note: LoadGen itself indexes ``sorted[floor(n * p)]`` (0-based), which agrees with nearest rank except
    when ``n * p`` is an integer, where it takes the next sample up.
    """
    arr = _as_sorted_1d(sorted_values)
    q = _check_percentile(percentile, allow_100=True)
    return float(arr[_nearest_rank_index(arr.size, q)])


def _nearest_rank_index(n: int, q: float) -> int:
    """0-based index of the nearest-rank ``q``-quantile (``q`` on the 0-1 scale) among ``n`` samples."""
    x = q * n
    nearest = round(x)
    rank = nearest if abs(x - nearest) <= _RANK_REL_TOL * max(1.0, x) else math.ceil(x)
    return min(max(int(rank), 1), n) - 1


@dataclass(frozen=True)
class QuantileCI:
    """A nearest-rank percentile with its distribution-free confidence interval.

    ``estimate``, ``low`` and ``high`` are latencies in the unit of the input samples (nanoseconds in
    the harness). ``low``/``high`` are ``None`` where the sample is too small for that side of the
    interval to exist; they are never extrapolated. ``confidence`` is the two-sided coverage level
    (e.g. 0.95) and ``n`` the number of samples the interval was computed from.
    """

    percentile: float
    estimate: float
    low: float | None
    high: float | None
    confidence: float
    n: int


def quantile_ci(sorted_values: np.ndarray, percentile: float, confidence: float = 0.95) -> QuantileCI:
    """Nearest-rank ``percentile`` of ``sorted_values`` with an order-statistic confidence interval.

    ``sorted_values`` must be sorted ascending (latencies, usually in nanoseconds); ``percentile`` is on
    the 0-100 scale, in (0, 100). The bounds are the order statistics ``X(r)`` and ``X(s)`` of the
    tightest equal-tailed interval whose exact binomial coverage ``Pr[r <= K <= s - 1]``,
    ``K ~ Bin(n, percentile/100)``, is at least ``confidence`` (each side misses with probability at
    most ``(1 - confidence) / 2``). A bound is ``None`` when ``n`` is too small for it to exist; see
    :func:`min_queries_for_ci`. Cost after sorting: ``O(log n)``.
    """
    arr = _as_sorted_1d(sorted_values)
    q = _check_percentile(percentile, allow_100=False)
    c = _check_confidence(confidence)
    n = int(arr.size)
    r, s = _ci_ranks(n, q, c)
    return QuantileCI(
        percentile=float(percentile),
        estimate=float(arr[_nearest_rank_index(n, q)]),
        low=None if r is None else float(arr[r - 1]),
        high=None if s is None else float(arr[s - 1]),
        confidence=c,
        n=n,
    )


def min_queries_for_ci(percentile: float, confidence: float = 0.95) -> int:
    """Smallest sample count for which :func:`quantile_ci` reports both bounds.

    ``percentile`` is on the 0-100 scale, in (0, 100). At 95% confidence this is 36 for p90, 72 for
    p95, 368 for p99 and 3688 for p99.9 (the upper bound exists once ``q**n <= (1 - confidence) / 2``,
    the lower once ``(1 - q)**n <= (1 - confidence) / 2``).
    """
    q = _check_percentile(percentile, allow_100=False)
    c = _check_confidence(confidence)
    tail = (1.0 - c) / 2.0
    # Closed-form guess, then settle it with the very test quantile_ci applies (floating point).
    guess = max(math.ceil(math.log(tail) / math.log(q)), math.ceil(math.log(tail) / math.log1p(-q)), 1)

    def both(n: int) -> bool:
        r, s = _ci_ranks(n, q, c)
        return r is not None and s is not None

    n = guess
    while n > 1 and both(n - 1):
        n -= 1
    while not both(n):
        n += 1
    return n


def ci_relative_width(ci: QuantileCI) -> float:
    """Width of the interval relative to its estimate, ``(high - low) / estimate`` (dimensionless).

    ``inf`` when a bound is missing or the estimate is 0, so "not yet measured precisely enough" sorts
    last and compares greater than any threshold.
    """
    if ci.low is None or ci.high is None or ci.estimate == 0:
        return math.inf
    return (ci.high - ci.low) / abs(ci.estimate)


# --------------------------------------------------------------------------------------------------
# LoadGen early stopping


def min_queries_for_early_stopping(percentile: float, t: int = 1, confidence: float = 0.99) -> int:
    """Smallest run length ``h + t`` that passes LoadGen's early-stopping test with ``t`` overages.

    That is the smallest ``n`` with ``Pr[X <= t] <= 1 - confidence``, ``X ~ Bin(n, 1 - percentile/100)``
    (LoadGen's ``h(t) + t``). With ``t = 1`` this is the minimum number of queries for any early-stopping
    estimate: 64 for p90 and 662 for p99 at 0.99.
    """
    p = _check_percentile(percentile, allow_100=False)
    c = _check_confidence(confidence)
    if int(t) != t or t < 0:
        raise ValueError(f"t must be a non-negative integer, got {t!r}")
    t = int(t)
    alpha = 1.0 - c

    def passes(n: int) -> bool:
        return _binom_cdf(t, n, 1.0 - p) <= alpha

    # Pr[X <= t] decreases in n: gallop to a passing n, then bisect.
    lo, hi = t + 1, max(t + 1, 2 * t + 2)
    while not passes(hi):
        lo, hi = hi + 1, 2 * hi
    return _first_true(passes, lo, hi)


def min_queries_for(percentile: float, confidence: float = 0.95) -> int:
    """Queries a window needs for a two-sided CI of ``percentile`` and LoadGen's early-stopping
    estimate with one overage allowed (p99 at 0.95: max(368, 662) = 662)."""
    return max(min_queries_for_ci(percentile, confidence), min_queries_for_early_stopping(percentile, t=1))


def early_stopping_overage_allowed(n: int, percentile: float, confidence: float = 0.99) -> int | None:
    """How many of the slowest queries LoadGen's early-stopping estimate discards for ``n`` queries.

    This is ``t - 1`` in LoadGen's terms (172 for p90 at ``n = 2048``, 178 at ``n = 2116``), or ``None``
    when ``n`` is below :func:`min_queries_for_early_stopping` (``t = 1``), where LoadGen gives no
    estimate.
    """
    p = _check_percentile(percentile, allow_100=False)
    c = _check_confidence(confidence)
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    t = _early_stopping_t(int(n), p, c)
    return None if t < 1 else t - 1


def early_stopping_estimate(sorted_values: np.ndarray, percentile: float, confidence: float = 0.99) -> float | None:
    """LoadGen's early-stopping estimate of ``percentile`` (same unit as the samples, usually ns).

    ``sorted_values`` must be sorted ascending. The estimate is the ``t``-th largest sample, a one-sided
    ``confidence`` upper bound on the true percentile; it is ``None`` when there are fewer samples than
    :func:`min_queries_for_early_stopping` (``t = 1``) requires.
    """
    arr = _as_sorted_1d(sorted_values)
    overage = early_stopping_overage_allowed(int(arr.size), percentile, confidence)
    if overage is None:
        return None
    return float(arr[arr.size - 1 - overage])


# --------------------------------------------------------------------------------------------------
# summary


def _percentile_key(percentile: float) -> str:
    """``99.9`` -> ``"p99_9"``, ``50.0`` -> ``"p50"``: a column-name-safe label for a percentile."""
    return "p" + f"{float(percentile):g}".replace(".", "_")


@dataclass(frozen=True)
class LatencySummary:
    """Summary of one cell's per-query latencies; every latency field is in nanoseconds.

    ``stdev`` is the sample standard deviation (``ddof=1``; 0 for a single sample). ``percentiles``
    maps each requested percentile (0-100 scale) to its estimate and confidence interval;
    ``early_stopping`` maps each headline percentile to LoadGen's early-stopping estimate, or ``None``
    when the run was too short for one.
    """

    n: int
    mean: float
    stdev: float
    min: float
    max: float
    percentiles: dict[float, QuantileCI]
    early_stopping: dict[float, float | None]

    def as_flat_dict(self, scale: float = 1e-6, unit: str = "ms") -> dict[str, float | int | None]:
        """Flatten for tables: latencies multiplied by ``scale`` (from ns) and suffixed ``_{unit}``.

        Keys: ``n``, ``mean_ms``, ``stdev_ms``, ``min_ms``, ``max_ms``, and for each percentile
        ``p50_ms``, ``p50_ci_low_ms``, ``p50_ci_high_ms`` (a dot in the percentile becomes ``_``:
        ``p99_9_ms``), and for each headline percentile ``p99_early_stop_ms``. Missing bounds and
        estimates stay ``None``.
        """

        def scaled(value: float | None) -> float | None:
            return None if value is None else value * scale

        out: dict[str, float | int | None] = {
            "n": self.n,
            f"mean_{unit}": scaled(self.mean),
            f"stdev_{unit}": scaled(self.stdev),
            f"min_{unit}": scaled(self.min),
            f"max_{unit}": scaled(self.max),
        }
        for percentile, ci in self.percentiles.items():
            key = _percentile_key(percentile)
            out[f"{key}_{unit}"] = scaled(ci.estimate)
            out[f"{key}_ci_low_{unit}"] = scaled(ci.low)
            out[f"{key}_ci_high_{unit}"] = scaled(ci.high)
        for percentile, estimate in self.early_stopping.items():
            out[f"{_percentile_key(percentile)}_early_stop_{unit}"] = scaled(estimate)
        return out


def summarize(
    latencies_ns: np.ndarray | Sequence[int],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    confidence: float = 0.95,
    headline: Sequence[float] = (99.0,),
    early_stop_confidence: float = 0.99,
) -> LatencySummary:
    """Summarize per-query latencies in nanoseconds (any order; sorted once here).

    ``percentiles`` (0-100 scale) get nearest-rank estimates with ``confidence`` two-sided
    order-statistic intervals; ``headline`` percentiles get LoadGen early-stopping estimates at
    ``early_stop_confidence``. Raises ``ValueError`` on an empty, non-1-D or non-finite input.
    """
    arr = np.asarray(latencies_ns)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of latencies, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("cannot summarize an empty set of latencies")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"latencies must be numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError("latencies must be finite")
    sorted_arr = np.sort(arr)
    n = int(sorted_arr.size)
    as_float = sorted_arr.astype(np.float64, copy=False)
    mean = float(as_float.mean())
    stdev = float(as_float.std(ddof=1)) if n > 1 else 0.0
    return LatencySummary(
        n=n,
        mean=mean,
        stdev=stdev,
        min=float(sorted_arr[0]),
        max=float(sorted_arr[-1]),
        percentiles={float(p): quantile_ci(sorted_arr, p, confidence) for p in percentiles},
        early_stopping={float(p): early_stopping_estimate(sorted_arr, p, early_stop_confidence) for p in headline},
    )
