"""The statistics of ``bench gate``: pairs of processes, a one-sided Wilcoxon signed-rank test, the
power it has at the threshold, and the verdicts. Pure functions: ``benchmarks/gate_power.py`` runs the
very same ones on resampled processes.

The unit is the process. A pair is one baseline process and one candidate process run back to back
(their order random); its evidence, per metric, is the log ratio oriented so that a positive value
means the candidate is worse (``log(candidate / baseline)`` of a latency, ``log(baseline /
candidate)`` of throughput): its *slowdown*. Per cell and metric:

- the test: Wilcoxon's signed-rank test of "the candidate is worse" (one-sided) over the pairs'
  slowdowns, exact up to 50 pairs (:func:`worse_p`);
- the estimate: the Hodges-Lehmann estimate (the median of the pairs' Walsh averages), reported as
  the metric's relative change, with the signed-rank test's exact 95 % interval;
- the noise: the standard deviation of a pair's slowdown (sd of a log ratio, about the relative
  spread of one pair's ratio), estimated from the cell's pairs and shrunk towards the night's
  calibration (pairs of two baseline processes) with the weight of ``CELL_PRIOR_WEIGHT`` pairs;
- the power at the threshold (a slowdown of ``delta = log(1 + threshold)``) with ``n`` pairs at a
  one-sided level ``a``: up to 50 pairs, the exact test's own power under normal noise (its critical
  value from the exact null distribution, the statistic over 4000 fixed draws: :func:`_exact_power`);
  beyond, the normal approximation of the signed-rank test, with Wilcoxon's efficiency of 3/pi
  against the t-test under normal noise and Guenther's small-sample term::

      power(n) = Phi( sqrt(0.955 * (n - z_{1-a}^2 / 2)) * delta / sigma - z_{1-a} )
      pairs needed: n = ((z_{1-a} + z_{power}) * sigma / delta)^2 / 0.955 + z_{1-a}^2 / 2

  (the formula also starts the search for the pairs needed). The exact test cannot reach ``p < a``
  with fewer than ``log2(1/a)`` pairs: zero power below that. Near that least number the formula
  overstated the power by up to 12 points (80 % said, 68 % true), since the exact p-values are coarse
  there.

Each metric has its threshold: the gate's default is the same for throughput and p50 and at least
``DEFAULT_P99_THRESHOLD`` for p99, whose process-to-process noise is several times theirs.

Two stages. The screen (stage 1) tests every cell uncorrected at ``SCREEN_ALPHA``: a cell with any
metric under it is a suspect; a cell the screen lets through is ``unchanged`` when the screen had
``SCREEN_POWER`` at the threshold for every metric, else ``inconclusive``. Suspects get fresh pairs
(stage 2, the confirmation), planned to reach ``TARGET_POWER`` at the corrected level, and only those
pairs decide: Holm over every metric of every suspect measured again. A suspect ``regresses`` when a
metric is significant after Holm and its estimate is worse by at least the threshold; it is
``unchanged`` when not, with the power reached for every metric; else ``inconclusive``. A suspect
whose least noisy metric needs more pairs than the time left affords is ``inconclusive`` without
being measured again: neither a pass nor a fail. While time is left, the cells the screen let through
short of its power get more screen pairs (a screen may look again: it decides nothing), and their
suspects join the confirmation's Holm family. The gate looks for regressions only: a faster candidate
is ``unchanged``.

Kept whole, at about 520 lines: one family of pure functions, the verdicts with the statistics that
give them, which ``benchmarks/gate_power.py`` runs as the gate does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from harness.analysis.comparison import METRICS, NOT_JUDGED, CellComparison, MetricChange
from harness.analysis.intervals import holm

#: Wilcoxon's asymptotic relative efficiency against the t-test under normal noise
WILCOXON_ARE = 3 / math.pi
#: the chance stage 2 catches a slowdown of the threshold, which its number of pairs is planned for
TARGET_POWER = 0.8
#: the screen's one-sided, uncorrected level: a cell with a metric under it is measured again
SCREEN_ALPHA = 0.25
#: the chance the screen must have of keeping a slowdown of the threshold for a cell it lets
#: through to be called unchanged
SCREEN_POWER = 0.9
#: the noise of a pair assumed before the calibration says otherwise (sd of its log ratio): two
#: processes of bench compare's assumed 3 % spread
ASSUMED_PAIR_NOISE = 0.03 * math.sqrt(2)
#: how many pairs that assumption weighs as against the calibration's own
CALIBRATION_PRIOR_WEIGHT = 2
#: how many pairs the calibration's noise weighs as against a cell's own pairs
CELL_PRIOR_WEIGHT = 4
#: the confidence of the Hodges-Lehmann interval reported with each change
CONFIDENCE = 0.95
#: the least slowdown of p99 that matters unless told otherwise (never below the other metrics'):
#: the tail of a short window moves far more between two processes of the same code than the rest
#: (the real-runtime gate on rec.yaml here, pairs of 0.5 s windows: p99 6.5-22 % against 1.3-9.6 %
#: for throughput and p50), so that at 5 % it needs 8-81 pairs a cell where throughput and p50 need
#: 3-16; at 10 % most cells need 4
DEFAULT_P99_THRESHOLD = 0.10

#: a threshold per metric, or one for all
Threshold: TypeAlias = float | Mapping[str, float]


def thresholds_of(threshold: Threshold) -> dict[str, float]:
    """The judged metrics' thresholds (fractions), in METRICS' order: one number for every metric, or
    a mapping naming the metrics judged (a metric it leaves out is reported, not judged)."""
    if isinstance(threshold, int | float):
        return dict.fromkeys(METRICS, float(threshold))
    unknown = [m for m in threshold if m not in METRICS]
    if unknown or not threshold:
        raise ValueError(f"thresholds name one or more of {', '.join(METRICS)}; got {', '.join(threshold) or 'none'}")
    return {m: float(threshold[m]) for m in METRICS if m in threshold}


def gate_thresholds(
    threshold: float, p99_threshold: float | None = None, metrics: Sequence[str] = tuple(METRICS)
) -> dict[str, float]:
    """The gate's thresholds of the ``metrics`` it judges: ``threshold`` for throughput and p50, and
    for p99 ``p99_threshold`` or by default the larger of ``threshold`` and ``DEFAULT_P99_THRESHOLD``."""
    every = dict.fromkeys(METRICS, float(threshold))
    every["p99"] = p99_threshold if p99_threshold is not None else max(threshold, DEFAULT_P99_THRESHOLD)
    return thresholds_of({m: every[m] for m in metrics})


def judged(threshold: Threshold) -> list[str]:
    """The metrics a threshold judges, in METRICS' order."""
    return list(thresholds_of(threshold))


