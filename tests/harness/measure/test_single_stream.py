from __future__ import annotations

import time

import numpy as np

from harness.measure.single_stream import StopRule, run_window


def _busy(ns: int):
    def call() -> None:
        end = time.perf_counter_ns() + ns
        while time.perf_counter_ns() < end:
            pass

    return call


def _rule(**overrides) -> StopRule:
    base = {
        "warmup_s": 0.02,
        "warmup_queries": 5,
        "min_duration_s": 0.1,
        "max_duration_s": 0.5,
        "min_queries": 50,
        "headline_percentile": 99.0,
        "confidence": 0.95,
        "ci_rel_width": 0.05,
    }
    base.update(overrides)
    return StopRule(**base)


def test_cold_call_and_warmup_are_kept_out_of_the_window() -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)  # a slow first call: compilation, allocation

    window = run_window(call, _rule(warmup_queries=7, warmup_s=0.0))
    assert window.cold_ns >= 50_000_000
    assert window.warmup_queries == 7
    assert window.latencies_ns.max() < 50_000_000
    assert len(calls) == 1 + 7 + window.latencies_ns.size


def test_stops_on_a_converged_interval_after_the_minimums() -> None:
    window = run_window(_busy(200_000), _rule(max_duration_s=5.0, min_queries=400))
    assert window.stop_reason == "ci_converged"
    assert window.latencies_ns.size >= 400
    assert window.wall_ns >= 100_000_000
    # stopped by the interval before the 5 s maximum (how much before depends on the machine's load:
    # a busy neighbour widens the interval; speed targets belong to benchmarks/, not to unit tests)
    assert window.wall_ns < 5_000_000_000
    assert window.min_queries_met


def test_max_duration_bounds_a_window_short_of_queries() -> None:
    window = run_window(_busy(5_000_000), _rule(min_queries=10_000, max_duration_s=0.2))
    assert window.stop_reason == "max_duration"
    assert not window.min_queries_met
    assert 0.2e9 <= window.wall_ns < 0.35e9


def test_without_early_stop_it_runs_to_the_maximum() -> None:
    window = run_window(_busy(100_000), _rule(ci_rel_width=None, max_duration_s=0.3))
    assert window.stop_reason == "max_duration"
    assert window.wall_ns >= 0.3e9
    assert window.ci_checks == 0


def test_latencies_are_the_calls_durations() -> None:
    window = run_window(_busy(1_000_000), _rule(min_queries=100))
    assert np.median(window.latencies_ns) == np.clip(np.median(window.latencies_ns), 1_000_000, 1_050_000)
    # the window's wall time covers the calls and nothing much else
    assert window.latencies_ns.sum() <= window.wall_ns <= window.latencies_ns.sum() * 1.02


def test_the_stop_rules_checks_are_not_the_models_time_and_the_window_ends_at_its_maximum(monkeypatch) -> None:
    from harness.measure import single_stream

    def slow_check(samples, rule) -> bool:  # a check as slow as sorting millions of samples
        time.sleep(0.02)
        return False

    monkeypatch.setattr(single_stream, "_ci_converged", slow_check)
    window = run_window(_busy(100_000), _rule(min_queries=10, max_duration_s=0.4))
    assert window.stop_reason == "max_duration" and window.ci_checks >= 2
    between_calls = window.wall_ns - int(window.latencies_ns.sum())
    assert between_calls < 0.25 * window.ci_checks * 20_000_000, (between_calls, window.ci_checks)


def test_a_window_that_never_converges_stops_at_its_maximum_not_at_the_next_check() -> None:
    # checks fall every 10 % of the window: past 0.51 s the next came at 0.56 + 10 %, not at 0.56 s
    window = run_window(_busy(100_000), _rule(min_queries=10, max_duration_s=0.56, ci_rel_width=1e-9))
    assert window.stop_reason == "max_duration"
    assert 0.45e9 < window.wall_ns < 0.56e9 + 20_000_000, window.wall_ns
