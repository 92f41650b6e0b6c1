"""The openvino backend, with real OpenVINO (and NNCF) on dlrm-small: verdicts, precisions, int8, caching, threads."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.api import CACHE_DIR_ENV, Model, Support
from harness.cells import Cell
from harness.errors import SkipCell
from plugins import openvino_backend
from plugins.models.dlrm import DLRMSmall
from plugins.openvino_backend import OpenVinoBackend, OpenVinoSession, cpu_flags

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'bench[openvino]')")
torch = pytest.importorskip("torch", reason="the reference outputs are PyTorch eager fp32 (pip install torch)")

ROOT = Path(__file__).resolve().parents[2]
NATIVE_BF16 = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
HAS_NNCF = OpenVinoBackend.supports(Cell("dlrm-small", "openvino", "cpu", "int8", 1, 1)).ok


def cell(precision: str = "fp32", batch_size: int = 4, threads: int = 2, **options: Any) -> Cell:
    return Cell("dlrm-small", "openvino", "cpu", precision, batch_size, threads, backend_options=options)


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One conversion cache for the module, as in a sweep: the ONNX export and the IR are made once."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_DIR_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def model() -> DLRMSmall:
    return DLRMSmall()


@pytest.fixture
def prepared(model: DLRMSmall, tmp_path: Path) -> Iterator[Any]:
    """prepare(cell) -> session, closing every session at the end of the test."""
    sessions: list[OpenVinoSession] = []

    def make(c: Cell, on: Model | None = None) -> OpenVinoSession:
        session = OpenVinoBackend().prepare(on or model, c, tmp_path)
        assert isinstance(session, OpenVinoSession)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()


def reference(model: DLRMSmall, batch_size: int) -> np.ndarray:
    module = model.build_torch()
    inputs = model.example_inputs(batch_size)
    with torch.inference_mode():
        return module(*(torch.from_numpy(inputs[n]) for n in model.input_names)).numpy()


def agreement(out: np.ndarray, ref: np.ndarray) -> float:
    return float(((out > 0.5) == (ref > 0.5)).mean())


# --- declarations and verdicts (no openvino import by the backend) -------------------------------


def test_declarations() -> None:
    assert OpenVinoBackend.name == "openvino"
    assert OpenVinoBackend.devices == ("cpu",)
    assert "Intel GPUs" in OpenVinoBackend.description
    assert OpenVinoBackend.precisions == ("fp32", "bf16", "fp16", "int8")
    assert {"hint", "streams", "requests", "quantization"} <= set(OpenVinoBackend.options)
    assert all(spec.help and "\n" not in spec.help for spec in OpenVinoBackend.option_specs().values())
    assert OpenVinoBackend.availability().ok


def test_registers_through_hook() -> None:
    registered: list[type] = []
    openvino_backend.bench_register_backends(register=registered.append)
    assert registered == [OpenVinoBackend]


def test_import_and_supports_do_not_import_openvino() -> None:
    code = (
        "import sys; from harness.cells import Cell; from plugins.openvino_backend import OpenVinoBackend as B; "
        "[B.supports(Cell('m', 'openvino', 'cpu', p, 1, 1, backend_options=o)) for p in B.precisions "
        "for o in ({}, {'quantization': 'weights'}, {'hint': 'throughput', 'streams': 'auto'})]; "
        "print(*(m in sys.modules for m in ('openvino', 'nncf', 'numpy', 'torch')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False"] * 4


def test_supports_defaults_and_options() -> None:
    assert OpenVinoBackend.supports(cell()) == Support.yes()
    assert OpenVinoBackend.supports(cell(hint="throughput", streams="auto", requests=4)).ok
    assert OpenVinoBackend.supports(cell(hint="latency", streams=1, shapes="dynamic")).ok
    if HAS_NNCF:
        assert OpenVinoBackend.supports(cell("int8", quantization="ptq", calibration_samples=64)).ok
        assert OpenVinoBackend.supports(cell("int8", quantization="weights")).ok


@pytest.mark.parametrize(
    ("options", "precision", "reason"),
    [
        ({"fuse": True}, "fp32", "no option fuse"),
        ({"hint": "fast"}, "fp32", "option hint must be one of latency, throughput, got 'fast'"),
        ({"streams": 0}, "fp32", "option streams must be auto or an integer >= 1, got 0"),
        ({"streams": "many"}, "fp32", "option streams must be auto or an integer >= 1, got 'many'"),
        ({"streams": True}, "fp32", "option streams must be auto or an integer >= 1, got True"),
        ({"requests": -1}, "fp32", "option requests must be an integer >= 1, got -1"),
        ({"shapes": "ragged"}, "fp32", "option shapes must be one of static, dynamic, got 'ragged'"),
        ({"quantization": "ptq"}, "fp32", "option quantization applies only with precision int8"),
        ({"quantization": "dynamic"}, "int8", "option quantization must be one of ptq, weights, got 'dynamic'"),
        ({"calibration_samples": 10}, "fp32", "calibration_samples applies only with precision int8"),
        ({"quantization": "weights", "calibration_samples": 10}, "int8", "and quantization=ptq"),
        ({"calibration_samples": 0}, "int8", "calibration_samples must be an integer >= 1, got 0"),
    ],
)
def test_supports_refuses_bad_options(options: dict[str, Any], precision: str, reason: str) -> None:
    verdict = OpenVinoBackend.supports(cell(precision, **options))
    assert not verdict.ok
    assert reason in verdict.reason


def test_supports_unknown_device_and_precision() -> None:
    assert "no device 'cuda'" in OpenVinoBackend.supports(Cell("dlrm-small", "openvino", "cuda", "fp32", 1, 1)).reason
    assert "no precision 'fp8'" in OpenVinoBackend.supports(cell("fp8")).reason


@pytest.mark.parametrize(
    ("precision", "flags", "ok"),
    [
        ("bf16", frozenset({"avx2"}), False),
        ("bf16", frozenset({"avx512_bf16"}), True),
        ("bf16", frozenset({"amx_bf16"}), True),
        ("fp16", frozenset({"avx512_bf16"}), False),
        ("fp16", frozenset({"avx512_fp16"}), True),
    ],
)
def test_supports_half_precisions_by_cpu_flag(
    monkeypatch: pytest.MonkeyPatch, precision: str, flags: frozenset[str], ok: bool
) -> None:
    monkeypatch.setattr(openvino_backend, "cpu_flags", lambda: flags)
    monkeypatch.setattr(openvino_backend.platform, "machine", lambda: "x86_64")
    verdict = OpenVinoBackend.supports(cell(precision))
    assert verdict.ok == ok
    if not ok:
        assert f"this CPU has no native {precision}" in verdict.reason and "silently run fp32" in verdict.reason


def test_prepare_refuses_what_supports_refuses(model: DLRMSmall, tmp_path: Path) -> None:
    with pytest.raises(SkipCell, match="option hint must be one of"):
        OpenVinoBackend().prepare(model, cell(hint="fast"), tmp_path)


def test_prepare_skips_a_precision_the_plugin_lacks(
    model: DLRMSmall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flags can claim fp16 (or a VM can hide it): the plugin's own OPTIMIZATION_CAPABILITIES decide."""
    if "FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("OpenVINO's CPU plugin runs fp16 natively here")
    monkeypatch.setattr(openvino_backend, "cpu_flags", lambda: frozenset({"avx512_fp16"}))
    with pytest.raises(SkipCell, match=r"no native fp16 here \(OPTIMIZATION_CAPABILITIES: .*FP32"):
        OpenVinoBackend().prepare(model, cell("fp16"), tmp_path)


