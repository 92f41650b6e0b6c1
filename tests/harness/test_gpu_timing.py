"""GPU time per call through the worker: a session that keeps call times (the fake backend's busy
wait standing in for CUDA events) gets its window's times, and trtexec's warnings, in its record."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import bench, fake_scenario, journal, run_dirs
from harness.metrics import describe


@pytest.mark.usefixtures("fake_plugin")
def test_a_window_keeps_its_calls_times_and_trtexecs_warnings(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, service_ms=1.0, min_s=0.3, max_s=0.5)
    text = scenario.read_text().replace("{service_ms: 1.0}", "{service_ms: 1.0, call_times: true, enqueue_us: 900}")
    scenario.write_text(text)
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (record,) = journal(run_dirs(tmp_path / "r")[0])
    assert record["status"] == "ok", record.get("reason")
    # only the measured window's calls: not the cold call nor the warm-up
    assert record["gpu_timed_calls"] == record["n_queries"]
    assert record["gpu_timing_what"] == "the fake call's busy wait"
    assert 1.0 <= record["gpu_compute_p50_ms"] <= record["p50_ms"]
    assert record["gpu_compute_share"] == pytest.approx(record["gpu_compute_p50_ms"] / record["p50_ms"], rel=1e-3)
    assert record["enqueue_mean_ms"] == pytest.approx(0.9)
    (warning,) = [w for w in record["gpu_timing_warnings"] if w.startswith("enqueue-bound")]
    assert "over 0.8 x its GPU compute time" in warning
    assert "enqueue-bound" in done.stdout  # among the summary's notes
    for field in ("gpu_timed_calls", "gpu_compute_p50_ms", "gpu_compute_cv", "enqueue_mean_ms", "gpu_timing_warnings"):
        assert describe(field) is not None


@pytest.mark.usefixtures("fake_plugin")
def test_a_session_without_call_times_adds_no_gpu_timing_on_the_cpu(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, service_ms=0.2)
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (record,) = journal(run_dirs(tmp_path / "r")[0])
    assert not [key for key in record if key.startswith(("gpu_compute", "gpu_timing", "gpu_timed"))]
