"""harness.conformance, the suite shipped to plugin authors, fails the backends it must fail."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.api import Backend, Model, Session, Support
from harness.conformance import Case, Suite, conformance_tests
from harness.errors import PluginError
from harness.pluginmanager import Registries
from harness.registry import Registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "thirdparty"))
from bench_numpy_plugin import NumpyRefBackend, Squares

pytest.importorskip("torch", reason="the suite's reference is PyTorch eager")


class NumpySession(Session):
    """A plain session of ``squares`` that the faulty variants below break one way each."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x = x
        self.info = {"executed_precision": "fp32"}

    def run(self) -> None:
        (self.x * self.x).sum(axis=1)

    def outputs(self) -> dict[str, np.ndarray]:
        return {"y": (self.x * self.x).sum(axis=1, keepdims=True)}

    def set_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        self.x[...] = arrays["x"]

    def replica(self) -> NumpySession:
        return type(self)(self.x.copy())


def _suite(*backends: type[Backend], models: tuple[type[Model], ...] = (Squares,)) -> Suite:
    regs = Registries(backends=Registry("backend", Backend), models=Registry("model", Model))
    for cls in backends:
        regs.backends.register(cls, plugin="test")
    for cls in models:
        regs.models.register(cls, plugin="test")
    return Suite(regs)


def _backend(name: str, session: type[NumpySession], **attrs: object) -> type[Backend]:
    def prepare(self, model, cell, workdir):
        return session(model.example_inputs(cell.batch_size, cell.seed)["x"])

    return type(name, (NumpyRefBackend,), {"name": name, "prepare": prepare, **attrs})


def _check(suite: Suite, check: str, backend: str, tmp_path: Path) -> None:
    getattr(suite, check)(Case(backend, "squares", "cpu", "fp32"), tmp_path)


class OffByOnePercent(NumpySession):
    def outputs(self):
        return {"y": 1.01 * super().outputs()["y"]}


class SilentPrecision(NumpySession):
    def __init__(self, x):
        super().__init__(x)
        self.info = {}


class IgnoresNewInputs(NumpySession):
    def set_inputs(self, arrays):
        pass


class SharesItself(NumpySession):
    def replica(self):
        return self


class RunWrites(NumpySession):
    def run(self):
        self.x += 1.0


def test_the_example_plugin_passes_every_check(tmp_path: Path) -> None:
    suite = _suite(NumpyRefBackend, _backend("concurrent", NumpySession, max_concurrency=4))
    for check in ("outputs", "repeatable", "set_inputs"):
        _check(suite, check, "numpy-ref", tmp_path)
    _check(suite, "replicas", "concurrent", tmp_path)  # the example serves one stream; this one three


@pytest.mark.parametrize(
    ("session", "check", "message"),
    [
        (OffByOnePercent, "outputs", "max abs error"),
        (SilentPrecision, "outputs", "record the precision"),
        (IgnoresNewInputs, "set_inputs", "Not equal to tolerance"),
        (SharesItself, "replicas", "inputs of its own"),
        (RunWrites, "repeatable", "run() changed later outputs"),
    ],
)
def test_a_faulty_backend_fails_the_check(
    tmp_path: Path, session: type[NumpySession], check: str, message: str
) -> None:
    suite = _suite(_backend("faulty", session, max_concurrency=4))
    with pytest.raises(AssertionError, match=re.escape(message)):
        _check(suite, check, "faulty", tmp_path)


def test_an_unsupported_combination_skips_with_its_reason_and_must_have_one(tmp_path: Path) -> None:
    why = _backend("why", NumpySession, supports=classmethod(lambda cls, cell: Support.no("no such thing here")))
    mute = _backend("mute", NumpySession, supports=classmethod(lambda cls, cell: Support.no("")))
    suite = _suite(why, mute)
    with pytest.raises(pytest.skip.Exception, match="no such thing here"):
        _check(suite, "outputs", "why", tmp_path)
    with pytest.raises(AssertionError, match="must say why"):
        _check(suite, "outputs", "mute", tmp_path)


def test_a_single_stream_backend_skips_the_replicas_check(tmp_path: Path) -> None:
    suite = _suite(_backend("single", NumpySession, max_concurrency=1))
    with pytest.raises(pytest.skip.Exception, match="serves one stream"):
        _check(suite, "replicas", "single", tmp_path)


def test_cases_cover_every_device_and_precision_declared_and_names_are_checked() -> None:
    wide = _backend("wide", NumpySession, devices=("cpu", "cuda"), precisions=("fp32", "int8"))
    suite = _suite(wide)
    ids = [c.id for c in suite.cases(["wide"], ["squares"], {"wide": [({"k": 1}, ("int8", "bf16"))]})]
    assert ids == [
        "wide-squares-cpu-fp32", "wide-squares-cpu-int8", "wide[k=1]-squares-cpu-int8",
        "wide-squares-cuda-fp32", "wide-squares-cuda-int8", "wide[k=1]-squares-cuda-int8",
    ]  # fmt: skip
    assert suite.cases(["wide"], ["squares"], {"wide": [({"k": 1}, ("int8",))]})[2].cell().backend_options == {"k": 1}
    with pytest.raises(PluginError, match="unknown backend 'nope'"):
        suite.cases(["nope"], ["squares"], {})
    with pytest.raises(PluginError, match="unknown model 'nope'"):
        suite.cases(["wide"], ["nope"], {})
    with pytest.raises(ValueError, match="unknown checks"):
        conformance_tests(backend="wide", model="squares", checks=["speed"])


def test_reference_is_the_models_fp32_torch_output() -> None:
    suite = _suite(NumpyRefBackend)
    model = Squares()
    x = model.example_inputs(3, 0)["x"]
    np.testing.assert_allclose(suite.reference(model)["y"], (x * x).sum(axis=1, keepdims=True), rtol=1e-5)
