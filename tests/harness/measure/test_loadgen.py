"""LoadGen-driven scenarios, with the real LoadGen and the deterministic fake session."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.measure import loadgen
from harness.measure.loadgen import LoadGenRun, LoadSettings, PeakSearch, peak_search, read_detail, read_trace
from harness.measure.sut import BatchStats
from plugins.fake import FakeSession

pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is a core dependency; install the project")

MS = 1_000_000


def fake(service_ms: float = 1.0, batch: int = 1, stall_every: int = 0, stall_ms: float = 0.0) -> FakeSession:
    return FakeSession(int(service_ms * MS), 0, batch, "none", 0, stall_every, int(stall_ms * MS))


def test_read_trace_gives_per_query_latency_from_the_schedule(tmp_path: Path) -> None:
    lines = [
        '{"traceEvents":[',
        '{"name":"IssueQuery","ph":"X","pid":1,"tid":1,"ts":1.0,"dur":2.0,"args":{}},',
        # query 0: two samples scheduled at t=1000 us, issued 5 us late, done after 3 ms and 4 ms
        '{"name":"Sample","cat":"default","ph":"b","pid":1,"id":0,"ts":1000.000,"args":{"sample_seq":0,'
        '"query_seq":0,"sample_idx":7,"issue_start_ns":5000,"complete_ns":3000000}},',
        '{"name":"Sample","cat":"default","ph":"e", "pid":1,"id":0,"ts":4000.000},',
        '{"name":"Sample","cat":"default","ph":"b","pid":1,"id":1,"ts":1000.000,"args":{"sample_seq":1,'
        '"query_seq":0,"sample_idx":8,"issue_start_ns":5000,"complete_ns":4000000}},',
        # query 1: scheduled at t=2000 us, 1 ms latency
        '{"name":"Sample","cat":"default","ph":"b","pid":1,"id":2,"ts":2000.000,"args":{"sample_seq":2,'
        '"query_seq":1,"sample_idx":9,"issue_start_ns":100,"complete_ns":1000000}},',
        '{"name":"LastTrace"}',
        "]}",
    ]
    path = tmp_path / "trace.json"
    path.write_text("\n".join(lines))
    latency, delay, scheduled, samples, wall = read_trace(path)
    assert latency.tolist() == [4_000_000, 1_000_000]  # a query is done when its last sample is
    assert delay.tolist() == [5000, 100]
    assert scheduled.tolist() == [1_000_000, 2_000_000]
    assert samples == 3
    assert wall == 4_000_000  # first scheduled arrival (1000 us) to last completion (5000 us)


def test_read_detail_takes_the_verdict_and_the_early_stopping_estimate(tmp_path: Path) -> None:
    path = tmp_path / "mlperf_log_detail.txt"
    entries = [
        ("result_validity", "INVALID"),
        ("result_perf_constraints_met", False),
        (
            "early_stopping_result",
            " * Processed at least 662 queries (2000).\n * Early stopping 99.0th percentile estimate: 13330",
        ),
        ("requested_min_duration_ms", 10),
    ]
    path.write_text(
        "\n".join(f':::MLLOG {{"key": "{k}", "value": {json.dumps(v)}}}' for k, v in entries) + "\nnot a log line\n"
    )
    detail = read_detail(path)
    assert detail["result_validity"] == "INVALID"
    assert detail["result_perf_constraints_met"] is False
    assert detail["early_stopping_estimate_ns"] == 13330
    assert "requested_min_duration_ms" not in detail


def _synthetic_trial(limit_qps: float, calls: list[tuple[float, float]]):
    def trial(qps: float, duration_s: float) -> LoadGenRun:
        calls.append((qps, duration_s))
        settings = LoadSettings("server", duration_s, 1, target_qps=qps, latency_bound_ms=5)
        ok = qps <= limit_qps
        return LoadGenRun(settings, np.array([MS]), np.array([0]), np.array([0]), 1, MS,
                          {"result_perf_constraints_met": ok}, BatchStats(), Path("."))  # fmt: skip

    return trial


def test_peak_search_finds_the_highest_passing_rate_within_its_precision() -> None:
    calls: list[tuple[float, float]] = []
    search = PeakSearch(min_qps=10, max_qps=None, precision=0.02, trial_duration_s=1.0, max_trials=30)
    outcome = peak_search(_synthetic_trial(700.0, calls), search, upper_qps=2000.0, full_duration_s=5.0)
    assert outcome.peak_qps is not None
    assert 700 / 1.02 <= outcome.peak_qps <= 700
    assert calls[-1] == (outcome.peak_qps, 5.0), "the peak is measured once more at full length"
    assert all(d == 1.0 for _, d in calls[:-1])
    rates = [p["target_qps"] for p in outcome.curve]
    assert rates == sorted(rates) and len(rates) == len(calls)
    assert outcome.note == ""


def test_peak_search_reports_when_no_rate_or_every_rate_passes() -> None:
    search = PeakSearch(min_qps=10, max_qps=None, precision=0.05, trial_duration_s=1.0, max_trials=10)
    none = peak_search(_synthetic_trial(1.0, []), search, upper_qps=100.0, full_duration_s=2.0)
    assert none.peak_qps is None and "no rate meets it" in none.note
    every = peak_search(_synthetic_trial(1e9, []), search, upper_qps=100.0, full_duration_s=2.0)
    assert every.peak_qps == 100.0 and "may be higher" in every.note


def test_peak_search_steps_down_when_the_full_run_breaks_the_bound() -> None:
    calls: list[tuple[float, float]] = []

    def trial(qps: float, duration_s: float) -> LoadGenRun:  # short trials pass up to 700, full runs up to 650
        calls.append((qps, duration_s))
        ok = qps <= (700 if duration_s < 5 else 650)
        settings = LoadSettings("server", duration_s, 1, target_qps=qps, latency_bound_ms=5)
        return LoadGenRun(settings, np.array([MS]), np.array([0]), np.array([0]), 1, MS,
                          {"result_perf_constraints_met": ok}, BatchStats(), Path("."))  # fmt: skip

    search = PeakSearch(min_qps=10, max_qps=None, precision=0.02, trial_duration_s=1.0, max_trials=30)
    outcome = peak_search(trial, search, upper_qps=2000.0, full_duration_s=5.0)
    assert outcome.final.meets_bound
    assert outcome.peak_qps is not None and outcome.peak_qps <= 650
    assert "stepped down" in outcome.note


def test_server_latency_is_measured_from_the_schedule_and_matches_loadgen(tmp_path: Path) -> None:
    loadgen.set_fine_timer_slack()
    # p90: early stopping needs 64 queries, so one second at 200 q/s is a valid run
    settings = LoadSettings(
        "server", min_duration_s=1.0, min_query_count=100, target_qps=200, latency_bound_ms=20, latency_percentile=90,
        generator="loadgen",
    )  # fmt: skip
    run = loadgen.run_test([fake(1.0)], 1, settings, tmp_path / "lg")
    assert run.valid, run.loadgen
    assert run.serving == "inline" and run.generator == "loadgen"  # one session at batch 1: on LoadGen's thread
    assert (run.generator_delay <= run.issue_delay_ns).all()
    assert run.query_latency_ns.size == run.loadgen["result_query_count"] == run.n_samples
    assert run.query_latency_ns.min() >= 0.99 * MS  # never below the service time
    # the numbers bench keeps are the ones LoadGen judged
    assert run.query_latency_ns.mean() == pytest.approx(run.loadgen["result_mean_latency_ns"], rel=0.01)
    assert run.throughput_sps == pytest.approx(200, rel=0.25)
    assert (tmp_path / "lg" / "mlperf_log_summary.txt").is_file()
    assert (tmp_path / "lg" / "mlperf_log_detail.txt").is_file()
    assert not (tmp_path / "lg" / "mlperf_log_trace.json").exists(), "the trace is read, then deleted"


@pytest.mark.parametrize(
    ("inline", "generator"), [(True, "auto"), (True, "loadgen"), (False, "auto")],
    ids=["bench-inline", "loadgen-inline", "loadgen-queue"],
)  # fmt: skip
def test_a_stall_shows_in_the_latency_of_the_queries_queued_behind_it(
    tmp_path: Path, inline: bool, generator: str
) -> None:
    loadgen.set_fine_timer_slack()
    settings = LoadSettings("server", min_duration_s=2.0, min_query_count=100, target_qps=200, latency_bound_ms=100,
                            generator=generator)  # fmt: skip
    # every 100th call stalls 50 ms: at 200 q/s about 10 queries arrive during each stall
    run = loadgen.run_test([fake(1.0, stall_every=100, stall_ms=50.0)], 1, settings, tmp_path / "lg", inline=inline)
    assert run.serving == ("inline" if inline else "queue")
    assert run.generator == ("bench" if inline and generator == "auto" else "loadgen")
    lat_ms = run.query_latency_ns / MS
    assert lat_ms.max() >= 50
    behind = int((lat_ms > 10).sum())
    stalls = run.batches.calls // 100
    assert stalls >= 3
    assert behind >= 3 * stalls, f"{behind} queries over 10 ms after {stalls} stalls: queueing was hidden"


def test_own_lateness_counts_only_what_the_previous_call_does_not_explain() -> None:
    # query 0 issued 5 late (the generator); query 1 scheduled during query 0's call (done at 25),
    # issued at 26: 1 late; query 2 scheduled at 40 after an idle server, issued at 40: on time
    scheduled = np.array([0, 10, 40], dtype=np.int64)
    delay = np.array([5, 16, 0], dtype=np.int64)
    latency = np.array([25, 30, 10], dtype=np.int64)
    assert loadgen.own_lateness(latency, delay, scheduled).tolist() == [5, 1, 0]
    empty = np.empty(0, np.int64)
    assert loadgen.own_lateness(empty, empty, empty).size == 0


def test_bench_generator_issues_server_tests_served_inline_unless_told_loadgen() -> None:
    server = LoadSettings("server", 1.0, 10, target_qps=100, latency_bound_ms=10)
    assert loadgen.uses_bench_generator(server, inline=True)
    assert not loadgen.uses_bench_generator(server, inline=False)  # replicas or batches: LoadGen's queue
    assert not loadgen.uses_bench_generator(LoadSettings("multi_stream", 1.0, 10), inline=True)  # no timer
    assert not loadgen.uses_bench_generator(replace(server, generator="loadgen"), inline=True)
    with pytest.raises(ValueError, match="served inline"):
        loadgen.uses_bench_generator(replace(server, generator="bench"), inline=False)
    with pytest.raises(ValueError, match="generator must be one of"):
        loadgen.uses_bench_generator(replace(server, generator="fast"), inline=True)


def test_inline_serving_is_for_one_session_at_batch_one_without_a_batching_wait() -> None:
    assert loadgen.serve_inline("server", 1, 1, 0)
    assert loadgen.serve_inline("multi_stream", 1, 1, 0)
    assert not loadgen.serve_inline("offline", 1, 1, 0)  # one query: throughput, completions deferred
    assert not loadgen.serve_inline("server", 2, 1, 0)  # concurrency: replicas in parallel
    assert not loadgen.serve_inline("server", 1, 8, 0)  # batches form from the queue
    assert not loadgen.serve_inline("server", 1, 1, 500_000)  # a batching wait


def test_offline_serves_full_batches_at_the_service_rate(tmp_path: Path) -> None:
    loadgen.set_fine_timer_slack()
    settings = LoadSettings("offline", min_duration_s=1.0, min_query_count=1, expected_qps=4000)
    run = loadgen.run_test([fake(1.0, batch=4)], 4, settings, tmp_path / "lg")
    assert run.valid, run.loadgen
    assert run.query_latency_ns.size == 1  # offline: one query holding every sample
    assert run.n_samples == run.batches.samples >= 4000
    assert run.batches.padded_samples <= 3
    assert run.throughput_sps == pytest.approx(4000, rel=0.15)


def test_multi_stream_queries_complete_when_their_last_sample_does(tmp_path: Path) -> None:
    loadgen.set_fine_timer_slack()
    settings = LoadSettings("multi_stream", min_duration_s=1.0, min_query_count=100, samples_per_query=4,
                            latency_bound_ms=2.0, latency_percentile=90)  # fmt: skip
    run = loadgen.run_test([fake(1.0, batch=2)], 2, settings, tmp_path / "lg")
    assert run.valid, run.loadgen
    assert run.n_samples == 4 * run.query_latency_ns.size
    assert run.batches.mean_batch == 2
    # two calls of 1 ms in a row per query on one replica
    assert np.median(run.query_latency_ns) >= 1.98 * MS
    assert run.loadgen["result_query_count"] == run.query_latency_ns.size


def test_the_generators_percentile_is_the_summarys_nearest_rank_at_every_size() -> None:
    """0.999 * 3000 is 2997.0000000000005 in floating point: a bare ceil took the 2998th sample."""
    from harness.analysis import stats
    from harness.measure.loadgen import nearest_rank

    for n in (1, 7, 1000, 3000, 10_000):
        ordered = np.arange(1, n + 1, dtype=np.float64)
        for p in (50, 90, 99, 99.9, 100):
            assert nearest_rank(ordered, p) == stats.nearest_rank(ordered, p), (n, p)
    assert nearest_rank(np.arange(1, 3001, dtype=np.float64), 99.9) == 2997
