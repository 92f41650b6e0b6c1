"""Which cpu settings keep a runtime's threads from collapsing beside a neighbour, at what quiet cost.

For each runtime (pytorch eager, onnxruntime, openvino) on dlrm-small fp32 at batch 1 and 64, and each
setting of the scenario's ``cpu`` block (the runtimes' defaults; pinned; passive waiting; one CPU
reserved; reserved and pinned), throughput is measured in fresh worker processes on a quiet machine
and beside a CPU hog this script starts (one busy process: half of a 2-CPU machine). Rounds alternate
every setting and condition, in a shuffled order, so that the machine's drift weighs on all alike;
the noise guard is off (the point is to see what a neighbour does).

    .venv/bin/python benchmarks/thread_settings.py [--rounds 3] [--batches 1 64] [--seed 1]

Prints, per runtime, batch and setting: the median quiet throughput and its ratio to the default's,
the median throughput beside the hog and its ratio to quiet, and the coefficient of variation of
throughput over the processes, quiet and with the hog; then the setting each runtime would default
to (the best with the hog among those whose quiet throughput is within 3 % of the default's).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "default": "{}",
    "pinned": "{pin: true}",
    "passive": "{wait: passive}",
    "reserve1": "{reserve: 1}",
    "reserve1+pin": "{reserve: 1, pin: true}",
    "passive+pin": "{wait: passive, pin: true}",
}
BACKENDS = {
    "pytorch": "{name: pytorch, options: {mode: eager}}",
    "onnxruntime": "onnxruntime",
    "openvino": "{name: openvino, options: {hint: latency}}",
}
SCENARIO = """\
name: threads
model: dlrm-small
backends: [{backend}]
batch_sizes: {batches}
threads: auto
cpu: {cpu}
measurement: {{warmup_s: 0.3, min_duration_s: 1.0, max_duration_s: 1.5, ci_rel_width: 0.5, noise_threshold: 1.0,
              quiet_wait_s: 0, max_attempts: 1}}
fidelity: {{samples: 0}}
"""
HOG = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"


def measure(backend: str, setting: str, batches: list[int], out: Path) -> dict[int, float]:
    """One process per batch size: throughput by batch."""
    from harness.planning import RunOptions
    from harness.runner import run_scenario
    from harness.scenario import load_scenario_text

    text = SCENARIO.format(backend=BACKENDS[backend], batches=json.dumps(batches), cpu=SETTINGS[setting])
    run = run_scenario(load_scenario_text(text), RunOptions(out_root=out, command="thread_settings"))
    return {int(r["config"]["batch_size"]): r.get("throughput_sps") for r in run.records() if r["status"] == "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    # (backend, setting, condition, batch) -> throughputs, one per process
    found: dict[tuple[str, str, str, int], list[float]] = {}
    started = time.monotonic()
    for round_ in range(args.rounds):
        plan = [(b, s, c) for b in args.backends for s in args.settings for c in ("quiet", "hog")]
        rng.shuffle(plan)
        for backend, setting, condition in plan:
            hog = subprocess.Popen([sys.executable, "-c", HOG]) if condition == "hog" else None
            try:
                time.sleep(0.3 if hog else 0)
                values = measure(backend, setting, args.batches, out)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            for batch, sps in values.items():
                if sps:
                    found.setdefault((backend, setting, condition, batch), []).append(sps)
        print(f"round {round_ + 1}/{args.rounds} done, {time.monotonic() - started:.0f} s", flush=True)

    def med(key: tuple[str, str, str, int]) -> float | None:
        values = found.get(key)
        return statistics.median(values) if values else None

    def cv(key: tuple[str, str, str, int]) -> str:
        values = found.get(key) or []
        return f"{statistics.stdev(values) / statistics.mean(values):.1%}" if len(values) > 1 else "-"

    print(f"\n{args.rounds} processes per setting and condition; throughput in samples/s (median)")
    print(f"{'runtime':<12} {'b':>3} {'setting':<13} {'quiet':>9} {'vs dflt':>7} {'hog':>9} {'hog/q':>6} "
          f"{'cv q':>6} {'cv hog':>6}")  # fmt: skip
    choice: dict[str, dict[str, float]] = {}
    for backend in args.backends:
        for batch in args.batches:
            base = med((backend, "default", "quiet", batch))
            for setting in args.settings:
                quiet, hog = med((backend, setting, "quiet", batch)), med((backend, setting, "hog", batch))
                if quiet is None or hog is None:
                    continue
                vs = quiet / base if base else float("nan")
                print(f"{backend:<12} {batch:>3} {setting:<13} {quiet:>9,.0f} {vs:>7.2f} {hog:>9,.0f} "
                      f"{hog / quiet:>6.2f} {cv((backend, setting, 'quiet', batch)):>6} "
                      f"{cv((backend, setting, 'hog', batch)):>6}")  # fmt: skip
                score = choice.setdefault(backend, {})
                ok = vs >= 0.97
                # summed over batch sizes: the hog ratio, for settings that cost at most 3 % quiet
                score[setting] = score.get(setting, 0.0) + (hog / quiet if ok else -10.0)
    print("\ndefault per runtime (best beside the hog, quiet within 3 % of the default at every batch):")
    for backend, scores in choice.items():
        best = max(scores, key=lambda s: scores[s])
        print(f"  {backend:<12} {best}  (" + ", ".join(f"{s} {v:.2f}" for s, v in scores.items()) + ")")
    if args.json_out:
        rows = [{"backend": b, "setting": s, "condition": c, "batch": n, "throughput_sps": v}
                for (b, s, c, n), v in found.items()]  # fmt: skip
        args.json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
