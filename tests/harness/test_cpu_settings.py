"""The scenario's cpu settings: CPUs reserved from threads: auto, workers pinned, passive waiting."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import bench, fake_scenario, run_dirs
from harness.scenario import expand_cells, load_scenario_text

SCENARIO = """\
name: cpu
model: dlrm-small
backends: [onnxruntime]
batch_sizes: [1]
concurrency: [1, 2]
load: [single_stream, offline]
{cpu}
"""


def test_reserve_leaves_cpus_out_of_threads_auto() -> None:
    plain = load_scenario_text(SCENARIO.format(cpu=""))
    reserved = load_scenario_text(SCENARIO.format(cpu="cpu: {reserve: 1}"))
    assert {c.threads for c in expand_cells(plain, 4) if c.concurrency == 1} == {4}
    assert {c.threads for c in expand_cells(reserved, 4) if c.concurrency == 1} == {3}
    assert {c.threads for c in expand_cells(reserved, 4) if c.concurrency == 2} == {1}  # 3 CPUs shared by 2
    assert {c.threads for c in expand_cells(reserved, 1)} == {1}  # never fewer than one
    assert [c.id for c in expand_cells(plain, 4)] != []  # identities do not include the settings:
    assert {c.id for c in expand_cells(plain, 3)} == {c.id for c in expand_cells(reserved, 4)}


def test_bad_cpu_settings_are_scenario_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SCENARIO.format(cpu="cpu: {reserve: -1, wait: sleepy}"))
    out = bench("validate", str(path))
    assert out.returncode == 2
    assert "cpu.reserve" in out.stderr and "cpu.wait" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.usefixtures("fake_plugin")
def test_a_pinned_passive_worker_sees_its_cpus_and_policy(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, extra="cpu: {pin: true, wait: passive}\n")
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--json", "--no-report")
    assert out.returncode == 0, out.stderr
    (cell,) = json.loads(out.stdout)["cells"]
    usable = sorted(os.sched_getaffinity(0))
    assert cell["info"]["pinned_cpus"] == usable[-1:] == cell["info"]["affinity"]  # threads: 1, the last CPU
    assert cell["info"]["wait_policy"] == "passive" and cell["info"]["omp_wait_policy"] == "PASSIVE"
    (run,) = run_dirs(tmp_path / "r")
    assert json.loads((run / "manifest.json").read_text())["settings"]["cpu"] == {
        "reserve": 0, "pin": True, "wait": "passive",
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_compare_refuses_runs_with_other_cpu_settings(tmp_path: Path) -> None:
    plain = fake_scenario(tmp_path)
    passive = fake_scenario(tmp_path, extra="cpu: {wait: passive}\n", name="passive.yaml")
    for path, out in ((plain, "a"), (passive, "b")):
        assert bench("run", str(path), "--out", str(tmp_path / out), "--no-report").returncode == 0
    (a,), (b,) = run_dirs(tmp_path / "a"), run_dirs(tmp_path / "b")
    refused = bench("compare", str(a), str(b))
    assert refused.returncode == 2 and "settings.cpu" in refused.stderr and "'wait': 'passive'" in refused.stderr
