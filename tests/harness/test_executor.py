"""Each way a worker can fail is recorded with its own status, and the sweep goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import bench, fake_scenario, journal, run_dirs


def _statuses(run_dir: Path) -> dict[str, dict]:
    return {r["config"]["backend_options"].get("fault", "none"): r for r in journal(run_dir)}


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_faults_are_told_apart_and_the_sweep_goes_on(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, faults="[raise, segfault, abort, exit, hang, skip, none]", timeout=4)
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    by_fault = _statuses(run_dir)
    assert by_fault["none"]["status"] == "ok"
    assert by_fault["raise"]["status"] == "failed"
    assert "injected failure" in by_fault["raise"]["reason"]
    assert "Traceback" in by_fault["raise"]["stderr_tail"]
    assert by_fault["segfault"]["status"] == "crashed"
    assert "SIGSEGV" in by_fault["segfault"]["reason"]
    assert by_fault["abort"]["status"] == "crashed"
    assert "SIGABRT" in by_fault["abort"]["reason"]
    assert by_fault["exit"]["status"] == "failed"
    assert "code 7" in by_fault["exit"]["reason"]
    assert by_fault["hang"]["status"] == "timeout"
    assert 4 <= by_fault["hang"]["elapsed_s"] < 10
    assert by_fault["skip"]["status"] == "skipped"
    assert "injected skip" in by_fault["skip"]["reason"]
    assert "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_memory_cap_kills_and_records_oom(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, faults="[alloc, none]", timeout=60)
    text = scenario.read_text().replace("options: {service_ms: 0.2}", "options: {service_ms: 0.2, alloc_mb: 2048}")
    text = text.replace("timeout_s: 60", "timeout_s: 60\n  memory_mb: 400")
    scenario.write_text(text)
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    by_fault = _statuses(run_dir)
    assert by_fault["alloc"]["status"] == "oom"
    assert "cap of 400 MiB" in by_fault["alloc"]["reason"]
    assert by_fault["none"]["status"] == "ok"


@pytest.mark.usefixtures("fake_plugin")
def test_every_cell_failing_exits_3(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, faults="[raise]")
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert out.returncode == 3
    assert "no cell produced a measurement (1 failed)" in out.stderr
