"""How often bench compare cries wolf, and how often it catches a real slowdown.

    python benchmarks/compare_power.py [--trials N] [--cells 50] [--repeats 1 3] [--confirm-repeats 12]
                                       [--processes FILE [--setting S] [--with-hog S] | --pool FILE | --run-sigma X]

Synthetic runs judged by the very functions bench compare runs (bootstrap CIs, Holm over the
cells' metrics, alpha 0.01, the 5 % threshold):
- every query's latency: the cell's service time x lognormal(0.05), 0.5 % of queries 3x slower;
- every process (a repeat, or a run of one): all its latencies x a process factor drawn from what
  this machine measured, by default from ``results/process_spread.json`` (written by
  ``benchmarks/thread_settings.py --rounds 10 --batches 64 --settings default reserve1+pin
  --json-out results/process_spread.json``: fresh processes of dlrm-small b64 on pytorch,
  onnxruntime and openvino, quiet and beside a CPU hog): each quiet process's throughput against its
  runtime's median, so the spread and the fast and slow paces between processes are this machine's
  (``--setting`` picks the cpu setting, ``--with-hog S`` draws a share S of the processes from the
  hog's, as if the noise guard had missed them). ``--pool FILE`` draws them instead from
  ``benchmarks/gate_power.py``'s pool of fake-backend processes (the harness's own spread, no
  runtime's); ``--run-sigma X`` assumes lognormal(X), the older model.
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
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import ROOT

from harness.analysis import comparison as compare
from harness.analysis import intervals

QUERIES = 700  # a p99 cell measures at least 662 queries
DEFAULT_PROCESSES = ROOT / "results" / "process_spread.json"
#: a process's factor: all its latencies are multiplied by one draw
Factors = Callable[[np.random.Generator], float]


def pool_factors(path: Path) -> tuple[Factors, str]:
    """Process factors drawn from a gate_power pool: each trusted process's p50 over its cell's median."""
    data = json.loads(path.read_text())
    by_cell: dict[str, list[float]] = {}
    untrusted = total = 0
    for pair in data["pairs"]:
        for side in ("baseline", "candidate"):
            process = pair[side]
            total += 1
            p50 = (process.get("values") or {}).get("p50")
            if process["status"] != "ok" or not p50:
                continue
            if not process["trusted"]:
                untrusted += 1
                continue
            by_cell.setdefault(pair["cell_id"], []).append(float(p50))
    ratios = np.concatenate([np.asarray(v) / np.median(v) for v in by_cell.values()])
    lo, hi = np.percentile(ratios, [5, 95])
    what = (f"process factors from {path.name}: {ratios.size} trusted processes of {len(by_cell)} cells "
            f"({untrusted} of {total} untrusted, left out); sd {ratios.std():.1%}, "
            f"5-95 % {lo:.3f}-{hi:.3f}")  # fmt: skip
    return (lambda rng: float(rng.choice(ratios))), what


def measured_factors(path: Path, setting: str, with_hog: float) -> tuple[Factors, str]:
    """Process factors from benchmarks/thread_settings.py's JSON: each process's latency factor, its
    group's (runtime, batch, condition) median throughput over its own; quiet ones, and a share
    ``with_hog`` of the hog's."""
    rows = [r for r in json.loads(path.read_text()) if r["setting"] == setting]
    if not rows:
        raise SystemExit(f"{path}: no processes of setting {setting!r}")
    groups: dict[str, list[np.ndarray]] = {"quiet": [], "hog": []}
    parts = []
    for row in rows:
        values = np.asarray([v for v in row["throughput_sps"] if v], dtype=np.float64)
        if values.size < 2:
            continue
        groups[row["condition"]].append(np.median(values) / values)
        if row["condition"] == "quiet":
            parts.append(f"{row['backend']} b{row['batch']} cv {values.std(ddof=1) / values.mean():.1%}")
    quiet = np.concatenate(groups["quiet"])
    hog = np.concatenate(groups["hog"]) if groups["hog"] else quiet
    lo, hi = np.percentile(quiet, [5, 95])
    what = (f"process factors from {path.name} ({setting}): {quiet.size} quiet processes ({', '.join(parts)}); "
            f"5-95 % {lo:.3f}-{hi:.3f}")  # fmt: skip
    if with_hog:
        what += f"; {with_hog:.0%} drawn from {hog.size} beside the hog"

    def draw(rng: np.random.Generator) -> float:
        return float(rng.choice(hog if with_hog and rng.random() < with_hog else quiet))

    return draw, what


