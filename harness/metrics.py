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
    "load": (
        "",
        "load scenario: single_stream (bench's closed loop, one query in flight), or on MLPerf LoadGen offline (every "
        "sample at once), server (Poisson arrivals at target_qps) or multi_stream (queries of samples_per_query "
        "samples, the next when the last completes)",
    ),
    "load_options": (
        "",
        "the load's own axes for this cell, JSON: concurrency, target_qps (a rate or 'peak'), latency_bound_ms, "
        "samples_per_query, max_wait_us; empty for single_stream",
    ),
    "concurrency": (
        "sessions",
        "session replicas serving the queue at once, each on its own thread (1: single_stream)",
    ),
    "max_wait_us": (
        "us",
        "dynamic batching: how long a replica waits after the oldest queued sample arrived for its batch to fill "
        "(0: take what is queued; null: not a server or multi_stream cell)",
    ),
    "seed": (
        "",
        "seed of the generated input data (from the scenario); with input_data, the batch it picks: rows "
        "seed*batch_size .. seed*batch_size + batch_size - 1 of the file, wrapping around",
    ),
    "input_data": (
        "",
        "the .npz the inputs were cut from (the scenario's model: {inputs: FILE}), absolute path; absent: the "
        "model's own made-up example inputs",
    ),
    # --- NVIDIA GPU telemetry (cuda cells' measured window; harness.measure.gpu_telemetry) -------------
    "gpu_window_s": ("s", "the measured window NVML watched"),
    "gpu_energy_j": ("J", "the GPU's energy over the window: NVML's energy counter delta, else power x time"),
    "gpu_power_mean_w": ("W", "the GPU's mean power over the window (its energy / the window)"),
    "gpu_power_sampled_mean_w": (
        "W",
        "the mean of NVML's power readings every 50 ms over the window: beside gpu_power_mean_w, a check of the "
        "energy counter",
    ),
    "gpu_energy_per_inference_j": ("J", "the GPU's energy over the window / the samples it served"),
    "gpu_energy_source": (
        "",
        "counter (nvmlDeviceGetTotalEnergyConsumption, Volta and newer) or power x time (power sampled every 50 ms "
        "and integrated, where the counter is absent)",
    ),
    "gpu_mem_used_peak_mb": ("MiB", "the device's used memory, peak over the window (every process's, NVML)"),
    "gpu_proc_mem_peak_mb": (
        "MiB",
        "this worker's GPU memory, peak over the window (NVML's per-process accounting; null where it keeps none)",
    ),
    "gpu_sm_clock_mhz_start": ("MHz", "the GPU's SM clock as the window started"),
    "gpu_sm_clock_mhz_end": ("MHz", "the GPU's SM clock as the window ended"),
    "gpu_mem_clock_mhz_start": ("MHz", "the GPU's memory clock as the window started"),
    "gpu_mem_clock_mhz_end": ("MHz", "the GPU's memory clock as the window ended"),
    "gpu_temperature_c_start": ("C", "the GPU's temperature as the window started"),
    "gpu_temperature_c_end": ("C", "the GPU's temperature as the window ended"),
    "gpu_throttle_reasons": (
        "",
        "clock-event reasons NVML reported during the window (power cap, thermal or hardware slowdown, power "
        "brake): the GPU ran slower than it can",
    ),
    "gpu_telemetry_note": (
        "",
        "what the GPU telemetry could not measure, or saw: MIG, no per-process memory, "
        "a window too short for energy, throttling",
    ),
    "gpu_telemetry_skipped": ("", "why no GPU telemetry was read (NVML or nvidia-ml-py missing)"),
    # --- GPU time per call (cuda cells, single_stream; CUDA events; harness.measure.call_times) ------
    "gpu_timed_calls": ("calls", "calls of the measured window timed with CUDA events"),
    "gpu_timing_what": (
        "",
        "what the CUDA events bracketed: the module's forward (pytorch), execute_async_v3 or the CUDA graph's "
        "launch (tensorrt); transfers to and from the host outside them unless said",
    ),
    "gpu_compute_mean_ms": ("ms", "mean GPU compute time per call: CUDA events' elapsed time (trtexec's GPU Compute)"),
    "gpu_compute_p50_ms": ("ms", "median GPU compute time per call (CUDA events)"),
    "gpu_compute_p99_ms": ("ms", "99th percentile of the GPU compute time per call (CUDA events)"),
    "gpu_compute_cv": (
        "fraction",
        "coefficient of variation of the GPU compute time per call (trtexec warns over 2.5 %)",
    ),
    "enqueue_mean_ms": (
        "ms",
        "mean host time to launch a call's work, between the two events' records (trtexec's Enqueue Time; it "
        "warns over 0.8 x the GPU compute time)",
    ),
    "gpu_compute_share": (
        "fraction",
        "median GPU compute time / median wall-clock latency: the share of a call the GPU computed; the rest is "
        "the host (launches, transfers, synchronising)",
    ),
    "gpu_timing_warnings": (
        "",
        "trtexec's two warnings where they apply: enqueue-bound (launching took over 0.8 x the GPU compute time) "
        "and unstable GPU compute time (coefficient of variation over 2.5 %)",
    ),
    "gpu_timing_skipped": (
        "",
        "why a cuda cell has no CUDA-event time per call (the backend keeps none, or the cell's settings: transfers: include, concurrency above 1)",
    ),
    "energy_usd_per_million": (
        "USD",
        "the GPU's energy of a million inferences at cost.energy_usd_per_kwh; included in cost_per_million_usd",
    ),
    "machine": (
        "",
        "the scenario's machine kind the cell ran on (machines:, bench run --executor ray); absent: the machine of "
        "the run",
    ),
    "node_id": ("", "Ray runs: the id of the cluster node that measured the cell (its facts: the manifest's nodes)"),
    "node_host": ("", "Ray runs: the host name of the node that measured the cell"),
    "node_ip": ("", "Ray runs: the address of the node that measured the cell"),
    "retryable": (
        "",
        "true on a cell that failed for no fault of its own (its Ray node was lost): bench run --resume measures "
        "it again, and the new record replaces this one",
    ),
    "requeued": (
        "",
        "Ray runs with --requeue-lost: how often the cell was submitted again after its node was lost (at most 1)",
    ),
    "status": (
        "",
        "ok, skipped (cannot run here: see reason), failed (Python exception), crashed (signal), oom (memory cap: the harness's kill or the kernel's OOM killer at the cell's cgroup cap; allocation failure or OOM kill), timeout (hard limit)",
    ),
    "reason": (
        "",
        "why the cell was skipped or did not finish; one that looks like an input indexing past a table's end "
        "ends with where the inputs came from and the options that change them (int_high, inputs)",
    ),
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
    "peak_rss_mb_measure": (
        "MiB",
        "resident high-water mark during the measured window; it includes bench's own record of the window's call "
        "latencies, 8 bytes a call (16 while the window closes): 15 MiB for a million calls of a microsecond model",
    ),
    "peak_rss_per_phase": (
        "",
        "true when the kernel allowed resetting VmHWM per phase; false: each peak is cumulative",
    ),
    "noise_other_cpu_s": (
        "CPU s",
        "CPU time every process but the cell's own (the harness parent included) used during the measured window",
    ),
    "noise_fraction": (
        "fraction",
        "others' share of the machine's CPU time over the measured window (/proc/stat busy ticks minus the "
        "cell's, over every CPU's ticks): 0 = the machine was the cell's, 1 = every CPU busy elsewhere",
    ),
    "noise_steal_fraction": ("fraction", "the share of the machine's CPU time the hypervisor gave other VMs (steal)"),
    "noise_subwindows": ("", "sub-windows of 0.25 s the parent watched during the measured window"),
    "noise_disturbed_subwindows": ("", "sub-windows in which others used more than noise_threshold of the machine"),
    "noise_max_subwindow_fraction": ("fraction", "others' share of the machine in the busiest sub-window"),
    "quiet_wait_s": (
        "s",
        "how long the worker waited, before its warm-up, for a probe in which others used at most noise_threshold",
    ),
    "quiet_at_start": ("", "false when the machine was still busy after quiet_wait_s (the window started anyway)"),
    "noisy": (
        "",
        "the kept window was disturbed: noise_fraction over noise_threshold, or a disturbed sub-window",
    ),
    "attempts": (
        "",
        "worker runs made for this record: the cell is measured again, after a pause, while the window is disturbed, "
        "up to the scenario's max_attempts; the least disturbed attempt is kept",
    ),
    "trusted": (
        "",
        "true when the kept window was a quiet machine's; false when every attempt was disturbed: its figures are "
        "kept but left out of answers, frontiers, recommendations and budgets, and compared as inconclusive",
    ),
    "untrusted_reason": ("", "why the cell is not trusted: how busy the machine was in its kept window"),
    "latency_file": ("", "raw per-call latencies (int64 ns, .npy) relative to the run folder"),
    "info": ("", "facts the backend reported: executed precision, threads, runtime version, compile time, JSON"),
    "outputs_finite": ("", "all outputs of a final call were finite numbers"),
    "output_shapes": ("", "shapes of the outputs of a final call, JSON"),
    "worker_s": ("s", "wall time of the worker process from job start to result"),
    "elapsed_s": ("s", "wall time of the cell as the parent saw it (process start to exit)"),
    "exit_code": ("", "worker exit code (negative: killed by that signal)"),
    "stderr_tail": (
        "",
        "last 4000 characters of the worker's output, for cells that did not finish: a crash, a timeout and a memory-cap kill leave every thread's Python stack there",
    ),
    "memory_accounting": (
        "",
        "how the cell's process tree (the worker and all it started) was held, measured and killed: cgroup-v2 or cgroup-v1 (a cgroup of its own; the kernel enforces memory_mb), or process-tree (no cgroup could be made: the harness sums and kills the worker's descendants)",
    ),
    "peak_tree_mb": (
        "MiB",
        "high-water mark of the whole cell's memory, every process it started included: the cgroup's (memory.peak or memory.max_usage_in_bytes: memory charged to the cell, page cache included, not pages others loaded first), or with process-tree the largest sum of the tree's resident sets seen (sampled every 0.2 s under a cap, else every 1 s and at each phase)",
    ),
    "traceback_tail": ("", "the Python traceback of a failed cell"),
    # --- LoadGen cells (offline, server, multi_stream) -------------------------------------------
    "service_ms": ("ms", "median time of one call during the warm-up (sizes offline and the peak search)"),
    "measure_s": ("s", "wall time of every LoadGen test of the cell (a peak search runs several)"),
    "target_qps": ("queries/s", "server: the Poisson arrival rate offered in the cell's final LoadGen test"),
    "scheduled_qps": ("queries/s", "the rate LoadGen actually scheduled (a Poisson draw around target_qps)"),
    "latency_bound_ms": ("ms", "server: the bound LoadGen's latency percentile must stay under"),
    "loadgen_validity": (
        "",
        "the verdict of the generator that drove the test (generator), VALID or INVALID: LoadGen's (min duration, "
        "min queries, early stopping and, for server, the latency bound), or bench's by LoadGen's server rules "
        "(min queries, min duration, latency bound)",
    ),
    "loadgen_min_duration_met": ("", "the test ran at least min_duration_s (LoadGen's or bench's generator's check)"),
    "loadgen_min_queries_met": ("", "the test ran at least min_query_count queries (the generator's check)"),
    "loadgen_perf_constraints_met": (
        "",
        "server: the latency percentile under latency_bound_ms (the generator's check)",
    ),
    "loadgen_early_stopping_met": ("", "LoadGen: enough queries for its early-stopping estimate"),
    "loadgen_early_stopping_estimate_ms": (
        "ms",
        "LoadGen's early-stopping estimate of the latency percentile, where it printed one (multi_stream)",
    ),
    "loadgen_mean_ms": (
        "ms",
        "LoadGen's own mean latency, from each query's scheduled arrival (null for generator bench)",
    ),
    "issue_delay_p99_ms": (
        "ms",
        "99th percentile of how late the generator issued queries after their scheduled arrival (included in latency)",
    ),
    "issue_delay_max_ms": ("ms", "the latest issue after a scheduled arrival"),
    "generator_delay_p99_ms": (
        "ms",
        "99th percentile of the generator's own lateness: the issue delay beyond the wait for the previous call, "
        "where serving is inline (it cannot issue while a call runs); else the issue delay",
    ),
    "generator_kept_up": (
        "",
        "the load generator kept its schedule: generator_delay_p99_ms under 10% of the median latency (or 0.1 ms)",
    ),
    "generator": (
        "",
        "who issued the queries: bench (server served inline: bench's open-loop Poisson generator, which sleeps to "
        "250 us before each arrival and spins the rest, so that a timer's late wake-up is not counted as latency) "
        "or loadgen (LoadGen's scheduler, which sleeps until each arrival)",
    ),
    "serving": (
        "",
        "how queries reached the session: inline (one session at batch 1 with no batching wait, the call on "
        "the generator's issuing thread) or queue (replica threads take batches from a queue)",
    ),
    "batch_calls": ("calls", "session calls made by the replicas in the final test"),
    "mean_batch": ("samples", "samples per call on average (dynamic batching fills up to batch_size)"),
    "padded_fraction": (
        "fraction",
        "share of computed samples that were padding: a partial batch still runs the whole prepared batch",
    ),
    "peak_qps": (
        "queries/s",
        "server with target_qps: peak: the highest rate whose latency percentile met the bound (null: none did)",
    ),
    "load_curve": (
        "",
        "every LoadGen test of a peak search, JSON: target_qps, completed_sps, p50_ms, the percentile, meets_bound, "
        "valid, duration_s",
    ),
    "load_note": ("", "what the peak search found worth saying (peak at the top of the range, steps down)"),
    "loadgen_log_dir": (
        "",
        "the generator's logs of the cell, relative to the run folder: LoadGen's summary and detail logs, or bench's "
        "generator.json (settings, verdict, counts)",
    ),
    "issue_delay_file": ("", "per-query issue delays (int64 ns, .npy) relative to the run folder"),
    # --- economics and budgets (scenario's cost: and budgets:) ------------------------------------
    "hourly_usd": (
        "USD/h",
        "price of the machine per hour: the catalog's on-demand price or the scenario's hourly_usd",
    ),
    "price_source": ("", "where hourly_usd came from: the catalog row (cloud/instance, region, date, public source)"),
    "cost_per_million_usd": (
        "USD",
        "cost per million inferences: hourly_usd / (throughput_sps x 3600) x 1e6, the machine kept at throughput_sps "
        "(its capacity in offline, single-stream, multi-stream and peak-search cells; in a server cell at a fixed "
        "target_qps the rate offered, a lower bound of its capacity, so the cost at that load, not the least); plus "
        "energy_usd_per_million where the scenario prices energy (cost.energy_usd_per_kwh)",
    ),
    "instances_needed": (
        "machines",
        "machines to serve cost.target_qps samples/s with each at cost.utilisation of throughput_sps (an upper "
        "bound in a server cell at a fixed target_qps, whose throughput_sps is the rate offered)",
    ),
    "monthly_usd": ("USD", "a 30-day month of cost.daily_volume inferences a day at cost.utilisation"),
    "budgets": (
        "",
        "per budget of the scenario: limit, value, ok (true, false, null when the cell has no such metric) and why; "
        "JSON",
    ),
    "budgets_ok": ("", "no budget broken (a cell that did not measure breaks them all)"),
    # --- fidelity against the fp32 PyTorch eager reference (the scenario's fidelity:) ---------------
    "max_abs_error": ("", "largest absolute difference from the reference over every output of the validation set"),
    "mean_abs_error": ("", "mean absolute difference from the reference over every output of the validation set"),
    "cosine": ("", "cosine similarity of all outputs, flattened, to the reference's"),
    "agreement": (
        "fraction",
        "the task's agreement with the reference: ctr, the same side of 0.5; classification, the same top-1 class; "
        "embedding, mean per-sample cosine",
    ),
    "task_metric": ("", "the labelled metric: auc (ctr) or accuracy (classification)"),
    "task_value": ("fraction", "task_metric of this cell's outputs on the labelled validation set"),
    "reference_task_value": ("fraction", "task_metric of the reference's outputs: what this cell can at best match"),
    "fidelity_samples": (
        "samples",
        "size of the validation set (with input_data: the file's first min(fidelity.samples, its samples))",
    ),
    "fidelity_reference": (
        "",
        "what computed the reference outputs: the model's PyTorch module (eager fp32), or for a model that is only "
        "an ONNX file onnxruntime's CPU provider with graph optimisations off",
    ),
    "fidelity_s": ("s", "time to run the validation set through the cell's session (after measuring)"),
    "fidelity_ok": ("", "cosine at least min_cosine for the precision, agreement at least fidelity.min_agreement"),
    "fidelity_reason": ("", "why fidelity_ok is false"),
    "min_cosine": ("", "the least cosine this cell's precision passes with (fp32 0.999, fp16/bf16 0.995, int8 0.99)"),
    "fidelity_skipped": ("", "why the cell's accuracy was not measured (no reference, a backend that cannot rebind)"),
    "pareto_latency_throughput": (
        "",
        "on the frontier of p99_ms (lower) vs throughput_sps (higher): no trusted cell beats it on both (null: "
        "a metric missing, or the cell untrusted)",
    ),
    "pareto_cost_latency": (
        "",
        "on the frontier of cost_per_million_usd (lower) vs p99_ms (lower), among trusted cells (null: not judged)",
    ),
    "pareto_cost_accuracy": (
        "",
        "on the frontier of cost_per_million_usd (lower) vs agreement (higher), among trusted cells (null: not judged)",
    ),
    # --- compute efficiency -------------------------------------------------------------------------
    "flops_per_sample": ("FLOP", "floating-point operations of one sample (torch's flop counter: matmuls, convs)"),
    "achieved_gflops": ("GFLOP/s", "flops_per_sample x throughput_sps"),
    "fraction_of_peak": (
        "fraction",
        "achieved_gflops / the machine's measured fp32 matmul peak (manifest reference.peak_gflops, the best of "
        "torch's and numpy's BLAS): int8 and bf16 cells, and kernels tuned better than that BLAS, can exceed 1",
    ),
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
    if field.startswith("loadgen_p") and field.endswith("_ms"):
        return "ms", "LoadGen's own value of the latency percentile it judges (latency_percentile), nearest rank"
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


