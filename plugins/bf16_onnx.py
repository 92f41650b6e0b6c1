"""An fp32 ONNX model made bf16: what a strongly typed TensorRT network builds in bf16 (TensorRT 11
has no ``BuilderFlag.BF16``; precision is the model file's).

The fp16 converter (``convert_float_to_float16``, the onnxruntime backend's fp16 recipe) decides
which ops compute in reduced precision: its block list keeps a few in fp32 behind Cast nodes, and
``keep_io_types`` keeps the model's inputs and outputs fp32. Every FLOAT16 of its output then becomes
BFLOAT16 (tensor types, Cast targets, weights, tensor attributes), and each weight or constant is
rounded to bf16 from its fp32 original, not from the fp16 copy, which the converter clamped to fp16's
range: bf16 has fp32's range, so an attention mask's -3.4e38 stays near what it was (bf16's lowest,
-3.39e38). ONNX's checker then confirms that every op takes bf16 at the model's opset; where one
takes it only at a later opset (Conv and pooling from 22), the fp32 model is first raised to opset 22
by ONNX's version converter.

Used by the tensorrt backend and by onnxruntime's CUDA and TensorRT providers (``bf16_file``: the
file, cached). Nothing here needs TensorRT or a GPU: onnx's reference evaluator runs the result on
the CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api import first_line

if TYPE_CHECKING:
    import numpy as np
    import onnx

#: the first opset where every op that takes fp16 takes bf16 too (Conv and the pooling ops: 22)
BF16_OPSET = 22
#: integer attributes that name an element type (Cast's ``to``; ``dtype`` of EyeLike, RandomNormal, ...)
_TYPE_ATTRIBUTES = frozenset({"to", "dtype"})


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """fp32 values as bf16 bit patterns (uint16), rounded to nearest, ties to even. A finite value
    beyond bf16's largest (3.39e38) saturates to it rather than rounding to infinity: a model's
    "minus infinity" is often fp32's lowest finite number times a 0/1 mask, and 0 x inf is NaN.
    Infinities and NaN stay what they are."""
    import numpy as np

    floats = np.ascontiguousarray(values, dtype=np.float32)
    bits = floats.view(np.uint32)
    rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    largest = np.where(floats < 0, np.uint16(0xFF7F), np.uint16(0x7F7F))  # -/+ 3.3895e38
    rounded = np.where(np.isfinite(floats) & ((rounded & 0x7FFF) == 0x7F80), largest, rounded)
    return np.where(np.isnan(floats), np.uint16(0x7FC0), rounded)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) as the fp32 values they stand for."""
    import numpy as np

    return (bits.astype(np.uint32) << 16).view(np.float32)


def _bf16_tensor(onnx: Any, name: str, values: np.ndarray) -> onnx.TensorProto:
    tensor = onnx.TensorProto()
    tensor.name = name
    tensor.data_type = onnx.TensorProto.BFLOAT16
    tensor.dims.extend(values.shape)
    tensor.raw_data = bf16_bits(values).astype("<u2").tobytes()
    return tensor


def _attribute_key(node: onnx.NodeProto, attr: onnx.AttributeProto) -> str:
    """A tensor attribute's name across the conversion: its node's first output, and its own name."""
    return f"{node.output[0] if node.output else node.name}#{attr.name}"


def _float_arrays(onnx: Any, graph: onnx.GraphProto, found: dict[str, np.ndarray]) -> None:
    """The fp32 model's float weights and tensor attributes (a Constant's value, ConstantOfShape's),
    by the names the converter keeps (an initializer's; a node's first output and the attribute's),
    in every subgraph."""
    from onnx import numpy_helper

    for tensor in graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            found[tensor.name] = numpy_helper.to_array(tensor)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                if attr.t.data_type == onnx.TensorProto.FLOAT:
                    found[_attribute_key(node, attr)] = numpy_helper.to_array(attr.t)
            elif attr.type == onnx.AttributeProto.GRAPH:
                _float_arrays(onnx, attr.g, found)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _float_arrays(onnx, sub, found)


def _retype(onnx: Any, value_info: Any) -> int:
    tensor_type = value_info.type.tensor_type
    if tensor_type.elem_type == onnx.TensorProto.FLOAT16:
        tensor_type.elem_type = onnx.TensorProto.BFLOAT16
        return 1
    return 0


def _graph_to_bf16(onnx: Any, graph: onnx.GraphProto, originals: dict[str, np.ndarray]) -> dict[str, int]:
    """FLOAT16 -> BFLOAT16 throughout ``graph`` and its subgraphs, in place; what was changed, counted."""
    import numpy as np
    from onnx import numpy_helper

    counts = {"weights": 0, "weights_from_fp16": 0, "casts": 0, "tensors": 0, "constants": 0}

    def add(more: dict[str, int]) -> None:
        for key, value in more.items():
            counts[key] += value

    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type != onnx.TensorProto.FLOAT16:
            continue
        values = originals.get(tensor.name)
        if values is None:  # made by the converter (no fp32 original): from its fp16 values
            values = numpy_helper.to_array(tensor).astype(np.float32)
            counts["weights_from_fp16"] += 1
        graph.initializer[index].CopyFrom(_bf16_tensor(onnx, tensor.name, values))
        counts["weights"] += 1
    for value_info in (*graph.input, *graph.output, *graph.value_info):
        counts["tensors"] += _retype(onnx, value_info)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.INT and attr.name in _TYPE_ATTRIBUTES:
                if attr.i == onnx.TensorProto.FLOAT16:
                    attr.i = onnx.TensorProto.BFLOAT16
                    counts["casts"] += 1
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.FLOAT16:
                source = originals.get(_attribute_key(node, attr))
                values = source if source is not None else numpy_helper.to_array(attr.t).astype(np.float32)
                attr.t.CopyFrom(_bf16_tensor(onnx, attr.t.name, values))
                counts["constants"] += 1
            elif attr.type == onnx.AttributeProto.GRAPH:
                add(_graph_to_bf16(onnx, attr.g, originals))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    add(_graph_to_bf16(onnx, sub, originals))
    return counts


