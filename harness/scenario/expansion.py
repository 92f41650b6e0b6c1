"""A validated scenario expanded into the ordered list of cells, and its one-screen description."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.cells import Cell, Scalar

if TYPE_CHECKING:
    from harness.scenario.schema import BackendEntry, LoadGenSettings, Scenario


def loadgen_min_queries(settings: LoadGenSettings, confidence: float = 0.95) -> int:
    """``min_query_count``, or when null the queries its percentile needs for a two-sided CI and
    LoadGen's early-stopping estimate (p99: 662)."""
    if settings.min_query_count is not None:
        return settings.min_query_count
    from harness.analysis import stats

    return stats.min_queries_for(settings.latency_percentile, confidence)


def loadgen_seconds(scenario: Scenario, load: str) -> float:
    """The least time LoadGen takes to measure one cell of ``load`` (warm-up and preparing apart)."""
    lg = scenario.loadgen
    if load != "server" or lg.target_qps is None:
        return lg.min_duration_s
    if lg.target_qps == "peak":
        search = lg.peak_search
        return search.max_trials * search.trial_duration_s + lg.min_duration_s
    queries = loadgen_min_queries(lg, scenario.measurement.confidence)
    seconds = float(max(max(lg.min_duration_s, queries / rate) for rate in lg.target_qps))
    return min(seconds, lg.max_duration_s) if lg.max_duration_s else seconds