#: the keys of ``generator.json``, which bench's own server generator writes where LoadGen would
#: write its logs (``loadgen_log_dir``), with their units and meanings
GENERATOR_JSON: dict[str, tuple[str, str]] = {
    "generator": ("", "bench: the open-loop generator that issued the queries (harness/measure/open_loop.py)"),
    "validity": ("", "VALID when min_queries_met, min_duration_met and latency_bound_met all hold; else INVALID"),
    "min_queries_met": ("", "at least min_query_count queries completed"),
    "min_duration_met": (
        "",
        "the last query issued was scheduled at least min_duration_s after the test's start (LoadGen's rule)",
    ),
    "latency_bound_met": ("", "the percentile's latency is within latency_bound_ms"),
    "percentile": ("%", "the latency percentile judged against the bound (loadgen.latency_percentile)"),
    "percentile_latency_ns": ("ns", "that percentile of query latency, nearest rank"),
    "query_count": ("queries", "queries issued and completed"),
    "target_qps": ("queries/s", "the Poisson arrival rate asked for"),
    "scheduled_qps": ("queries/s", "the rate of the arrivals actually scheduled (queries - 1 over their span)"),
    "latency_bound_ms": ("ms", "the bound the percentile is judged against"),
    "min_query_count": ("queries", "the least queries of a valid test"),
    "min_duration_s": ("s", "the least schedule of a valid test: its last query's scheduled time from the start"),
    "max_duration_s": ("s", "issuing stops here even if fewer queries were issued (null: no limit)"),
    "seed": ("", "seed of the arrival schedule: the same seed, the same arrivals"),
    "spin_margin_ns": ("ns", "the generator sleeps until this long before an arrival, then spins on the clock"),
    "queries_scheduled": ("queries", "arrivals in the schedule (issued ones are query_count, unless max_duration_s cut it)"),
    "mean_latency_ns": ("ns", "mean query latency, from scheduled arrival to completion (queueing included)"),
    "generator_delay_p99_ns": ("ns", "99th percentile of the generator's own lateness: how late it issued a query that found the server idle"),
}  # fmt: skip


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
    unit, meaning = describe("loadgen_p99_ms") or ("", "")
    lines.append(f"| `loadgen_pNN_ms` (LoadGen cells) | {unit} | {meaning} |")
    lines += [
        "",
        "For LoadGen cells a latency is a query's, from its scheduled arrival to its last sample's completion "
        "(queueing included); `n_queries` counts queries, `samples` completed samples, and offline, whose one "
        "query holds every sample, has no latency percentiles.",
        "",
        "## generator.json",
        "",
        "Server cells served inline (one session, batch 1, no batching wait) are issued by bench's own open-loop",
        "generator (`generator: bench`), which writes `generator.json` under `loadgen_log_dir` where LoadGen would",
        "write its logs:",
        "",
        "| key | unit | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {unit} | {meaning} |" for name, (unit, meaning) in GENERATOR_JSON.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
