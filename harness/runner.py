"""Sweep orchestration: plan the cells, run each in a worker, journal every result, write the tables."""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness import environment
from harness.api import CACHE_DIR_ENV, CACHE_FOLDER, Backend
from harness.cells import Cell
from harness.errors import AllCellsFailed, BenchError, DiskFull, UsageError
from harness.executors.local import THREAD_ENV_VARS, Limits, run_cell, worker_module
from harness.manifest import Manifest
from harness.pluginmanager import Registries, explicit_plugins, registries
from harness.records import CellRecord, Job, ReferenceJob, StopRuleSettings
from harness.store import FINAL_STATUSES, RESERVE_BYTES, RunDir, is_disk_full, new_run_id

if TYPE_CHECKING:
    from harness.scenario import Scenario

#: --quick: a smoke run, every backend, option and precision kept, the smallest batch size only,
#: short windows (compilation dominates a quick run: each torch.compile cell costs ~10 s to prepare)
QUICK_MEASUREMENT = {
    "warmup_s": 0.1,
    "warmup_queries": 3,
    "min_duration_s": 0.2,
    "max_duration_s": 0.4,
    "min_queries": 50,
    "ci_rel_width": None,
}
#: what --quick does to LoadGen cells: short tests, a short peak search
QUICK_LOADGEN = {
    "min_duration_s": 1.0,
    "min_query_count": 100,
    "trial_duration_s": 0.5,
    "max_trials": 6,
}
#: what a worker's failure says when the disk filled up under it (the cell is then run again on resume)
_DISK_FULL_MARKERS = ("No space left on device", "[Errno 28]", "Disk quota exceeded", "[Errno 122]")
#: a failed cell on a disk with less than this left is taken as failed for want of space
DISK_NEARLY_FULL_BYTES = 1 << 20


@dataclass(frozen=True)
class RunOptions:
    out_root: Path = Path("results")
    quick: bool = False
    backends: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    precisions: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    autoload: bool | None = None
    #: keep compiled artefacts (inductor kernels, converted models) in ``<out_root>/.cache`` across runs
    cache: bool = True
    command: str = field(default_factory=lambda: shlex.join(["bench", *sys.argv[1:]]))
    #: run only these cells (``bench compare --confirm`` re-measures regressed cells)
    cell_ids: frozenset[str] | set[str] = frozenset()
    #: measure with the harness and plugins of another checkout (``bench compare --confirm`` measures
    #: the baseline's code this way); None: this checkout's
    code_path: Path | None = None
    #: --resume: go on although a model file changed since the run started (recorded in the manifest)
    allow_changed_inputs: bool = False


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    skip_reason: str | None = None


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


def check_scenario(scenario: Scenario, regs: Registries) -> None:
    """What only the plugins can tell, as scenario errors at the line that caused them: unknown
    model or backend names, model options the model refuses, backend options or values a backend
    does not declare, a concurrency a backend cannot serve, a latency bound below a backend's
    known service time."""
    if scenario.model.name not in regs.models:
        raise scenario.error(("model",), regs.models.unknown_message(scenario.model.name))
    try:  # bad model options and unusable model files fail here, before a run folder exists
        regs.models.get(scenario.model.name)(**scenario.model.options)
    except ValueError as exc:
        raise scenario.error(("model",), str(exc)) from exc
    for index, entry in enumerate(scenario.backends):
        if entry.name not in regs.backends:
            raise scenario.error(("backends", index, "name"), regs.backends.unknown_message(entry.name))
        _check_backend_options(scenario, index, regs.backends.get(entry.name))
    _check_loads(scenario, regs)


def _check_backend_options(scenario: Scenario, index: int, backend: type[Backend]) -> None:
    """Every option value the scenario gives the backend, against the backend's declarations: a
    misspelt option or a value it does not take is the scenario's error, at its line, not a
    skipped cell found after the sweep."""
    entry = scenario.backends[index]
    specs = backend.option_specs()
    given: list[tuple[str, tuple[str | int, ...], Any]] = [
        (name, ("options", name), value) for name, value in entry.options.items()
    ]
    for name, values in entry.sweep.items():
        given += [(name, ("sweep", name, position), value) for position, value in enumerate(values)]
    for name, where, value in given:
        loc = ("backends", index, *where)
        unknown = backend.unknown_option(name)
        if unknown:
            raise scenario.error(loc[:-1] if where[0] == "sweep" else loc, unknown)
        problem = specs[name].problem(value)
        if problem:
            raise scenario.error(loc, f"backend '{backend.name}' option {name} {problem}")


