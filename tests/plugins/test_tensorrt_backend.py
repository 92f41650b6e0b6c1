"""The TensorRT backend where TensorRT cannot be installed (its libraries come from NVIDIA's index):
its declarations, the reasons it gives, its checks of cells and options, and how it reads an engine's
precision from the inspector. Engines build and run in benchmarks/gpu_check.py on a GPU machine."""

from __future__ import annotations

import functools
import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from conftest import bf16_as_float, gpu_check_module
from harness.api import Support
from harness.cells import Cell
from harness.errors import ScenarioError
from harness.scenario import load_scenario_text
from plugins.tensorrt_backend import TensorRTBackend, executed_precision, int8_recipe, layer_precisions

NO_TENSORRT = find_spec("tensorrt") is None


@pytest.mark.skipif(not NO_TENSORRT, reason="tensorrt is installed here")
def test_without_tensorrt_the_reason_names_the_extra_and_nvidias_index() -> None:
    found = TensorRTBackend.availability()
    assert not found.ok
    assert "tensorrt" in found.reason
    assert "https://pypi.nvidia.com" in found.reason
    cell = Cell("dlrm-small", "tensorrt", "cuda", "fp16", 8, 1)
    assert TensorRTBackend.supports(cell).reason == found.reason


def test_cells_and_options_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TensorRTBackend, "availability", classmethod(lambda cls: Support.yes()))
    assert TensorRTBackend.supports(Cell("dlrm-small", "tensorrt", "cuda", "fp16", 8, 1)).ok
    assert not TensorRTBackend.supports(Cell("dlrm-small", "tensorrt", "cpu", "fp32", 8, 1)).ok
    odd = Cell("dlrm-small", "tensorrt", "cuda", "fp16", 8, 1, backend_options={"calibration_samples": 64})
    assert "only with precision int8" in TensorRTBackend.supports(odd).reason
    int8 = Cell("dlrm-small", "tensorrt", "cuda", "int8", 8, 1, backend_options={"calibration_samples": 64})
    assert TensorRTBackend.supports(int8).ok == (find_spec("onnxruntime") is not None)
    fp16_tf32 = Cell("dlrm-small", "tensorrt", "cuda", "fp16", 8, 1, backend_options={"tf32": True})
    assert "option tf32 applies only with precision fp32" in TensorRTBackend.supports(fp16_tf32).reason
    fp32_tf32 = Cell("dlrm-small", "tensorrt", "cuda", "fp32", 8, 1, backend_options={"tf32": True})
    assert TensorRTBackend.supports(fp32_tf32).ok


def test_an_optimisation_level_past_5_is_a_scenario_error() -> None:
    text = (
        "name: t\nmodel: dlrm-small\nbackends: [{name: tensorrt, options: {opt_level: 6}}]\n"
        "devices: [cuda]\nbatch_sizes: [1]\n"
    )
    from harness import planning
    from harness.pluginmanager import registries

    scenario = load_scenario_text(text, source="t.yaml")
    with pytest.raises(ScenarioError, match="opt_level must be at most 5, got 6"):
        planning.check_scenario(scenario, registries(autoload=True))