def load_variants(scenario: Scenario, load: str, cpu_count: int) -> list[tuple[dict[str, Scalar], int]]:
    """The load options of each cell of ``load`` (concurrency, rate, batching wait) with the
    threads each replica gets: ``threads: auto`` shares the CPUs among the replicas."""
    lg = scenario.loadgen
    if load == "single_stream":
        return [({}, scenario.resolved_threads(cpu_count))]
    rates: tuple[Any, ...] = (None,)
    if load == "server":
        rates = ("peak",) if lg.target_qps == "peak" else tuple(lg.target_qps or ())
    waits: tuple[int | None, ...] = lg.max_wait_us if load in ("server", "multi_stream") else (None,)
    out: list[tuple[dict[str, Scalar], int]] = []
    for concurrency in scenario.concurrency:
        threads = (
            max(1, scenario.auto_cpus(cpu_count) // concurrency)
            if scenario.threads == "auto"
            else scenario.resolved_threads(cpu_count)
        )
        for rate in rates:
            for wait in waits:
                options: dict[str, Scalar] = {"concurrency": concurrency}
                if load == "server":
                    options.update(target_qps=rate, latency_bound_ms=lg.latency_bound_ms)
                if load == "multi_stream":
                    options["samples_per_query"] = lg.samples_per_query
                if wait is not None:
                    options["max_wait_us"] = wait
                out.append((options, threads))
    return out


def expand_cells(scenario: Scenario, cpu_count: int, machine_cpus: Mapping[str, int] | None = None) -> list[Cell]:
    """All cells of the scenario, backend outermost, then its sweep combinations, device,
    precision, batch size, load and the load's variants innermost; a cell equal to an earlier one
    is kept once. With ``machines:``, that list once per machine kind, in the scenario's order, its
    ``threads: auto`` resolved with the kind's CPUs from ``machine_cpus`` (``cpu_count`` for a kind
    not in it)."""
    if not scenario.machines:
        return _expand(scenario, cpu_count, None)
    cells: list[Cell] = []
    for kind in scenario.machines:
        cells += _expand(scenario, (machine_cpus or {}).get(kind.name, cpu_count), kind.name)
    return cells


def _expand(scenario: Scenario, cpu_count: int, machine: str | None) -> list[Cell]:
    scenario.resolved_threads(cpu_count)  # checks cpu_count
    cells: list[Cell] = []
    seen: set[str] = set()
    for backend in scenario.backends:
        precisions = backend.precisions if backend.precisions is not None else scenario.precisions
        for combo in backend.combos():
            options = {**backend.options, **combo}
            for device in scenario.devices:
                for precision in precisions:
                    for batch_size, load in itertools.product(scenario.batch_sizes, scenario.load):
                        for variant, threads in load_variants(scenario, load, cpu_count):
                            load_options = dict(variant)
                            if batch_size == 1 and load_options.get("max_wait_us"):
                                # a batch of one is full at once: no wait ever happens, the cell is the wait-0 one
                                load_options["max_wait_us"] = 0
                            cell = Cell(
                                model=scenario.model.name,
                                backend=backend.name,
                                device=device,
                                precision=precision,
                                batch_size=batch_size,
                                threads=threads,
                                load=load,
                                seed=scenario.seed,
                                model_options=dict(scenario.model.options),
                                backend_options=dict(options),
                                load_options=load_options,
                                input_data=scenario.model.inputs,
                                machine=machine,
                            )
                            if cell.id not in seen:
                                seen.add(cell.id)
                                cells.append(cell)
    return cells


def _load_summary(scenario: Scenario) -> str:
    parts = []
    lg = scenario.loadgen
    for load in scenario.load:
        text = load
        if load == "server":
            rates = "peak search" if lg.target_qps == "peak" else " | ".join(f"{r:g}" for r in lg.target_qps or ())
            text += f" ({rates} q/s, p{lg.latency_percentile:g} <= {lg.latency_bound_ms:g} ms)"
        elif load == "multi_stream":
            text += f" ({lg.samples_per_query} samples/query)"
        parts.append(text)
    text = ", ".join(parts)
    if any(load != "single_stream" for load in scenario.load):
        text += f"; concurrency {' | '.join(map(str, scenario.concurrency))}"
        text += f"; LoadGen >= {lg.min_duration_s:g} s"
    return text


def _backend_summary(backend: BackendEntry) -> str:
    parts = [f"{key}={value}" for key, value in backend.options.items()]
    parts += [f"{key}: {' | '.join(str(v) for v in values)}" for key, values in backend.sweep.items()]
    if backend.precisions is not None:
        parts.append(f"precisions: {', '.join(backend.precisions)}")
    return f"{backend.name} ({'; '.join(parts)})" if parts else backend.name


def describe(scenario: Scenario, cpu_count: int | None = None) -> str:
    """A short human summary for ``bench validate``: name, model, cells and axes."""
    cells = expand_cells(scenario, cpu_count or 1)
    m = scenario.measurement
    threads = str(scenario.threads)
    if scenario.threads == "auto" and cpu_count:
        threads = f"auto ({scenario.auto_cpus(cpu_count)} here)"
    cpu = scenario.cpu
    threads += f"; cpu: reserve {cpu.reserve}, pin {'on' if cpu.pin else 'off'}, wait {cpu.wait}"
    model = scenario.model.name
    if scenario.model.options:
        model += " (" + ", ".join(f"{k}={v}" for k, v in scenario.model.options.items()) + ")"
    if scenario.model.inputs:
        model += f"; inputs from {scenario.model.inputs}"
    budget_s = m.repeats * sum(
        m.warmup_s + (m.max_duration_s if cell.load == "single_stream" else loadgen_seconds(scenario, cell.load))
        for cell in cells
    )
    title = f"scenario {scenario.name}"
    if scenario.description:
        first = " ".join(scenario.description.split()).split(". ")[0].rstrip(".")
        title += f": {first if len(first) <= 100 else first[:97] + '...'}"
    lines = [
        title,
        f"  source:       {scenario.source_name}",
        f"  model:        {model}",
        f"  backends:     {', '.join(_backend_summary(b) for b in scenario.backends)}",
        f"  devices:      {', '.join(scenario.devices)}",
        f"  precisions:   {', '.join(scenario.precisions)}",
        f"  batch sizes:  {', '.join(str(b) for b in scenario.batch_sizes)}",
        f"  threads:      {threads}; seed {scenario.seed}",
        f"  load:         {_load_summary(scenario)}",
        f"  cells:        {len(cells)}"
        + (f" x {m.repeats} repeats" if m.repeats > 1 else "")
        + (
            f" ({len(cells) // len(scenario.machines)} on each of {len(scenario.machines)} machine kinds)"
            if scenario.machines
            else ""
        ),
        f"  measurement:  {m.min_duration_s:g}-{m.max_duration_s:g} s per single-stream cell after {m.warmup_s:g} s "
        f"warm-up, headline p{m.headline_percentile:g} (CI {m.confidence:g})",
        f"  time:         at most ~{budget_s / 60:.1f} min measuring, plus preparing each cell; "
        f"timeout {scenario.limits.timeout_s:g} s per cell",
        f"  fingerprint:  {scenario.fingerprint()[:16]}",
    ]
    if scenario.machines:
        kinds = ", ".join(
            f"{k.name} ({k.matches()}"
            + (f", {k.instance}" if k.instance else "")
            + (f", ${k.hourly_usd:g}/h" if k.hourly_usd else "")
            + ")"
            for k in scenario.machines
        )
        lines.insert(-3, f"  machines:     {kinds}; run with --executor ray")
    if scenario.gate is not None:
        gated = sum(scenario.gate.selects(cell) for cell in cells)
        lines.insert(-3, f"  gate:         {gated} of the {len(cells)} cells (bench gate measures these)")
    return "\n".join(lines)