def deltas_of(threshold: Threshold) -> dict[str, float]:
    """Every metric's threshold as a slowdown in log ratio (:func:`delta_of`)."""
    return {m: delta_of(t) for m, t in thresholds_of(threshold).items()}


# --------------------------------------------------------------------------------------------
# the evidence
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """One worker process as the gate uses it: its outcome, whether the noise guard trusted its
    window, its metric values (throughput in samples/s, p50 and p99 in ms) and its wall time (s)."""

    status: str
    trusted: bool
    values: Mapping[str, float]
    seconds: float
    #: its number in its side's run folder (the journal's ``repeat``)
    repeat: int = 0
    reason: str = ""

    @property
    def usable(self) -> bool:
        """Measured, on a quiet machine, with a throughput (an offline cell has no latency per query:
        its p50 and p99 are absent, 0 here, and not judged; see :func:`measured_deltas`)."""
        return self.status == "ok" and self.trusted and (self.values.get("throughput") or 0) > 0

    def has(self, metric: str) -> bool:
        return (self.values.get(metric) or 0) > 0

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "trusted": self.trusted, "values": dict(self.values),
                "seconds": self.seconds, "repeat": self.repeat, "reason": self.reason}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Process:
        return cls(str(data["status"]), bool(data["trusted"]), dict(data["values"]), float(data["seconds"]),
                   int(data.get("repeat", 0)), str(data.get("reason", "")))  # fmt: skip


