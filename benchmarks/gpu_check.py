"""One command that checks bench's GPU paths on a machine with an NVIDIA GPU, in a few minutes:

1. what is here: GPUs (nvidia-smi), torch's CUDA, onnxruntime's providers, what NVML can read, trtexec;
2. the conformance suite on every GPU backend and precision (outputs against the fp32 reference):
   ``pytest tests/conformance -k cuda``, its passes, failures and skips with their reasons;
3. timing truth: bench's CUDA-event median per call (``gpu_compute_p50_ms``) for PyTorch eager on
   ``cuda`` (dlrm-small fp32, batch 1 and 64) against a bare loop of the same module on the same
   inputs with CUDA events around each call (target bare / bench >= 0.97), and the same for the wall
   clock (a synchronize after each call, as bench does); trtexec's warnings where bench gave them;
4. NVML's energy: J/inference x throughput against NVML's sampled mean power, within 10 %;
5. TensorRT: bench's tensorrt backend (dlrm-small fp32 b64), its engine's layer precisions, and its
   throughput against trtexec's on the same ONNX file and shapes where trtexec is installed (>= 0.95).

On a machine without a GPU every check says why it is skipped, and the script exits 0.
Run: .venv/bin/python benchmarks/gpu_check.py [--window-s 3] [--skip-conformance]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIO = """\
name: gpu-check
model: dlrm-small
backends: [{{name: pytorch, options: {{mode: eager}}}}]
devices: [cuda]
precisions: [fp32]
batch_sizes: [1, 64]
threads: 1
measurement: {{warmup_s: 0.5, min_duration_s: {window}, max_duration_s: {window}, ci_rel_width: null,
               quiet_wait_s: 0, max_attempts: 1}}
fidelity: {{samples: 0}}
"""


def facts() -> dict[str, Any]:
    from harness import environment
    from harness.measure.gpu_telemetry import capabilities

    out: dict[str, Any] = {"gpus": environment.gpus(), "nvml": capabilities(), "trtexec": shutil.which("trtexec")}
    try:
        import torch

        out["torch"] = {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "available": torch.cuda.is_available(),
        }
    except ImportError:
        out["torch"] = "not installed"
    try:
        import onnxruntime as ort

        out["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError:
        out["onnxruntime"] = "not installed"
    return out


def conformance() -> tuple[str, list[str]]:
    """The suite's cuda cases: a summary line and the skip reasons."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/conformance", "-q", "-k", "cuda", "-rs", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    skips = [line for line in lines if line.startswith("SKIPPED")]
    failures = [line for line in lines if line.startswith("FAILED")]
    return (lines[-1] if lines else f"pytest exited {proc.returncode}"), failures + skips


