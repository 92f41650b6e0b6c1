"""The worker: runs one cell in its own process and reports one JSON result to its parent.

Started by the local executor as ``python -m harness.worker``; the job arrives as JSON on stdin,
events and the result leave as JSON lines on the file descriptor named by ``BENCH_RESULT_FD``.
Anything the runtime prints goes to stdout/stderr, which the parent keeps in the cell's log.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

RESULT_FD_ENV = "BENCH_RESULT_FD"
_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "std::bad_alloc")


class Channel:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def send(self, message: dict[str, Any]) -> None:
        self._stream.write(json.dumps(message, default=_jsonable) + "\n")
        self._stream.flush()


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()  # type: ignore[attr-defined]
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


def run_job(job: dict[str, Any], channel: Channel) -> dict[str, Any]:
    from harness import stats
    from harness.cells import Cell
    from harness.measure import noise
    from harness.measure.memory import PhasePeaks
    from harness.measure.single_stream import StopRule, run_window
    from harness.pluginmanager import registries

    cell = Cell.from_config(job["cell"])
    rule = StopRule(**job["rule"])
    workdir = Path(job["workdir"])
    cell_dir = Path(job["cell_dir"])
    workdir.mkdir(parents=True, exist_ok=True)
    cell_dir.mkdir(parents=True, exist_ok=True)

    peaks = PhasePeaks()
    peaks.start("load")
    channel.send({"event": "phase", "phase": "load"})
    regs = registries(job["plugins"], autoload=job["autoload"])
    model = regs.models.get(cell.model)(**cell.model_options)
    backend = regs.backends.get(cell.backend)()

    peaks.start("prepare")
    channel.send({"event": "phase", "phase": "prepare"})
    t0 = time.perf_counter()
    session = backend.prepare(model, cell, workdir)
    prepare_s = time.perf_counter() - t0

    marks: dict[str, Any] = {}

    def on_phase(phase: str) -> None:
        if phase != "warmup":  # the warm-up phase already holds the cold call
            peaks.start(phase)
        channel.send({"event": "phase", "phase": phase})
        if phase == "measure":
            marks["noise"] = noise.sample()

    peaks.start("warmup")
    channel.send({"event": "phase", "phase": "cold"})
    try:
        window = run_window(session.run, rule, on_phase)
        noise_end = noise.sample()
        peaks.stop()
        checked = _outputs_check(session.outputs())
    finally:
        session.close()

    wall_s = window.wall_ns / 1e9
    guard = noise.between(marks["noise"], noise_end, wall_s)
    n = int(window.latencies_ns.size)
    latency_file = cell_dir / f"latencies_ns.r{job['repeat']}.a{job.get('attempt', 0)}.npy"
    _write_npy_atomic(latency_file, window.latencies_ns)
    summary = stats.summarize(
        window.latencies_ns,
        percentiles=job["percentiles"],
        confidence=rule.confidence,
        headline=(rule.headline_percentile,),
    )
    noisy = guard.other_fraction is not None and guard.other_fraction > job["noise_threshold"]
    return {
        "status": "ok",
        "reason": "",
        "prepare_s": prepare_s,
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
        **{f"peak_rss_mb_{phase}": mb for phase, mb in peaks.peaks_mb.items()},
        "peak_rss_per_phase": peaks.resettable,
        "noise_other_cpu_s": guard.other_cpu_s,
        "noise_fraction": guard.other_fraction,
        "noisy": noisy,
        "latency_file": str(latency_file.relative_to(cell_dir.parent.parent)),
        "info": {**session.info, "model": model.params()},
        **checked,
    }


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


def main() -> int:
    from harness.errors import SkipCell

    _die_with_parent()
    fd = int(os.environ[RESULT_FD_ENV])
    channel = Channel(os.fdopen(fd, "w", encoding="utf-8"))
    job = json.loads(sys.stdin.read())
    started = time.time()
    try:
        result = run_job(job, channel)
    except SkipCell as exc:
        result = {"status": "skipped", "reason": exc.reason}
    except BaseException as exc:  # every failure becomes a recorded status, never a lost cell
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        sys.stderr.flush()
        first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
        result = {"status": classify_exception(exc), "reason": first, "traceback_tail": tb[-4000:]}
    result["worker_s"] = time.time() - started
    channel.send({"event": "result", "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
