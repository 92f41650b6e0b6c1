"""`bench doctor`: runtimes, devices, CPU features and the warnings that matter for measuring."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from conftest import bench
from harness import doctor, environment


def test_doctor_json_reports_this_machine() -> None:
    out = bench("doctor", "--json", env={"OMP_NUM_THREADS": "512"})
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["cpu"]["usable_cpus"] == environment.usable_cpus()
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    assert found["cpu_features"]["AVX2"] == ("avx2" in flags)
    assert found["cpu_features"]["VNNI"] == bool({"avx512_vnni", "avx_vnni"} & flags)
    torch_info = found["runtimes"]["torch"]
    assert torch_info["installed"] and torch_info["version"] == metadata.version("torch")
    assert found["thread_env"]["OMP_NUM_THREADS"] == "512"
    assert any("OMP_NUM_THREADS=512 is more threads" in w for w in found["warnings"])
    assert 0.0 <= found["other_processes_busy"] <= 1.0


def test_doctor_text_names_runtimes_and_features() -> None:
    out = bench("doctor")
    assert out.returncode == 0, out.stderr
    for word in ("cpu features", "AVX-512", "VNNI", "AMX", "bf16", "runtimes", "torch", "tensorrt"):
        assert word in out.stdout


def test_a_runtime_that_is_absent_or_fails_to_import_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor.probe_runtime("bench_no_such_runtime_here") == {"installed": False}
    monkeypatch.setitem(doctor.PROBES, "json", "import sys; sys.exit('broken build')")
    found = doctor.probe_runtime("json")
    assert found["installed"] is True
    assert "exit 1" in found["error"] and "broken build" in found["error"]


def test_warnings_for_a_busy_machine_and_a_gpu_torch_cannot_use() -> None:
    report = {
        "cpu": {"usable_cpus": 2, "logical_cpus": 8},
        "thread_env": {"MKL_NUM_THREADS": "2"},
        "other_processes_busy": 0.4,
        "cpu_governor": "powersave",
        "gpus": [{"name": "NVIDIA H100"}],
        "runtimes": {"torch": {"installed": True, "cuda_available": False}, "openvino": {}},
    }
    found = " | ".join(doctor.warnings_for(report))
    assert "MKL_NUM_THREADS" not in found  # 2 threads on 2 CPUs is fine
    assert "2 of 8 CPUs" in found
    assert "40%" in found
    assert "powersave" in found
    assert "no CUDA" in found
