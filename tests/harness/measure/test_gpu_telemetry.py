"""GPU telemetry's arithmetic and its fallbacks, against a deterministic stand-in for NVML (its
functions and errors as nvidia-ml-py names them). The real NVML is read on a GPU machine
(benchmarks/gpu_check.py); here: energy from the counter or from power x time, MIG, short windows,
throttling, per-process memory, device mapping, and the energy's price."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import TINY_MODEL
from harness.analysis import economics
from harness.measure import gpu_telemetry as gt


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


class FunctionNotFound(NVMLError):
    pass


class NVMLLibraryMismatchError(Exception):  # nvidia-ml-py's: not an NVMLError
    pass


def fake_nvml(
    *,
    energy: bool = True,
    power_mw: float = 100_000.0,
    mig: bool = False,
    throttle: int = 0,
    processes: bool = True,
    clock: Any = None,
    old_driver: bool = False,
    mig_handle: bool = False,
) -> SimpleNamespace:
    """NVML with a GPU drawing ``power_mw`` steadily; its energy counter follows ``clock`` (s)."""
    clock = clock or time.monotonic
    born = clock()

    def total_energy(handle: Any) -> int:
        if not energy:
            raise NotSupported("Not Supported")
        return int(1_000_000 + (clock() - born) * power_mw)  # mJ: mW x s

    def mig_mode(handle: Any) -> tuple[int, int]:
        return (1, 1) if mig else (0, 0)

    def procs(handle: Any) -> list[SimpleNamespace]:
        if not processes:
            raise NotSupported("Not Supported")
        if old_driver:  # a driver without the _v3 symbol that nvidia-ml-py asks for
            raise NVMLLibraryMismatchError("Unversioned function called and the pyNVML version does not match")
        import os

        return [
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=512 * 2**20),
            SimpleNamespace(pid=1, usedGpuMemory=2**30),
        ]

    def by_uuid(uuid: str) -> tuple[str, str]:
        if uuid.startswith("GPU-") and len(uuid) < 40:  # NVML takes whole UUIDs only
            raise NVMLError("Not Found")
        return ("gpu", uuid)

    def event_reasons(handle: Any) -> int:
        if old_driver:  # the "event" reader came with driver 535
            raise FunctionNotFound("Function Not Found")
        return throttle

    def mig_of_handle(handle: Any) -> int:
        if mig_handle:
            return 1
        return 0

    def clock_info(handle: Any, kind: int) -> int:
        if mig_handle:
            raise NotSupported("Not Supported")
        return 1980 if kind == 1 else 6251

    return SimpleNamespace(
        NVMLError=NVMLError, NVMLLibraryMismatchError=NVMLLibraryMismatchError,
        NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2, NVML_TEMPERATURE_GPU=0,
        nvmlClocksEventReasonSwPowerCap=0x4, nvmlClocksEventReasonHwSlowdown=0x8,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i), nvmlDeviceGetHandleByUUID=by_uuid,
        nvmlDeviceGetUUID=lambda h: f"GPU-{h[1]}a1b2c3-0000-4000-8000-00000000000{h[1]}",
        nvmlDeviceGetTotalEnergyConsumption=total_energy, nvmlDeviceGetPowerUsage=lambda h: power_mw,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 * 2**30),
        nvmlDeviceGetComputeRunningProcesses=procs, nvmlDeviceGetMigMode=mig_mode,
        nvmlDeviceGetClockInfo=clock_info, nvmlDeviceIsMigDeviceHandle=mig_of_handle,
        nvmlDeviceGetTemperature=lambda h, kind: 61,
        nvmlDeviceGetCurrentClocksEventReasons=event_reasons,
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: throttle,
        nvmlSystemGetDriverVersion=lambda: "550.54", nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetName=lambda h: b"NVIDIA L4",
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_energy_from_the_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(clock=clock))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    telemetry = gt.Telemetry("cuda", clock=clock)
    telemetry.start()
    clock.now += 2.0
    out = telemetry.stop(samples=4000)
    assert out["gpu_energy_source"] == "counter"
    assert out["gpu_energy_j"] == pytest.approx(200.0)  # 100 W for 2 s
    assert out["gpu_power_mean_w"] == pytest.approx(100.0)
    assert out["gpu_power_sampled_mean_w"] == pytest.approx(100.0)
    assert out["gpu_energy_per_inference_j"] == pytest.approx(0.05)
    assert out["gpu_energy_per_inference_j"] * 4000 / out["gpu_window_s"] == pytest.approx(out["gpu_power_mean_w"])
    assert out["gpu_mem_used_peak_mb"] == 3072
    assert out["gpu_proc_mem_peak_mb"] == 512  # this process's, not the other one's
    assert (out["gpu_sm_clock_mhz_start"], out["gpu_sm_clock_mhz_end"]) == (1980, 1980)
    assert out["gpu_temperature_c_end"] == 61
    assert out["gpu_throttle_reasons"] == []
    assert "gpu_telemetry_note" not in out


def test_without_the_counter_power_is_integrated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(energy=False, power_mw=80_000.0))
    telemetry = gt.Telemetry("cuda:0")
    telemetry.start()
    time.sleep(1.2)
    out = telemetry.stop(samples=1000)
    assert out["gpu_energy_source"] == "power x time"
    assert out["gpu_power_mean_w"] == pytest.approx(80.0, rel=0.1)
    assert out["gpu_energy_j"] == pytest.approx(80.0 * out["gpu_window_s"], rel=0.1)


def test_mig_short_windows_throttling_and_no_process_memory_are_said(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(clock=clock, mig=True))
    telemetry = gt.Telemetry("cuda", clock=clock)
    telemetry.start()
    clock.now += 5.0
    out = telemetry.stop(samples=10)
    assert "gpu_energy_j" not in out
    assert "MIG is enabled" in out["gpu_telemetry_note"]

    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(clock=clock, throttle=0x4 | 0x8, processes=False))
    telemetry = gt.Telemetry("cuda", clock=clock)
    telemetry.start()
    clock.now += 0.5
    out = telemetry.stop(samples=10)
    assert "gpu_energy_j" not in out
    assert "under 1 s" in out["gpu_telemetry_note"]
    assert out["gpu_throttle_reasons"] == ["hardware slowdown", "power cap"]
    assert "held back" in out["gpu_telemetry_note"]
    assert out["gpu_proc_mem_peak_mb"] is None
    assert "no per-process memory" in out["gpu_telemetry_note"]


def test_a_driver_before_535_still_reports_throttling_and_no_process_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the driver lacks the newer symbols nvidia-ml-py calls (the clock-event reasons, the
    compute processes' _v3), the older reader answers, and the cell neither fails nor loses its energy."""
    clock = Clock()
    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(clock=clock, throttle=0x4, old_driver=True))
    telemetry = gt.Telemetry("cuda", clock=clock)
    telemetry.start()
    clock.now += 2.0
    out = telemetry.stop(samples=100)
    assert out["gpu_throttle_reasons"] == ["power cap"]
    assert out["gpu_proc_mem_peak_mb"] is None and out["gpu_energy_j"] == pytest.approx(200.0, rel=0.01)
    (row,) = gt.capabilities()  # bench doctor reads the same symbols
    assert isinstance(row, dict) and row["process_memory"] is False and row["energy_counter"] is True


