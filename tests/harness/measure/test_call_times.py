"""GPU time per call: the recorder's window and trtexec's warnings (numbers given, no GPU needed)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from harness.measure import call_times
from harness.measure.call_times import CallTimes

MS = 1_000_000


def test_only_the_calls_of_an_open_window_count() -> None:
    times = CallTimes("the module's forward")
    times.add(5 * MS, 1 * MS)  # warm-up: no window yet
    times.start()
    for k in range(4):
        times.add((1 + k) * MS, 0.1 * MS)
    compute, enqueue = times.stop()
    times.add(9 * MS, 9 * MS)  # after the window
    assert compute.tolist() == [1 * MS, 2 * MS, 3 * MS, 4 * MS]
    assert enqueue.tolist() == [0.1 * MS] * 4
    times.start()  # a new window forgets the last
    assert times.stop()[0].size == 0


def test_replicas_record_side_by_side_each_in_its_own() -> None:
    recorders = [CallTimes("execute_async_v3") for _ in range(4)]
    for r in recorders:
        r.start()

    def calls(r: CallTimes) -> None:
        for _ in range(1000):
            r.add(MS, MS / 10)

    threads = [threading.Thread(target=calls, args=(r,)) for r in recorders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stop()[0].size for r in recorders] == [1000] * 4


def test_summary_fields_and_a_steady_gpu_warns_of_nothing() -> None:
    rng = np.random.default_rng(0)
    compute = rng.normal(2.0, 0.01, 500) * MS  # 0.5 % CV
    enqueue = np.full(500, 0.2 * MS)
    wall = compute + 0.1 * MS
    out = call_times.summarize(compute, enqueue, wall, "the module's forward")
    assert out["gpu_timed_calls"] == 500 and out["gpu_timing_what"] == "the module's forward"
    assert out["gpu_compute_mean_ms"] == pytest.approx(2.0, rel=0.01)
    assert out["gpu_compute_p50_ms"] <= out["gpu_compute_p99_ms"]
    assert out["gpu_compute_cv"] == pytest.approx(0.005, rel=0.2)
    assert out["enqueue_mean_ms"] == pytest.approx(0.2)
    assert out["gpu_compute_share"] == pytest.approx(2.0 / 2.1, rel=0.01)
    assert out["gpu_timing_warnings"] == []


def test_trtexecs_two_warnings_at_trtexecs_limits() -> None:
    # enqueue over 0.8 x compute: the GPU waits for the host
    bound = call_times.warnings(1.0 * MS, 0.81 * MS, 0.01)
    assert len(bound) == 1 and bound[0].startswith("enqueue-bound") and "CUDA graphs" in bound[0]
    assert call_times.warnings(1.0 * MS, 0.79 * MS, 0.01) == []
    # compute CV over 2.5 %
    unstable = call_times.warnings(1.0 * MS, 0.1 * MS, 0.03)
    assert len(unstable) == 1 and "coefficient of variation 3.0%" in unstable[0]
    assert call_times.warnings(1.0 * MS, 0.1 * MS, 0.024) == []
    assert len(call_times.warnings(1.0 * MS, 0.9 * MS, 0.05)) == 2
    assert call_times.warnings(1.0 * MS, None, None) == []


def test_a_window_without_timed_calls_says_so() -> None:
    out = call_times.summarize(np.empty(0), np.empty(0), None, "execute_async_v3")
    assert out == {"gpu_timing_skipped": "no call was timed with CUDA events (execute_async_v3)"}
