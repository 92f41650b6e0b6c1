"""Models given as a user's file: ``onnx-file`` (an ONNX model) and ``torch-export-file`` (a program
saved with ``torch.export.save``). Neither is ever read through pickle.

Inputs are read from the file itself: names, dtypes and shapes. A dynamic axis 0 is the batch; any
other dynamic axis needs a size, given with the option ``shapes`` (``{input: [batch, 3, 224, 224]}``,
``batch`` marking the batch axis) or, for a torch.export program, taken from the size it was
exported with. Example inputs are random per dtype and deterministic per seed: floats standard
normal (or uniform in ``float_range``), integers uniform in ``[0, int_high)``, booleans fair coins.
``int_high`` and ``float_range`` take one value for every input or a mapping by input name
(``int_high: {sparse: 3, ids: 1000}``: an integer input that indexes a table needs that table's
rows as its bound). Real data replaces all of this: ``inputs: FILE.npz`` (harness.input_data).

Scenarios name these models with the shorthand each declares (``Model.file_shorthand``):
``model: {onnx: path/to/model.onnx}`` or ``model: {torch_export: path/to/model.pt2}``, paths relative
to the scenario file, other options beside the key.

One module for both file models (about 840 lines): they share their options, input resolution and
example inputs (``_FileModel``); the rest is each format's defensive reader (ONNX's external-data
and checker gates, the ``.pt2`` archive audit that never unpickles), which belongs beside the model
it guards.

onnx, torch and numpy are imported inside the functions: the CLI imports this module to list models.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api import FileShorthand, Model, RegisterModel, Support, hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np
    import torch

#: the name of the batch axis, in ``shapes`` and in :meth:`Model.dynamic_axes`
BATCH = "batch"
#: integer inputs are drawn from [0, int_high) unless the option says otherwise: a guess, valid
#: indices of tables of at least 100 rows; a smaller table needs int_high for its input
INT_HIGH_DEFAULT = 100
#: input dtypes example inputs can be generated for (numpy names)
SUPPORTED_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
#: the options of both models; ``path`` is the shorthand key's value, the others may sit beside it
FILE_MODEL_OPTIONS = ("path", "shapes", "int_high", "float_range")


class ModelFileError(ValueError):
    """A model file that cannot be used as given; the message names the file and what to do."""


@dataclass(frozen=True)
class InputSpec:
    """One input as the model runs it: dims are fixed sizes, or :data:`BATCH` for the batch axis."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]
    #: smallest and largest batch the file accepts (None: no bound recorded)
    batch_min: int | None = None
    batch_max: int | None = None


@dataclass(frozen=True)
class _RawInput:
    """An input as the file declares it: per axis a fixed size or None (dynamic), with a label and a
    default size for dynamic axes where the file records one (torch.export's example sizes)."""

    name: str
    dtype: str
    dims: tuple[int | None, ...] | None  # None: the file gives no rank
    labels: tuple[str, ...] = ()
    hints: tuple[int | None, ...] = ()
    batch_min: int | None = None
    batch_max: int | None = None


def _show_dims(dims: tuple[Any, ...] | None) -> str:
    return "unknown rank" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


