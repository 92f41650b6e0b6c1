"""Sweep orchestration: run each planned cell in a worker, journal every result, write the tables;
resume an interrupted run. Planning lives in :mod:`harness.planning`, the input and disk guards in
:mod:`harness.guards`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness import environment
from harness.api import CACHE_DIR_ENV, CACHE_FOLDER, PIN_CPUS_ENV, WAIT_POLICY_ENV
from harness.cells import Cell
from harness.errors import AllCellsFailed, DiskFull
from harness.executors.local import THREAD_ENV_VARS, Limits, run_cell, worker_module
from harness.manifest import Manifest
from harness.measure import noise
from harness.pluginmanager import Registries, explicit_plugins, registries
from harness.records import CellRecord, Job, ReferenceJob, StopRule
from harness.store import RunDir, is_disk_full, new_run_id

if TYPE_CHECKING:
    from harness.scenario import Scenario
from harness.guards import _failed_for_disk_space, check_inputs, check_machine, disk_full_message, input_hashes
from harness.planning import (
    PlannedCell,
    RunOptions,
    check_scenario,
    effective_loadgen,
    effective_measurement,
    plan,
    select_cells,
)


class Reporter(Protocol):
    def start(self, run_dir: RunDir, total: int) -> None: ...
    def cell_started(self, cell: Cell, repeat: int) -> None: ...
    def event(self, cell: Cell, message: dict[str, Any]) -> None: ...
    def cell_finished(self, cell: Cell, record: CellRecord) -> None: ...
    def finish(self, run_dir: RunDir, records: list[CellRecord]) -> None: ...


class SilentReporter:
    def start(self, run_dir: RunDir, total: int) -> None:
        pass

    def cell_started(self, cell: Cell, repeat: int) -> None:
        pass

    def event(self, cell: Cell, message: dict[str, Any]) -> None:
        pass

    def cell_finished(self, cell: Cell, record: CellRecord) -> None:
        pass

    def finish(self, run_dir: RunDir, records: list[CellRecord]) -> None:
        pass


def _worker_env(run: RunDir, cell: Cell, manifest: Manifest) -> dict[str, str]:
    tmp = run.work_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"TMPDIR": str(tmp)}
    cache = manifest.settings.cache_dir
    if cache:
        env[CACHE_DIR_ENV] = cache
    env.update({var: str(cell.threads) for var in THREAD_ENV_VARS})
    env.update(cpu_env(manifest.settings.cpu or {}, cell.threads))
    code = manifest.settings.code_path
    if code:  # the worker imports harness and plugins from there, not from this checkout or the cwd
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")]))
        env["PYTHONSAFEPATH"] = "1"
    return env


def cpu_env(cpu: Mapping[str, Any], threads: int) -> dict[str, str]:
    """The worker's environment for the scenario's ``cpu`` settings: passive waiting for OpenMP
    (torch) and for backends that read :func:`harness.api.wait_policy`, and under ``pin`` the CPUs
    the worker is pinned to: the last ``threads`` usable ones, so ``reserve`` leaves the first free."""
    env: dict[str, str] = {}
    if cpu.get("wait") == "passive":
        env.update({"OMP_WAIT_POLICY": "PASSIVE", WAIT_POLICY_ENV: "passive"})
    if cpu.get("pin"):
        env["OMP_PROC_BIND"] = "true"  # OpenMP (torch) binds each thread to one of those CPUs
        usable = sorted(os.sched_getaffinity(0))
        env[PIN_CPUS_ENV] = ",".join(str(c) for c in usable[-max(1, min(threads, len(usable))) :])
    return env


def _job(run: RunDir, cell: Cell, repeat: int, attempt: int, manifest: Manifest) -> Job:
    settings = manifest.settings
    m = settings.measurement
    rule = StopRule(
        m.warmup_s, m.warmup_queries, m.min_duration_s, m.max_duration_s, m.min_queries, m.headline_percentile,
        m.confidence, m.ci_rel_width,
    )  # fmt: skip
    return Job(
        cell=cell.config(),
        repeat=repeat,
        attempt=attempt,
        rule=rule,
        percentiles=tuple(settings.percentiles),
        noise_threshold=settings.noise_threshold,
        quiet_wait_s=settings.quiet_wait_s,
        loadgen=settings.loadgen,
        reference=manifest.reference,
        fidelity=settings.fidelity,
        timeout_s=settings.limits.timeout_s,
        plugins=tuple(settings.plugins),
        autoload=settings.autoload,
        workdir=str(run.work_dir),
        cell_dir=str(run.cell_dir(cell.id)),
    )


def limits_of(settings: Any) -> Limits:
    """A run's per-cell limits (its manifest's settings)."""
    return Limits(timeout_s=settings.limits.timeout_s, memory_mb=settings.limits.memory_mb)


def max_attempts_of(settings: Any) -> int:
    """Worker runs a disturbed cell gets (runs made before max_attempts recorded noise_retries)."""
    return int(settings.max_attempts or 1 + (settings.noise_retries or 0))


def _measure(run: RunDir, cell: Cell, repeat: int, manifest: Manifest, reporter: Reporter) -> dict[str, Any]:
    settings = manifest.settings
    code = settings.code_path
    return measure_attempts(
        _job(run, cell, repeat, 0, manifest),
        limits=limits_of(settings),
        log_path=run.cell_dir(cell.id) / f"worker.r{repeat}.log",
        env=_worker_env(run, cell, manifest),
        max_attempts=max_attempts_of(settings),
        noise_threshold=settings.noise_threshold,
        on_event=lambda message: reporter.event(cell, message),
        module=worker_module(Path(code) if code else None),
    )


def measure_attempts(
    job: Job,
    *,
    limits: Limits,
    log_path: Path,
    env: Mapping[str, str],
    max_attempts: int,
    noise_threshold: float,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    module: str | None = None,
) -> dict[str, Any]:
    """Measure a cell, again (after a pause that grows) while the machine disturbed the window, up to
    max_attempts; keep the quietest attempt that measured (a retry that failed, as one may on a busy
    machine, never replaces a measurement), untrusted when every attempt was disturbed. The same on
    every executor: a Ray node runs this for its cell."""
    attempts = []
    for attempt in range(max_attempts):
        if attempt:
            time.sleep(min(ATTEMPT_BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S))
        record = run_cell(
            replace(job, attempt=attempt),
            limits=limits,
            log_path=log_path,
            env=env,
            on_event=on_event,
            module=module or worker_module(None),
        )
        attempts.append(record)
        if not record.get("noisy"):
            break
    measured = [r for r in attempts if r.get("status") == "ok"]
    best = min(measured, key=_disturbance) if measured else attempts[-1]
    best["attempts"] = len(attempts)
    if best.get("status") == "ok":
        best["trusted"] = not best.get("noisy")
        if best.get("noisy"):
            failed = [f"attempt {i + 1} {r.get('status')}" for i, r in enumerate(attempts) if r.get("status") != "ok"]
            best["untrusted_reason"] = _untrusted_reason(best, len(attempts), noise_threshold, failed)
    return best


#: the pause before a cell's second attempt, doubled for each further one (and capped)
ATTEMPT_BACKOFF_S = 2.0
MAX_BACKOFF_S = 15.0


def _disturbance(record: Mapping[str, Any]) -> tuple[float, float]:
    """How disturbed an attempt was: its share of disturbed sub-windows, then others' whole-window share."""
    windows = record.get("noise_subwindows") or 0
    disturbed = (record.get("noise_disturbed_subwindows") or 0) / windows if windows else 0.0
    return disturbed, record.get("noise_fraction") or 0.0


