"""``bench run --executor ray``: cells on a real local Ray cluster (several raylets on this machine,
each a node with its own resources), one cell per node at a time, machine kinds as an axis, and the
cluster's faults: a node lost mid-run, a killed driver, a node with other code, no cluster at all."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, bench, fake_scenario, journal, run_dirs
from harness.cells import Cell
from harness.executors import ray_cluster as rc
from harness.scenario import load_scenario_text

try:
    import ray  # noqa: F401
except ImportError:
    HAVE_RAY = False
else:
    HAVE_RAY = True
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed: pip install 'bench[ray]'")

MACHINES = """\
machines:
  - {name: small, resource: machine_small, hourly_usd: 0.10}
  - {name: big, label: "bench-kind=big", instance: aws/c6i.large}
"""


# -- what needs no cluster ----------------------------------------------------------------------


def _scenario(extra: str = MACHINES) -> Any:
    text = f"name: s\nmodel: toy\nbackends: [{{name: fake}}]\nbatch_sizes: [1, 8]\n{extra}"
    return load_scenario_text(text, source="s.yaml", registries=None)


@pytest.mark.usefixtures("fake_plugin")
def test_machine_kinds_multiply_the_cells_and_keep_ids_without_them() -> None:
    plain = _scenario("")
    with_kinds = _scenario()
    cells = with_kinds.cells(2)
    assert len(cells) == 2 * len(plain.cells(2))
    assert [c.machine for c in cells] == ["small", "small", "big", "big"]
    assert cells[0].label.endswith("b1 @small")
    # a scenario without machines: its cells and fingerprint are what they were before machines existed
    assert all("machine" not in c.config() for c in plain.cells(2))
    # pinned: what this bench computed before machines existed (ids and fingerprints match stored runs)
    assert [c.id for c in plain.cells(2)] == ["26bd9be64a32", "aeb0244548fd"]
    assert plain.fingerprint() == "01800637d11f4309e2592aef6967bc1adb5b6783843a8c5cc83135588e70d81b"
    assert with_kinds.fingerprint() != plain.fingerprint()
    assert len({c.id for c in cells}) == 4
    from harness.scenario.expansion import expand_cells

    per_kind = expand_cells(with_kinds.model_copy(update={"threads": "auto"}), 2, {"small": 1, "big": 4})
    assert {(c.machine, c.threads) for c in per_kind} == {("small", 1), ("big", 4)}


@pytest.mark.usefixtures("fake_plugin")
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: a}", "exactly one of resource"),
        ("{name: a, resource: x, label: k=v}", "exactly one of resource"),
        ("{name: a, resource: '9x'}", "is not a Ray resource name"),
        ("{name: a, resource: 5}", "valid string"),
        ("{name: a, label: novalue}", "should be KEY=VALUE"),
        ("{name: a, resource: x, instance: aws/nope}", "aws/nope"),
        ("{name: a, resource: x, instance: aws/c6i.large, hourly_usd: 1.0}", "price once"),
    ],
)
def test_a_bad_machine_kind_is_named_at_its_line(entry: str, message: str) -> None:
    from harness.errors import ScenarioError

    with pytest.raises(ScenarioError, match="machines") as info:
        _scenario(f"machines:\n  - {entry}\n")
    assert message in str(info.value)
    assert "s.yaml:6: machines.0" in str(info.value)


@pytest.mark.usefixtures("fake_plugin")
def test_duplicate_machine_names_are_refused() -> None:
    from harness.errors import ScenarioError

    with pytest.raises(ScenarioError, match="duplicate value 'a'"):
        _scenario("machines:\n  - {name: a, resource: x}\n  - {name: a, resource: y}\n")


def test_each_machine_kind_is_priced_by_its_own_price() -> None:
    from harness.manifest import check
    from harness.runner import cost_settings

    data = {
        "schema_version": 1, "run_id": "r", "created_at": 0.0, "scenario": {"name": "s", "text": ""},
        "environment": {},
        "settings": {
            "quick": False, "filters": {"backends": [], "batch_sizes": [], "precisions": []},
            "measurement": {"warmup_s": 0.1, "warmup_queries": 1, "min_duration_s": 0.1, "max_duration_s": 0.2,
                            "min_queries": 10, "headline_percentile": 99, "confidence": 0.95, "ci_rel_width": None},
            "percentiles": [50, 99], "noise_threshold": 0.1, "repeats": 1, "limits": {"timeout_s": 30},
            "plugins": [], "autoload": None, "cost": {"instance": "aws/c6i.large", "utilisation": 0.5},
            "machines": [{"name": "small", "resource": "m", "hourly_usd": 0.1},
                         {"name": "free", "resource": "f", "instance": None, "hourly_usd": None}],
        },
    }  # fmt: skip
    manifest = check(data, Path("manifest.json"))
    assert cost_settings({"config": {}}, manifest) == {"instance": "aws/c6i.large", "utilisation": 0.5}
    small = cost_settings({"config": {"machine": "small"}}, manifest)
    assert small == {"utilisation": 0.5, "instance": None, "hourly_usd": 0.1}
    assert cost_settings({"config": {"machine": "free"}}, manifest) is None  # not the scenario's machine's price


def test_a_job_moves_onto_a_node_with_its_files(tmp_path: Path) -> None:
    job = {
        "cell": {"input_data": "/d/in.npz", "model_options": {"onnx": "/d/m.onnx", "n": 3}},
        "workdir": "/runs/r1/work", "cell_dir": "/runs/r1/cells/abc", "reference": {"path": "/runs/r1/ref.npz"},
    }  # fmt: skip
    paths = {"/d/in.npz": "/n/1/in.npz", "/d/m.onnx": "/n/2/m.onnx", "/runs/r1/ref.npz": "/n/3/ref.npz"}
    moved = rc._localise(job, tmp_path, paths)
    assert moved["workdir"] == str(tmp_path / "work")
    assert moved["cell_dir"] == str(tmp_path / "cells" / "abc")
    assert moved["cell"] == {"input_data": "/n/1/in.npz", "model_options": {"onnx": "/n/2/m.onnx", "n": 3}}
    assert moved["reference"] == {"path": "/n/3/ref.npz"}
    shipped = {"ab12:/d/in.npz": b"data"}
    where = rc._unpack(tmp_path / "inputs", shipped)
    assert Path(where["/d/in.npz"]).read_bytes() == b"data"
    assert rc._unpack(tmp_path / "inputs", shipped) == where  # once per node


@needs_ray
def test_identity_is_stable_and_names_the_code() -> None:
    first = rc.bench_identity()
    rc.bench_identity.cache_clear()
    assert rc.bench_identity() == first
    assert len(first["code"]) == 16
    node = {"host": "h", "ip": "1.2.3.4", **first}
    assert rc._refusal(node, first) is None
    other = rc._refusal({**node, "code": "0" * 16}, first)
    assert other is not None
    assert "refuses the cell" in other
    assert "h (1.2.3.4)" in other


@pytest.mark.usefixtures("fake_plugin")
def test_a_scenario_with_machines_needs_the_ray_executor(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, extra=MACHINES)
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert out.returncode == 2
    assert "machines" in out.stderr
    assert "--executor ray" in out.stderr
    assert not (tmp_path / "r").exists() or not run_dirs(tmp_path / "r")


@needs_ray
@pytest.mark.usefixtures("fake_plugin")
def test_no_cluster_at_the_address_is_exit_2_at_once(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scenario = fake_scenario(tmp_path)
    started = time.monotonic()
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", "--executor", "ray",
                "--ray-address", f"127.0.0.1:{port}")  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in out.stderr
    assert "ray start --head" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "r").exists() or not run_dirs(tmp_path / "r")


@pytest.mark.usefixtures("fake_plugin")
def test_without_ray_installed_the_extra_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "noray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
    scenario = fake_scenario(tmp_path)
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", "--executor", "ray",
                env={"PYTHONPATH": str(blocker)})  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "pip install 'bench[ray]'" in out.stderr


# -- a real cluster -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head that runs nothing, two nodes of kind small (one CPU each) and one of kind big (two CPUs)."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed: pip install 'bench[ray]'")
    from ray.cluster_utils import Cluster

    os.environ["BENCH_PLUGINS"] = "plugins.fake"  # the nodes' workers inherit the raylets' environment
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    made.small = [  # type: ignore[attr-defined]
        made.add_node(num_cpus=1, resources={"bench_slot": 1, "machine_small": 1}) for _ in range(2)
    ]
    made.big = made.add_node(num_cpus=2, resources={"bench_slot": 1}, labels={"bench-kind": "big"})  # type: ignore[attr-defined]
    made.wait_for_nodes()
    try:
        yield made
    finally:
        made.shutdown()
        os.environ.pop("BENCH_PLUGINS", None)


def _records(run_dir: Path) -> list[dict]:
    from harness.store import RunDir

    return [dict(r) for r in RunDir.open(run_dir).records()]


def _no_overlap_per_node(records: list[dict]) -> None:
    by_node: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        if r["status"] == "ok":
            by_node[r["node_id"]].append((r["started_at"], r["ended_at"]))
    for spans in by_node.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"two cells overlapped on one node: {spans}"


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_every_cell_runs_once_per_machine_kind_on_its_own_node(tmp_path: Path, cluster: Any) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2, 4]", extra=MACHINES + "devices: [cpu, cuda]\n", min_s=0.3,
                             max_s=0.4)  # fmt: skip
    scenario.write_text(scenario.read_text().replace("threads: 1", "threads: auto"))
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", "--executor", "ray",
                "--ray-address", cluster.address, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    everything = _records(run_dir)
    assert len(everything) == 12
    skipped = [r for r in everything if r["status"] == "skipped"]
    # what a node of each kind said it cannot run: the fake backend has no CUDA device
    assert sorted((r["config"]["device"], r["config"]["machine"]) for r in skipped) == sorted(
        [("cuda", "small")] * 3 + [("cuda", "big")] * 3
    )
    records = [r for r in everything if r["status"] != "skipped"]
    assert {r["status"] for r in records} == {"ok"}
    kinds = {node.node_id: "small" for node in cluster.small} | {cluster.big.node_id: "big"}
    seen = defaultdict(list)
    for r in records:
        seen[r["config"]["batch_size"]].append(r["config"]["machine"])
        assert kinds[r["node_id"]] == r["config"]["machine"], "a cell ran on a node of another kind"
        assert r["config"]["threads"] == {"small": 1, "big": 2}[r["config"]["machine"]]  # auto: the kind's CPUs
        assert (run_dir / r["latency_file"]).is_file()  # the node's files came back into the run folder
        assert (run_dir / "cells" / r["cell_id"] / "worker.r0.log").is_file()
    assert all(sorted(m) == ["big", "small"] for m in seen.values())
    _no_overlap_per_node(records)
    # each kind priced by its own price
    prices = {r["config"]["machine"]: (r["hourly_usd"], r["price_source"]) for r in records}
    assert prices["small"] == (0.10, "scenario (hourly_usd)")
    assert prices["big"][1].startswith("catalog: aws/c6i.large")
    assert all(r["cost_per_million_usd"] > 0 for r in records)
    manifest = __import__("json").loads((run_dir / "manifest.json").read_text())
    assert manifest["settings"]["executor"]["kind"] == "ray"
    assert {r["node_id"] for r in records} <= set(manifest["nodes"])
    assert manifest["settings"]["executor"]["cpus"] == {"small": 1, "big": 2}
    for node in manifest["nodes"].values():
        assert node["environment"]["cpu"]
        assert node["code"] == rc.bench_identity()["code"]
    # the same columns as a local run of the same cells, plus where each ran
    import pandas as pd

    local = fake_scenario(tmp_path, batches="[1, 2, 4]", min_s=0.3, max_s=0.4, name="local.yaml")
    assert bench("run", str(local), "--out", str(tmp_path / "l"), "--no-report").returncode == 0
    (local_dir,) = run_dirs(tmp_path / "l")
    ray_columns = set(pd.read_parquet(run_dir / "results.parquet").columns)
    local_columns = set(pd.read_parquet(local_dir / "results.parquet").columns)
    assert local_columns - ray_columns <= {"fraction_of_peak"}
    assert {"machine", "node_id", "node_host", "node_ip"} <= ray_columns
    # the hardware evaluation: kinds ranked by cost per million, each with its best configuration
    answer = bench("recommend", str(run_dir), "--p99-ms", "1000", cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    ranking = answer.stdout.split("by machine, each with its cheapest configuration meeting the SLO:")[1]
    lines = [line.strip() for line in ranking.strip().splitlines()[:2]]
    # without a request rate, batches over 1 are left out of the answer (see bench recommend)
    single = [r for r in records if r["config"]["batch_size"] == 1]
    cheapest = min(single, key=lambda r: r["cost_per_million_usd"])["config"]["machine"]
    assert lines[0].startswith(f"1. {cheapest}: $")
    assert lines[1].startswith("2. ")
    page = tmp_path / "report.html"
    assert bench("report", str(run_dir), "-o", str(page), cwd=tmp_path).returncode == 0
    html = page.read_text()
    assert "Hardware evaluation" in html
    assert f"{run_dir.name} @small" in html
    assert f"{run_dir.name} @big" in html


def _start(scenario: Path, out: Path, address: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(scenario), "--out", str(out), "--no-report",
         "--executor", "ray", "--ray-address", address, *extra],
        cwd=scenario.parent, env={**os.environ, "BENCH_PLUGINS": "plugins.fake"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _wait_for_records(out: Path, count: int, proc: subprocess.Popen[str], timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dirs = run_dirs(out) if out.exists() else []
        if dirs and (dirs[0] / "journal.jsonl").exists() and len(journal(dirs[0])) >= count:
            return dirs[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no records in time")


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
@pytest.mark.parametrize("requeue", [False, True], ids=["resume", "requeue"])
def test_a_lost_node_fails_its_cell_and_resume_completes_it(tmp_path: Path, cluster: Any, requeue: bool) -> None:
    only_small = "machines:\n  - {name: small, resource: machine_small}\n"
    scenario = fake_scenario(tmp_path, batches="[1, 2, 3, 4, 5, 6]", extra=only_small, min_s=2.0, max_s=2.0)
    proc = _start(scenario, tmp_path / "r", cluster.address, *(["--requeue-lost"] if requeue else []))
    run_dir = _wait_for_records(tmp_path / "r", 1, proc)
    time.sleep(1.0)  # both small nodes are measuring now: four cells were still waiting for them
    victim = cluster.small.pop()
    cluster.remove_node(victim, allow_graceful=False)  # its raylet and workers killed
    try:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        records = journal(run_dir)
        if requeue:  # the lost cell ran again at once on the other small node
            assert {r["status"] for r in records} == {"ok"}
            assert len(records) == 6
            assert [r.get("requeued") for r in records].count(1) == 1
            assert {r["node_id"] for r in records if r.get("requeued")} <= {n.node_id for n in cluster.small}
            return
        lost = [r for r in records if r["status"] != "ok"]
        assert len(lost) == 1, "the killed node had no cell in flight"
        assert lost[0]["reason"].startswith("node lost")
        assert lost[0]["retryable"] is True
        out = bench("run", "--resume", str(run_dir), "--no-report", "--ray-address", cluster.address, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        final = _records(run_dir)  # the new record replaces the lost one
        assert sorted(r["config"]["batch_size"] for r in final) == [1, 2, 3, 4, 5, 6]
        assert {r["status"] for r in final} == {"ok"}
        assert len(journal(run_dir)) == 7
    finally:
        cluster.small.append(cluster.add_node(num_cpus=1, resources={"bench_slot": 1, "machine_small": 1}))
        cluster.wait_for_nodes()


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_killed_driver_leaves_a_run_resume_completes(tmp_path: Path, cluster: Any) -> None:
    only_big = "machines:\n  - {name: big, label: bench-kind=big}\n"
    scenario = fake_scenario(tmp_path, batches="[1, 2, 3, 4]", extra=only_big, min_s=1.0, max_s=1.0)
    proc = _start(scenario, tmp_path / "r", cluster.address)
    run_dir = _wait_for_records(tmp_path / "r", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = bench("run", "--resume", str(run_dir), "--no-report", cwd=tmp_path)  # the address is the run's
    assert out.returncode == 0, out.stderr
    final = _records(run_dir)
    assert sorted(r["config"]["batch_size"] for r in final) == [1, 2, 3, 4]
    assert {r["status"] for r in final} == {"ok"}
    _no_overlap_per_node(final)


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_node_with_other_code_refuses_its_cells(tmp_path: Path, cluster: Any) -> None:
    other = tmp_path / "other"
    for package in ("harness", "plugins"):
        shutil.copytree(ROOT / package, other / package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(other / "harness" / "cells.py", "a") as fh:
        fh.write("\n# another commit\n")
    node = cluster.add_node(num_cpus=1, resources={"bench_slot": 1, "machine_odd": 1},
                            env_vars={"PYTHONPATH": str(other)})  # fmt: skip
    cluster.wait_for_nodes()
    try:
        scenario = fake_scenario(tmp_path, extra="machines:\n  - {name: odd, resource: machine_odd}\n")
        out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", "--executor", "ray",
                    "--ray-address", cluster.address, cwd=tmp_path)  # fmt: skip
        assert out.returncode == 3, out.stderr  # nothing measured
        (run_dir,) = run_dirs(tmp_path / "r")
        (record,) = journal(run_dir)
        assert record["status"] == "failed"
        assert "refuses the cell" in record["reason"]
        assert rc.bench_identity()["code"] in record["reason"]
    finally:
        cluster.remove_node(node)


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_kind_the_cluster_lacks_is_exit_2_before_anything_runs(tmp_path: Path, cluster: Any) -> None:
    scenario = fake_scenario(tmp_path, extra="machines:\n  - {name: gpu, resource: machine_l4}\n")
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", "--executor", "ray",
                "--ray-address", cluster.address, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "machine kind gpu: no node has resource machine_l4" in out.stderr
    assert "ray start --address" in out.stderr
    assert not (tmp_path / "r").exists() or not run_dirs(tmp_path / "r")


def test_a_cell_config_round_trips_with_its_machine() -> None:
    cell = Cell("toy", "fake", "cpu", "fp32", 1, 1, machine="small")
    assert Cell.from_config(cell.config()) == cell
    assert cell.id != Cell("toy", "fake", "cpu", "fp32", 1, 1).id


@pytest.mark.slow
def test_real_runtimes_run_once_per_kind_with_their_fidelity(tmp_path: Path, cluster: Any) -> None:
    """rec.yaml --quick (onnxruntime and OpenVINO: no compile) over two machine kinds; the fidelity
    reference the driver computes reaches the nodes."""
    text = (ROOT / "scenarios" / "rec.yaml").read_text()
    text = text.replace("quiet_wait_s: 10", "quiet_wait_s: 0").replace("max_attempts: 3", "max_attempts: 1")
    scenario = tmp_path / "rec.yaml"
    scenario.write_text(text + "\n" + MACHINES)
    out = bench("run", str(scenario), "--quick", "--backend", "onnxruntime", "--backend", "openvino", "--out",
                str(tmp_path / "r"), "--no-report", "--executor", "ray", "--ray-address", cluster.address,
                cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    records = _records(run_dir)
    per_kind = defaultdict(list)
    for r in records:
        per_kind[r["config"]["machine"]].append(r["cell_id"])
        assert r["status"] in ("ok", "skipped"), r.get("reason")
    configs = {
        kind: sorted(json_config(r) for r in records if r["config"]["machine"] == kind) for kind in ("small", "big")
    }
    assert configs["small"] == configs["big"]  # the same cells on each kind, once each
    assert len(per_kind["small"]) == len(set(per_kind["small"])) >= 5
    measured = [r for r in records if r["status"] == "ok"]
    assert measured
    for r in measured:
        assert r["cosine"] > 0.95  # compared with the driver's fp32 reference, on the node
        assert (run_dir / r["latency_file"]).is_file()
    _no_overlap_per_node(records)


def json_config(record: dict) -> str:
    import json

    config = {k: v for k, v in record["config"].items() if k not in ("machine", "threads")}
    return json.dumps(config, sort_keys=True)
