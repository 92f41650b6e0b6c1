"""Load scenarios on MLPerf LoadGen: offline, server (Poisson arrivals) and multi-stream.

LoadGen (``mlcommons-loadgen``, imported in the worker only) schedules the queries and judges the
run; :class:`~harness.measure.sut.BatchingSUT` serves them. Per-sample times come from LoadGen's
own trace: for every sample the delay from its *scheduled* arrival to its issue (``issue_start_ns``,
how late the generator was) and to its completion (``complete_ns``, the latency). Latency is
therefore measured from the schedule, queueing included: a slow system cannot hide its backlog
(no coordinated omission). A query's latency is that of its last sample.

LoadGen's summary and detail logs are kept per cell; the trace (about 300 bytes per sample) is
read and deleted, its per-query numbers kept as ``.npy`` files next to the single-stream ones.

A server test served inline (one session at batch 1, no batching wait) is issued by bench's own
generator instead (:mod:`harness.measure.open_loop`): LoadGen's scheduler sleeps until each
arrival and wakes tens of microseconds late on a virtual machine, which a small model's latency
would carry. ``loadgen.generator: loadgen`` keeps LoadGen's scheduler there too.

Peak search (server, ``target_qps: peak``): a bisection on the offered rate with short LoadGen
runs, each judged by LoadGen's latency constraint (the percentile under the bound), then one full
run at the highest passing rate. Every trial is a point of the latency-throughput curve.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.measure.sut import BatchingSUT, BatchStats, Runnable, loadgen_completer

#: the load scenarios LoadGen runs for bench (single_stream stays on bench's own timed loop)
LOADGEN_SCENARIOS = ("offline", "server", "multi_stream")
#: who issues a server test's queries (``loadgen.generator``)
GENERATORS = ("auto", "loadgen", "bench")
_NS = 1_000_000_000
_PR_SET_TIMERSLACK = 29
_SAMPLE_RE = re.compile(
    rb'"ts":([0-9.]+),"args":\{"sample_seq":\d+,"query_seq":(\d+),"sample_idx":\d+,'
    rb'"issue_start_ns":(\d+),"complete_ns":(\d+)'
)
_ESTIMATE_RE = re.compile(r"estimate:\s*([0-9]+)")


@dataclass(frozen=True)
class LoadSettings:
    """One LoadGen test: the scenario and LoadGen's TestSettings in bench's units."""

    scenario: str
    min_duration_s: float
    min_query_count: int
    max_duration_s: float | None = None
    target_qps: float | None = None  # server: Poisson arrival rate, queries/s
    latency_bound_ms: float | None = None  # server: the bound; multi_stream: expected latency
    latency_percentile: float = 99.0
    samples_per_query: int = 8  # multi_stream
    expected_qps: float | None = None  # offline: sizes the one query (samples = qps x duration)
    seed: int = 0
    #: who issues server queries: "auto" (bench's spinning generator where served inline, else
    #: LoadGen), "loadgen" or "bench" (see harness.measure.open_loop)
    generator: str = "auto"

    def test_settings(self, lg: Any) -> Any:
        ts = lg.TestSettings()
        ts.mode = lg.TestMode.PerformanceOnly
        ts.min_duration_ms = int(self.min_duration_s * 1000)
        ts.min_query_count = int(self.min_query_count)
        if self.max_duration_s:
            ts.max_duration_ms = int(self.max_duration_s * 1000)
        ts.qsl_rng_seed = ts.sample_index_rng_seed = ts.schedule_rng_seed = int(self.seed)
        fraction = self.latency_percentile / 100.0
        if self.scenario == "offline":
            ts.scenario = lg.TestScenario.Offline
            ts.offline_expected_qps = float(self.expected_qps or 1.0)
        elif self.scenario == "server":
            ts.scenario = lg.TestScenario.Server
            ts.server_target_qps = float(self.target_qps or 1.0)
            ts.server_target_latency_ns = int((self.latency_bound_ms or 1e6) * 1e6)
            ts.server_target_latency_percentile = fraction
        elif self.scenario == "single_stream":  # for measuring LoadGen's own cost (benchmarks/)
            ts.scenario = lg.TestScenario.SingleStream
            ts.single_stream_target_latency_percentile = fraction
            if self.latency_bound_ms:
                ts.single_stream_expected_latency_ns = int(self.latency_bound_ms * 1e6)
        elif self.scenario == "multi_stream":
            ts.scenario = lg.TestScenario.MultiStream
            ts.multi_stream_samples_per_query = int(self.samples_per_query)
            ts.multi_stream_target_latency_percentile = fraction
            if self.latency_bound_ms:
                ts.multi_stream_expected_latency_ns = int(self.latency_bound_ms * 1e6)
        else:
            raise ValueError(f"LoadGen has no scenario {self.scenario!r} here (known: {', '.join(LOADGEN_SCENARIOS)})")
        return ts


@dataclass
class LoadGenRun:
    """What one LoadGen test produced."""

    settings: LoadSettings
    query_latency_ns: np.ndarray  # per query, from its scheduled arrival to its last sample's completion
    issue_delay_ns: np.ndarray  # per query, from its scheduled arrival to its issue
    scheduled_ns: np.ndarray  # per query, its scheduled arrival from the test's start
    n_samples: int
    wall_ns: int  # first scheduled arrival to last completion
    loadgen: dict[str, Any]  # LoadGen's verdict and its own statistics (detail log)
    batches: BatchStats
    log_dir: Path
    serving: str = "queue"  # "inline": served on LoadGen's issuing thread (see BatchingSUT)
    generator_delay_ns: np.ndarray | None = None  # per query; None: the issue delay
    generator: str = "loadgen"  # who issued the queries and judged the test: "loadgen" or "bench"

    @property
    def generator_delay(self) -> np.ndarray:
        """How late LoadGen issued each query beyond what serving made it wait: from its scheduled
        arrival, or inline from the previous query's completion where that came later (the
        generator's own lateness; the rest of the issue delay is the query waiting for the server)."""
        return self.issue_delay_ns if self.generator_delay_ns is None else self.generator_delay_ns

    @property
    def throughput_sps(self) -> float | None:
        return self.n_samples * _NS / self.wall_ns if self.wall_ns > 0 else None

    @property
    def valid(self) -> bool:
        return self.loadgen.get("result_validity") == "VALID"

    @property
    def meets_bound(self) -> bool:
        """LoadGen's latency constraint (server: the percentile under the bound)."""
        return bool(self.loadgen.get("result_perf_constraints_met"))

    def point(self) -> dict[str, Any]:
        """One point of a latency-throughput curve."""
        lat = np.sort(self.query_latency_ns)
        pct = self.settings.latency_percentile

        def q(p: float) -> float | None:
            return nearest_rank(lat, p) / 1e6 if lat.size else None

        return {
            "target_qps": self.settings.target_qps,
            "completed_sps": self.throughput_sps,
            "p50_ms": q(50),
            f"p{pct:g}_ms": q(pct),
            "meets_bound": self.meets_bound,
            "valid": self.valid,
            "duration_s": self.wall_ns / _NS,
        }


