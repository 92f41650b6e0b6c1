"""The system under test that LoadGen drives: a query queue feeding replicas of a prepared session.

Samples arrive through :meth:`BatchingSUT.issue` (LoadGen's issue thread) into one FIFO queue. Each
replica (one :class:`~harness.api.Session`, its own inputs, on its own thread) takes up to
``batch_size`` queued samples, waiting at most ``max_wait_ns`` after the oldest one arrived for the
batch to fill (dynamic batching; 0 = take what is queued now), runs one call and completes the
samples. A batch smaller than the session's prepared batch still runs the whole prepared batch
(the inputs were bound once, as fixed-shape engines do): ``padded_samples`` counts the slack.

Nothing here times anything: LoadGen times each sample from its scheduled arrival to its
completion, so time spent in this queue is part of the latency.

Runtimes release the GIL while they compute, so replicas run in parallel. A replica whose call
raises keeps completing the samples it is handed (so LoadGen can finish) and the first error is
re-raised by :meth:`stop`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Protocol


class Runnable(Protocol):
    def run(self) -> None: ...


@dataclass
class BatchStats:
    """What the replicas did: calls made, samples served, and the padding of partial batches."""

    calls: int = 0
    samples: int = 0
    padded_samples: int = 0

    @property
    def mean_batch(self) -> float | None:
        return self.samples / self.calls if self.calls else None


class BatchingSUT:
    """A FIFO queue of samples served by one thread per session, with optional dynamic batching.

    ``complete(ids)`` is called from a replica thread with the ids of the samples one call served
    (LoadGen's ``QuerySamplesComplete`` in production, a recorder in tests).
    """

    def __init__(
        self,
        sessions: Sequence[Runnable],
        batch_size: int,
        complete: Callable[[list[int]], None],
        max_wait_ns: int = 0,
        clock: Callable[[], int] = perf_counter_ns,
    ) -> None:
        if not sessions:
            raise ValueError("BatchingSUT needs at least one session")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_wait_ns < 0:
            raise ValueError(f"max_wait_ns must be >= 0, got {max_wait_ns}")
        self._sessions = list(sessions)
        self._batch = batch_size
        self._complete = complete
        self._max_wait_ns = max_wait_ns
        self._clock = clock
        self._queue: deque[tuple[int, int]] = deque()  # (sample id, arrival ns)
        self._cv = threading.Condition(threading.Lock())
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._stats = [BatchStats() for _ in self._sessions]

    # -- LoadGen's side -------------------------------------------------------------------------

    def issue(self, sample_ids: Sequence[int]) -> None:
        """Queue samples (called on the load generator's thread; returns at once)."""
        now = self._clock()
        with self._cv:
            self._queue.extend((sample_id, now) for sample_id in sample_ids)
            self._cv.notify(len(sample_ids))

    def flush(self) -> None:
        """Nothing is held back beyond ``max_wait_ns``, so there is nothing to flush."""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for index, session in enumerate(self._sessions):
            thread = threading.Thread(
                target=self._serve, args=(session, self._stats[index]), name=f"bench-replica-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> BatchStats:
        """Serve what is queued, stop the replicas, re-raise the first error of a replica."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._errors:
            raise self._errors[0]
        return self.stats()

    def stats(self) -> BatchStats:
        total = BatchStats()
        for part in self._stats:
            total.calls += part.calls
            total.samples += part.samples
            total.padded_samples += part.padded_samples
        return total

    # -- a replica -------------------------------------------------------------------------------

    def _take(self) -> list[int] | None:
        """Block until samples are queued; return up to one batch of ids (None: stopped, empty)."""
        queue, cv, batch, clock = self._queue, self._cv, self._batch, self._clock
        with cv:
            while not queue:
                if self._stopping:
                    return None
                cv.wait()
            if self._max_wait_ns and len(queue) < batch:
                deadline = queue[0][1] + self._max_wait_ns
                while len(queue) < batch and not self._stopping:
                    left = deadline - clock()
                    if left <= 0:
                        break
                    cv.wait(left / 1e9)
                if not queue:  # another replica took them while this one waited
                    return []
            n = min(batch, len(queue))
            return [queue.popleft()[0] for _ in range(n)]

    def _serve(self, session: Runnable, stats: BatchStats) -> None:
        failed = False
        while True:
            ids = self._take()
            if ids is None:
                return
            if not ids:
                continue
            if not failed:
                try:
                    session.run()
                except BaseException as exc:  # recorded, re-raised by stop(); LoadGen must still finish
                    self._errors.append(exc)
                    failed = True
            stats.calls += 1
            stats.samples += len(ids)
            stats.padded_samples += self._batch - len(ids)
            self._complete(ids)


def loadgen_completer(lg: Any) -> Callable[[list[int]], None]:
    """``complete(ids)`` for LoadGen: no response data (performance mode)."""
    response = lg.QuerySampleResponse
    done = lg.QuerySamplesComplete

    def complete(ids: list[int]) -> None:
        done([response(sample_id, 0, 0) for sample_id in ids])

    return complete