@dataclass(frozen=True)
class Pair:
    """A baseline process and a candidate process of one cell, run back to back, ``first`` first.
    In the calibration both run the baseline's code (``candidate`` is the second baseline process)."""

    stage: str  # "calibration", "screen" or "confirm"
    round: int
    cell_id: str
    first: str  # "baseline" or "candidate"
    baseline: Process
    candidate: Process

    @property
    def usable(self) -> bool:
        """Both processes measured on a quiet machine: a disturbed one takes its pair out."""
        return self.baseline.usable and self.candidate.usable

    def has(self, metric: str) -> bool:
        """Both processes measured ``metric``."""
        return self.baseline.has(metric) and self.candidate.has(metric)

    def slowdown(self, metric: str) -> float:
        """The log ratio, positive when the candidate is worse."""
        ratio = math.log(self.candidate.values[metric] / self.baseline.values[metric])
        return -ratio if METRICS[metric][1] else ratio

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "round": self.round, "cell_id": self.cell_id, "first": self.first,
                "baseline": self.baseline.as_dict(), "candidate": self.candidate.as_dict(),
                "usable": self.usable}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pair:
        return cls(str(data["stage"]), int(data["round"]), str(data["cell_id"]), str(data["first"]),
                   Process.from_dict(data["baseline"]), Process.from_dict(data["candidate"]))  # fmt: skip


def slowdowns(pairs: Sequence[Pair], metric: str) -> np.ndarray:
    """The usable pairs' slowdowns of ``metric`` (of those that measured it)."""
    return np.array([p.slowdown(metric) for p in pairs if p.usable and p.has(metric)], dtype=np.float64)


def measured_deltas(pairs: Sequence[Pair], threshold: Threshold) -> dict[str, float]:
    """The judged metrics' deltas (:func:`deltas_of`) a cell's usable pairs measured: throughput
    only for an offline cell. Every judged metric while no pair is usable (nothing says otherwise)."""
    deltas = deltas_of(threshold)
    used = [p for p in pairs if p.usable]
    if not used:
        return deltas
    return {m: d for m, d in deltas.items() if any(p.has(m) for p in used)}


# --------------------------------------------------------------------------------------------
# the test, the estimate, the noise, the power
# --------------------------------------------------------------------------------------------


def worse_p(values: np.ndarray) -> float:
    """One-sided p-value of Wilcoxon's signed-rank test that the slowdowns are positive (the
    candidate worse); 1 when there is nothing to test (no pair, or every slowdown exactly 0).

    Exact up to 50 pairs, the normal approximation beyond (scipy's own switch). Exact even with ties
    or zeros (dropped): scipy's ``auto`` would run a permutation test there, a thousand times slower,
    where the exact distribution, with the statistic rounded towards no change, is slightly
    conservative instead."""
    from scipy.stats import wilcoxon

    if values.size == 0 or not np.any(values):
        return 1.0
    method = "exact" if values.size <= 50 else "asymptotic"
    return float(wilcoxon(values, alternative="greater", zero_method="wilcox", method=method).pvalue)


def _walsh(values: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(values.size)
    return np.sort((values[i] + values[j]) / 2)


def hodges_lehmann(values: np.ndarray) -> float:
    """The median of the Walsh averages: the shift the signed-rank test estimates."""
    return float(np.median(_walsh(values))) if values.size else 0.0


@functools.lru_cache(maxsize=64)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(T+ <= t) for t = 0 .. n(n+1)/2 under no shift: the generating function prod(1 + x^k) / 2^n."""
    dist = np.zeros(n * (n + 1) // 2 + 1)
    dist[0] = 1.0
    for k in range(1, n + 1):
        shifted = np.zeros_like(dist)
        shifted[k:] = dist[:-k]
        dist = (dist + shifted) / 2
    return np.cumsum(dist)


def hl_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The exact distribution-free interval of the shift (Walsh averages trimmed at the signed-rank
    test's critical value); None when too few pairs can give one at that confidence (under 6 at 95 %)."""
    n = values.size
    if n == 0 or n > 400:  # beyond 400 pairs (never in a night) the exact table is not worth its time
        return None
    trim = int(np.searchsorted(_signed_rank_cdf(n), (1 - confidence) / 2, side="right"))
    if trim == 0:
        return None
    walsh = _walsh(values)
    return float(walsh[trim - 1]), float(walsh[walsh.size - trim])


def noise(groups: Sequence[np.ndarray], prior: float, weight: float) -> float:
    """The sd of a pair's slowdown: every group's deviations from its own mean (a group: one stage's
    pairs of one cell, which may share a shift), pooled, shrunk towards ``prior`` with the weight of
    ``weight`` pairs."""
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups if g.size > 1)
    df = sum(g.size - 1 for g in groups if g.size > 1)
    return math.sqrt((ss + weight * prior**2) / (df + weight))


