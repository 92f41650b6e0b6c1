"""The machine and software fingerprint recorded in every run's manifest.

Nothing here imports a runtime: versions come from package metadata, hardware from /proc and
``nvidia-smi`` when it exists.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: distributions whose versions identify every result, whatever the backend: bench itself, the array
#: library every input and output goes through, and the plugin machinery. A backend adds its own
#: runtime's (``Backend.packages``); missing ones are recorded as null
CORE_PACKAGES = ("bench", "numpy", "pluggy")
#: CPU flags that change what a runtime can do (vector width, int8 dot products, bf16/fp16 math)
INTERESTING_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile", "avx512_fp16",
)  # fmt: skip


@functools.cache
def cpu_info() -> dict[str, Any]:
    model, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model or platform.processor() or "unknown",
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "flags": sorted(f for f in INTERESTING_FLAGS if f in flags),
        "machine": platform.machine(),
    }


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU flags among INTERESTING_FLAGS (read once from /proc/cpuinfo)."""
    return frozenset(cpu_info()["flags"])


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def machine_of(recorded: Mapping[str, Any]) -> str:
    """What a run's cells depend on of the machine they ran on, in words, from its fingerprint (the
    manifest's ``environment``): the CPU model, the CPUs the run could use (``threads: auto`` is that
    many) and the GPUs."""
    cpu = recorded.get("cpu") or {}
    gpus = [str(g.get("name")) for g in recorded.get("gpus") or [] if isinstance(g, Mapping)]
    text = f"{cpu.get('model') or 'unknown CPU'}, {cpu.get('usable_cpus')} usable CPUs"
    return text + (f", {', '.join(gpus)}" if gpus else "")


def memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def package_versions(names: Sequence[str] = CORE_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


#: environment variables that change what a GPU cell measures: which GPUs and in what order, launches
#: made synchronous (CUDA_LAUNCH_BLOCKING), TF32 forbidden in every NVIDIA library, lazy module loading
GPU_ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_LAUNCH_BLOCKING",
    "NVIDIA_TF32_OVERRIDE",
    "CUDA_MODULE_LOADING",
)


def gpu_env() -> dict[str, str]:
    """The :data:`GPU_ENV_VARS` set in this process's environment (a cell's worker inherits them)."""
    return {var: os.environ[var] for var in GPU_ENV_VARS if var in os.environ}


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs from nvidia-smi (empty where there is none or no driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    query = "name,driver_version,memory.total,uuid"
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    rows = []
    for line in out.stdout.strip().splitlines():
        name, driver, memory, uuid = (part.strip() for part in line.split(","))
        rows.append({"name": name, "driver": driver, "memory": memory, "uuid": uuid})
    return rows


@functools.lru_cache(maxsize=1)
def _gpus_once() -> tuple[dict[str, str], ...]:
    return tuple(gpus())


def cuda_device_problem(device: str) -> str | None:
    """Why a ``cuda`` or ``cuda:N`` cell cannot run here (None: an NVIDIA GPU of that index is visible):
    no GPU that nvidia-smi lists, ``CUDA_VISIBLE_DEVICES`` hiding them all, or an index past the visible
    ones. Cheap (nvidia-smi once a process), and no runtime is imported."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return None
    found = _gpus_once()
    if not found:
        return "no NVIDIA GPU here (nvidia-smi lists none): cuda cells need one; `bench doctor` shows the devices"
    visible = len(found)
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is not None:
        entries = [e for e in mask.split(",") if e.strip()]
        valid = [e for e in entries if not e.strip().lstrip("-").isdigit() or int(e) >= 0]
        visible = min(visible, len(valid))
        if not visible:
            return f"CUDA_VISIBLE_DEVICES={mask!r} hides every NVIDIA GPU here"
    wanted = int(index) if index else 0
    if wanted >= visible:
        return f"{device}: only {visible} NVIDIA GPU(s) visible here (cuda:0..cuda:{visible - 1})"
    return None


def git_commit(path: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout bench runs from (and whether it has uncommitted changes)."""
    where = path or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def fingerprint(packages: Sequence[str] = ()) -> dict[str, Any]:
    """Everything that makes a number from this machine comparable (or not) with another's.

    ``packages``: the runtime distributions of the registered backends
    (:meth:`harness.pluginmanager.Registries.runtime_packages`), recorded beside the core ones."""
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cpu": cpu_info(),
        "memory_total_mb": memory_total_mb(),
        "gpus": gpus(),
        "gpu_env": gpu_env(),
        "packages": package_versions(list(dict.fromkeys([*CORE_PACKAGES, *packages]))),
        "git": git_commit(),
    }