def to_bf16(fp16: onnx.ModelProto, fp32: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The bf16 model: ``fp16`` (the fp16 converter's output for ``fp32``, with ``keep_io_types``)
    with every FLOAT16 made BFLOAT16 and its weights rounded from ``fp32``'s; and what was changed.
    Raises ``onnx.shape_inference.InferenceError`` where an op does not take bf16 at the model's
    opset, ``onnx.checker.ValidationError`` where the model is otherwise invalid."""
    import onnx

    originals: dict[str, np.ndarray] = {}
    _float_arrays(onnx, fp32.graph, originals)
    model = onnx.ModelProto()
    model.CopyFrom(fp16)
    counts = _graph_to_bf16(onnx, model.graph, originals)
    onnx.checker.check_model(model, full_check=True)  # type inference: every op's bf16 constraint
    return model, counts


def bf16_model(
    fp32: onnx.ModelProto, to_fp16: Callable[[onnx.ModelProto], onnx.ModelProto]
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The bf16 model of ``fp32``, whose ops ``to_fp16`` (the fp16 converter, inputs and outputs kept
    fp32, nodes in topological order) chooses; and what was done. Where an op takes bf16 only at a
    later opset than the model's (Conv and pooling from 22, ConstantOfShape from 21; bench exports at
    17), the fp32 model is first converted to opset 22 by ONNX's version converter. Raises
    ``onnx.shape_inference.InferenceError`` or ``onnx.checker.ValidationError`` where that fails too."""
    import onnx
    from onnx import version_converter

    try:
        model, counts = to_bf16(to_fp16(fp32), fp32)
        return model, {"changes": counts}
    except onnx.shape_inference.InferenceError as exc:
        opset = next((o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is None or opset >= BF16_OPSET:
            raise
        why = first_line(exc)
    raised = version_converter.convert_version(fp32, BF16_OPSET)
    model, counts = to_bf16(to_fp16(raised), raised)
    return model, {"changes": counts, "opset": f"{opset} -> {BF16_OPSET}: at {opset}, {why}"}


#: the compute capability from which NVIDIA GPUs have bf16 tensor cores (Ampere)
BF16_CAPABILITY = (8, 0)


def no_bf16_tensor_cores(gpu: str, major: int, minor: int) -> str | None:
    """Why a GPU of compute capability ``major.minor`` runs no bf16 cell (none from 8.0 on): the
    reason the tensorrt backend and onnxruntime's GPU providers skip with."""
    if (major, minor) >= BF16_CAPABILITY:
        return None
    return f"{gpu} (compute capability {major}.{minor}) has no bf16 tensor cores: they came with 8.0 (Ampere)"


#: bumped when the bf16 recipe changes, so older cached files are not reused
BF16_RECIPE = 1


def bf16_file(conv: Any, workdir: Path, info: dict[str, Any]) -> Any:
    """The bf16 model of the ONNX file ``conv`` (a ``harness.api.Conversion``), cached by content: the
    fp16 converter's choice of ops with bf16 types, weights rounded from fp32, inputs and outputs
    fp32. What a strongly typed TensorRT network builds in bf16, and what onnxruntime's CUDA
    provider runs in bf16. A model that is not valid ONNX in bf16 is a skip with the checker's words."""
    import onnx

    from harness.api import SkipCell, cached, digest
    from plugins.onnxruntime_backend import fp16_converter, fp16_model, load_with_weights

    converter, convert = fp16_converter()
    key = digest("bf16-onnx", conv.key, converter, onnx.__version__, {"keep_io_types": True}, BF16_RECIPE)
    done: dict[str, Any] = {}

    def build(folder: Path) -> None:
        model, what = bf16_model(load_with_weights(conv.path), functools.partial(fp16_model, convert))
        done.update(what)
        onnx.save(model, str(folder / "model.onnx"))

    try:
        result = cached("bf16-onnx", key, "model.onnx", build, workdir)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise SkipCell(f"the bf16 model of {conv.path} is not valid ONNX: {first_line(exc)}") from exc
    info.update(result.info("bf16_conversion"))
    info["bf16_converter"] = f"bench's bf16 retyping of {converter}'s fp16 conversion"
    if done:  # built here, not a cache hit
        info["bf16_changes"] = done["changes"]
        if "opset" in done:
            info["bf16_opset"] = done["opset"]
    return result
