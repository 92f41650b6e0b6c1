"""How often bench gate cries wolf, and how often it catches a real slowdown, on real processes.

    python benchmarks/gate_power.py --build-pool [--pool FILE] [--pairs 80] [--no-hog] [--hog-switch 0.1]
                                    [--noise-threshold 0.10]
    python benchmarks/gate_power.py [--pool FILE] [--trials 200] [--night-cells 16] [--budget 1800]
                                    [--slowdowns 0 0.10 0.05] [--check-power]

The pool (built once, minutes; the time is printed): real worker processes of the fake backend (four
cells: 0.5 and 2 ms calls, batch 1 and 8), measured exactly as the gate measures them (its short
windows, its noise guard, its worker processes and run folders), in pairs adjacent in time and in
rounds over the cells in a random order, as the gate runs them. Both sides run this checkout's
code: every pair is an A/A pair. With the hog (on by default) a process spinning on one CPU is
switched on or off before each pair with probability ``--hog-switch``, so the pool holds quiet and
disturbed stretches; a process the noise guard did not trust is kept, as the gate keeps it, and the
gate's functions leave its pair out. Saved as JSON: each pair as the gate's journal writes it, with
the hog's state.

The trials (seconds each): a simulated night of ``--night-cells`` cells, each a pool cell (cycled), its
pairs one contiguous stretch of that pool cell's pairs from a random start (the time structure, the
disturbed stretches, stays), the clock advanced by each process's recorded wall time, within
``--budget`` seconds; the gate's own course judges it (``harness.analysis.gate.decide``: calibration,
screen, confirmation, more screen pairs while time is left; Holm alpha 0.01, the 5 % threshold). A/A:
the pairs as recorded; a slowdown: night cell 0's candidate processes made slower (latencies x f,
throughput / f). Printed: A/A nights with any false regression (target <= 1 %), the share of nights
that flag the slowed cell at 10 % and 5 %, false regressions among the other cells, and how the cells
ended (unchanged, inconclusive).

``--check-power`` also checks the gate's power formula against the exact signed-rank test on normal
noise by simulation (a few seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, temp_root

from harness.analysis import gate, gate_sides
from harness.analysis import gate_stats as gs
from harness.analysis.comparison import METRICS

DEFAULT_POOL = ROOT / "results" / "gate_power_pool.json"
POOL_SCENARIO = """\
name: gate-pool
model: toy
backends:
  - name: fake
    sweep:
      service_ms: [0.5, 2.0]
batch_sizes: [1, 8]
threads: 1
measurement:
  min_duration_s: 0.5
  max_duration_s: 1.0
  warmup_s: 0.2
  noise_threshold: {noise_threshold}
