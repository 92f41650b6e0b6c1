"""The worker: runs one cell in its own process and reports one JSON result to its parent.

Started by the local executor as ``python -m harness.executors.worker``; the job arrives as JSON on stdin,
events and the result leave as JSON lines on the file descriptor named by ``BENCH_RESULT_FD``.
Anything the runtime prints goes to stdout/stderr, which the parent keeps in the cell's log.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

from harness.executors.containment import join_cell_cgroup, set_child_subreaper
from harness.records import Job, ReferenceJob, job_from_json

RESULT_FD_ENV = "BENCH_RESULT_FD"
#: the parent sends it before killing a hung or oversized worker: every thread's stack goes to the log
STACKS_SIGNAL = signal.SIGUSR1
_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "std::bad_alloc")


class Channel:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def send(self, message: dict[str, Any]) -> None:
        self._stream.write(json.dumps(message, default=_jsonable) + "\n")
        self._stream.flush()


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _write_npy_atomic(path: Path, array: Any) -> None:
    import numpy as np

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _outputs_check(outputs: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    return {
        "outputs_finite": bool(all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in outputs.values())),
        "output_shapes": {k: list(np.shape(v)) for k, v in outputs.items()},
    }


def run_job(job: Job, channel: Channel, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure the job's cell; ``context`` gets the model once it is built."""
    from harness.cells import Cell
    from harness.input_data import build_model
    from harness.measure.memory import PhasePeaks
    from harness.pluginmanager import registries

    cell = Cell.from_config(dict(job.cell))
    workdir = Path(job.workdir)
    cell_dir = Path(job.cell_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    cell_dir.mkdir(parents=True, exist_ok=True)

    peaks = PhasePeaks()
    peaks.start("load")
    channel.send({"event": "phase", "phase": "load"})
    regs = registries(job.plugins, autoload=job.autoload)
    model = build_model(regs.models.get(cell.model), cell.model_options, cell.input_data)
    if context is not None:  # for the failure's reason (an index out of range names the inputs' options)
        context["model"] = model
    backend = regs.backends.get(cell.backend)()

    peaks.start("prepare")
    channel.send({"event": "phase", "phase": "prepare"})
    t0 = time.perf_counter()
    session = backend.prepare(model, cell, workdir)
    sessions = [session]
    try:
        for _ in range(cell.concurrency - 1):  # LoadGen cells: one session per concurrent stream
            sessions.append(session.replica() or backend.prepare(model, cell, workdir))
        prepare_s = time.perf_counter() - t0
        if cell.load == "single_stream":
            result = _single_stream(job, cell, session, peaks, channel, cell_dir)
        else:
            result = _loadgen(job, cell, sessions, peaks, channel, cell_dir)
        result.update(_outputs_check(session.outputs()))
        result.update(_fidelity(job, cell, session))
        info = dict(session.info)  # before close(), which may release what info refers to
    finally:
        for each in sessions:
            each.close()
    return {
        "status": "ok",
        "reason": "",
        "prepare_s": prepare_s,
        **result,
        **{f"peak_rss_mb_{phase}": mb for phase, mb in peaks.peaks_mb.items()},
        "peak_rss_per_phase": peaks.resettable,
        "info": {**info, "model": model.params()},
    }


def _fidelity(job: Job, cell: Any, session: Any) -> dict[str, Any]:
    """The cell's outputs on the validation set against the run's reference (after measuring)."""
    ref = job.reference
    if not ref or not ref.get("path"):
        return {"fidelity_skipped": (ref or {}).get("fidelity_skipped") or "no reference in this run"}
    from harness.measure import fidelity

    try:
        result = fidelity.evaluate(session, cell.batch_size, Path(ref["path"]), ref["task"])
    except NotImplementedError as exc:
        return {"fidelity_skipped": str(exc)}
    verdict = fidelity.verdict(result, cell.precision, dict(job.fidelity or {}))
    return {**result, **verdict, "fidelity_reference": ref.get("reference_runtime")}


def _latency_file(job: Job, cell_dir: Path, stem: str, values: Any) -> str:
    path = cell_dir / f"{stem}.r{job.repeat}.a{job.attempt}.npy"
    _write_npy_atomic(path, values)
    return str(path.relative_to(cell_dir.parent.parent))


def _tree() -> list[int]:
    """This worker and every process it started: the cell's own CPU time, not interference."""
    from harness.executors.containment import walk_tree

    return sorted(walk_tree({os.getpid()}) or {os.getpid()})


def _quiet(job: Job, channel: Channel) -> dict[str, Any]:
    """Wait (up to the scenario's quiet_wait_s) for the machine to be quiet before the window."""
    from harness.measure import noise

    channel.send({"event": "phase", "phase": "quiet?"})
    quiet = noise.wait_for_quiet(job.quiet_wait_s, job.noise_threshold, _tree)
    return {"quiet_wait_s": quiet.waited_s, "quiet_at_start": quiet.quiet}


def _noise_fields(job: Job, start: Any, end: Any) -> dict[str, Any]:
    from harness.measure import noise

    guard = noise.between(start, end)
    return {
        "noise_other_cpu_s": guard.other_cpu_s,
        "noise_fraction": guard.other_fraction,
        "noise_steal_fraction": guard.steal_fraction,
        "noisy": guard.other_fraction is not None and guard.other_fraction > job.noise_threshold,
    }


def _telemetry(cell: Any) -> Any:
    """NVML's reader of the cell's GPU (energy, power, memory, clocks over the measured window), or
    None for a cell that is not on ``cuda``."""
    if cell.device_kind != "cuda":
        return None
    from harness.measure.gpu_telemetry import Telemetry

    return Telemetry(cell.device)


def _single_stream(job: Job, cell: Any, session: Any, peaks: Any, channel: Channel, cell_dir: Path) -> dict[str, Any]:
    from harness.analysis import stats
    from harness.measure import noise
    from harness.measure.single_stream import run_window

    rule = job.rule
    marks: dict[str, Any] = {}
    timer = session.call_times()  # a GPU session's CUDA-event times per call (None: it keeps none)
    telemetry = _telemetry(cell)

    def on_phase(phase: str) -> None:
        if phase != "warmup":  # the warm-up phase already holds the cold call
            peaks.start(phase)
        channel.send({"event": "phase", "phase": phase})
        if phase == "measure":
            marks["noise"] = noise.sample(marks["tree"])
            if telemetry is not None:
                telemetry.start()
            if timer is not None:
                timer.start()

    quiet = _quiet(job, channel)
    marks["tree"] = _tree()
    peaks.start("warmup")
    channel.send({"event": "phase", "phase": "cold"})
    window = run_window(session.run, rule, on_phase)
    gpu = telemetry.stop(int(window.latencies_ns.size) * cell.batch_size) if telemetry is not None else {}
    if timer is not None:
        from harness.measure import call_times

        compute, enqueue = timer.stop()
        gpu.update(call_times.summarize(compute, enqueue, window.latencies_ns, timer.what))
    elif cell.device_kind == "cuda":
        gpu["gpu_timing_skipped"] = session.info.get("gpu_timing_skipped") or (
            f"backend '{cell.backend}' keeps no CUDA-event times per call: wall clock only"
        )
    noise_end = noise.sample(marks["tree"])
    channel.send({"event": "phase", "phase": "measured"})
    peaks.stop()

    wall_s = window.wall_ns / 1e9
    n = int(window.latencies_ns.size)
    summary = stats.summarize(
        window.latencies_ns,
        percentiles=job.percentiles,
        confidence=rule.confidence,
        headline=(rule.headline_percentile,),
    )
    return {
        "cold_ms": window.cold_ns / 1e6,
        "warmup_queries": window.warmup_queries,
        "warmup_s": window.warmup_ns / 1e9,
        "n_queries": n,
        "samples": n * cell.batch_size,
        "wall_s": wall_s,
        "throughput_sps": n * cell.batch_size / wall_s if wall_s > 0 else None,
        "queries_per_s": n / wall_s if wall_s > 0 else None,
        **summary.as_flat_dict(scale=1e-6, unit="ms"),
        "stop_reason": window.stop_reason,
        "min_queries": rule.min_queries,
        "min_queries_met": window.min_queries_met,
        "valid": window.min_queries_met,
        **quiet,
        **_noise_fields(job, marks["noise"], noise_end),
        "latency_file": _latency_file(job, cell_dir, "latencies_ns", window.latencies_ns),
        **gpu,
    }


def _loadgen(job: Job, cell: Any, sessions: list[Any], peaks: Any, channel: Channel, cell_dir: Path) -> dict[str, Any]:
    """Offline, server and multi-stream cells: warm up, then LoadGen (a peak search for
    ``target_qps: peak``); the numbers are those of the final LoadGen test."""
    import numpy as np

    from harness.analysis import stats
    from harness.measure import loadgen, noise

    started = time.monotonic()
    lg, rule, opts = dict(job.loadgen or {}), job.rule, cell.load_options
    loadgen.set_fine_timer_slack()  # LoadGen's threads, started below, inherit it
    peaks.start("warmup")
    channel.send({"event": "phase", "phase": "cold"})
    quiet = _quiet(job, channel)  # before the warm-up, which the window follows at once
    warm = loadgen.warm_up(sessions, rule.warmup_s, rule.warmup_queries)
    capacity = loadgen.capacity_qps(warm, cell.batch_size, len(sessions), cell.threads)
    rate = opts.get("target_qps")
    call_ms = warm.median_call_ns / 1e6
    bound = opts.get("latency_bound_ms")
    if cell.load == "multi_stream" and not bound:  # LoadGen sizes its query pool by the expected latency
        spq = int(opts.get("samples_per_query") or 8)
        bound = call_ms * -(-spq // (cell.batch_size * len(sessions)))
    settings = loadgen.LoadSettings(
        scenario=cell.load,
        min_duration_s=lg["min_duration_s"],
        min_query_count=lg["min_query_count"],
        max_duration_s=lg["max_duration_s"],
        target_qps=float(rate) if isinstance(rate, int | float) else None,
        latency_bound_ms=bound,
        latency_percentile=lg["latency_percentile"],
        samples_per_query=int(opts.get("samples_per_query") or 8),
        expected_qps=lg["expected_qps"] or capacity,
        seed=lg["seed"],
        generator=lg.get("generator", "auto"),
    )
    folder = loadgen.log_folder(cell_dir, job.repeat, job.attempt)
    wait_ns = int(opts.get("max_wait_us") or 0) * 1000
    tree = _tree()
    telemetry = _telemetry(cell) if rate != "peak" else None  # a peak search's trials are not one steady window
    peaks.start("measure")
    channel.send({"event": "phase", "phase": "measure"})
    noise_start = noise.sample(tree)
    if telemetry is not None:
        telemetry.start()
    t0 = time.perf_counter()
    if rate == "peak":
        trials = iter(range(1, 1000))

        def trial(qps: float, duration_s: float) -> loadgen.LoadGenRun:
            full = duration_s >= settings.min_duration_s
            left_s = job.timeout_s - (time.monotonic() - started) - 10.0
            queries = min(settings.min_query_count, max(1, int(qps * max(left_s, duration_s)))) if full else 1
            name = "final" if full else f"trial{next(trials)}"
            test = loadgen.with_target(settings, qps, duration_s, queries)
            return loadgen.run_test(sessions, cell.batch_size, test, folder / name, wait_ns)

        search = loadgen.PeakSearch(lg["min_qps"], lg["max_qps"], lg["precision"], lg["trial_duration_s"],
                                    lg["max_trials"])  # fmt: skip
        outcome = loadgen.peak_search(trial, search, capacity * 1.1, settings.min_duration_s)
    else:
        outcome = loadgen.LoadOutcome(loadgen.run_test(sessions, cell.batch_size, settings, folder, wait_ns))
    measure_s = time.perf_counter() - t0
    gpu: dict[str, Any] = {}
    if telemetry is not None:
        gpu = telemetry.stop(outcome.final.n_samples)
    elif cell.device_kind == "cuda":
        gpu = {"gpu_telemetry_skipped": "a peak search runs trials at several rates: no one steady window to read"}
    noise_end = noise.sample(tree)
    channel.send({"event": "phase", "phase": "measured"})
    peaks.stop()

    final = outcome.final
    lat, delay, detail = final.query_latency_ns, final.issue_delay_ns, final.loadgen
    latency_stats: dict[str, Any] = {}
    if cell.load != "offline" and lat.size:  # offline has one query: its latency is the run's length
        summary = stats.summarize(
            lat, percentiles=job.percentiles, confidence=rule.confidence, headline=(rule.headline_percentile,)
        )
        latency_stats = summary.as_flat_dict(scale=1e-6, unit="ms")
    pct = settings.latency_percentile
    lg_pct = detail.get(f"result_{pct:.2f}_percentile_latency_ns")
    delay_p99 = float(np.percentile(delay, 99)) / 1e6 if delay.size else None
    own = final.generator_delay
    own_p99 = float(np.percentile(own, 99)) / 1e6 if own.size else None
    median_ms = float(np.median(lat)) / 1e6 if lat.size else None
    kept_up = own_p99 is not None and median_ms is not None and (own_p99 <= max(0.1 * median_ms, 0.1))
    batches = final.batches
    estimate = detail.get("early_stopping_estimate_ns")
    wall_s = final.wall_ns / 1e9
    return {
        "cold_ms": warm.cold_ns / 1e6,
        "warmup_queries": warm.queries,
        "warmup_s": warm.duration_ns / 1e9,
        "service_ms": call_ms,
        "n_queries": int(lat.size),
        "samples": final.n_samples,
        "wall_s": wall_s,
        "measure_s": measure_s,
        "throughput_sps": final.throughput_sps,
        "queries_per_s": lat.size / wall_s if wall_s > 0 else None,
        **latency_stats,
        "stop_reason": "loadgen",
        "min_queries": final.settings.min_query_count,
        "min_queries_met": bool(detail.get("result_min_queries_met")),
        "valid": final.valid,
        "target_qps": final.settings.target_qps,
        "scheduled_qps": detail.get("result_scheduled_samples_per_sec"),
        "latency_bound_ms": final.settings.latency_bound_ms if cell.load == "server" else None,
        "loadgen_validity": detail.get("result_validity"),
        "loadgen_min_duration_met": detail.get("result_min_duration_met"),
        "loadgen_min_queries_met": detail.get("result_min_queries_met"),
        "loadgen_perf_constraints_met": detail.get("result_perf_constraints_met"),
        "loadgen_early_stopping_met": detail.get("early_stopping_met"),
        "loadgen_early_stopping_estimate_ms": estimate / 1e6 if estimate else None,
        "loadgen_mean_ms": (detail.get("result_mean_latency_ns") or 0) / 1e6 or None,
        f"loadgen_p{pct:g}_ms": lg_pct / 1e6 if lg_pct else None,
        "issue_delay_p99_ms": delay_p99,
        "issue_delay_max_ms": float(delay.max()) / 1e6 if delay.size else None,
        "generator_delay_p99_ms": own_p99,
        "generator_kept_up": kept_up,
        "serving": final.serving,
        "generator": final.generator,
        "batch_calls": batches.calls,
        "mean_batch": batches.mean_batch,
        "padded_fraction": batches.padded_samples / (batches.calls * cell.batch_size) if batches.calls else None,
        "peak_qps": outcome.peak_qps,
        "load_curve": outcome.curve or None,
        "load_note": outcome.note,
        "loadgen_log_dir": str(folder.relative_to(cell_dir.parent.parent)),
        **quiet,
        **_noise_fields(job, noise_start, noise_end),
        "latency_file": _latency_file(job, cell_dir, "latencies_ns", lat),
        "issue_delay_file": _latency_file(job, cell_dir, "issue_delay_ns", delay),
        **gpu,
    }


def _with_hint(reason: str, exc: BaseException, model: Any) -> str:
    """The reason, with what to change where it looks like an input indexed past a table's end
    (made-up integer inputs too large for it): the model's inputs options, or real data."""
    try:
        from harness.input_data import index_error_hint

        hint = index_error_hint(exc, model)
    except Exception:  # a hint must never cost the cell its recorded reason
        return reason
    return f"{reason} ({hint})" if hint else reason


def classify_exception(exc: BaseException) -> str:
    """``oom`` for allocation failures (Python's and the runtimes'), else ``failed``."""
    if isinstance(exc, MemoryError):
        return "oom"
    text = str(exc).lower()
    return "oom" if any(marker in text for marker in _OOM_MARKERS) else "failed"


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker when its parent dies (a killed ``bench run``)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


def _report_stacks_to_log() -> None:
    """A crash (SIGSEGV, SIGABRT, ...) prints where every thread was, and so does STACKS_SIGNAL from
    the parent; both from the signal handler, so a thread stuck in C does not stop them."""
    faulthandler.enable(file=sys.stderr, all_threads=True)
    faulthandler.register(STACKS_SIGNAL, file=sys.stderr, all_threads=True)


def _pin() -> None:
    """Under the scenario's ``cpu.pin``: this process, and every thread its runtime starts, on the
    CPUs bench chose (before any runtime is loaded, so its thread pools see only those)."""
    from harness.api import pinned_cpus

    cpus = pinned_cpus()
    if cpus:
        os.sched_setaffinity(0, cpus)


def main() -> int:
    joined = join_cell_cgroup()  # first: all the worker allocates and starts belongs to the cell's cgroup
    from harness.errors import SkipCell

    _die_with_parent()
    # CUDA numbers GPUs fastest first unless told otherwise; NVML and nvidia-smi by PCI bus. Set, not
    # defaulted: under another order cuda:N would be another GPU than the one NVML reads and bench checks
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    _pin()
    set_child_subreaper(True)  # what the runtime starts and orphans stays in this worker's tree
    _report_stacks_to_log()
    fd = int(os.environ[RESULT_FD_ENV])
    channel = Channel(os.fdopen(fd, "w", encoding="utf-8"))
    channel.send({"event": "contained", "cgroup": joined})
    job = job_from_json(sys.stdin.read())
    started = time.time()
    context: dict[str, Any] = {}
    try:
        if isinstance(job, ReferenceJob):
            from harness.measure.fidelity import run_reference

            result = {"status": "ok", **run_reference(job, context)}
        else:
            result = run_job(job, channel, context)
    except SkipCell as exc:
        result = {"status": "skipped", "reason": exc.reason}
    except BaseException as exc:  # every failure becomes a recorded status, never a lost cell
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        sys.stderr.flush()
        first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
        result = {"status": classify_exception(exc), "reason": _with_hint(first, exc, context.get("model")),
                  "traceback_tail": tb[-4000:]}  # fmt: skip
    result["worker_s"] = time.time() - started
    channel.send({"event": "result", "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
