"""GPU time per call: what CUDA events measured around each call's compute, beside the wall clock.

A GPU session (torch on CUDA, TensorRT, onnxruntime on CUDA) records two CUDA events on its stream around the work of
each :meth:`~harness.api.Session.run` and, once the call has synchronised, adds the events' elapsed
time (the GPU's compute time) and the host time its launches took (the enqueue time) to its
:class:`CallTimes`. The worker starts the recorder at the measured window and reads it at the end,
so only the window's calls count.

trtexec's method is the anchor: it reports GPU compute time, enqueue time and host latency, and
warns when the enqueue time exceeds 0.8 x the compute time (the host cannot launch work as fast as
the GPU finishes it: the GPU idles between kernels; CUDA graphs are the remedy) or when the compute
time's coefficient of variation exceeds 2.5 % (clocks that change, or other work on the GPU). Both
warnings become notes of the cell here, with the same limits.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where it is used: plugins get this class through harness.api
    import numpy as np

#: trtexec's limits: enqueue time over this share of the GPU compute time is "enqueue-bound"
ENQUEUE_BOUND = 0.8
#: trtexec's limits: a GPU compute time whose coefficient of variation is over this is unstable
COMPUTE_CV_LIMIT = 0.025
#: calls kept per window at most (two float64 each): beyond it the window's first calls stand for it
MAX_CALLS = 2_000_000


class CallTimes:
    """Per-call GPU compute and enqueue times (ns) of one session, recorded while a window is open.

    ``add`` is called from :meth:`Session.run` (under LoadGen possibly from several threads, one per
    replica, each with a recorder of its own); it costs a list append when recording and nothing
    otherwise."""

    def __init__(self, what: str) -> None:
        #: what the events bracket, for the record ("the module's forward", "execute_async_v3", ...)
        self.what = what
        self._compute: list[float] = []
        self._enqueue: list[float] = []
        self._lock = threading.Lock()
        self.recording = False

    def start(self) -> None:
        """Open a window: forget earlier calls, record the next ones."""
        with self._lock:
            self._compute, self._enqueue = [], []
            self.recording = True

    def add(self, compute_ns: float, enqueue_ns: float) -> None:
        if self.recording and len(self._compute) < MAX_CALLS:
            self._compute.append(compute_ns)
            self._enqueue.append(enqueue_ns)

    def stop(self) -> tuple[np.ndarray, np.ndarray]:
        """Close the window: the compute and enqueue times (ns) of its calls."""
        import numpy as np

        with self._lock:
            self.recording = False
            return np.asarray(self._compute, dtype=np.float64), np.asarray(self._enqueue, dtype=np.float64)


def summarize(compute_ns: np.ndarray, enqueue_ns: np.ndarray, wall_ns: Sequence[float] | np.ndarray | None,
              what: str) -> dict[str, Any]:  # fmt: skip
    """The record's GPU timing fields from one window's calls, with trtexec's two warnings."""
    import numpy as np

    compute = np.asarray(compute_ns, dtype=np.float64)
    enqueue = np.asarray(enqueue_ns, dtype=np.float64)
    if not compute.size:
        return {"gpu_timing_skipped": f"no call was timed with CUDA events ({what})"}
    mean = float(compute.mean())
    cv = float(compute.std(ddof=1) / mean) if compute.size > 1 and mean > 0 else None
    enqueue_mean = float(enqueue.mean()) if enqueue.size else None
    out: dict[str, Any] = {
        "gpu_timed_calls": int(compute.size),
        "gpu_timing_what": what,
        "gpu_compute_mean_ms": mean / 1e6,
        "gpu_compute_p50_ms": float(np.percentile(compute, 50)) / 1e6,
        "gpu_compute_p99_ms": float(np.percentile(compute, 99)) / 1e6,
        "gpu_compute_cv": cv,
        "enqueue_mean_ms": enqueue_mean / 1e6 if enqueue_mean is not None else None,
    }
    if wall_ns is not None and len(wall_ns):
        wall_p50 = float(np.percentile(np.asarray(wall_ns, dtype=np.float64), 50))
        out["gpu_compute_share"] = float(np.percentile(compute, 50)) / wall_p50 if wall_p50 > 0 else None
    out["gpu_timing_warnings"] = warnings(mean, enqueue_mean, cv)
    return out


def warnings(compute_mean_ns: float, enqueue_mean_ns: float | None, cv: float | None) -> list[str]:
    """trtexec's two warnings, as sentences that say what to do."""
    out = []
    if enqueue_mean_ns is not None and compute_mean_ns > 0 and enqueue_mean_ns > ENQUEUE_BOUND * compute_mean_ns:
        out.append(
            f"enqueue-bound: launching a call took {enqueue_mean_ns / 1e6:.3f} ms, over {ENQUEUE_BOUND:g} x its "
            f"GPU compute time ({compute_mean_ns / 1e6:.3f} ms): the GPU waits for the host; a larger batch or "
            "CUDA graphs (cuda_graph, or torch.compile mode reduce-overhead) would keep it busy"
        )
    if cv is not None and cv > COMPUTE_CV_LIMIT:
        out.append(
            f"unstable GPU compute time: coefficient of variation {cv:.1%}, over {COMPUTE_CV_LIMIT:.1%}: clocks "
            "that change (power or thermal limits, see gpu_clock_*), or other work on the GPU"
        )
    return out