def set_fine_timer_slack() -> None:
    """Ask for 1 ns timer slack on this thread (threads started later inherit it): the kernel's
    default 50 us would make LoadGen's scheduler sleep past each query's scheduled time."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        return


def read_trace(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(per-query latency ns, per-query issue delay ns, per-query scheduled arrival ns from the
    test's start, samples, wall ns) from LoadGen's trace."""
    ts_us: list[float] = []
    qseq: list[int] = []
    delay: list[int] = []
    done: list[int] = []
    with open(path, "rb") as fh:
        for line in fh:
            if b'"Sample"' not in line:
                continue
            match = _SAMPLE_RE.search(line)
            if match:
                ts_us.append(float(match.group(1)))
                qseq.append(int(match.group(2)))
                delay.append(int(match.group(3)))
                done.append(int(match.group(4)))
    if not qseq:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), 0, 0
    q = np.asarray(qseq, dtype=np.int64)
    lat = np.asarray(done, dtype=np.int64)
    iss = np.asarray(delay, dtype=np.int64)
    scheduled_ns = np.asarray(ts_us, dtype=np.float64) * 1e3  # the event's ts is the scheduled arrival
    wall = int((scheduled_ns + lat).max() - scheduled_ns.min())
    order = np.argsort(q, kind="stable")
    q, lat, iss, sched = q[order], lat[order], iss[order], scheduled_ns[order].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    per_query = (np.maximum.reduceat(lat, starts), np.maximum.reduceat(iss, starts), np.minimum.reduceat(sched, starts))
    return (*per_query, int(q.size), max(wall, 1))