class _FileModel(Model):
    """Options, input resolution and example inputs shared by the file models."""

    #: what the file is, for messages
    kind: ClassVar[str]
    file_shorthand: ClassVar[FileShorthand]

    input_names: tuple[str, ...]  # type: ignore[misc]  # per instance: read from the file
    output_names: tuple[str, ...]  # type: ignore[misc]  # per instance: read from the file

    def __init__(
        self, path: Any = None, shapes: Any = None, int_high: Any = INT_HIGH_DEFAULT, float_range: Any = None,
        **unknown: Any,
    ) -> None:  # fmt: skip
        if unknown:
            msg = (
                f"model '{self.name}' has no option {', '.join(sorted(unknown))} "
                f"(options: {', '.join(FILE_MODEL_OPTIONS)})"
            )
            raise ValueError(msg)
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            msg = (
                f"model '{self.name}' needs the option path (the {self.kind} file); "
                f"in a scenario: model: {{{self.file_shorthand.key}: path/to/file}}"
            )
            raise ValueError(msg)
        self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        int_highs = _per_input(self.name, "int_high", int_high, _int_high_problem, "an integer >= 1", "{ids: 1000}")
        float_ranges = _per_input(
            self.name, "float_range", float_range, _float_range_problem, "a pair [low, high] with low < high",
            "{x: [0, 1]}",
        )  # fmt: skip
        self.shapes = _check_shapes_option(self.name, shapes)
        if not self.path.exists():
            raise ModelFileError(f"{self.path}: no such file; check the model's path")
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: not a regular file; give the path of the {self.kind} file")
        raw_inputs, self.output_names, self._parameters = self._read()
        self.input_names = tuple(raw.name for raw in raw_inputs)
        unknown_inputs = sorted(set(self.shapes) - set(self.input_names))
        if unknown_inputs:
            msg = (
                f"{self.path}: option shapes names {', '.join(map(repr, unknown_inputs))}, "
                f"not an input of the model (inputs: {', '.join(self.input_names)})"
            )
            raise ModelFileError(msg)
        self.inputs = tuple(self._resolve(raw) for raw in raw_inputs)
        #: the bound of each integer input ([0, int_high)), and the range of each float input drawn
        #: uniformly (the others are standard normal)
        self.int_high: dict[str, int] = self._by_input("int_high", int_highs, "iu", INT_HIGH_DEFAULT)
        self.float_range: dict[str, tuple[float, float]] = self._by_input("float_range", float_ranges, "f", None)

    def _by_input(self, option: str, given: Any, kinds: str, default: Any) -> dict[str, Any]:
        """``given`` (one value for every input, or a mapping by input name) for each input of
        the dtype kinds ``kinds``; a name that is no such input is an error naming those there are."""
        import numpy as np

        fitting = [spec.name for spec in self.inputs if np.dtype(spec.dtype).kind in kinds]
        what = "integer" if kinds == "iu" else "floating-point"
        if not isinstance(given, dict):
            value = default if given is None else given
            return {name: value for name in fitting} if value is not None else {}
        for name in given:
            if name not in fitting:
                dtype = next((spec.dtype for spec in self.inputs if spec.name == name), None)
                why = f"a {dtype} input" if dtype else "not an input of the model"
                msg = (
                    f"{self.path}: option {option} names '{name}', {why}; it applies to the {what} inputs "
                    f"({', '.join(fitting) or 'the model has none'})"
                )
                raise ModelFileError(msg)
        values = {name: given.get(name, default) for name in fitting}
        return {name: value for name, value in values.items() if value is not None}

    def _read(self) -> tuple[list[_RawInput], tuple[str, ...], int]:
        """The inputs, output names and parameter count of the file, validated."""
        raise NotImplementedError

    def _resolve(self, raw: _RawInput) -> InputSpec:
        """Sizes for every axis: the file's fixed sizes, ``shapes``, axis 0 as the batch, the file's hint."""
        if raw.dtype not in SUPPORTED_DTYPES:
            msg = (
                f"{self.path}: input '{raw.name}' has dtype {raw.dtype}; example inputs can be made for "
                f"{', '.join(SUPPORTED_DTYPES)} only"
            )
            raise ModelFileError(msg)
        given = self.shapes.get(raw.name)
        file_dims = raw.dims
        if file_dims is None:
            if given is None:
                msg = (
                    f"{self.path}: input '{raw.name}' has no shape in the file; give it with the option shapes, "
                    f"e.g. {self.file_shorthand.key}: ..., shapes: {{{raw.name}: [{BATCH}, 16]}}"
                )
                raise ModelFileError(msg)
            file_dims = (None,) * len(given)
        if given is not None and len(given) != len(file_dims):
            msg = (
                f"{self.path}: option shapes gives input '{raw.name}' {len(given)} axes, "
                f"the file {len(file_dims)} ({_show_dims(file_dims)})"
            )
            raise ModelFileError(msg)
        dims: list[int | str] = []
        for axis, size in enumerate(file_dims):
            want = given[axis] if given is not None else None
            label = raw.labels[axis] if axis < len(raw.labels) and raw.labels[axis] else ""
            if size is not None:
                if want is not None and want != size:
                    msg = (
                        f"{self.path}: option shapes sets axis {axis} of input '{raw.name}' to {want!r}, "
                        f"but the file fixes it at {size}; use {size}"
                    )
                    raise ModelFileError(msg)
                dims.append(size)
            elif want is not None:
                dims.append(want)
            elif axis == 0:
                dims.append(BATCH)
            elif axis < len(raw.hints) and raw.hints[axis] is not None:
                dims.append(int(raw.hints[axis]))  # type: ignore[arg-type]  # a hint is a number here
            else:
                example = [
                    BATCH if a == 0 and d is None else ("N" if d is None else d) for a, d in enumerate(file_dims)
                ]
                msg = (
                    f"{self.path}: axis {axis} of input '{raw.name}' is dynamic"
                    + (f" ('{label}')" if label else "")
                    + "; give its size with the option shapes, e.g. "
                    + f"shapes: {{{raw.name}: [{', '.join(map(str, example))}]}}"
                )
                raise ModelFileError(msg)
        return InputSpec(raw.name, raw.dtype, tuple(dims), raw.batch_min, raw.batch_max)

    # -- the Model contract -------------------------------------------------------------------

    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs of the file's dtypes and shapes, the batch axes ``batch_size`` long."""
        return self._generate(batch_size, seed, check_range=True)

    def calibration_inputs(self, n_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
        """As the default, without the program's batch range: calibration feeds the converted model,
        in slices, not the program."""
        return self._generate(n_samples, seed + 10_000, check_range=False)

    def _generate(self, batch_size: int, seed: int, check_range: bool) -> dict[str, np.ndarray]:
        import numpy as np

        first = self.inputs[0]  # a model file without inputs was refused when read
        if not any(BATCH in spec.dims for spec in self.inputs) and first.dims and first.dims[0] != batch_size:
            msg = (
                f"{self.path}: no input has a dynamic batch axis (input '{first.name}' is {_show_dims(first.dims)}), "
                f"so batch size {batch_size} cannot run; use batch_sizes: [{first.dims[0]}], "
                "or export the model with a dynamic axis 0"
            )
            raise ModelFileError(msg)
        rng = np.random.default_rng(seed)
        inputs: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            low, high = spec.batch_min, spec.batch_max
            out_of_range = (low is not None and batch_size < low) or (high is not None and batch_size > high)
            if check_range and BATCH in spec.dims and out_of_range:
                msg = (
                    f"{self.path}: input '{spec.name}' accepts batch sizes {low}..{'' if high is None else high}, "
                    f"not {batch_size}; change batch_sizes or export with a wider range"
                )
                raise ModelFileError(msg)
            shape = tuple(batch_size if d == BATCH else int(d) for d in spec.dims)
            inputs[spec.name] = _random(
                rng, spec.dtype, shape, self.int_high.get(spec.name, INT_HIGH_DEFAULT), self.float_range.get(spec.name)
            )
        return inputs

    def inputs_hint(self) -> str:
        """The bounds integer inputs were drawn under, and the option that changes them."""
        if not self.int_high:
            return ""
        bounds = set(self.int_high.values())
        if len(bounds) == 1:
            drawn = f"[0, int_high) = [0, {bounds.pop()})"
        else:
            drawn = "[0, int_high): " + ", ".join(f"{name} [0, {high})" for name, high in self.int_high.items())
        example = ", ".join(f"{name}: ROWS" for name in self.int_high)
        return f"integer inputs are drawn from {drawn}: give int_high per input (int_high: {{{example}}})"

    def input_files(self) -> tuple[Path, ...]:
        return (self.path, *getattr(self, "_data_files", ()))

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The batch axes of the inputs; axis 0 of every output."""
        axes = {spec.name: {i: BATCH for i, d in enumerate(spec.dims) if d == BATCH} for spec in self.inputs}
        axes.update({name: {0: BATCH} for name in self.output_names})
        return {name: value for name, value in axes.items() if value}

    def params(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "file_bytes": self.path.stat().st_size,
            "parameters": self._parameters,
            "inputs": {
                spec.name: [spec.dtype, [str(d) if d == BATCH else d for d in spec.dims]] for spec in self.inputs
            },
            "int_high": dict(self.int_high),
            "float_range": {name: list(bounds) for name, bounds in self.float_range.items()},
        }


def _check_shapes_option(model: str, shapes: Any) -> dict[str, tuple[int | str, ...]]:
    """``shapes: {input: [dims]}``, each dim a size >= 0 or ``batch``."""
    if shapes is None:
        return {}
    hint = f"e.g. shapes: {{input_name: [{BATCH}, 3, 224, 224]}}"
    if not isinstance(shapes, dict):
        raise ValueError(f"model '{model}': option shapes must be a mapping of input name to a list of sizes ({hint})")
    checked: dict[str, tuple[int | str, ...]] = {}
    for name, dims in shapes.items():
        ok = isinstance(dims, list | tuple) and all(
            d == BATCH or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in dims
        )
        if not isinstance(name, str) or not ok:
            msg = (
                f"model '{model}': option shapes: input {name!r} needs a list of sizes >= 0 or '{BATCH}' "
                f"({hint}), got {dims!r}"
            )
            raise ValueError(msg)
        checked[name] = tuple(dims)
    return checked


def _int_high_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"must be an integer >= 1 (integer inputs are drawn from [0, int_high)), got {value!r}"
    return None


def _float_range_problem(value: Any) -> str | None:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        and value[0] < value[1]
    )
    if not ok:
        return f"must be a pair [low, high] of finite numbers with low < high (floats drawn uniformly), got {value!r}"
    return None


def _per_input(
    model: str, option: str, value: Any, problem: Callable[[Any], str | None], allowed: str, example: str
) -> Any:
    """An option that takes one value for every input or a mapping by input name, each value
    checked by ``problem``; the names are checked against the file's inputs once it is read."""
    if value is None:
        return None
    if isinstance(value, dict):
        for name, each in value.items():
            found = problem(each) if isinstance(name, str) else f"needs input names as keys, got {name!r}"
            if found:
                raise ValueError(f"model '{model}': option {option}: input {name!r} {found}")
        if option == "float_range":
            return {name: (float(each[0]), float(each[1])) for name, each in value.items()}
        return dict(value)
    found = problem(value)
    if found:
        msg = f"model '{model}': option {option} {found}; give {allowed}, or a mapping by input name, e.g. {example}"
        raise ValueError(msg)
    return (float(value[0]), float(value[1])) if option == "float_range" else value


def _random(
    rng: np.random.Generator, dtype: str, shape: tuple[int, ...], int_high: int, float_range: tuple[float, float] | None
) -> np.ndarray:
    import numpy as np

    dt = np.dtype(dtype)
    if dt.kind == "f" and float_range is not None:
        return rng.uniform(float_range[0], float_range[1], size=shape).astype(dt)
    if dt.kind == "f":
        return rng.standard_normal(shape, dtype=np.float64 if dt.itemsize == 8 else np.float32).astype(dt)
    if dt.kind in "iu":
        return rng.integers(0, min(int_high, int(np.iinfo(dt).max) + 1), size=shape, dtype=dt)
    return rng.integers(0, 2, size=shape).astype(np.bool_)


# ============================================================================================
# ONNX files
# ============================================================================================


def _onnx_tensors(proto: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse initializers, node attributes, subgraphs,
    functions (what may carry external data)."""

    def graph_tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: Any) -> Iterator[Any]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from graph_tensors(sub)

    yield from graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from node_tensors(node)


def _check_external_data(proto: Any, path: Path) -> tuple[Path, ...]:
    """Refuse external data outside the model's folder: an ONNX file must not make a runtime read
    an arbitrary file (``/etc/shadow``, ``../../secrets``) into a tensor. Returns the data files."""
    import onnx

    folder = path.parent.resolve()
    files: dict[Path, None] = {}
    for tensor in _onnx_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        name = tensor.name or "(unnamed)"
        if not location:
            raise ModelFileError(f"{path}: tensor '{name}' is stored as external data but names no file (location)")
        if os.path.isabs(location) or PurePosixPath(location).is_absolute() or re.match(r"^[A-Za-z]:", location):
            msg = (
                f"{path}: tensor '{name}' reads external data from the absolute path {location!r}; refused: "
                f"external data must lie in the model's folder ({folder}): save the model with a relative location"
            )
            raise ModelFileError(msg)
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            msg = (
                f"{path}: tensor '{name}' reads external data from {location!r}, outside the model's folder "
                f"({folder}); refused: keep the data file next to the model"
            )
            raise ModelFileError(msg)
        if not target.is_file():
            msg = (
                f"{path}: tensor '{name}' reads external data from {location!r}, which is missing; "
                "copy it next to the model"
            )
            raise ModelFileError(msg)
        files[target] = None
    return tuple(files)


class OnnxFile(_FileModel):
    name = "onnx-file"
    description = "a model given as an ONNX file (option path; shorthand model: {onnx: file.onnx}); no PyTorch form"
    kind = "ONNX"
    file_shorthand = FileShorthand("onnx", what="ONNX", options=FILE_MODEL_OPTIONS[1:], suffixes=(".onnx",))

    def _read(self) -> tuple[list[_RawInput], tuple[str, ...], int]:
        """The graph's inputs (initializers left out), outputs and parameter count, from the file's
        protobuf without its external data, after the external-data and checker checks."""
        import onnx

        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError, a short read, ...: all mean "not a usable file"
            msg = (
                f"{self.path}: not a readable ONNX model ({type(exc).__name__}: {exc}); "
                "is the file complete (not truncated) and an .onnx model? Export it again"
            )
            raise ModelFileError(msg) from None
        self._data_files = _check_external_data(proto, self.path)
        try:
            onnx.checker.check_model(str(self.path))
        except Exception as exc:  # ValidationError, or a C++ error on a damaged file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.path}: fails the ONNX checker: {first}; export the model again") from None
        graph = proto.graph
        initializers = {t.name for t in graph.initializer}
        raw: list[_RawInput] = []
        for value in graph.input:
            if value.name in initializers:  # IR < 4 lists initializers as inputs too
                continue
            if value.type.WhichOneof("value") != "tensor_type":
                raise ModelFileError(f"{self.path}: input '{value.name}' is not a tensor; bench feeds tensors only")
            tensor_type = value.type.tensor_type
            try:
                dtype = str(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
            except Exception:
                dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
            if dtype == "object":
                dtype = "string"
            dims: tuple[int | None, ...] | None = None
            labels: tuple[str, ...] = ()
            if tensor_type.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
                labels = tuple(d.dim_param for d in tensor_type.shape.dim)
            raw.append(_RawInput(value.name, dtype, dims, labels))
        if not raw:
            raise ModelFileError(f"{self.path}: the model has no inputs to feed")
        outputs = tuple(value.name for value in graph.output)
        parameters = sum(math.prod(t.dims) for t in graph.initializer)
        return raw, outputs, parameters

    def onnx_file(self) -> Path:
        return self.path

    def torch_support(self) -> Support:
        return Support.no(
            "model given as an ONNX file: no PyTorch form; run it on an ONNX-based backend "
            "(onnxruntime, openvino), or give a torch.export program (model: {torch_export: file.pt2})"
        )

    def build_torch(self) -> Any:
        raise ModelFileError(f"{self.path}: {self.torch_support().reason}")


# ============================================================================================
# torch.export programs
# ============================================================================================
#
# torch.export.load is NOT pickle-free (torch 2.13, torch/export/pt2_archive/_package.py and
# torch/_export/serde/serialize.py, read for this module):
# - weights and constants whose payload config says use_pickle (tensor subclasses) are read with
#   torch.load(weights_only=False); "opaque_obj_" constants with pickle.loads; "custom_obj_" ones
#   (TorchBind) with torch._C._pickle_load_obj; legacy archives' "<model>.pt" weight files likewise;
# - the example inputs are read with torch.load(weights_only=True) but, should that fail, again
#   with weights_only=False;
# - symbolic shapes ("expr_str") go through sympy.sympify, which is eval;
# - ExportedProgram.module() exec()s the archive's "guards_code" strings into a guard function that
#   runs on every call (checked here: a saved guard "__import__('os').system(...)" runs the
#   command on the first forward), and FX generates Python source from the graph's names;
# - AOTInductor entries are compiled shared libraries.
# So a .pt2 file is audited before torch sees it: the archive may hold only the plain layout
# (JSON graph, raw tensor payloads, weights_only-loadable example inputs); no pickled payload,
# custom or opaque object, compiled code or legacy file; every name an identifier; every
# symbolic expression, guard and call target within small allowlists (parsed with ast, never
# evaluated). This closes the code paths above; it is defence in depth, not a sandbox: torch's
# deserializer was not written for hostile input, so load only files you would run as code.

#: serialized torch ScalarType -> numpy dtype (torch/_export/serde/schema.py, ScalarType; stable
#: numbers of the serialization format, checked against torch by the tests)
_SCALAR_TYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32", 8: "float64"}
_SCALAR_TYPES |= {12: "bool", 13: "bfloat16", 9: "complex32", 10: "complex64", 11: "complex128"}
#: the archive layout torch.export.save writes (torch/export/pt2_archive/constants.py)
_PT2_TOP_FILES = frozenset({"archive_format", "archive_version", "byteorder"})
_MODEL_JSON = re.compile(r"models/([A-Za-z0-9_]+)\.json")
_WEIGHT_FILE = re.compile(r"data/weights/(weight_[0-9]+|[A-Za-z0-9_]+_weights_config\.json)")
_CONSTANT_FILE = re.compile(r"data/constants/(tensor_[0-9]+|[A-Za-z0-9_]+_constants_config\.json)")
_SAMPLE_FILE = re.compile(r"data/sample_inputs/[A-Za-z0-9_]+\.pt")
_EXTRA_FILE = re.compile(r"extra/[A-Za-z0-9_.-]+")
#: the most bytes of JSON read from an archive (a graph of a large model is a few MB)
_MAX_JSON_BYTES = 256 << 20
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
#: sympy and torch.utils._sympy functions a serialized shape expression may call (srepr output)
_SYMPY_CALLS = frozenset(
    {
        "Symbol",
        "Integer",
        "Float",
        "Rational",
        "Add",
        "Mul",
        "Pow",
        "Max",
        "Min",
        "Abs",
        "Mod",
        "floor",
        "ceiling",
        "sqrt",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "StrictLessThan",
        "LessThan",
        "StrictGreaterThan",
        "GreaterThan",
        "Equality",
        "Unequality",
        "And",
        "Or",
        "Not",
        "Piecewise",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
    }
)
_SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "int_oo", "True", "False"})
#: what a guard may call on an input (``L['x'].size()[0]``)
_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_PLAIN_NODES = (
    ast.Expression,
    ast.Compare,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.keyword,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
    ast.boolop,
    ast.expr_context,
)


class _Refused(Exception):
    """An archive entry outside what the audit admits."""


def _check_ast(text: str, what: str, guard: bool) -> None:
    """Admit an expression only when every node is arithmetic, a comparison, a constant, an allowed
    name or call: sympy constructors and symbols for shape expressions, ``L['input'].size()[0]``
    chains for guards. Parsed with ast, never evaluated."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise _Refused(f"{what} {text[:80]!r} is not a plain expression") from None
    for node in ast.walk(tree):
        if isinstance(node, _PLAIN_NODES):
            continue
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str) and not _IDENT.fullmatch(value):
                raise _Refused(f"{what} {text[:80]!r} holds the string {value[:40]!r}")
            if not isinstance(value, bool | int | float | str):
                raise _Refused(f"{what} {text[:80]!r} holds a {type(value).__name__} constant")
            continue
        if isinstance(node, ast.Name):
            if guard and node.id in ("L", "inf"):
                continue
            if not guard and (node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES or _SYMBOL.fullmatch(node.id)):
                continue
            raise _Refused(f"{what} {text[:80]!r} uses the name {node.id!r}")
        if isinstance(node, ast.Call):
            func = node.func
            if not guard and isinstance(func, ast.Name) and func.id in _SYMPY_CALLS:
                continue
            if guard and isinstance(func, ast.Attribute) and func.attr in _GUARD_METHODS and not node.keywords:
                continue
            raise _Refused(f"{what} {text[:80]!r} calls {ast.unparse(func)[:40]!r}")
        if guard and isinstance(node, ast.Attribute) and node.attr in _GUARD_METHODS:
            continue
        if guard and isinstance(node, ast.Subscript):
            continue
        raise _Refused(f"{what} {text[:80]!r} contains {type(node).__name__}")


def _check_target(target: str) -> None:
    """Call targets torch resolves from the torch, operator and math namespaces: ATen and other
    registered operators, Python operators, math functions and torch's symbolic helpers only."""
    ok = (
        target.startswith(("torch.ops.", "_operator.", "math."))
        or re.fullmatch(r"torch\.(sym_[a-z_]+|_sym_[a-z_]+|sym_not)", target)
    ) and _DOTTED.fullmatch(target)
    if not ok:
        raise _Refused(f"graph calls {target[:80]!r} (admitted: torch.ops.*, _operator.*, math.*, torch.sym_*)")


_NAME_KEYS = frozenset(
    {"name", "parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name", "fqn", "path_name", "arg"}
)


def _walk_json(value: Any, key: str = "") -> None:
    """Audit every string of a model's JSON: no line breaks but ``\\n`` (FX writes some strings into
    generated code as comments), names dotted identifiers, expressions and targets allowlisted."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not (_DOTTED.fullmatch(k) or k == ""):
                raise _Refused(f"key {str(k)[:60]!r} is not a name")
            if k == "expr_str" and isinstance(v, str):
                _check_ast(v, "shape expression", guard=False)
            elif k == "target" and isinstance(v, str):
                _check_target(v)
            elif k == "guards_code" and isinstance(v, list):
                for code in v:
                    if not isinstance(code, str):
                        raise _Refused("a guard is not a string")
                    _check_ast(code, "guard", guard=True)
            _walk_json(v, k)
    elif isinstance(value, list):
        for item in value:
            _walk_json(item, key)
    elif isinstance(value, str):
        if re.search(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\x85]", value):
            raise _Refused(f"the value of {key!r} holds a control character")
        if key in _NAME_KEYS and value and not _DOTTED.fullmatch(value):
            raise _Refused(f"{key} {value[:60]!r} is not a (dotted) identifier")


def _read_json(archive: zipfile.ZipFile, member: str) -> Any:
    info = archive.getinfo(member)
    if info.file_size > _MAX_JSON_BYTES:
        raise _Refused(f"{member} is {info.file_size:,} bytes of JSON")
    return json.loads(archive.read(member))


@dataclass(frozen=True)
class _Audit:
    """What the audit read: the archive's root folder and the JSON of the program named 'model'."""

    root: str
    program: dict[str, Any]


def audit_pt2(path: Path) -> _Audit:
    """Check a torch.export archive against the layout and allowlists above, without torch."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        msg = (
            f"{path}: not a torch.export archive ({exc}); save the program with torch.export.save(program, 'model.pt2')"
        )
        raise ModelFileError(msg) from None
    try:
        with archive:
            names = archive.namelist()
            roots = {name.split("/", 1)[0] for name in names}
            if len(roots) != 1 or not all("/" in name for name in names):
                raise _Refused("entries outside one root folder (not the layout torch.export.save writes)")
            root = roots.pop()
            models: dict[str, Any] = {}
            for name in names:
                rel = name[len(root) + 1 :]
                if rel in _PT2_TOP_FILES or rel.startswith(".data/") or rel.endswith("/"):
                    continue
                if match := _MODEL_JSON.fullmatch(rel):
                    models[match.group(1)] = _read_json(archive, name)
                elif rel.endswith("_config.json") and (_WEIGHT_FILE.fullmatch(rel) or _CONSTANT_FILE.fullmatch(rel)):
                    for fqn, meta in (_read_json(archive, name).get("config") or {}).items():
                        if meta.get("use_pickle"):
                            raise _Refused(f"{rel}: '{fqn}' is a pickled payload")
                        if not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                            raise _Refused(f"{rel}: '{fqn}' is a {meta.get('path_name')!r} object, not a tensor")
                elif not (
                    _WEIGHT_FILE.fullmatch(rel)
                    or _CONSTANT_FILE.fullmatch(rel)
                    or _SAMPLE_FILE.fullmatch(rel)
                    or _EXTRA_FILE.fullmatch(rel)
                ):
                    raise _Refused(f"entry {rel!r} is not part of a plain torch.export archive")
            fmt = (
                archive.read(f"{root}/archive_format").decode(errors="replace")
                if f"{root}/archive_format" in names
                else ""
            )
            if fmt != "pt2":
                raise _Refused("no archive_format 'pt2' entry")
            if "model" not in models:
                raise _Refused("no program named 'model' (models/model.json)")
            for program in models.values():
                _walk_json(program)
    except _Refused as refused:
        msg = (
            f"{path}: refused to load: {refused}. bench loads only plain torch.export archives (saved with "
            "torch.export.save from a program of tensors and aten operators), never pickled objects or code"
        )
        raise ModelFileError(msg) from None
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, AttributeError, TypeError) as exc:
        raise ModelFileError(
            f"{path}: a damaged torch.export archive ({type(exc).__name__}: {exc}); save it again"
        ) from None
    return _Audit(root, models["model"])


def _size(entry: dict[str, Any]) -> tuple[int | None, int | None, str]:
    """A serialized size: (fixed size or None, the example's size, the symbol when dynamic)."""
    if "as_int" in entry:
        return int(entry["as_int"]), int(entry["as_int"]), ""
    expr = entry.get("as_expr") or {}
    hint = (expr.get("hint") or {}).get("as_int")
    match = re.fullmatch(r"Symbol\('([A-Za-z0-9_]+)'.*\)|([a-z]+[0-9]+)", str(expr.get("expr_str", "")))
    return None, hint, (match.group(1) or match.group(2)) if match else ""


def _flat_inputs(program: dict[str, Any]) -> bool:
    """Whether the program's forward takes positional tensors only (no nesting, no keywords)."""
    calls = program["graph_module"].get("module_call_graph") or []
    spec_text = next((c["signature"]["in_spec"] for c in calls if c.get("fqn") == "" and c.get("signature")), None)
    if spec_text is None:
        return True
    spec = json.loads(spec_text)[1]
    args, kwargs = spec["children_spec"]
    return (
        spec["type"] == "builtins.tuple"
        and args["type"] == "builtins.tuple"
        and all(child["type"] is None for child in args["children_spec"])
        and not kwargs["children_spec"]
    )


@functools.cache
def _program_module_class() -> type[torch.nn.Module]:
    """The wrapper class, defined on first use so that importing this module needs no torch."""
    from torch import nn

    class ProgramModule(nn.Module):
        """``ExportedProgram.module()`` with a working ``eval()``: the unlifted module refuses
        ``train()``/``eval()``, which the harness and ONNX exporters call; its graph is already
        inference-mode, so the mode is recorded here and not passed down."""

        def __init__(self, program_module: nn.Module) -> None:
            super().__init__()
            self.program = program_module

        def train(self, mode: bool = True) -> ProgramModule:
            self.training = mode
            return self

        def forward(self, *inputs: Any) -> Any:
            return self.program(*inputs)

    return ProgramModule


class TorchExportFile(_FileModel):
    name = "torch-export-file"
    description = (
        "a model given as a torch.export program (.pt2, torch.export.save; option path; "
        "shorthand model: {torch_export: file.pt2}); audited, never unpickled"
    )
    kind = "torch.export (.pt2)"
    file_shorthand = FileShorthand(
        "torch_export", what="torch.export (.pt2)", options=FILE_MODEL_OPTIONS[1:], suffixes=(".pt2",)
    )

    def _read(self) -> tuple[list[_RawInput], tuple[str, ...], int]:
        """Inputs (names, dtypes, sizes, batch range), outputs and parameter count from the audited
        program's JSON signature: no torch import, nothing deserialized."""
        program = audit_pt2(self.path).program
        try:
            graph_module = program["graph_module"]
            graph = graph_module["graph"]
            specs = graph_module["signature"]["input_specs"]
            ranges = program.get("range_constraints") or {}
            if not _flat_inputs(program):
                msg = (
                    f"{self.path}: the program takes nested or keyword inputs; "
                    "export a forward(*tensors) taking tensors as positional arguments"
                )
                raise ModelFileError(msg)
            raw: list[_RawInput] = []
            parameters = 0
            for spec in specs:
                if "parameter" in spec:
                    name = spec["parameter"]["arg"]["name"]
                    parameters += math.prod(int(s.get("as_int", 0)) for s in graph["tensor_values"][name]["sizes"])
                if "user_input" not in spec:
                    continue
                arg = spec["user_input"]["arg"]
                if "as_tensor" not in arg:
                    kind = next(iter(arg), "?")
                    raise ModelFileError(
                        f"{self.path}: the program takes a non-tensor input ({kind}); bench feeds tensors only"
                    )
                name = arg["as_tensor"]["name"]
                meta = graph["tensor_values"][name]
                dtype = _SCALAR_TYPES.get(int(meta["dtype"]), f"scalar type {meta['dtype']}")
                sizes = [_size(s) for s in meta["sizes"]]
                batch_min = batch_max = None
                if sizes and sizes[0][0] is None and sizes[0][2] in ranges:
                    bound = ranges[sizes[0][2]]
                    batch_min = bound.get("min_val") if isinstance(bound.get("min_val"), int) else None
                    batch_max = bound.get("max_val") if isinstance(bound.get("max_val"), int) else None
                raw.append(
                    _RawInput(
                        name,
                        dtype,
                        tuple(s[0] for s in sizes),
                        tuple(s[2] for s in sizes),
                        tuple(s[1] for s in sizes),
                        batch_min,
                        batch_max,
                    )
                )
            n_outputs = sum(1 for spec in graph_module["signature"]["output_specs"] if "user_output" in spec)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            msg = f"{self.path}: the program's signature cannot be read ({type(exc).__name__}: {exc}); save it again"
            raise ModelFileError(msg) from None
        if not raw:
            raise ModelFileError(f"{self.path}: the program has no tensor inputs to feed")
        # "output_N": the program's own output names are internal value names ("add_1"), which
        # ONNX exports would clash with
        return raw, tuple(f"output_{i}" for i in range(n_outputs)), parameters

    def build_torch(self) -> torch.nn.Module:
        """``torch.export.load(path).module()`` in eval mode, after the audit (again: the file may
        have changed since) and a weights-only read of the example inputs."""
        import io

        import torch

        audit = audit_pt2(self.path)
        with zipfile.ZipFile(self.path) as archive:
            for name in archive.namelist():
                if _SAMPLE_FILE.fullmatch(name[len(audit.root) + 1 :]):
                    try:
                        torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                    except Exception as exc:
                        msg = (
                            f"{self.path}: refused to load: the example inputs ({name}) need more than a "
                            f"weights-only read ({type(exc).__name__}); "
                            "save a program whose example inputs are plain tensors"
                        )
                        raise ModelFileError(msg) from None
        program = torch.export.load(str(self.path))
        return _program_module_class()(program.module()).eval()


@hookimpl
def bench_register_models(register: RegisterModel) -> None:
    register(OnnxFile)
    register(TorchExportFile)
