"""Load scenarios end to end: the scenario's load axes, the worker's LoadGen path, the stored results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import harness
from conftest import bench, fake_scenario, journal, run_dirs
from harness.cells import Cell
from harness.metrics import describe
from harness.scenario import load_scenario_text

LOADS = """\
load: [single_stream, server, offline, multi_stream]
loadgen:
  target_qps: 300
  latency_bound_ms: 20
  latency_percentile: 90
  min_duration_s: 1.0
  min_query_count: 100
  samples_per_query: 2
"""


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_every_load_runs_and_stores_loadgen_verdicts_logs_and_latencies(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, service_ms=1.0, extra=LOADS)
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    records = {r["config"]["load"]: r for r in journal(run_dir)}
    assert set(records) == {"single_stream", "server", "offline", "multi_stream"}
    assert all(r["status"] == "ok" for r in records.values()), [r.get("reason") for r in records.values()]

    server = records["server"]
    assert server["config"]["load_options"] == {"concurrency": 1, "target_qps": 300.0, "latency_bound_ms": 20.0,
                                                "max_wait_us": 0}  # fmt: skip
    assert server["stop_reason"] == "loadgen"
    assert server["valid"] is True and server["loadgen_validity"] == "VALID"
    assert server["loadgen_perf_constraints_met"] is True
    assert server["throughput_sps"] == pytest.approx(300, rel=0.25)
    assert server["scheduled_qps"] == pytest.approx(300, rel=0.25)
    assert server["p50_ms"] >= 1.0 and server["p50_ci_low_ms"] <= server["p50_ms"] <= server["p50_ci_high_ms"]
    assert isinstance(server["generator_kept_up"], bool) and server["issue_delay_p99_ms"] is not None
    # one session at batch 1: served inline, issued by bench's spinning generator, not LoadGen's sleeps
    assert server["serving"] == "inline" and server["generator"] == "bench"
    assert 0 <= server["generator_delay_p99_ms"] <= server["issue_delay_p99_ms"]
    assert server["loadgen_p90_ms"] is None  # LoadGen did not run this test: its own statistics are absent
    generated = json.loads((run_dir / server["loadgen_log_dir"] / "generator.json").read_text())
    assert generated["validity"] == "VALID" and generated["query_count"] == server["n_queries"]
    assert (run_dir / server["issue_delay_file"]).is_file()

    offline = records["offline"]
    assert offline["n_queries"] == 1 and offline.get("p50_ms") is None  # one query: no latency distribution
    assert offline["throughput_sps"] == pytest.approx(1000, rel=0.2)

    multi = records["multi_stream"]
    assert multi["samples"] == 2 * multi["n_queries"]
    assert multi["generator"] == "loadgen" and multi["loadgen_validity"] == "VALID"
    log_dir = run_dir / multi["loadgen_log_dir"]
    assert (log_dir / "mlperf_log_summary.txt").is_file() and (log_dir / "mlperf_log_detail.txt").is_file()
    assert multi["p50_ms"] >= 2.0  # two 1 ms calls per query on one replica

    single = records["single_stream"]
    assert "load_options" not in single["config"]

    frame = harness.load_results(run_dir)
    assert set(frame["load"]) == {"single_stream", "server", "offline", "multi_stream"}
    undocumented = [column for column in frame.columns if describe(column) is None]
    assert not undocumented, f"add these to harness/metrics.py: {undocumented}"
    assert frame.set_index("load").loc["server", "concurrency"] == 1
    latencies = pd.read_parquet(run_dir / "latencies.parquet")
    server_rows = latencies[latencies.cell_id == server["cell_id"]]
    assert len(server_rows) == server["n_queries"]


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_generator_loadgen_keeps_loadgen_scheduling_a_server_cell_served_inline(tmp_path: Path) -> None:
    extra = LOADS.replace("load: [single_stream, server, offline, multi_stream]", "load: server")
    scenario = fake_scenario(tmp_path, service_ms=1.0, extra=extra + "  generator: loadgen\n")
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    (server,) = journal(run_dir)
    assert server["status"] == "ok", server.get("reason")
    assert server["serving"] == "inline" and server["generator"] == "loadgen"
    assert server["loadgen_validity"] == "VALID"
    assert server["loadgen_p90_ms"] == pytest.approx(server["p90_ms"], rel=0.05)  # the numbers LoadGen judged
    log_dir = run_dir / server["loadgen_log_dir"]
    assert (log_dir / "mlperf_log_summary.txt").is_file() and (log_dir / "mlperf_log_detail.txt").is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_peak_search_records_the_curve_and_concurrency_gets_replicas(tmp_path: Path) -> None:
    extra = """\