def test_the_engines_precision_is_read_from_its_layers() -> None:
    def layer(name: str, fmt_in: str, fmt_out: str | None = None) -> dict[str, Any]:
        return {"Name": name, "Inputs": [{"Name": f"{name}_in", "Format/Datatype": fmt_in}],
                "Outputs": [{"Name": f"{name}_out", "Format/Datatype": fmt_out or fmt_in}]}  # fmt: skip

    # the strings TensorRT 8.6-10.x write: classic layers' formats and Myelin layers' bare names
    engine = {
        "Layers": [
            layer("gemm1", "Row major linear FP16 format"),
            layer("gemm2", "Channel major FP16 format where channel % 8 == 0"),
            layer("myelin", "Half"),
            layer("conv", "Thirty-two wide channel vectorized row major Int8 format."),
            layer("qgemm", "Channel major INT8 format where channel % 16 == 0", "Row major linear FP32"),
            layer("kgen", "Int8", "Float"),  # an int8 GEMM with its dequantisation fused: counted by its input
            layer("fc", "Row major linear FP32"),
            layer("x_Half_cast", "Float"),  # a name is not a precision
            layer("bf", "Row major linear BFloat16 format"),
            layer("ids", "UInt8"),  # not int8
            layer("shape", "N/A due to dynamic shapes"),
            {"Name": "constant", "Outputs": [{"Name": "w", "Format/Datatype": "Row major linear FP16 format"}]},
            "a layer given only by name",
        ]
    }
    counts = layer_precisions(json.dumps(engine))
    assert counts == {"fp16": 4, "int8": 3, "fp32": 2, "bf16": 1}
    # TensorRT 11 writes the data type apart from the format, which no longer names it
    linear = "(Linear) Row major linear format"

    def typed(name: str, datatype: str, fmt: str = linear) -> dict[str, Any]:
        return {"Name": name, "Inputs": [{"Name": f"{name}_in", "Datatype": datatype, "Format": fmt}],
                "Outputs": [{"Name": f"{name}_out", "Datatype": datatype, "Format": fmt}]}  # fmt: skip

    eleven = {"Layers": [typed("gemm", "Half"), typed("fc", "Float", "(NHWC) Channel major format"),
                         typed("q", "Int8"), typed("bf", "BFloat16"), typed("ids", "Int64")]}  # fmt: skip
    assert layer_precisions(json.dumps(eleven)) == {"fp16": 1, "fp32": 1, "int8": 1, "bf16": 1}
    assert executed_precision({"fp16": 5, "fp32": 2, "int8": 1}) == "fp16"
    assert executed_precision({"fp16": 2, "fp32": 2}) == "fp16"  # a tie goes to the lower precision
    assert executed_precision({}) is None


def _model_and_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_name: str) -> tuple[Any, Any]:
    """The registered model, and its fp32 ONNX export (in a cache under ``tmp_path``)."""
    from harness.api import CACHE_DIR_ENV, onnx_model
    from harness.input_data import build_model
    from harness.pluginmanager import registries

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    model = build_model(registries(()).models.get(model_name), {}, None)
    return model, onnx_model(model, tmp_path)


