"""The onnxruntime backend, with real onnxruntime on dlrm-small: verdicts, fp32, int8 (dynamic and static),
caching, threads, I/O binding, unreadable files, fp16 conversion, CUDA skips."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import bf16_as_float
from harness.api import CACHE_DIR_ENV, CallTimes, Model, Support, onnx_model
from harness.cells import Cell
from harness.conformance import TOLERANCE, compare
from harness.errors import SkipCell
from harness.pluginmanager import registries
from plugins import onnxruntime_backend
from plugins.models.dlrm import DLRMSmall
from plugins.onnxruntime_backend import (
    CudaStream,
    ModelFileError,
    OnnxRuntimeBackend,
    OrtSession,
    fp16_converter,
    reduce_range_choice,
)

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'bench[onnxruntime]')")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'bench[onnxruntime]')")
torch = pytest.importorskip("torch", reason="the fp32 reference is PyTorch eager (pip install 'bench[torch]')")

ROOT = Path(__file__).resolve().parents[2]
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def cell(device: str = "cpu", precision: str = "fp32", batch_size: int = 4, threads: int = 2, **options: Any) -> Cell:
    return Cell("dlrm-small", "onnxruntime", device, precision, batch_size, threads, backend_options=options)


@pytest.fixture(scope="module")
def model() -> DLRMSmall:
    return DLRMSmall()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One results-root cache for the module: the model is exported (and quantised) once."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_DIR_ENV, str(root))
        yield root


@pytest.fixture
def prepared(model: DLRMSmall, shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """prepare(cell[, model]) -> session, closing every session at the end of the test."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(shared_cache))
    sessions: list[OrtSession] = []

    def make(c: Cell, m: Model | None = None) -> OrtSession:
        session = OnnxRuntimeBackend().prepare(m or model, c, tmp_path)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()


@pytest.fixture(scope="module")
def references(model: DLRMSmall) -> dict[int, np.ndarray]:
    """fp32 PyTorch eager outputs by batch size, on the example inputs of seed 0."""
    module = model.build_torch()
    found = {}
    for batch in (4, 32, 256):
        inputs = model.example_inputs(batch)
        with torch.inference_mode():
            found[batch] = module(*(torch.from_numpy(inputs[n]) for n in model.input_names)).numpy()
    return found


def op_counts(path: str | Path) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


# --- declarations and verdicts (no onnxruntime needed by the backend) -------------------------------


def test_declarations() -> None:
    assert OnnxRuntimeBackend.name == "onnxruntime"
    assert OnnxRuntimeBackend.devices == ("cpu", "cuda")
    assert OnnxRuntimeBackend.precisions == ("fp32", "fp16", "bf16", "int8")
    assert {"execution_mode", "inter_op_threads", "graph_optimization", "quantization", "provider"} <= set(
        OnnxRuntimeBackend.options
    )
    assert all(spec.help and "\n" not in spec.help for spec in OnnxRuntimeBackend.option_specs().values())
    assert OnnxRuntimeBackend.availability().ok


def test_registers_through_hook_and_plugin_manager() -> None:
    registered: list[type] = []
    onnxruntime_backend.bench_register_backends(register=registered.append)
    assert registered == [OnnxRuntimeBackend]
    regs = registries(["plugins.onnxruntime_backend"], autoload=False)
    assert regs.backends.get("onnxruntime") is OnnxRuntimeBackend


def test_import_and_supports_do_not_import_onnxruntime() -> None:
    code = (
        "import sys; from harness.cells import Cell; from plugins.onnxruntime_backend import OnnxRuntimeBackend as B; "
        "[B.supports(Cell('m', 'onnxruntime', d, p, 1, 1, backend_options=o)) for d in ('cpu', 'cuda:1') "
        "for p in B.precisions for o in ({}, {'quantization': 'static'}, {'provider': 'tensorrt'})]; "
        "print('onnxruntime' in sys.modules, 'onnx' in sys.modules, 'numpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False", "False"]


def test_supports_yes() -> None:
    assert OnnxRuntimeBackend.supports(cell()) == Support.yes()
    assert OnnxRuntimeBackend.supports(cell(precision="int8", quantization="static", calibration="percentile")).ok
    assert OnnxRuntimeBackend.supports(cell(precision="int8", quantization="static", calibration_samples=64)).ok
    assert OnnxRuntimeBackend.supports(cell(precision="int8", quantize_ops="Gemm, MatMul")).ok
    assert OnnxRuntimeBackend.supports(cell(execution_mode="parallel", inter_op_threads=2)).ok
    assert OnnxRuntimeBackend.supports(cell(graph_optimization="disable")).ok
    # a sweep over quantization keeps its fp32 cell once, under the default
    assert OnnxRuntimeBackend.supports(cell(quantization="dynamic")).ok
    # GPU presence and the installed build's providers are prepare's business
    assert OnnxRuntimeBackend.supports(cell(device="cuda", precision="fp16")).ok
    assert OnnxRuntimeBackend.supports(cell(device="cuda", precision="bf16")).ok
    assert OnnxRuntimeBackend.supports(cell(device="cuda", precision="bf16", provider="tensorrt")).ok
    assert OnnxRuntimeBackend.supports(cell(device="cuda:1", provider="tensorrt")).ok


def test_supports_tf32_on_fp32_cuda_cells_only() -> None:
    assert OnnxRuntimeBackend.supports(cell(device="cuda", tf32=True)).ok
    verdict = OnnxRuntimeBackend.supports(cell(device="cuda", precision="fp16", tf32=True))
    assert not verdict.ok and "option tf32 applies only with precision fp32" in verdict.reason


