"""One command that checks bench's GPU paths on a machine with an NVIDIA GPU, in a few minutes:

1. what is here: GPUs (nvidia-smi), torch's CUDA, onnxruntime's providers, what NVML can read, trtexec;
   and ``bench doctor``'s whole output;
2. the conformance suite on every GPU backend and precision (outputs against the fp32 reference),
   and the backends' and telemetry's own GPU tests (``GPU_TESTS``): passes, failures and skips with
   their reasons;
3. timing truth: bench's CUDA-event median per call (``gpu_compute_p50_ms``) for PyTorch eager on
   ``cuda`` (dlrm-small fp32, batch 1 and 64) against a bare loop of the same module on the same
   inputs with CUDA events around each call (target bare / bench within 0.97-1.03: a bench
   that reads less time than the bare loop measures too little), and the same for the wall
   clock (a synchronize after each call, as bench does); trtexec's warnings where bench gave them;
   The same for onnxruntime's CUDA provider (dlrm-small fp32 b64): bench's wall-clock p50 against a
   bare ``run_with_iobinding`` loop on the same ONNX file (0.97-1.03), beside bench's CUDA-event time on
   the stream it hands onnxruntime;
4. NVML's energy: J/inference x throughput against NVML's sampled mean power, within 10 %;
5. TensorRT: bench's tensorrt backend (dlrm-small fp32 b64), its engine's layer precisions, and its
   throughput against trtexec's on the same ONNX file and shapes where trtexec is installed (>= 0.95);
6. with ``--report-dir DIR``: each of those runs' HTML report in DIR, and whether it shows the
   energy chart.

On a machine without a GPU every check says why it is skipped, and the script exits 0; it exits 1
where a check raised (printed as FAILED, the others still run).
Run: .venv/bin/python benchmarks/gpu_check.py [--window-s 3] [--skip-conformance] [--report-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
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


def band(ratio: float, low: float = 0.97) -> str:
    """A bare/bench ratio judged both ways: below ``low`` bench adds time; above 1/low bench reads less
    time than the bare loop, which means it measures too little (a missing synchronisation, events on
    another stream), not that it is faster."""
    if ratio < low:
        return "MISSED: bench adds time"
    if ratio > 1 / low:
        return "MISSED: bench reads less than the bare loop (it measures too little)"
    return "ok"


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


#: the tests a GPU machine runs: the conformance suite's cuda cases, and the backends' and the
#: telemetry's own GPU tests (each skips with its reason where no GPU is visible)
GPU_TESTS = ["tests/conformance", "tests/plugins", "tests/harness/measure", "-k", "cuda or gpu"]


def doctor() -> None:
    """``bench doctor`` as a user sees it: its GPU, NVML, CUDA-variable and runtime lines on a machine
    that has a GPU, which no CPU test shows."""
    proc = subprocess.run([sys.executable, "-m", "harness", "doctor"], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300)  # fmt: skip
    print(f"1b. bench doctor (exit {proc.returncode}):")
    for line in (proc.stdout + proc.stderr[-2000:]).splitlines():
        print(f"   {line}")


def conformance() -> tuple[str, list[str]]:
    """The GPU tests (``GPU_TESTS``): a summary line, the failures and the skip reasons."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *GPU_TESTS, "-q", "-rfEs", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    skips = [line for line in lines if line.startswith("SKIPPED")]
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return (lines[-1] if lines else f"pytest exited {proc.returncode}"), failures + skips


#: the run folders bench_cells made, in order: their reports are rendered at the end (--report-dir)
RUNS: list[Path] = []


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
        raise RuntimeError(f"bench run made no run folder ({proc.returncode}):\n{proc.stderr[-2000:]}")
    RUNS.append(runs[0])
    lines = (runs[0] / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


#: what a report of GPU cells shows that one of CPU cells does not (harness.report.charts)
GPU_REPORT_MARKS = {"energy chart": "GPU energy per inference"}


def reports(folder: Path) -> None:
    """Each run's HTML report in ``folder``, and whether its GPU parts (the energy chart) are in it:
    real GPU records through the report, which no CPU test can give."""
    folder.mkdir(parents=True, exist_ok=True)
    for run in RUNS:
        html = folder / f"{run.name}.html"
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "report", str(run), "-o", str(html)],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not html.is_file():
            print(f"6. report {run.name}: bench report exited {proc.returncode}: {proc.stderr[-500:]}")
            continue
        text = html.read_text()
        shown = ", ".join(f"{name} {'yes' if mark in text else 'no'}" for name, mark in GPU_REPORT_MARKS.items())
        print(f"6. report {run.name}: {html} ({html.stat().st_size / 1e6:.1f} MB): {shown}")


