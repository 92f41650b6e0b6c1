"""Single-stream (closed loop) measurement: one query in flight, back to back.

The first call is timed on its own (the cold start), then an untimed warm-up runs for at least
``warmup_s`` and ``warmup_queries`` calls. In the window the loop times each call with
``perf_counter_ns`` and keeps the raw samples, garbage collection paused; statistics are taken after
the window closes.

The stop rule: the window lasts at least ``min_duration_s`` and ``min_queries`` calls (when a
scenario leaves ``min_queries`` null it is what the headline percentile needs for a two-sided
confidence interval and an early-stopping estimate, :func:`harness.analysis.stats.min_queries_for`:
662 for p99). After that it stops once the headline percentile's confidence interval is narrower
than ``ci_rel_width`` of its value, checked again after each further 10 % of the elapsed window (at
least 50 ms apart, so the checks stay few), and at ``max_duration_s`` at the latest. A window that
reaches ``max_duration_s`` before ``min_queries`` is marked invalid: its tail percentiles rest on
too few samples.
"""

from __future__ import annotations

import gc
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns

import numpy as np

from harness.analysis import stats
from harness.records import StopRule

_NS = 1_000_000_000


@dataclass
class Window:
    """What one measured window produced (latencies in ns, wall clock of the window in ns)."""

    cold_ns: int
    warmup_queries: int
    warmup_ns: int
    latencies_ns: np.ndarray
    wall_ns: int
    stop_reason: str
    min_queries_met: bool
    ci_checks: int


def _ci_converged(samples: array[int], rule: StopRule) -> bool:
    sorted_ns = np.sort(np.frombuffer(samples, dtype=np.int64))
    ci = stats.quantile_ci(sorted_ns, rule.headline_percentile, rule.confidence)
    assert rule.ci_rel_width is not None
    return stats.ci_relative_width(ci) <= rule.ci_rel_width


def run_window(call: Callable[[], object], rule: StopRule, on_phase: Callable[[str], None] | None = None) -> Window:
    """Warm up (first call timed apart as cold), then measure one window under ``rule``."""
    clock = perf_counter_ns
    t0 = clock()
    call()
    cold_ns = clock() - t0

    if on_phase:
        on_phase("warmup")
    warm_start = clock()
    warm_end_min = warm_start + int(rule.warmup_s * _NS)
    warm_n = 0
    now = warm_start
    while warm_n < rule.warmup_queries or now < warm_end_min:
        call()
        warm_n += 1
        now = clock()
    warmup_ns = now - warm_start

    samples = array("q")
    append = samples.append
    min_q = rule.min_queries
    gc.collect()  # before the window opens: what on_phase starts (NVML's energy, the noise guard) spans the window only
    if on_phase:
        on_phase("measure")
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside the window is the harness's noise, not the model's
    checks = 0
    checking_ns = 0  # time the stop rule's checks took inside the window: no call ran, so it is not the model's
    try:
        start = clock()
        min_end = start + int(rule.min_duration_s * _NS)
        max_end = start + int(rule.max_duration_s * _NS)
        next_check = min_end
        t_end = start
        reason = "max_duration"
        while True:
            t_start = clock()
            call()
            t_end = clock()
            append(t_end - t_start)
            if t_end < next_check:
                continue
            if t_end >= max_end:
                reason = "max_duration"
                break
            if len(samples) >= min_q:
                if rule.ci_rel_width is None:
                    # no early stop asked: run to the maximum duration
                    next_check = max_end
                    continue
                checks += 1
                if _ci_converged(samples, rule):  # after the window's last call: not inside it
                    reason = "ci_converged"
                    break
                checking_ns += clock() - t_end  # inside it: the next call starts after the check
            # check again after another 10% of the elapsed window (at least 50 ms): O(log) checks; the
            # window still ends at max_duration_s at the latest
            next_check = min(t_end + max((t_end - start) // 10, _NS // 20), max_end)
    finally:
        if gc_was_enabled:
            gc.enable()
    latencies = np.frombuffer(samples, dtype=np.int64).copy()
    return Window(
        cold_ns=cold_ns,
        warmup_queries=warm_n,
        warmup_ns=warmup_ns,
        latencies_ns=latencies,
        wall_ns=t_end - start - checking_ns,
        stop_reason=reason,
        min_queries_met=len(latencies) >= min_q,
        ci_checks=checks,
    )


__all__ = ["StopRule", "Window", "run_window"]
