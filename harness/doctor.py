"""``bench doctor``: what this machine can run, and what would spoil a measurement on it.

The runtimes are those the registered backends declare (``Backend.packages``); each backend that
can say more about its runtime (``Backend.probe``) is asked in a subprocess of its own (a runtime
whose import crashes or hangs cannot take the CLI with it, and the CLI process never imports a
runtime).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness import environment
from harness.api import Backend
from harness.executors.local import THREAD_ENV_VARS
from harness.registry import safe_availability

if TYPE_CHECKING:
    from harness.pluginmanager import Registries

#: CPU features that decide which precisions run natively, with what they enable
FEATURES = {
    "AVX2": (("avx2",), "256-bit vectors: the baseline every runtime's fast path needs"),
    "AVX-512": (("avx512f",), "512-bit vectors"),
    "VNNI": (("avx512_vnni", "avx_vnni"), "int8 dot products (without it int8 saturates: use reduce_range)"),
    "AMX": (("amx_tile",), "matrix tiles: bf16 and int8 matrix multiplies in hardware"),
    "bf16": (("avx512_bf16", "amx_bf16"), "native bf16 math (else bf16 is emulated or skipped)"),
    "fp16": (("avx512_fp16",), "native fp16 math on the CPU"),
}


def probe_backend(
    name: str, plugins: Sequence[str] = (), autoload: bool | None = None, timeout_s: float = 60.0
) -> dict[str, Any]:
    """``Backend.probe()`` of backend ``name``, called in a subprocess that loads the same plugins
    (a runtime whose import crashes or hangs cannot take the CLI with it); ``{"error": ...}`` when
    it fails."""
    job = json.dumps({"backend": name, "plugins": list(plugins), "autoload": autoload})
    code = "import sys; from harness.doctor import _probe_main; _probe_main(sys.argv[1])"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, job], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"probing backend '{name}' took over {timeout_s:.0f} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"its probe failed (exit {out.returncode}): {tail}"}
    try:
        found = json.loads(lines[-1])
    except ValueError:
        return {"error": f"its probe printed no JSON: {lines[-1][:200]}"}
    return found if isinstance(found, dict) else {"error": f"its probe returned {type(found).__name__}, not a dict"}


def _probe_main(job_json: str) -> None:
    """The probe subprocess: the backend's probe() as JSON on the last line of stdout."""
    from harness.pluginmanager import registries

    job = json.loads(job_json)
    regs = registries(job["plugins"], autoload=job["autoload"], strict=False)
    found = regs.backends.get(job["backend"]).probe()
    sys.stdout.write("\n" + json.dumps(found, default=str) + "\n")


def _overrides_probe(cls: type[Backend]) -> bool:
    """Whether the backend has more to say than :meth:`Backend.probe`'s nothing (a subprocess saved)."""
    return any("probe" in vars(klass) for klass in cls.__mro__[: cls.__mro__.index(Backend)])


def _backend_state(cls: type[Backend]) -> dict[str, Any]:
    avail = safe_availability(cls)
    return {"available": avail.ok, "reason": avail.reason or None, "packages": list(cls.packages)}


def runtimes(regs: Registries, plugins: Sequence[str] = (), autoload: bool | None = None) -> dict[str, dict[str, Any]]:
    """Each runtime distribution the backends declare (``Backend.packages``): installed or not, its
    version, the backends that use it, and what the probe of the backend says (``Backend.probe``,
    only where it is available and overrides it) on its first installed package."""
    found: dict[str, dict[str, Any]] = {}
    for cls in regs.backends.classes():
        versions = environment.package_versions(cls.packages)
        for package, version in versions.items():
            entry = found.setdefault(package, {"installed": version is not None, "version": version, "backends": []})
            entry["backends"].append(cls.name)
        if not cls.packages or not _overrides_probe(cls) or not safe_availability(cls).ok:
            continue
        home = next((package for package, version in versions.items() if version is not None), cls.packages[0])
        facts = probe_backend(cls.name, plugins, autoload)
        found[home].update({**facts, "installed": True, "version": found[home]["version"] or facts.get("version")})
    return found


