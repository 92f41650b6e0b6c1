"""How often bench compare cries wolf, and how often it catches a real slowdown.

    python benchmarks/compare_power.py [--trials N] [--cells 50] [--repeats 1 3] [--run-sigma 0.03]
                                       [--confirm-repeats 12] [--screen-alpha 0.25]

Synthetic runs from a noise model like this machine's, judged by the very functions bench compare
runs (bootstrap CIs, Holm over the cells' metrics, alpha 0.01, the 5 % threshold):
- every query's latency: the cell's service time x lognormal(0.05), 0.5 % of queries 3x slower;
- every process (a repeat, or a run of one): all its latencies x lognormal(run_sigma). Between
  processes here (dlrm-small, onnxruntime and openvino, b1 and b64, 6 processes each: see the
  README) the median's spread was 1-10 %, throughput's 2-12 %: 0.03 is a typical cell.
Two gates are measured on the same sweeps:
- one stage: the sweep's verdicts as they are (``bench compare``);
- confirmed: the sweep only screens (``compare.suspects``); each suspect is measured again with
  ``--confirm-repeats`` fresh processes per side, and that alone decides, Holm over the suspects
  (``bench compare --confirm``). Its cost is the number of suspects.
A/A: two sweeps of identical code, the share of sweep pairs with any false regression (target
<= 1 %). Power: one cell slowed by 10 % and by 5 %, the share of trials that flag that cell
(targets >= 95 % and >= 80 %).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from harness.analysis import comparison as compare
from harness.analysis import intervals

QUERIES = 700  # a p99 cell measures at least 662 queries


def simulate(rng: np.random.Generator, base_ms: float, factor: float, repeats: int, run_sigma: float) -> compare.Side:
    """One side of one cell: ``repeats`` processes' latencies (ms) and their metric values."""
    groups = []
    for _ in range(repeats):
        lat = base_ms * factor * rng.lognormal(0, run_sigma) * rng.lognormal(0, 0.05, QUERIES)
        lat[rng.random(QUERIES) < 0.005] *= 3
        groups.append(lat)
    values = {
        "throughput": [1000.0 / float(g.mean()) for g in groups],
        "p50": [float(np.quantile(g, 0.5)) for g in groups],
        "p99": [float(np.quantile(g, 0.99)) for g in groups],
    }
    return compare.Side(groups, values)


def trial(rng: np.random.Generator, args: argparse.Namespace, repeats: int, slowdown: float) -> tuple[bool, bool, int]:
    """One baseline/candidate sweep pair, cell 0 slowed by ``slowdown``: (one stage flags cell 0 or,
    in an A/A trial, any cell; the confirmed gate does; the number of suspects)."""
    service = rng.uniform(0.1, 5.0, args.cells)
    slow = {0: 1 + slowdown} if slowdown else {}

    def sides(ids: list[int], n: int) -> list[tuple[str, str, int, compare.Side, compare.Side]]:
        return [(str(c), f"cell {c}", 1, simulate(rng, service[c], 1.0, n, args.run_sigma),
                 simulate(rng, service[c], slow.get(c, 1.0), n, args.run_sigma)) for c in ids]  # fmt: skip

    def flagged(cells: list[compare.CellComparison]) -> bool:
        hits = {c.cell_id for c in cells if c.verdict == "regressed"}
        return bool(hits) if not slowdown else "0" in hits

    screen = compare.judge_cells(sides(list(range(args.cells)), repeats), 0.05, args.alpha)
    result = compare.Comparison("a", "b", 0.05, args.alpha, screen, [], [], [])
    one_stage = flagged(screen)
    ids = compare.suspects(result, args.screen_alpha)
    confirmed = compare.judge_cells(sides([int(i) for i in ids], args.confirm_repeats), 0.05, args.alpha) if ids else []
    return one_stage, flagged(confirmed), len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--run-sigma", type=float, default=0.03)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--confirm-repeats", type=int, default=compare.CONFIRM_REPEATS)
    parser.add_argument("--screen-alpha", type=float, default=compare.SCREEN_ALPHA)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--slowdowns", type=float, nargs="+", default=[0.0, 0.10, 0.05],
                        help="0 is the A/A comparison")  # fmt: skip
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    intervals.BOOTSTRAP = 200  # fewer resamples than bench compare's 400, to keep this script minutes long
    print(f"{args.cells}-cell sweeps, process spread {args.run_sigma:.0%}, {args.trials} trials each, threshold 5%, "
          f"Holm alpha {args.alpha:g}; confirmed: screen one-sided p < {args.screen_alpha:g}, "
          f"{args.confirm_repeats} processes per side")  # fmt: skip
    for repeats in args.repeats:
        t0 = time.perf_counter()
        rows = {}
        for slowdown in args.slowdowns:
            outcomes = [trial(rng, args, repeats, slowdown) for _ in range(args.trials)]
            rows[slowdown] = (
                sum(o[0] for o in outcomes) / args.trials,
                sum(o[1] for o in outcomes) / args.trials,
                float(np.mean([o[2] for o in outcomes])),
            )
        print(f"  {repeats} process(es) per run  [{time.perf_counter() - t0:.0f} s]")
        for name, index in (("one stage", 0), ("confirmed", 1)):
            parts = [
                f"A/A false regression {rows[s][index]:5.1%} of {args.trials} (target <= 1%)" if s == 0 else
                f"{s:.0%} slowdown caught {rows[s][index]:4.0%} (target >= {95 if s >= 0.1 else 80}%)"
                for s in rows
            ]  # fmt: skip
            print(f"    {name:9s}: " + "; ".join(parts))
        print("    suspects measured again per sweep: " + ", ".join(
            f"{rows[s][2]:.1f} of {args.cells} ({'A/A' if s == 0 else f'{s:.0%}'})" for s in rows))  # fmt: skip


if __name__ == "__main__":
    main()