def lognormal_factors(sigma: float) -> tuple[Factors, str]:
    return (lambda rng: float(rng.lognormal(0, sigma))), f"process spread lognormal({sigma:g}) (assumed)"


def simulate(rng: np.random.Generator, base_ms: float, factor: float, repeats: int, process: Factors) -> compare.Side:
    """One side of one cell: ``repeats`` processes' latencies (ms) and their metric values."""
    groups = []
    for _ in range(repeats):
        lat = base_ms * factor * process(rng) * rng.lognormal(0, 0.05, QUERIES)
        lat[rng.random(QUERIES) < 0.005] *= 3
        groups.append(lat)
    values = {
        "throughput": [1000.0 / float(g.mean()) for g in groups],
        "p50": [float(np.quantile(g, 0.5)) for g in groups],
        "p99": [float(np.quantile(g, 0.99)) for g in groups],
    }
    return compare.Side(groups, values)


def trial(
    rng: np.random.Generator, args: argparse.Namespace, repeats: int, slowdown: float, process: Factors
) -> tuple[bool, bool, int]:
    """One baseline/candidate sweep pair, cell 0 slowed by ``slowdown``: (one stage flags cell 0 or,
    in an A/A trial, any cell; the confirmed gate does; the number of suspects)."""
    service = rng.uniform(0.1, 5.0, args.cells)
    slow = {0: 1 + slowdown} if slowdown else {}

    def sides(ids: list[int], n: int) -> list[tuple[str, str, int, compare.Side, compare.Side]]:
        return [(str(c), f"cell {c}", 1, simulate(rng, service[c], 1.0, n, process),
                 simulate(rng, service[c], slow.get(c, 1.0), n, process)) for c in ids]  # fmt: skip

    def flagged(cells: list[compare.CellComparison]) -> bool:
        hits = {c.cell_id for c in cells if c.verdict == "regressed"}
        return bool(hits) if not slowdown else "0" in hits

    screen = compare.judge_cells(sides(list(range(args.cells)), repeats), 0.05, args.alpha, args.noise_floor)
    result = compare.Comparison("a", "b", 0.05, args.alpha, screen, [], [], [])
    one_stage = flagged(screen)
    ids = compare.suspects(result, args.screen_alpha)
    confirmed = (
        compare.judge_cells(sides([int(i) for i in ids], args.confirm_repeats), 0.05, args.alpha, args.noise_floor)
        if ids
        else []
    )
    return one_stage, flagged(confirmed), len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--processes", type=Path, default=DEFAULT_PROCESSES, help="thread_settings.py's JSON")
    parser.add_argument("--setting", default="default", help="the cpu setting whose processes to draw")
    parser.add_argument("--with-hog", type=float, default=0.0, help="share of processes drawn beside the hog")
    parser.add_argument("--pool", type=Path, default=None, help="gate_power.py's pool of fake-backend processes")
    parser.add_argument("--run-sigma", type=float, default=None, help="assume lognormal process spread instead")
    parser.add_argument(
        "--noise-floor",
        type=float,
        default=compare.NOISE_FLOOR,
        help="the spread bench compare assumes for one-process runs (0.18: as measured here)",
    )
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--confirm-repeats", type=int, default=compare.CONFIRM_REPEATS)
    parser.add_argument("--screen-alpha", type=float, default=compare.SCREEN_ALPHA)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--slowdowns", type=float, nargs="+", default=[0.0, 0.10, 0.05],
                        help="0 is the A/A comparison")  # fmt: skip
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.run_sigma is not None:
        process, what = lognormal_factors(args.run_sigma)
    elif args.pool is not None:
        process, what = pool_factors(args.pool)
    elif args.processes.is_file():
        process, what = measured_factors(args.processes, args.setting, args.with_hog)
    else:
        parser.error(f"no {args.processes}: measure it (see the docstring), or give --pool FILE or --run-sigma X")
    intervals.BOOTSTRAP = 200  # fewer resamples than bench compare's 400, to keep this script minutes long
    print(what)
    print(f"{args.cells}-cell sweeps, {args.trials} trials each, threshold 5%, "
          f"Holm alpha {args.alpha:g}; confirmed: screen one-sided p < {args.screen_alpha:g}, "
          f"{args.confirm_repeats} processes per side")  # fmt: skip
    for repeats in args.repeats:
        t0 = time.perf_counter()
        rows = {}
        for slowdown in args.slowdowns:
            outcomes = [trial(rng, args, repeats, slowdown, process) for _ in range(args.trials)]
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