def nearest_rank(ordered: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of sorted, non-empty values by nearest rank (LoadGen's way: no interpolation):
    the summary's own rule (:func:`harness.analysis.stats.nearest_rank`), whose rank survives the
    floating-point error of ``0.999 * n`` that a bare ceil turns into the next sample up."""
    from harness.analysis.stats import nearest_rank as summary_rank

    return summary_rank(ordered, percentile)


def own_lateness(latency_ns: np.ndarray, delay_ns: np.ndarray, scheduled_ns: np.ndarray) -> np.ndarray:
    """Per query (in schedule order), how late it was issued after ``max(its scheduled arrival, the
    previous query's completion)``: with inline serving the generator cannot issue while the
    previous call runs, so only the lateness beyond that is the generator's own."""
    if not latency_ns.size:
        return delay_ns
    issued = scheduled_ns + delay_ns
    previous_done = np.r_[np.iinfo(np.int64).min, (scheduled_ns + latency_ns)[:-1]]
    own: np.ndarray = np.maximum(0, issued - np.maximum(scheduled_ns, previous_done))
    return own


def read_detail(path: Path) -> dict[str, Any]:
    """LoadGen's verdict and statistics: the ``result_*`` and ``early_stopping_*`` keys of its
    detail log, plus the early-stopping estimate (ns) where it printed one."""
    out: dict[str, Any] = {}
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        key = entry.get("key", "")
        if key.startswith(("result_", "early_stopping", "effective_")) or key in ("num_errors", "loadgen_version"):
            out[key] = entry.get("value")
    text = str(out.get("early_stopping_result", ""))
    match = _ESTIMATE_RE.search(text)
    if match:
        out["early_stopping_estimate_ns"] = int(match.group(1))
    return out


def run_test(
    sessions: Sequence[Runnable],
    batch_size: int,
    settings: LoadSettings,
    log_dir: Path,
    max_wait_ns: int = 0,
    trace: bool | None = None,
    inline: bool | None = None,
) -> LoadGenRun:
    """Run one LoadGen test against ``sessions`` and read back what it measured.

    ``trace`` (default: all but offline) has LoadGen log every sample's times from its schedule;
    it costs about a microsecond of CPU per sample, which offline, whose one query is scheduled
    at the start, does not need: its span is taken from the queue's own clock, and completions
    are handed to a thread of their own so that no replica waits on LoadGen's bookkeeping.

    Server and multi-stream with one session at batch 1 and no batching wait are served inline,
    on LoadGen's issuing thread (no wake-up of a replica thread per query; see BatchingSUT): with
    one server and nothing to batch, the queue changes nothing but the hand-off's cost. ``inline``
    forces either way (benchmarks compare the two). A server test served inline is issued by
    bench's own generator unless ``settings.generator`` is ``loadgen`` (see open_loop)."""
    if trace is None:
        trace = settings.scenario != "offline"
    if inline is None:
        inline = serve_inline(settings.scenario, len(sessions), batch_size, max_wait_ns)
    if uses_bench_generator(settings, inline):
        from harness.measure import open_loop

        return open_loop.run_server(sessions[0], settings, log_dir)
    import mlperf_loadgen as lg

    log_dir.mkdir(parents=True, exist_ok=True)
    sut_impl = BatchingSUT(
        sessions, batch_size, loadgen_completer(lg), max_wait_ns=max_wait_ns, defer_completion=not trace,
        inline=inline,
    )  # fmt: skip

    def issue(ids: list[int], _indices: list[int]) -> None:
        sut_impl.issue(ids)

    n_qsl = 1024
    sut = lg.ConstructFastSUT(issue, sut_impl.flush)  # ids as plain ints, not QuerySample objects
    qsl = lg.ConstructQSL(n_qsl, n_qsl, lambda _indices: None, lambda _indices: None)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = trace
    sut_impl.start()
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings.test_settings(lg), log)
    finally:
        batches = sut_impl.stop()
        lg.DestroyQSL(qsl)
        lg.DestroyFastSUT(sut)
    (log_dir / "mlperf_log_accuracy.json").unlink(missing_ok=True)  # empty in performance mode
    detail = read_detail(log_dir / "mlperf_log_detail.txt")
    trace_file = log_dir / "mlperf_log_trace.json"
    if trace:
        latency, delay, scheduled, n_samples, wall = read_trace(trace_file)
    else:  # one query (offline): its latency is the span from its issue to its last sample
        first, last = sut_impl.first_arrival_ns, sut_impl.last_done_ns
        wall = (last - first) if first is not None and last is not None else 0
        latency = np.array([wall] if wall else [], dtype=np.int64)
        delay = scheduled = np.zeros(latency.size, dtype=np.int64)
        n_samples = batches.samples
    trace_file.unlink(missing_ok=True)  # large; what it held is kept as the .npy files
    own = own_lateness(latency, delay, scheduled) if inline else None
    return LoadGenRun(
        settings, latency, delay, scheduled, n_samples, max(wall, 1), detail, batches, log_dir,
        "inline" if inline else "queue", own,
    )  # fmt: skip


def uses_bench_generator(settings: LoadSettings, inline: bool) -> bool:
    """Whether bench's own generator issues this test: a server test served inline, unless
    ``generator: loadgen``; ``generator: bench`` where the test cannot be served inline is refused."""
    if settings.generator not in GENERATORS:
        raise ValueError(f"generator must be one of {', '.join(GENERATORS)}, got {settings.generator!r}")
    if settings.generator == "loadgen" or settings.scenario != "server":
        return False
    if not inline and settings.generator == "bench":
        raise ValueError(
            "generator: bench issues server queries to one session at batch 1 with no batching wait (served "
            "inline); this test has replicas, batches or a wait: use generator: auto or loadgen"
        )
    return inline


def serve_inline(scenario: str, sessions: int, batch_size: int, max_wait_ns: int) -> bool:
    """Whether a test is served on LoadGen's issuing thread: one server, nothing to batch."""
    return scenario in ("server", "multi_stream") and sessions == 1 and batch_size == 1 and not max_wait_ns


# --------------------------------------------------------------------------------------------
# warm-up and peak search
# --------------------------------------------------------------------------------------------


@dataclass
class WarmUp:
    cold_ns: int
    queries: int
    duration_ns: int
    median_call_ns: int


def warm_up(sessions: Sequence[Runnable], warmup_s: float, warmup_queries: int) -> WarmUp:
    """First call timed apart (cold), then every replica called in turn for the warm-up time."""
    clock = time.perf_counter_ns
    t0 = clock()
    sessions[0].run()
    cold = clock() - t0
    calls: list[int] = []
    start = clock()
    end = start + int(warmup_s * _NS)
    while len(calls) < max(warmup_queries, len(sessions)) or clock() < end:
        for session in sessions:
            t = clock()
            session.run()
            calls.append(clock() - t)
    return WarmUp(cold, len(calls), clock() - start, int(np.median(calls)))


@dataclass(frozen=True)
class PeakSearch:
    min_qps: float
    max_qps: float | None  # None: from the warm-up's service time
    precision: float  # stop when hi / lo <= 1 + precision
    trial_duration_s: float
    max_trials: int


@dataclass
class LoadOutcome:
    """The run whose numbers are the cell's, the curve of every LoadGen test, and the peak."""

    final: LoadGenRun
    curve: list[dict[str, Any]] = field(default_factory=list)
    peak_qps: float | None = None
    note: str = ""


def capacity_qps(warm: WarmUp, batch_size: int, replicas: int, threads: int) -> float:
    """Samples/s the replicas could serve at best: full batches back to back on as many replicas
    as the CPUs can run side by side (each uses ``threads``)."""
    from harness.environment import usable_cpus

    parallel = max(1, min(replicas, usable_cpus() // max(1, threads)))
    return parallel * batch_size * _NS / max(warm.median_call_ns, 1)


def peak_search(
    trial: Callable[[float, float], LoadGenRun],
    search: PeakSearch,
    upper_qps: float,
    full_duration_s: float,
    on_trial: Callable[[LoadGenRun], None] | None = None,
) -> LoadOutcome:
    """Bisect (geometrically) on the offered rate: ``trial(qps, duration_s)`` runs LoadGen; a rate
    passes when LoadGen's latency constraint holds. The peak is then measured in full."""
    runs: list[LoadGenRun] = []

    def run(qps: float, duration: float) -> LoadGenRun:
        result = trial(qps, duration)
        runs.append(result)
        if on_trial:
            on_trial(result)
        return result

    lo, hi = search.min_qps, search.max_qps or upper_qps
    hi = max(hi, lo)
    note = ""
    if run(hi, search.trial_duration_s).meets_bound:
        best = hi
        note = f"the highest rate tried ({hi:.4g} q/s) met the bound: the peak may be higher (raise max_qps)"
    elif not run(lo, search.trial_duration_s).meets_bound:
        final = runs[-1]
        return LoadOutcome(
            final, [r.point() for r in runs], None,
            f"even the lowest rate ({lo:.4g} q/s) broke the latency bound: no rate meets it",
        )  # fmt: skip
    else:
        best = lo
        while hi / lo > 1 + search.precision and len(runs) < search.max_trials:
            mid = math.sqrt(lo * hi)
            if run(mid, search.trial_duration_s).meets_bound:
                lo = best = mid
            else:
                hi = mid
    final = run(best, full_duration_s)
    backoffs = 0
    step = 1 - max(search.precision, 0.05)
    while not final.meets_bound and backoffs < 3:  # a short trial passed by luck at the edge: step down
        backoffs += 1
        best *= step
        final = run(best, full_duration_s)
    if backoffs:
        note = (note + "; " if note else "") + (
            f"the full-length run at the bisection's peak broke the bound: stepped down {backoffs} time(s)"
            + ("" if final.meets_bound else " and it still breaks it (noise at the edge)")
        )
    points = sorted((r.point() for r in runs), key=lambda p: p["target_qps"] or 0.0)
    return LoadOutcome(final, points, best, note)


def with_target(settings: LoadSettings, qps: float, duration_s: float, min_query_count: int) -> LoadSettings:
    return replace(settings, target_qps=qps, min_duration_s=duration_s, min_query_count=min_query_count)


def log_folder(cell_dir: Path, repeat: int, attempt: int) -> Path:
    """Where one measurement's LoadGen logs are kept: ``cells/<id>/loadgen/r<repeat>.a<attempt>``."""
    return cell_dir / "loadgen" / f"r{repeat}.a{attempt}"
