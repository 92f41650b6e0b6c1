"""What a scenario asks for on this machine, before anything runs: the options of a run, the checks only
the plugins can make (names, backend options, loads), the effective measurement and LoadGen settings,
and the cells selected and planned (each with its skip reason where a backend cannot serve it)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import environment
from harness.api import Backend
from harness.cells import Cell
from harness.errors import UsageError
from harness.pluginmanager import Registries

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
    #: where that cache is when not ``<out_root>/.cache`` (``bench gate`` keeps one per side's code,
    #: shared by the runs measured with that code)
    cache_dir: Path | None = None
    command: str = field(default_factory=lambda: shlex.join(["bench", *sys.argv[1:]]))
    #: run only these cells (``bench compare --confirm`` re-measures regressed cells)
    cell_ids: frozenset[str] | set[str] = frozenset()
    #: measure with the harness and plugins of another checkout (``bench compare --confirm`` measures
    #: the baseline's code this way); None: this checkout's
    code_path: Path | None = None
    #: --resume: go on although a model file changed since the run started (recorded in the manifest)
    allow_changed_inputs: bool = False
    #: where cells run: ``local`` (worker processes on this machine) or ``ray`` (a Ray cluster)
    executor: str = "local"
    #: --ray-address: the cluster to join (None: ``auto``, the one ``ray start`` made on this machine)
    ray_address: str | None = None
    #: --requeue-lost: a cell whose node was lost runs once more on another node of its kind
    requeue_lost: bool = False

    def executor_settings(self) -> dict[str, Any]:
        """The executor as the manifest records it (a resume uses it again)."""
        if self.executor == "local":
            return {"kind": "local"}
        return {"kind": self.executor, "address": self.ray_address, "requeue_lost": self.requeue_lost}


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    skip_reason: str | None = None


def check_scenario(scenario: Scenario, regs: Registries) -> None:
    """What only the plugins can tell, as scenario errors at the line that caused them: unknown
    model or backend names, model options the model refuses, backend options or values a backend
    does not declare, a concurrency a backend cannot serve, a latency bound below a backend's
    known service time."""
    if scenario.model.name not in regs.models:
        raise scenario.error(("model",), regs.models.unknown_message(scenario.model.name))
    from harness import input_data

    try:  # bad model options and unusable model files fail here, before a run folder exists
        model = regs.models.get(scenario.model.name)(**scenario.model.options)
    except ValueError as exc:
        raise scenario.error(("model",), str(exc)) from exc
    if scenario.model.inputs is not None:  # and an inputs file that does not fit the model (its headers)
        try:
            input_data.check(model, scenario.model.inputs, min(scenario.batch_sizes), scenario.seed)
        except ValueError as exc:
            raise scenario.error(("model", "inputs"), str(exc)) from exc
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


def select_cells(
    scenario: Scenario,
    options: RunOptions,
    cpu_count: int | None = None,
    machine_cpus: Mapping[str, int] | None = None,
) -> list[Cell]:
    """The cells a run measures: the scenario's, its ``threads: auto`` resolved with ``cpu_count``
    (default: this machine's usable CPUs) or per machine kind with ``machine_cpus``, then the
    command line's filters."""
    from harness.scenario import expand_cells

    cells = expand_cells(scenario, cpu_count or environment.usable_cpus(), machine_cpus)
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
