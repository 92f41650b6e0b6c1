"""Run cells on a Ray cluster (``bench run --executor ray``): one cell per node at a time.

The driver plans the cells as the local executor does and submits each as a Ray task. On its node
the task runs bench's own worker process exactly as the local executor does
(:func:`harness.runner.measure_attempts`: process group, hard timeout, memory cap, quiet windows,
attempts) in a folder of the node's own, and returns the result with the files the worker wrote
(raw latencies, LoadGen logs, the worker's log); the driver writes those into the run folder and
journals the record the moment it arrives, so a killed driver leaves a run ``--resume`` completes.

Measurements never share a node: every node offers one ``bench_slot`` resource and every cell asks
for it, with all of the CPUs (and for a CUDA cell the GPUs) of the smallest node of its kind. Ray's
retries are off: a cell whose node dies is ``failed`` with the reason ``node lost`` (or, with
``--requeue-lost``, runs once more on another node of its kind), never a silent re-run. A node whose
bench differs from the driver's (version or code) refuses its cells with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.records import Job
    from harness.scenario.schema import MachineKind

#: the custom resource each node offers once: a cell takes it, so two cells never share a node
SLOT = "bench_slot"
#: a machine kind's own resource is asked for in this amount: the slot already makes a cell exclusive
KIND_SHARE = 0.001
#: the folder a node keeps its runs' files and its compile cache in (default: the system's temp dir)
NODE_DIR_ENV = "BENCH_NODE_DIR"
INSTALL_HINT = "pip install 'bench[ray]' (make setup installs it)"
START_HINT = "start one with `ray start --head --resources='{\"bench_slot\": 1}'`, or name it with --ray-address"
#: how often the driver looks for machine kinds that lost their last node while cells wait for them
WATCH_S = 2.0
#: how long a host:port may take to accept a connection before it counts as no cluster
CONNECT_TIMEOUT_S = 5.0
#: how long the driver waits for a node of a kind to say what it can run
PROBE_TIMEOUT_S = 120.0


def import_ray() -> Any:
    """The ray module, or a clear error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


# -- what a node runs -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def bench_identity() -> dict[str, str]:
    """This installation's bench: its version and a digest of its code (harness and the built-in
    plugins), so a node with other code refuses to measure for a driver it would not agree with."""
    from importlib import metadata

    import harness
    import plugins

    try:
        version = metadata.version("bench")
    except metadata.PackageNotFoundError:
        version = "not installed"
    digest = hashlib.sha256()
    for root in (Path(harness.__file__).parent, Path(plugins.__file__).parent):
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return {"version": version, "code": digest.hexdigest()[:16]}


def node_dir() -> Path:
    return Path(os.environ.get(NODE_DIR_ENV) or Path(tempfile.gettempdir()) / "bench-node")


@functools.lru_cache(maxsize=1)
def _fingerprint(plugins: tuple[str, ...], autoload: bool | None) -> dict[str, Any]:
    from harness import environment
    from harness.pluginmanager import registries

    return environment.fingerprint(registries(plugins, autoload=autoload).runtime_packages())


def _node_facts(machine: str | None, plugins: tuple[str, ...], autoload: bool | None) -> dict[str, Any]:
    ray = import_ray()
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "ip": ray.util.get_node_ip_address(),
        "machine": machine,
        **bench_identity(),
        "environment": _fingerprint(plugins, autoload),
    }


def _refusal(node: Mapping[str, Any], driver: Mapping[str, str]) -> str | None:
    if node["version"] == driver["version"] and node["code"] == driver["code"]:
        return None
    return (
        f"node {node['host']} ({node['ip']}) runs bench {node['version']} (code {node['code']}), the driver "
        f"bench {driver['version']} (code {driver['code']}): it refuses the cell; install the driver's bench "
        "on the node (the same image or commit)"
    )


def probe_task(payload: Mapping[str, Any]) -> dict[str, Any]:
    """On a node of a machine kind: its facts, and why it cannot serve each cell (None: it can)."""
    from harness.cells import Cell
    from harness.pluginmanager import registries
    from harness.registry import safe_supports

    node = _node_facts(payload["machine"], tuple(payload["plugins"]), payload["autoload"])
    refused = _refusal(node, payload["identity"])
    if refused:
        return {"node": node, "refused": refused, "skips": {}}
    regs = registries(tuple(payload["plugins"]), autoload=payload["autoload"])
    skips: dict[str, str | None] = {}
    for config in payload["cells"]:
        cell = Cell.from_config(dict(config))
        if cell.backend not in regs.backends:
            skips[cell.id] = f"backend {cell.backend} is not installed on node {node['host']}"
            continue
        support = safe_supports(regs.backends.get(cell.backend), cell)
        skips[cell.id] = None if support.ok else support.reason
    return {"node": node, "refused": None, "skips": skips}