def _check_loads(scenario: Scenario, regs: Registries) -> None:
    from harness.scenario import expand_cells

    for cell in expand_cells(scenario, environment.usable_cpus()):
        backend = regs.backends.get(cell.backend)
        if cell.concurrency > backend.max_concurrency:
            raise scenario.error(
                ("concurrency",),
                f"backend '{cell.backend}' serves at most {backend.max_concurrency} concurrent session(s) "
                f"(its max_concurrency), not {cell.concurrency}: lower concurrency",
            )
        bound = cell.load_options.get("latency_bound_ms")
        floor = backend.service_floor_ms(cell) if cell.load == "server" else None
        if isinstance(bound, int | float) and floor is not None and bound < floor:
            raise scenario.error(
                ("loadgen", "latency_bound_ms"),
                f"latency bound {bound:g} ms is below the service time of {cell.label} ({floor:g} ms): no load "
                "can meet it; raise latency_bound_ms",
            )


def effective_measurement(scenario: Scenario, quick: bool) -> dict[str, Any]:
    from harness.analysis import stats

    m = scenario.measurement
    settings: dict[str, Any] = {
        "warmup_s": m.warmup_s,
        "warmup_queries": m.warmup_queries,
        "min_duration_s": m.min_duration_s,
        "max_duration_s": m.max_duration_s,
        "min_queries": m.min_queries or stats.min_queries_for(m.headline_percentile, m.confidence),
        "headline_percentile": m.headline_percentile,
        "confidence": m.confidence,
        "ci_rel_width": m.ci_rel_width,
    }
    if quick:
        settings.update(QUICK_MEASUREMENT)
    return settings


def effective_loadgen(scenario: Scenario, quick: bool) -> dict[str, Any]:
    """LoadGen's settings as the workers get them (not part of any cell's identity)."""
    from harness.scenario import loadgen_min_queries

    lg = scenario.loadgen
    per_cell = {"target_qps", "latency_bound_ms", "samples_per_query", "max_wait_us", "peak_search"}  # in the cells
    settings: dict[str, Any] = {
        **lg.model_dump(exclude=per_cell),
        **lg.peak_search.model_dump(),
        "min_query_count": loadgen_min_queries(lg, scenario.measurement.confidence),
    }
    if quick:
        settings.update(QUICK_LOADGEN)
    return settings


def select_cells(scenario: Scenario, options: RunOptions) -> list[Cell]:
    from harness.scenario import expand_cells

    cells = expand_cells(scenario, environment.usable_cpus())
    for flag, values, attr in (
        ("--backend", options.backends, "backend"),
        ("--precision", options.precisions, "precision"),
        ("--batch-size", options.batch_sizes, "batch_size"),
    ):
        if not values:
            continue
        present = {getattr(c, attr) for c in cells}
        missing = [v for v in values if v not in present]
        if missing:
            have = ", ".join(str(v) for v in sorted(present, key=str))
            raise UsageError(f"{flag} {', '.join(map(str, missing))}: not in the scenario (it has {have})")
        cells = [c for c in cells if getattr(c, attr) in values]
    if options.cell_ids:
        cells = [c for c in cells if c.id in options.cell_ids]
    if options.quick:
        smallest = min(c.batch_size for c in cells)
        cells = [c for c in cells if c.batch_size == smallest]
    return cells


def plan(cells: Sequence[Cell], regs: Registries) -> list[PlannedCell]:
    from harness.registry import safe_supports

    planned = []
    for cell in cells:
        support = safe_supports(regs.backends.get(cell.backend), cell)
        planned.append(PlannedCell(cell, None if support.ok else support.reason))
    return planned


def _worker_env(run: RunDir, cell: Cell, manifest: Manifest) -> dict[str, str]:
    tmp = run.work_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"TMPDIR": str(tmp)}
    cache = manifest.settings.cache_dir
    if cache:
        env[CACHE_DIR_ENV] = cache
    env.update({var: str(cell.threads) for var in THREAD_ENV_VARS})
    code = manifest.settings.code_path
    if code:  # the worker imports harness and plugins from there, not from this checkout or the cwd
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")]))
        env["PYTHONSAFEPATH"] = "1"
    return env


def _job(run: RunDir, cell: Cell, repeat: int, attempt: int, manifest: Manifest) -> Job:
    settings = manifest.settings
    m = settings.measurement
    rule = StopRuleSettings(
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
        loadgen=settings.loadgen,
        reference=manifest.reference,
        fidelity=settings.fidelity,
        timeout_s=settings.limits.timeout_s,
        plugins=tuple(settings.plugins),
        autoload=settings.autoload,
        workdir=str(run.work_dir),
        cell_dir=str(run.cell_dir(cell.id)),
    )


