"""TensorRT: the model's ONNX (bench's export, or the user's file) built into an engine for the cell's
batch, run with ``execute_async_v3`` on a CUDA stream of its own.

Only TensorRT 10's API is used: ``build_serialized_network`` -> ``Runtime.deserialize_cuda_engine`` ->
``IExecutionContext.set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``; enum members by
name; the ONNX parser. Precision is a property of the model file, made before the build and built as
a strongly typed network (TensorRT 10's way, and the only one in 11):

- fp32: the fp32 ONNX;
- fp16: the ONNX converted to fp16 weights and compute, fp32 inputs and outputs (the same recipe as
  the onnxruntime backend's fp16);
- int8: explicit quantisation, symmetric Q/DQ nodes (zero points of 0, as TensorRT requires) written by
  ONNX Runtime's static QDQ quantiser calibrated on
  the model's calibration inputs;
- bf16: the fp16 recipe's choice of ops retyped to bf16, weights rounded from fp32
  (:mod:`plugins.bf16_onnx`), on GPUs of compute capability 8.0 and newer.

Engines and the timing cache go to the cross-run cache, keyed by the ONNX file's content, TensorRT's
version, the GPU, the precision recipe, the optimisation profile and the options; ``prepare_s``
splits into ``conversion_s`` and ``engine_build_s`` in the session's info, with cache hits and
misses. ``executed_precision`` comes from the engine inspector (layers per precision), not from what
the cell asked for.

CUDA goes through NVIDIA's ``cuda-bindings`` (``cuda.bindings.runtime``): every call returns
``(error, *values)``, checked by :func:`_ok`; nothing manages lifetimes, so :meth:`TrtSession.close`
frees every buffer, the stream and the graph. pycuda, which needs CUDA headers to build, is not used.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from harness.api import (
    Backend,
    CallTimes,
    Cell,
    Model,
    Option,
    RegisterBackend,
    Session,
    SkipCell,
    Support,
    cache_dir,
    cached,
    digest,
    hookimpl,
    module_available,
    onnx_model,
    tf32_allowed,
    tf32_support,
)
from plugins.bf16_onnx import bf16_file, no_bf16_tensor_cores

OPTIONS: dict[str, Option] = {
    "opt_level": Option(
        "builder optimisation level (TensorRT's 0-5)",
        type=int,
        minimum=0,
        default=3,
        check=lambda v: None if v <= 5 else f"must be at most 5, got {v}",
    ),
    "workspace_mb": Option("the builder's workspace memory pool limit, MiB", type=int, minimum=16, default=1024),
    "cuda_graph": Option("run each call as one captured CUDA graph launch", type=bool, default=False),
    "transfers": Option(
        "include: each call copies its inputs to the GPU and its outputs back (host latency); exclude: "
        "inputs stay bound on the GPU (compute only)",
        choices=("exclude", "include"),
        default="exclude",
    ),
    "calibration_samples": Option("int8: samples the Q/DQ quantiser calibrates on", type=int, minimum=1, default=512),
    "tf32": Option(
        "let fp32 layers use TF32 tensor cores (TensorRT's and trtexec's default; off here, so that fp32 is "
        "fp32 as on the other backends)",
        type=bool,
        default=False,
    ),
}
#: bumped when a recipe (conversion, build settings) changes, so older cached engines are not reused
RECIPE = 2
#: words of the engine inspector's "Format/Datatype" by the precision they name (matched as whole
#: words, case aside): classic layers write formats ("Row major linear FP16 format", "Channel major
#: INT8 format where channel % 16 == 0", "Row major linear FP32"), Myelin layers bare names ("Half",
#: "Int8", "Float", "BFloat16"); UInt8 is a word of its own, not int8
_PRECISION_WORDS = {
    "fp32": "fp32", "float": "fp32", "fp16": "fp16", "half": "fp16", "bf16": "bf16", "bfloat16": "bf16",
    "int8": "int8", "fp8": "fp8", "int4": "int4", "fp4": "fp4",
}  # fmt: skip


def _cudart() -> Any:
    """``cuda.bindings.runtime`` (cuda-bindings >= 12.6), or ``cuda.cudart`` of older cuda-python."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def _ok(result: Any) -> Any:
    """Check a cuda-bindings call's ``(error, *values)``: the values (one, or a tuple), else raise."""
    cudart = _cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def tensor_precision(tensor: Any) -> str | None:
    """The precision a tensor of the inspector's JSON is in, from its data type alone (never its name),
    or None where that says none (``N/A due to dynamic shapes``, integers, booleans): TensorRT 8.6-10
    write one ``Format/Datatype`` ("Row major linear FP16 format", or "Half"), 11 a ``Datatype`` ("Half")
    apart from the ``Format`` ("(Linear) Row major linear format")."""
    if not isinstance(tensor, dict):
        return None
    text = str(tensor.get("Format/Datatype") or tensor.get("Datatype") or tensor.get("DataType") or "")
    for word in re.findall(r"[A-Za-z]+[0-9]*", text):
        found = _PRECISION_WORDS.get(word.lower())
        if found:
            return found
    return None