def calibration_noise(pairs: Sequence[Pair]) -> dict[str, float]:
    """Per metric, tonight's noise of a pair from the calibration's pairs of two baseline processes
    (no shift between them: the root mean square of their log ratios), shrunk towards
    ``ASSUMED_PAIR_NOISE`` with the weight of ``CALIBRATION_PRIOR_WEIGHT`` pairs."""
    out = {}
    for metric in METRICS:
        values = slowdowns(pairs, metric)
        w = CALIBRATION_PRIOR_WEIGHT
        out[metric] = math.sqrt((float((values**2).sum()) + w * ASSUMED_PAIR_NOISE**2) / (values.size + w))
    return out


@functools.lru_cache(maxsize=1024)
def _z(q: float) -> float:
    """The standard normal quantile (remembered: a gate asks for a few levels many times)."""
    from scipy.stats import norm

    return float(norm.ppf(q))


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def min_pairs(level: float) -> int:
    """The fewest pairs with which the exact one-sided test can reach ``p < level`` at all (all pairs
    worse gives p = 2^-n)."""
    return math.floor(math.log2(1 / level)) + 1


def power(n: int, sigma: float, delta: float, level: float) -> float:
    """The chance ``n`` pairs of noise ``sigma`` give ``p < level`` at a slowdown ``delta`` (both in
    log ratio): up to ``EXACT_PAIRS`` pairs, where the test is exact, the exact test's own power under
    normal noise (:func:`_exact_power`); beyond, the normal approximation of the module's docstring."""
    if n < min_pairs(level):
        return 0.0
    effect = delta / max(sigma, 1e-12)
    if n <= EXACT_PAIRS:
        return _exact_power(n, round(effect, 3), level)
    z = _z(1 - level)
    return _phi(math.sqrt(WILCOXON_ARE * max(n - z * z / 2, 0.0)) * effect - z)


#: pairs up to which :func:`worse_p` runs the exact test, and :func:`power` reads that test's power
EXACT_PAIRS = 50
#: draws of normal noise :func:`_exact_power` runs the test on: a standard error of 0.6 points at 80 %
POWER_DRAWS = 4000


@functools.lru_cache(maxsize=64)
def _standard_draws(n: int) -> np.ndarray:
    """``POWER_DRAWS`` x ``n`` standard normal draws, the same for every call with ``n`` (a seed per
    ``n``): a plan asks the power of many effects and must get the same answer every time."""
    return np.random.default_rng(n).standard_normal((POWER_DRAWS, n))


@functools.lru_cache(maxsize=16384)
def _exact_power(n: int, effect: float, level: float) -> float:
    """The power of the exact one-sided signed-rank test at ``level`` with ``n`` pairs whose slowdowns
    are normal with mean ``effect`` sds: the share of draws whose statistic T+ reaches the test's
    critical value. The normal approximation overstates it by up to 12 points near the fewest pairs
    that can reach the level, where the exact test's p-values are coarse."""
    cdf = _signed_rank_cdf(n)  # P(T+ <= t)
    tail = 1.0 - np.concatenate(([0.0], cdf[:-1]))  # P(T+ >= t): the p-value of observing t
    reach = np.flatnonzero(tail < level)
    if not reach.size:
        return 0.0
    x = _standard_draws(n) + effect
    ranks = np.abs(x).argsort(axis=1).argsort(axis=1) + 1
    statistic = (ranks * (x > 0)).sum(axis=1)
    return float((statistic >= reach[0]).mean())


