"""The statistics of a comparison: bootstrap variances of a change, normal intervals on the log
ratio, the spread between processes pooled and shrunk, and Holm's correction."""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


#: bootstrap resamples per variance
BOOTSTRAP = 400
#: how many measured deviations the assumed spread weighs as, when both are pooled
PRIOR_WEIGHT = 10
#: the quantile of each latency metric
QUANTILE = {"p50": 0.5, "p99": 0.99}


def _stat(metric: str, latencies_ms: np.ndarray, batch: int) -> float:
    if metric == "throughput":  # closed loop: samples per second of busy time
        return batch * 1000.0 / float(latencies_ms.mean())
    return float(np.quantile(latencies_ms, QUANTILE[metric], method="inverted_cdf"))


def _boot(
    groups: list[np.ndarray], metric: str, batch: int, rng: np.random.Generator, n: int, processes: bool = True
) -> np.ndarray:
    """Bootstrap replicates of a run's metric: resample its processes (repeats) when it has several
    and ``processes``, then the queries within each; the metric of the pooled resample. Vectorised
    over replicates, in blocks of about 4M values."""
    sizes = np.array([g.size for g in groups])
    width = int(sizes.max())
    stack = np.zeros((len(groups), width))
    for i, g in enumerate(groups):
        stack[i, : g.size] = g
    out = np.empty(n)
    step = max(1, 4_000_000 // (len(groups) * width))
    for lo in range(0, n, step):
        rows = min(step, n - lo)
        # which processes each replicate draws (all of them when there is one), then which queries
        if processes and len(groups) > 1:
            chosen = rng.integers(0, len(groups), (rows, len(groups)))
        else:
            chosen = np.broadcast_to(np.arange(len(groups)), (rows, len(groups)))
        size = sizes[chosen][..., None]  # (rows, processes, 1)
        picks = stack[chosen[..., None], (rng.random((rows, len(groups), width)) * size).astype(np.int64)]
        valid = np.arange(width) < size  # a shorter process fills only the start of its row
        count = size.sum(axis=(1, 2))
        if metric == "throughput":
            out[lo : lo + rows] = batch * 1000.0 / (np.where(valid, picks, 0.0).sum(axis=(1, 2)) / count)
            continue
        flat = np.where(valid, picks, np.inf).reshape(rows, -1)
        ranks = np.maximum(0, np.ceil(QUANTILE[metric] * count).astype(np.int64) - 1)  # inverted_cdf's rank
        if (ranks == ranks[0]).all():  # every replicate as long: one partial sort
            flat.partition(int(ranks[0]), axis=1)
        else:
            flat.sort(axis=1)
        out[lo : lo + rows] = flat[np.arange(rows), ranks]
    return out


def bootstrap_log_variance(
    base: list[np.ndarray], cand: list[np.ndarray], metric: str, batch: int, seed: int = 0, processes: bool = True
) -> float:
    """Variance of the log ratio candidate / baseline of ``metric`` from a bootstrap over the
    queries within the processes (and over the processes where a run has several, unless not
    ``processes``). With a single process it cannot see the spread independent processes add (the
    same code in another process lands a few percent away on this kind of machine):
    :func:`judge_cells` adds that (:func:`cell_spread`), and so bootstraps within processes only."""
    rng = np.random.default_rng(seed)
    ratios = _boot(cand, metric, batch, rng, BOOTSTRAP, processes) / _boot(
        base, metric, batch, rng, BOOTSTRAP, processes
    )
    return float(np.log(ratios).var(ddof=1))


def change_with_ci(
    base: list[np.ndarray],
    cand: list[np.ndarray],
    metric: str,
    batch: int,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """(relative change, CI low, CI high, two-sided p-value of no change) of ``metric`` between two
    runs' per-query latencies (one array per process), from the bootstrap's variance alone."""
    b0 = _stat(metric, np.concatenate(base), batch)
    c0 = _stat(metric, np.concatenate(cand), batch)
    variance = bootstrap_log_variance(base, cand, metric, batch, seed)
    return _normal(math.log(c0 / b0), variance, confidence)


def _normal(
    log_ratio: float, variance: float, confidence: float, dof: float | None = None
) -> tuple[float, float, float, float]:
    """The change, its ``confidence`` interval and two-sided p-value from a log ratio and its
    variance: normal, or Student's t with ``dof`` degrees of freedom where the variance rests on an
    estimated spread (a normal quantile there makes intervals too narrow with few processes)."""
    se = math.sqrt(max(variance, 0.0))
    z = abs(log_ratio) / se if se > 0 else (math.inf if log_ratio else 0.0)
    if dof is None:
        zc = _z(1 - (1 - confidence) / 2)
        p = math.erfc(z / math.sqrt(2))
    else:
        from scipy.stats import t

        zc = float(t.ppf(1 - (1 - confidence) / 2, dof))
        p = float(2 * t.sf(z, dof)) if math.isfinite(z) else 0.0
    return math.expm1(log_ratio), math.expm1(log_ratio - zc * se), math.expm1(log_ratio + zc * se), p


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def pooled_run_sigma(groups: list[list[float]], prior: float | None = None) -> float | None:
    """Between-process spread (sd of the log) pooled over groups of one cell's per-process values,
    robustly: 1.4826 x the median of |x_i - x_j| / sqrt(2) over the pairs of processes within each
    group, so that one process slowed by a neighbour does not widen every interval of the sweep.
    Each such term is |N(0, sd^2)| for normal logs, so the estimate is the sd whatever the group
    size (deviations from a group's median, the estimator before, read 0.71 sd in pairs and 0.79 sd
    in groups of six: intervals too narrow, false verdicts far above --alpha). With a ``prior``
    spread, the estimate is shrunk towards it with the weight of ``PRIOR_WEIGHT`` degrees of freedom
    against the groups' own (processes less one per group; the prior alone when nothing was
    measured): a few processes that happened to agree do not make an interval narrow."""
    terms: list[float] = []
    dof = 0
    for values in groups:
        logs = np.log([v for v in values if v and v > 0])
        if logs.size < 2:
            continue
        i, j = np.triu_indices(logs.size, k=1)
        terms.extend((np.abs(logs[i] - logs[j]) / math.sqrt(2)).tolist())
        dof += logs.size - 1
    estimate = 1.4826 * float(np.median(terms)) if terms else None
    if prior is None or estimate is None:
        return estimate if estimate is not None else prior
    return math.sqrt((dof * estimate**2 + PRIOR_WEIGHT * prior**2) / (dof + PRIOR_WEIGHT))


def cell_spread(base: list[float], cand: list[float], pooled: float) -> float:
    """One cell's spread between processes (sd of the log): the sample sd of both sides' processes
    around their side's mean, shrunk towards the sweep's ``pooled`` spread with the weight of
    ``PRIOR_WEIGHT`` degrees of freedom. A cell whose processes land far apart (on a shared machine
    some cells switch between a fast and a slow pace from one process to the next) gets the wide
    interval it needs; with one process a side there is nothing to measure and ``pooled`` stands."""
    sides = [np.log(np.asarray(v, dtype=np.float64)) for v in (base, cand) if len(v) > 1]
    df = sum(x.size - 1 for x in sides)
    if not df:
        return pooled
    ss = sum(float(((x - x.mean()) ** 2).sum()) for x in sides)
    return math.sqrt((ss + PRIOR_WEIGHT * pooled**2) / (df + PRIOR_WEIGHT))


def cell_dof(base: list[float], cand: list[float]) -> float | None:
    """The degrees of freedom of :func:`cell_spread`'s variance (Satterthwaite): it is the cell's own
    sum of squares (``df`` = processes less one per side) plus ``PRIOR_WEIGHT`` times the pooled
    spread, which rests on every cell of the sweep and counts as known; so (df + W)^2 / df. None
    with one process a side: the pooled spread alone, a normal quantile."""
    df = sum(len(v) - 1 for v in (base, cand) if len(v) > 1)
    return (df + PRIOR_WEIGHT) ** 2 / df if df else None


def _level(values: list[float], spread: float) -> tuple[float, int]:
    """A run's level of a metric over its processes, and how many processes it rests on: the
    geometric mean of the processes within 3 spreads of their median (one disturbed by a neighbour
    is left out; with fewer than three there is no majority to judge by, so all are kept)."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    if logs.size >= 3 and spread > 0:
        kept = logs[np.abs(logs - np.median(logs)) <= 3 * spread]
        logs = kept if kept.size > logs.size / 2 else logs  # only a minority is ever left out
    return float(np.exp(logs.mean())), int(logs.size)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: controls the family-wise error over all the comparisons."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
