"""What an NVIDIA GPU did over a cell's measured window, from NVML (``nvidia-ml-py``, ``import pynvml``).

- **Energy**: ``nvmlDeviceGetTotalEnergyConsumption`` counts millijoules since the driver loaded
  (Volta and newer) and refreshes every 20-100 ms, so the counter's delta over the window / the
  samples served is the energy per inference. Where the counter is absent, power is sampled every
  ``SAMPLE_S`` and integrated (``gpu_energy_source`` says which). A window under ``MIN_ENERGY_WINDOW_S``
  is too short for either: the figure is left out with the reason.
- **Memory**: the device's used memory and this process's (NVML's per-process accounting), peaks
  over the window, beside the runtime's own figure (``info.gpu_mem_allocated_mb`` for PyTorch).
- **Clocks and temperature** at the start and end of the window, and the clock-event (throttle)
  reasons seen during it: a GPU that throttled measured a slower machine than its datasheet.
- **MIG**: NVML's energy and power are the whole GPU's, not a MIG instance's; on a MIG-enabled GPU
  they are left out and ``gpu_telemetry_note`` says so.

NVML numbers GPUs by PCI bus; CUDA by speed unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (the worker sets it).
``cuda:N`` is the Nth entry of ``CUDA_VISIBLE_DEVICES`` when it is set (indices or UUIDs), else N.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

#: how often power and memory are sampled during the window (s)
SAMPLE_S = 0.05
#: the shortest window whose energy is reported: the counter refreshes every 20-100 ms
MIN_ENERGY_WINDOW_S = 1.0
#: clock-event reasons worth a note (NVML's names without the prefix); idle and app settings are not
THROTTLES = {
    "HwSlowdown": "hardware slowdown",
    "HwThermalSlowdown": "hardware thermal slowdown",
    "HwPowerBrakeSlowdown": "power brake",
    "SwPowerCap": "power cap",
    "SwThermalSlowdown": "software thermal slowdown",
}


def _nvml() -> Any:
    import pynvml

    return pynvml


def nvml_errors(nv: Any) -> tuple[type[BaseException], ...]:
    """What an NVML read raises where it cannot read: NVMLError, and the mismatch nvidia-ml-py raises
    (a plain Exception) when the driver lacks a versioned symbol such as the compute processes' _v3."""
    mismatch = getattr(nv, "NVMLLibraryMismatchError", None)
    return (nv.NVMLError, mismatch) if isinstance(mismatch, type) else (nv.NVMLError,)


def nvml_index(device: str, visible: str | None = None) -> int | str:
    """The NVML index (or UUID) of ``cuda``/``cuda:N`` under ``CUDA_VISIBLE_DEVICES`` (``visible``)."""
    _, _, index = device.partition(":")
    n = int(index) if index else 0
    mask = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if mask is None or not mask.strip():
        return n
    entries = [e.strip() for e in mask.split(",") if e.strip()]
    if n >= len(entries):
        raise ValueError(f"{device} is not among CUDA_VISIBLE_DEVICES={mask!r}")
    entry = entries[n]
    return int(entry) if entry.isdigit() else entry


