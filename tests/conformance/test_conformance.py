"""The conformance suite every registered backend passes, the third-party test plugin's included.

For each backend x precision x device it declares, on the models it is run with:
- an unavailable combination is a skip with a reason (from ``supports`` or ``SkipCell``), never a crash;
- outputs have the model's names and batch, are finite, and match the fp32 PyTorch eager reference
  within the tolerance of the precision;
- prepare is repeatable (a second prepare gives the same outputs) and ``run`` leaves them unchanged;
- the session says which precision executed;
- through the real worker, each backend's cell records memory, and a model that fails to build is
  a ``failed`` cell with the reason, the sweep going on.

Backends are discovered the way ``bench`` discovers them (entry points) plus the test plugin, so a
new backend is covered by registering it: nothing here names a backend except to add option
variants worth covering.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.api import Support
from harness.cells import Cell
from harness.errors import SkipCell
from harness.pluginmanager import registries

THIRDPARTY = Path(__file__).resolve().parents[1] / "thirdparty"
sys.path.insert(0, str(THIRDPARTY))
PLUGINS = ("bench_numpy_plugin", "conformance_plugin")
sys.path.insert(0, str(Path(__file__).resolve().parent))

REGS = registries(PLUGINS, autoload=True)

#: every backend's real runtime prepared (OpenVINO's int8 quantisation, torch.compile, ...): ~40 s in all
pytestmark = pytest.mark.slow

#: max abs error (relative where outputs exceed 1) and least cosine similarity vs the fp32 reference
TOLERANCE = {
    "fp32": (1e-4, 0.99999),
    "fp16": (2e-2, 0.999),
    "bf16": (5e-2, 0.995),
    "int8": (0.35, 0.95),
}
#: models each backend runs here: small, real, fast (text models have their own tests)
MODELS = ("dlrm-small", "squares")
BATCH = 3  # odd on purpose: no runtime may assume a power of two
#: option variants worth covering beyond a backend's defaults (expensive ones at fp32 only)
VARIANTS: dict[str, list[tuple[dict[str, Any], tuple[str, ...]]]] = {
    "pytorch": [({"mode": "compile"}, ("fp32",))],
    "onnxruntime": [({"quantization": "static"}, ("int8",))],
    "openvino": [({"quantization": "weights"}, ("int8",)), ({"hint": "throughput"}, ("fp32",))],
}


@dataclass(frozen=True)
class Case:
    backend: str
    model: str
    device: str
    precision: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.backend}{f'[{opts}]' if opts else ''}-{self.model}-{self.device}-{self.precision}"

    def cell(self, seed: int = 0) -> Cell:
        return Cell(self.model, self.backend, self.device, self.precision, BATCH, 2, dict(self.options), seed=seed)


def cases() -> list[Case]:
    found = []
    for backend in REGS.backends.names():
        cls = REGS.backends.get(backend)
        for model in MODELS:
            for device in cls.devices:
                for precision in cls.precisions:
                    found.append(Case(backend, model, device, precision))
                for options, precisions in VARIANTS.get(backend, []):
                    found.extend(Case(backend, model, device, p, options) for p in precisions if p in cls.precisions)
    return found


CASES = cases()


@pytest.fixture(scope="module")
def references() -> dict[tuple[str, int], dict[str, np.ndarray]]:
    return {}


def reference(model: Any, seed: int, cache: dict[tuple[str, int], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """fp32 PyTorch eager outputs of the model on the cell's inputs (computed once per model)."""
    key = (model.name, seed)
    if key not in cache:
        torch = pytest.importorskip("torch", reason="the reference is PyTorch eager fp32")
        module = model.build_torch().eval()
        inputs = model.example_inputs(BATCH, seed)
        with torch.inference_mode():
            out = module(*(torch.from_numpy(inputs[n]) for n in model.input_names))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        cache[key] = {name: o.float().numpy() for name, o in zip(model.output_names, outs, strict=True)}
    return cache[key]


@pytest.fixture
def prepared(tmp_path: Path) -> Iterator[Any]:
    """prepare(case) -> (model, session), or a skip with the reason; sessions closed at the end."""
    sessions = []

    def make(case: Case) -> tuple[Any, Any]:
        cell = case.cell()
        backend_cls = REGS.backends.get(case.backend)
        verdict = backend_cls.supports(cell)
        assert isinstance(verdict, Support)
        if not verdict.ok:
            assert verdict.reason.strip(), "an unsupported combination must say why"
            pytest.skip(f"unsupported here: {verdict.reason}")
        model = REGS.models.get(case.model)()
        try:
            session = backend_cls().prepare(model, cell, tmp_path / "work")
        except SkipCell as exc:
            assert str(exc).strip(), "SkipCell must carry a reason"
            pytest.skip(f"skipped at prepare: {exc}")
        sessions.append(session)
        return model, session

    yield make
    for session in sessions:
        session.close()


