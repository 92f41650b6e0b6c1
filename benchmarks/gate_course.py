"""The gate's course on simulated nights whose noise per metric is the real-runtime gate's.

    python benchmarks/gate_course.py [--budget 1200] [--nights 20] [--p99-noise 0.11,0.16,...]
                                     [--metrics throughput,p50]

16 cells, processes of 4.2 s on a simulated clock, each metric with its own noise per pair (sd of
the log ratio): throughput 2.5 %, p50 2 % and p99 as the A/A gate on rec.yaml measured it per cell
(8-24 %, ``--p99-noise`` to change). For each night: an A/A gate and one where 4 cells are 10 %
slower, judged by ``harness.analysis.gate.decide`` with the gate's default thresholds (5 %, p99
10 %). Prints the A/A verdicts, the slowed cells caught and any false regression. Use it to see what
a budget buys before spending it on real processes (``benchmarks/gate_power.py`` draws real ones).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from harness.analysis import gate
from harness.analysis import gate_stats as gs

#: p99's noise per pair of each cell, as the A/A gate on rec.yaml measured it here (results of 30 Nov)
P99_NOISE = (0.11, 0.11, 0.16, 0.16, 0.24, 0.11, 0.11, 0.11, 0.13, 0.11, 0.12, 0.08, 0.11, 0.11, 0.12, 0.11)
SECONDS = 4.2


class Night(gate.Pairs):
    """Processes of lognormal noise per metric on a simulated clock."""

    def __init__(self, budget_s: float, slower: dict[str, float], seed: int, p99_noise: list[float]) -> None:
        self.now = 0.0
        self.slower, self.p99 = slower, p99_noise
        self.rng = np.random.default_rng(seed)
        cells = [gate.GateCell(f"c{i}", f"c{i}", f"b{i % 4}", SECONDS) for i in range(len(p99_noise))]
        super().__init__(cells, seed, gate.Clock(budget_s, now=lambda: self.now), lambda line: None)

    def process(self, side: str, cid: str) -> gs.Process:
        self.now += SECONDS
        factor = 1 + (self.slower.get(cid, 0.0) if side == "candidate" else 0.0)
        per_process = 1 / np.sqrt(2)  # a pair's noise is sqrt(2) times a process's
        thr = float(self.rng.lognormal(0, 0.025 * per_process)) * factor
        p50 = float(self.rng.lognormal(0, 0.02 * per_process)) * factor
        p99 = float(self.rng.lognormal(0, self.p99[int(cid[1:])] * per_process)) * factor
        return gs.Process("ok", True, {"throughput": 1000 / thr, "p50": p50, "p99": 3 * p99}, SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1200.0, help="seconds (default 1200)")
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--p99-noise", default=",".join(map(str, P99_NOISE)), help="per cell, comma-separated")
    parser.add_argument("--metrics", default="throughput,p50,p99", help="the metrics judged (bench gate --metrics)")
    args = parser.parse_args()
    p99 = [float(x) for x in args.p99_noise.split(",")]
    slowed = {f"c{i}": 0.10 for i in range(8, min(12, len(p99)))}
    thresholds = gs.gate_thresholds(0.05, metrics=args.metrics.split(","))
    verdicts: collections.Counter[str] = collections.Counter()
    caught = false = 0
    longest = 0.0
    for seed in range(args.nights):
        for slower in ({}, slowed):
            night = Night(args.budget, slower, seed, p99)
            decision = gate.decide(night, thresholds, 0.01)
            for cell in decision.cells:
                if not slower:
                    verdicts[cell.verdict] += 1
                elif cell.cell_id in slower:
                    caught += cell.verdict == "regressed"
                false += cell.verdict == "regressed" and cell.cell_id not in slower
            longest = max(longest, night.now)
    total = sum(verdicts.values())
    shares = ", ".join(f"{v} {n / total:.0%}" for v, n in sorted(verdicts.items()))
    print(f"budget {args.budget:.0f} s, {args.nights} nights of {len(p99)} cells, judging {args.metrics}: "
          f"A/A {shares}; 10 % slower caught {caught}/{len(slowed) * args.nights}; false regressions {false}; "
          f"longest night {longest:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