def _measure(run: RunDir, cell: Cell, repeat: int, manifest: Manifest, reporter: Reporter) -> dict[str, Any]:
    limits = Limits(timeout_s=manifest.settings.limits.timeout_s, memory_mb=manifest.settings.limits.memory_mb)
    code = manifest.settings.code_path
    attempts = []
    for attempt in range(1 + manifest.settings.noise_retries):
        record = run_cell(
            _job(run, cell, repeat, attempt, manifest),
            limits=limits,
            log_path=run.cell_dir(cell.id) / f"worker.r{repeat}.log",
            env=_worker_env(run, cell, manifest),
            on_event=lambda message: reporter.event(cell, message),
            module=worker_module(Path(code) if code else None),
        )
        attempts.append(record)
        if not record.get("noisy"):
            break
    # a noisy window was measured again; the quieter attempt is kept, the count recorded
    best = min(attempts, key=lambda r: r.get("noise_fraction") or 0.0) if len(attempts) > 1 else attempts[0]
    best["attempts"] = len(attempts)
    return best


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
    )
    log = run.path / fidelity.REFERENCE_FOLDER / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    limits = Limits(timeout_s=settings.limits.timeout_s, memory_mb=settings.limits.memory_mb)
    result = run_cell(job, limits=limits, log_path=log, env={}, on_event=None)
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
        if peak:
            out["fraction_of_peak"] = out["achieved_gflops"] / peak
    if settings.cost:
        out.update(economics.cell_costs(record, settings.cost))
    if settings.budgets:
        verdicts = economics.budget_verdicts({**record, **out}, settings.budgets)
        out["budgets"] = verdicts
        out["budgets_ok"] = all(v["ok"] is not False for v in verdicts.values())
    return out


def create_run(scenario: Scenario, options: RunOptions) -> RunDir:
    m = scenario.measurement
    regs = registries(explicit_plugins(options.plugins), autoload=options.autoload)
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
            "noise_retries": 1,
            "repeats": m.repeats,
            "limits": {"timeout_s": scenario.limits.timeout_s, "memory_mb": scenario.limits.memory_mb},
            "cost": scenario.cost.model_dump() if scenario.cost else None,
            "fidelity": scenario.fidelity.model_dump(),
            "budgets": dict(scenario.budgets),
            "plugins": explicit_plugins(options.plugins),
            "autoload": options.autoload,
            # compiled artefacts reused across runs; null: every run compiles from scratch (--no-cache)
            "cache_dir": str((options.out_root / CACHE_FOLDER).resolve()) if options.cache else None,
            "code_path": str(options.code_path.resolve()) if options.code_path else None,
        },
    }
    if options.code_path:  # the code measured is that checkout's, and so is the commit to record
        manifest["environment"]["git"] = environment.git_commit(options.code_path)
    run_id = new_run_id(scenario.name)
    manifest["run_id"] = run_id
    return RunDir.create(options.out_root, run_id, manifest, command=options.command)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_hashes(scenario: Scenario, regs: Registries) -> dict[str, str]:
    """sha256 of every file a run's numbers depend on, by absolute path: the scenario file and the
    files its model reads (``Model.input_files``)."""
    files = [Path(os.path.abspath(scenario.source_path))] if scenario.source_path else []
    model = regs.models.get(scenario.model.name)(**scenario.model.options)
    files += [Path(os.path.abspath(f)) for f in model.input_files()]
    return {str(path): _sha256(path) for path in files if path.is_file()}


def check_inputs(run: RunDir, allow_changed: bool, warn: Callable[[str], None]) -> None:
    """Refuse to resume a run whose model files changed since it started: its finished cells
    measured the old files. ``allow_changed`` goes on and records what changed in the manifest."""
    manifest = run.manifest()
    scenario_path = manifest.scenario.path
    changed: list[dict[str, Any]] = []
    for name, digest in (manifest.inputs or {}).items():
        try:
            now: str | None = _sha256(Path(name))
        except OSError:
            now = None
        if now == digest:
            continue
        if name == scenario_path:  # a resume runs the scenario stored in the manifest, not the file
            warn(f"{name} changed since the run started; the resume runs the scenario as stored in {run.manifest_path}")
            continue
        changed.append({"path": name, "sha256_before": digest, "sha256_now": now, "at": time.time()})
    if not changed:
        return
    what = "; ".join(
        f"{c['path']}: " + ("missing now" if c["sha256_now"] is None else
                             f"sha256 {c['sha256_before'][:12]}... at the start, {c['sha256_now'][:12]}... now")
        for c in changed
    )  # fmt: skip
    if not allow_changed:
        msg = (
            f"{run.path}: a model file changed since the run started ({what}); its finished cells measured the old "
            "file, so finishing it would mix two models in one run. Restore the file, or start a new run, or pass "
            "--allow-changed-inputs to finish it anyway (recorded in the manifest)"
        )
        raise UsageError(msg)
    warn(f"finishing {run.path} with changed model files ({what}); recorded in its manifest as changed_inputs")
    run.update_manifest(changed_inputs=[*(manifest.changed_inputs or []), *changed])