def layer_precisions(engine_json: str) -> dict[str, int]:
    """Layers per precision in the inspector's JSON (``ProfilingVerbosity.DETAILED``): each layer
    counted once, by the data type of its first input (what it computes on: an int8 GEMM with a
    fused dequantisation outputs float), else of its first output."""
    counts: dict[str, int] = {}
    for layer in json.loads(engine_json).get("Layers", []):
        if not isinstance(layer, dict):
            continue
        first = [(layer.get(side) or [None])[0] for side in ("Inputs", "Outputs")]
        precision = tensor_precision(first[0]) or tensor_precision(first[1])
        if precision:
            counts[precision] = counts.get(precision, 0) + 1
    return counts


def executed_precision(counts: dict[str, int]) -> str | None:
    """The lowest precision that most of the engine's layers computed in: the engine's precision
    unless fp32 layers dominate."""
    if not counts:
        return None
    return max(counts, key=lambda p: (counts[p], p != "fp32"))


def int8_recipe(model: Model, conv: Any, cell: Cell, samples: int, workdir: Path, info: dict[str, Any]) -> Any:
    """The Q/DQ int8 model TensorRT builds: ONNX Runtime's static QDQ quantiser, min-max calibrated on
    the model's calibration inputs, symmetric (zero points of 0, the only ones TensorRT's parser
    takes) for activations and weights, full 8-bit range, Q/DQ at the inputs of GEMMs and
    convolutions (``onnxruntime_backend.TENSORRT_QDQ``)."""
    from plugins.onnxruntime_backend import _quantize

    quant = {"quantization": "static", "calibration": "minmax", "calibration_samples": samples, "symmetric": True}
    return _quantize(model, conv, cell, quant, workdir, info)


