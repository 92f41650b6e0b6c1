"""TensorRT: the model's ONNX (bench's export, or the user's file) built into an engine for the cell's
batch, run with ``execute_async_v3`` on a CUDA stream of its own.

Only TensorRT 10's API is used: ``build_serialized_network`` -> ``Runtime.deserialize_cuda_engine`` ->
``IExecutionContext.set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``; enum members by
name; the ONNX parser. Precision is a property of the model file, made before the build and built as
a strongly typed network (TensorRT 10's way, and the only one in 11):

- fp32: the fp32 ONNX;
- fp16: the ONNX converted to fp16 weights and compute, fp32 inputs and outputs (the same recipe as
  the onnxruntime backend's fp16);
- int8: explicit quantisation, Q/DQ nodes written by ONNX Runtime's static QDQ quantiser calibrated on
  the model's calibration inputs;
- bf16: ``BuilderFlag.BF16`` on the fp32 ONNX, a guarded path for TensorRT builds that still have
  the flag (deprecated in 10.12, removed in 11): elsewhere the cell is skipped with the reason.

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
)

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
}
#: bumped when a recipe (conversion, build settings) changes, so older cached engines are not reused
RECIPE = 1
#: names of TensorRT's data types in the engine inspector's JSON, by the precision they are
_PRECISION_WORDS = {"Int8": "int8", "FP8": "fp8", "Half": "fp16", "BFloat16": "bf16", "Float": "fp32"}


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


def layer_precisions(engine_json: str) -> dict[str, int]:
    """Layers per precision in the inspector's JSON (``ProfilingVerbosity.DETAILED``): each layer
    counted once, by its first output's data type."""
    counts: dict[str, int] = {}
    for layer in json.loads(engine_json).get("Layers", []):
        if not isinstance(layer, dict):
            continue
        outputs = layer.get("Outputs") or []
        text = json.dumps(outputs[0]) if outputs else ""
        for word, precision in _PRECISION_WORDS.items():
            if word in text:
                counts[precision] = counts.get(precision, 0) + 1
                break
    return counts


def executed_precision(counts: dict[str, int]) -> str | None:
    """The lowest precision that most of the engine's layers computed in: the engine's precision
    unless fp32 layers dominate."""
    if not counts:
        return None
    return max(counts, key=lambda p: (counts[p], p != "fp32"))