def cell_task(payload: Mapping[str, Any], shipped: Mapping[str, bytes]) -> dict[str, Any]:
    """On the node Ray chose: measure one cell as the local executor does; return the result, the
    files the worker wrote (relative to the run folder) and when the node measured it."""
    from harness.executors.local import Limits
    from harness.records import Job
    from harness.runner import cpu_env, measure_attempts

    started = time.time()
    node = _node_facts(payload["machine"], tuple(payload["job"]["plugins"]), payload["job"]["autoload"])
    refused = _refusal(node, payload["identity"])
    if refused:
        # not the cell's fault: --resume measures it again, on whatever node is then free
        result: dict[str, Any] = {"status": "failed", "reason": refused, "retryable": True}
        return {"result": result, "files": {}, "node": node, "started": started, "ended": time.time()}
    run_base = node_dir() / "runs" / payload["run_id"]
    paths = _unpack(run_base / "inputs", shipped)
    # a folder of the task's own: nodes sharing a host (or a network BENCH_NODE_DIR) never share one
    prefix = f"{Path(payload['job']['cell_dir']).name}.r{payload['job']['repeat']}."
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=_mkdir(run_base / "tasks")))
    job: Job = Job.from_dict(_localise(payload["job"], base, paths))
    env = dict(payload["env"])
    env.update(cpu_env(payload["cpu"] or {}, int(job.cell["threads"])))  # this node's CPUs, not the driver's
    env["TMPDIR"] = str(base / "work" / "tmp")
    Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
    if payload["cache"]:  # the node's own compile cache: the driver's folder is the driver's
        env[payload["cache_env"]] = str(node_dir() / "cache")
    cell_dir = Path(job.cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    result = measure_attempts(
        job,
        limits=Limits(**payload["limits"]),
        log_path=cell_dir / f"worker.r{job.repeat}.log",
        env=env,
        max_attempts=payload["max_attempts"],
        noise_threshold=job.noise_threshold,
    )
    ended = time.time()
    files = {str(path.relative_to(base)): path.read_bytes() for path in sorted(cell_dir.rglob("*")) if path.is_file()}
    shutil.rmtree(base, ignore_errors=True)  # the driver keeps the files; the node keeps its disk
    return {"result": result, "files": files, "node": node, "started": started, "ended": ended}


def _unpack(folder: Path, shipped: Mapping[str, bytes]) -> dict[str, str]:
    """Write the files the driver shipped (content-addressed) once per node; driver path -> node path."""
    out = {}
    for key, data in shipped.items():
        digest, _, original = key.partition(":")
        target = folder / digest / Path(original).name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(prefix=target.name, suffix=".part", dir=target.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(partial, target)  # atomic: a node unpacking the same file beside it is harmless
        out[original] = str(target)
    return out


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _localise(job: Mapping[str, Any], base: Path, paths: Mapping[str, str]) -> dict[str, Any]:
    """The job with the node's folders and the node's copies of the driver's files."""
    data = dict(job)
    cell = dict(data["cell"])
    data["workdir"] = str(base / "work")
    data["cell_dir"] = str(base / "cells" / Path(data["cell_dir"]).name)
    if cell.get("input_data") in paths:
        cell["input_data"] = paths[cell["input_data"]]
    cell["model_options"] = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in cell["model_options"].items()}
    data["cell"] = cell
    if data.get("reference") and data["reference"].get("path") in paths:
        data["reference"] = {**data["reference"], "path": paths[data["reference"]["path"]]}
    return data


def files_to_ship(job: Job) -> list[str]:
    """The driver's files a cell reads: its inputs file, model files among its model options, the
    run's fidelity reference."""
    wanted = []
    cell = job.cell
    if cell.get("input_data"):
        wanted.append(str(cell["input_data"]))
    wanted += [v for v in (cell.get("model_options") or {}).values() if isinstance(v, str) and os.path.isabs(v)]
    if job.reference and job.reference.get("path"):
        wanted.append(str(job.reference["path"]))
    return [path for path in dict.fromkeys(wanted) if os.path.isfile(path)]


# -- the driver's side ------------------------------------------------------------------------


@dataclass
class Kind:
    """A machine kind as the cluster has it now."""

    name: str | None
    spec: MachineKind | None
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cpus(self) -> int:
        """The CPUs of its smallest node: every cell of the kind asks for them all."""
        return max(1, min((int(n["Resources"].get("CPU", 0)) for n in self.nodes), default=1))

    @property
    def gpus(self) -> int:
        return min((int(n["Resources"].get("GPU", 0)) for n in self.nodes), default=0)

    @property
    def title(self) -> str:
        return self.name if self.name is not None else "any node with a bench_slot"


def _matches(node: Mapping[str, Any], spec: MachineKind | None) -> bool:
    if SLOT not in node.get("Resources", {}):
        return False
    if spec is None:
        return True
    if spec.resource is not None:
        return spec.resource in node["Resources"]
    pair = spec.label_pair
    assert pair is not None
    return (node.get("Labels") or {}).get(pair[0]) == pair[1]


def _check_address(address: str | None) -> None:
    """An address of host:port that nothing answers: exit 2 at once (Ray itself retries for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address}: expected HOST:PORT (the head node's GCS, port 6379 by default)")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UsageError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): {START_HINT}") from None


class RayCluster:
    """The driver's connection to a cluster: its machine kinds, probes and the cells' tasks."""

    def __init__(self, address: str | None) -> None:
        ray = import_ray()
        _check_address(address)
        self.ray = ray
        self.address = address or "auto"
        try:
            ray.init(
                address=self.address,
                namespace="bench",
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
                ignore_reinit_error=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"no Ray cluster at {self.address} ({exc}): {START_HINT}") from None
        self._probe = ray.remote(probe_task)
        self._cell = ray.remote(cell_task)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ray.shutdown()

    def alive_nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def kinds(self, machines: Sequence[MachineKind] | None) -> list[Kind]:
        nodes = self.alive_nodes()
        specs: Sequence[MachineKind | None] = list(machines) if machines else [None]
        return [Kind(s.name if s else None, s, [n for n in nodes if _matches(n, s)]) for s in specs]

    def options(self, kind: Kind, cuda: bool, cpus: int | None = None) -> dict[str, Any]:
        """Ray task options that land a task on a node of ``kind`` with that node to itself."""
        resources: dict[str, float] = {SLOT: 1}
        opts: dict[str, Any] = {"max_retries": 0, "retry_exceptions": False, "resources": resources}
        opts["num_cpus"] = kind.cpus if cpus is None else cpus
        opts["num_gpus"] = max(1, kind.gpus) if cuda else 0
        if kind.spec is not None and kind.spec.resource is not None:
            resources[kind.spec.resource] = KIND_SHARE
        elif kind.spec is not None:
            pair = kind.spec.label_pair
            assert pair is not None
            opts["label_selector"] = {pair[0]: pair[1]}
        return opts

    def probe(self, kind: Kind, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Ask one node of ``kind`` what it can serve (and who it is); exit 2 when none answers."""
        ref = self._probe.options(**self.options(kind, cuda=False, cpus=0)).remote(dict(payload))
        try:
            return dict(self.ray.get(ref, timeout=PROBE_TIMEOUT_S))
        except self.ray.exceptions.GetTimeoutError:
            self.cancel(ref)
            raise UsageError(
                f"no node of {kind.title} answered within {PROBE_TIMEOUT_S:g} s: its {SLOT} is busy (another run "
                "on the cluster?) or its nodes left; see `ray status`"
            ) from None
        except self.ray.exceptions.RayError as exc:
            raise UsageError(f"asking a node of {kind.title} what it can run failed: {_first_line(exc)}") from None

    def can_hold(self, kind: Kind, cuda: bool, alive: Sequence[Mapping[str, Any]]) -> bool:
        """Whether one of the ``alive`` nodes is of ``kind`` and has what a cell of it asks for (a task
        nothing can hold waits for ever)."""
        wanted = self.options(kind, cuda)
        for node in alive:
            have = node.get("Resources", {})
            if (
                _matches(node, kind.spec)
                and have.get("CPU", 0) >= wanted["num_cpus"]
                and have.get("GPU", 0) >= wanted["num_gpus"]
            ):
                return True
        return False

    def submit(self, item: Pending) -> Any:
        """Start a cell's task on a node of its kind; its object ref."""
        return self._cell.options(**self.options(item.kind, item.cuda)).remote(dict(item.payload), item.shipped)

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def wait(self, refs: Sequence[Any], timeout: float) -> list[Any]:
        ready, _ = self.ray.wait(list(refs), num_returns=1, timeout=timeout)
        return list(ready)

    def get(self, ref: Any) -> tuple[dict[str, Any] | None, str | None]:
        """A task's answer, or why there is none: ``(None, "node lost: ...")`` when its node or worker
        died, ``(None, "failed: ...")`` when bench's code on the node raised."""
        ray = self.ray
        try:
            return dict(ray.get(ref)), None
        except ray.exceptions.RayTaskError as exc:
            return None, f"failed: the node's task raised {exc.cause!r}" if exc.cause else f"failed: {exc}"
        except ray.exceptions.OutOfMemoryError as exc:  # Ray's memory monitor killed the task's worker
            return None, f"oom: Ray's memory monitor killed the cell's task: {_first_line(exc)}"
        except (
            ray.exceptions.NodeDiedError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.LocalRayletDiedError,
            ray.exceptions.ObjectLostError,
        ) as exc:
            return None, f"node lost: {_first_line(exc)}"
        except ray.exceptions.TaskCancelledError:
            return None, "failed: the task was cancelled"
        except ray.exceptions.RayError as exc:  # the object store full, the disk full, a runtime env ...
            return None, f"failed: Ray could not run the cell: {type(exc).__name__}: {_first_line(exc)}"

    def cancel(self, ref: Any) -> None:
        with contextlib.suppress(Exception):
            self.ray.cancel(ref, force=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(address: str | None) -> RayCluster:
    return RayCluster(address)


def describe_kinds(kinds: Sequence[Kind]) -> list[str]:
    """A line per machine kind: its nodes now, or that the cluster has none."""
    lines = []
    for kind in kinds:
        if kind.nodes:
            hosts = ", ".join(sorted({str(n.get("NodeManagerAddress")) for n in kind.nodes}))
            gpus = f", {kind.gpus} GPU(s)" if kind.gpus else ""
            lines.append(f"{kind.title}: {len(kind.nodes)} node(s) ({hosts}), {kind.cpus} CPUs{gpus} each at least")
        else:
            how = kind.spec.matches() if kind.spec is not None else f"the {SLOT} resource"
            lines.append(f"{kind.title}: no node in the cluster has {how}")
    return lines


def missing_kinds_message(kinds: Sequence[Kind], address: str) -> str | None:
    missing = [k for k in kinds if not k.nodes]
    if not missing:
        return None
    parts = []
    for kind in missing:
        if kind.spec is None:
            parts.append(f"no node offers the {SLOT} resource")
        elif kind.spec.resource is not None:
            parts.append(
                f"machine kind {kind.name}: no node has resource {kind.spec.resource} and a {SLOT} "
                f'(start its nodes with `ray start --address {address} --resources=\'{{"{SLOT}": 1, '
                f'"{kind.spec.resource}": 1}}\'`)'
            )
        else:
            parts.append(
                f"machine kind {kind.name}: no node has label {kind.spec.label} and a {SLOT} (start its nodes "
                f"with `ray start --address {address} --labels {kind.spec.label} --resources='{{\"{SLOT}\": 1}}'`)"
            )
    return f"the Ray cluster at {address} cannot run this scenario: " + "; ".join(parts)


@dataclass
class Pending:
    """A cell's task in flight."""

    planned: Any  # PlannedCell
    repeat: int
    kind: Kind
    payload: dict[str, Any]
    shipped: Any
    requeued: int = 0

    @property
    def cuda(self) -> bool:
        """Whether the cell needs a GPU of its node."""
        return bool(self.planned.cell.device_kind == "cuda")


def ship(cluster: RayCluster, paths: Sequence[str]) -> Any:
    """The driver's files, content-addressed, in Ray's object store once for every task."""
    files: dict[str, bytes] = {}
    for path in paths:
        data = Path(path).read_bytes()
        files[f"{hashlib.sha256(data).hexdigest()[:16]}:{path}"] = data
    return cluster.put(files)


def payload_for(
    job: Job,
    *,
    run_id: str,
    machine: str | None,
    env: Mapping[str, str],
    limits: Mapping[str, Any],
    max_attempts: int,
    cache: bool,
    cache_env: str,
    cpu: Mapping[str, Any] | None,
) -> dict[str, Any]:
    import json

    from harness.api import PIN_CPUS_ENV

    return {
        "job": json.loads(job.to_json()),
        "run_id": run_id,
        "machine": machine,
        # the node makes its own: its temp folder, and the CPUs cpu.pin chooses among its own
        "env": {k: v for k, v in env.items() if k not in ("TMPDIR", PIN_CPUS_ENV)},
        "cpu": dict(cpu) if cpu else None,
        "limits": dict(limits),
        "max_attempts": max_attempts,
        "cache": cache,
        "cache_env": cache_env,
        "identity": bench_identity(),
    }
