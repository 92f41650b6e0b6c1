"""A deterministic fake backend and a tiny model, for testing the harness itself.

Not loaded automatically: ``bench -p plugins.fake ...`` or ``BENCH_PLUGINS=plugins.fake``. The
backend busy-waits a known service time per call, so the measurement engine can be checked against
the truth, and can be told to fail in each way the harness must survive.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from time import perf_counter_ns, sleep
from typing import Any, ClassVar

from harness.api import (
    Backend,
    CallTimes,
    Cell,
    Model,
    Option,
    RegisterBackend,
    RegisterModel,
    Session,
    SkipCell,
    cache_dir,
    hookimpl,
    pinned_cpus,
    wait_policy,
)

#: the tail of a simulated call that spins without yielding the GIL
_YIELD_UNTIL_NS = 200_000
FAULTS = ("none", "raise", "segfault", "abort", "hang", "exit", "alloc", "skip", "spawn")
#: set in the environment of every process the spawn fault starts, to the spawn_tag option
SPAWN_ENV = "BENCH_FAKE_SPAWNED"


class ToyModel(Model):
    """Two inputs, one output, numpy only: what the fake backend pretends to run."""

    name = "toy"
    description = "tiny numpy model for harness tests (x @ w + b)"
    input_names = ("x",)
    output_names = ("y",)

    def build_torch(self) -> Any:
        import torch

        torch.manual_seed(0)
        return torch.nn.Linear(4, 1).eval()

    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, Any]:
        import numpy as np

        return {"x": np.random.default_rng(seed).standard_normal((batch_size, 4), dtype=np.float32)}


def _busy_wait_ns(duration_ns: int) -> None:
    """Spin for ``duration_ns``. Until the last 200 us the spin lets other threads take the GIL
    between checks, as a runtime releases it while it computes (a load generator's thread must not
    wait behind a long call); the tail spins without yielding so the call ends on time."""
    clock = perf_counter_ns
    end = clock() + duration_ns
    while True:
        left = end - clock()
        if left <= 0:
            return
        if left > _YIELD_UNTIL_NS:
            sleep(0)


class FakeSession(Session):
    def __init__(
        self,
        service_ns: int,
        per_sample_ns: int,
        batch_size: int,
        fault: str,
        fault_after: int,
        stall_every: int = 0,
        stall_ns: int = 0,
    ) -> None:
        super().__init__()
        self._wait_ns = service_ns + per_sample_ns * batch_size
        self._fault = fault
        self._calls_left = fault_after
        self._batch = batch_size
        self._stall_every = stall_every
        self._stall_ns = stall_ns
        self._calls = 0
        self.info = {"executed_precision": "fp32", "service_ns": self._wait_ns}
        #: with the call_times option: each call's busy wait recorded as its "compute" time, beside a
        #: made-up enqueue time, as a GPU session records its CUDA events (tests of the worker's handling)
        self._times: CallTimes | None = None
        self._enqueue_ns = 0

    def keep_call_times(self, enqueue_ns: int) -> None:
        self._times = CallTimes("the fake call's busy wait")
        self._enqueue_ns = enqueue_ns

    def call_times(self) -> CallTimes | None:
        return self._times

    def run(self) -> None:
        if self._fault != "none":
            self._calls_left -= 1
            if self._calls_left < 0:
                _fail(self._fault)
        self._calls += 1
        t0 = perf_counter_ns()
        if self._stall_every and self._calls % self._stall_every == 0:
            _busy_wait_ns(self._wait_ns + self._stall_ns)
        else:
            _busy_wait_ns(self._wait_ns)
        if self._times is not None:
            self._times.add(perf_counter_ns() - t0, self._enqueue_ns)

    def replica(self) -> FakeSession:
        return FakeSession(
            self._wait_ns, 0, self._batch, self._fault, self._calls_left, self._stall_every, self._stall_ns
        )

    def outputs(self) -> dict[str, Any]:
        import numpy as np

        self.run()
        return {"y": np.zeros((self._batch, 1), dtype=np.float32)}


def _fail(fault: str) -> None:
    if fault == "raise":
        raise RuntimeError("injected failure in the fake backend")
    if fault == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if fault == "abort":
        os.kill(os.getpid(), signal.SIGABRT)
    if fault == "hang":
        while True:
            time.sleep(3600)
    if fault == "exit":
        os._exit(7)
    if fault == "skip":
        raise SkipCell("injected skip: the fake backend declined this cell")


class FakeBackend(Backend):
    name = "fake"
    description = "busy-waits a known time per call; injects faults on demand (harness tests)"
    devices = ("cpu",)
    precisions = ("fp32",)
    options: ClassVar[dict[str, Option]] = {
        "service_ms": Option("busy-wait per call, ms", type=float, minimum=0, default=1.0),
        "per_sample_us": Option(
            "extra busy-wait per sample of the batch, microseconds", type=float, minimum=0, default=0
        ),
        "fault": Option("how to fail", choices=FAULTS, default="none"),
        "fault_at": Option("when to fail", choices=("prepare", "run"), default="run"),
        "fault_after": Option("calls that succeed before the fault, when fault_at=run", type=int, minimum=0, default=0),
        "alloc_mb": Option(
            "with fault=alloc: MiB to allocate and touch in prepare, 16 MiB at a time",
            type=int,
            minimum=1,
            default=1024,
        ),
        "spawn_children": Option(
            "with fault=spawn: `sleep 300` children started in prepare, the first in a session of its own",
            type=int,
            minimum=0,
            default=2,
        ),
        "spawn_mb": Option(
            "with fault=spawn: MiB an orphaned grandchild allocates and touches, then holds while it "
            "sleeps; prepare goes on once it holds them or died",
            type=int,
            minimum=0,
            default=64,
        ),
        "spawn_tag": Option(
            f"with fault=spawn: value of {SPAWN_ENV} in every process it starts", type=(str, int, float), default=1
        ),
        "spawn_then": Option(
            "with fault=spawn: the fault to inject after spawning",
            choices=tuple(f for f in FAULTS if f != "spawn"),
            default="none",
        ),
        "stall_every": Option(
            "with stall_ms: every Nth call takes stall_ms longer (0: never)", type=int, minimum=0, default=0
        ),
        "stall_ms": Option("extra busy-wait of the stalled calls, ms", type=float, minimum=0, default=0),
        "call_times": Option(
            "keep each call's busy wait as a GPU session keeps its CUDA-event time (Session.call_times)",
            type=bool,
            default=False,
        ),
        "enqueue_us": Option(
            "with call_times: the enqueue time recorded per call, microseconds", type=float, minimum=0, default=0
        ),
    }
    max_concurrency = 16

    @classmethod
    def service_floor_ms(cls, cell: Cell) -> float | None:
        opts = cell.backend_options
        return float(opts.get("service_ms", 1.0)) + float(opts.get("per_sample_us", 0.0)) * cell.batch_size / 1000

    def prepare(self, model: Model, cell: Cell, workdir: Path) -> Session:
        opts = cell.backend_options
        fault = str(opts.get("fault", "none"))
        if fault not in FAULTS:
            raise ValueError(f"fake backend: unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        spawned = None
        if fault == "spawn":
            fault = str(opts.get("spawn_then", "none"))
            if fault not in FAULTS or fault == "spawn":
                raise ValueError(f"fake backend: unknown spawn_then {fault!r}")
            spawned = _spawn(
                int(opts.get("spawn_children", 2)), int(opts.get("spawn_mb", 64)), str(opts.get("spawn_tag", 1))
            )
        if fault == "alloc":
            _allocate(int(opts.get("alloc_mb", 1024)))
            fault = "none"
        elif opts.get("fault_at", "run") == "prepare" and fault != "none":
            _fail(fault)
        model.example_inputs(cell.batch_size, cell.seed)
        session = FakeSession(
            service_ns=int(float(opts.get("service_ms", 1.0)) * 1e6),
            per_sample_ns=int(float(opts.get("per_sample_us", 0.0)) * 1e3),
            batch_size=cell.batch_size,
            fault=fault,
            fault_after=int(opts.get("fault_after", 0)),
            stall_every=int(opts.get("stall_every", 0)),
            stall_ns=int(float(opts.get("stall_ms", 0.0)) * 1e6),
        )
        if opts.get("call_times", False):
            session.keep_call_times(int(float(opts.get("enqueue_us", 0.0)) * 1e3))
        cache = cache_dir("fake")  # what the harness handed this worker, for the tests of that hand-over
        session.info["cache_dir"] = str(cache) if cache else None
        # what the harness set up for this worker, for the tests of the scenario's cpu settings
        session.info["affinity"] = sorted(os.sched_getaffinity(0))
        session.info["pinned_cpus"] = list(pinned_cpus())
        session.info["wait_policy"] = wait_policy()
        session.info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
        if spawned is not None:  # the pids it started, for the tests that check they died with the cell
            session.info["spawned"] = spawned
        return session


_HELD: list[bytearray] = []


def _allocate(total_mb: int) -> None:
    chunk = 16 * 1024 * 1024
    for _ in range(max(1, total_mb // 16)):
        block = bytearray(chunk)
        block[::4096] = b"\x01" * len(block[::4096])  # touch every page so it is resident
        _HELD.append(block)
        time.sleep(0.005)  # let the parent's memory poll see the growth


#: the grandchild: allocate and touch ``argv[1]`` MiB, say so on stdout, then hold them
_HOLD_MEMORY = """
import os, sys, time
held = []
for _ in range(max(1, int(sys.argv[1]) // 16)):
    block = bytearray(16 << 20)
    block[::4096] = b"\\x01" * len(block[::4096])
    held.append(block)
    time.sleep(0.005)
print("ready", os.getpid(), flush=True)
time.sleep(300)
"""
#: the grandchild's parent starts it in a session of its own and exits at once: an orphan
_START_AND_LEAVE = (
    "import subprocess, sys; subprocess.Popen([sys.executable, '-c', *sys.argv[1:]], start_new_session=1)"
)
#: the children are never waited for, like a runtime's helpers; kept here so none is collected early
_SPAWNED: list[subprocess.Popen[bytes]] = []


def _spawn(children: int, grandchild_mb: int, tag: str) -> list[int]:
    """Start processes the way runtimes do and then forget them: plain and detached children, and an
    orphaned grandchild holding memory."""
    env = {**os.environ, SPAWN_ENV: tag}
    started = [
        subprocess.Popen(["sleep", "300"], env=env, stdin=subprocess.DEVNULL, start_new_session=index == 0)
        for index in range(children)
    ]
    _SPAWNED.extend(started)
    middle = subprocess.Popen(
        [sys.executable, "-c", _START_AND_LEAVE, _HOLD_MEMORY, str(grandchild_mb)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert middle.stdout is not None
    said = middle.stdout.readline().split()  # the grandchild holds its memory (or was killed: end of file)
    middle.stdout.close()
    middle.wait()
    return [child.pid for child in started] + [int(word) for word in said[1:]]


@hookimpl
def bench_register_backends(register: RegisterBackend) -> None:
    register(FakeBackend)


@hookimpl
def bench_register_models(register: RegisterModel) -> None:
    register(ToyModel)