fidelity: {{samples: 0}}
"""


# --------------------------------------------------------------------------------------------
# the pool
# --------------------------------------------------------------------------------------------


class Hog:
    """A process spinning on one CPU, started and stopped on demand (by its own handle)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def on(self) -> bool:
        return self.proc is not None

    def switch(self) -> None:
        if self.proc is None:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        else:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def build_pool(args: argparse.Namespace) -> None:
    from harness.analysis.confirm import Code
    from harness.scenario import load_scenario_text

    os.environ["BENCH_PLUGINS"] = "plugins.fake"  # the workers load the fake backend too
    scenario = load_scenario_text(POOL_SCENARIO.format(noise_threshold=args.noise_threshold), "<gate pool>")
    measured = gate.gate_scenario(scenario)
    planned, _ = gate._gate_cells(measured, ())
    here = Code(True, ROOT, "this checkout")  # both sides: every pair is an A/A pair
    sides = gate_sides.Sides(here, "this checkout", None, ROOT, "this checkout", None, False)
    options = gate.GateOptions(baseline="pool", seed=args.seed, out_root=temp_root("bench-gate-pool-"))
    folder = options.out_root / "pool"
    folder.mkdir(parents=True)
    workers = gate.WorkerPairs(folder, measured, planned, sides, options, gate.Clock(float("inf")), print)
    rng = np.random.default_rng(args.seed)
    hog = Hog()
    pool: list[dict[str, object]] = []
    ids = list(workers.cells)
    started = time.perf_counter()
    try:
        for number in range(args.pairs):
            for cid, first in gate.round_order(args.seed, "screen", number, ids):
                if args.hog and rng.random() < args.hog_switch:
                    hog.switch()
                made = workers.pair("screen", number, cid, first)
                pool.append({**made.as_dict(), "hog": hog.on})
            if (number + 1) % 10 == 0:
                print(f"  round {number + 1} of {args.pairs}: {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        if hog.on:
            hog.switch()
        workers.finish()
    labels = {c.id: c.label for c in workers.cells.values()}
    args.pool.parent.mkdir(parents=True, exist_ok=True)
    args.pool.write_text(json.dumps({"cells": labels, "window": measured.measurement.min_duration_s, "pairs": pool}))
    took = time.perf_counter() - started
    usable = sum(gs.Pair.from_dict(p).usable for p in pool)
    print(f"pool: {len(pool)} pairs of {len(ids)} cells in {took / 60:.1f} min ({usable} usable, "
          f"{sum(bool(p['hog']) for p in pool)} with the hog on) -> {args.pool}; run folders in {folder}")  # fmt: skip


# --------------------------------------------------------------------------------------------
# the trials
# --------------------------------------------------------------------------------------------


def _slowed(process: gs.Process, factor: float) -> gs.Process:
    values = {m: (v / factor if METRICS[m][1] else v * factor) for m, v in process.values.items()}
    return gs.Process(process.status, process.trusted, values, process.seconds, process.repeat, process.reason)


class PoolPairs(gate.Pairs):
    """A simulated night: each cell's pairs come from a stretch of its pool cell's recorded pairs,
    the clock advanced by their recorded wall times."""

    def __init__(self, by_cell: list[list[gs.Pair]], cells: int, budget_s: float, slow: float,
                 rng: np.random.Generator) -> None:  # fmt: skip
        self.time = 0.0
        night = [gate.GateCell(f"c{k}", f"cell {k}", f"b{k % len(by_cell)}", 1.0) for k in range(cells)]
        super().__init__(night, int(rng.integers(2**31)), gate.Clock(budget_s, now=lambda: self.time), lambda _: None)
        self.source = {c.id: by_cell[k % len(by_cell)] for k, c in enumerate(night)}
        self.next = {c.id: int(rng.integers(len(self.source[c.id]))) for c in night}
        self.slow = slow

    def pair(self, stage: str, number: int, cid: str, first: str) -> gs.Pair:
        recorded = self.source[cid][self.next[cid] % len(self.source[cid])]
        self.next[cid] += 1
        base, cand = recorded.baseline, recorded.candidate
        if self.slow and cid == "c0" and stage != "calibration":
            cand = _slowed(cand, 1 + self.slow)
        self.time += base.seconds + cand.seconds
        self.seconds.setdefault(cid, []).extend([base.seconds, cand.seconds])
        done = gs.Pair(stage, number, cid, recorded.first, base, cand)
        self.pairs.append(done)
        return done


def trials(args: argparse.Namespace) -> None:
    data = json.loads(args.pool.read_text())
    pairs = [gs.Pair.from_dict(p) for p in data["pairs"]]
    by_cell = [[p for p in pairs if p.cell_id == cid] for cid in data["cells"]]
    rng = np.random.default_rng(args.seed)
    hog = sum(bool(p["hog"]) for p in data["pairs"])
    print(f"pool {args.pool}: {len(pairs)} pairs of {len(by_cell)} cells ({sum(p.usable for p in pairs)} usable, "
          f"{hog} with the hog on), {data['window']:g} s windows; nights of {args.night_cells} cells, budget "
          f"{args.budget / 60:g} min, threshold 5 %, alpha 0.01, {args.trials} trials each")  # fmt: skip
    for slow in args.slowdowns:
        started = time.perf_counter()
        caught = false = 0
        verdicts: dict[str, int] = {}
        used = []
        for _ in range(args.trials):
            night = PoolPairs(by_cell, args.night_cells, args.budget, slow, rng)
            decision = gate.decide(night, 0.05, 0.01)
            regressed = {c.cell_id for c in decision.cells if c.verdict == "regressed"}
            caught += "c0" in regressed
            false += bool(regressed - ({"c0"} if slow else set()))
            for cell in decision.cells:
                verdicts[cell.verdict] = verdicts.get(cell.verdict, 0) + 1
            used.append(night.clock.used)
        took = time.perf_counter() - started
        share = ", ".join(f"{n / (args.trials * args.night_cells):.0%} {v}" for v, n in sorted(verdicts.items()))
        what = "A/A" if not slow else f"{slow:.0%} slowdown of one cell"
        line = f"  {what}: "
        if slow:
            line += f"caught {caught / args.trials:.0%} of {args.trials}; other cells falsely regressed in "
        else:
            line += "nights with a false regression: "
        line += f"{false} of {args.trials} ({false / args.trials:.1%}); cells {share}; "
        line += f"median night {np.median(used) / 60:.1f} min [{took:.0f} s]"
        print(line, flush=True)


def check_power(seed: int) -> None:
    """The formula's power against the exact signed-rank test's, simulated on normal noise."""
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(seed)
    print("power formula vs the exact test (normal noise, 2000 simulations each):")
    for level, target in ((0.25, gs.SCREEN_POWER), (0.01 / 3, gs.TARGET_POWER), (0.01 / 48, gs.TARGET_POWER)):
        for effect in (0.3, 0.5, 1.0, 2.0):
            n = gs.pairs_needed(1.0, effect, level, target)
            draws = rng.normal(effect, 1.0, (2000, n))
            simulated = float((wilcoxon(draws, alternative="greater", axis=1).pvalue < level).mean())
            formula = gs.power(n, 1.0, effect, level)
            print(f"  level {level:.5f}, shift {effect:g} sd: {n:4d} pairs, formula {formula:.2f}, "
                  f"exact test {simulated:.2f} (target {target:.0%})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    parser.add_argument("--build-pool", action="store_true", help="measure the pool (minutes) and save it")
    parser.add_argument("--pairs", type=int, default=80, help="pool: pairs per cell")
    parser.add_argument("--no-hog", dest="hog", action="store_false", help="pool: no CPU hog")
    parser.add_argument("--hog-switch", type=float, default=0.1, help="pool: chance the hog switches before a pair")
    parser.add_argument("--noise-threshold", type=float, default=0.10, help="pool: the noise guard's threshold")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--night-cells", type=int, default=16)
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds of a simulated night")
    parser.add_argument("--slowdowns", type=float, nargs="+", default=[0.0, 0.10, 0.05], help="0 is A/A")
    parser.add_argument("--check-power", action="store_true")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if args.check_power:
        check_power(args.seed)
    if args.build_pool:
        build_pool(args)
    elif not args.pool.is_file():
        parser.error(f"no pool at {args.pool}: build it first with --build-pool")
    if not args.build_pool or args.trials:
        trials(args)


if __name__ == "__main__":
    main()
