"""`bench doctor`: runtimes, devices, CPU features and the warnings that matter for measuring."""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import bench
from harness import doctor, environment
from harness.pluginmanager import registries


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


RUNTIMES = """
import sys

from harness.api import Backend, hookimpl


class Absent(Backend):
    name = "absent"
    packages = ("bench-no-such-runtime-here",)

    def prepare(self, model, cell, workdir):
        raise NotImplementedError


class Broken(Backend):
    name = "broken"
    packages = ("click",)

    @classmethod
    def probe(cls):
        sys.exit("broken build")

    def prepare(self, model, cell, workdir):
        raise NotImplementedError


@hookimpl
def bench_register_backends(register):
    register(Absent)
    register(Broken)
"""


def test_a_runtime_that_is_absent_or_fails_to_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "doctor_runtimes_mod.py").write_text(RUNTIMES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    plugins = ["doctor_runtimes_mod"]
    found = doctor.runtimes(registries(plugins, autoload=False), plugins, autoload=False)
    assert found["bench-no-such-runtime-here"] == {"installed": False, "version": None, "backends": ["absent"]}
    broken = found["click"]
    assert broken["installed"] is True and broken["version"] == metadata.version("click")
    assert "exit 1" in broken["error"] and "broken build" in broken["error"]
    sys.modules.pop("doctor_runtimes_mod", None)


def test_each_backend_says_what_its_probe_found() -> None:
    found = doctor.runtimes(registries(autoload=True))
    torch_info = found["torch"]
    assert torch_info["backends"] == ["pytorch"] and "default threads" in torch_info["summary"]
    assert found["onnxruntime"]["providers"] and found["onnxruntime"]["backends"] == ["onnxruntime"]
    # a declared package, probed or not: the onnxruntime backend's TensorRT provider and the tensorrt backend
    assert found["tensorrt"]["backends"] == ["onnxruntime", "tensorrt"]


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


def test_warnings_for_cuda_variables_that_change_gpu_numbers() -> None:
    report = {
        "cpu": {"usable_cpus": 2, "logical_cpus": 2},
        "thread_env": {},
        "gpu_env": {"CUDA_LAUNCH_BLOCKING": "1", "NVIDIA_TF32_OVERRIDE": "0", "CUDA_VISIBLE_DEVICES": "1"},
        "other_processes_busy": 0.0,
        "cpu_governor": None,
        "gpus": [],
        "runtimes": {},
    }
    found = doctor.warnings_for(report)
    assert any(w.startswith("CUDA_LAUNCH_BLOCKING=1 makes every CUDA launch wait") for w in found)
    assert any(w.startswith("NVIDIA_TF32_OVERRIDE=0 turns TF32 off") for w in found)
    report["gpu_env"] = {"CUDA_LAUNCH_BLOCKING": "0"}
    assert doctor.warnings_for(report) == []


def test_the_fingerprint_records_the_cuda_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in environment.GPU_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    assert environment.fingerprint()["gpu_env"] == {"CUDA_LAUNCH_BLOCKING": "1"}
