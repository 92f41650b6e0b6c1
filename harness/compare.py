"""Comparing runs: a baseline against a candidate, and a scenario's history of runs.

Cells are matched by configuration identity (the cell id). Per matched cell and metric
(throughput, p50, p99) the relative change of the level over the run's processes (their mean, a
disturbed process left out) comes with a confidence interval whose variance adds two parts: a
bootstrap over the stored per-query latencies within each process, and the spread between
independent processes: the cell's own where the runs measured repeats (:func:`cell_spread`),
shrunk towards the spread pooled robustly over every cell of both runs, itself shrunk towards an
assumed noise floor (``NOISE_FLOOR``), which stands alone for runs of one process per cell.
A cell is ``regressed`` (or ``improved``) when the change is significant after a Holm correction
over every metric of every cell compared and its interval reaches ``threshold`` (a change that large is
not ruled out); ``unchanged`` when it is smaller than the threshold (its interval inside it, or
not significant with an estimate under it); ``inconclusive`` when the estimate is at least the
threshold but not significant.

The nightly gate is sequential (:func:`suspects`, :func:`apply_confirmation`): the sweep's
comparison only screens, with a loose one-sided test per cell; the suspects are measured again,
baseline code and candidate code in alternating rounds on this machine, and only that second,
independent measurement, Holm-corrected over the suspects, decides. Nothing here imports a runtime.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import StoreError, UsageError
from harness.store import MANIFEST, RunDir

#: metric -> (record field, True when higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "throughput": ("throughput_sps", True),
    "p50": ("p50_ms", False),
    "p99": ("p99_ms", False),
}
#: environment fields that must match for a comparison to mean something
ENV_KEYS = ("cpu.model", "cpu.usable_cpus", "memory_total_mb", "gpus", "python")
RUNTIME_PACKAGES = ("torch", "onnxruntime", "openvino", "numpy", "tensorrt")
BOOTSTRAP = 400

#: the screen's one-sided p-value below which a cell that looks slower is measured again
SCREEN_ALPHA = 0.25
#: processes per side when suspects are measured again
CONFIRM_REPEATS = 20

#: between-process spread assumed when neither run has repeats to measure it (sd of the log):
#: 3 % is a typical cell here (dlrm-small on onnxruntime and openvino measured 1-12 %)
NOISE_FLOOR = 0.03
#: how many measured deviations the assumed spread weighs as, when both are pooled
PRIOR_WEIGHT = 10


@dataclass
class MetricChange:
    metric: str
    baseline: float | None
    candidate: float | None
    change: float | None  # candidate / baseline - 1
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None = None
    worse: bool = False  # the change is in the bad direction
    verdict: str = "inconclusive"


@dataclass
class CellComparison:
    cell_id: str
    label: str
    metrics: dict[str, MetricChange] = field(default_factory=dict)
    verdict: str = "unchanged"
    #: the sweep's verdict when the cell was measured again (``--confirm``); its numbers are then
    #: the re-measurement's
    screen_verdict: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"cell_id": self.cell_id, "label": self.label, "verdict": self.verdict,
                "screen_verdict": self.screen_verdict,
                "metrics": {k: asdict(v) for k, v in self.metrics.items()}}  # fmt: skip


@dataclass
class NotMeasured:
    """A cell of both runs that one of them, or both, did not measure: there is nothing to compare,
    only why. The candidate losing a cell the baseline measured is a regression."""

    cell_id: str
    label: str
    missing_in: str  # "baseline", "candidate" or "both"
    baseline_status: str  # "ok" where the run measured it
    baseline_reason: str
    candidate_status: str
    candidate_reason: str
    #: "regressed" when the baseline measured the cell and the candidate did not, else "not compared"
    verdict: str = "not compared"
    #: with ``--confirm``, for a cell measured again: what the sweep's comparison had said
    screen_verdict: str | None = None

    def why(self) -> str:
        """One line: the status of each run that did not measure the cell, and its reason."""

        def side(status: str, reason: str, where: str) -> str:
            reason = " ".join(reason.split())  # one line: a worker's output tail has many
            return f"{status} {where}" + (f" ({reason[:160]})" if reason else "")

        base, cand = (self.baseline_status, self.baseline_reason), (self.candidate_status, self.candidate_reason)
        if self.missing_in == "candidate":
            return side(*cand, "in the candidate") + "; the baseline measured it"
        if self.missing_in == "baseline":
            return side(*base, "in the baseline") + "; the candidate measured it"
        if base == cand:
            return side(*base, "in both")
        return side(*base, "in the baseline") + "; " + side(*cand, "in the candidate")


def _status(records: list[dict[str, Any]]) -> tuple[str, str]:
    """A run's status of one cell and why: "ok" when any of its processes measured."""
    if any(r.get("status") == "ok" for r in records):
        return "ok", ""
    if not records:
        return "not run", "no record of the cell"
    statuses = list(dict.fromkeys(str(r.get("status")) for r in records))  # several processes: each status once
    reason = next((str(r["reason"]) for r in records if r.get("reason")), "")
    return ", ".join(statuses), reason[:500]