def cpu_features() -> dict[str, bool]:
    flags = environment.cpu_flags()
    return {name: any(f in flags for f in needed) for name, (needed, _) in FEATURES.items()}


def _cpu_defaults() -> dict[str, Any]:
    """The scenario's cpu settings when a scenario sets none (what every run records in its manifest)."""
    from harness.scenario.schema import CpuSettings

    return CpuSettings().model_dump()


def warnings_for(report: dict[str, Any]) -> list[str]:
    """What would make this machine's numbers wrong or hard to compare, each with the fix."""
    found = []
    cpus = report["cpu"]["usable_cpus"]
    for var, value in report["thread_env"].items():
        if value.isdigit() and int(value) > cpus:
            found.append(f"{var}={value} is more threads than the {cpus} usable CPUs: expect p99 spikes; unset it")
    if cpus < (report["cpu"]["logical_cpus"] or cpus):
        found.append(
            f"this process may use {cpus} of {report['cpu']['logical_cpus']} CPUs (affinity): "
            "threads: auto follows the usable ones"
        )
    busy = report["other_processes_busy"]
    if busy is not None and busy > 0.10:
        found.append(
            f"other processes used {busy:.0%} of the CPUs while doctor watched: measurements will be noisy "
            "(bench waits for quiet, measures disturbed cells again and marks what stays disturbed untrusted); "
            "stop them for numbers to trust, or where a neighbour cannot be stopped use cpu: {reserve: 1, pin: true} "
            "(steadier beside it, slower alone: README, Threads and a busy machine)"
        )
    gov = report["cpu_governor"]
    if gov is not None and gov != "performance":
        found.append(f"CPU frequency governor is '{gov}': clocks may vary between cells; 'performance' is steadier")
    gpu_env = report.get("gpu_env") or {}
    if gpu_env.get("CUDA_LAUNCH_BLOCKING", "0") not in ("", "0"):
        found.append(
            f"CUDA_LAUNCH_BLOCKING={gpu_env['CUDA_LAUNCH_BLOCKING']} makes every CUDA launch wait for the GPU: "
            "GPU cells would time serialised launches (enqueue = compute), not the runtime; unset it"
        )
    if gpu_env.get("NVIDIA_TF32_OVERRIDE") == "0":
        found.append(
            "NVIDIA_TF32_OVERRIDE=0 turns TF32 off in every NVIDIA library: GPU cells with tf32: true get none "
            "(their tf32_note says so); unset it to compare TF32"
        )
    for name, info in report["runtimes"].items():
        if report["gpus"] and info.get("installed") and info.get("cuda_available") is False:
            users = ", ".join(info.get("backends") or [name])
            found.append(f"an NVIDIA GPU is present but the installed {name} has no CUDA: {users} cuda cells will skip")
        found.extend(info.get("warnings") or [])
    found.extend(report.get("plugin_failures") or [])
    return found


def diagnose(plugins: Sequence[str] = ()) -> dict[str, Any]:
    from harness.measure.noise import machine_state
    from harness.pluginmanager import explicit_plugins, registries

    state = machine_state()
    names = explicit_plugins(plugins)
    regs = registries(names, strict=False)  # a broken plugin is one of the findings, not the end of them
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpu": environment.cpu_info(),
        "cpu_features": cpu_features(),
        "memory_total_mb": environment.memory_total_mb(),
        "gpus": environment.gpus(),
        "gpu_telemetry": _gpu_telemetry(),
        "cpu_governor": state["governor"],
        "thread_env": {var: os.environ[var] for var in THREAD_ENV_VARS if var in os.environ},
        "gpu_env": environment.gpu_env(),
        "backends": {cls.name: _backend_state(cls) for cls in regs.backends.classes()},
        "runtimes": runtimes(regs, names),
        "plugin_failures": [str(failure) for failure in regs.failures],
        "other_processes_busy": state["others_fraction"],
        "machine_state": state,
        "cpu_defaults": _cpu_defaults(),
    }
    report["warnings"] = warnings_for(report)
    return report


def _gpu_telemetry() -> list[dict[str, Any]] | str:
    from harness.measure.gpu_telemetry import capabilities

    return capabilities()