def test_supports_cpu_fp16_and_cuda_int8_no() -> None:
    verdict = OnnxRuntimeBackend.supports(cell(precision="fp16"))
    assert not verdict.ok and "fp16 on CPU" in verdict.reason and "casts to fp32" in verdict.reason
    verdict = OnnxRuntimeBackend.supports(cell(device="cuda", precision="int8"))
    assert not verdict.ok and "CUDA provider lacks" in verdict.reason
    verdict = OnnxRuntimeBackend.supports(cell(precision="bf16"))
    assert not verdict.ok and "bf16 on CPU" in verdict.reason and "CUDA and TensorRT providers" in verdict.reason


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"fuse": True}, "no option fuse"),
        ({"execution_mode": "fast"}, "execution_mode must be one of sequential, parallel, got 'fast'"),
        ({"graph_optimization": "max"}, "graph_optimization must be one of disable, basic, extended, all, got 'max'"),
        ({"inter_op_threads": 0}, "inter_op_threads must be an integer >= 1, got 0"),
        ({"inter_op_threads": "2"}, "inter_op_threads must be an integer >= 1, got '2'"),
        ({"inter_op_threads": True}, "inter_op_threads must be an integer >= 1, got True"),
        ({"provider": "cuda-graph"}, "provider must be one of default, tensorrt, got 'cuda-graph'"),
        ({"provider": "tensorrt"}, "provider=tensorrt applies only to CUDA devices"),
        ({"quantization": "static"}, "quantization=static applies only with precision int8 (this fp32 cell would"),
        ({"quantize_ops": "Gemm"}, "quantize_ops applies only with precision int8"),
        ({"calibration": "minmax"}, "calibration applies only with precision int8 and quantization=static"),
        ({"transfers": "include"}, "option transfers applies to cuda cells"),
        ({"transfers": "some"}, "transfers must be one of exclude, include, got 'some'"),
        ({"tf32": True}, "option tf32 applies to cuda cells"),
        ({"tf32": "yes"}, "tf32 must be true or false, got 'yes'"),
    ],
)
def test_supports_bad_options(options: dict[str, Any], expected: str) -> None:
    verdict = OnnxRuntimeBackend.supports(cell(**options))
    assert not verdict.ok and expected in verdict.reason


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"quantization": "awq"}, "quantization must be one of dynamic, static, got 'awq'"),
        ({"quantization": "static", "calibration": "entropy"}, "calibration must be one of minmax, percentile"),
        ({"quantization": "static", "calibration_samples": -1}, "calibration_samples must be an integer >= 1"),
        ({"calibration_samples": 64}, "applies only with precision int8 and quantization=static"),
        ({"quantize_ops": "Gemm;MatMul"}, "quantize_ops must be op types separated by commas"),
    ],
)
def test_supports_bad_int8_options(options: dict[str, Any], expected: str) -> None:
    verdict = OnnxRuntimeBackend.supports(cell(precision="int8", **options))
    assert not verdict.ok and expected in verdict.reason


def test_prepare_refuses_what_supports_refuses(model: DLRMSmall, tmp_path: Path) -> None:
    with pytest.raises(SkipCell, match="fp16 on CPU"):
        OnnxRuntimeBackend().prepare(model, cell(precision="fp16"), tmp_path)
    with pytest.raises(SkipCell, match="'fast'"):
        OnnxRuntimeBackend().prepare(model, cell(execution_mode="fast"), tmp_path)


# --- fp32, I/O binding, threads -----------------------------------------------------------------------


def test_fp32_matches_torch(prepared: Any, references: dict[int, np.ndarray]) -> None:
    session = prepared(cell(batch_size=32))
    out = session.outputs()
    assert list(out) == ["click_probability"]
    assert out["click_probability"].dtype == np.float32 and out["click_probability"].shape == (32, 1)
    np.testing.assert_allclose(out["click_probability"], references[32], rtol=0, atol=1e-5)
    info = session.info
    assert info["executed_precision"] == "fp32"
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["onnxruntime_version"] == ort.__version__
    assert info["onnx_export_key"] and isinstance(info["onnx_export_cached"], bool)
    assert info["graph_optimization"] == "all" and info["execution_mode"] == "sequential"
    assert info["intra_op_allow_spinning"] == "1" and "default" in info["intra_op_allow_spinning_note"]
    assert Path(info["model_file"]).is_file()


def test_run_writes_the_same_outputs_through_the_binding(prepared: Any) -> None:
    session = prepared(cell(batch_size=4))
    session.run()
    bound = session._binding.get_outputs()[0].numpy().copy()
    first = session.outputs()["click_probability"]
    second = session.outputs()["click_probability"]
    np.testing.assert_array_equal(bound, first)
    np.testing.assert_array_equal(first, second)
    assert not np.shares_memory(first, second)  # outputs() hands out copies, not the bound buffer
    for _ in range(3):
        session.run()
    np.testing.assert_array_equal(session._binding.get_outputs()[0].numpy(), first)


def test_outputs_follow_the_bound_input_buffers(model: DLRMSmall, prepared: Any) -> None:
    """The binding reads the input arrays in place on every call, and writes the same output buffer:
    nothing needs rebinding between calls."""
    session = prepared(cell(batch_size=4))
    before = session.outputs()["click_probability"]
    pointer = session._binding.get_outputs()[0].data_ptr()
    other = model.example_inputs(4, seed=1)
    for name, array in session._inputs.items():
        array[...] = other[name]
    after = session.outputs()["click_probability"]
    assert session._binding.get_outputs()[0].data_ptr() == pointer
    expected = ort.InferenceSession(session.info["model_file"], providers=["CPUExecutionProvider"]).run(None, other)[0]
    np.testing.assert_array_equal(after, expected)
    assert not np.allclose(after, before)