def _untrusted_reason(record: Mapping[str, Any], attempts: int, threshold: float, failed: Sequence[str] = ()) -> str:
    parts = [f"the machine was busy in all {attempts} attempt(s)" if not failed else
             f"the machine was busy in every attempt that measured ({', '.join(failed)})"]  # fmt: skip
    if record.get("noise_fraction") is not None:
        parts.append(f"other processes used {record['noise_fraction']:.0%} of the CPUs over the kept window")
    if record.get("noise_subwindows"):
        parts.append(
            f"{record.get('noise_disturbed_subwindows', 0)} of its {record['noise_subwindows']} sub-windows over "
            f"{threshold:.0%} (the busiest {record.get('noise_max_subwindow_fraction') or 0:.0%})"
        )
    return "; ".join(parts) + ": figures kept, not a quiet machine's"


def _record(cell: Cell, repeat: int, started: float, result: dict[str, Any]) -> CellRecord:
    return CellRecord.build(cell.id, cell.label, repeat, cell.config(), started, time.time(), result)


def _reference(run: RunDir, scenario: Scenario, manifest: Manifest, reporter: Reporter) -> Manifest:
    """The model's reference outputs, FLOPs and the machine's peak, computed once per run in a
    worker (kept in the manifest; a resumed run reuses them)."""
    from harness.measure import fidelity

    settings = manifest.settings
    samples = (settings.fidelity or {}).get("samples", 0)
    if manifest.reference or not samples:
        return manifest
    path = fidelity.reference_path(run.path, scenario.model.name)
    job = ReferenceJob(
        model=scenario.model.name,
        model_options=dict(scenario.model.options),
        samples=samples,
        seed=scenario.seed,
        threads=environment.usable_cpus(),
        path=str(path),
        plugins=tuple(settings.plugins),
        autoload=settings.autoload,
        input_data=scenario.model.inputs,
    )
    log = run.path / fidelity.REFERENCE_FOLDER / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = run_cell(job, limits=limits_of(settings), log_path=log, env={}, on_event=None)
    if result.get("status") != "ok":
        result = {"fidelity_skipped": f"the reference failed ({result.get('status')}): {result.get('reason', '')}"}
    elif result.get("path"):
        result["path"] = str(Path(result["path"]).resolve())
    return run.update_manifest(reference=result)


