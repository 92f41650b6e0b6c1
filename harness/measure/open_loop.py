"""bench's own open-loop generator for server cells served inline: Poisson arrivals, each issued
on time by sleeping to just short of it and spinning the rest.

LoadGen's server scheduler sleeps until each scheduled arrival (``sleep_until``). On a virtual
machine a timed sleep wakes tens of microseconds late (26-60 us on average here, 50-100 us at
p99, with 1 ns timer slack): a query that finds the server idle is issued that late, the latency
counted from its schedule carries it, and so do the queries that queue behind it. For a 0.2 ms
call this put the M/D/1 mean 14-16 % over theory, the harness's cost and not the model's.

This generator draws the same kind of schedule (exponential gaps at the target rate, seeded, at
least ``min_query_count`` queries over at least ``min_duration_s``), sleeps until ``margin_ns``
before each arrival and spins on the clock for the rest, then runs the call on the same thread
(one session at batch 1 with no batching wait: what :func:`harness.measure.loadgen.serve_inline`
picks). A query that arrives while a call runs is issued when that call ends, as in the queue of
one busy server, and its latency from the schedule includes that wait: queueing is never hidden.

What it does not measure: the wake-up of a server thread that a deployment would pay when a
request reaches an idle server (a socket's, not a timer's); ``generator: loadgen`` keeps
LoadGen's scheduler, lateness included.

Its verdict follows LoadGen's rules for a server test: enough queries, a last query scheduled at
least ``min_duration_s`` after the start, and the latency percentile under the bound. It writes
``generator.json`` (settings, verdict, counts) where LoadGen would have written its logs.
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.measure.loadgen import LoadGenRun, LoadSettings, nearest_rank, own_lateness
from harness.measure.sut import BatchStats, Runnable

_NS = 1_000_000_000
#: how long before an arrival the generator stops sleeping and spins: above this VM's timer
#: lateness (p99 50-100 us with 1 ns slack), so that a wake-up is almost never past the arrival
SPIN_MARGIN_NS = 250_000
#: the generator's name in records (``generator``)
NAME = "bench"


def schedule(rate_qps: float, min_duration_s: float, min_queries: int, seed: int) -> np.ndarray:
    """Scheduled arrivals (ns from the test's start, the first after one gap): Poisson at
    ``rate_qps`` until both ``min_queries`` arrivals and ``min_duration_s`` of schedule exist."""
    if rate_qps <= 0 or not math.isfinite(rate_qps):
        raise ValueError(f"the server's target_qps must be a positive number, got {rate_qps!r}")
    rng = np.random.default_rng(seed)
    mean_gap_ns = _NS / rate_qps
    want = max(int(min_queries), 1)
    arrivals = np.cumsum(rng.exponential(mean_gap_ns, want))
    horizon = min_duration_s * _NS
    while arrivals[-1] < horizon:  # draw in chunks until the schedule spans the minimum duration
        more = max(want // 4, int((horizon - arrivals[-1]) / mean_gap_ns * 1.1) + 16)
        arrivals = np.r_[arrivals, arrivals[-1] + np.cumsum(rng.exponential(mean_gap_ns, more))]
    if arrivals.size > want and arrivals[-1] > horizon:  # trim past the point both minimums hold
        cut = max(want, int(np.searchsorted(arrivals, horizon, side="left")) + 1)
        arrivals = arrivals[:cut]
    return np.round(arrivals).astype(np.int64)


def issue_loop(
    session: Runnable,
    arrivals_ns: np.ndarray,
    max_duration_ns: int | None = None,
    margin_ns: int = SPIN_MARGIN_NS,
    clock: Callable[[], int] = time.perf_counter_ns,
    lead_ns: int = 10_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Issue and serve each query; ``(issued, done, start)``: per issued query its issue and
    completion (absolute clock ns), and the clock at the schedule's origin. Queries not issued
    before ``max_duration_ns`` of schedule are left out (as LoadGen stops at its maximum)."""
    n = int(arrivals_ns.size)
    issued = np.empty(n, np.int64)
    done = np.empty(n, np.int64)
    sleep = time.sleep
    start = clock() + lead_ns  # time to settle before the first arrival
    targets = (arrivals_ns + start).tolist()
    stop_at = start + max_duration_ns if max_duration_ns else None
    count = 0
    collecting = gc.isenabled()
    gc.disable()  # a collection mid-test would be a stall of the harness's, not the model's
    try:
        for target in targets:
            now = clock()
            if stop_at is not None and now >= stop_at:
                break
            ahead = target - now - margin_ns
            if ahead > 0:
                sleep(ahead / _NS)
                now = clock()
            while now < target:
                now = clock()
            issued[count] = now
            session.run()
            done[count] = clock()
            count += 1
    finally:
        if collecting:
            gc.enable()
    return issued[:count], done[:count], np.int64(start)


def verdict(latency_ns: np.ndarray, last_scheduled_ns: int, settings: LoadSettings) -> dict[str, Any]:
    """LoadGen's server rules on bench's measurements: at least ``min_query_count`` queries, the
    last query issued scheduled at least ``min_duration_s`` after the test's start (LoadGen's
    ``MinDurationMet`` for a server test: its final query's scheduled time, the schedule being what
    :func:`schedule` draws to that length), and the latency percentile (nearest rank) at most
    ``latency_bound_ms``."""
    n = int(latency_ns.size)
    queries_met = n >= settings.min_query_count
    duration_met = last_scheduled_ns >= settings.min_duration_s * _NS
    percentile_ns = int(nearest_rank(np.sort(latency_ns), settings.latency_percentile)) if n else None
    bound_ns = (settings.latency_bound_ms or math.inf) * 1e6
    bound_met = percentile_ns is not None and percentile_ns <= bound_ns
    valid = queries_met and duration_met and bound_met
    return {
        "generator": NAME,
        "validity": "VALID" if valid else "INVALID",
        "min_queries_met": queries_met,
        "min_duration_met": duration_met,
        "latency_bound_met": bound_met,
        "percentile": settings.latency_percentile,
        "percentile_latency_ns": percentile_ns,
        "query_count": n,
    }


def run_server(session: Runnable, settings: LoadSettings, log_dir: Path, margin_ns: int = SPIN_MARGIN_NS) -> LoadGenRun:
    """One server test of ``session`` (inline, batch 1) by bench's generator, as a
    :class:`~harness.measure.loadgen.LoadGenRun` whose ``loadgen`` holds this generator's verdict
    under LoadGen's key names (``result_validity``, ``result_perf_constraints_met``, ...)."""
    if settings.scenario != "server":
        raise ValueError(f"bench's generator drives server tests only, not {settings.scenario!r}")
    arrivals = schedule(float(settings.target_qps or 0.0), settings.min_duration_s, settings.min_query_count,
                        settings.seed)  # fmt: skip
    max_ns = int(settings.max_duration_s * _NS) if settings.max_duration_s else None
    issued, done, start = issue_loop(session, arrivals, max_ns, margin_ns)
    scheduled = arrivals[: issued.size]
    due = scheduled + start
    latency = done - due
    delay = issued - due
    own = own_lateness(latency, delay, scheduled)
    span = int(done[-1] - due[0]) if issued.size else 0  # first arrival to last completion: the throughput's
    judged = verdict(latency, int(scheduled[-1]) if scheduled.size else 0, settings)
    schedule_span = int(scheduled[-1] - scheduled[0]) if scheduled.size > 1 else 0
    summary = {
        **judged,
        "target_qps": settings.target_qps,
        "scheduled_qps": (scheduled.size - 1) * _NS / schedule_span if schedule_span else None,
        "latency_bound_ms": settings.latency_bound_ms,
        "min_query_count": settings.min_query_count,
        "min_duration_s": settings.min_duration_s,
        "max_duration_s": settings.max_duration_s,
        "seed": settings.seed,
        "spin_margin_ns": margin_ns,
        "queries_scheduled": int(arrivals.size),
        "mean_latency_ns": float(latency.mean()) if latency.size else None,
        "generator_delay_p99_ns": float(np.percentile(own, 99)) if own.size else None,
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "generator.json").write_text(json.dumps(summary, indent=2) + "\n")
    detail = {
        "result_validity": judged["validity"],
        "result_min_queries_met": judged["min_queries_met"],
        "result_min_duration_met": judged["min_duration_met"],
        "result_perf_constraints_met": judged["latency_bound_met"],
        "result_scheduled_samples_per_sec": summary["scheduled_qps"],
        "result_query_count": int(latency.size),
    }
    batches = BatchStats(calls=int(latency.size), samples=int(latency.size), padded_samples=0)
    return LoadGenRun(
        settings, latency, delay, scheduled, int(latency.size), max(span, 1), detail, batches, log_dir,
        "inline", own, NAME,
    )  # fmt: skip