load: server
concurrency: [2]
loadgen:
  target_qps: peak
  latency_bound_ms: 10
  latency_percentile: 90
  min_duration_s: 1.0
  min_query_count: 100
  peak_search: {min_qps: 50, max_qps: 3000, trial_duration_s: 0.5, max_trials: 6, precision: 0.1}
"""
    scenario = fake_scenario(tmp_path, service_ms=1.0, extra=extra)
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", "--json")
    assert done.returncode == 0, done.stderr
    (record,) = journal(run_dirs(tmp_path / "r")[0])
    assert record["status"] == "ok", record.get("reason")
    assert record["config"]["load_options"]["concurrency"] == 2
    assert record["config"]["threads"] == 1
    curve = record["load_curve"]
    assert len(curve) >= 3 and [p["target_qps"] for p in curve] == sorted(p["target_qps"] for p in curve)
    # two replicas of a 1 ms service: the peak lies below their capacity of 2000 q/s
    assert record["peak_qps"] is not None and 100 < record["peak_qps"] <= 2000 * 1.05
    assert record["target_qps"] == pytest.approx(record["peak_qps"])


@pytest.mark.usefixtures("fake_plugin")
@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("load: offline\nconcurrency: [1, 32]\n", "concurrency: backend 'fake' serves at most 16 concurrent"),
        ("load: server\nloadgen: {target_qps: 100, latency_bound_ms: 0.5}\n",
         "loadgen.latency_bound_ms: latency bound 0.5 ms is below the service time"),
    ],
)  # fmt: skip
def test_what_only_the_backend_knows_is_refused_at_validation(tmp_path: Path, extra: str, fragment: str) -> None:
    scenario = fake_scenario(tmp_path, service_ms=1.0, extra=extra)
    for command in (("validate", str(scenario)), ("run", str(scenario), "--out", str(tmp_path / "r"))):
        done = bench(*command)
        assert done.returncode == 2, done.stderr
        assert fragment in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists(), "nothing ran, no run folder"


def test_a_backend_that_does_not_declare_concurrency_serves_one_stream(tmp_path: Path) -> None:
    plugin_dir = Path(__file__).resolve().parent.parent / "thirdparty"
    env = {"PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]),
           "BENCH_PLUGINS": "bench_numpy_plugin"}  # fmt: skip
    scenario = tmp_path / "s.yaml"
    text = "name: t\nmodel: squares\nbackends: [numpy-ref]\nbatch_sizes: [1]\nload: offline\nconcurrency: [{}]\n"
    scenario.write_text(text.format(1))
    assert bench("validate", str(scenario), env=env).returncode == 0
    scenario.write_text(text.format(2))
    done = bench("validate", str(scenario), env=env)
    assert done.returncode == 2
    assert "backend 'numpy-ref' serves at most 1 concurrent session(s)" in done.stderr


def test_threads_auto_shares_the_cpus_among_replicas() -> None:
    scenario = load_scenario_text(
        "name: t\nmodel: m\nbackends: [b]\nbatch_sizes: [1]\nload: [single_stream, offline]\nconcurrency: [1, 2, 4]\n"
    )
    cells = scenario.cells(cpu_count=4)
    assert [(c.load, c.concurrency, c.threads) for c in cells] == [
        ("single_stream", 1, 4), ("offline", 1, 4), ("offline", 2, 2), ("offline", 4, 1),
    ]  # fmt: skip


def test_single_stream_cell_ids_do_not_depend_on_the_load_fields() -> None:
    cell = Cell(model="m", backend="b", device="cpu", precision="fp32", batch_size=1, threads=1)
    assert "load_options" not in cell.config()
    assert cell.id == Cell.from_config(cell.config()).id
    server = Cell(**{**cell.config(), "load": "server", "load_options": {"target_qps": 10.0}})
    assert server.id != cell.id and server.label.endswith("server@10qps")