def pairs_needed(sigma: float, delta: float, level: float, target: float) -> int:
    """The fewest pairs whose :func:`power` reaches ``target``."""
    z = _z(1 - level)
    formula = ((z + _z(target)) * sigma / delta) ** 2 / WILCOXON_ARE + z * z / 2
    n = max(min_pairs(level), math.ceil(formula) - 2)  # the exact power may reach it a step sooner
    while power(n, sigma, delta, level) < target:  # or a few steps later, near the fewest pairs
        n += 1
    return n


def needs_of(noise: Mapping[str, float], threshold: Threshold, level: float, target: float) -> list[int]:
    """The pairs each judged metric of a cell (its ``noise`` per metric) needs for ``target`` power at
    ``level``, fewest first."""
    deltas = deltas_of(threshold)
    return sorted(pairs_needed(sd, deltas[m], level, target) for m, sd in noise.items() if m in deltas)


def cell_noise(stages: Sequence[Sequence[Pair]], prior: Mapping[str, float], threshold: Threshold) -> dict[str, float]:
    """Each judged metric's noise of a cell over its stages' pairs (each stage around its own mean),
    shrunk towards ``prior`` with the weight of ``CELL_PRIOR_WEIGHT`` pairs."""
    measured = measured_deltas([p for pairs in stages for p in pairs], threshold)
    return {m: noise([slowdowns(pairs, m) for pairs in stages], prior[m], CELL_PRIOR_WEIGHT) for m in measured}


def delta_of(threshold: float) -> float:
    """The threshold as a slowdown in log ratio: the smaller of a latency's log(1 + t) and a
    throughput's -log(1 - t)."""
    return math.log1p(threshold)


# --------------------------------------------------------------------------------------------
# the two stages
# --------------------------------------------------------------------------------------------


@dataclass
class Screened:
    """A cell after the screen: its p-values, noise and power per metric, and whether it is a suspect."""

    cell_id: str
    pairs: int
    p: dict[str, float]
    noise: dict[str, float]
    power: dict[str, float]
    suspect: bool


def screen(
    cells: Mapping[str, Sequence[Pair]],
    prior: Mapping[str, float],
    threshold: Threshold,
    screen_alpha: float = SCREEN_ALPHA,
) -> dict[str, Screened]:
    """Stage 1: per cell, each metric's uncorrected one-sided p-value; a suspect when any is under
    ``screen_alpha``; the screen's power at the metric's threshold with the cell's own noise."""
    out = {}
    for cid, pairs in cells.items():
        p, sd, pw = {}, {}, {}
        n = sum(pair.usable for pair in pairs)
        deltas = measured_deltas(pairs, threshold)
        for metric in deltas:
            values = slowdowns(pairs, metric)
            p[metric] = worse_p(values)
            sd[metric] = noise([values], prior[metric], CELL_PRIOR_WEIGHT)
            pw[metric] = power(n, sd[metric], deltas[metric], screen_alpha)
        out[cid] = Screened(cid, n, p, sd, pw, suspect=any(v < screen_alpha for v in p.values()))
    return out