def test_a_mig_instance_given_by_its_uuid_is_said_to_be_one(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(clock=clock, mig_handle=True))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-5c89e2c2-0000-5000-9000-000000000000")
    telemetry = gt.Telemetry("cuda", clock=clock)
    telemetry.start()
    clock.now += 2.0
    out = telemetry.stop(samples=100)
    assert "gpu_energy_j" not in out and "MIG is enabled" in out["gpu_telemetry_note"]
    assert out["gpu_sm_clock_mhz_start"] is None  # what a MIG handle cannot read is left empty, not made up


def test_a_shortened_uuid_in_cuda_visible_devices_finds_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA takes a UUID prefix that names one GPU; NVML only whole UUIDs: the prefix is matched
    against every GPU's UUID, and one that matches none is a reason, not a guess."""
    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(clock=Clock()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-0a1b")
    assert gt.Telemetry("cuda").handle == ("gpu", 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-9f")
    telemetry = gt.Telemetry("cuda")
    assert telemetry.problem and "NVML cannot read cuda" in telemetry.problem


def test_no_nvml_is_a_reason_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(gt, "_nvml", missing)
    telemetry = gt.Telemetry("cuda")
    telemetry.start()
    assert telemetry.stop(samples=1) == {"gpu_telemetry_skipped": telemetry.problem}
    assert "pip install 'bench[gpu]'" in str(telemetry.problem)
    assert "not installed" in str(gt.capabilities())


def test_cuda_indices_map_to_nvml_through_cuda_visible_devices() -> None:
    assert gt.nvml_index("cuda", visible=None) == 0 or gt.nvml_index("cuda", visible="") == 0
    assert gt.nvml_index("cuda:1", visible="") == 1
    assert gt.nvml_index("cuda:1", visible="2,3") == 3
    assert gt.nvml_index("cuda", visible="GPU-abc,GPU-def") == "GPU-abc"
    with pytest.raises(ValueError, match="not among"):
        gt.nvml_index("cuda:2", visible="0,1")


def test_capabilities_say_what_nvml_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(energy=False))
    (gpu,) = gt.capabilities()
    assert gpu["name"] == "NVIDIA L4"
    assert (gpu["energy_counter"], gpu["power"], gpu["process_memory"], gpu["mig"]) == (False, True, True, False)


def test_energy_is_priced_into_the_cost_per_million() -> None:
    assert economics.energy_per_million(0.05, 0.20) == pytest.approx(0.05 * 1e6 / 3.6e6 * 0.20)
    assert economics.energy_per_million(None, 0.20) is None
    record = {"status": "ok", "throughput_sps": 2000.0, "gpu_energy_per_inference_j": 0.05}
    plain = economics.cell_costs(record, {"hourly_usd": 1.0})
    priced = economics.cell_costs(record, {"hourly_usd": 1.0, "energy_usd_per_kwh": 0.20})
    assert "energy_usd_per_million" not in plain
    assert priced["energy_usd_per_million"] == pytest.approx(0.05 * 1e6 / 3.6e6 * 0.20)
    assert priced["cost_per_million_usd"] == pytest.approx(
        plain["cost_per_million_usd"] + priced["energy_usd_per_million"]
    )


GPU_PLUGIN = (
    """
import time

from harness.api import Backend, Model, Session, hookimpl


"""
    + TINY_MODEL.format(name="telemetry-tiny")
    + """

class BusySession(Session):
    def __init__(self, x):
        super().__init__()
        self.x = x
        self.info = {"executed_precision": "fp32"}

    def run(self):
        end = time.perf_counter_ns() + 200_000
        while time.perf_counter_ns() < end:
            pass

    def outputs(self):
        return {"y": self.x.sum(axis=1, keepdims=True)}

    def set_inputs(self, arrays):
        self.x[...] = arrays["x"]


class FakeGpuBackend(Backend):
    name = "fake-gpu"
    devices = ("cuda",)

    def prepare(self, model, cell, workdir):
        return BusySession(model.example_inputs(cell.batch_size, cell.seed)["x"].copy())


@hookimpl
def bench_register_backends(register):
    register(FakeGpuBackend)


@hookimpl
def bench_register_models(register):
    register(Tiny)
"""
)


@pytest.mark.slow
@pytest.mark.parametrize("load", ["single_stream", "server", "server-peak"])
def test_the_worker_reads_nvml_over_the_measured_window_of_either_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load: str
) -> None:
    """Through the worker (run_job, in this process), a cuda cell gets the window's telemetry on the
    single-stream path and on a LoadGen test at a fixed rate; a peak search says why it has none. NVML
    is the stand-in here; the GPU itself is a busy wait, so that this runs without one."""
    import importlib
    import sys
    import textwrap

    import numpy as np

    from harness.cells import Cell
    from harness.executors.worker import Channel, run_job
    from harness.records import Job, StopRule

    if load != "single_stream":
        pytest.importorskip("mlperf_loadgen")
    name = "bench_fake_gpu_plugin"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(GPU_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    importlib.import_module(name)
    monkeypatch.setattr(gt, "_nvml", lambda: fake_nvml(power_mw=150_000.0))
    x = np.random.default_rng(7).standard_normal((4, 3)).astype("float32")
    np.savez(tmp_path / "reference.npz", **{"input:x": x, "output:y": x.sum(axis=1, keepdims=True)})
    options = {} if load == "single_stream" else {"target_qps": "peak" if load == "server-peak" else 1000}
    cell = Cell("telemetry-tiny", "fake-gpu", "cuda", "fp32", 1, 1, load="single_stream" if load == "single_stream"
                else "server", load_options=options)  # fmt: skip
    loadgen = {
        "min_duration_s": 1.5, "min_query_count": 100, "max_duration_s": 3.0, "latency_percentile": 99.0,
        "expected_qps": None, "seed": 0, "min_qps": 100.0, "max_qps": 3000.0, "precision": 0.2,
        "trial_duration_s": 0.3, "max_trials": 3,
    }  # fmt: skip
    job = Job(
        cell=cell.config(), repeat=0, attempt=0, rule=StopRule(0.1, 2, 1.5, 1.5, 5, 50.0, 0.95, None),
        percentiles=(50.0,), noise_threshold=1.0, quiet_wait_s=0.0,
        loadgen=None if load == "single_stream" else loadgen,
        reference={"path": str(tmp_path / "reference.npz"), "task": "other"}, fidelity={}, timeout_s=60.0,
        plugins=(name,), autoload=False, workdir=str(tmp_path / "work"), cell_dir=str(tmp_path / "cells" / cell.id),
    )  # fmt: skip
    try:
        result = run_job(job, Channel(open("/dev/null", "w")))  # noqa: SIM115 - closed with the process
    finally:
        sys.modules.pop(name, None)
    assert result["status"] == "ok"
    if load == "server-peak":
        assert "peak search" in result["gpu_telemetry_skipped"] and "gpu_energy_j" not in result
        return
    window = result["gpu_window_s"]
    assert window >= 1.0 and result["gpu_energy_source"] == "counter"
    assert result["gpu_power_mean_w"] == pytest.approx(150.0, rel=0.05)
    served = result["gpu_energy_j"] / result["gpu_energy_per_inference_j"]
    assert served == pytest.approx(result["samples"])  # the energy is shared among the window's inferences
    assert window >= 0.99 * result["samples"] / result["throughput_sps"]  # NVML's window holds the measured one
    if load == "single_stream":  # a session that keeps no CUDA-event times says so
        assert "keeps no CUDA-event times" in result["gpu_timing_skipped"]
