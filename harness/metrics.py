"""What every field of a result means: unit and definition. The report's tooltips and
docs/results.md come from here, and a test checks every column of a real run is listed."""

from __future__ import annotations

# name -> (unit, meaning)
FIELDS: dict[str, tuple[str, str]] = {
    "cell_id": (
        "",
        "12-hex-digit hash of the cell's configuration (model, backend, options, device, precision, batch, threads, load)",
    ),
    "label": ("", "human name of the cell: model backend[options] device precision batch"),
    "repeat": ("", "index of the independent worker process that measured the cell (0 .. repeats-1)"),
    "model": ("", "model name"),
    "model_options": ("", "model options, JSON"),
    "backend": ("", "runtime backend name"),
    "backend_options": ("", "backend options of this cell (fixed options and the sweep's values), JSON"),
    "device": ("", "cpu, cuda or cuda:N"),
    "precision": ("", "precision asked for; info.executed_precision says what actually ran"),
    "batch_size": ("samples", "samples per call"),
    "threads": ("", "intra-op threads given to the runtime (OMP/MKL env and the runtime's own setting)"),
    "load": ("", "load scenario; single_stream = closed loop, one query in flight"),
    "seed": ("", "seed of the generated input data (from the scenario)"),
    "status": (
        "",
        "ok, skipped (cannot run here: see reason), failed (Python exception), crashed (signal), oom (memory cap, allocation failure or OOM kill), timeout (hard limit)",
    ),
    "reason": ("", "why the cell was skipped or did not finish"),
    "started_at": ("s since epoch", "when the parent started the cell"),
    "ended_at": ("s since epoch", "when the parent recorded the result"),
    "prepare_s": (
        "s",
        "backend prepare: build, quantise, convert or compile (torch.compile's compilation included), bind inputs",
    ),
    "cold_ms": ("ms", "the first call after prepare, excluded from every statistic"),
    "warmup_queries": ("calls", "calls made to warm up after the cold call, excluded from statistics"),
    "warmup_s": ("s", "duration of the warm-up"),
    "n_queries": ("calls", "calls in the measured window"),
    "n": ("calls", "samples behind the latency statistics (= n_queries)"),
    "samples": ("samples", "n_queries x batch_size"),
    "wall_s": ("s", "wall time of the measured window, first call start to last call end"),
    "throughput_sps": ("samples/s", "samples / wall_s of the measured window (never batch / mean latency)"),
    "queries_per_s": ("calls/s", "n_queries / wall_s"),
    "mean_ms": ("ms", "mean latency per call"),
    "stdev_ms": ("ms", "standard deviation of latency per call"),
    "min_ms": ("ms", "fastest call"),
    "max_ms": ("ms", "slowest call"),
    "stop_reason": (
        "",
        "ci_converged: the headline percentile's CI got narrower than ci_rel_width; max_duration: the window hit its maximum",
    ),
    "min_queries": (
        "calls",
        "queries required for a valid window (from the headline percentile: CI and early stopping)",
    ),
    "min_queries_met": ("", "whether the window reached min_queries"),
    "valid": ("", "false when the window ended before min_queries: its tail percentiles are not trustworthy"),
    "peak_rss_mb_load": ("MiB", "resident high-water mark while importing plugins and building the model (VmHWM)"),
    "peak_rss_mb_prepare": ("MiB", "resident high-water mark during prepare (VmHWM, reset at phase start)"),
    "peak_rss_mb_warmup": ("MiB", "resident high-water mark during the cold call and warm-up"),
    "peak_rss_mb_measure": ("MiB", "resident high-water mark during the measured window"),
    "peak_rss_per_phase": (
        "",
        "true when the kernel allowed resetting VmHWM per phase; false: each peak is cumulative",
    ),
    "noise_other_cpu_s": (
        "CPU s",
        "CPU time used by every other process (the harness parent included) during the measured window",
    ),
    "noise_fraction": ("fraction", "noise_other_cpu_s / (wall_s x CPUs): share of the machine used elsewhere"),
    "noisy": (
        "",
        "noise_fraction above the scenario's noise_threshold; the cell was measured again and the quieter window kept",
    ),
    "attempts": ("", "worker runs made for this record (2 when a noisy window was re-measured)"),
    "latency_file": ("", "raw per-call latencies (int64 ns, .npy) relative to the run folder"),
    "info": ("", "facts the backend reported: executed precision, threads, runtime version, compile time, JSON"),
    "outputs_finite": ("", "all outputs of a final call were finite numbers"),
    "output_shapes": ("", "shapes of the outputs of a final call, JSON"),
    "worker_s": ("s", "wall time of the worker process from job start to result"),
    "elapsed_s": ("s", "wall time of the cell as the parent saw it (process start to exit)"),
    "exit_code": ("", "worker exit code (negative: killed by that signal)"),
    "stderr_tail": ("", "last 4000 characters of the worker's output, for cells that did not finish"),
    "traceback_tail": ("", "the Python traceback of a failed cell"),
}

_PCT_NAMES = {
    "50": "median",
    "90": "90th percentile",
    "95": "95th percentile",
    "99": "99th percentile",
    "99_9": "99.9th percentile",
}


def describe(field: str) -> tuple[str, str] | None:
    """Unit and meaning of a field, including the generated percentile families."""
    if field in FIELDS:
        return FIELDS[field]
    for key, name in _PCT_NAMES.items():
        p = f"p{key}"
        if field == f"{p}_ms":
            return "ms", f"{name} of latency per call (nearest rank)"
        if field == f"{p}_ci_low_ms":
            return "ms", f"lower bound of the {name}'s order-statistic confidence interval (null: too few calls)"
        if field == f"{p}_ci_high_ms":
            return "ms", f"upper bound of the {name}'s order-statistic confidence interval (null: too few calls)"
        if field == f"{p}_early_stop_ms":
            return "ms", f"MLPerf early-stopping estimate of the {name}: a one-sided 99% upper bound"
    return None


def markdown() -> str:
    """docs/results.md: every field with its unit and meaning (``python -m harness.metrics``)."""
    lines = [
        "# Result fields",
        "",
        "One row of `results.parquet` (and one line of `journal.jsonl`) per cell and repeat.",
        "Generated by `python -m harness.metrics > docs/results.md`; a test keeps it in sync.",
        "",
        "| field | unit | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {unit} | {meaning} |" for name, (unit, meaning) in FIELDS.items()]
    lines += [
        "",
        "Latency percentiles, for each of p50, p90, p95, p99 and p99.9 (`p99_9`):",
        "",
        "| field | unit | meaning |",
        "|---|---|---|",
    ]
    for suffix in ("_ms", "_ci_low_ms", "_ci_high_ms"):
        unit, meaning = describe(f"p99{suffix}") or ("", "")
        lines.append(f"| `pNN{suffix}` | {unit} | {meaning.replace('99th percentile', 'percentile')} |")
    unit, meaning = describe("p99_early_stop_ms") or ("", "")
    lines.append(
        f"| `pNN_early_stop_ms` (headline only) | {unit} | {meaning.replace('99th percentile', 'percentile')} |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
