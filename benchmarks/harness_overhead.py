"""Harness overhead: bench's throughput / a minimal hand-written loop over the same model and runtime.

Same model (dlrm-small, fp32), batch, threads and duration; the harness cell runs in its worker, the
hand loop in a fresh process of its own; the two alternate (order flipped each round) so drift on a
shared machine hits both. Targets: ratio >= 0.97 at batch 1 and batch 64 for pytorch (issue: core
harness), onnxruntime and openvino (issue: backends).
Hand loops: pytorch calls the eager module; onnxruntime calls `session.run(None, feeds)` on a session
with the same options (threads, sequential, all graph optimisations); openvino calls `infer()` on one
request whose input tensors are set once (static input shapes, latency hint, f32, same threads).
Run: .venv/bin/python benchmarks/harness_overhead.py [--backend pytorch|onnxruntime|openvino]...
     [--rounds 7] [--seconds 2]
"""

from __future__ import annotations

import argparse
import statistics

from _common import hand_loop_sps, run_scenario_text, temp_root

SCENARIO = """\
name: overhead
model: dlrm-small
backends: [{{name: {backend}, options: {options}}}]
precisions: [fp32]
batch_sizes: [{batch}]
threads: {threads}
measurement: {{warmup_s: 0.5, min_duration_s: {seconds}, max_duration_s: {seconds}}}
"""
#: options of the harness's cell, matched by the hand loop
OPTIONS = {"pytorch": "{mode: eager}", "onnxruntime": "{}", "openvino": "{hint: latency}"}

#: the model and its inputs, before each runtime's setup
MODEL = """
from plugins.models.dlrm import DLRMSmall
model = DLRMSmall()
feeds = model.example_inputs({batch})
"""

SETUP = {
    "pytorch": """
import torch
torch.set_num_threads({threads})
torch.set_num_interop_threads(1)
module = model.build_torch().eval()
inputs = [torch.from_numpy(feeds[n]) for n in model.input_names]
torch.inference_mode().__enter__()
call = lambda: module(*inputs)
""",
    "onnxruntime": """
import tempfile
from pathlib import Path
import onnxruntime as ort
from harness.api import onnx_model
path = onnx_model(model, Path(tempfile.mkdtemp())).path
opts = ort.SessionOptions()
opts.intra_op_num_threads = {threads}
opts.inter_op_num_threads = 1
opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
call = lambda: session.run(None, feeds)
""",
    "openvino": """
import tempfile
from pathlib import Path
import openvino as ov
from harness.api import onnx_model
path = onnx_model(model, Path(tempfile.mkdtemp())).path
core = ov.Core()
graph = core.read_model(str(path))
graph.reshape({{name: list(feeds[name].shape) for name in model.input_names}})  # static, as bench compiles
compiled = core.compile_model(graph, "CPU", {{"PERFORMANCE_HINT": "LATENCY",
    "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": {threads}}})
request = compiled.create_infer_request()
for name in model.input_names:
    request.set_tensor(name, ov.Tensor(feeds[name], shared_memory=True))
call = request.infer
""",
}


def harness_sps(backend: str, batch: int, threads: int, seconds: float) -> float:
    text = SCENARIO.format(backend=backend, options=OPTIONS[backend], batch=batch, threads=threads, seconds=seconds)
    (record,) = run_scenario_text(text, temp_root("overhead-"))
    assert record["status"] == "ok", record
    return record["throughput_sps"]


def hand_sps(backend: str, batch: int, threads: int, seconds: float) -> float:
    setup = MODEL.format(batch=batch) + SETUP[backend].format(threads=threads)
    return hand_loop_sps(setup, batch, threads, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", action="append", choices=sorted(SETUP), default=None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, action="append", default=None)
    args = parser.parse_args()
    ok = True
    for backend in args.backend or ["pytorch"]:
        for batch in args.batch or [1, 64]:
            ratios, hs, ls = [], [], []
            for i in range(args.rounds):
                pair = (harness_sps, hand_sps) if i % 2 == 0 else (hand_sps, harness_sps)
                first, second = (f(backend, batch, args.threads, args.seconds) for f in pair)
                h, loop = (first, second) if i % 2 == 0 else (second, first)
                hs.append(h)
                ls.append(loop)
                ratios.append(h / loop)
            ratio = statistics.median(ratios)
            ok = ok and ratio >= 0.97
            print(
                f"{backend:>11} batch {batch:>3}: harness {statistics.median(hs):>10,.0f} samples/s, hand loop "
                f"{statistics.median(ls):>10,.0f} samples/s; ratio median {ratio:.3f} "
                f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}) target >= 0.97",
                flush=True,
            )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