class TrtSession(Session):
    """An engine's execution context with its IO bound once; :meth:`run` enqueues and synchronises."""

    def __init__(self, engine: Any, trt: Any, device: int, inputs: dict[str, Any], graph: bool, transfers: bool,
                 info: dict[str, Any]) -> None:  # fmt: skip
        super().__init__()
        self.info = info
        self._engine = engine
        #: the CUDA device: the runtime's current device is per thread, so each thread that runs a
        #: call selects it once (LoadGen's replicas and the completer are other threads than prepare's)
        self._device_index = device
        self._selected = threading.local()  # .device set in each thread that selected it (ids get reused)
        self._device: dict[str, int] = {}
        self._host_ptrs: list[int] = []
        self._graph_exec: Any = None
        self._graph: Any = None
        self._events: tuple[Any, ...] = ()
        self._stream: Any = None
        try:
            self._setup(trt, inputs, graph, transfers)
        except BaseException:
            self.close()
            raise

    def _on_device(self) -> None:
        if getattr(self._selected, "device", None) != self._device_index:
            _ok(_cudart().cudaSetDevice(self._device_index))
            self._selected.device = self._device_index

    def _setup(self, trt: Any, inputs: dict[str, Any], graph: bool, transfers: bool) -> None:
        import numpy as np

        cudart = _cudart()
        engine = self._engine
        self._on_device()
        self._context = engine.create_execution_context()
        # non-blocking: work on the legacy default stream (torch's, in the same process) neither waits
        # for this one nor breaks its graph capture
        self._stream = _ok(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        self._host: dict[str, np.ndarray] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._transfers = transfers
        self._events = (_ok(cudart.cudaEventCreate()), _ok(cudart.cudaEventCreate()))
        if graph:
            what = "the CUDA graph's launch" + (" (its copies to and from the host inside)" if transfers else "")
        else:
            what = "execute_async_v3" + (" (the copies to and from the host outside)" if transfers else "")
        self._timer = CallTimes(what)
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(name)
                self._context.set_input_shape(name, tuple(inputs[name].shape))
            else:
                self._outputs.append(name)
        for name in self._inputs + self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            except TypeError as exc:  # bf16 and fp8 have no numpy type
                kind = engine.get_tensor_dtype(name)
                msg = f"the engine's tensor '{name}' is {kind}, which numpy cannot hold: give the model fp32 or fp16 IO"
                raise SkipCell(f"{msg} ({exc})") from exc
            nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
            self._device[name] = _ok(cudart.cudaMalloc(nbytes))
            pointer = _ok(cudart.cudaMallocHost(nbytes))  # pinned: copies run at the bus's speed
            self._host_ptrs.append(pointer)
            buffer = (ctypes.c_byte * nbytes).from_address(pointer)
            self._host[name] = np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
            self._context.set_tensor_address(name, self._device[name])
        self.set_inputs({name: inputs[name] for name in self._inputs})
        self.info["cuda_graph_used"] = self._capture() if graph else False

    def _copy(self, name: str, to_device: bool) -> None:
        cudart = _cudart()
        host = self._host[name]
        kinds = cudart.cudaMemcpyKind
        kind = kinds.cudaMemcpyHostToDevice if to_device else kinds.cudaMemcpyDeviceToHost
        dst, src = (self._device[name], host.ctypes.data) if to_device else (host.ctypes.data, self._device[name])
        _ok(cudart.cudaMemcpyAsync(dst, src, host.nbytes, kind, self._stream))

    def call_times(self) -> CallTimes:
        return self._timer

    def _enqueue(self, timed: bool = False) -> None:
        cudart = _cudart()
        if self._transfers:
            for name in self._inputs:
                self._copy(name, True)
        if timed:
            _ok(cudart.cudaEventRecord(self._events[0], self._stream))
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT's execute_async_v3 failed (see the worker log for TensorRT's message)")
        if timed:
            _ok(cudart.cudaEventRecord(self._events[1], self._stream))
        if self._transfers:
            for name in self._outputs:
                self._copy(name, False)

    def _capture(self) -> bool:
        """One CUDA graph of a whole call, captured in this thread's mode (other threads' CUDA calls
        go on); TensorRT asks for an enqueue before capture (allocation). An engine whose work
        cannot be captured runs without a graph, with the reason in ``cuda_graph_note``."""
        cudart = _cudart()
        self._enqueue()
        _ok(cudart.cudaStreamSynchronize(self._stream))
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _ok(cudart.cudaStreamBeginCapture(self._stream, mode))
        failed: Exception | None = None
        try:
            self._enqueue()
        except Exception as exc:  # the capture must end whatever happened, or the stream stays capturing
            failed = exc
        ended = cudart.cudaStreamEndCapture(self._stream)
        try:
            self._graph = _ok(ended)
            if failed is None:
                self._graph_exec = _ok(cudart.cudaGraphInstantiate(self._graph, 0))
        except RuntimeError as exc:
            failed = failed or exc
        if failed is None:
            return True
        if self._graph is not None:
            cudart.cudaGraphDestroy(self._graph)
        self._graph = self._graph_exec = None
        cudart.cudaGetLastError()  # clear the capture's error, as trtexec does
        self.info["cuda_graph_note"] = f"the engine's work could not be captured in a CUDA graph, run without: {failed}"
        return False

    def run(self) -> None:
        cudart = _cudart()
        self._on_device()
        timed = self._timer.recording
        t0 = time.perf_counter_ns()
        if self._graph_exec is not None:
            if timed:
                _ok(cudart.cudaEventRecord(self._events[0], self._stream))
            _ok(cudart.cudaGraphLaunch(self._graph_exec, self._stream))
            if timed:
                _ok(cudart.cudaEventRecord(self._events[1], self._stream))
        else:
            self._enqueue(timed)
        t1 = time.perf_counter_ns()
        _ok(cudart.cudaStreamSynchronize(self._stream))
        if timed:
            elapsed_ms = _ok(cudart.cudaEventElapsedTime(*self._events))
            self._timer.add(float(elapsed_ms) * 1e6, t1 - t0)

    def outputs(self) -> dict[str, Any]:
        import numpy as np

        self.run()
        for name in self._outputs:
            self._copy(name, False)
        _ok(_cudart().cudaStreamSynchronize(self._stream))
        out = {}
        for name in self._outputs:
            array = np.array(self._host[name])
            out[name] = array.astype(np.float32) if array.dtype == np.float16 else array
        return out

    def set_inputs(self, arrays: dict[str, Any]) -> None:
        import numpy as np

        self._on_device()
        for name in self._inputs:
            np.copyto(self._host[name], arrays[name], casting="same_kind")
            self._copy(name, True)
        _ok(_cudart().cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        """Free what was made, once (a failed set-up frees what it had made; a second close is harmless)."""
        cudart = _cudart()
        cudart.cudaSetDevice(self._device_index)
        if self._graph_exec is not None:
            cudart.cudaGraphExecDestroy(self._graph_exec)
        if self._graph is not None:
            cudart.cudaGraphDestroy(self._graph)
        for pointer in self._device.values():
            cudart.cudaFree(pointer)
        for pointer in self._host_ptrs:
            cudart.cudaFreeHost(pointer)
        for event in self._events:
            cudart.cudaEventDestroy(event)
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._graph = self._graph_exec = self._stream = None
        self._device, self._host_ptrs, self._events = {}, [], ()


class TensorRTBackend(Backend):
    name = "tensorrt"
    description = (
        "TensorRT engines built from the model's ONNX for the cell's batch (fp32, fp16, bf16 and int8 as strongly "
        "typed networks of converted or Q/DQ models)"
    )
    devices = ("cuda",)
    precisions = ("fp32", "fp16", "bf16", "int8")
    options: ClassVar[dict[str, Option]] = OPTIONS
    packages = ("tensorrt", "tensorrt-cu12", "cuda-bindings", "cuda-python")

    @classmethod
    def availability(cls) -> Support:
        if not module_available("tensorrt").ok:
            return Support.no(
                "python package 'tensorrt' is not installed: pip install 'bench[tensorrt]' --extra-index-url "
                "https://pypi.nvidia.com (its libraries come from NVIDIA's package index)"
            )
        bindings = module_available("cuda.bindings")  # cuda-bindings; older cuda-python had cuda.cudart
        if bindings.ok or module_available("cuda.cudart").ok:
            return Support.yes()
        return bindings

    @classmethod
    def supports(cls, cell: Cell) -> Support:
        base = super().supports(cell)
        if not base.ok:
            return base
        if cell.precision == "int8":
            quantiser = module_available("onnxruntime")
            if not quantiser.ok:
                return Support.no(f"int8 needs ONNX Runtime's Q/DQ quantiser: {quantiser.reason}")
        if "calibration_samples" in cell.backend_options and cell.precision != "int8":
            return Support.no("option calibration_samples applies only with precision int8")
        return tf32_support(cell)

    @classmethod
    def probe(cls) -> dict[str, Any]:
        import tensorrt as trt

        return {"version": trt.__version__, "summary": f"TensorRT {trt.__version__}"}

    def prepare(self, model: Model, cell: Cell, workdir: Path) -> Session:
        verdict = self.supports(cell)
        if not verdict.ok:
            raise SkipCell(verdict.reason)
        import tensorrt as trt

        opts = self.option_values(cell)
        cudart = _cudart()
        _, _, index = cell.device.partition(":")
        device = int(index) if index else 0
        _ok(cudart.cudaSetDevice(device))
        props = _ok(cudart.cudaGetDeviceProperties(device))
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        info: dict[str, Any] = {"tensorrt_version": trt.__version__, "device_name": gpu}
        workdir = Path(workdir)

        started = time.perf_counter()
        conv = onnx_model(model, workdir)
        conversions = [conv]
        info.update(conv.info("onnx_export"))
        if cell.precision == "fp16":
            from plugins.onnxruntime_backend import _to_fp16

            conv = _to_fp16(conv, workdir, info)
            conversions.append(conv)
        elif cell.precision == "int8":
            conv = int8_recipe(model, conv, cell, int(opts["calibration_samples"]), workdir, info)
            conversions.append(conv)
        elif cell.precision == "bf16":
            why = no_bf16_tensor_cores(gpu, props.major, props.minor)
            if why is not None:
                raise SkipCell(why)
            conv = bf16_file(conv, workdir, info)
            conversions.append(conv)
        info["conversion_s"] = time.perf_counter() - started
        info["model_file"] = str(conv.path)
        inputs = model.example_inputs(cell.batch_size, cell.seed)
        profile = {name: list(array.shape) for name, array in inputs.items()}
        tf32 = tf32_allowed(bool(opts["tf32"]), info)
        settings = {"precision": cell.precision, "profile": profile, "opt_level": int(opts["opt_level"]),
                    "workspace_mb": int(opts["workspace_mb"]), "tf32": tf32}  # fmt: skip
        key = digest("tensorrt-engine", conv.key, trt.__version__, gpu, settings, RECIPE)
        timing = (cache_dir("tensorrt-timing") or workdir / "tensorrt-timing") / digest(gpu, trt.__version__)

        def build(folder: Path) -> None:
            (folder / "model.engine").write_bytes(_build(trt, conv.path, settings, timing, info))

        started = time.perf_counter()
        try:
            engine_file = cached("tensorrt-engine", key, "model.engine", build, workdir)
        except SkipCell:
            raise
        except Exception as exc:
            raise SkipCell(f"TensorRT could not build {conv.path} for {cell.label}: {exc}") from exc
        conversions.append(engine_file)
        info["engine_build_s"] = time.perf_counter() - started
        info.update(engine_file.info("engine"))
        info["engine_file"] = str(engine_file.path)
        info["compile_cache_hits"] = sum(c.cached for c in conversions)
        info["compile_cache_misses"] = sum(not c.cached for c in conversions)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(engine_file.path.read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {engine_file.path}")
        inspector = engine.create_engine_inspector()
        counts = layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        info["layer_precisions"] = counts
        info["executed_precision"] = executed_precision(counts) or cell.precision
        info["transfers"] = opts["transfers"]
        info["cuda_graph"] = bool(opts["cuda_graph"])
        session = TrtSession(engine, trt, device, inputs, bool(opts["cuda_graph"]),
                             opts["transfers"] == "include", info)  # fmt: skip
        session._runtime = runtime  # type: ignore[attr-defined]  # the engine needs its runtime alive
        return session


def _build(trt: Any, onnx_path: Path, settings: dict[str, Any], timing: Path, info: dict[str, Any]) -> bytes:
    """Parse the ONNX file and build a serialized engine with one optimisation profile (the cell's
    shapes), reusing and extending the timing cache."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # strongly typed: each tensor in its model file's type (TensorRT 10 asks for it, 11 has nothing else)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if typed is None else 1 << int(typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"the ONNX parser refused {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_mb"] << 20)
    config.builder_optimization_level = settings["opt_level"]
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector's per-layer precisions
    if not settings["tf32"] and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: fp32 GEMMs would round their inputs to TF32
    profile = builder.create_optimization_profile()
    for name, shape in settings["profile"].items():
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    config.set_timing_cache(cache, False)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    info["engine_builder_s"] = time.perf_counter() - started
    if serialized is None:
        raise RuntimeError("build_serialized_network returned nothing (see the worker log for TensorRT's errors)")
    timing.parent.mkdir(parents=True, exist_ok=True)
    timing.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    info["timing_cache"] = str(timing)
    return bytes(memoryview(serialized))


@hookimpl
def bench_register_backends(register: RegisterBackend) -> None:
    register(TensorRTBackend)