def not_measured(
    cell_id: str, label: str, base: list[dict[str, Any]], cand: list[dict[str, Any]]
) -> NotMeasured | None:
    """Why a cell of both runs cannot be compared (from each run's records of it), or None when both
    measured it."""
    (b_status, b_reason), (c_status, c_reason) = _status(base), _status(cand)
    if b_status == "ok" and c_status == "ok":
        return None
    missing_in = "both" if b_status != "ok" and c_status != "ok" else ("baseline" if c_status == "ok" else "candidate")
    verdict = "regressed" if missing_in == "candidate" else "not compared"
    return NotMeasured(cell_id, label, missing_in, b_status, b_reason, c_status, c_reason, verdict)


@dataclass
class Comparison:
    baseline: str
    candidate: str
    threshold: float
    alpha: float
    cells: list[CellComparison]
    only_baseline: list[str]
    only_candidate: list[str]
    env_differences: list[str]
    #: how the suspects were measured again (None: they were not)
    confirmation: dict[str, Any] | None = None
    #: cells of both runs that one or both did not measure (``cells`` holds those measured in both)
    not_measured: list[NotMeasured] = field(default_factory=list)
    #: which run is a ``--quick`` run: {"baseline": bool, "candidate": bool}
    quick: dict[str, bool] = field(default_factory=dict)

    @property
    def regressed(self) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict == "regressed"]

    @property
    def lost(self) -> list[NotMeasured]:
        """Cells the baseline measured and the candidate did not."""
        return [n for n in self.not_measured if n.verdict == "regressed"]

    @property
    def has_regression(self) -> bool:
        return bool(self.regressed or self.lost)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cell in self.cells:
            out[cell.verdict] = out.get(cell.verdict, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline, "candidate": self.candidate, "threshold": self.threshold,
            "alpha": self.alpha, "counts": self.counts(), "cells": [c.as_dict() for c in self.cells],
            "only_baseline": self.only_baseline, "only_candidate": self.only_candidate,
            "env_differences": self.env_differences, "confirmation": self.confirmation,
            "not_measured": [asdict(n) for n in self.not_measured], "quick": self.quick,
        }  # fmt: skip


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


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