class TrtSession(Session):
    """An engine's execution context with its IO bound once; :meth:`run` enqueues and synchronises."""

    def __init__(self, engine: Any, trt: Any, batch: int, inputs: dict[str, Any], graph: bool, transfers: bool,
                 info: dict[str, Any]) -> None:  # fmt: skip
        super().__init__()
        import numpy as np

        cudart = _cudart()
        self.info = info
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = _ok(cudart.cudaStreamCreate())
        self._device: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._host_ptrs: list[int] = []
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._graph_exec: Any = None
        self._graph: Any = None
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
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
            self._device[name] = _ok(cudart.cudaMalloc(nbytes))
            pointer = _ok(cudart.cudaMallocHost(nbytes))  # pinned: copies run at the bus's speed
            self._host_ptrs.append(pointer)
            buffer = (ctypes.c_byte * nbytes).from_address(pointer)
            self._host[name] = np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
            self._context.set_tensor_address(name, self._device[name])
        self.set_inputs({name: inputs[name] for name in self._inputs})
        if graph:
            self._capture()

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

    def _capture(self) -> None:
        """One CUDA graph of a whole call; TensorRT asks for an enqueue before capture (allocation)."""
        cudart = _cudart()
        self._enqueue()
        _ok(cudart.cudaStreamSynchronize(self._stream))
        _ok(cudart.cudaStreamBeginCapture(self._stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        self._enqueue()
        self._graph = _ok(cudart.cudaStreamEndCapture(self._stream))
        self._graph_exec = _ok(cudart.cudaGraphInstantiate(self._graph, 0))

    def run(self) -> None:
        cudart = _cudart()
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

        for name in self._inputs:
            np.copyto(self._host[name], arrays[name], casting="same_kind")
            self._copy(name, True)
        _ok(_cudart().cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        cudart = _cudart()
        if self._graph_exec is not None:
            cudart.cudaGraphExecDestroy(self._graph_exec)
            cudart.cudaGraphDestroy(self._graph)
        for pointer in self._device.values():
            cudart.cudaFree(pointer)
        for pointer in self._host_ptrs:
            cudart.cudaFreeHost(pointer)
        self._device, self._host_ptrs = {}, []
        for event in self._events:
            cudart.cudaEventDestroy(event)
        cudart.cudaStreamDestroy(self._stream)


class TensorRTBackend(Backend):
    name = "tensorrt"
    description = (
        "TensorRT engines built from the model's ONNX for the cell's batch (fp32, fp16 and int8 as strongly "
        "typed networks of converted or Q/DQ models; bf16 by the builder flag where it still exists)"
    )
    devices = ("cuda",)
    precisions = ("fp32", "fp16", "bf16", "int8")
    options: ClassVar[dict[str, Option]] = OPTIONS
    packages = ("tensorrt", "tensorrt-cu12", "cuda-bindings", "cuda-python")

    @classmethod
    def availability(cls) -> Support:
        found = module_available("tensorrt")
        if not found.ok:
            return Support.no(
                f"{found.reason}: its libraries come from NVIDIA's package index, so add "
                "--extra-index-url https://pypi.nvidia.com"
            )
        return module_available("cuda")

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
        return Support.yes()

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
        _ok(cudart.cudaSetDevice(int(index) if index else 0))
        props = _ok(cudart.cudaGetDeviceProperties(int(index) if index else 0))
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        info: dict[str, Any] = {"tensorrt_version": trt.__version__, "device_name": gpu}
        workdir = Path(workdir)

        started = time.perf_counter()
        conv = onnx_model(model, workdir)
        conversions = [conv]
        info.update(conv.info("onnx_export"))
        flags: list[str] = []
        if cell.precision == "fp16":
            from plugins.onnxruntime_backend import _to_fp16

            conv = _to_fp16(conv, workdir, info)
            conversions.append(conv)
        elif cell.precision == "int8":
            from plugins.onnxruntime_backend import _quantize

            quant = {"quantization": "static", "calibration": "minmax",
                     "calibration_samples": int(opts["calibration_samples"])}  # fmt: skip
            conv = _quantize(model, conv, cell, quant, workdir, info)
            conversions.append(conv)
        elif cell.precision == "bf16":
            if not hasattr(trt.BuilderFlag, "BF16"):
                raise SkipCell(
                    f"TensorRT {trt.__version__} has no BuilderFlag.BF16 (removed in 11): bf16 needs a bf16 ONNX "
                    "for a strongly typed network, which bench does not make yet"
                )
            flags.append("BF16")
        info["conversion_s"] = time.perf_counter() - started
        info["model_file"] = str(conv.path)
        strongly_typed = not flags
        inputs = model.example_inputs(cell.batch_size, cell.seed)
        profile = {name: list(array.shape) for name, array in inputs.items()}
        settings = {"precision": cell.precision, "flags": flags, "strongly_typed": strongly_typed, "profile": profile,
                    "opt_level": int(opts["opt_level"]), "workspace_mb": int(opts["workspace_mb"])}  # fmt: skip
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
        session = TrtSession(engine, trt, cell.batch_size, inputs, bool(opts["cuda_graph"]),
                             opts["transfers"] == "include", info)  # fmt: skip
        session._runtime = runtime  # type: ignore[attr-defined]  # the engine needs its runtime alive
        return session


def _build(trt: Any, onnx_path: Path, settings: dict[str, Any], timing: Path, info: dict[str, Any]) -> bytes:
    """Parse the ONNX file and build a serialized engine with one optimisation profile (the cell's
    shapes), reusing and extending the timing cache."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if settings["strongly_typed"] else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"the ONNX parser refused {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_mb"] << 20)
    config.builder_optimization_level = settings["opt_level"]
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector's per-layer precisions
    for flag in settings["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
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
