"""The order and the threads in which a worker calls a backend's session, as docs/plugins.md states
them ("The life of a cell"): prepare and replica on the main thread; run() there for the cold call
and the warm-up, and on a thread per session under LoadGen; then outputs(), set_inputs() and
outputs() for the accuracy check, and close() of every session, on the main thread. What the session
reports in ``info`` is read before close()."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TINY_MODEL
from harness.cells import Cell
from harness.executors.worker import Channel, run_job
from harness.records import Job, StopRule

PLUGIN = (
    """
import threading

from harness.api import Backend, Model, Session, hookimpl

CALLS = []


def note(what, session=None):
    CALLS.append((what, threading.current_thread().name, None if session is None else session.index))


"""
    + TINY_MODEL.format(name="calls-tiny")
    + """

class RecordingSession(Session):
    made = 0

    def __init__(self, x):
        super().__init__()
        RecordingSession.made += 1
        self.index = RecordingSession.made
        self.x = x
        self.info = {"executed_precision": "fp32", "session": self.index}

    def run(self):
        note("run", self)

    def outputs(self):
        note("outputs", self)
        return {"y": self.x.sum(axis=1, keepdims=True)}

    def set_inputs(self, arrays):
        note("set_inputs", self)
        self.x[...] = arrays["x"]

    def replica(self):
        note("replica", self)
        return RecordingSession(self.x.copy())

    def close(self):
        note("close", self)
        self.info = None  # released on close, as sessions release their runtime's objects


class RecordingBackend(Backend):
    name = "calls"
    max_concurrency = 2

    def prepare(self, model, cell, workdir):
        note("prepare")
        return RecordingSession(model.example_inputs(cell.batch_size, cell.seed)["x"].copy())


@hookimpl
def bench_register_backends(register):
    register(RecordingBackend)


@hookimpl
def bench_register_models(register):
    register(Tiny)
"""
)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = "bench_calls_plugin"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("BENCH_PLUGINS", raising=False)
    sys.modules.pop(name, None)
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def _reference(tmp_path: Path, samples: int) -> dict[str, Any]:
    x = np.random.default_rng(7).standard_normal((samples, 3)).astype("float32")
    path = tmp_path / "reference.npz"
    np.savez(path, **{"input:x": x, "output:y": x.sum(axis=1, keepdims=True)})
    return {"path": str(path), "task": "other"}


def _job(tmp_path: Path, cell: Cell, loadgen: dict[str, Any] | None = None) -> Job:
    rule = StopRule(0.0, 2, 0.02, 0.05, 5, 50.0, 0.95, None)
    return Job(
        cell=cell.config(), repeat=0, attempt=0, rule=rule, percentiles=(50.0,), noise_threshold=1.0, quiet_wait_s=0.0,
        loadgen=loadgen, reference=_reference(tmp_path, 5), fidelity={}, timeout_s=60.0,
        plugins=("bench_calls_plugin",), autoload=False, workdir=str(tmp_path / "work"),
        cell_dir=str(tmp_path / "cells" / cell.id),
    )  # fmt: skip


def _squeezed(calls: list[tuple[str, str, int | None]]) -> list[tuple[str, str, int | None]]:
    """The calls with repeats in a row kept once."""
    return [call for i, call in enumerate(calls) if i == 0 or calls[i - 1] != call]


def _cell(**changes: Any) -> Cell:
    base: dict[str, Any] = {
        "model": "calls-tiny", "backend": "calls", "device": "cpu", "precision": "fp32", "batch_size": 2,
        "threads": 1,
    }  # fmt: skip
    return Cell(**{**base, **changes})


def test_single_stream_calls_everything_on_the_main_thread(tmp_path: Path, plugin: Any) -> None:
    result = run_job(_job(tmp_path, _cell()), Channel(open("/dev/null", "w")))  # noqa: SIM115 - closed with the process
    main = "MainThread"
    assert _squeezed(plugin.CALLS) == [
        ("prepare", main, None),
        ("run", main, 1),  # the cold call, the warm-up and the measured window
        ("outputs", main, 1),  # the outputs check
        # the accuracy check: 5 samples in batches of 2
        ("set_inputs", main, 1), ("outputs", main, 1),
        ("set_inputs", main, 1), ("outputs", main, 1),
        ("set_inputs", main, 1), ("outputs", main, 1),
        ("close", main, 1),
    ]  # fmt: skip
    assert result["cosine"] == pytest.approx(1.0)
    assert result["info"]["session"] == 1  # read before close()


def test_loadgen_runs_each_session_on_a_thread_of_its_own(tmp_path: Path, plugin: Any) -> None:
    pytest.importorskip("mlperf_loadgen")
    loadgen = {
        "min_duration_s": 0.05, "min_query_count": 1, "max_duration_s": 1.0, "latency_percentile": 99.0,
        "expected_qps": 500.0, "seed": 0,
    }  # fmt: skip
    cell = _cell(load="offline", load_options={"concurrency": 2})
    result = run_job(_job(tmp_path, cell, loadgen), Channel(open("/dev/null", "w")))  # noqa: SIM115
    calls = plugin.CALLS
    main = "MainThread"
    assert calls[:2] == [("prepare", main, None), ("replica", main, 1)]
    served = {(thread, index) for what, thread, index in calls if what == "run" and thread != main}
    # each session on its own thread (which of them serves the few samples here is up to the scheduler)
    assert served and served <= {("bench-replica-0", 1), ("bench-replica-1", 2)}
    warm = {index for what, thread, index in calls if what == "run" and thread == main}
    assert warm == {1, 2}  # the warm-up calls every session, on the main thread
    after = calls[max(i for i, call in enumerate(calls) if call[0] == "run") + 1 :]
    assert after[0] == ("outputs", main, 1)
    assert set(after[1:-2]) == {("set_inputs", main, 1), ("outputs", main, 1)}
    assert after[-2:] == [("close", main, 1), ("close", main, 2)]
    assert result["status"] == "ok" and result["info"]["session"] == 1
