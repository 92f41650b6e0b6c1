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

``inline``: one session, no batching wait. The call runs on the thread that issues the query, with
no queue and no replica thread: handing a query to a sleeping replica costs a thread wake-up (tens
to hundreds of microseconds on a virtual machine, more than a small model's call), which a server
test would count as latency. While the call runs the load generator cannot issue, so a query that
arrives meanwhile is issued when the call ends: it waits exactly as it would in the queue of one
busy server, and its latency (from its scheduled arrival) includes that wait.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from queue import SimpleQueue
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

    The hot path takes no lock: the queue is a deque (atomic appends and pops) and the issuing
    thread wakes a replica only when one is asleep.
    """

    def __init__(
        self,
        sessions: Sequence[Runnable],
        batch_size: int,
        complete: Callable[[list[int]], None],
        max_wait_ns: int = 0,
        clock: Callable[[], int] = perf_counter_ns,
        defer_completion: bool = False,
        inline: bool = False,
    ) -> None:
        if not sessions:
            raise ValueError("BatchingSUT needs at least one session")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_wait_ns < 0:
            raise ValueError(f"max_wait_ns must be >= 0, got {max_wait_ns}")
        if inline and (len(sessions) != 1 or max_wait_ns or defer_completion):
            raise ValueError("inline serving takes one session, no batching wait and no deferred completion")
        self._sessions = list(sessions)
        self._batch = batch_size
        self._complete = complete
        self._max_wait_ns = max_wait_ns
        self._clock = clock
        self._queue: deque[tuple[int, int]] = deque()  # (sample id, arrival ns)
        self._cv = threading.Condition(threading.Lock())
        self._asleep = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._stats = [BatchStats() for _ in self._sessions]
        #: first arrival and last completion (perf_counter ns): the span the samples were served in
        self.first_arrival_ns: int | None = None
        self.last_done_ns: int | None = None
        #: hand completions to a thread of their own, so a replica starts its next call at once
        #: (throughput runs: the completion's timestamp comes a thread hand-off later)
        self._completions: SimpleQueue[list[int] | None] | None = SimpleQueue() if defer_completion else None
        self._completer: threading.Thread | None = None
        self.inline = inline

    # -- LoadGen's side -------------------------------------------------------------------------

    def issue(self, sample_ids: Sequence[int]) -> None:
        """Queue samples (called on the load generator's thread; returns at once)."""
        now = self._clock()
        if self.first_arrival_ns is None:
            self.first_arrival_ns = now
        if self.inline:
            self._serve_now(sample_ids)
            return
        self._queue.extend(zip(sample_ids, repeat(now)))
        if self._asleep:
            with self._cv:
                self._cv.notify(len(sample_ids))

    def flush(self) -> None:
        """Nothing is held back beyond ``max_wait_ns``, so there is nothing to flush."""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.inline:
            return  # the issuing thread serves
        if self._completions is not None:
            self._completer = threading.Thread(target=self._complete_loop, name="bench-completer", daemon=True)
            self._completer.start()
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
        if self._completer is not None and self._completions is not None:
            self._completions.put(None)
            self._completer.join()
            self._completer = None
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

    def _pop(self, n: int) -> list[int]:
        ids = []
        popleft = self._queue.popleft
        try:
            for _ in range(n):
                ids.append(popleft()[0])
        except IndexError:  # another replica took the rest
            pass
        return ids

    def _take(self) -> list[int] | None:
        """Up to one batch of ids, waiting for samples (None: stopping and nothing queued)."""
        queue, batch = self._queue, self._batch
        if queue and (not self._max_wait_ns or len(queue) >= batch):
            return self._pop(batch)  # the hot path: no lock
        cv = self._cv
        with cv:
            # asleep before the queue is looked at: an issue landing between the look and the wait
            # then sees a sleeper and notifies (it waits for the lock, which the wait releases); counted
            # only after the look, its notify was skipped and the samples waited for the next issue
            self._asleep += 1
            try:
                while not queue:
                    if self._stopping:
                        return None
                    cv.wait()
            finally:
                self._asleep -= 1
            if self._max_wait_ns and len(queue) < batch:
                try:
                    deadline = queue[0][1] + self._max_wait_ns
                except IndexError:
                    return []
                self._asleep += 1  # asleep for the issuer: wake me when samples arrive
                try:
                    while len(queue) < batch and not self._stopping:
                        left = deadline - self._clock()
                        if left <= 0:
                            break
                        cv.wait(left / 1e9)
                finally:
                    self._asleep -= 1
        return self._pop(batch)

    def _serve(self, session: Runnable, stats: BatchStats) -> None:
        failed = False
        clock = self._clock
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
            if self._completions is not None:
                self._completions.put(ids)
            else:
                self._complete(ids)
                self.last_done_ns = clock()
            stats.calls += 1
            stats.samples += len(ids)
            stats.padded_samples += self._batch - len(ids)

    def _serve_now(self, sample_ids: Sequence[int]) -> None:
        """Inline serving: the call(s) for these samples on the calling thread, at once."""
        stats, batch, session = self._stats[0], self._batch, self._sessions[0]
        ids = list(sample_ids)
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            if not self._errors:
                try:
                    session.run()
                except BaseException as exc:  # recorded, re-raised by stop(); LoadGen must still finish
                    self._errors.append(exc)
            self._complete(chunk)
            self.last_done_ns = self._clock()
            stats.calls += 1
            stats.samples += len(chunk)
            stats.padded_samples += batch - len(chunk)

    def _complete_loop(self) -> None:
        assert self._completions is not None
        get, complete, clock = self._completions.get, self._complete, self._clock
        while (ids := get()) is not None:
            complete(ids)
            self.last_done_ns = clock()


def loadgen_completer(lg: Any) -> Callable[[list[int]], None]:
    """``complete(ids)`` for LoadGen: no response data (performance mode). Each thread reuses its
    own response objects (LoadGen copies them), a third of the cost of new ones per sample."""
    response = lg.QuerySampleResponse
    done = lg.QuerySamplesComplete
    local = threading.local()

    def complete(ids: list[int]) -> None:
        pool = getattr(local, "pool", None)
        if pool is None or len(pool) < len(ids):
            pool = local.pool = [response(0, 0, 0) for _ in range(max(len(ids), 64))]
        batch = pool[: len(ids)]
        for item, sample_id in zip(batch, ids):  # noqa: B905 - equal lengths by construction
            item.id = sample_id
        done(batch)

    return complete