def _valid_graph(onnx: Any, path: Path) -> Any:
    """The graph of the ONNX file at ``path``, which ONNX's checker accepts: types every op takes, nodes
    in topological order (as ONNX requires)."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return model.graph


def _against_fp32(ort: Any, model: Any, batch: int, path: Path, fp32: Path) -> list[tuple[float, float]]:
    """(max abs error, cosine) of each output of the file at ``path`` against the fp32 file's, both
    run by onnxruntime's CPU provider on the model's example inputs."""
    from harness.conformance import compare

    inputs = model.example_inputs(batch, 0)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, inputs)
    return [compare(got, want) for got, want in zip(out, ref, strict=True)]


@pytest.mark.parametrize(
    ("model_name", "batch", "cosine_floor"),
    # cosines to the fp32 model measured with this recipe: dlrm-small 0.998, minilm-l6 0.954
    [("dlrm-small", 16, 0.995), pytest.param("minilm-l6", 8, 0.95, marks=pytest.mark.slow)],
)
def test_the_int8_recipe_writes_a_symmetric_qdq_model_that_matches_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_name: str, batch: int, cosine_floor: float
) -> None:
    """The file TensorRT would build for int8, checked where it can be: every Q/DQ zero point is 0
    (TensorRT's ONNX parser takes no other), weights and biases stay float behind Q/DQ pairs, every
    GEMM reads int8 operands, and onnxruntime's CPU provider running it stays within the int8
    tolerance of the fp32 model."""
    ort = pytest.importorskip("onnxruntime", reason="the int8 recipe is onnxruntime's QDQ quantiser")
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import numpy_helper

    from harness.api import onnx_model
    from harness.conformance import TOLERANCE

    model, fp32 = _model_and_fp32(tmp_path, monkeypatch, model_name)
    cell = Cell(model_name, "tensorrt", "cuda", "int8", batch, 1)
    info: dict[str, Any] = {}
    conv = int8_recipe(model, fp32, cell, 128, tmp_path, info)
    graph = onnx.load(str(conv.path)).graph
    left = sorted(p.name for p in conv.path.parent.iterdir())
    assert left == ["model.onnx", "recipe.json"], left  # no shape-inference scratch (minilm-l6's is 90 MB)
    assert not list(Path.cwd().glob("sym_shape_infer_temp*"))
    assert info["quantization_symmetric"] is True and info["quantization_reduce_range"] is False
    assert info["quantization_per_channel"] is True and info["executed_precision"] == "int8"
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    zero_points = [weights[n.input[2]] for n in qdq if len(n.input) > 2]
    assert len(zero_points) == len(qdq) >= 4
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    zero_point_names = {n.input[2] for n in qdq}
    integers = [name for name, w in weights.items() if w.dtype in (np.int8, np.int32) and name not in zero_point_names]
    assert not integers  # weights and biases stay float
    produced_by = {out: n for n in graph.node for out in n.output}
    gemms = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    assert gemms
    for gemm in gemms:  # both operands of every GEMM come through a DequantizeLinear: int8 math
        assert all(produced_by[name].op_type == "DequantizeLinear" for name in gemm.input[:2]), gemm.name
    weight_q = [n for n in qdq if n.op_type == "QuantizeLinear" and n.input[0] in weights]
    assert weight_q  # a Q/DQ pair on the float weights, which TensorRT folds into int8 weights

    for max_abs, cosine in _against_fp32(ort, model, batch, conv.path, fp32.path):
        max_abs_limit, cosine_limit = TOLERANCE["int8"]
        assert max_abs <= max_abs_limit and cosine >= max(cosine_limit, cosine_floor), (max_abs, cosine)
    again = int8_recipe(model, onnx_model(model, tmp_path), cell, 128, tmp_path, {})
    assert again.cached and again.path == conv.path


def test_every_cuda_runtime_call_exists_in_cuda_bindings() -> None:
    """The backend's CUDA calls against the real binding (it imports without a GPU or a driver): every
    ``cudart.<name>`` the module writes exists, with the enum members it names."""
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-bindings is not installed (bench[gpu])")
    import re

    from plugins import tensorrt_backend

    assert tensorrt_backend._cudart() is runtime
    names = set(re.findall(r"cudart\.(\w+)", Path(tensorrt_backend.__file__).read_text()))
    assert {"cudaStreamCreateWithFlags", "cudaEventElapsedTime", "cudaGraphInstantiate"} <= names
    assert sorted(name for name in names if not hasattr(runtime, name)) == []
    assert runtime.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal is not None
    assert {"cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"} <= set(runtime.cudaMemcpyKind.__members__)
    assert int(runtime.cudaStream_t(0)) == 0  # execute_async_v3 takes the stream as an int


def test_a_failed_cuda_call_raises_with_the_errors_name() -> None:
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-bindings is not installed (bench[gpu])")
    from plugins.tensorrt_backend import _ok

    err, count = runtime.cudaGetDeviceCount()
    if err == runtime.cudaError_t.cudaSuccess:
        assert _ok((err, count)) == count
        pytest.skip("a CUDA device and driver are here: no error to read")
    with pytest.raises(RuntimeError, match=rf"CUDA error {err.name}"):
        _ok((err, count))
    assert _ok((runtime.cudaError_t.cudaSuccess,)) is None
    assert _ok((runtime.cudaError_t.cudaSuccess, 1, 2)) == (1, 2)


@pytest.mark.parametrize(
    ("model_name", "batch"), [("dlrm-small", 16), pytest.param("minilm-l6", 8, marks=pytest.mark.slow)]
)
def test_the_fp16_recipe_writes_the_file_tensorrt_builds_within_fp16_tolerance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_name: str, batch: int
) -> None:
    """The fp16 file a strongly typed TensorRT network is built from: fp16 weights, fp32 inputs and
    outputs; onnxruntime's CPU provider (through its casts) stays within fp16's tolerance of fp32."""
    ort = pytest.importorskip("onnxruntime", reason="the fp16 recipe is onnxruntime's converter")
    onnx = pytest.importorskip("onnx")

    from harness.conformance import TOLERANCE
    from plugins.onnxruntime_backend import _to_fp16

    model, fp32 = _model_and_fp32(tmp_path, monkeypatch, model_name)
    info: dict[str, Any] = {}
    conv = _to_fp16(fp32, tmp_path, info)
    graph = _valid_graph(onnx, conv.path)
    assert info["fp16_initializers"] > 0 and info["executed_precision"] == "fp16"
    float32 = onnx.TensorProto.FLOAT
    assert {o.type.tensor_type.elem_type for o in graph.output} == {float32}
    for max_abs, cosine in _against_fp32(ort, model, batch, conv.path, fp32.path):
        max_abs_limit, cosine_limit = TOLERANCE["fp16"]
        assert max_abs <= max_abs_limit and cosine >= cosine_limit, (max_abs, cosine)


@pytest.mark.parametrize(
    ("model_name", "batch", "arithmetic_floor"),
    # onnx's reference evaluator computes in bf16 throughout, reductions included (LayerNorm's mean
    # over 384 values), where TensorRT and torch accumulate in fp32: measured cosine 0.99999 on
    # dlrm-small, 0.9946 on minilm-l6 (torch's own bf16 0.99992)
    [("dlrm-small", 16, 0.995), pytest.param("minilm-l6", 4, 0.99, marks=pytest.mark.slow)],
)
def test_the_bf16_recipe_writes_a_valid_bf16_model_within_bf16_tolerance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_name: str, batch: int, arithmetic_floor: float
) -> None:
    """The bf16 file a strongly typed TensorRT network is built from (TensorRT 11 has no bf16 flag):
    valid ONNX in topological order (the checker's type inference accepts every op in bf16), fp32
    inputs and outputs, every float weight bf16; its weights' rounding within bf16's tolerance of
    the fp32 model (onnxruntime's CPU provider, which has no bf16 kernels, runs them as float); and
    its bf16 arithmetic, run by onnx's reference evaluator, close to the fp32 model."""
    ort = pytest.importorskip("onnxruntime", reason="the reference outputs come from onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from harness.api import onnx_model
    from harness.conformance import TOLERANCE, compare
    from plugins.bf16_onnx import bf16_file

    model, fp32 = _model_and_fp32(tmp_path, monkeypatch, model_name)
    info: dict[str, Any] = {}
    conv = bf16_file(fp32, tmp_path, info)
    graph = _valid_graph(onnx, conv.path)
    types = {onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer}
    assert types == {"BFLOAT16"}, types
    float32 = onnx.TensorProto.FLOAT
    assert {v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)} <= {float32, onnx.TensorProto.INT64}
    assert info["bf16_changes"]["weights"] == len(graph.initializer) and info["bf16_changes"]["weights_from_fp16"] == 0
    assert not any(n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16 for n in graph.node)

    inputs = model.example_inputs(batch, 0)
    want = ort.InferenceSession(str(fp32.path), providers=["CPUExecutionProvider"]).run(None, inputs)
    rounded = bf16_as_float(onnx.load(str(conv.path)))
    got = ort.InferenceSession(rounded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)
    max_abs_limit, cosine_limit = TOLERANCE["bf16"]
    for out, ref in zip(got, want, strict=True):
        max_abs, cosine = compare(out, ref)
        assert max_abs <= max_abs_limit and cosine >= cosine_limit, (max_abs, cosine)
    for out, ref in zip(ReferenceEvaluator(str(conv.path)).run(None, inputs), want, strict=True):
        max_abs, cosine = compare(out, ref)
        assert out.dtype == ref.dtype and max_abs <= max_abs_limit and cosine >= arithmetic_floor, (max_abs, cosine)
    again = bf16_file(onnx_model(model, tmp_path), tmp_path, {})
    assert again.cached and again.path == conv.path


def test_bf16_rounding_is_to_nearest_even_and_saturates_finite_values() -> None:
    import numpy as np

    from plugins.bf16_onnx import bf16_bits, bf16_values

    values = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -3.4028235e38, np.inf, -np.inf, -0.0], np.float32)
    bits = bf16_bits(values)
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to the even one (1); 1 + 3*2^-8 up to 1 + 2^-6
    assert [hex(b) for b in bits] == ["0x3f80", "0x3f80", "0x3f82", "0xff7f", "0x7f80", "0xff80", "0x8000"]
    assert np.isnan(bf16_values(bf16_bits(np.array([np.nan], np.float32))))[0]
    assert bf16_values(bits)[3] == np.float32(-3.3895314e38)  # fp32's lowest saturates, 0 x it stays 0


def test_sort_nodes_orders_what_the_fp16_converter_appends_and_keeps_a_sorted_graph() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    from plugins.onnxruntime_backend import sort_nodes

    cast_in = helper.make_node("Cast", ["x"], ["x16"], to=onnx.TensorProto.FLOAT16, name="cast_in")
    relu = helper.make_node("Relu", ["x16"], ["y16"], name="relu")
    neg = helper.make_node("Neg", ["x16"], ["z16"], name="neg")
    add = helper.make_node("Add", ["y16", "z16"], ["s16"], name="add")
    cast_out = helper.make_node("Cast", ["s16"], ["y"], to=onnx.TensorProto.FLOAT, name="cast_out")
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    graph = helper.make_graph([relu, neg, add, cast_in, cast_out], "g", [x], [y])  # the converter's order
    sort_nodes(graph)
    assert [n.name for n in graph.node] == ["cast_in", "relu", "neg", "add", "cast_out"]
    onnx.checker.check_model(helper.make_model(graph), full_check=True)
    ordered = helper.make_graph([cast_in, neg, relu, add, cast_out], "g", [x], [y])  # sorted already: kept
    sort_nodes(ordered)
    assert [n.name for n in ordered.node] == ["cast_in", "neg", "relu", "add", "cast_out"]


def test_gpu_checks_trtexec_runs_the_engine_as_bench_does_in_either_major_version() -> None:
    """trtexec 11 flipped three defaults (transfers off, CUDA graph on, spin-wait on): the command
    states each, in the flags that version takes (an unknown flag ends trtexec)."""
    gpu_check = gpu_check_module()
    ten = gpu_check.trtexec_command("trtexec", "e.engine", "x:64x13", 3.0, "10.13.2.6")
    eleven = gpu_check.trtexec_command("trtexec", "e.engine", "x:64x13", 3.0, "11.1.0.4")
    assert ten == ["trtexec", "--loadEngine=e.engine", "--shapes=x:64x13", "--noDataTransfers", "--useSpinWait",
                   "--exposeDMA", "--duration=3", "--warmUp=200"]  # fmt: skip
    assert eleven == ["trtexec", "--loadEngine=e.engine", "--shapes=x:64x13", "--noCudaGraph", "--exposeDMA",
                      "--duration=3", "--warmUp=200"]  # fmt: skip
    numbers = gpu_check.trtexec_numbers(
        "[I] Throughput: 1234.5 qps\n[I] GPU Compute Time: min = 0.1 ms, max = 0.3 ms, mean = 0.2 ms, "
        "median = 0.19 ms, percentile(90%) = 0.25 ms\n"
    )
    assert numbers == {"qps": 1234.5, "compute_median_ms": 0.19}


def _bf16_of(onnx: Any, nodes: list[Any], inputs: list[Any], output: Any, weights: list[Any]) -> tuple[Any, Any]:
    """(fp32 model at opset 17, bench's bf16 model of it and what was done) for a small graph."""
    from onnx import helper

    from plugins.bf16_onnx import bf16_model
    from plugins.onnxruntime_backend import fp16_converter, fp16_model

    fp32 = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [output], weights), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.checker.check_model(fp32, full_check=True)
    _, convert = fp16_converter()
    return fp32, bf16_model(fp32, functools.partial(fp16_model, convert))


