"""The queue that serves LoadGen's samples: batching, dynamic batching waits, replicas, failures."""

from __future__ import annotations

import threading
import time

import pytest

from harness.measure.sut import BatchingSUT


class Recorder:
    """A session that records each call and can be slowed or made to fail."""

    def __init__(self, sleep_s: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.sleep_s = sleep_s
        self.fail = fail
        self.threads: set[str] = set()

    def run(self) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail:
            raise RuntimeError("broken session")


def make(sessions, batch: int, wait_ns: int = 0):
    completed: list[list[int]] = []
    lock = threading.Lock()

    def complete(ids: list[int]) -> None:
        with lock:
            completed.append(list(ids))

    return BatchingSUT(sessions, batch, complete, max_wait_ns=wait_ns), completed


def test_queued_samples_are_served_in_batches_of_at_most_the_batch_size() -> None:
    session = Recorder()
    sut, completed = make([session], batch=4)
    sut.issue(list(range(10)))  # queued before any replica runs: batches fill
    sut.start()
    stats = sut.stop()
    assert [len(b) for b in completed] == [4, 4, 2]
    assert sorted(i for b in completed for i in b) == list(range(10))
    assert (stats.calls, stats.samples, stats.padded_samples) == (3, 10, 2)
    assert stats.mean_batch == pytest.approx(10 / 3)
    assert session.calls == 3


def test_every_sample_is_completed_exactly_once_across_replicas() -> None:
    sessions = [Recorder(sleep_s=0.0005) for _ in range(3)]
    sut, completed = make(sessions, batch=2)
    sut.start()
    for start in range(0, 600, 3):
        sut.issue([start, start + 1, start + 2])
    stats = sut.stop()
    served = [i for b in completed for i in b]
    assert sorted(served) == list(range(600))
    assert stats.samples == 600
    assert sum(s.calls for s in sessions) == stats.calls
    assert all(s.calls > 0 for s in sessions), "every replica served some calls"
    assert len({name for s in sessions for name in s.threads}) == 3, "one thread per replica"


def test_max_wait_lets_a_batch_fill_and_zero_does_not() -> None:
    for wait_ns, expected in ((50_000_000, [[1, 2]]), (0, [[1], [2]])):
        sut, completed = make([Recorder()], batch=2, wait_ns=wait_ns)
        sut.start()
        sut.issue([1])
        time.sleep(0.01)  # the second sample arrives 10 ms later, within the 50 ms wait
        sut.issue([2])
        sut.stop()
        assert completed == expected, f"max_wait_ns={wait_ns}"


def test_a_full_batch_does_not_wait() -> None:
    sut, completed = make([Recorder()], batch=2, wait_ns=5_000_000_000)
    sut.start()
    t0 = time.monotonic()
    sut.issue([1, 2])
    while not completed and time.monotonic() - t0 < 2:
        time.sleep(0.001)
    assert completed == [[1, 2]]
    assert time.monotonic() - t0 < 1.0
    sut.stop()


def test_a_failing_session_still_completes_its_samples_and_stop_raises() -> None:
    sut, completed = make([Recorder(fail=True)], batch=1)
    sut.start()
    sut.issue([1, 2, 3])
    with pytest.raises(RuntimeError, match="broken session"):
        sut.stop()
    assert sorted(i for b in completed for i in b) == [1, 2, 3], "the load generator must be able to finish"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sessions": [], "batch_size": 1}, "at least one session"), ({"batch_size": 0}, "batch_size"),
     ({"max_wait_ns": -1}, "max_wait_ns")],
)  # fmt: skip
def test_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"sessions": [Recorder()], "batch_size": 1, "complete": lambda ids: None, **kwargs}
    with pytest.raises(ValueError, match=message):
        BatchingSUT(**args)


def test_deferred_completion_completes_everything_off_the_replica_threads() -> None:
    seen: list[tuple[str, list[int]]] = []
    sut = BatchingSUT(
        [Recorder(), Recorder()],
        3,
        lambda ids: seen.append((threading.current_thread().name, list(ids))),
        defer_completion=True,
    )
    sut.start()
    sut.issue(list(range(100)))
    stats = sut.stop()
    assert sorted(i for _, ids in seen for i in ids) == list(range(100))
    assert {name for name, _ in seen} == {"bench-completer"}
    assert stats.samples == 100 and sut.first_arrival_ns is not None and sut.last_done_ns is not None
    assert sut.last_done_ns >= sut.first_arrival_ns


def test_inline_serving_runs_each_call_on_the_issuing_thread_at_once() -> None:
    session = Recorder()
    completed: list[list[int]] = []
    sut = BatchingSUT([session], 2, completed.append, inline=True)
    sut.start()  # starts no thread: the issuer serves
    sut.issue([0])
    assert completed == [[0]]  # done before issue returned
    sut.issue([1, 2, 3])
    assert completed == [[0], [1, 2], [3]]
    assert session.threads == {threading.current_thread().name}
    stats = sut.stop()
    assert (stats.calls, stats.samples, stats.padded_samples) == (3, 4, 2)
    assert sut.last_done_ns is not None and sut.first_arrival_ns is not None


def test_inline_serving_completes_after_a_failure_and_stop_reraises() -> None:
    completed: list[list[int]] = []
    session = Recorder(fail=True)
    sut = BatchingSUT([session], 1, completed.append, inline=True)
    sut.start()
    sut.issue([0])
    sut.issue([1])
    assert completed == [[0], [1]] and session.calls == 1  # the broken session is not called again
    with pytest.raises(RuntimeError, match="broken session"):
        sut.stop()


@pytest.mark.parametrize(
    "kwargs", [{"max_wait_ns": 1000}, {"defer_completion": True}], ids=["batching-wait", "deferred"]
)
def test_inline_serving_refuses_what_it_cannot_do(kwargs) -> None:
    with pytest.raises(ValueError, match="inline serving"):
        BatchingSUT([Recorder()], 1, lambda ids: None, inline=True, **kwargs)


def test_inline_serving_takes_one_session() -> None:
    with pytest.raises(ValueError, match="inline serving"):
        BatchingSUT([Recorder(), Recorder()], 1, lambda ids: None, inline=True)


def test_samples_issued_while_a_replica_is_going_to_sleep_wake_it() -> None:
    """The issuer notifies only a replica counted as asleep: one that looked at the empty queue and
    was not yet counted missed the samples issued in between, which then waited for the next issue
    (the last query of a test: until the cell's timeout)."""
    from collections import deque

    class Noop:
        def run(self) -> None:
            pass

    done: list[int] = []
    sut = BatchingSUT([Noop()], batch_size=4, complete=done.extend)  # a queue of its own: not served inline
    looked = threading.Event()

    class SlowLook(deque):  # the replica's look at the empty queue, slowed as a thread switch there would be
        def __len__(self) -> int:
            n = super().__len__()
            replica = threading.current_thread().name.startswith("bench-replica")
            if not n and replica and sut._cv._lock.locked() and not looked.is_set():  # its look under the lock
                looked.set()
                time.sleep(0.2)  # the samples are issued here
            return n

    sut._queue = SlowLook()
    sut.start()
    try:
        assert looked.wait(5)
        sut.issue([1, 2])
        deadline = time.monotonic() + 2
        while len(done) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(done) == [1, 2], done
    finally:
        sut.stop()