def plan_screen(
    noise: Mapping[str, Mapping[str, float]],
    have: Mapping[str, int],
    threshold: Threshold,
    seconds_per_pair: Mapping[str, float],
    seconds_left: float,
    share: float = 0.5,
    screen_alpha: float = SCREEN_ALPHA,
) -> dict[str, int]:
    """The screen's pairs per cell (all it should have, counting the ``have`` it has): with the
    cells' noise per metric (the calibration's before the first screen), what gives a metric
    ``SCREEN_POWER`` at the threshold, for as many metrics as ``share`` of the time left affords
    (the noisiest may need more than a night has). A screen that cannot reach its level at all
    (under :func:`min_pairs`) is wasted, so it may take more of the time for that. A first screen
    (no pairs yet) gets what the time affords where no metric can reach its power; a later one only
    what brings a metric to it. Cells needing nothing more are left out."""
    if not noise:
        return {}
    one_each = sum(seconds_per_pair[cid] for cid in noise)  # a round: one more pair of every cell
    extra = int(share * seconds_left // one_each)
    if not extra and not any(have[cid] for cid in noise) and seconds_left >= min(seconds_per_pair.values()):
        extra = 1  # a first round that does not fit whole still measures the cells that fit, in random order
    floor = min_pairs(screen_alpha)
    if min(have[cid] for cid in noise) + extra < floor:
        extra = max(extra, min(floor - min(have[cid] for cid in noise), int(seconds_left // one_each)))
    out = {}
    for cid, sd in noise.items():
        needs = needs_of(sd, threshold, screen_alpha, SCREEN_POWER)
        fitting = [n for n in needs if have[cid] < n <= have[cid] + extra]
        if fitting:
            out[cid] = max(fitting)
        elif not have[cid] and extra:
            out[cid] = extra
    return out


@dataclass
class Plan:
    """Stage 2's plan: pairs per suspect measured again, the level each test is planned at, and the
    suspects left out with (pairs their least noisy metric needs, pairs the time left affords)."""

    pairs: dict[str, int]
    level: float
    left_out: dict[str, tuple[int, int]] = field(default_factory=dict)


def plan_confirmation(
    suspects: Mapping[str, Mapping[str, float]],
    seconds_per_pair: Mapping[str, float],
    seconds_left: float,
    threshold: Threshold,
    alpha: float,
    target: float = TARGET_POWER,
    already: int = 0,
    extras: bool = True,
) -> Plan:
    """Stage 2: a metric of a suspect (its noise) needs the pairs that give it ``target`` power at
    ``alpha / (metrics x suspects measured again)``, Holm's strictest level (``already``: suspects of
    an earlier screen measured again, in the same Holm family). Every suspect first gets
    what its least noisy metric needs, the dearest suspects left out until that fits in
    ``seconds_left`` (leaving one out relaxes the level for the others, so the plan is made again);
    then, with ``extras``, while time is left, the suspect whose next metric costs the fewest extra
    seconds gets the pairs that metric needs (:func:`plan_extras`; the gate asks for those later,
    after the screen's cells short of power got theirs). A metric left short can still show a
    regression, never its absence."""
    metrics = len(judged(threshold))
    kept = list(suspects)
    while True:
        level = alpha / (metrics * max(already + len(kept), 1))
        needs = {cid: needs_of(suspects[cid], threshold, level, target) for cid in kept}
        pairs = {cid: needs[cid][0] for cid in kept}
        cost = sum(pairs[cid] * seconds_per_pair[cid] for cid in kept)
        if cost <= seconds_left or not kept:
            break
        kept.remove(max(kept, key=lambda cid: pairs[cid] * seconds_per_pair[cid]))
    if extras:
        pairs = _cheapest_steps(pairs, needs, seconds_per_pair, seconds_left - cost)
    left_out = {}
    for cid in suspects:
        if cid not in kept:
            wanted = needs_of(suspects[cid], threshold, level, target)[0]
            # what the time left after the suspects kept affords it: a suspect can be left out though it
            # would fit alone, the dearest of several that do not fit together
            left_out[cid] = (wanted, int(max(0.0, seconds_left - cost) // seconds_per_pair[cid]))
    return Plan(pairs, level, left_out)


def _cheapest_steps(
    pairs: Mapping[str, int], needs: Mapping[str, Sequence[int]], seconds_per_pair: Mapping[str, float], spare: float
) -> dict[str, int]:
    """More pairs for the suspects' noisier metrics: the cheapest next step first (a metric's need
    above the pairs planned, its cost in seconds), while one fits in ``spare`` seconds."""
    out = dict(pairs)
    while True:
        steps = [((n - out[cid]) * seconds_per_pair[cid], cid, n) for cid in out for n in needs[cid] if n > out[cid]]
        fitting = [step for step in steps if step[0] <= spare]
        if not fitting:
            return out
        extra, cid, n = min(fitting)
        out[cid], spare = n, spare - extra


def plan_extras(
    planned: Mapping[str, int],
    noise: Mapping[str, Mapping[str, float]],
    seconds_per_pair: Mapping[str, float],
    seconds_left: float,
    threshold: Threshold,
    level: float,
    target: float = TARGET_POWER,
) -> dict[str, int]:
    """The suspects measured again (``planned``: their pairs so far), their noisier metrics given
    what they need at ``level`` (the confirmation's), the cheapest first, within ``seconds_left``."""
    needs = {cid: needs_of(noise[cid], threshold, level, target) for cid in planned}
    return _cheapest_steps(planned, needs, seconds_per_pair, seconds_left)


def _levels(pairs: Sequence[Pair], metric: str) -> tuple[float | None, float | None]:
    """Each side's level of ``metric`` over the usable pairs: the geometric mean of its processes."""
    used = [p for p in pairs if p.usable and p.has(metric)]
    if not used:
        return None, None
    base = float(np.exp(np.mean([math.log(p.baseline.values[metric]) for p in used])))
    cand = float(np.exp(np.mean([math.log(p.candidate.values[metric]) for p in used])))
    return base, cand


def _change(metric: str, slowdown: float) -> float:
    """A slowdown (log ratio, positive worse) as the metric's relative change, candidate / baseline - 1."""
    return math.expm1(-slowdown if METRICS[metric][1] else slowdown)


def metric_change(metric: str, pairs: Sequence[Pair]) -> MetricChange:
    """The metric's change over ``pairs``: levels, the Hodges-Lehmann estimate with its interval,
    and the one-sided p-value of "worse"."""
    values = slowdowns(pairs, metric)
    base, cand = _levels(pairs, metric)
    if not values.size:
        return MetricChange(metric, base, cand, None, None, None, None)
    estimate = hodges_lehmann(values)
    interval = hl_interval(values)
    lo = hi = None
    if interval is not None:  # a slowdown's interval, as the metric's change (throughput turns it round)
        lo, hi = sorted((_change(metric, interval[0]), _change(metric, interval[1])))
    return MetricChange(metric, base, cand, _change(metric, estimate), lo, hi, worse_p(values), worse=estimate > 0)


def could_reach(values: np.ndarray, delta: float) -> bool:
    """Whether the slowdowns ``values`` (log ratios) leave a slowdown of ``delta`` (the threshold) in
    play: their interval's upper end reaches it (the estimate, with too few pairs for an interval).
    A significant slowdown the interval shows to be smaller than the threshold is no regression; one
    the threshold lies inside is, so a slowdown of exactly the threshold is caught with the power the
    pairs were planned for, not half the time as a rule on the estimate alone would."""
    if not values.size:
        return False
    interval = hl_interval(values)
    upper = interval[1] if interval is not None else hodges_lehmann(values)
    return upper >= delta


def _label(metric: str, noise_sd: float) -> str:
    return f"noise {noise_sd * 100:.1f} % on {metric}"


def _changes(
    cid: str, label: str, pairs: Sequence[Pair], judged: Container[str], verdict: str = "unchanged"
) -> CellComparison:
    """A cell's comparison with every metric's change over ``pairs``; those not ``judged`` marked so."""
    cell = CellComparison(cid, label, verdict=verdict)
    for metric in METRICS:
        cell.metrics[metric] = metric_change(metric, pairs)
        if metric not in judged:
            cell.metrics[metric].verdict = NOT_JUDGED
    return cell


def judge_screened(
    cid: str, label: str, pairs: Sequence[Pair], screened: Screened, threshold: Threshold
) -> CellComparison:
    """A cell the screen let through: ``unchanged`` when the screen had the power to keep a slowdown
    of the threshold for every metric, else ``inconclusive`` with the noise that prevented it."""
    thresholds = {m: t for m, t in thresholds_of(threshold).items() if m in screened.power}  # those it measured
    cell = _changes(cid, label, pairs, thresholds)
    for metric in thresholds:
        cell.metrics[metric].verdict = "unchanged" if screened.power[metric] >= SCREEN_POWER else "inconclusive"
    weak = [m for m in thresholds if cell.metrics[m].verdict == "inconclusive"]
    if not screened.pairs:
        cell.verdict, cell.note = "inconclusive", "no usable pair (a process failed or was measured on a busy machine)"
    elif weak:
        worst = max(weak, key=lambda m: screened.noise[m])
        cell.verdict = "inconclusive"
        cell.note = (
            f"{_label(worst, screened.noise[worst])}: the screen's {screened.pairs} pair(s) would keep a "
            f"{thresholds[worst] * 100:g} % slowdown with probability {screened.power[worst]:.0%}, under "
            f"{SCREEN_POWER:.0%}"
        )
    else:
        cell.verdict = "unchanged"
    return cell


def judge_left_out(
    cid: str, label: str, pairs: Sequence[Pair], screened: Screened, needed: int, affordable: int
) -> CellComparison:
    """A suspect not measured again: its noise needs more pairs than the time left affords."""
    cell = _changes(cid, label, pairs, screened.noise, verdict="inconclusive")
    least = min(screened.noise, key=lambda m: screened.noise[m])
    cell.note = (
        f"{_label(least, screened.noise[least])}, its least noisy metric: {needed} pairs needed for "
        f"{TARGET_POWER:.0%} power, the time left after the other suspects' afforded {affordable}; not measured again"
    )
    return cell


def judge_confirmed(
    cells: Mapping[str, tuple[str, Sequence[Pair], Sequence[Pair]]],
    prior: Mapping[str, float],
    threshold: Threshold,
    alpha: float,
    target: float = TARGET_POWER,
) -> dict[str, tuple[CellComparison, dict[str, float], dict[str, float]]]:
    """Stage 2: each suspect measured again, (label, its screen pairs, its fresh pairs); only the fresh
    pairs are tested, Holm over every metric of every such cell. Returns per cell its comparison, its
    noise per metric (both stages' pairs, each around its own mean, shrunk towards ``prior``) and the
    power its fresh pairs had at the threshold."""
    deltas = deltas_of(threshold)
    out: dict[str, tuple[CellComparison, dict[str, float], dict[str, float]]] = {}
    tested: list[MetricChange] = []
    own: dict[str, dict[str, float]] = {}  # each cell's judged metrics that it measured
    for cid, (label, before, again) in cells.items():
        own[cid] = measured_deltas([*before, *again], threshold)
        cell = _changes(cid, label, again, own[cid])
        tested += [cell.metrics[m] for m in own[cid] if cell.metrics[m].p_value is not None]
        out[cid] = (cell, {}, {})
    for change, adjusted in zip(tested, holm([c.p_value or 1.0 for c in tested]), strict=True):
        change.p_adjusted = adjusted
    family = max(len(out), 1)
    level = alpha / (len(deltas) * family)  # the power is judged at Holm's strictest level, as planned
    for cid, (_, before, again) in cells.items():
        cell, sd, pw = out[cid]
        n = sum(p.usable for p in again)
        sd.update(cell_noise([before, again], prior, threshold))
        for metric in own[cid]:
            pw[metric] = power(n, sd[metric], deltas[metric], level)
            change = cell.metrics[metric]
            significant = change.p_adjusted is not None and change.p_adjusted < alpha
            if significant and could_reach(slowdowns(again, metric), deltas[metric]):
                change.verdict = "regressed"
            else:
                change.verdict = "unchanged" if pw[metric] >= target else "inconclusive"
        verdicts = [m.verdict for m in cell.metrics.values()]
        if "regressed" in verdicts:
            cell.verdict = "regressed"
        elif not n:
            cell.verdict, cell.note = "inconclusive", "no usable pair measured again"
        elif "inconclusive" in verdicts:
            worst = max((m for m in own[cid] if cell.metrics[m].verdict == "inconclusive"), key=lambda m: sd[m])
            cell.verdict = "inconclusive"
            cell.note = (
                f"{_label(worst, sd[worst])}: {n} pair(s) measured again had {pw[worst]:.0%} power at the threshold, "
                f"under {target:.0%}"
            )
        else:
            cell.verdict = "unchanged"
    return out