def test_threads_and_modes_recorded(prepared: Any, references: dict[int, np.ndarray]) -> None:
    session = prepared(cell(threads=1, execution_mode="parallel", inter_op_threads=2, graph_optimization="disable"))
    info = session.info
    assert info["threads"] == info["intra_op_threads"] == 1
    assert info["inter_op_threads"] == 2 and "inter_op_threads_note" not in info
    assert info["execution_mode"] == "parallel" and info["graph_optimization"] == "disable"
    np.testing.assert_allclose(session.outputs()["click_probability"], references[4], rtol=0, atol=1e-5)
    default = prepared(cell(threads=0))
    assert default.info["intra_op_threads"] == 0 and "default" in default.info["intra_op_threads_note"]
    assert default.info["inter_op_threads"] == 1 and "unused" in default.info["inter_op_threads_note"]


def test_input_dtype_mismatch_is_a_clear_error(model: DLRMSmall, prepared: Any, tmp_path: Path) -> None:
    exported = onnx_model(model, tmp_path).path

    class Int32Sparse(DLRMSmall):
        def onnx_file(self) -> Path:
            return exported

        def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
            inputs = super().example_inputs(batch_size, seed)
            return {**inputs, "sparse": inputs["sparse"].astype(np.int32)}

    with pytest.raises(ValueError, match=r"input 'sparse'.* int32, but the ONNX graph .*model\.onnx expects"):
        prepared(cell(), Int32Sparse())


# --- int8 ----------------------------------------------------------------------------------------------


def test_int8_dynamic(prepared: Any, references: dict[int, np.ndarray]) -> None:
    session = prepared(cell(precision="int8", batch_size=256))
    out = session.outputs()["click_probability"]
    ref = references[256]
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 0.15
    assert not np.array_equal(out, ref)
    assert ((out > 0.5) == (ref > 0.5)).mean() >= 0.95
    info = session.info
    assert info["executed_precision"] == "int8"
    assert info["quantization_method"] == "dynamic" and info["quantization_weight_type"] == "QInt8"
    ops = op_counts(info["model_file"])
    assert ops["MatMulInteger"] > 0 and ops["DynamicQuantizeLinear"] > 0
    assert info["quantized_ops"] == ops["MatMulInteger"] + ops["DynamicQuantizeLinear"]
    expected_rr, why = reduce_range_choice()
    assert info["quantization_reduce_range"] is expected_rr and info["quantization_reduce_range_reason"] == why


@pytest.mark.parametrize(
    ("flags", "reduce_range", "phrase"),
    [
        (frozenset({"avx2", "fma"}), True, "no VNNI"),
        (frozenset({"avx2", "avx_vnni"}), False, "avx_vnni"),
        (frozenset({"avx512f", "avx512_vnni"}), False, "avx512_vnni"),
        (frozenset({"amx_int8"}), False, "amx_int8"),
    ],
)
def test_reduce_range_follows_vnni(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], reduce_range: bool, phrase: str
) -> None:
    monkeypatch.setattr(onnxruntime_backend, "cpu_flags", lambda: flags)
    chosen, why = reduce_range_choice()
    assert chosen is reduce_range and phrase in why


def test_int8_static_qdq(prepared: Any, references: dict[int, np.ndarray]) -> None:
    session = prepared(cell(precision="int8", batch_size=256, quantization="static"))
    out = session.outputs()["click_probability"]
    ref = references[256]
    info = session.info
    ops = op_counts(info["model_file"])
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0  # QDQ format
    assert "MatMulInteger" not in ops
    assert info["executed_precision"] == "int8" and info["quantized_ops"] == ops["QuantizeLinear"]
    assert info["quantization_format"] == "QDQ" and info["quantization_calibration"] == "minmax"
    assert info["quantization_calibration_samples_used"] == 256 and info["quantization_calibration_batches"] == 8
    agreement = ((out > 0.5) == (ref > 0.5)).mean()
    assert agreement >= 0.9, f"static int8 agrees with fp32 on {agreement:.1%} of 256 samples"
    assert np.abs(out - ref).max() < 0.35


def test_int8_quantize_ops_limits_what_is_quantised(prepared: Any, references: dict[int, np.ndarray]) -> None:
    session = prepared(cell(precision="int8", batch_size=256, quantization="static", quantize_ops="Gemm"))
    out = session.outputs()["click_probability"]
    assert session.info["quantization_op_types"] == ("Gemm",)
    full = op_counts(prepared(cell(precision="int8", batch_size=4, quantization="static")).info["model_file"])
    assert 0 < session.info["quantized_ops"] < full["QuantizeLinear"]
    assert ((out > 0.5) == (references[256] > 0.5)).mean() >= 0.95


def test_conversions_are_cached(
    model: DLRMSmall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, references: dict[int, np.ndarray]
) -> None:
    import onnxruntime.quantization as quantization

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    first = OnnxRuntimeBackend().prepare(model, cell(precision="int8"), tmp_path / "work1")
    out = first.outputs()["click_probability"]
    first.close()
    assert (first.info["onnx_export_cached"], first.info["quantization_cached"]) == (False, False)
    assert (first.info["compile_cache_hits"], first.info["compile_cache_misses"]) == (0, 2)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("quantised again instead of using the cache")

    monkeypatch.setattr(quantization, "quantize_dynamic", refuse)
    second = OnnxRuntimeBackend().prepare(model, cell(precision="int8"), tmp_path / "work2")
    try:
        info = second.info
        assert (info["onnx_export_cached"], info["quantization_cached"]) == (True, True)
        assert info["quantization_s"] == 0.0 and info["quantization_key"] == first.info["quantization_key"]
        assert (info["compile_cache_hits"], info["compile_cache_misses"]) == (2, 0)
        assert info["quantization_preprocessed"] == first.info["quantization_preprocessed"]  # from the sidecar
        assert info["model_file"] == first.info["model_file"]
        np.testing.assert_array_equal(second.outputs()["click_probability"], out)
    finally:
        second.close()
    assert not (tmp_path / "work2" / "onnxruntime-int8").exists()