def bare_loop(batch_size: int, seconds: float) -> dict[str, float]:
    """The same dlrm-small module on cuda, timed the way bench times a call (wall clock around the call
    and a synchronize), with CUDA events for the GPU's own time."""
    import torch

    model = _dlrm()
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


ORT_SCENARIO = TRT_SCENARIO.replace("gpu-check-trt", "gpu-check-ort").replace("name: tensorrt", "name: onnxruntime")


def ort_bare_loop(model_file: str, batch_size: int, seconds: float) -> dict[str, float]:
    """onnxruntime's CUDA provider on the same ONNX file, inputs and outputs bound on the GPU, timed as
    bench times a call (wall clock around run_with_iobinding and its synchronisation), on
    onnxruntime's own stream."""
    import onnxruntime as ort

    model = _dlrm()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as bench's cell (threads: 1), and fp32 without TF32 as bench's
    cuda = {"device_id": 0, "use_tf32": "0"}
    sess = ort.InferenceSession(model_file, options, providers=[("CUDAExecutionProvider", cuda)])
    binding = sess.io_binding()
    keep = []
    for name, array in model.example_inputs(batch_size, 0).items():
        keep.append(ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_ortvalue_input(name, keep[-1])
    for output in sess.get_outputs():
        binding.bind_output(output.name, "cuda", 0)
    walls = []
    for _ in range(50):
        sess.run_with_iobinding(binding)
    binding.synchronize_outputs()
    end_at = time.perf_counter() + seconds
    while time.perf_counter() < end_at:
        t0 = time.perf_counter_ns()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        walls.append((time.perf_counter_ns() - t0) / 1e6)
    return {"p50_ms": statistics.median(walls), "calls": len(walls)}


def ort_check(window: float, providers: list[str]) -> None:
    """bench's onnxruntime CUDA cell against a bare loop of the same session (target 0.97-1.03)."""
    if "CUDAExecutionProvider" not in providers:
        print("3b. onnxruntime CUDA: skipped: this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)")
        return
    record = bench_cells(window, ORT_SCENARIO)[0]
    if record["status"] != "ok":
        print(f"3b. onnxruntime CUDA b64: bench's cell {record['status']}: {record.get('reason')}")
        return
    info = record.get("info") or {}
    bare = ort_bare_loop(str(info.get("model_file")), 64, window)
    ratio = bare["p50_ms"] / record["p50_ms"]
    events = record.get("gpu_compute_p50_ms")
    said = (f"CUDA events {events:.4f} ms (enqueue {record.get('enqueue_mean_ms'):.4f} ms, warnings: "
            f"{record.get('gpu_timing_warnings') or 'none'})" if events else
            f"no CUDA events: {record.get('gpu_timing_skipped')}")  # fmt: skip
    print(
        f"3b. onnxruntime CUDA b64: wall clock: bench p50 {record['p50_ms']:.4f} ms on its own stream, bare loop "
        f"{bare['p50_ms']:.4f} ms ({bare['calls']} calls): bare/bench {ratio:.3f} (target 0.97-1.03) "
        f"{band(ratio)}; {said}"
    )


#: trtexec's summary lines (sampleReporting.cpp): "Throughput: 1234.5 qps", "GPU Compute Time: min = ...,
#: median = 0.123 ms, ..."; with --verbose it also prints lines of prose that start the same way
TRTEXEC_QPS = re.compile(r"Throughput: ([0-9.eE+-]+) qps")
TRTEXEC_COMPUTE_MEDIAN = re.compile(r"GPU Compute Time: .*median = ([0-9.eE+-]+) ms")


def trtexec_numbers(text: str) -> dict[str, float]:
    """trtexec's throughput (queries/s) and GPU compute median (ms) from its output; absent keys where
    it printed none."""
    out = {}
    qps, compute = TRTEXEC_QPS.findall(text), TRTEXEC_COMPUTE_MEDIAN.findall(text)
    if qps:
        out["qps"] = float(qps[-1])
    if compute:
        out["compute_median_ms"] = float(compute[-1])
    return out


def trtexec_command(trtexec: str, engine: str, shapes: str, window: float, tensorrt_version: str) -> list[str]:
    """trtexec on bench's engine as bench's cell runs it, every setting explicit, since trtexec 11 flipped
    three defaults: no data transfers (10.x: --noDataTransfers; 11.x: its default, the old flag a
    warning), no CUDA graph (10.x: the default; 11.x: --noCudaGraph), and a host that spin-waits for the
    GPU, as cudaStreamSynchronize does under CUDA's default scheduling (10.x: --useSpinWait; 11.x: the
    default); one query in flight (--exposeDMA)."""
    major = int(tensorrt_version.split(".", maxsplit=1)[0])
    version_flags = ["--noCudaGraph"] if major >= 11 else ["--noDataTransfers", "--useSpinWait"]
    return [trtexec, f"--loadEngine={engine}", f"--shapes={shapes}", *version_flags, "--exposeDMA",
            f"--duration={window:g}", "--warmUp=200"]  # fmt: skip


def tensorrt_check(cuda: bool, window: float, trtexec: str | None) -> None:
    """bench's tensorrt cell against trtexec running the same engine file, one query in flight as
    bench has (--exposeDMA), no transfers: throughput (>= 0.95) and GPU compute median (within 3 %)."""
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
    command = trtexec_command(trtexec, str(info.get("engine_file")), shapes, window, str(info.get("tensorrt_version")))
    print(f"   {' '.join(command)}")
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    numbers = trtexec_numbers(proc.stdout)
    if "qps" not in numbers:
        print(f"   trtexec: no throughput in its output (exit {proc.returncode}): {proc.stdout[-500:]}")
        return
    theirs = numbers["qps"] * 64
    ratio = record["throughput_sps"] / theirs
    print(f"   trtexec {theirs:,.0f} samples/s on the same engine: bench/trtexec {ratio:.3f} (target >= 0.95) "
          f"{'ok' if ratio >= 0.95 else 'MISSED'}")  # fmt: skip
    ours = record.get("gpu_compute_p50_ms")
    if "compute_median_ms" in numbers and ours:
        off = ours / numbers["compute_median_ms"] - 1
        warned = record.get("gpu_timing_warnings") or "none"
        print(f"   GPU compute median: trtexec {numbers['compute_median_ms']:.4f} ms, bench's CUDA events "
              f"{ours:.4f} ms: {off:+.1%} (target within 3 %) {'ok' if abs(off) <= 0.03 else 'MISSED'} "
              f"(enqueue {record.get('enqueue_mean_ms')} ms; warnings: {warned})")  # fmt: skip


def _dlrm() -> Any:
    """dlrm-small, as bench's cells build it."""
    from harness.input_data import build_model
    from harness.pluginmanager import registries

    return build_model(registries(()).models.get("dlrm-small"), {}, None)


def _input_shapes(batch: int) -> dict[str, list[int]]:
    model = _dlrm()
    return {name: list(array.shape) for name, array in model.example_inputs(batch, 0).items()}


def torch_check(window: float) -> None:
    """Steps 3 and 4: bench's PyTorch eager cells on cuda (b1, b64) against a bare loop of the same
    module, by CUDA events and by the wall clock, and NVML's energy of each cell against its power."""
    records = {r["config"]["batch_size"]: r for r in bench_cells(window)}
    for batch, record in sorted(records.items()):
        if record["status"] != "ok":
            print(f"3. timing truth b{batch}: bench's cell {record['status']}: {record.get('reason')}")
            continue
        bare = bare_loop(batch, window)
        ratio = bare["p50_ms"] / record["p50_ms"]
        events = record.get("gpu_compute_p50_ms")
        if events:
            gpu_ratio = bare["gpu_p50_ms"] / events
            cv, enqueue = record.get("gpu_compute_cv") or 0.0, record.get("enqueue_mean_ms") or 0.0
            warned = record.get("gpu_timing_warnings") or "none"
            print(
                f"3. timing truth b{batch}: CUDA events: bench p50 {events:.4f} ms ({record['gpu_timed_calls']} "
                f"calls, CV {cv:.1%}, enqueue {enqueue:.4f} ms), bare loop {bare['gpu_p50_ms']:.4f} ms: "
                f"bare/bench {gpu_ratio:.3f} (target 0.97-1.03) {band(gpu_ratio)}; "
                f"warnings: {warned}"
            )
        else:
            print(f"3. timing truth b{batch}: no CUDA-event times in bench's record: "
                  f"{record.get('gpu_timing_skipped')}")  # fmt: skip
        print(
            f"3. timing truth b{batch}: wall clock: bench p50 {record['p50_ms']:.4f} ms, bare loop p50 "
            f"{bare['p50_ms']:.4f} ms ({bare['calls']} calls): bare/bench {ratio:.3f} (target 0.97-1.03) "
            f"{band(ratio)}"
        )
        energy, sampled = record.get("gpu_energy_per_inference_j"), record.get("gpu_power_sampled_mean_w")
        if energy is None or not sampled:
            why = record.get("gpu_telemetry_skipped") or record.get("gpu_telemetry_note")
            print(f"4. NVML energy b{batch}: not measured: {why}")
            continue
        if record.get("gpu_energy_source") != "counter":  # power x time is the sampled power itself
            print(f"4. NVML energy b{batch}: {energy:.3e} J/inference from {record.get('gpu_energy_source')}: "
                  "not judged (the check needs the energy counter, independent of the power samples)")  # fmt: skip
            continue
        implied = energy * record["throughput_sps"]
        off = implied / sampled - 1
        print(
            f"4. NVML energy b{batch}: {energy:.3e} J/inference x {record['throughput_sps']:,.0f}/s = "
            f"{implied:.1f} W against {sampled:.1f} W sampled ({record['gpu_energy_source']}): {off:+.1%} "
            f"(target within 10 %) {'ok' if abs(off) <= 0.10 else 'MISSED'}"
        )


#: the checks that raised (``guarded``): the script's exit status is 1 where any did
FAILED: list[str] = []


def guarded(step: str, check: Callable[[], None], also: str = "") -> None:
    """Run one check; an exception is printed as that check's failure, with the end of its traceback,
    and the next check runs: on a GPU machine lent for minutes, one broken check must not hide the
    others' results. ``also``: the step that shares the check's code, printed as not run."""
    try:
        check()
    except Exception as exc:
        FAILED.append(step)
        print(f"{step}: FAILED: {type(exc).__name__}: {exc}")
        for line in traceback.format_exc().strip().splitlines()[-8:]:
            print(f"   {line}")
        if also:
            print(f"{also}: not run: {step} failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--skip-conformance", action="store_true")
    parser.add_argument("--report-dir", type=Path, help="render each run's HTML report into this folder")
    args = parser.parse_args()
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # as bench's workers: the bare loops' cuda is bench's cuda:0
    started = time.monotonic()
    here = facts()
    print("1. here:", json.dumps(here, default=str))
    guarded("1b. bench doctor", doctor)
    cuda = isinstance(here["torch"], dict) and here["torch"]["available"]
    if args.skip_conformance:
        print("2. GPU tests: skipped (--skip-conformance)")
    else:
        summary, notes = conformance()
        print(f"2. GPU tests (pytest {' '.join(GPU_TESTS[:-1])} '{GPU_TESTS[-1]}'): {summary}")
        for line in notes:
            print(f"   {line[:240]}")
    if not cuda:
        why = "no CUDA device visible to torch" if isinstance(here["torch"], dict) else "torch is not installed"
        print(f"3. timing truth: skipped: {why}")
        print(f"4. NVML energy: skipped: {why}")
    else:
        guarded("3. timing truth", lambda: torch_check(args.window_s), also="4. NVML energy")
    if not here["gpus"]:
        print("3b. onnxruntime CUDA: skipped: nvidia-smi lists no NVIDIA GPU")
    elif isinstance(here["onnxruntime"], dict):
        guarded("3b. onnxruntime CUDA", lambda: ort_check(args.window_s, here["onnxruntime"]["providers"]))
    else:
        print("3b. onnxruntime CUDA: skipped: onnxruntime is not installed")
    guarded("5. TensorRT", lambda: tensorrt_check(cuda, args.window_s, here["trtexec"]))
    if args.report_dir is not None:
        if RUNS:
            guarded("6. report", lambda: reports(args.report_dir))
        else:
            print("6. report: skipped: no check ran bench")
    print(f"done in {time.monotonic() - started:.0f} s" + (f"; failed: {', '.join(FAILED)}" if FAILED else ""))
    return 1 if FAILED else 0


if __name__ == "__main__":
    raise SystemExit(main())