def _text(value: Any) -> str:
    """An NVML string: bytes in older nvidia-ml-py, str in newer."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _handle_by_uuid(nv: Any, uuid: str) -> Any:
    """The NVML handle of a GPU given by UUID as ``CUDA_VISIBLE_DEVICES`` takes it: whole (``GPU-...``,
    ``MIG-...``), or shortened to a prefix that names one GPU, which CUDA accepts and NVML does not."""
    try:
        return nv.nvmlDeviceGetHandleByUUID(uuid)
    except nv.NVMLError:
        matches = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            if _text(nv.nvmlDeviceGetUUID(handle)).startswith(uuid):
                matches.append(handle)
        if len(matches) != 1:
            raise
        return matches[0]


class Telemetry:
    """NVML readings of one GPU over one window: :meth:`start` at the window's start, :meth:`stop`
    at its end. Where NVML cannot be read, :meth:`stop` returns only ``gpu_telemetry_skipped``."""

    def __init__(self, device: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.device = device
        self.clock = clock
        self.problem: str | None = None
        self.notes: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._power_w: list[tuple[float, float]] = []
        self._mem_peak_mb = 0.0
        self._proc_mem_peak_mb: float | None = None
        self._throttles: set[str] = set()
        try:
            self.nv = _nvml()
        except ImportError:
            self.problem = "nvidia-ml-py is not installed (pip install 'bench[gpu]'): no GPU power, energy or memory"
            return
        try:
            self.nv.nvmlInit()
            where = nvml_index(device)
            if isinstance(where, int):
                self.handle = self.nv.nvmlDeviceGetHandleByIndex(where)
            else:
                self.handle = _handle_by_uuid(self.nv, where)
        except (self.nv.NVMLError, ValueError) as exc:
            self.problem = f"NVML cannot read {device}: {exc}"
            return
        # a MIG instance given by its UUID in CUDA_VISIBLE_DEVICES is a MIG handle; a whole GPU may have MIG on
        self.mig = self._try(lambda: bool(self.nv.nvmlDeviceIsMigDeviceHandle(self.handle)), False) or self._try(
            lambda: self.nv.nvmlDeviceGetMigMode(self.handle)[0] == 1, False
        )
        if self.mig:
            self.notes.append(
                "MIG is enabled on this GPU: NVML's power and energy are the whole GPU's, not this instance's, "
                "so they are not reported"
            )

    def _try(self, read: Callable[[], Any], default: Any = None) -> Any:
        try:
            return read()
        except nvml_errors(self.nv):
            return default

    def _state(self) -> dict[str, Any]:
        nv = self.nv
        return {
            "sm_clock_mhz": self._try(lambda: nv.nvmlDeviceGetClockInfo(self.handle, nv.NVML_CLOCK_SM)),
            "mem_clock_mhz": self._try(lambda: nv.nvmlDeviceGetClockInfo(self.handle, nv.NVML_CLOCK_MEM)),
            "temperature_c": self._try(lambda: nv.nvmlDeviceGetTemperature(self.handle, nv.NVML_TEMPERATURE_GPU)),
        }

    def _reasons(self) -> set[str]:
        nv = self.nv
        # the "event" reader since driver 535; every driver has the "throttle" one (same bits)
        mask = None
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            read: Callable[[Any], Any] | None = getattr(nv, name, None)
            if read is not None:
                mask = self._try(functools.partial(read, self.handle))
            if mask is not None:
                break
        mask = mask or 0
        found = set()
        for name, words in THROTTLES.items():
            bit = getattr(nv, f"nvmlClocksEventReason{name}", None) or getattr(nv, f"nvmlClocksThrottleReason{name}", 0)
            if bit and mask & bit:
                found.add(words)
        return found

    def _sample(self) -> None:
        nv, pid = self.nv, os.getpid()
        power = self._try(lambda: nv.nvmlDeviceGetPowerUsage(self.handle))
        memory = self._try(lambda: nv.nvmlDeviceGetMemoryInfo(self.handle))
        processes = self._try(lambda: nv.nvmlDeviceGetComputeRunningProcesses(self.handle))
        with self._lock:
            if power is not None:
                self._power_w.append((self.clock(), power / 1000.0))
            if memory is not None:
                self._mem_peak_mb = max(self._mem_peak_mb, memory.used / 2**20)
            if processes is not None:
                mine = [p.usedGpuMemory for p in processes if p.pid == pid and p.usedGpuMemory is not None]
                if mine:
                    self._proc_mem_peak_mb = max(self._proc_mem_peak_mb or 0.0, sum(mine) / 2**20)
            self._throttles |= self._reasons()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def start(self) -> None:
        if self.problem:
            return
        self.started = self.clock()
        self.at_start = self._state()
        self.energy_start_mj = (
            None if self.mig else self._try(lambda: self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        )
        self._sample()
        self._thread = threading.Thread(target=self._run, name="bench-nvml", daemon=True)
        self._thread.start()

    def stop(self, samples: int) -> dict[str, Any]:
        """The window's figures, ``samples`` being the inferences it served."""
        if self.problem:
            return {"gpu_telemetry_skipped": self.problem}
        ended = self.clock()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        energy_end = None if self.mig else self._try(lambda: self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        at_end = self._state()
        seconds = ended - self.started
        out: dict[str, Any] = {
            "gpu_window_s": seconds,
            "gpu_mem_used_peak_mb": self._mem_peak_mb or None,
            "gpu_proc_mem_peak_mb": self._proc_mem_peak_mb,
            "gpu_sm_clock_mhz_start": self.at_start["sm_clock_mhz"],
            "gpu_sm_clock_mhz_end": at_end["sm_clock_mhz"],
            "gpu_mem_clock_mhz_start": self.at_start["mem_clock_mhz"],
            "gpu_mem_clock_mhz_end": at_end["mem_clock_mhz"],
            "gpu_temperature_c_start": self.at_start["temperature_c"],
            "gpu_temperature_c_end": at_end["temperature_c"],
            "gpu_throttle_reasons": sorted(self._throttles),
        }
        if not self.mig:
            out.update(self._energy(seconds, samples, energy_end))
        if self._proc_mem_peak_mb is None:
            self.notes.append("NVML keeps no per-process memory here (a container, MIG or WSL): device figure only")
        if self._throttles:
            held = ", ".join(sorted(self._throttles))
            self.notes.append(f"the GPU's clocks were held back during the window: {held}")
        if self.notes:
            out["gpu_telemetry_note"] = "; ".join(self.notes)
        with contextlib.suppress(self.nv.NVMLError):
            self.nv.nvmlShutdown()
        return out

    def _energy(self, seconds: float, samples: int, energy_end: Any) -> dict[str, Any]:
        if seconds < MIN_ENERGY_WINDOW_S:
            self.notes.append(
                f"the window ({seconds:.2f} s) is under {MIN_ENERGY_WINDOW_S:g} s: NVML's energy counter refreshes "
                "every 20-100 ms, so no energy is reported"
            )
            return {}
        if self.energy_start_mj is not None and energy_end is not None and energy_end >= self.energy_start_mj:
            joules = (energy_end - self.energy_start_mj) / 1000.0
            source = "counter"
        elif len(self._power_w) >= 2:
            joules = _integrate(self._power_w)
            source = "power x time"
        else:
            self.notes.append("NVML gives neither an energy counter nor power for this GPU")
            return {}
        sampled = [w for _, w in self._power_w]
        return {
            "gpu_energy_j": joules,
            "gpu_power_mean_w": joules / seconds,
            # an independent reading beside the counter's: the two should agree within ~10 %
            "gpu_power_sampled_mean_w": sum(sampled) / len(sampled) if sampled else None,
            "gpu_energy_per_inference_j": joules / samples if samples else None,
            "gpu_energy_source": source,
        }


def _integrate(points: list[tuple[float, float]]) -> float:
    """Joules from (time s, watts) samples, by the trapezoid rule."""
    total = 0.0
    for (t0, w0), (t1, w1) in itertools.pairwise(points):
        total += (t1 - t0) * (w0 + w1) / 2
    return total


def capabilities() -> list[dict[str, Any]] | str:
    """Per GPU, what NVML can read here (``bench doctor``), or why it cannot."""
    try:
        nv = _nvml()
    except ImportError:
        return "nvidia-ml-py is not installed (pip install 'bench[gpu]')"
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        return f"NVML unavailable: {exc}"
    out = []
    try:
        driver = nv.nvmlSystemGetDriverVersion()
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)

            def works(read: Callable[[Any], Any], handle: Any = handle) -> bool:
                try:
                    read(handle)
                except nvml_errors(nv):
                    return False
                return True

            name = nv.nvmlDeviceGetName(handle)
            mig = works(nv.nvmlDeviceGetMigMode) and nv.nvmlDeviceGetMigMode(handle)[0] == 1
            out.append({
                "index": index, "name": _text(name), "driver": _text(driver),
                "energy_counter": works(nv.nvmlDeviceGetTotalEnergyConsumption),
                "power": works(nv.nvmlDeviceGetPowerUsage),
                "process_memory": works(nv.nvmlDeviceGetComputeRunningProcesses),
                "mig": mig,
            })  # fmt: skip
    finally:
        nv.nvmlShutdown()
    return out
