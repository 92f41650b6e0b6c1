"""How often bench compare cries wolf, and how often it catches a real slowdown.

    python benchmarks/compare_power.py [--trials N] [--cells 50] [--repeats 1 3 5] [--run-sigma 0.03]

Synthetic runs from a noise model like this machine's, compared with the same code bench compare
runs (bootstrap CIs, Holm over the cells, the 5 % threshold):
- every query's latency: the cell's service time x lognormal(0.05), 0.5 % of queries 3x slower;
- every process (a repeat, or a run of one): all its latencies x lognormal(run_sigma). Between
  processes here (dlrm-small, onnxruntime and openvino, b1 and b64, 6 processes each: see the note
  in the README) the median's spread was 1-10 %, throughput's 2-12 %: 0.03 is a typical cell.
A/A: two runs of identical code, the share of sweep pairs (cells x 3 metrics) with any false
regression (target <= 1 %). Power: one cell slowed by 10 % and by 5 %, the share of trials that
flag it (targets >= 95 % and >= 80 %).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from harness import compare

QUERIES = 700  # a p99 cell measures at least 662 queries


def simulate_run(rng: np.random.Generator, service: np.ndarray, repeats: int, run_sigma: float,
                 slow: dict[int, float]) -> list[list[np.ndarray]]:  # fmt: skip
    """Per cell, its processes' latencies (ms)."""
    cells = []
    for c, base in enumerate(service):
        factor = slow.get(c, 1.0)
        groups = []
        for _ in range(repeats):
            lat = base * factor * rng.lognormal(0, run_sigma) * rng.lognormal(0, 0.05, QUERIES)
            spikes = rng.random(QUERIES) < 0.005
            lat[spikes] *= 3
            groups.append(lat)
        cells.append(groups)
    return cells


def sweep(rng: np.random.Generator, n_cells: int, repeats: int, run_sigma: float, slow: dict[int, float],
          threshold: float = 0.05) -> list[str]:  # fmt: skip
    """The verdict of each cell when a baseline and a candidate sweep are compared."""
    service = rng.uniform(0.1, 5.0, n_cells)
    base = simulate_run(rng, service, repeats, run_sigma, {})
    cand = simulate_run(rng, service, repeats, run_sigma, slow)
    sides = []
    for c in range(n_cells):
        pair = []
        for groups in (base[c], cand[c]):
            values = {
                "throughput": [1000.0 / float(g.mean()) for g in groups],
                "p50": [float(np.quantile(g, 0.5)) for g in groups],
                "p99": [float(np.quantile(g, 0.99)) for g in groups],
            }
            pair.append(compare.Side(groups, values))
        sides.append((str(c), f"cell {c}", 1, pair[0], pair[1]))
    return [cell.verdict for cell in compare.judge_cells(sides, threshold, 0.05)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--run-sigma", type=float, default=0.03)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    compare.BOOTSTRAP = 200  # fewer resamples than bench compare's 400, to keep this script minutes long
    print(f"{args.cells}-cell sweeps, run sigma {args.run_sigma:.0%}, {args.trials} trials each, threshold 5%, "
          "Holm alpha 0.05")  # fmt: skip
    for repeats in args.repeats:
        t0 = time.perf_counter()
        false = sum("regressed" in sweep(rng, args.cells, repeats, args.run_sigma, {}) for _ in range(args.trials))
        caught = {}
        for slowdown in (0.10, 0.05):
            hits = 0
            for _ in range(args.trials):
                verdicts = sweep(rng, args.cells, repeats, args.run_sigma, {0: 1 + slowdown})
                hits += verdicts[0] == "regressed"
            caught[slowdown] = hits / args.trials
        print(f"  {repeats} process(es) per run: A/A sweeps with a false regression {false / args.trials:.1%} "
              f"(target <= 1%); 10% slowdown caught {caught[0.10]:.0%} (target >= 95%), 5% caught "
              f"{caught[0.05]:.0%} (target >= 80%)  [{time.perf_counter() - t0:.0f} s]")  # fmt: skip


if __name__ == "__main__":
    main()