def judge(record: Mapping[str, Any], manifest: Manifest) -> dict[str, Any]:
    """The cell's compute efficiency, its economics under the scenario's price, and its verdict
    on each budget."""
    from harness.analysis import economics

    settings = manifest.settings
    out: dict[str, Any] = {}
    if record.get("status") == "skipped":
        return out
    ref = manifest.reference or {}
    flops, peak, sps = ref.get("flops_per_sample"), ref.get("peak_gflops"), record.get("throughput_sps")
    if flops and sps:
        out["flops_per_sample"] = flops
        out["achieved_gflops"] = flops * sps / 1e9
        if peak and not record.get("node_id"):  # the peak is the driver's machine's, not a Ray node's
            out["fraction_of_peak"] = out["achieved_gflops"] / peak
    cost = cost_settings(record, manifest)
    if cost:
        out.update(economics.cell_costs(record, cost))
    if settings.budgets:
        verdicts = economics.budget_verdicts({**record, **out}, settings.budgets)
        out["budgets"] = verdicts
        out["budgets_ok"] = all(v["ok"] is not False for v in verdicts.values())
    return out


def cost_settings(record: Mapping[str, Any], manifest: Manifest) -> dict[str, Any] | None:
    """The ``cost`` block a cell is priced with: the scenario's, with the price of the cell's machine
    kind for a cell of ``machines:`` (none when that kind has no price: another machine's price would
    be a wrong answer)."""
    settings = manifest.settings
    machine = (record.get("config") or {}).get("machine")
    if machine is None:
        return settings.cost
    kind = next((m for m in settings.machines or [] if m.get("name") == machine), None)
    if kind is None or (kind.get("instance") is None and kind.get("hourly_usd") is None):
        return None
    base = {k: v for k, v in (settings.cost or {}).items() if k not in ("instance", "hourly_usd")}
    return {**base, "instance": kind.get("instance"), "hourly_usd": kind.get("hourly_usd")}


def create_run(scenario: Scenario, options: RunOptions) -> RunDir:
    m = scenario.measurement
    regs = registries(explicit_plugins(options.plugins), autoload=options.autoload)
    cache = options.cache_dir or options.out_root / CACHE_FOLDER
    manifest: dict[str, Any] = {
        "run_id": None,
        "created_at": time.time(),
        "command": options.command,
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            # absolute: a resume from another folder finds the scenario's relative model paths
            "path": os.path.abspath(scenario.source_path) if scenario.source_path else None,
            "text": scenario.source_text,
            "fingerprint": scenario.fingerprint(),
        },
        "inputs": input_hashes(scenario, regs),
        # what the machine was doing as the run started (others' load, steal, clocks)
        "machine_state": noise.machine_state(),
        "environment": environment.fingerprint(regs.runtime_packages()),
        "settings": {
            "quick": options.quick,
            "filters": {
                "backends": list(options.backends),
                "batch_sizes": list(options.batch_sizes),
                "precisions": list(options.precisions),
            },
            "measurement": effective_measurement(scenario, options.quick),
            "loadgen": effective_loadgen(scenario, options.quick),
            "percentiles": sorted(m.percentiles),
            "noise_threshold": m.noise_threshold,
            "cpu": scenario.cpu.model_dump(),
            "max_attempts": m.max_attempts,
            "quiet_wait_s": m.quiet_wait_s,
            "repeats": m.repeats,
            "limits": {"timeout_s": scenario.limits.timeout_s, "memory_mb": scenario.limits.memory_mb},
            "cost": scenario.cost.model_dump() if scenario.cost else None,
            "fidelity": scenario.fidelity.model_dump(),
            "budgets": dict(scenario.budgets),
            "plugins": explicit_plugins(options.plugins),
            "autoload": options.autoload,
            # compiled artefacts reused across runs; null: every run compiles from scratch (--no-cache)
            "cache_dir": str(cache.resolve()) if options.cache else None,
            "code_path": str(options.code_path.resolve()) if options.code_path else None,
            "executor": options.executor_settings(),
            "machines": [m.model_dump() for m in scenario.machines] if scenario.machines else None,
        },
    }
    if options.code_path:  # the code measured is that checkout's, and so is the commit to record
        manifest["environment"]["git"] = environment.git_commit(options.code_path)
    run_id = new_run_id(scenario.name)
    manifest["run_id"] = run_id
    return RunDir.create(options.out_root, run_id, manifest, command=options.command)