def _telemetry_line(found: list[dict[str, Any]] | str | None) -> str:
    """What NVML can read per GPU: the energy counter, power, per-process memory, MIG."""
    if found is None or isinstance(found, str):
        return str(found or "not read")
    if not found:
        return "NVML finds no GPU"
    parts = []
    for gpu in found:
        can = [what for what in ("energy_counter", "power", "process_memory") if gpu.get(what)]
        parts.append(
            f"#{gpu['index']} {gpu['name']}: "
            + (", ".join(w.replace("_", " ") for w in can) or "nothing readable")
            + ("; MIG on (no energy or power per instance)" if gpu.get("mig") else "")
        )
    return "; ".join(parts)


def _runtime_line(name: str, info: dict[str, Any]) -> str:
    users = f" (backend {', '.join(info['backends'])})" if info.get("backends") else ""
    if not info.get("installed"):
        return f"  {name:<15} not installed{users}"
    if "error" in info:
        return f"  {name:<15} {info.get('version') or 'installed'}, but {info['error']}{users}"
    summary = f": {info['summary']}" if info.get("summary") else ""
    return f"  {name:<15} {info.get('version')}{summary}{users}"


def _backend_line(name: str, info: dict[str, Any]) -> str:
    state = "available" if info["available"] else f"unavailable: {info['reason']}"
    return f"  {name:<15} {state}"


def render(report: dict[str, Any]) -> str:
    cpu = report["cpu"]
    mem = report["memory_total_mb"]
    lines = [
        f"machine      {cpu['model']} ({cpu['machine']}), {cpu['usable_cpus']} usable of {cpu['logical_cpus']} CPUs, "
        + (f"{mem / 1024:.1f} GiB" if mem else "memory unknown"),
        "gpus         "
        + (", ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in report["gpus"]) or "none"),
        "nvml         " + _telemetry_line(report.get("gpu_telemetry")),
        f"python       {report['python']}",
        "cpu features",
    ]
    for name, present in report["cpu_features"].items():
        lines.append(f"  {'yes' if present else 'no ':<4} {name:<8} {FEATURES[name][1]}")
    thread_vars = ", ".join(f"{k}={v}" for k, v in report["thread_env"].items()) or "no thread vars set"
    lines.append(
        f"threads      {thread_vars}; bench sets each worker's threads from the scenario (auto = {cpu['usable_cpus']})"
    )
    gpu_vars = ", ".join(f"{k}={v}" for k, v in (report.get("gpu_env") or {}).items()) or "no CUDA variables set"
    lines.append(f"gpu env      {gpu_vars} (a cell's worker inherits them; bench sets CUDA_DEVICE_ORDER=PCI_BUS_ID)")
    busy = report["other_processes_busy"]
    lines.append("other load   " + ("unknown" if busy is None else f"{busy:.1%} of the CPUs busy elsewhere"))
    state = report["machine_state"]
    steal = state["steal_fraction"]
    load = state["loadavg"]
    lines.append(
        "machine      "
        + ("steal unknown" if steal is None else f"steal {steal:.1%} (CPU time the hypervisor gave other VMs)")
        + ("" if load is None else f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        + ("" if state["cpu_mhz"]["current"] is None else f"; cpu0 at {state['cpu_mhz']['current']:.0f} MHz")
    )
    cpu = report["cpu_defaults"]
    lines.append(
        f"cpu defaults reserve {cpu['reserve']}, pin {'on' if cpu['pin'] else 'off'}, wait {cpu['wait']} "
        "(the runtimes' own; a scenario's cpu: block overrides; beside a neighbour reserve 1 + pin keeps "
        "throughput, at a cost alone)"
    )
    lines.append("backends" if report["backends"] else "backends     none registered")
    lines.extend(_backend_line(name, info) for name, info in report["backends"].items())
    lines.append("runtimes" if report["runtimes"] else "runtimes     none declared by the backends")
    lines.extend(_runtime_line(name, info) for name, info in report["runtimes"].items())
    lines.append("warnings" if report["warnings"] else "warnings     none")
    lines.extend(f"  - {w}" for w in report["warnings"])
    return "\n".join(lines)
