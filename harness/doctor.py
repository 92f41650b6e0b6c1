"""``bench doctor``: what this machine can run, and what would spoil a measurement on it.

Each runtime is probed in a subprocess of its own (a runtime whose import crashes or hangs cannot
take the CLI with it, and the CLI process never imports a runtime).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import environment
from harness.executors.local import THREAD_ENV_VARS

#: CPU features that decide which precisions run natively, with what they enable
FEATURES = {
    "AVX2": (("avx2",), "256-bit vectors: the baseline every runtime's fast path needs"),
    "AVX-512": (("avx512f",), "512-bit vectors"),
    "VNNI": (("avx512_vnni", "avx_vnni"), "int8 dot products (without it int8 saturates: use reduce_range)"),
    "AMX": (("amx_tile",), "matrix tiles: bf16 and int8 matrix multiplies in hardware"),
    "bf16": (("avx512_bf16", "amx_bf16"), "native bf16 math (else bf16 is emulated or skipped)"),
    "fp16": (("avx512_fp16",), "native fp16 math on the CPU"),
}

#: one probe per runtime: prints a JSON object on its last line
PROBES = {
    "torch": """
import json, torch
info = {"version": torch.__version__, "threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(), "cuda_build": torch.version.cuda}
if torch.cuda.is_available():
    info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
try:
    info["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
except Exception:
    pass
print(json.dumps(info))
""",
    "onnxruntime": """
import json, onnxruntime as ort
print(json.dumps({"version": ort.__version__, "providers": ort.get_available_providers(),
                  "device": ort.get_device()}))
""",
    "openvino": """
import json, openvino as ov
core = ov.Core()
info = {"version": ov.get_version(), "devices": core.available_devices}
try:
    info["cpu_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    info["cpu_default_precision"] = core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
except Exception as exc:
    info["cpu_error"] = str(exc)
print(json.dumps(info))
""",
    "tensorrt": """
import json, tensorrt as trt
print(json.dumps({"version": trt.__version__}))
""",
}


def probe_runtime(name: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Import one runtime in a subprocess and report what it says about itself."""
    from importlib.util import find_spec

    if find_spec(name) is None:
        return {"installed": False}
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROBES[name]], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"installed": True, "error": f"importing {name} took over {timeout_s:.0f} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"installed": True, "error": f"import failed (exit {out.returncode}): {tail}"}
    return {"installed": True, **json.loads(lines[-1])}


def cpu_features() -> dict[str, bool]:
    flags = environment.cpu_flags()
    return {name: any(f in flags for f in needed) for name, (needed, _) in FEATURES.items()}


def busy_fraction(window_s: float = 0.5) -> float | None:
    """CPU share other processes used during a short wait (0 = idle machine, 1 = every CPU busy)."""
    from harness.measure import noise

    start = noise.sample()
    time.sleep(window_s)
    return noise.between(start, noise.sample(), window_s, environment.usable_cpus()).other_fraction


def governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


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
            "(bench flags and re-measures noisy cells); stop them for numbers to trust"
        )
    gov = report["cpu_governor"]
    if gov is not None and gov != "performance":
        found.append(f"CPU frequency governor is '{gov}': clocks may vary between cells; 'performance' is steadier")
    torch_info = report["runtimes"].get("torch", {})
    if report["gpus"] and torch_info.get("installed") and not torch_info.get("cuda_available"):
        found.append("an NVIDIA GPU is present but the installed torch has no CUDA: pytorch cuda cells will skip")
    ov = report["runtimes"].get("openvino", {})
    if ov.get("cpu_default_precision") not in (None, "f32"):
        found.append(
            f"OpenVINO runs CPU models in {ov['cpu_default_precision']} unless told otherwise: "
            "bench sets the precision of every openvino cell explicitly"
        )
    return found


def diagnose() -> dict[str, Any]:
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpu": environment.cpu_info(),
        "cpu_features": cpu_features(),
        "memory_total_mb": environment.memory_total_mb(),
        "gpus": environment.gpus(),
        "cpu_governor": governor(),
        "thread_env": {var: os.environ[var] for var in THREAD_ENV_VARS if var in os.environ},
        "runtimes": {name: probe_runtime(name) for name in PROBES},
        "other_processes_busy": busy_fraction(),
    }
    report["warnings"] = warnings_for(report)
    return report


def _runtime_line(name: str, info: dict[str, Any]) -> str:
    if not info.get("installed"):
        return f"  {name:<12} not installed (pip install 'bench[{name}]')"
    if "error" in info:
        return f"  {name:<12} installed, but {info['error']}"
    details = []
    if name == "torch":
        cuda = ", ".join(info.get("cuda_devices", [])) or "no CUDA device"
        details.append(f"cuda {info.get('cuda_build') or 'not built in'} ({cuda}); default threads {info['threads']}")
    elif name == "onnxruntime":
        details.append("providers " + ", ".join(info.get("providers", [])))
    elif name == "openvino":
        details.append("devices " + ", ".join(info.get("devices", [])))
        if "cpu_capabilities" in info:
            details.append("CPU capabilities " + ", ".join(info["cpu_capabilities"]))
        if "cpu_default_precision" in info:
            details.append(f"CPU default precision {info['cpu_default_precision']}")
    return f"  {name:<12} {info['version']}: " + "; ".join(details)


def render(report: dict[str, Any]) -> str:
    cpu = report["cpu"]
    mem = report["memory_total_mb"]
    lines = [
        f"machine      {cpu['model']} ({cpu['machine']}), {cpu['usable_cpus']} usable of {cpu['logical_cpus']} CPUs, "
        + (f"{mem / 1024:.1f} GiB" if mem else "memory unknown"),
        "gpus         "
        + (", ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in report["gpus"]) or "none"),
        f"python       {report['python']}",
        "cpu features",
    ]
    for name, present in report["cpu_features"].items():
        lines.append(f"  {'yes' if present else 'no ':<4} {name:<8} {FEATURES[name][1]}")
    thread_vars = ", ".join(f"{k}={v}" for k, v in report["thread_env"].items()) or "no thread vars set"
    lines.append(
        f"threads      {thread_vars}; bench sets each worker's threads from the scenario (auto = {cpu['usable_cpus']})"
    )
    busy = report["other_processes_busy"]
    lines.append("other load   " + ("unknown" if busy is None else f"{busy:.1%} of the CPUs busy elsewhere"))
    lines.append("runtimes")
    lines.extend(_runtime_line(name, info) for name, info in report["runtimes"].items())
    lines.append("warnings" if report["warnings"] else "warnings     none")
    lines.extend(f"  - {w}" for w in report["warnings"])
    return "\n".join(lines)