def execute(run: RunDir, scenario: Scenario, options: RunOptions, reporter: Reporter) -> list[CellRecord]:
    """Run every planned cell not yet in the journal; return all records of the run.

    The caller holds the run's writer lock. A full disk stops the sweep before the next cell with
    :class:`DiskFull` (the journal intact, the cell in flight kept where the reserve allows); an
    interrupt carries the run folder (``bench_run``) for the message that names it."""
    try:
        return _execute(run, scenario, options, reporter)
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
    planned = plan(select_cells(scenario, options), regs)
    run.repair_journal()
    done = {(r["cell_id"], r.get("repeat", 0)) for r in run.records() if r.get("status") in FINAL_STATUSES}

    pairs: list[tuple[PlannedCell, int]] = []
    for repeat in range(settings.repeats):  # repeats interleave across cells
        for p in planned:
            if p.skip_reason is None or repeat == 0:
                pairs.append((p, repeat))
    if manifest.planned != len(pairs):  # readers tell a finished run from an interrupted one
        manifest = run.update_manifest(planned=len(pairs))
    todo = [(p, repeat) for p, repeat in pairs if (p.cell.id, repeat) not in done]
    run.reserve()
    if todo and any(p.skip_reason is None for p, _ in todo):
        manifest = _reference(run, scenario, manifest, reporter)
    reporter.start(run, len(todo))
    for p, repeat in todo:
        measure_one(run, p, repeat, manifest, reporter)
    return finish(run, reporter)


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


def _failed_for_disk_space(run: RunDir, result: dict[str, Any]) -> bool:
    """A cell that failed because the disk is full: its error says so, or (a worker that could not
    even write its traceback) the run's disk has next to nothing left."""
    if result.get("status") in ("ok", "skipped"):
        return False
    text = " ".join(str(result.get(key) or "") for key in ("reason", "stderr_tail", "traceback_tail"))
    if any(marker in text for marker in _DISK_FULL_MARKERS):
        return True
    try:
        return run.disk_free_bytes() < DISK_NEARLY_FULL_BYTES
    except OSError:
        return False


def disk_full_message(run: RunDir, what: str) -> str:
    """What happened, what is kept, how much room to make and how to go on."""
    try:
        state = run.state()
        free_mb = run.disk_free_bytes() / 2**20
        used = sum(f.stat().st_size for f in run.path.rglob("*") if f.is_file() and f.name != ".reserve")
    except (OSError, BenchError):
        return f"{what}; the disk is full under {run.path}: free space, then: bench run --resume {run.path}"
    per_cell = used / max(state.recorded, 1)
    left = max((state.planned or state.recorded) - state.recorded, 0)
    need_mb = max(64.0, (per_cell * left + 2 * used + RESERVE_BYTES) / 2**20)
    of = f"{state.recorded} of {state.planned}" if state.planned is not None else str(state.recorded)
    return (
        f"disk full: {what}. {run.path} has {free_mb:.1f} MiB free; {of} planned cells are kept in its journal and "
        f"no cell was started after this. Free at least {need_mb:.0f} MiB (this run has used about "
        f"{per_cell / 2**20:.1f} MiB per cell), then: bench run --resume {run.path}"
    )


def finish(run: RunDir, reporter: Reporter) -> list[CellRecord]:
    """Write a run's tables, mark it finished and stop being its writer; return its records."""
    records = list(run.records())
    run.write_tables()
    run.update_manifest(finished_at=time.time())
    run.free_reserve()
    run.release()
    reporter.finish(run, records)
    return records


def run_scenario(scenario: Scenario, options: RunOptions, reporter: Reporter | None = None) -> RunDir:
    # names and filters are checked before a run folder exists: bad input leaves nothing behind
    check_scenario(scenario, registries(explicit_plugins(options.plugins), autoload=options.autoload))
    select_cells(scenario, options)
    run = create_run(scenario, options)
    try:
        execute(run, scenario, options, reporter or SilentReporter())
    finally:
        run.release()
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


__all__ = ["PlannedCell", "Reporter", "RunOptions", "execute", "resume", "run_scenario"]
