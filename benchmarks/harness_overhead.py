"""Harness overhead: bench's throughput / a minimal hand-written loop over the same torch model.

Same model (dlrm-small, fp32, eager), batch, threads and duration; the harness cell runs in its worker,
the hand loop in a fresh process of its own; the two alternate (order flipped each round) so drift on
a shared machine hits both. Target (issue: core harness): ratio >= 0.97 at batch 1 and batch 64.
Run: .venv/bin/python benchmarks/harness_overhead.py [--rounds 7] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from _common import ROOT, run_scenario_text, temp_root

from harness.executors.local import THREAD_ENV_VARS

SCENARIO = """\
name: overhead
model: dlrm-small
backends: [{{name: pytorch, options: {{mode: eager}}}}]
precisions: [fp32]
batch_sizes: [{batch}]
threads: {threads}
measurement: {{warmup_s: 0.5, min_duration_s: {seconds}, max_duration_s: {seconds}}}
"""

# The same conditions the harness's worker sets that are not overhead (thread pools sized by the
# environment, one inter-op thread, the garbage collector paused while timing), so the ratio is the
# harness's cost alone.
HAND_LOOP = """
import gc, sys, time, torch
sys.path.insert(0, {root!r})
from plugins.models.dlrm import DLRMSmall
torch.set_num_threads({threads})
torch.set_num_interop_threads(1)
model = DLRMSmall()
module = model.build_torch().eval()
inputs = [torch.from_numpy(v) for v in model.example_inputs({batch}).values()]
with torch.inference_mode():
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        module(*inputs)
    gc.collect()
    gc.disable()
    n = 0
    t0 = time.perf_counter()
    end = t0 + {seconds}
    while time.perf_counter() < end:
        module(*inputs)
        n += 1
    elapsed = time.perf_counter() - t0
print(n * {batch} / elapsed)
"""


def harness_sps(batch: int, threads: int, seconds: float) -> float:
    text = SCENARIO.format(batch=batch, threads=threads, seconds=seconds)
    (record,) = run_scenario_text(text, temp_root("overhead-"))
    assert record["status"] == "ok", record
    return record["throughput_sps"]


def hand_sps(batch: int, threads: int, seconds: float) -> float:
    code = HAND_LOOP.format(root=str(ROOT), batch=batch, threads=threads, seconds=seconds)
    env = {**os.environ, **{var: str(threads) for var in THREAD_ENV_VARS}}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, action="append", default=None)
    args = parser.parse_args()
    ok = True
    for batch in args.batch or [1, 64]:
        ratios, hs, ls = [], [], []
        for i in range(args.rounds):
            if i % 2 == 0:
                h = harness_sps(batch, args.threads, args.seconds)
                loop = hand_sps(batch, args.threads, args.seconds)
            else:
                loop = hand_sps(batch, args.threads, args.seconds)
                h = harness_sps(batch, args.threads, args.seconds)
            hs.append(h)
            ls.append(loop)
            ratios.append(h / loop)
        ratio = statistics.median(ratios)
        ok = ok and ratio >= 0.97
        print(
            f"batch {batch:>3}: harness {statistics.median(hs):>10,.0f} samples/s, hand loop "
            f"{statistics.median(ls):>10,.0f} samples/s; ratio median {ratio:.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}) target >= 0.97"
        )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
