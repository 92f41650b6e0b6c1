"""The Ray executor's own costs, on a real local Ray cluster (raylets on this machine):

- executor overhead per cell: the same cells (the fake backend, fixed windows) run by the local executor
  and on a one-node cluster, alternated; (Ray wall - local wall) / cells. Target: under 1 s a cell.
- startup: starting the cluster (head + node) and bench's joining it (connect, find the kinds, probe
  what a node can serve), apart from the sweep.
- scaling: the same sweep over one node and over two nodes of one kind (1 CPU each, the fake backend
  busy-waits on one thread, so two nodes fit this 2-CPU machine). Target: about 1/2.

Run: .venv/bin/python benchmarks/ray_executor.py [--cells 8] [--window-s 1.0] [--rounds 2]
Measure alone: two raylets and the cells share the machine's CPUs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = """\
name: ray-overhead
model: toy
backends: [{{name: fake, options: {{service_ms: 0.5}}}}]
batch_sizes: [{batches}]
threads: 1
measurement: {{min_duration_s: {window}, max_duration_s: {window}, warmup_s: 0.1, noise_threshold: 1.0,
               quiet_wait_s: 0, max_attempts: 1}}
fidelity: {{samples: 0}}
{machines}"""


def _scenario(folder: Path, cells: int, window: float, machines: str = "") -> Path:
    path = folder / f"s{len(list(folder.glob('s*.yaml')))}.yaml"
    batches = ", ".join(str(b) for b in range(1, cells + 1))
    path.write_text(SCENARIO.format(batches=batches, window=window, machines=machines))
    return path


def _bench(folder: Path, scenario: Path, *extra: str) -> tuple[float, list[dict[str, Any]]]:
    import json

    out = folder / f"out{time.monotonic_ns()}"
    env = {**os.environ, "BENCH_PLUGINS": "plugins.fake"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(scenario), "--out", str(out), "--no-report", *extra],
        cwd=folder, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (run,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    records = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines() if line.strip()]
    return wall, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rec-quick", action="store_true",
                        help="instead: scenarios/rec.yaml --quick over two machine kinds (a node each, 1 CPU), "
                             "real runtimes; cells per kind and status, overlaps, wall time")  # fmt: skip
    args = parser.parse_args()
    if args.rec_quick:
        return rec_quick()
    os.environ["BENCH_PLUGINS"] = "plugins.fake"
    from ray.cluster_utils import Cluster

    folder = Path(tempfile.mkdtemp(prefix="ray-executor-"))
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    first = cluster.add_node(num_cpus=1, resources={"bench_slot": 1, "machine_a": 1})
    cluster.wait_for_nodes()
    cluster_start = time.monotonic() - t0
    try:
        join = _join_time(cluster.address)
        plain = _scenario(folder, args.cells, args.window_s)
        kind = "machines:\n  - {name: a, resource: machine_a}\n"
        on_ray = _scenario(folder, args.cells, args.window_s, kind)
        local_walls, ray_walls, one_spans = [], [], []
        for _ in range(args.rounds):  # alternated, so a machine that drifts weighs on both
            local_walls.append(_bench(folder, plain)[0])
            wall, records = _bench(folder, on_ray, "--executor", "ray", "--ray-address", cluster.address)
            ray_walls.append(wall)
            one_spans.append(_span(records))
        one_node = statistics.median(ray_walls)
        second = cluster.add_node(num_cpus=1, resources={"bench_slot": 1, "machine_a": 1})
        cluster.wait_for_nodes()
        two_walls, two_spans, per_node = [], [], {}
        for _ in range(args.rounds):
            wall, records = _bench(folder, on_ray, "--executor", "ray", "--ray-address", cluster.address)
            two_walls.append(wall)
            two_spans.append(_span(records))
            per_node = {r["node_id"]: sum(1 for x in records if x["node_id"] == r["node_id"]) for r in records}
        two_nodes = statistics.median(two_walls)
        del first, second
    finally:
        cluster.shutdown()
    local = statistics.median(local_walls)
    print(f"cells: {args.cells} fake-backend cells of {args.window_s:g} s windows; {args.rounds} round(s) each")
    print(f"cluster start (head + one node, ray.cluster_utils): {cluster_start:.1f} s")
    print(f"bench joining it (ray.init, kinds, one probe): {join:.2f} s")
    print(f"local executor:            median wall {local:6.1f} s  ({', '.join(f'{w:.1f}' for w in local_walls)})")
    print(f"ray executor, one node:    median wall {one_node:6.1f} s  ({', '.join(f'{w:.1f}' for w in ray_walls)})")
    print(f"  overhead per cell: {(one_node - local) / args.cells:+.2f} s (target under 1 s); less the joining, "
          f"{(one_node - local - join) / args.cells:+.2f} s")  # fmt: skip
    print(f"ray executor, two nodes:   median wall {two_nodes:6.1f} s  ({', '.join(f'{w:.1f}' for w in two_walls)})")
    print(f"  two nodes / one node: {two_nodes / one_node:.2f} of the command's wall time; of the sweep "
          f"(first cell's start to last cell's end on the nodes): {statistics.median(two_spans):.1f} s / "
          f"{statistics.median(one_spans):.1f} s = {statistics.median(two_spans) / statistics.median(one_spans):.2f} "
          f"(ideal 0.50); cells per node: {sorted(per_node.values())}")  # fmt: skip
    return 0


def rec_quick() -> int:
    """rec.yaml --quick over two machine kinds of one node each."""
    from collections import Counter

    from ray.cluster_utils import Cluster

    folder = Path(tempfile.mkdtemp(prefix="ray-rec-"))
    text = (ROOT / "scenarios" / "rec.yaml").read_text()
    text += (
        "\nmachines:\n  - {name: a, resource: machine_a, hourly_usd: 0.085}\n"
        "  - {name: b, resource: machine_b, instance: aws/c6i.large}\n"
    )
    scenario = folder / "rec.yaml"
    scenario.write_text(text)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for kind in ("a", "b"):
        cluster.add_node(num_cpus=1, resources={"bench_slot": 1, f"machine_{kind}": 1})
    cluster.wait_for_nodes()
    try:
        wall, records = _bench(folder, scenario, "--quick", "--executor", "ray", "--ray-address", cluster.address)
    finally:
        cluster.shutdown()
    counts = Counter((r["config"]["machine"], r["status"]) for r in records)
    untrusted = sum(1 for r in records if r.get("trusted") is False)
    print(f"rec.yaml --quick over two machine kinds (one 1-CPU node each): {len(records)} records in {wall:.0f} s")
    for (kind, status), n in sorted(counts.items()):
        print(f"  kind {kind}: {n} {status}")
    per_kind = {k: sorted(json_key(r) for r in records if r["config"]["machine"] == k) for k in ("a", "b")}
    print(f"  the same cells on both kinds, once each: {per_kind['a'] == per_kind['b']}")
    spans: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.get("node_id"):
            spans.setdefault(r["node_id"], []).append((r["started_at"], r["ended_at"]))
    overlaps = sum(b[0] < a[1] for s in spans.values() for a, b in itertools.pairwise(sorted(s)))
    print(f"  cells overlapping on one node: {overlaps}; untrusted (the two nodes share 2 CPUs): {untrusted}")
    return 0


def json_key(record: dict[str, Any]) -> str:
    import json

    return json.dumps({k: v for k, v in record["config"].items() if k not in ("machine", "threads")}, sort_keys=True)


def _span(records: list[dict[str, Any]]) -> float:
    return max(r["ended_at"] for r in records) - min(r["started_at"] for r in records)


def _join_time(address: str) -> float:
    """What bench's driver spends before its first cell: connect, find the kinds, ask a node."""
    sys.path.insert(0, str(ROOT))
    from harness.executors import ray_cluster as rc
    from harness.scenario import load_scenario_text

    scenario = load_scenario_text(
        "name: j\nmodel: toy\nbackends: [{name: fake}]\nbatch_sizes: [1]\n"
        "machines:\n  - {name: a, resource: machine_a}\n"
    )
    started = time.monotonic()
    cluster = rc.connect(address)
    try:
        (kind,) = cluster.kinds(scenario.machines)
        cell = scenario.cells(1)[0]
        cluster.probe(kind, {"machine": "a", "cells": [cell.config()], "identity": rc.bench_identity(),
                             "plugins": ["plugins.fake"], "autoload": None})  # fmt: skip
        return time.monotonic() - started
    finally:
        cluster.close()


if __name__ == "__main__":
    raise SystemExit(main())