def test_bf16_raises_the_opset_where_an_op_takes_bf16_only_later() -> None:
    """Conv takes bf16 from opset 22 (bench exports at 17): the fp32 model is raised to 22 first, and
    the bf16 file still computes what the fp32 model does (ReduceMean's axes, an input from 18 on)."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from harness.conformance import TOLERANCE, compare

    float32 = onnx.TensorProto.FLOAT
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["y"], axes=[2, 3], keepdims=0)]  # fmt: skip
    x = helper.make_tensor_value_info("x", float32, [2, 3, 8, 8])
    y = helper.make_tensor_value_info("y", float32, [2, 4])
    fp32, (bf16, done) = _bf16_of(onnx, nodes, [x], y, [weight])
    assert done["opset"].startswith("17 -> 22: at 17, InferenceError") and "Conv" in done["opset"]
    assert [o.version for o in bf16.opset_import if o.domain in ("", "ai.onnx")] == [22]
    assert {t.data_type for t in bf16.graph.initializer if t.name == "w"} == {onnx.TensorProto.BFLOAT16}
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    got, want = ReferenceEvaluator(bf16).run(None, feeds)[0], ReferenceEvaluator(fp32).run(None, feeds)[0]
    max_abs, cosine = compare(got, want)
    assert cosine >= TOLERANCE["bf16"][1] and max_abs <= TOLERANCE["bf16"][0], (max_abs, cosine)


def test_bf16_rounds_every_tensor_attribute_from_its_fp32_value() -> None:
    """A ConstantOfShape of fp32's lowest (a mask's "minus infinity") stays bf16's lowest, not the
    fp16 converter's clamped copy."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import helper

    from plugins.bf16_onnx import bf16_values

    float32 = onnx.TensorProto.FLOAT
    lowest = helper.make_tensor("value", float32, [1], [-3.4028235e38])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["m"], value=lowest),
             helper.make_node("Mul", ["x", "m"], ["y"])]  # fmt: skip
    x = helper.make_tensor_value_info("x", float32, [2])
    y = helper.make_tensor_value_info("y", float32, [2])
    _, (bf16, _) = _bf16_of(onnx, nodes, [x], y, [])
    constant = next(n for n in bf16.graph.node if n.op_type == "ConstantOfShape").attribute[0].t
    assert constant.data_type == onnx.TensorProto.BFLOAT16
    bits = np.frombuffer(constant.raw_data, dtype="<u2")
    assert bf16_values(bits)[0] == np.float32(-3.3895314e38)


def test_bf16_of_an_op_without_bf16_at_any_opset_fails_with_the_checkers_words() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    float32 = onnx.TensorProto.FLOAT
    nodes = [helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")]
    a, b = (helper.make_tensor_value_info(name, float32, [2, 2]) for name in "ab")
    y = helper.make_tensor_value_info("y", float32, [2, 2])
    with pytest.raises(onnx.shape_inference.InferenceError, match="Einsum"):
        _bf16_of(onnx, nodes, [a, b], y, [])


def test_bf16_needs_the_tensor_cores_of_compute_capability_8() -> None:
    """One verdict for the tensorrt backend and onnxruntime's GPU providers: Ampere (8.0) and newer."""
    from plugins.bf16_onnx import no_bf16_tensor_cores

    assert no_bf16_tensor_cores("NVIDIA A100", 8, 0) is None and no_bf16_tensor_cores("NVIDIA H200", 9, 0) is None
    assert no_bf16_tensor_cores("Tesla T4", 7, 5) == (
        "Tesla T4 (compute capability 7.5) has no bf16 tensor cores: they came with 8.0 (Ampere)"
    )