def _normal(log_ratio: float, variance: float, confidence: float) -> tuple[float, float, float, float]:
    se = math.sqrt(max(variance, 0.0))
    zc = _z(1 - (1 - confidence) / 2)
    z = abs(log_ratio) / se if se > 0 else (math.inf if log_ratio else 0.0)
    p = math.erfc(z / math.sqrt(2))
    return math.expm1(log_ratio), math.expm1(log_ratio - zc * se), math.expm1(log_ratio + zc * se), p


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def pooled_run_sigma(groups: list[list[float]], prior: float | None = None) -> float | None:
    """Between-process spread (sd of the log) pooled over groups of one cell's per-process values,
    robustly: 1.4826 x the median absolute deviation from each group's median (the median element
    of an odd group left out), so that one process slowed by a neighbour does not widen every
    interval of the sweep. With a ``prior`` spread, the estimate is shrunk towards it with the
    weight of ``PRIOR_WEIGHT`` deviations (the prior alone when nothing was measured): a few
    processes that happened to agree do not make an interval narrow."""
    deviations: list[float] = []
    for values in groups:
        logs = np.sort(np.log([v for v in values if v and v > 0]))
        if logs.size < 2:
            continue
        dev = np.abs(logs - np.median(logs))
        if logs.size % 2:
            dev = np.delete(dev, logs.size // 2)
        deviations.extend(dev.tolist())
    estimate = 1.4826 * float(np.median(deviations)) if deviations else None
    if prior is None or estimate is None:
        return estimate if estimate is not None else prior
    n = len(deviations)
    return math.sqrt((n * estimate**2 + PRIOR_WEIGHT * prior**2) / (n + PRIOR_WEIGHT))


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


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def _get(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None  # type: ignore[assignment]
    return data


def env_differences(base: dict[str, Any], cand: dict[str, Any]) -> list[str]:
    """The machine and runtime fields that differ between two runs' environments."""
    out = []
    for key in ENV_KEYS:
        a, b = _get(base, key), _get(cand, key)
        if key == "gpus":
            a = [g.get("name") for g in a or []]
            b = [g.get("name") for g in b or []]
        if a != b:
            out.append(f"{key}: {a!r} vs {b!r}")
    for pkg in RUNTIME_PACKAGES:
        a, b = _get(base, f"packages.{pkg}"), _get(cand, f"packages.{pkg}")
        if a != b:
            out.append(f"packages.{pkg}: {a!r} vs {b!r}")
    return out


def _latencies(run: RunDir, records: list[dict[str, Any]]) -> list[np.ndarray]:
    groups = []
    for rec in records:
        path = rec.get("latency_file")
        if path and (run.path / path).is_file():
            lat = np.load(run.path / path, allow_pickle=False).astype(np.float64) / 1e6
            if lat.size:
                groups.append(lat)
    return groups


@dataclass
class Side:
    """One run's measurement of a cell: per process, its latencies and its metric values."""

    latencies: list[np.ndarray]
    values: dict[str, list[float]]


def ok(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that measured (a failed or skipped process has no numbers to compare)."""
    return [r for r in records if r.get("status") == "ok"]


def side_of(run: RunDir, records: list[dict[str, Any]]) -> Side | None:
    if not records:
        return None
    values = {m: [float(r[key]) for r in records if r.get(key)] for m, (key, _) in METRICS.items()}
    return Side(_latencies(run, records), values)


def judge_cells(
    cells: list[tuple[str, str, int, Side | None, Side | None]],
    threshold: float,
    alpha: float,
    noise_floor: float = NOISE_FLOOR,
) -> list[CellComparison]:
    """Compare each (id, label, batch, baseline side, candidate side) and decide, Holm over every
    metric of every cell."""
    sigma = {
        metric: pooled_run_sigma([side.values[metric] for *_, b, c in cells for side in (b, c) if side], noise_floor)
        for metric in METRICS
    }
    results = []
    for cid, label, batch, base, cand in cells:
        cell = CellComparison(cid, label)
        results.append(cell)
        if base is None or cand is None:
            cell.verdict = "regressed" if base is not None else "inconclusive"  # measured before, not now
            continue
        for metric, (_, higher_better) in METRICS.items():
            b_vals, c_vals = base.values[metric], cand.values[metric]
            if not b_vals or not c_vals:
                continue
            pooled = sigma[metric] or noise_floor
            (bv, nb), (cv, nc) = _level(b_vals, pooled), _level(c_vals, pooled)
            variance = cell_spread(b_vals, c_vals, pooled) ** 2 * (1 / nb + 1 / nc)
            if base.latencies and cand.latencies:  # plus the within-process spread, by bootstrap
                seed = zlib.crc32(f"{cid}:{metric}".encode())  # the same numbers every time it is run
                variance += bootstrap_log_variance(base.latencies, cand.latencies, metric, batch, seed, processes=False)
            change, lo, hi, p = _normal(math.log(cv / bv), variance, 0.95)
            worse = change < 0 if higher_better else change > 0
            cell.metrics[metric] = MetricChange(metric, bv, cv, change, lo, hi, p, worse=worse)
    _decide(results, threshold, alpha)
    return results


def records_by_cell(run: RunDir) -> dict[str, list[dict[str, Any]]]:
    cells: dict[str, list[dict[str, Any]]] = {}
    for rec in run.records():
        cells.setdefault(rec["cell_id"], []).append(rec)
    return cells


def compare_runs(
    baseline: Path,
    candidate: Path,
    threshold: float = 0.05,
    alpha: float = 0.01,
    allow_env_mismatch: bool = False,
    noise_floor: float = NOISE_FLOOR,
) -> Comparison:
    """Compare two run folders; raises UsageError for runs that cannot be compared."""
    if not 0 < threshold < 1:  # a fraction here; the user gave percent (--threshold 5 is 0.05)
        raise UsageError(f"the threshold must be above 0 % and below 100 % (got {threshold * 100:g} %)")
    base_run, cand_run = RunDir.open(baseline), RunDir.open(candidate)
    bm, cm = base_run.manifest(), cand_run.manifest()
    if bm["scenario"]["name"] != cm["scenario"]["name"]:
        raise UsageError(
            f"{baseline} measured scenario '{bm['scenario']['name']}' and {candidate} '{cm['scenario']['name']}': "
            "compare runs of one scenario"
        )
    diffs = env_differences(bm.get("environment", {}), cm.get("environment", {}))
    if diffs and not allow_env_mismatch:
        raise UsageError(
            "the runs come from different machines or runtime versions, so their numbers differ for reasons "
            "other than the code: " + "; ".join(diffs) + " (pass --allow-env-mismatch to compare anyway)"
        )
    base_cells, cand_cells = records_by_cell(base_run), records_by_cell(cand_run)
    common = [cid for cid in cand_cells if cid in base_cells]
    if not common:
        raise UsageError(f"{baseline} and {candidate} have no cell in common: nothing to compare")
    sides: list[tuple[str, str, int, Side | None, Side | None]] = []
    missing: list[NotMeasured] = []
    for cid in common:
        label = cand_cells[cid][0]["label"]
        gone = not_measured(cid, label, base_cells[cid], cand_cells[cid])
        if gone is not None:  # nothing to compare: listed apart, with why
            missing.append(gone)
            continue
        b_recs, c_recs = ok(base_cells[cid]), ok(cand_cells[cid])
        batch = int(c_recs[0]["config"]["batch_size"])
        sides.append((cid, label, batch, side_of(base_run, b_recs), side_of(cand_run, c_recs)))
    results = judge_cells(sides, threshold, alpha, noise_floor)
    return Comparison(
        str(baseline), str(candidate), threshold, alpha, results,
        sorted(set(base_cells) - set(cand_cells)), sorted(set(cand_cells) - set(base_cells)), diffs,
        not_measured=missing,
        quick={"baseline": bool(bm["settings"].get("quick")), "candidate": bool(cm["settings"].get("quick"))},
    )  # fmt: skip


def _decide(cells: list[CellComparison], threshold: float, alpha: float) -> None:
    # one family: every metric of every cell, so that alpha bounds the chance of any false verdict
    changes = [m for c in cells for m in c.metrics.values() if m.p_value is not None]
    for change, adjusted in zip(changes, holm([c.p_value or 1.0 for c in changes]), strict=True):
        change.p_adjusted = adjusted
    for cell in cells:
        if cell.verdict == "regressed":  # measured before, not any more
            continue
        verdicts = []
        for change in cell.metrics.values():
            change.verdict = _verdict(change, threshold, alpha)
            verdicts.append(change.verdict)
        for verdict in ("regressed", "improved", "inconclusive"):
            if verdict in verdicts:
                cell.verdict = verdict
                break
        else:
            cell.verdict = "unchanged" if verdicts else "inconclusive"


def _verdict(change: MetricChange, threshold: float, alpha: float) -> str:
    if change.change is None:
        return "inconclusive"
    significant = change.p_adjusted is not None and change.p_adjusted < alpha
    # the end of the interval in the direction of the change: how large the change may be
    far = change.ci_high if change.change > 0 else change.ci_low
    if significant and far is not None and abs(far) >= threshold:
        return "regressed" if change.worse else "improved"
    if significant or abs(change.change) < threshold:  # a real change smaller than the threshold, or noise
        return "unchanged"
    return "inconclusive"  # as large as the threshold, but within the noise


def suspects(result: Comparison, screen_alpha: float = SCREEN_ALPHA) -> list[str]:
    """The cells to measure again before a regression is declared: those regressed, and those with
    any metric worse at a one-sided p-value (unadjusted) under ``screen_alpha``. The screen is loose
    on purpose: a cell it lets through is never flagged, a cell it keeps costs a re-measurement."""
    out = []
    for cell in result.cells:
        looks_worse = any(
            m.worse and m.p_value is not None and m.p_value / 2 < screen_alpha for m in cell.metrics.values()
        )
        if cell.verdict == "regressed" or looks_worse:
            out.append(cell.cell_id)
    # a cell the candidate lost may have failed by chance (a timeout on a busy machine): measured again too
    return out + [n.cell_id for n in result.lost]


def apply_confirmation(
    result: Comparison, confirmed: list[CellComparison], how: dict[str, Any], missing: list[NotMeasured] | None = None
) -> None:
    """Replace the suspects' verdicts and numbers with those of their re-measurement (which was
    judged on its own, Holm over the suspects): the sweep only chose what to measure again.
    ``missing``: the suspects one side did not measure again; they join ``not_measured``."""
    missing = missing or []
    said = {c.cell_id: (c.label, c.verdict) for c in result.cells}
    said |= {n.cell_id: (n.label, f"{n.verdict} ({n.candidate_status} in the candidate)") for n in result.lost}
    for again in [*confirmed, *missing]:
        again.label, again.screen_verdict = said[again.cell_id]
    by_id = {c.cell_id: c for c in confirmed}
    gone = {n.cell_id for n in missing}
    cells = [by_id.pop(c.cell_id, c) for c in result.cells if c.cell_id not in gone]
    result.cells = cells + list(by_id.values())  # the rest were not measured in the sweep
    again_ids = {c.cell_id for c in confirmed} | gone
    result.not_measured = [n for n in result.not_measured if n.cell_id not in again_ids] + missing
    held = sum(c.verdict == "regressed" for c in confirmed) + sum(n.verdict == "regressed" for n in missing)
    result.confirmation = {**how, "suspects": len(again_ids), "held": held}


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def threshold_text(threshold: float) -> str:
    """The threshold (a fraction) in the unit users give it: percent, never rounded to 0 %."""
    return f"{threshold * 100:g} %"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:+.1f}%"


def _ci(change: MetricChange) -> str:
    return f"[{_pct(change.ci_low)}, {_pct(change.ci_high)}]" if change.ci_low is not None else "(no CI)"


def _again(cell: CellComparison | NotMeasured) -> str:
    return f" (measured again; the sweep said {cell.screen_verdict})" if cell.screen_verdict else ""


def quick_note(result: Comparison) -> str | None:
    """A warning when one run is a ``--quick`` run and the other is not: their windows differ so
    much that a change between them says little about the code."""
    quick = [side for side in ("baseline", "candidate") if result.quick.get(side)]
    if len(quick) != 1:
        return None
    from harness.runner import QUICK_MEASUREMENT

    side = quick[0]
    other = "candidate" if side == "baseline" else "baseline"
    path = result.baseline if side == "baseline" else result.candidate
    windows = f"{QUICK_MEASUREMENT['min_duration_s']:g}-{QUICK_MEASUREMENT['max_duration_s']:g} s"
    return (
        f"the {side} ({path}) is a --quick run: its numbers come from {windows} windows, the {other}'s from full "
        "ones, so a change between them may be the windows', not the code's"
    )


def confirmation_line(how: dict[str, Any]) -> str:
    if not how.get("suspects"):
        return "confirmed: no cell looked slower, none was measured again"
    return (
        f"confirmed: {how['suspects']} cell(s) that looked slower measured again, {how['repeats']} processes per "
        f"side, {how['baseline']}; {how['held']} regression(s) held"
    )


def render_text(result: Comparison) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in sorted(result.counts().items()))
    lines = [f"baseline  {result.baseline}", f"candidate {result.candidate}",
             f"{len(result.cells)} cells compared: {counts} (threshold {threshold_text(result.threshold)}, "
             f"alpha {result.alpha:g}, Holm-corrected)"]  # fmt: skip
    if result.env_differences:
        lines.append("environment differs: " + "; ".join(result.env_differences))
    if quick_note(result):
        lines.append(f"warning: {quick_note(result)}")
    if result.confirmation is not None:
        lines.append(confirmation_line(result.confirmation))
    for cell in sorted(
        result.cells, key=lambda c: ("regressed", "improved", "inconclusive", "unchanged").index(c.verdict)
    ):
        parts = [f"{m} {_pct(c.change)} {_ci(c)}" for m, c in cell.metrics.items()]
        lines.append(f"  {cell.verdict:12s} {cell.label}{_again(cell)}: " + "; ".join(parts))
    if result.not_measured:
        lines.append(f"{len(result.not_measured)} cell(s) not measured in both runs, not compared:")
        for gone in _not_measured_in_order(result):
            mark = "regressed" if gone.verdict == "regressed" else "-"
            lines.append(f"  {mark:12s} {gone.label}{_again(gone)}: {gone.why()}")
    for name, ids in (("only in the baseline", result.only_baseline), ("only in the candidate", result.only_candidate)):
        if ids:
            lines.append(f"{len(ids)} cell(s) {name}: {', '.join(ids)}")
    return "\n".join(lines) + "\n"


def _not_measured_in_order(result: Comparison) -> list[NotMeasured]:
    """The cells not compared, those the candidate lost (regressions) first."""
    return sorted(result.not_measured, key=lambda n: n.verdict != "regressed")


def _side_text(status: str, reason: str) -> str:
    """One run's outcome of a cell for a table: "ok", or the status and its reason on one line."""
    reason = " ".join(reason.split())
    return status if status == "ok" or not reason else f"{status}: {reason[:200]}"


def render_markdown(result: Comparison) -> str:
    from harness.verdicts import md_cell, md_line

    counts = ", ".join(f"{n} {v}" for v, n in sorted(result.counts().items()))
    head = "**regression**" if result.has_regression else "no regression"
    lines = [f"## bench compare: {head}", "", f"{len(result.cells)} cells: {counts}; threshold "
             f"{threshold_text(result.threshold)}, Holm-corrected alpha {result.alpha:g}.", "",
             "| verdict | cell | throughput | p50 | p99 |", "|---|---|---|---|---|"]  # fmt: skip
    if result.confirmation is not None:
        lines[3:3] = [confirmation_line(result.confirmation) + ".", ""]
    if quick_note(result):
        lines[3:3] = [f"Warning: {md_line(quick_note(result))}.", ""]
    for cell in result.cells:
        cols = [f"{_pct(c.change)} {_ci(c)}" if (c := cell.metrics.get(m)) else "" for m in METRICS]
        lines.append(f"| {cell.verdict} | {md_cell(cell.label + _again(cell))} | " + " | ".join(cols) + " |")
    if result.not_measured:
        lines += ["", f"Not measured in both runs, so not compared: {len(result.not_measured)}.", "",
                  "| verdict | cell | baseline | candidate |", "|---|---|---|---|"]  # fmt: skip
        for gone in _not_measured_in_order(result):
            lines.append(
                f"| {gone.verdict} | {md_cell(gone.label + _again(gone))} | "
                f"{md_cell(_side_text(gone.baseline_status, gone.baseline_reason))} | "
                f"{md_cell(_side_text(gone.candidate_status, gone.candidate_reason))} |"
            )
    if result.only_baseline or result.only_candidate:
        lines += ["", f"Only in the baseline: {len(result.only_baseline)}; only in the candidate: "
                  f"{len(result.only_candidate)}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def render_html(result: Comparison) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True)
    template = env.from_string(
        '<section class="compare"><h2>Comparison</h2><p>{{ r.baseline }} &rarr; {{ r.candidate }}: '
        "{% for v, n in counts %}{{ n }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</p>"
        "{% if confirmed %}<p>{{ confirmed }}</p>{% endif %}{% if quick %}<p>Warning: {{ quick }}.</p>{% endif %}"
        "<table><thead><tr><th>verdict</th><th>cell</th>{% for m in metrics %}<th>{{ m }}</th>{% endfor %}"
        "</tr></thead><tbody>{% for c in r.cells %}<tr><td>{{ c.verdict }}</td><td>{{ c.label }}{{ again(c) }}</td>"
        "{% for m in metrics %}<td>{% if m in c.metrics %}{{ pct(c.metrics[m].change) }} {{ ci(c.metrics[m]) }}"
        "{% endif %}</td>{% endfor %}</tr>{% endfor %}</tbody></table>"
        "{% if gone %}<h3>Not measured in both runs</h3><p>Nothing to compare; a cell the candidate lost counts as "
        "a regression.</p><table><thead><tr><th>verdict</th><th>cell</th><th>baseline</th><th>candidate</th></tr>"
        "</thead><tbody>{% for n in gone %}<tr><td>{{ n.verdict }}</td><td>{{ n.label }}{{ again(n) }}</td>"
        "<td>{{ side(n.baseline_status, n.baseline_reason) }}</td>"
        "<td>{{ side(n.candidate_status, n.candidate_reason) }}</td></tr>{% endfor %}</tbody></table>{% endif %}"
        "</section>"
    )
    confirmed = confirmation_line(result.confirmation) if result.confirmation is not None else ""
    return template.render(r=result, counts=sorted(result.counts().items()), metrics=list(METRICS), pct=_pct, ci=_ci,
                           again=_again, confirmed=confirmed, gone=_not_measured_in_order(result),
                           side=_side_text, quick=quick_note(result))  # fmt: skip


def comparison_from_dict(data: dict[str, Any]) -> Comparison:
    """A comparison as ``bench compare --format json`` wrote it (to draw it in a report later)."""
    cells = []
    for c in data["cells"]:
        cell = CellComparison(c["cell_id"], c["label"], verdict=c["verdict"], screen_verdict=c.get("screen_verdict"))
        cell.metrics = {k: MetricChange(**v) for k, v in c["metrics"].items()}
        cells.append(cell)
    return Comparison(
        data["baseline"], data["candidate"], data["threshold"], data["alpha"], cells, data["only_baseline"],
        data["only_candidate"], data["env_differences"], data.get("confirmation"),
        [NotMeasured(**n) for n in data.get("not_measured", [])],  # absent from files written before it existed
        data.get("quick", {}),
    )  # fmt: skip


def render(result: Comparison, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result.as_dict(), indent=2, default=str) + "\n"
    if fmt == "md":
        return render_markdown(result)
    if fmt == "html":
        return render_html(result)
    return render_text(result)


# --------------------------------------------------------------------------------------------
# history and change points
# --------------------------------------------------------------------------------------------


def change_points(values: list[float], min_size: int = 3, threshold: float = 0.05, z: float = 4.0) -> list[int]:
    """Indices where a series' level shifts: binary segmentation on log values. A split is kept when
    the two sides' means differ by at least ``threshold`` (relative) and by ``z`` standard errors
    (Welch); each side is then searched again. Returns the first index of each new level."""
    x = np.log(np.asarray(values, dtype=np.float64))
    found: list[int] = []

    def search(lo: int, hi: int) -> None:
        best, best_t = None, 0.0
        for k in range(lo + min_size, hi - min_size + 1):
            a, b = x[lo:k], x[k:hi]
            se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) if a.size > 1 and b.size > 1 else 0.0
            diff = abs(b.mean() - a.mean())
            t = diff / se if se > 0 else (math.inf if diff > 0 else 0.0)
            if math.expm1(diff) >= threshold and t > best_t:
                best, best_t = k, t
        if best is not None and best_t >= z:
            found.append(best)
            search(lo, best)
            search(best, hi)

    search(0, x.size)
    return sorted(found)


@dataclass
class History:
    """The rows of a history and the run folders left out of it, each with why."""

    rows: list[dict[str, Any]]
    skipped: list[str]


def history(root: Path, scenario: str | None = None) -> History:
    """Every run under ``root`` (of ``scenario``), oldest first: its date, git commit and, per cell,
    throughput and p99 (the mean over repeats). A damaged run folder costs only its own place in
    the history: it is left out and named in ``skipped``, never an error for the others."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (path / MANIFEST).is_file():
            continue  # not a run folder (a cache, a user's own folder)
        try:
            run = RunDir.open(path)
            manifest = run.manifest()
            if scenario and manifest["scenario"]["name"] != scenario:
                continue
            records = list(run.records())
        except StoreError as exc:
            skipped.append(f"{path.name} left out: {str(exc).splitlines()[0]}")
            continue
        git = (manifest.get("environment") or {}).get("git") or {}
        for rec in records:
            if rec.get("status") != "ok":
                continue
            rows.append({
                "run": path.name, "created_at": manifest.get("created_at"), "commit": (git.get("commit") or "")[:12],
                "scenario": manifest["scenario"]["name"], "cell_id": rec["cell_id"], "label": rec["label"],
                "throughput_sps": rec.get("throughput_sps"), "p99_ms": rec.get("p99_ms"),
                "quick": bool((manifest.get("settings") or {}).get("quick")),
            })  # fmt: skip
    rows.sort(key=lambda r: (r["created_at"] or 0, r["run"]))
    return History(rows, skipped)


def history_changes(rows: list[dict[str, Any]], threshold: float = 0.05) -> list[dict[str, Any]]:
    """Change points per cell and metric over a history."""
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault(row["cell_id"], []).append(row)
    out = []
    for series in by_cell.values():
        for metric in ("throughput_sps", "p99_ms"):
            values = [r[metric] for r in series if r.get(metric)]
            if len(values) < 6:
                continue
            for k in change_points(values, threshold=threshold):
                before, after = float(np.mean(values[:k])), float(np.mean(values[k:]))
                out.append({"label": series[0]["label"], "metric": metric, "at_run": series[k]["run"],
                            "commit": series[k]["commit"], "before": before, "after": after,
                            "change": after / before - 1})  # fmt: skip
    return out