def test_int8_without_quantisable_ops_reports_fp32(prepared: Any) -> None:
    """A model with nothing quantize_dynamic takes: the cell says it computed in fp32."""

    class Squares(Model):
        name = "squares-onnx"
        input_names = ("x",)
        output_names = ("y",)

        def build_torch(self) -> Any:
            class SumOfSquares(torch.nn.Module):
                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    return (x * x).sum(dim=1, keepdim=True)

            return SumOfSquares().eval()

        def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
            return {"x": np.random.default_rng(seed).standard_normal((batch_size, 8)).astype(np.float32)}

    session = prepared(cell(precision="int8"), Squares())
    assert session.info["quantized_ops"] == 0
    assert session.info["executed_precision"] == "fp32"
    assert "no op to quantise" in session.info["executed_precision_note"]
    x = Squares().example_inputs(4)["x"]
    np.testing.assert_allclose(session.outputs()["y"], (x * x).sum(axis=1, keepdims=True), rtol=1e-5)


# --- unreadable model files ------------------------------------------------------------------------------


@pytest.fixture
def truncated_model(model: DLRMSmall, tmp_path: Path) -> Model:
    source = onnx_model(model, tmp_path / "export").path
    broken = tmp_path / "broken" / "truncated.onnx"
    broken.parent.mkdir()
    data = source.read_bytes()
    broken.write_bytes(data[: len(data) // 3])

    class Truncated(DLRMSmall):
        def onnx_file(self) -> Path:
            return broken

    return Truncated()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_truncated_onnx_file_is_a_clear_error(truncated_model: Model, tmp_path: Path, precision: str) -> None:
    with pytest.raises(ModelFileError) as caught:
        OnnxRuntimeBackend().prepare(truncated_model, cell(precision=precision), tmp_path / "work")
    message = str(caught.value)
    assert str(tmp_path / "broken" / "truncated.onnx") in message
    assert "truncated or corrupt" in message and "delete it" in message
    assert not isinstance(caught.value, SkipCell)  # broken everywhere: a failed cell, not a skip


# --- fp16 and CUDA ---------------------------------------------------------------------------------------


def test_fp16_conversion_runs_and_loads_on_cpu(
    model: DLRMSmall, tmp_path: Path, references: dict[int, np.ndarray]
) -> None:
    """The CUDA-only fp16 path, checked on CPU as far as it goes: the converted file, its fp16 weights,
    fp32 inputs/outputs, and its outputs (onnxruntime's CPU provider runs it, through casts)."""
    info: dict[str, Any] = {}
    conv = onnxruntime_backend._to_fp16(onnx_model(model, tmp_path), tmp_path, info)
    assert conv.path.is_file() and not conv.cached
    graph = onnx.load(str(conv.path)).graph
    assert info["fp16_initializers"] > 0 and info["fp32_initializers"] == 0
    assert info["executed_precision"] == "fp16" and info["fp16_converter"] == fp16_converter()[0]
    float32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in graph.input if i.name == "dense"] == [float32]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [float32]
    inputs = model.example_inputs(4)
    out = ort.InferenceSession(str(conv.path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    assert out.dtype == np.float32
    assert np.abs(out - references[4]).max() < 2e-2
    again = onnxruntime_backend._to_fp16(onnx_model(model, tmp_path), tmp_path, {})
    assert again.cached and again.path == conv.path


def test_bf16_is_the_tensorrt_backends_bf16_model_within_bf16_tolerance(
    model: DLRMSmall, tmp_path: Path, references: dict[int, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA provider's bf16 model is the one the tensorrt backend builds (plugins.bf16_onnx: one
    file for both, cached): bf16 weights, fp32 inputs and outputs. onnxruntime's CPU provider has no
    bf16 kernels, so its weights are checked as float here; on a GPU the conformance suite runs it.
    A GPU before Ampere is a skip with its compute capability (torch's answer, stood in for here)."""
    info: dict[str, Any] = {}
    conv = onnxruntime_backend._to_bf16(onnx_model(model, tmp_path), 0, tmp_path, info)
    graph = onnx.load(str(conv.path)).graph
    assert info["executed_precision"] == "bf16" and info["bf16_initializers"] == len(graph.initializer) > 0
    assert info["fp32_initializers"] == 0 and "bench's bf16 retyping" in info["bf16_converter"]
    float32 = onnx.TensorProto.FLOAT
    assert {o.type.tensor_type.elem_type for o in graph.output} == {float32}
    as_float = bf16_as_float(onnx.load(str(conv.path)))
    session = ort.InferenceSession(as_float.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, model.example_inputs(4))[0]
    max_abs, cosine = compare(out, references[4])
    assert max_abs <= TOLERANCE["bf16"][0] and cosine >= TOLERANCE["bf16"][1], (max_abs, cosine)
    trt = cell(device="cuda", precision="bf16", provider="tensorrt")
    trt_options = OnnxRuntimeBackend._providers(_GpuBuild, trt, 0, True, tmp_path, {})[0][1]
    assert trt_options["trt_bf16_enable"] is True and trt_options["trt_fp16_enable"] is False
    fp16 = cell(device="cuda", precision="fp16", provider="tensorrt")
    assert "trt_bf16_enable" not in OnnxRuntimeBackend._providers(_GpuBuild, fp16, 0, True, tmp_path, {})[0][1]

    class Older(_GpuBuild):
        __version__ = "1.22.0"

    with pytest.raises(SkipCell, match=r"onnxruntime 1\.22\.0's TensorRT provider has no bf16 option"):
        OnnxRuntimeBackend._providers(Older, trt, 0, True, tmp_path, {})
    torch = pytest.importorskip("torch", reason="the compute-capability skip asks torch")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Tesla T4")
    with pytest.raises(SkipCell, match=r"Tesla T4 \(compute capability 7\.5\) has no bf16 tensor cores"):
        onnxruntime_backend._to_bf16(onnx_model(model, tmp_path), 0, tmp_path, {})


@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime build has the CUDA provider")
@pytest.mark.parametrize(
    ("options", "missing"),
    [({}, "no CUDAExecutionProvider"), ({"provider": "tensorrt"}, "no TensorrtExecutionProvider")],
)
def test_cuda_without_provider_is_skipped(
    model: DLRMSmall, tmp_path: Path, options: dict[str, Any], missing: str
) -> None:
    with pytest.raises(SkipCell) as caught:
        OnnxRuntimeBackend().prepare(model, cell(device="cuda", **options), tmp_path)
    reason = caught.value.reason
    assert missing in reason and "CPUExecutionProvider" in reason and "onnxruntime-gpu" in reason
    assert not (tmp_path / "onnx").exists()  # skipped before exporting anything


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_EP, reason="this onnxruntime build has no CUDAExecutionProvider (onnxruntime-gpu)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_runs_on_the_gpu(prepared: Any, references: dict[int, np.ndarray], precision: str) -> None:
    try:
        session = prepared(cell(device="cuda", precision=precision, batch_size=32))
    except SkipCell as exc:
        pytest.skip(f"CUDA provider present but not usable here: {exc.reason}")
    assert session.info["providers"][0] == "CUDAExecutionProvider"
    session.run()
    out = session.outputs()["click_probability"]
    assert out.dtype == np.float32 and out.shape == (32, 1)
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    assert np.abs(out - references[32]).max() < tolerance
    assert session.info["executed_precision"] == precision
    assert session._binding.get_outputs()[0].device_name().lower() == "cuda"
    assert session.info["transfers"] == "exclude"
    assert session.info["node_providers"].get("CUDAExecutionProvider", 0) > 0
    # onnxruntime computes on bench's stream, so CUDA events bracket each call's compute
    assert session.info["providers"] and "gpu_timing_skipped" not in session.info
    timer = session.call_times()
    assert timer is not None
    timer.start()
    walls = []
    for _ in range(20):
        t0 = time.perf_counter_ns()
        session.run()
        walls.append(time.perf_counter_ns() - t0)
    compute, enqueue = timer.stop()
    assert compute.size == 20 and enqueue.size == 20
    assert (compute > 0).all() and (enqueue > 0).all()
    assert np.median(compute) <= np.median(walls)  # the GPU's part of a call is within the call


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_EP, reason="this onnxruntime build has no CUDAExecutionProvider (onnxruntime-gpu)")
def test_cuda_transfers_include_binds_on_the_host(prepared: Any, references: dict[int, np.ndarray]) -> None:
    try:
        session = prepared(cell(device="cuda", batch_size=32, transfers="include"))
    except SkipCell as exc:
        pytest.skip(f"CUDA provider present but not usable here: {exc.reason}")
    assert session.info["transfers"] == "include"
    assert session._binding.get_outputs()[0].device_name().lower() == "cpu"  # copied back at each call
    assert np.abs(session.outputs()["click_probability"] - references[32]).max() < 1e-4
    assert session.call_times() is None and "transfers: include" in session.info["gpu_timing_skipped"]


def test_cuda_events_only_where_one_stream_can_carry_them() -> None:
    assert CudaStream.why_not(cell(device="cuda"), "exclude") is None
    assert "waits for them inside" in str(CudaStream.why_not(cell(device="cuda"), "include"))
    served = Cell("dlrm-small", "onnxruntime", "cuda", "fp32", 1, 1, load="server", load_options={"concurrency": 4})
    assert "concurrency 4" in str(CudaStream.why_not(served, "exclude"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer where torch has no CUDA")
def test_cuda_stream_without_torch_cuda_says_why() -> None:
    info: dict[str, Any] = {}
    assert onnxruntime_backend._cuda_stream(ort, cell(device="cuda"), 0, False, "exclude", info) is None
    assert "torch sees no CUDA device" in info["gpu_timing_skipped"]


class _Clock:
    """Stand-ins for a torch CUDA stream and its events that log what happened, in order: the
    session's timed call is checked on a real (CPU) onnxruntime session."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    def event(self, name: str) -> Any:
        clock = self

        class Event:
            def record(self, stream: Any) -> None:
                clock.log.append((name, time.perf_counter_ns()))

            def elapsed_time(self, end: Any) -> float:  # ms, as torch's
                stamps = dict(clock.log)
                return (stamps["end"] - stamps["start"]) / 1e6

        return Event()

    def synchronize(self) -> None:
        self.log.append(("sync", time.perf_counter_ns()))


def test_a_session_on_its_own_stream_brackets_each_timed_call(prepared: Any, references: dict[int, np.ndarray]) -> None:
    session = prepared(cell(batch_size=32))
    clock = _Clock()
    stream = CudaStream.__new__(CudaStream)
    stream.stream, stream.start, stream.end = clock, clock.event("start"), clock.event("end")
    stream.run_options = ort.RunOptions()
    stream.run_options.add_run_config_entry(onnxruntime_backend.NO_SYNC_KEY, "1")
    stream.timer = CallTimes("run_with_iobinding")
    session._stream = stream
    assert session.call_times() is stream.timer
    session.run()  # no window open: the call waits on the stream, and nothing is timed
    assert [name for name, _ in clock.log] == ["sync"]
    stream.timer.start()
    for _ in range(3):
        session.run()
    compute, enqueue = stream.timer.stop()
    assert [name for name, _ in clock.log[1:]] == ["start", "end", "sync"] * 3
    assert compute.size == 3 and (compute > 0).all() and (enqueue > 0).all()
    assert np.abs(session.outputs()["click_probability"] - references[32]).max() < 1e-4
    session.close()
    assert session.call_times() is None


def test_node_placement_is_read_from_a_profiled_call(model: DLRMSmall, tmp_path: Path) -> None:
    """A GPU cell records where each node ran from one profiled call (get_providers() lists only the
    providers registered); the reading is checked here on the CPU provider, where every node runs."""
    path = onnx_model(model, tmp_path).path
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "p")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, model.example_inputs(4))
    profile = Path(sess.end_profiling())
    counts = onnxruntime_backend.node_providers(profile)
    graph_nodes = len(onnx.load(str(path)).graph.node)
    assert set(counts) == {"CPUExecutionProvider"} and 0 < counts["CPUExecutionProvider"] <= graph_nodes
    info: dict[str, Any] = {}
    onnxruntime_backend._record_placement(profile, "CUDAExecutionProvider", info)
    assert info["node_providers"] == counts and not profile.exists()
    assert (
        f"{counts['CPUExecutionProvider']} of {counts['CPUExecutionProvider']} nodes ran on the CPU"
        in (info["node_providers_note"])
    )
    assert sess.end_profiling() == ""  # profiling ended with the first end_profiling: nothing more recorded


def test_a_cpu_cell_is_not_profiled(prepared: Any, tmp_path: Path) -> None:
    session = prepared(cell())
    assert "node_providers" not in session.info and not list(tmp_path.glob("onnxruntime-placement*"))


def test_close_releases_the_session(prepared: Any) -> None:
    session = prepared(cell())
    session.close()
    assert session.session is None
    session.close()  # twice is harmless


def test_shared_cache_keeps_each_kind_apart(shared_cache: Path, prepared: Any) -> None:
    prepared(cell(precision="int8"))
    kinds = {p.name for p in shared_cache.iterdir()}
    assert {"onnx", "onnxruntime-int8"} <= kinds
    for folder in (shared_cache / "onnxruntime-int8").iterdir():
        if folder.is_dir():
            assert (folder / "model.onnx").is_file() and (folder / "recipe.json").is_file()
            assert not (folder / "preprocessed.onnx").exists()
    assert not list(shared_cache.rglob("*.partial"))


def test_passive_waiting_turns_off_onnxruntime_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.api import WAIT_POLICY_ENV
    from plugins.onnxruntime_backend import SPINNING_KEY, OnnxRuntimeBackend

    opts = OnnxRuntimeBackend.option_values(cell())
    info: dict[str, Any] = {}
    default = OnnxRuntimeBackend._session_options(ort, cell(), opts, info)
    assert info["intra_op_allow_spinning"] == "1"
    monkeypatch.setenv(WAIT_POLICY_ENV, "passive")
    info = {}
    passive = OnnxRuntimeBackend._session_options(ort, cell(), opts, info)
    assert passive.get_session_config_entry(SPINNING_KEY) == "0" and info["intra_op_allow_spinning"] == "0"
    assert default is not passive


class _GpuBuild:
    """What ``_providers`` reads of an onnxruntime module: its version and its providers (a GPU build's)."""

    __version__ = ort.__version__
    # where its provider libraries would be: none there, so the installed onnxruntime's (a GPU build's
    # on a GPU machine) do not decide these tests
    __file__ = str(Path(__file__).parent / "no-onnxruntime-here" / "__init__.py")

    @staticmethod
    def get_available_providers() -> list[str]:
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_reaches_both_gpu_providers(tf32: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 is fp32 unless the cell asks for TF32: the CUDA provider through use_tf32; the TensorRT
    provider, which has no such option, through NVIDIA_TF32_OVERRIDE=0 in the worker; and TensorRT's
    engines in a folder per TF32 setting, since the provider's engine names do not say it."""
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    folders = []
    for tensorrt in (False, True):
        info: dict[str, Any] = {}
        c = cell(device="cuda", tf32=tf32, provider="tensorrt" if tensorrt else "default")
        providers = OnnxRuntimeBackend._providers(_GpuBuild, c, 0, tensorrt, tmp_path, info)
        names = [name for name, _ in providers]
        assert names == (
            ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if tensorrt else ["CUDAExecutionProvider"]
        )
        assert providers[-1][1]["use_tf32"] == ("1" if tf32 else "0")
        assert info["tf32"] is tf32
        if tensorrt:
            folder = Path(providers[0][1]["trt_engine_cache_path"])
            assert folder.is_dir() and folder.parent == tmp_path / "onnxruntime-trt"
            assert folder.name.startswith(f"ort{ort.__version__}-") and folder.name.endswith("-tf32")
            folders.append(folder)
    if tf32:
        assert "NVIDIA_TF32_OVERRIDE" not in os.environ and "tf32_note" not in info
        assert folders[0].name.endswith("-tf32") and not folders[0].name.endswith("no-tf32")
    else:
        assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0" and "NVIDIA_TF32_OVERRIDE=0 set" in info["tf32_note"]
        assert folders[0].name.endswith("-no-tf32")


def test_tf32_asked_but_forbidden_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    info: dict[str, Any] = {}
    providers = OnnxRuntimeBackend._providers(_GpuBuild, cell(device="cuda", tf32=True), 0, False, tmp_path, info)
    assert providers[0][1]["use_tf32"] == "0" and info["tf32"] is False
    assert "tf32 asked, but NVIDIA_TF32_OVERRIDE=0" in info["tf32_note"]


def test_tensorrt_engines_are_kept_apart_by_model_content_and_tensorrt_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TensorRT provider names an engine by file and tensor names, not weights (two calibrations of
    one model look alike to it), and loads a cached one unchecked: bench gives each model file's
    content its own engine folder, under one per onnxruntime version, TensorRT library, GPU and TF32
    setting, whose timing cache the models share."""
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    info: dict[str, Any] = {}
    trt_cell = cell(device="cuda", provider="tensorrt")
    providers = OnnxRuntimeBackend._providers(_GpuBuild, trt_cell, 0, True, tmp_path, info)
    settings = Path(providers[0][1]["trt_timing_cache_path"])
    assert settings.name.startswith(f"ort{ort.__version__}-trtunknown-")  # no TensorRT library loads here
    assert info["tensorrt_version"] is None
    folders = []
    for key in ("0123456789abcdef", "fedcba9876543210"):
        onnxruntime_backend.engine_folder(providers, key, info)
        folder = Path(providers[0][1]["trt_engine_cache_path"])
        assert folder == settings / key and folder.is_dir() and info["trt_engine_cache_dir"] == str(folder)
        assert providers[0][1]["trt_timing_cache_path"] == str(settings)
        folders.append(folder)
    assert folders[0] != folders[1]
    assert [onnxruntime_backend.tensorrt_library_version(v) for v in (100300, 110100, 8601)] == [
        "10.3.0", "11.1.0", "8.6.1"
    ]  # fmt: skip


def test_a_tensorrt_provider_whose_tensorrt_does_not_load_is_skipped_with_the_library_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu lists its TensorRT provider whether or not TensorRT is installed, and a session
    asked for it falls back to CUDA with a warning: the cell is skipped before that, naming the
    TensorRT major version the provider was built against."""
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    (capi / "libonnxruntime_providers_tensorrt.so").write_bytes(_elf(["libnvinfer.so.97", "libcudart.so.13"]))

    class Build(_GpuBuild):
        __file__ = str(tmp_path / "onnxruntime" / "__init__.py")

    version, why = onnxruntime_backend._tensorrt_library(Build)
    assert version is None and why is not None
    assert "TensorRT 97 (libnvinfer.so.97), which does not load here" in why
    assert "TensorRT's wheel" not in why  # not installed here
    assert "built for CUDA 13 (pip install 'tensorrt-cu13==97.*' --extra-index-url https://pypi.nvidia.com)" in why
    info: dict[str, Any] = {}
    with pytest.raises(SkipCell, match=r"needs TensorRT 97 \(libnvinfer\.so\.97\)"):
        OnnxRuntimeBackend._providers(Build, cell(device="cuda", provider="tensorrt"), 0, True, tmp_path, info)
    # the CUDA provider alone does not need TensorRT
    providers = OnnxRuntimeBackend._providers(Build, cell(device="cuda"), 0, False, tmp_path, info)
    assert [name for name, _ in providers] == ["CUDAExecutionProvider"]
    # a provider file that names no TensorRT library, or is no ELF file, is not judged here
    for content in (_elf(["libcudart.so.13", "libc.so.6"]), b"libnvinfer.so.97"):
        (capi / "libonnxruntime_providers_tensorrt.so").write_bytes(content)
        assert onnxruntime_backend._tensorrt_library(Build) == (None, None)
    # without the CUDA major of either provider, no package name is made up
    (capi / "libonnxruntime_providers_tensorrt.so").write_bytes(_elf(["libnvinfer.so.97"]))
    _, why = onnxruntime_backend._tensorrt_library(Build)
    assert why is not None and why.endswith("install TensorRT 97's libraries built for this onnxruntime's CUDA")


def _shared_library(cc: str, folder: Path, soname: str, source: str, *links: str) -> None:
    """A shared library built from C ``source`` under its soname, linking ``links`` (sonames in ``folder``)."""
    (folder / f"{soname}.c").write_text(source)
    extra = [f"-l:{name}" for name in links]
    command = [cc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(folder / soname),
               str(folder / f"{soname}.c"), f"-L{folder}", *extra]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)


def test_tensorrt_from_its_pip_wheel_is_loaded_for_the_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorRT's pip wheel keeps its libraries in site-packages/tensorrt_libs, which no loader path
    names: bench loads the ones the provider links from there (the core first, the parser linking
    it), so that the provider finds them; and says so where the wheel's file does not load. Stand-in
    libraries built here carry the names and the version function."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in TensorRT libraries")
    site = tmp_path / "site"
    wheel = site / "tensorrt_libs"
    wheel.mkdir(parents=True)
    (wheel / "__init__.py").write_text("")
    _shared_library(cc, wheel, "libnvinfer.so.96", "int getInferLibVersion(void) { return 960102; }\n")
    parser = "int getInferLibVersion(void);\nint getNvOnnxParserVersion(void) { return getInferLibVersion(); }\n"
    _shared_library(cc, wheel, "libnvonnxparser.so.96", parser, "libnvinfer.so.96")
    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    provider = _elf(["libcublas.so.12", "libnvinfer.so.96", "libnvonnxparser.so.96", "libcudart.so.12"])
    (capi / "libonnxruntime_providers_tensorrt.so").write_bytes(provider)

    class Build(_GpuBuild):
        __file__ = str(tmp_path / "onnxruntime" / "__init__.py")

    monkeypatch.syspath_prepend(str(site))
    assert onnxruntime_backend._pip_tensorrt_folder() == wheel
    assert onnxruntime_backend._tensorrt_library(Build) == ("96.1.2", None)
    import ctypes

    assert ctypes.CDLL("libnvonnxparser.so.96").getNvOnnxParserVersion() == 960102  # loaded: found by name
    # the wheel's file is there but is no library
    broken = tmp_path / "broken" / "tensorrt_libs"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "libnvinfer.so.95").write_text("not a library")
    (capi / "libonnxruntime_providers_tensorrt.so").write_bytes(_elf(["libnvinfer.so.95", "libcudart.so.12"]))
    monkeypatch.syspath_prepend(str(broken.parent))
    version, why = onnxruntime_backend._tensorrt_library(Build)
    assert version is None and why is not None
    assert f"TensorRT's wheel has it in {broken}, but it does not load" in why and "pip install" not in why


def _elf(needed: list[str]) -> bytes:
    """A minimal ELF64 shared object naming ``needed`` in its dynamic section: a null section, the
    string table and the dynamic section (linked to it), then their headers."""
    import struct

    strings = b"\0" + b"".join(name.encode() + b"\0" for name in needed)
    offsets = [1 + sum(len(n) + 1 for n in needed[:i]) for i in range(len(needed))]
    dynamic = b"".join(struct.pack("<qQ", 1, o) for o in offsets) + struct.pack("<qQ", 0, 0)
    strtab_at, dynamic_at = 64, 64 + len(strings)
    sections_at = dynamic_at + len(dynamic)
    header = b"\x7fELF\x02\x01\x01".ljust(16, b"\0") + struct.pack(
        "<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, sections_at, 0, 64, 0, 0, 64, 3, 0
    )
    sections = [
        struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, strtab_at, len(strings), 0, 0, 1, 0),  # SHT_STRTAB
        struct.pack("<IIQQQQIIQQ", 0, 6, 0, 0, dynamic_at, len(dynamic), 1, 0, 8, 16),  # SHT_DYNAMIC -> 1
    ]
    return header + strings + dynamic + b"".join(sections)


def test_needed_libraries_reads_an_elf_files_dynamic_section(tmp_path: Path) -> None:
    """How bench tells the CUDA and TensorRT majors a provider links without loading it: the same
    DT_NEEDED list as readelf -d, from a made file and from onnxruntime's own extension module."""
    made = tmp_path / "lib.so"
    made.write_bytes(_elf(["libcublas.so.13", "libnvinfer.so.10", "libc.so.6"]))
    assert onnxruntime_backend.needed_libraries(made) == ["libcublas.so.13", "libnvinfer.so.10", "libc.so.6"]
    extension = next((Path(ort.__file__).parent / "capi").glob("onnxruntime_pybind11_state*.so"))
    linked = onnxruntime_backend.needed_libraries(extension)
    assert "libc.so.6" in linked and all(".so" in name for name in linked)
    made.write_bytes(b"#!/bin/sh\n")
    assert onnxruntime_backend.needed_libraries(made) == []
    # cut short, section headers past its end, or a zero header size: nothing read, nothing raised
    whole = _elf(["libcublas.so.13"])
    for broken in (whole[:80], whole[:-10], whole[:0x3A] + b"\0\0" + whole[0x3C:]):
        made.write_bytes(broken)
        assert onnxruntime_backend.needed_libraries(made) == []
    made.write_bytes(whole[:0x28] + (1 << 40).to_bytes(8, "little") + whole[0x30:])
    assert onnxruntime_backend.needed_libraries(made) == []


def test_doctor_says_which_cuda_and_tensorrt_a_gpu_build_links_and_warns_on_a_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CUDA 13 onnxruntime-gpu beside a CUDA 12 torch finds no CUDA libraries, and a TensorRT
    provider without its TensorRT falls back to CUDA: ``bench doctor`` says both before a run does."""
    import torch

    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    (capi / "libonnxruntime_providers_cuda.so").write_bytes(_elf(["libcublas.so.13", "libcudart.so.13"]))
    (capi / "libonnxruntime_providers_tensorrt.so").write_bytes(_elf(["libnvinfer.so.97", "libcudart.so.13"]))

    class Build(_GpuBuild):
        __file__ = str(tmp_path / "onnxruntime" / "__init__.py")

        @staticmethod
        def get_device() -> str:
            return "GPU"

    monkeypatch.setitem(sys.modules, "onnxruntime", Build)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    facts = OnnxRuntimeBackend.probe()
    assert facts["cuda_major"] == "13" and facts["tensorrt_provider_library"] is None
    assert "CUDA provider built for CUDA 13; TensorRT provider unusable" in facts["summary"]
    mismatch, tensorrt = facts["warnings"]
    assert "links CUDA 13, torch" in mismatch and "brings CUDA 12.8" in mismatch
    assert "needs TensorRT 97 (libnvinfer.so.97)" in tensorrt
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert len(OnnxRuntimeBackend.probe()["warnings"]) == 1  # matching majors: the TensorRT one alone
