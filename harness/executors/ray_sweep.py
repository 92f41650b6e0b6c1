"""A sweep on a Ray cluster: plan per machine kind, probe what each kind can serve, submit every cell,
journal each result as it arrives (see :mod:`harness.executors.ray_cluster` for the node's side)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from harness.api import CACHE_DIR_ENV
from harness.errors import UsageError
from harness.executors import ray_cluster as rc
from harness.planning import PlannedCell, RunOptions, check_scenario, select_cells
from harness.pluginmanager import registries
from harness.records import CellRecord

if TYPE_CHECKING:
    from harness.manifest import Manifest
    from harness.runner import Reporter
    from harness.scenario import Scenario
    from harness.store import RunDir


def open_cluster(scenario: Scenario, options: RunOptions) -> tuple[rc.RayCluster, list[rc.Kind]]:
    """Join the cluster and find the scenario's machine kinds in it: exit 2 (before a run folder
    exists) when it is not there or lacks a kind."""
    cluster = rc.connect(options.ray_address)
    kinds = cluster.kinds(scenario.machines)
    problem = rc.missing_kinds_message(kinds, cluster.address)
    if problem:
        cluster.close()
        raise UsageError(problem)
    return cluster, kinds


def kind_cpus(kinds: Sequence[rc.Kind]) -> dict[str, int]:
    """The CPUs ``threads: auto`` shares out per kind (``""``: the kind of a scenario without machines)."""
    return {k.name or "": k.cpus for k in kinds}


def plan_on_cluster(
    scenario: Scenario,
    options: RunOptions,
    cluster: rc.RayCluster,
    kinds: Sequence[rc.Kind],
    settings: Any,
    cpus: dict[str, int] | None = None,
) -> tuple[list[PlannedCell], dict[str, Any], list[str]]:
    """Every selected cell with the kind it runs on and, from a node of that kind, why it cannot run
    there (a CUDA cell on a kind without GPUs); the facts of the nodes that answered; and the nodes that
    refused (other code than the driver's). ``cpus``: the CPUs per kind the run was planned with (a
    resume keeps its cells' ids), else the kinds' own."""
    cpus = cpus or kind_cpus(kinds)
    machine_cpus = {name: n for name, n in cpus.items() if name}
    cells = select_cells(scenario, options, cpu_count=cpus.get("") or kinds[0].cpus, machine_cpus=machine_cpus)
    planned: list[PlannedCell] = []
    nodes: dict[str, Any] = {}
    refusals: list[str] = []
    for kind in kinds:
        mine = [c for c in cells if c.machine == kind.name]
        if not mine:
            continue
        answer = cluster.probe(kind, {
            "machine": kind.name, "cells": [c.config() for c in mine], "identity": rc.bench_identity(),
            "plugins": list(settings.plugins), "autoload": settings.autoload,
        })  # fmt: skip
        node = answer["node"]
        nodes[node["node_id"]] = node
        if answer["refused"]:
            refusals.append(answer["refused"])  # its cells are refused node by node as they run
        for cell in mine:
            reason = None if answer["refused"] else answer["skips"].get(cell.id)
            if reason is None and cell.device_kind == "cuda" and kind.gpus == 0:
                reason = f"machine kind {kind.title} has no GPU (its nodes offer no GPU resource to Ray)"
            planned.append(PlannedCell(cell, reason))
    return planned, nodes, refusals


def execute(
    run: RunDir,
    scenario: Scenario,
    options: RunOptions,
    reporter: Reporter,
    opened: tuple[rc.RayCluster, list[rc.Kind]] | None = None,
) -> list[CellRecord]:
    from harness import runner

    manifest = run.manifest()
    settings = manifest.settings
    executor = settings.executor or {}
    address = options.ray_address or executor.get("address")
    requeue = bool(options.requeue_lost or executor.get("requeue_lost"))
    check_scenario(scenario, registries(settings.plugins, autoload=settings.autoload))
    own = opened is None
    cluster, kinds = opened or open_cluster(scenario, _with_address(options, address))
    try:
        cpus = dict(executor.get("cpus") or {})
        if not cpus:  # kept with the run: a resume on a changed cluster plans the same cells
            cpus = kind_cpus(kinds)
            run.update_manifest(settings={**manifest.settings.model_dump(mode="json"),
                                          "executor": {**executor, "cpus": cpus}})  # fmt: skip
        planned, nodes, _ = plan_on_cluster(scenario, options, cluster, kinds, settings, cpus)
        manifest, todo = runner.start_sweep(run, scenario, planned, _note_nodes(run, nodes), reporter)
        _sweep(run, todo, {k.name: k for k in kinds}, manifest, reporter, cluster, requeue)
        return runner.finish(run, reporter)
    finally:
        if own:
            cluster.close()


def _with_address(options: RunOptions, address: str | None) -> RunOptions:
    from dataclasses import replace

    return replace(options, ray_address=address)


def _note_nodes(run: RunDir, nodes: dict[str, Any]) -> Manifest:
    """Keep every node's facts in the manifest (its fingerprint once, not in every record)."""
    manifest = run.manifest()
    known = dict(manifest.nodes or {})
    if all(node_id in known for node_id in nodes):
        return manifest
    return run.update_manifest(nodes={**known, **nodes})


def _sweep(
    run: RunDir,
    todo: Sequence[tuple[PlannedCell, int]],
    kinds: Mapping[str | None, rc.Kind],
    manifest: Manifest,
    reporter: Reporter,
    cluster: rc.RayCluster,
    requeue: bool,
) -> None:
    from harness import runner

    settings = manifest.settings
    limits = runner.limits_of(settings)
    pending: dict[Any, rc.Pending] = {}
    shipped_by_paths: dict[tuple[str, ...], Any] = {}
    for p, repeat in todo:
        if p.skip_reason is not None:
            runner.measure_one(run, p, repeat, manifest, reporter)  # a skip: recorded, nothing runs
            continue
        job = runner._job(run, p.cell, repeat, 0, manifest)
        paths = tuple(rc.files_to_ship(job))
        if paths not in shipped_by_paths:
            shipped_by_paths[paths] = rc.ship(cluster, paths)
        env = runner._worker_env(run, p.cell, manifest)
        payload = rc.payload_for(
            job, run_id=run.path.name, machine=p.cell.machine, env=env,
            limits={"timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb},
            max_attempts=runner.max_attempts_of(settings),
            cache=bool(settings.cache_dir), cache_env=CACHE_DIR_ENV, cpu=settings.cpu,
        )  # fmt: skip
        item = rc.Pending(p, repeat, kinds[p.cell.machine], payload, shipped_by_paths[paths])
        pending[cluster.submit(item)] = item
    watched = time.monotonic()
    try:
        while pending:
            for ref in cluster.wait(list(pending), timeout=rc.WATCH_S):
                item = pending.pop(ref)
                answer, problem = cluster.get(ref)
                if problem and problem.startswith("node lost") and requeue and item.requeued == 0:
                    item.requeued += 1
                    pending[cluster.submit(item)] = item
                    continue
                _journal(run, item, answer, problem, manifest, reporter)
                if answer and answer.get("node"):
                    manifest = _note_nodes(run, {answer["node"]["node_id"]: answer["node"]})
            if pending and time.monotonic() - watched >= rc.WATCH_S:
                watched = time.monotonic()
                _fail_orphans(run, pending, cluster, manifest, reporter)
    except BaseException:  # interrupted: what is journaled stays, what runs is stopped
        for ref in pending:
            cluster.cancel(ref)
        raise


def _fail_orphans(
    run: RunDir, pending: dict[Any, rc.Pending], cluster: rc.RayCluster, manifest: Manifest, reporter: Reporter
) -> None:
    """Cells waiting for a machine kind whose last node left the cluster would wait for ever."""
    alive = cluster.alive_nodes()
    holds: dict[tuple[str | None, bool], bool] = {}
    for ref, item in list(pending.items()):
        key = (item.kind.name, item.cuda)
        if key not in holds:
            holds[key] = cluster.can_hold(item.kind, item.cuda, alive)
        if holds[key]:
            continue
        cluster.cancel(ref)
        pending.pop(ref)
        why = f"node lost: no node of machine kind {item.kind.title} that can hold the cell is left in the cluster"
        _journal(run, item, None, why, manifest, reporter)


def _journal(
    run: RunDir,
    item: rc.Pending,
    answer: dict[str, Any] | None,
    problem: str | None,
    manifest: Manifest,
    reporter: Reporter,
) -> None:
    from harness import runner

    cell, repeat = item.planned.cell, item.repeat
    now = time.time()
    if answer is None:
        why = problem or "failed: the node gave no answer"
        status, _, _ = why.partition(":")
        result: dict[str, Any] = {"status": "oom" if status == "oom" else "failed", "reason": why}
        if status == "node lost":
            result["retryable"] = True  # not the cell's fault: --resume runs it again
        started, ended = now, now
    else:
        result = dict(answer["result"])
        for relative, data in (answer.get("files") or {}).items():
            target = run.path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        node = answer["node"]
        result.update(node_id=node["node_id"], node_host=node["host"], node_ip=node["ip"])
        started, ended = answer["started"], answer["ended"]
    if item.requeued:
        result["requeued"] = item.requeued
    record = CellRecord.build(cell.id, cell.label, repeat, cell.config(), started, ended, result)
    record = record.with_fields(**runner.judge(record, manifest))
    reporter.cell_started(cell, repeat)
    runner._append(run, record)
    reporter.cell_finished(cell, record)