def execute(
    run: RunDir, scenario: Scenario, options: RunOptions, reporter: Reporter, opened: Any = None
) -> list[CellRecord]:
    """Run every planned cell not yet in the journal; return all records of the run.

    The caller holds the run's writer lock. A full disk stops the sweep before the next cell with
    :class:`DiskFull` (the journal intact, the cell in flight kept where the reserve allows); an
    interrupt carries the run folder (``bench_run``) for the message that names it. ``opened``: the
    Ray cluster and its machine kinds, already joined, for a run on a Ray cluster."""
    if (run.manifest().settings.executor or {}).get("kind") == "ray":
        from harness.executors import ray_sweep

        return _run_guarded(run, lambda: ray_sweep.execute(run, scenario, options, reporter, opened))
    return _run_guarded(run, lambda: _execute(run, scenario, options, reporter))


def _run_guarded(run: RunDir, sweep: Callable[[], list[CellRecord]]) -> list[CellRecord]:
    try:
        return sweep()
    except KeyboardInterrupt as exc:
        exc.bench_run = run.path  # type: ignore[attr-defined]  # read by the CLI's message
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(disk_full_message(run, f"writing the run failed: {exc.strerror}")) from exc
        raise


def _execute(run: RunDir, scenario: Scenario, options: RunOptions, reporter: Reporter) -> list[CellRecord]:
    manifest = run.manifest()
    settings = manifest.settings
    regs = registries(settings.plugins, autoload=settings.autoload)
    check_scenario(scenario, regs)
    # threads: auto as the run planned it, so a resume keeps its cells (and their ids)
    cpus = (manifest.environment.get("cpu") or {}).get("usable_cpus")
    planned = plan(select_cells(scenario, options, cpu_count=cpus if isinstance(cpus, int) else None), regs)
    manifest, todo = start_sweep(run, scenario, planned, manifest, reporter)
    for p, repeat in todo:
        measure_one(run, p, repeat, manifest, reporter)
    return finish(run, reporter)


def start_sweep(
    run: RunDir, scenario: Scenario, planned: Sequence[PlannedCell], manifest: Manifest, reporter: Reporter
) -> tuple[Manifest, list[tuple[PlannedCell, int]]]:
    """What every executor does before its first cell: mend the journal, record how many (cell,
    repeat) pairs the run plans (repeats interleaved across cells), keep the pairs not yet journaled,
    reserve disk, compute the run's reference when a cell will measure, and start the reporter."""
    settings = manifest.settings
    run.repair_journal()
    done = run.done()
    pairs: list[tuple[PlannedCell, int]] = []
    for repeat in range(settings.repeats):  # repeats interleave across cells
        for p in planned:
            if p.skip_reason is None or repeat == 0:
                pairs.append((p, repeat))
    if manifest.planned != len(pairs):  # readers tell a finished run from an interrupted one
        manifest = run.update_manifest(planned=len(pairs))
    todo = [(p, repeat) for p, repeat in pairs if (p.cell.id, repeat) not in done]
    if todo and manifest.finished_at is not None:  # a resume of a finished run (a lost node's cells):
        manifest = run.update_manifest(finished_at=None)  # unfinished until it ends, should it be killed
    run.reserve()
    if todo and any(p.skip_reason is None for p, _ in todo):
        manifest = _reference(run, scenario, manifest, reporter)
    reporter.start(run, len(todo))
    return manifest, todo


