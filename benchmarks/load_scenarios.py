"""Load scenarios against the truth: queueing theory, a stall, LoadGen's own cost, OpenVINO offline.

    python benchmarks/load_scenarios.py [--duration S] [--skip-openvino]

1. M/D/1: the fake backend (a deterministic call of 1.0 ms, then 0.2 ms, one replica) under ``server``
   at 50 % load (500 and 2,500 q/s), three ways, alternating: LoadGen through the replica queue,
   LoadGen inline (the call on its issuing thread), and bench's own spinning generator inline
   (what bench does for one session at batch 1). Measured mean latency
   vs the M/D/1 value W = S + rho S / (2 (1 - rho)) (target within 5 %), and mean and p99 vs a
   simulation of the same queue on the very arrivals LoadGen scheduled (p99 target within 10 %): on
   the same arrivals, sampling noise cancels.
2. Coordinated omission: the same, with every 500th call stalled 50 ms. The queries queued behind a
   stall must carry it: as many of them wait long as in a simulation of the same arrivals and stalls.
3. LoadGen's own cost at a 0.5 ms service time: samples/s through LoadGen (offline and single-stream)
   / samples/s of a plain loop calling the same session (target >= 0.95); decides whether
   single_stream runs on LoadGen or on bench's own loop.
4. OpenVINO offline (dlrm-small, batch 64) with one and two infer requests vs the best single-stream
   throughput of OpenVINO at batch 64 (target >= 0.95).
5. A real runtime (onnxruntime, dlrm-small at batch 1) under server at about 50 % load, LoadGen inline
   and bench's generator: mean latency vs the M/G/1 value from the service times each test measured.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from harness.measure import loadgen
from harness.measure.loadgen import LoadSettings
from plugins.fake import FakeSession

MS = 1_000_000


def fake(service_ms: float, batch: int = 1, stall_every: int = 0, stall_ms: float = 0.0) -> FakeSession:
    return FakeSession(int(service_ms * MS), 0, batch, "none", 0, stall_every, int(stall_ms * MS))


def sojourn(arrivals: np.ndarray, service: float | np.ndarray) -> np.ndarray:
    """Time in system of each customer of a single-server FIFO queue (Lindley's recursion), arrivals
    sorted; ``service`` one time for all or one per customer in arrival order; any one unit."""
    services = np.broadcast_to(np.asarray(service, dtype=np.float64), arrivals.shape)
    gaps = np.diff(arrivals, prepend=arrivals[0])
    out = np.empty(arrivals.size)
    wait = 0.0  # the first customer finds the queue empty
    for i in range(arrivals.size):
        if i:
            wait = max(0.0, wait + services[i - 1] - gaps[i])
        out[i] = wait + services[i]
    return out


#: how each M/D/1 test is served: (label, inline, generator)
WAYS = (("LoadGen, queue ", False, "loadgen"), ("LoadGen, inline", True, "loadgen"), ("bench, inline  ", True, "bench"))


def md1_once(
    rate: float, service: float, duration: float, tmp: Path, inline: bool, generator: str = "auto"
) -> dict[str, float]:
    """One server test of the fake backend at ``service`` ms, against the same queue simulated on
    the very arrivals that were scheduled (sampling noise cancels: what is left is the harness's
    and the generator's own cost)."""
    settings = LoadSettings("server", duration, 100, target_qps=rate, latency_bound_ms=50, seed=1, generator=generator)
    name = f"md1-{service:g}-{'inline' if inline else 'queue'}-{generator}-{time.monotonic_ns()}"
    run = loadgen.run_test([fake(service)], 1, settings, tmp / name, inline=inline)
    lat = run.query_latency_ns / MS
    order = np.argsort(run.scheduled_ns)
    same = sojourn(run.scheduled_ns[order] / MS, service)
    return {
        "mean": float(lat.mean()), "p99": float(np.percentile(lat, 99)), "same_mean": float(same.mean()),
        "same_p99": float(np.percentile(same, 99)), "queries": float(lat.size),
        "own_p99_us": float(np.percentile(run.generator_delay, 99)) / 1e3,
        "valid": float(run.valid),
    }  # fmt: skip


def md1(duration: float, tmp: Path, rounds: int = 3) -> None:
    """M/D/1 at 50 % load for a 1.0 ms and a 0.2 ms call: LoadGen through the replica queue,
    LoadGen inline (the call on its issuing thread) and bench's own generator inline (what bench
    does for one session at batch 1), alternating, ``rounds`` tests each; medians printed."""
    print(f"1. M/D/1 at 50 % load, {duration:g} s tests, {rounds} rounds alternating the ways of serving; medians "
          "(targets: mean within 5 % of M/D/1, p99 within 10 % of the same arrivals simulated)")  # fmt: skip
    for service in (1.0, 0.2):
        rate = 500.0 / service
        rho = rate * service / 1000
        theory = service * (1 + rho / (2 * (1 - rho)))
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in WAYS}
        for _ in range(rounds):
            for label, inline, generator in WAYS:
                runs[label].append(md1_once(rate, service, duration, tmp, inline, generator))
        for label, done in runs.items():

            def med(key: str, done: list[dict[str, float]] = done) -> float:
                return statistics.median(r[key] for r in done)

            mean, p99, same_mean = med("mean"), med("p99"), med("same_mean")
            print(f"   {service:g} ms at {rate:g} q/s, {label}: mean {mean:.4f} ms vs M/D/1 {theory:.4f} ms "
                  f"{mean / theory - 1:+.1%}, vs same arrivals {mean / same_mean - 1:+.1%}; p99 {p99:.4f} ms vs same "
                  f"arrivals {med('same_p99'):.4f} ms {p99 / med('same_p99') - 1:+.1%}; generator's own lateness p99 "
                  f"{med('own_p99_us'):.0f} us; {med('queries'):.0f} queries, "
                  f"{sum(r['valid'] for r in done):.0f}/{len(done)} valid")  # fmt: skip


def stall(duration: float, tmp: Path) -> None:
    rate, stall_ms, every = 500.0, 50.0, 500
    settings = LoadSettings("server", duration, 100, target_qps=rate, latency_bound_ms=100, seed=1)
    run = loadgen.run_test([fake(1.0, stall_every=every, stall_ms=stall_ms)], 1, settings, tmp / "stall")
    order = np.argsort(run.scheduled_ns)
    lat = run.query_latency_ns[order] / MS
    # one replica, FIFO: the k-th query served is the k-th scheduled, and every 500th call stalls
    services = np.where((np.arange(lat.size) + 1) % every == 0, 1.0 + stall_ms, 1.0)
    same = sojourn(run.scheduled_ns[order] / MS, services)
    stalls = int((services > 1).sum())
    over, same_over = int((lat > stall_ms / 2).sum()), int((same > stall_ms / 2).sum())
    print(f"2. a {stall_ms:g} ms stall every {every} calls at {rate:g} q/s ({stalls} stalls): "
          f"{over} queries over {stall_ms / 2:g} ms (the same arrivals simulated: {same_over}), "
          f"{int((lat > 10).sum())} over 10 ms (simulated {int((same > 10).sum())}); max {lat.max():.1f} ms "
          f"(simulated {same.max():.1f}), p99 {np.percentile(lat, 99):.2f} ms (simulated "
          f"{np.percentile(same, 99):.2f})")  # fmt: skip


def plain_loop_sps(session: FakeSession, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        session.run()
        n += 1
    return n / (time.perf_counter() - t0)


def overhead(duration: float, tmp: Path, rounds: int = 3) -> None:
    service = 0.5
    ratios: dict[str, list[float]] = {"offline": [], "single_stream": []}
    for r in range(rounds):
        base = plain_loop_sps(fake(service), duration)
        off = LoadSettings("offline", duration, 1, expected_qps=base)
        run = loadgen.run_test([fake(service)], 1, off, tmp / f"off{r}")
        ratios["offline"].append((run.throughput_sps or 0) / base)
        single = LoadSettings("single_stream", duration, 100, latency_bound_ms=service)
        run = loadgen.run_test([fake(service)], 1, single, tmp / f"ss{r}")
        ratios["single_stream"].append((run.throughput_sps or 0) / base)
    print(f"3. LoadGen's cost at {service:g} ms service, samples/s with LoadGen / plain loop (median of {rounds}):")
    for name, values in ratios.items():
        print(f"   {name:13s} {statistics.median(values):.3f}  (rounds {', '.join(f'{v:.3f}' for v in values)}; "
              "target >= 0.95)")  # fmt: skip


def openvino_offline(duration: float, tmp: Path, rounds: int = 3) -> None:
    from harness.cells import Cell
    from harness.measure.single_stream import StopRule, run_window
    from plugins.models.dlrm import DLRMSmall
    from plugins.openvino_backend import OpenVinoBackend

    batch, threads = 64, 2
    model = DLRMSmall()
    rule = StopRule(0.5, 10, duration, duration, 1, 99.0, 0.95, None)
    single: dict[str, list[float]] = {}
    offline: dict[str, list[float]] = {}
    for _ in range(rounds):
        for hint in ("latency", "throughput"):
            cell = Cell("dlrm-small", "openvino", "cpu", "fp32", batch, threads, backend_options={"hint": hint})
            session = OpenVinoBackend().prepare(model, cell, tmp / "ov")
            window = run_window(session.run, rule)
            single.setdefault(hint, []).append(window.latencies_ns.size * batch / (window.wall_ns / 1e9))
            session.close()
            for requests in (1, 2):
                cell = Cell("dlrm-small", "openvino", "cpu", "fp32", batch, threads, load="offline",
                            backend_options={"hint": hint}, load_options={"concurrency": requests})  # fmt: skip
                first = OpenVinoBackend().prepare(model, cell, tmp / "ov")
                sessions = [first] + [first.replica() for _ in range(requests - 1)]
                warm = loadgen.warm_up(sessions, 0.5, 10)
                expected = loadgen.capacity_qps(warm, batch, requests, threads)
                settings = LoadSettings("offline", duration, 1, expected_qps=expected)
                run = loadgen.run_test(sessions, batch, settings, tmp / f"ov-{hint}-{requests}")
                offline.setdefault(f"{hint}, {requests} request(s)", []).append(run.throughput_sps or 0.0)
                for s in sessions:
                    s.close()
    best_single = max(statistics.median(v) for v in single.values())
    print(f"4. OpenVINO dlrm-small fp32 batch {batch}, {threads} threads, samples/s (median of {rounds} rounds):")
    for hint, values in single.items():
        print(f"   single-stream hint {hint:10s} {statistics.median(values):10,.0f}")
    for name, values in offline.items():
        value = statistics.median(values)
        print(f"   offline hint {name:24s} {value:10,.0f}  / best single-stream {value / best_single:.3f}")
    best_offline = max(statistics.median(v) for v in offline.values())
    print(f"   best offline / best single-stream: {best_offline / best_single:.3f} (target >= 0.95)")


def real_runtime(duration: float, tmp: Path, rounds: int = 3) -> None:
    """onnxruntime, dlrm-small at batch 1 on one thread, under server at about 50 % load, LoadGen
    inline and bench's generator alternating: the mean latency against the Pollaczek-Khinchine
    value of an M/G/1 queue with the service times that very test measured (issue to completion),
    W = E[S] + rate E[S^2] / (2 (1 - rate E[S]))."""
    from harness.cells import Cell
    from plugins.models.dlrm import DLRMSmall
    from plugins.onnxruntime_backend import OnnxRuntimeBackend

    cell = Cell("dlrm-small", "onnxruntime", "cpu", "fp32", 1, 1)
    session = OnnxRuntimeBackend().prepare(DLRMSmall(), cell, tmp / "ort")
    assert session is not None
    warm = loadgen.warm_up([session], 1.0, 100)
    service_ms = warm.median_call_ns / MS
    rate = 0.5 / (service_ms / 1000)
    out: dict[str, list[tuple[float, float, float]]] = {"loadgen": [], "bench": []}
    for r in range(rounds):
        for generator, done in out.items():
            settings = LoadSettings("server", duration, 100, target_qps=rate, latency_bound_ms=50, seed=r,
                                    generator=generator)  # fmt: skip
            run = loadgen.run_test([session], 1, settings, tmp / f"ort-{generator}-{r}", inline=True)
            lat = run.query_latency_ns / MS
            svc = (run.query_latency_ns - run.issue_delay_ns) / MS
            offered = lat.size / ((run.scheduled_ns.max() - run.scheduled_ns.min()) / 1e9) / 1000  # per ms
            rho = offered * svc.mean()
            pk = svc.mean() + offered * float(np.mean(svc**2)) / (2 * (1 - rho))
            done.append((float(lat.mean()), pk, rho))
    session.close()
    print(f"5. onnxruntime dlrm-small fp32 b1, 1 thread, median call {service_ms:.3f} ms, server at {rate:,.0f} q/s, "
          f"{duration:g} s tests, {rounds} rounds alternating (target: mean within 5 % of M/G/1):")  # fmt: skip
    for generator, runs in out.items():
        ratios = [m / pk - 1 for m, pk, _ in runs]
        load = statistics.median(r for _, _, r in runs)
        each = ", ".join(f"{x:+.1%}" for x in ratios)
        print(f"   {generator:7s} mean latency vs M/G/1 on its own service times: median "
              f"{statistics.median(ratios):+.1%} (rounds {each}; load {load:.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per LoadGen test (default 10)")
    parser.add_argument("--skip-openvino", action="store_true")
    args = parser.parse_args()
    loadgen.set_fine_timer_slack()
    with tempfile.TemporaryDirectory(prefix="bench-loads-") as folder:
        tmp = Path(folder)
        md1(args.duration, tmp)
        stall(args.duration, tmp)
        overhead(min(args.duration, 5.0), tmp)
        real_runtime(args.duration, tmp)
        if not args.skip_openvino:
            openvino_offline(min(args.duration, 5.0), tmp)


if __name__ == "__main__":
    main()