# --- prepare / run / outputs ---------------------------------------------------------------------


def test_fp32_matches_torch_and_runs_fp32(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell(batch_size=8))
    out = session.outputs()
    assert list(out) == ["click_probability"]
    assert out["click_probability"].dtype == np.float32 and out["click_probability"].shape == (8, 1)
    np.testing.assert_allclose(out["click_probability"], reference(model, 8), rtol=0, atol=1e-5)
    info = session.info
    # On a CPU with native bf16 the plugin's default would be bf16: fp32 must be asked for, and run.
    assert info["compile_config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert info["inference_precision_hint"] == "f32"
    assert info["executed_precision"] == "fp32"
    assert set(info["compute_precisions"]) == {"fp32"} and info["compute_precisions"]["fp32"] >= 6
    assert "bf16" not in info["runtime_precisions"]
    assert info["openvino_version"] == ov.get_version()
    assert info["onnx_export_key"] and info["openvino_ir_key"]
    assert info["shapes"] == "static" and info["input_shapes"] == {"dense": ["8", "13"], "sparse": ["8", "26"]}
    assert (info["hint"], info["streams"], info["threads"], info["nireq"]) == ("latency", 1, 2, 1)


def test_run_uses_the_bound_tensors_and_equals_outputs(prepared: Any) -> None:
    session = prepared(cell(batch_size=3))
    request = session._request
    for name, array in session._arrays.items():
        assert np.shares_memory(request.get_tensor(name).data, array)  # bound once, zero copy
    first = session.outputs()["click_probability"]
    for _ in range(3):
        assert session.run() is None
    np.testing.assert_array_equal(request.get_tensor("click_probability").data, first)
    second = session.outputs()["click_probability"]
    np.testing.assert_array_equal(second, first)
    assert not np.shares_memory(first, second)
    assert not np.shares_memory(first, request.get_tensor("click_probability").data)


def test_dynamic_shapes_option(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell(batch_size=2, shapes="dynamic"))
    assert session.info["shapes"] == "dynamic" and session.info["input_shapes"]["dense"] == ["?", "13"]
    np.testing.assert_allclose(session.outputs()["click_probability"], reference(model, 2), rtol=0, atol=1e-5)


def test_hint_streams_threads_read_back(prepared: Any) -> None:
    one = prepared(cell(batch_size=1, threads=1, streams=1)).info
    assert (one["threads"], one["streams"], one["hint"]) == (1, 1, "latency")
    assert one["compile_config"]["INFERENCE_NUM_THREADS"] == "1"
    tput = prepared(cell(batch_size=1, threads=2, hint="throughput")).info
    assert tput["hint"] == "throughput" and tput["threads"] == 2
    assert 1 <= tput["streams"] <= 2 and tput["optimal_nireq"] >= tput["streams"]
    assert tput["nireq"] == 1  # the single-stream load runs one request whatever the hint would like
    capped = prepared(cell(batch_size=1, threads=2, hint="throughput", requests=1)).info
    assert capped["hint_num_requests"] == 1 and capped["streams"] == 1


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (avx512_bf16/amx_bf16)")
def test_bf16_runs_bf16(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell("bf16", batch_size=64))
    out = session.outputs()["click_probability"]
    ref = reference(model, 64)
    error = float(np.abs(out - ref).max())
    assert 0 < error < 5e-2  # bf16 keeps 8 bits of mantissa: not exact, but close
    assert agreement(out, ref) >= 0.98
    info = session.info
    assert info["inference_precision_hint"] == "bf16"
    assert info["executed_precision"] == "bf16" and set(info["compute_precisions"]) == {"bf16"}


class SumOfSquares(Model):
    """y = sum(x**2): no matmul, only elementwise and a reduction, which OpenVINO keeps in f32 under a bf16 hint."""

    name = "sum-of-squares"
    input_names = ("x",)
    output_names = ("y",)

    def build_torch(self) -> Any:
        class Module(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return (x * x).sum(dim=1, keepdim=True)

        return Module().eval()

    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
        return {"x": np.random.default_rng(seed).standard_normal((batch_size, 64), dtype=np.float32)}


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (avx512_bf16/amx_bf16)")
def test_a_bf16_hint_that_ran_fp32_says_fp32(prepared: Any) -> None:
    session = prepared(cell("bf16", batch_size=3), on=SumOfSquares())
    assert session.info["inference_precision_hint"] == "bf16"  # asked for and accepted ...
    assert session.info["runtime_precisions"] == {"f32": 2}  # ... but both ops ran f32
    assert session.info["executed_precision"] == "fp32"


@pytest.mark.skipif(not HAS_NNCF, reason="nncf is not installed (pip install 'bench[openvino]')")
def test_int8_ptq_runs_int8_and_agrees(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell("int8", batch_size=256))
    info = session.info
    assert info["compute_precisions"].get("int8", 0) >= 6  # the six Linear layers run int8 kernels
    assert info["executed_precision"].startswith("int8")
    assert info["inference_precision_hint"] == "f32"  # what is not quantised runs fp32, not bf16
    assert "nncf.quantize" in info["quantization"] and "300 calibration samples" in info["quantization"]
    assert "/MatMul" in info["quantization"]  # the pairwise-dot interaction stays float
    out = session.outputs()["click_probability"]
    ref = reference(model, 256)
    assert agreement(out, ref) >= 0.9
    assert 0 < np.abs(out - ref).max() < 0.35


@pytest.mark.skipif(not HAS_NNCF, reason="nncf is not installed (pip install 'bench[openvino]')")
def test_int8_weight_only(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell("int8", batch_size=64, quantization="weights"))
    info = session.info
    assert info["executed_precision"] == "fp32 (int8 weights)"
    assert info["int8_weight_compute_ops"] >= 5 and set(info["compute_precisions"]) == {"fp32"}
    assert "compress_weights" in info["quantization"] and info["int8_weights_key"]
    out = session.outputs()["click_probability"]
    ref = reference(model, 64)
    assert 0 < np.abs(out - ref).max() < 0.05 and agreement(out, ref) >= 0.98


@pytest.mark.skipif(not HAS_NNCF, reason="nncf is not installed (pip install 'bench[openvino]')")
def test_conversions_are_cached(model: DLRMSmall, prepared: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import nncf

    c = cell("int8", batch_size=2, calibration_samples=32)  # a key of its own: quantised here first
    first = prepared(c).info
    assert first["int8_ptq_cached"] is False and first["int8_ptq_s"] > 0

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("quantised again although the int8 IR is cached")

    monkeypatch.setattr(nncf, "quantize", refuse)
    second = prepared(cell("int8", batch_size=4, calibration_samples=32, hint="throughput")).info
    assert second["int8_ptq_cached"] is True and second["int8_ptq_s"] == 0.0
    assert second["int8_ptq_key"] == first["int8_ptq_key"]
    assert (second["onnx_export_cached"], second["openvino_ir_cached"]) == (True, True)


def test_no_cache_keeps_conversions_in_the_workdir(
    model: DLRMSmall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV)
    session = OpenVinoBackend().prepare(model, cell(batch_size=1), tmp_path / "work")
    try:
        assert (tmp_path / "work" / "openvino" / session.info["openvino_ir_key"] / "model.xml").is_file()
    finally:
        session.close()