def measure_one(run: RunDir, p: PlannedCell, repeat: int, manifest: Manifest, reporter: Reporter) -> CellRecord:
    """Measure one repeat of one planned cell (or record its skip) and append it to the journal."""
    started = time.time()
    reporter.cell_started(p.cell, repeat)
    if p.skip_reason is not None:
        result: dict[str, Any] = {"status": "skipped", "reason": p.skip_reason}
    else:
        result = _measure(run, p.cell, repeat, manifest, reporter)
        if _failed_for_disk_space(run, result):  # not the cell's fault: it runs again on resume
            raise DiskFull(disk_full_message(run, f"{p.cell.label} could not write its files: {result.get('reason')}"))
    record = _record(p.cell, repeat, started, result)
    record = record.with_fields(**judge(record, manifest))
    _append(run, record)
    reporter.cell_finished(p.cell, record)
    return record


def _append(run: RunDir, record: CellRecord) -> None:
    """Journal a finished cell; on a full disk, give back the reserve so its line still fits, then stop."""
    try:
        run.append(record)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        kept = run.free_reserve()
        if kept:
            run.append(record)  # a failure here propagates as a disk-full stop too: the line is cut back
        what = "was kept" if kept else "could not be kept (it runs again on resume)"
        raise DiskFull(disk_full_message(run, f"the disk filled up; the cell just finished {what}")) from exc


def finish(run: RunDir, reporter: Reporter) -> list[CellRecord]:
    """Write a run's tables, mark it finished and stop being its writer; return its records."""
    records = list(run.records())
    run.write_tables()
    run.update_manifest(finished_at=time.time())
    run.free_reserve()
    run.release()
    reporter.finish(run, records)
    return records


def check_executor(scenario: Scenario, executor: str) -> None:
    if scenario.machines and executor != "ray":
        names = ", ".join(m.name for m in scenario.machines)
        raise scenario.error(
            ("machines",),
            f"the scenario's cells run on machine kinds of a Ray cluster ({names}): run it with --executor ray "
            "[--ray-address ADDR], or leave machines: out to measure this machine",
        )


def run_scenario(scenario: Scenario, options: RunOptions, reporter: Reporter | None = None) -> RunDir:
    # names and filters are checked before a run folder exists: bad input leaves nothing behind
    check_scenario(scenario, registries(explicit_plugins(options.plugins), autoload=options.autoload))
    check_executor(scenario, options.executor)
    select_cells(scenario, options)
    opened = None
    if options.executor == "ray":
        from harness.executors import ray_sweep

        opened = ray_sweep.open_cluster(scenario, options)  # the cluster and its kinds, before a run folder
    try:
        run = create_run(scenario, options)
        try:
            execute(run, scenario, options, reporter or SilentReporter(), opened)
        finally:
            run.release()
    finally:
        if opened is not None:
            opened[0].close()
    return run


def stored_scenario(run: RunDir, regs: Registries | None = None) -> Scenario:
    """The scenario a run folder was made from, as stored in its manifest; its model shorthands
    from ``regs``, else from the plugins the run recorded."""
    from harness.scenario import load_scenario_text

    manifest = run.manifest()
    settings = manifest.settings

    def run_registries() -> Registries:
        return regs if regs is not None else registries(settings.plugins, autoload=settings.autoload)

    path = manifest.scenario.path
    source = path or "<manifest>"
    return load_scenario_text(
        manifest.scenario.text,
        source=f"{source} (as stored in {run.manifest_path})",
        base_dir=Path(path).resolve().parent if path else None,  # model files named relative to the scenario
        registries=run_registries,
    )


def resume(
    run_path: Path,
    options: RunOptions,
    reporter: Reporter | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> tuple[RunDir, Scenario]:
    """Finish a run folder: the scenario and settings come from its manifest, not the command line.
    Only one process may write a run: a second resume is refused while the first runs."""

    run = RunDir.open(run_path)
    run.acquire(options.command)
    try:
        check_inputs(run, options.allow_changed_inputs, warn)
        check_machine(run, options.allow_changed_inputs, warn)
        manifest = run.manifest()
        scenario = stored_scenario(run)
        settings = manifest.settings
        stored = replace(
            options,
            quick=settings.quick,
            backends=tuple(settings.filters.backends),
            batch_sizes=tuple(settings.filters.batch_sizes),
            precisions=tuple(settings.filters.precisions),
            plugins=tuple(settings.plugins),
            autoload=settings.autoload,
        )
        execute(run, scenario, stored, reporter or SilentReporter())
    finally:
        run.release()
    return run, scenario


def outcome(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def raise_if_nothing_measured(records: Sequence[Mapping[str, Any]], run: RunDir) -> None:
    if records and not any(r["status"] == "ok" for r in records):
        counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome(records).items()))
        raise AllCellsFailed(f"no cell produced a measurement ({counts}); see {run.path}/journal.jsonl")


__all__ = ["Reporter", "execute", "resume", "run_scenario"]
