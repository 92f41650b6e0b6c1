"""bench's own server generator: its schedule, its verdict and its timing, with the deterministic fake session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.measure import loadgen, open_loop
from harness.measure.loadgen import LoadSettings
from harness.metrics import GENERATOR_JSON
from plugins.fake import FakeSession

MS = 1_000_000


def fake(service_ms: float, stall_every: int = 0, stall_ms: float = 0.0) -> FakeSession:
    return FakeSession(int(service_ms * MS), 0, 1, "none", 0, stall_every, int(stall_ms * MS))


def sojourn(arrivals_ms: np.ndarray, service_ms: float) -> np.ndarray:
    """Time in system of each customer of one FIFO server with a fixed service time (Lindley)."""
    out = np.empty(arrivals_ms.size)
    wait = 0.0
    for i in range(arrivals_ms.size):
        if i:
            wait = max(0.0, wait + service_ms - (arrivals_ms[i] - arrivals_ms[i - 1]))
        out[i] = wait + service_ms
    return out


def test_schedule_is_poisson_at_the_rate_seeded_and_long_enough() -> None:
    arrivals = open_loop.schedule(1000.0, min_duration_s=2.0, min_queries=100, seed=3)
    assert np.array_equal(arrivals, open_loop.schedule(1000.0, 2.0, 100, 3))  # the seed fixes it
    assert not np.array_equal(arrivals, open_loop.schedule(1000.0, 2.0, 100, 4))
    assert (np.diff(arrivals) >= 0).all() and arrivals[0] > 0
    assert arrivals[-1] >= 2.0e9 and arrivals[-2] < 2.0e9  # stops once the duration is covered
    gaps = np.diff(arrivals) / 1e6
    assert gaps.mean() == pytest.approx(1.0, rel=0.1)  # ~2,000 gaps of mean 1 ms
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.1)  # exponential: CV 1
    many = open_loop.schedule(10.0, min_duration_s=1.0, min_queries=500, seed=0)
    assert many.size == 500 and many[-1] > 1e9  # the query count governs when it is the larger
    with pytest.raises(ValueError, match="positive"):
        open_loop.schedule(0.0, 1.0, 10, 0)


def test_verdict_follows_loadgen_server_rules() -> None:
    settings = LoadSettings("server", 1.0, 100, target_qps=100, latency_bound_ms=5.0, latency_percentile=90)
    ok = np.full(100, 4 * MS)
    assert open_loop.verdict(ok, 2 * 10**9, settings)["validity"] == "VALID"
    slow = ok.copy()
    slow[-11:] = 6 * MS  # 11 % over the bound: the 90th percentile breaks it
    judged = open_loop.verdict(slow, 2 * 10**9, settings)
    assert judged["validity"] == "INVALID" and judged["latency_bound_met"] is False
    assert judged["percentile_latency_ns"] == 6 * MS
    slow[-11] = 4 * MS  # 10 %: nearest rank 90 is still under
    assert open_loop.verdict(slow, 2 * 10**9, settings)["latency_bound_met"] is True
    few = open_loop.verdict(ok[:99], 2 * 10**9, settings)
    assert few["min_queries_met"] is False and few["validity"] == "INVALID"
    short = open_loop.verdict(ok, 9 * 10**8, settings)
    assert short["min_duration_met"] is False and short["validity"] == "INVALID"


def test_server_latency_matches_the_same_arrivals_queued_and_is_judged(tmp_path: Path) -> None:
    loadgen.set_fine_timer_slack()
    settings = LoadSettings("server", 1.5, 100, target_qps=500, latency_bound_ms=20, latency_percentile=90, seed=2)
    run = loadgen.run_test([fake(1.0)], 1, settings, tmp_path / "g")
    assert run.generator == "bench" and run.serving == "inline"
    assert run.valid and run.meets_bound
    assert run.query_latency_ns.size == run.n_samples == run.batches.calls >= 700
    assert np.array_equal(run.scheduled_ns, open_loop.schedule(500, 1.5, 100, 2))  # every scheduled query served
    assert run.query_latency_ns.min() >= 0.99 * MS  # never below the service time
    assert (run.issue_delay_ns >= 0).all() and (run.generator_delay <= run.issue_delay_ns).all()
    # the same arrivals through one FIFO server of 1 ms: the generator's cost is what is left
    same = sojourn(run.scheduled_ns / MS, 1.0)
    lat = run.query_latency_ns / MS
    assert lat.mean() == pytest.approx(same.mean(), rel=0.15), (lat.mean(), same.mean())
    assert float(np.median(run.generator_delay)) < 0.1 * MS  # spinning: issued on time, not a timer's wake-up later
    written = json.loads((tmp_path / "g" / "generator.json").read_text())
    assert set(written) == set(GENERATOR_JSON)  # every key documented in docs/results.md, and no other
    assert written["generator"] == "bench" and written["validity"] == "VALID"
    assert written["query_count"] == lat.size and written["scheduled_qps"] == pytest.approx(500, rel=0.15)
    assert not (tmp_path / "g" / "mlperf_log_detail.txt").exists()  # LoadGen did not run


def test_a_bound_too_tight_is_invalid_and_max_duration_stops_issuing(tmp_path: Path) -> None:
    settings = LoadSettings("server", 5.0, 100, max_duration_s=0.5, target_qps=200, latency_bound_ms=0.5, seed=1)
    run = loadgen.run_test([fake(1.0)], 1, settings, tmp_path / "g")
    assert run.generator == "bench"
    assert run.loadgen["result_perf_constraints_met"] is False and not run.meets_bound  # 1 ms calls, 0.5 ms bound
    assert run.loadgen["result_min_duration_met"] is False and not run.valid
    assert 40 <= run.query_latency_ns.size <= 160  # about half a second at 200 q/s, not five


def test_the_generator_refuses_what_is_not_a_server_test(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="server tests only"):
        open_loop.run_server(fake(1.0), LoadSettings("multi_stream", 1.0, 10), tmp_path)
    server = LoadSettings("server", 1.0, 10, target_qps=100, latency_bound_ms=10, generator="bench")
    with pytest.raises(ValueError, match="served inline"):
        loadgen.run_test([fake(1.0), fake(1.0)], 1, server, tmp_path / "two")  # two replicas: LoadGen's queue


@pytest.mark.parametrize("seed", [4, 5, 9])  # seeds whose first gap outlasts the overshoot past the duration
def test_a_full_schedule_served_in_time_meets_the_minimum_duration_whatever_its_first_gap(
    seed: int, tmp_path: Path
) -> None:
    """LoadGen judges a server test's duration by its last query's scheduled time from the start; a
    span from the first arrival (one random gap late) fell short in a third of the seeds."""
    settings = LoadSettings("server", 0.3, 10, target_qps=100, latency_bound_ms=50.0, seed=seed)
    run = open_loop.run_server(fake(0.5), settings, tmp_path)
    assert run.loadgen["result_min_duration_met"] is True and run.loadgen["result_validity"] == "VALID", run.loadgen