def bench_cells(window: float, text: str = SCENARIO) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    scenario = folder / "gpu-check.yaml"
    scenario.write_text(text.format(window=window))
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(scenario), "--out", str(folder / "r"), "--no-report"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    runs = [p for p in (folder / "r").iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not runs:
        raise SystemExit(f"bench run made no run folder ({proc.returncode}):\n{proc.stderr[-2000:]}")
    lines = (runs[0] / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def bare_loop(batch_size: int, seconds: float) -> dict[str, float]:
    """The same dlrm-small module on cuda, timed the way bench times a call (wall clock around the call
    and a synchronize), with CUDA events for the GPU's own time."""
    import torch

    from harness.input_data import build_model
    from harness.pluginmanager import registries

    regs = registries(())
    model = build_model(regs.models.get("dlrm-small"), {}, None)
    module = model.build_torch().eval().to("cuda")
    inputs = {k: torch.as_tensor(v).to("cuda") for k, v in model.example_inputs(batch_size, 0).items()}
    walls, gpu = [], []
    with torch.inference_mode():
        for _ in range(50):
            module(**inputs)
        torch.cuda.synchronize()
        end_at = time.perf_counter() + seconds
        while time.perf_counter() < end_at:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter_ns()
            start.record()
            module(**inputs)
            stop.record()
            torch.cuda.synchronize()
            walls.append((time.perf_counter_ns() - t0) / 1e6)
            gpu.append(start.elapsed_time(stop))
    return {"p50_ms": statistics.median(walls), "gpu_p50_ms": statistics.median(gpu), "calls": len(walls)}


TRT_SCENARIO = """\
name: gpu-check-trt
model: dlrm-small
backends: [{{name: tensorrt}}]
devices: [cuda]
precisions: [fp32]
batch_sizes: [64]
threads: 1
measurement: {{warmup_s: 0.5, min_duration_s: {window}, max_duration_s: {window}, ci_rel_width: null,
               quiet_wait_s: 0, max_attempts: 1}}
fidelity: {{samples: 0}}
"""


def tensorrt_check(cuda: bool, window: float, trtexec: str | None) -> None:
    """bench's tensorrt throughput against trtexec's on the same ONNX file and batch (target >= 0.95)."""
    from plugins.tensorrt_backend import TensorRTBackend

    found = TensorRTBackend.availability()
    if not cuda or not found.ok:
        print(f"5. TensorRT: skipped: {'no CUDA device visible to torch' if not cuda else found.reason}")
        return
    records = bench_cells(window, TRT_SCENARIO)
    record = records[0]
    if record["status"] != "ok":
        print(f"5. TensorRT: bench's cell {record['status']}: {record.get('reason')}")
        return
    info = record.get("info") or {}
    print(f"5. TensorRT b64: bench {record['throughput_sps']:,.0f} samples/s, p50 {record['p50_ms']:.4f} ms, "
          f"executed {info.get('executed_precision')} {info.get('layer_precisions')}")  # fmt: skip
    if not trtexec:
        print("   trtexec: skipped: not installed")
        return
    shapes = ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in _input_shapes(64).items())
    proc = subprocess.run([trtexec, f"--onnx={info.get('model_file')}", f"--shapes={shapes}", "--noDataTransfers",
                           f"--duration={int(window)}"], capture_output=True, text=True, check=False)  # fmt: skip
    qps = [line.split("Throughput:")[1].split()[0] for line in proc.stdout.splitlines() if "Throughput:" in line]
    if not qps:
        print(f"   trtexec: no throughput in its output (exit {proc.returncode})")
        return
    ratio = record["throughput_sps"] / (float(qps[-1]) * 64)
    print(f"   trtexec {float(qps[-1]) * 64:,.0f} samples/s: bench/trtexec {ratio:.3f} (target >= 0.95) "
          f"{'ok' if ratio >= 0.95 else 'MISSED'}")  # fmt: skip
    compute = [line for line in proc.stdout.splitlines() if "GPU Compute Time:" in line and "median =" in line]
    if compute:
        median = compute[-1].split("median =")[1].split()[0]
        warned = record.get("gpu_timing_warnings") or "none"
        print(f"   GPU compute median: trtexec {median} ms, bench's CUDA events {record.get('gpu_compute_p50_ms')} ms "
              f"(enqueue {record.get('enqueue_mean_ms')} ms; warnings: {warned})")  # fmt: skip


def _input_shapes(batch: int) -> dict[str, list[int]]:
    from harness.input_data import build_model
    from harness.pluginmanager import registries

    model = build_model(registries(()).models.get("dlrm-small"), {}, None)
    return {name: list(array.shape) for name, array in model.example_inputs(batch, 0).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--skip-conformance", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    started = time.monotonic()
    here = facts()
    print("1. here:", json.dumps(here, default=str))
    cuda = isinstance(here["torch"], dict) and here["torch"]["available"]
    if args.skip_conformance:
        print("2. conformance: skipped (--skip-conformance)")
    else:
        summary, notes = conformance()
        print(f"2. conformance (pytest tests/conformance -k cuda): {summary}")
        for line in notes:
            print(f"   {line[:240]}")
    if not cuda:
        why = "no CUDA device visible to torch" if isinstance(here["torch"], dict) else "torch is not installed"
        print(f"3. timing truth: skipped: {why}")
        print(f"4. NVML energy: skipped: {why}")
    else:
        records = {r["config"]["batch_size"]: r for r in bench_cells(args.window_s)}
        for batch, record in sorted(records.items()):
            if record["status"] != "ok":
                print(f"3. timing truth b{batch}: bench's cell {record['status']}: {record.get('reason')}")
                continue
            bare = bare_loop(batch, args.window_s)
            ratio = bare["p50_ms"] / record["p50_ms"]
            events = record.get("gpu_compute_p50_ms")
            if events:
                gpu_ratio = bare["gpu_p50_ms"] / events
                cv, enqueue = record.get("gpu_compute_cv") or 0.0, record.get("enqueue_mean_ms") or 0.0
                warned = record.get("gpu_timing_warnings") or "none"
                print(
                    f"3. timing truth b{batch}: CUDA events: bench p50 {events:.4f} ms ({record['gpu_timed_calls']} "
                    f"calls, CV {cv:.1%}, enqueue {enqueue:.4f} ms), bare loop {bare['gpu_p50_ms']:.4f} ms: "
                    f"bare/bench {gpu_ratio:.3f} (target >= 0.97) {'ok' if gpu_ratio >= 0.97 else 'MISSED'}; "
                    f"warnings: {warned}"
                )
            else:
                print(f"3. timing truth b{batch}: no CUDA-event times in bench's record: "
                      f"{record.get('gpu_timing_skipped')}")  # fmt: skip
            print(
                f"3. timing truth b{batch}: wall clock: bench p50 {record['p50_ms']:.4f} ms, bare loop p50 "
                f"{bare['p50_ms']:.4f} ms ({bare['calls']} calls): bare/bench {ratio:.3f} (target >= 0.97) "
                f"{'ok' if ratio >= 0.97 else 'MISSED'}"
            )
            energy, sampled = record.get("gpu_energy_per_inference_j"), record.get("gpu_power_sampled_mean_w")
            if energy is None or not sampled:
                why = record.get("gpu_telemetry_skipped") or record.get("gpu_telemetry_note")
                print(f"4. NVML energy b{batch}: not measured: {why}")
                continue
            implied = energy * record["throughput_sps"]
            off = implied / sampled - 1
            print(
                f"4. NVML energy b{batch}: {energy:.3e} J/inference x {record['throughput_sps']:,.0f}/s = "
                f"{implied:.1f} W against {sampled:.1f} W sampled ({record['gpu_energy_source']}): {off:+.1%} "
                f"(target within 10 %) {'ok' if abs(off) <= 0.10 else 'MISSED'}"
            )
    tensorrt_check(cuda, args.window_s, here["trtexec"])
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
