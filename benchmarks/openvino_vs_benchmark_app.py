"""The openvino backend against OpenVINO's own benchmark_app and a minimal hand loop, and its precisions' error.

1. Throughput: bench (a real scenario through the harness: worker process, measurement loop, the
   ``openvino`` backend's session) / benchmark_app on the same IR, the same static batch and inputs,
   LATENCY hint, sync API (one request), 2 threads, f32 inference precision. Targets: >= 0.8 at batch 1
   (a Python harness pays per call what benchmark_app's loop also pays, plus its own timing),
   >= 0.95 at batch 64.
2. bench / a minimal hand loop (fresh process, same compile settings, tensors bound once, bare
   ``request.infer()``): the cost of the harness and the session around the same call, ~1.0.
3. Precision: fp32, bf16, int8 post-training and int8 weight-only outputs against PyTorch eager fp32 on
   1024 samples: max abs error, agreement of ``p > 0.5``, and the precision that actually executed.

The three throughput measurements alternate (order rotated each round) so drift on a shared machine
hits all of them; medians of the rounds are printed. benchmark_app's -nthreads is refused together with
-hint latency (a benchmark_app UI rule), so its threads and precision come through -load_config.
Run: .venv/bin/python benchmarks/openvino_vs_benchmark_app.py [--rounds 5] [--seconds 2] [--batch 1 --batch 64]
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
from pathlib import Path

from _common import ROOT, hand_loop_sps, run_scenario_text, temp_root, thread_env

from harness.api import CACHE_DIR_ENV, CACHE_FOLDER

PLUGIN = "plugins.openvino_backend"
TARGETS = {1: 0.8, 64: 0.95}
DEFAULT_TARGET = 0.95

SCENARIO = """\
name: ov-vs-app
model: dlrm-small
backends: [{{name: openvino, options: {{hint: latency}}}}]
precisions: [fp32]
batch_sizes: [{batch}]
threads: {threads}
measurement: {{warmup_s: 0.5, min_duration_s: {seconds}, max_duration_s: {seconds}}}
"""

# What the backend's session does, without the harness: same IR, static shape, compile settings and
# bound inputs; a bare loop over request.infer() with the garbage collector paused, as in the worker.
HAND_SETUP = """
import numpy as np, openvino as ov
arrays = {{name: np.load(path) for name, path in {inputs!r}.items()}}
core = ov.Core()
model = core.read_model({xml!r})
model.reshape({{name: list(a.shape) for name, a in arrays.items()}})
compiled = core.compile_model(model, "CPU", {{"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                              "INFERENCE_NUM_THREADS": {threads}}})
request = compiled.create_infer_request()
for name, array in arrays.items():
    request.set_tensor(name, ov.Tensor(array, shared_memory=True))
call = request.infer
"""


def harness_sps(out_root: Path, batch: int, threads: int, seconds: float) -> tuple[float, dict]:
    text = SCENARIO.format(batch=batch, threads=threads, seconds=seconds)
    (record,) = run_scenario_text(text, out_root, plugins=(PLUGIN,))
    assert record["status"] == "ok", record
    return record["throughput_sps"], record["info"]


def app_sps(xml: Path, inputs: dict[str, Path], batch: int, threads: int, seconds: float, config: Path) -> float:
    app = shutil.which("benchmark_app", path=str(Path(sys.executable).parent)) or "benchmark_app"
    shape = ",".join(f"{name}[{batch},{n}]" for name, n in (("dense", 13), ("sparse", 26)))
    cmd = [
        app,
        "-m", str(xml), "-d", "CPU", "-hint", "latency", "-api", "sync",
        "-load_config", str(config), "-infer_precision", "f32",
        "-t", str(seconds), "-shape", shape, "-layout", "dense[NC],sparse[NC]",
        "-i", *(f"{name}:{path}" for name, path in inputs.items()),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads))
    match = re.search(r"Throughput:\s+([\d.]+)\s+FPS", out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"benchmark_app failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    threads_line = re.search(r"INFERENCE_NUM_THREADS:\s+(\d+)", out.stdout)
    assert threads_line and int(threads_line.group(1)) == threads, "benchmark_app did not take the thread count"
    return float(match.group(1))


def hand_sps(xml: Path, inputs: dict[str, Path], batch: int, threads: int, seconds: float) -> float:
    setup = HAND_SETUP.format(xml=str(xml), inputs={k: str(v) for k, v in inputs.items()}, threads=threads)
    return hand_loop_sps(setup, batch, threads, seconds)


def throughput(args: argparse.Namespace, out_root: Path) -> bool:
    import numpy as np

    from plugins.models.dlrm import DLRMSmall

    config = out_root / "benchmark_app_config.json"
    config.write_text(
        json.dumps(
            {
                "CPU": {
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_NUM_THREADS": str(args.threads),
                    "INFERENCE_PRECISION_HINT": "f32",
                }
            }
        )
    )
    ok = True
    print(f"throughput, fp32, LATENCY hint, one request, {args.threads} threads; samples/s (median of {args.rounds})")
    for batch in args.batch or [1, 64]:
        # the inputs the harness cell binds (seed 0), for benchmark_app and the hand loop alike
        inputs = {}
        for name, array in DLRMSmall().example_inputs(batch, 0).items():
            inputs[name] = out_root / f"{name}_b{batch}.npy"
            np.save(inputs[name], array)
        _, info = harness_sps(out_root, batch, args.threads, 0.2)  # converts once; gives the IR's key
        assert info["executed_precision"] == "fp32" and info["threads"] == args.threads, info
        xml = out_root / CACHE_FOLDER / "openvino" / info["openvino_ir_key"] / "model.xml"
        runs: dict[str, list[float]] = {"bench": [], "benchmark_app": [], "hand loop": []}
        measure = {
            "bench": lambda: harness_sps(out_root, batch, args.threads, args.seconds)[0],  # noqa: B023
            "benchmark_app": lambda: app_sps(xml, inputs, batch, args.threads, args.seconds, config),  # noqa: B023
            "hand loop": lambda: hand_sps(xml, inputs, batch, args.threads, args.seconds),  # noqa: B023
        }
        order = list(measure)
        for i in range(args.rounds):
            for name in order[i % 3 :] + order[: i % 3]:
                runs[name].append(measure[name]())
        vs_app = [b / a for b, a in zip(runs["bench"], runs["benchmark_app"], strict=True)]
        vs_hand = [b / h for b, h in zip(runs["bench"], runs["hand loop"], strict=True)]
        target = TARGETS.get(batch, DEFAULT_TARGET)
        ok = ok and statistics.median(vs_app) >= target
        print(
            f"  batch {batch:>3}: bench {statistics.median(runs['bench']):>9,.0f}  "
            f"benchmark_app {statistics.median(runs['benchmark_app']):>9,.0f}  "
            f"hand loop {statistics.median(runs['hand loop']):>9,.0f}"
        )
        print(
            f"             bench/benchmark_app {statistics.median(vs_app):.3f} (target >= {target}; rounds "
            f"{', '.join(f'{r:.2f}' for r in vs_app)})   bench/hand loop {statistics.median(vs_hand):.3f} "
            f"(rounds {', '.join(f'{r:.2f}' for r in vs_hand)})"
        )
    return ok


def precision(out_root: Path, threads: int, samples: int = 1024) -> None:
    """Every int8/float variant of the backend on ``samples`` samples against PyTorch eager fp32."""
    import numpy as np
    import torch

    from harness.cells import Cell
    from plugins.models.dlrm import DLRMSmall
    from plugins.openvino_backend import OpenVinoBackend

    os.environ[CACHE_DIR_ENV] = str(out_root / CACHE_FOLDER)  # the conversions the throughput runs made
    model = DLRMSmall()
    inputs = model.example_inputs(samples, 0)
    with torch.inference_mode():
        ref = model.build_torch()(*(torch.from_numpy(inputs[n]) for n in model.input_names)).numpy()
    print(f"\nprecision vs PyTorch eager fp32, {samples} samples (agreement: same side of 0.5)")
    print(f"  {'cell':<26} {'max abs err':>11} {'agreement':>9}  executed (compute ops by kernel precision)")
    variants = [("fp32", {}), ("bf16", {}), ("fp16", {}), ("int8", {"quantization": "ptq"})]
    variants.append(("int8", {"quantization": "weights"}))
    for prec, options in variants:
        label = f"{prec} {options.get('quantization', '')}".strip()
        cell = Cell("dlrm-small", "openvino", "cpu", prec, samples, threads, backend_options=options)
        verdict = OpenVinoBackend.supports(cell)
        if not verdict.ok:
            print(f"  {label:<26} skipped: {verdict.reason}")
            continue
        session = OpenVinoBackend().prepare(model, cell, out_root / "work")
        try:
            out = session.outputs()["click_probability"]
            info = session.info
        finally:
            session.close()
        err = float(np.abs(out - ref).max())
        agree = float(((out > 0.5) == (ref > 0.5)).mean())
        print(
            f"  {label:<26} {err:>11.2e} {agree:>9.4f}  {info['executed_precision']} {info['compute_precisions']}"
            f" hint {info['inference_precision_hint']}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2, help="per measurement (benchmark_app takes whole seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, action="append", default=None)
    parser.add_argument("--no-precision", action="store_true", help="skip the precision table")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    out_root = temp_root("ov-vs-app-")
    ok = throughput(args, out_root)
    if not args.no_precision:
        precision(out_root, args.threads)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
