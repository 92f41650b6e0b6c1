from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import harness
from conftest import ROOT, bench, fake_scenario, journal, run_dirs


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_kill_9_then_resume_keeps_every_cell_exactly_once(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2, 3, 4, 5, 6]", min_s=0.3, max_s=0.4)
    out_root = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(scenario), "--out", str(out_root), "--no-report"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    deadline = time.monotonic() + 60
    run_dir = None
    while time.monotonic() < deadline:
        dirs = list(out_root.glob("*/journal.jsonl")) if out_root.exists() else []
        if dirs and len(journal(dirs[0].parent)) >= 2:
            run_dir = dirs[0].parent
            break
        time.sleep(0.05)
    assert run_dir is not None, "the run never journaled two cells"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [r["cell_id"] for r in journal(run_dir)]
    assert 2 <= len(done_before) < 6
    assert not (run_dir / "results.parquet").exists()
    # the orphaned worker dies with its parent: no cell is written after the kill
    time.sleep(1.0)
    assert [r["cell_id"] for r in journal(run_dir)] == done_before

    resumed = bench("run", "--resume", str(run_dir), "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    records = journal(run_dir)
    ids = [r["cell_id"] for r in records]
    assert len(ids) == len(set(ids)) == 6
    assert ids[: len(done_before)] == done_before
    assert {r["config"]["batch_size"] for r in records} == {1, 2, 3, 4, 5, 6}
    assert len(harness.load_results(run_dir)) == 6

    again = bench("run", "--resume", str(run_dir), "--no-report")
    assert again.returncode == 0
    assert len(journal(run_dir)) == 6, "a second resume must run nothing"


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_resume_after_a_torn_journal_line(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2]")
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    lines = (run_dir / "journal.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "journal.jsonl").write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    resumed = bench("run", "--resume", str(run_dir), "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["config"]["batch_size"] for r in journal(run_dir)) == [1, 2]


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_run_records_manifest_measurement_and_json_output(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 8]", service_ms=0.5)
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--json", "--reports-dir", str(tmp_path / "rep"))
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    run_dir = Path(payload["run_dir"])
    assert payload["counts"] == {"ok": 2}
    assert Path(payload["report"]).is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["scenario"]["text"] == scenario.read_text()
    assert manifest["environment"]["cpu"]["usable_cpus"] >= 1
    assert manifest["settings"]["measurement"]["min_queries"] == 662  # p99: LoadGen early stopping, t=1
    for cell in payload["cells"]:
        assert cell["status"] == "ok"
        assert cell["n_queries"] >= 1
        assert cell["cold_ms"] > 0
        assert cell["p50_ci_low_ms"] <= cell["p50_ms"] <= cell["p50_ci_high_ms"]
        assert cell["throughput_sps"] == pytest.approx(cell["samples"] / cell["wall_s"])
        assert cell["peak_rss_mb_measure"] > 0
        assert cell["noise_fraction"] is not None
        assert (run_dir / cell["latency_file"]).is_file()
        # a 0.5 ms busy-wait per call: the median is the truth within a few percent
        assert cell["p50_ms"] == pytest.approx(0.5, rel=0.03)


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_cache_folder_is_shared_across_runs_unless_no_cache(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path)
    out_root = tmp_path / "r"
    seen = []
    for flag in ("--cache", "--no-cache"):
        out = bench("run", str(scenario), "--out", str(out_root), "--json", "--no-report", flag)
        assert out.returncode == 0, out.stderr
        payload = json.loads(out.stdout)
        manifest = json.loads((Path(payload["run_dir"]) / "manifest.json").read_text())
        seen.append((manifest["settings"]["cache_dir"], payload["cells"][0]["info"]["cache_dir"]))
    shared = out_root.resolve() / ".cache"
    assert seen[0] == (str(shared), str(shared / "fake"))
    assert (shared / "fake").is_dir()
    assert seen[1] == (None, None)


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_filters_and_quick(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2, 4, 8]")
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--quick", "--json", "--no-report")
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout)["cells"]
    assert [c["config"]["batch_size"] for c in cells] == [1]
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--batch-size", "4", "--json", "--no-report")
    assert [c["config"]["batch_size"] for c in json.loads(out.stdout)["cells"]] == [4]
    bad = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--batch-size", "3")
    assert bad.returncode == 2
    assert "--batch-size 3: not in the scenario" in bad.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_noisy_cell_is_flagged_and_measured_again(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, min_s=0.5, max_s=0.6)
    text = scenario.read_text().replace("noise_threshold: 1.0", "noise_threshold: 0.05")
    scenario.write_text(text.replace("max_attempts: 1", "max_attempts: 2"))
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--json", "--no-report")
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert out.returncode == 0, out.stderr
    (cell,) = json.loads(out.stdout)["cells"]
    assert cell["noisy"] is True
    assert cell["noise_fraction"] > 0.05
    assert cell["attempts"] == 2
    assert cell["trusted"] is False and "busy in all 2 attempt(s)" in cell["untrusted_reason"]
    import numpy as np

    kept = np.load(Path(json.loads(out.stdout)["run_dir"]) / cell["latency_file"])
    assert kept.size == cell["n_queries"], "the latencies kept must be those of the attempt kept"