def compare(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error scaled by the reference's magnitude when above 1, cosine similarity)."""
    a = out.astype(np.float64).ravel()
    b = ref.astype(np.float64).ravel()
    max_abs = float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return max_abs, cosine


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_outputs_match_the_reference_within_the_precision(
    case: Case, prepared: Any, references: dict[tuple[str, int], dict[str, np.ndarray]]
) -> None:
    model, session = prepared(case)
    outputs = session.outputs()
    assert set(outputs) == set(model.output_names)
    ref = reference(model, 0, references)
    max_abs_limit, cosine_limit = TOLERANCE[case.precision]
    for name in model.output_names:
        out = np.asarray(outputs[name])
        assert out.shape == ref[name].shape, f"{name}: shape {out.shape}, reference {ref[name].shape}"
        assert np.isfinite(out).all()
        max_abs, cosine = compare(out, ref[name])
        assert max_abs <= max_abs_limit, f"{name}: max abs error {max_abs:.3g} > {max_abs_limit} ({case.precision})"
        assert cosine >= cosine_limit, f"{name}: cosine {cosine:.6f} < {cosine_limit} ({case.precision})"
    executed = session.info.get("executed_precision")
    assert executed, "a session must record the precision that actually executed"


@pytest.mark.parametrize("case", [c for c in CASES if c.model == "dlrm-small" and not c.options], ids=lambda c: c.id)
def test_prepare_is_repeatable_and_run_changes_nothing(case: Case, prepared: Any) -> None:
    _, first = prepared(case)
    before = first.outputs()
    for _ in range(3):
        first.run()
    again = first.outputs()
    _, second = prepared(case)
    other = second.outputs()
    for name, value in before.items():
        np.testing.assert_array_equal(again[name], value, err_msg="run() changed later outputs")
        # a second prepare of the same cell: same model, same inputs, same numbers (deterministic kernels
        # may still differ in the last bits between two compiled instances)
        np.testing.assert_allclose(other[name], value, rtol=1e-5, atol=1e-6, err_msg="prepare is not repeatable")


# --- through the real worker: memory recorded, failures reported, the sweep going on ----------------

SCENARIO = """\
name: conformance
model: {model}
backends: {backends}
precisions: [fp32]
batch_sizes: [2]
threads: 2
measurement: {{warmup_s: 0.05, warmup_queries: 2, min_duration_s: 0.1, max_duration_s: 0.2, min_queries: 20}}
limits: {{timeout_s: 240}}
"""


def _run(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from harness.runner import RunOptions, run_scenario
    from harness.scenario import load_scenario_text

    # the workers import the test plugins by name, as they would an installed third-party plugin
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(THIRDPARTY), here, os.environ.get("PYTHONPATH", "")]))

    backends = [name for name in REGS.backends.names() if REGS.backends.get(name).availability().ok]
    text = SCENARIO.format(model=model, backends="[" + ", ".join(backends) + "]")
    scenario = load_scenario_text(text, source="<conformance>")
    run = run_scenario(scenario, RunOptions(out_root=tmp_path, plugins=PLUGINS, command="conformance"))
    records = list(run.records())
    assert {r["config"]["backend"] for r in records} == set(backends)
    return records


def test_every_backend_measures_in_the_worker_with_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for record in _run("dlrm-small", tmp_path, monkeypatch):
        if record["status"] == "skipped":
            assert record["reason"]
            continue
        assert record["status"] == "ok", f"{record['label']}: {record.get('reason')}"
        assert record["peak_rss_mb_measure"] > 0
        assert record["throughput_sps"] > 0


def test_a_model_that_fails_is_a_failed_cell_for_every_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for record in _run("conformance-broken", tmp_path, monkeypatch):
        assert record["status"] in ("failed", "skipped"), record["label"]
        assert "conformance-broken" in (record.get("reason") or "") or record["status"] == "skipped"


# --- replicas: what LoadGen cells with concurrency > 1 run side by side ------------------------------


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.model == "dlrm-small" and not c.options and c.precision == "fp32"],
    ids=lambda c: c.id,
)
def test_replicas_run_side_by_side_and_agree(case: Case, prepared: Any, tmp_path: Path) -> None:
    import threading

    backend_cls = REGS.backends.get(case.backend)
    if backend_cls.max_concurrency < 2:
        pytest.skip(f"{case.backend} serves one stream (max_concurrency {backend_cls.max_concurrency})")
    model, first = prepared(case)
    expected = first.outputs()
    replicas = [first]
    for _ in range(2):
        other = first.replica() or backend_cls().prepare(model, case.cell(), tmp_path / "work")
        assert other is not first, "a replica needs inputs of its own"
        replicas.append(other)
    errors: list[BaseException] = []

    def hammer(session: Any) -> None:
        try:
            for _ in range(20):
                session.run()
        except BaseException as exc:  # re-raised below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    for session in replicas:
        for name, value in session.outputs().items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)
    for session in replicas[1:]:
        session.close()


@pytest.mark.parametrize("case", [c for c in CASES if c.model == "dlrm-small" and not c.options], ids=lambda c: c.id)
def test_set_inputs_gives_what_a_session_prepared_on_those_inputs_gives(
    case: Case, prepared: Any, tmp_path: Path
) -> None:
    """The accuracy check rebinds the validation set into a prepared session: it must compute on them."""
    model, session = prepared(case)
    other = model.example_inputs(BATCH, seed=1)
    try:
        session.set_inputs(other)
    except NotImplementedError as exc:
        pytest.skip(f"{case.backend} cannot rebind inputs: {exc}")
    rebound = session.outputs()
    fresh = REGS.backends.get(case.backend)().prepare(model, case.cell(seed=1), tmp_path / "work")
    try:
        expected = fresh.outputs()
    finally:
        fresh.close()
    for name, value in expected.items():
        np.testing.assert_allclose(rebound[name], value, rtol=1e-5, atol=1e-6)
    assert not np.allclose(rebound[model.output_names[0]], prepared(case)[1].outputs()[model.output_names[0]]), (
        "seed 1's inputs gave seed 0's outputs: the new values were not used"
    )
