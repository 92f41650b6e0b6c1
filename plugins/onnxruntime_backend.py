"""The ONNX Runtime backend (``onnxruntime``): the model exported to ONNX, fp32, int8 (dynamic or static
QDQ quantisation, CPU) or fp16 (converted model, CUDA), on the CPU, CUDA or TensorRT execution provider.

onnxruntime and onnx are imported inside :meth:`OnnxRuntimeBackend.prepare` only: the CLI imports this
module to list backends, and :meth:`OnnxRuntimeBackend.supports` decides from the cell alone.

The timed call is one ``run_with_iobinding`` on inputs bound once in prepare (no per-call feed dict,
no numpy conversion, outputs written into the buffer the first call allocated), plus an output
synchronisation on CUDA.

One module, at about 750 lines, as each built-in backend is: the runtime's whole adapter (options,
precisions and their conversions, providers, the session and its IO binding) reads best in one place,
and nothing in it is shared with another backend (what is shared lives in ``harness.api``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api import (
    TF32_OVERRIDE_ENV,
    Backend,
    CallTimes,
    Cell,
    Conversion,
    Model,
    Option,
    RegisterBackend,
    Session,
    SkipCell,
    Support,
    cache_dir,
    cached,
    cpu_flags,
    digest,
    first_line,
    hookimpl,
    module_available,
    onnx_model,
    tf32_allowed,
    tf32_support,
    wait_policy,
)

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime as ort

#: option value -> onnxruntime.ExecutionMode member
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
#: option value -> onnxruntime.GraphOptimizationLevel member
GRAPH_OPTIMIZATION = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
QUANTIZATIONS = ("dynamic", "static")
#: option value -> onnxruntime.quantization.CalibrationMethod member
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile"}
PROVIDERS = ("default", "tensorrt")


def _check_op_list(value: Any) -> str | None:
    if _op_list(value):
        return None
    return f"must be op types separated by commas (e.g. Gemm,MatMul), got {value!r}"


def _op_list(value: Any) -> tuple[str, ...]:
    """``"Gemm, MatMul"`` -> ``("Gemm", "MatMul")``; empty for anything that is not such a list."""
    if not isinstance(value, str):
        return ()
    ops = tuple(part.strip() for part in value.split(","))
    return ops if all(op.isidentifier() for op in ops) else ()


OPTIONS: dict[str, Option] = {
    "execution_mode": Option(
        "parallel runs independent graph branches concurrently",
        choices=tuple(EXECUTION_MODES),
        default="sequential",
    ),
    "inter_op_threads": Option(
        "threads of the inter-op pool (used by execution_mode=parallel only)", type=int, minimum=1, default=1
    ),
    "graph_optimization": Option(
        "onnxruntime graph optimisation level", choices=tuple(GRAPH_OPTIMIZATION), default="all"
    ),
    "quantization": Option(
        "int8 method: dynamic (quantize_dynamic) or static (QDQ, calibrated)", choices=QUANTIZATIONS, default="dynamic"
    ),
    "quantize_ops": Option(
        "int8: comma-separated op types to quantise (e.g. Gemm,MatMul); default all it can",
        type=str,
        check=_check_op_list,
    ),
    "calibration": Option("static int8 calibration method", choices=tuple(CALIBRATION_METHODS), default="minmax"),
    "calibration_samples": Option(
        "static int8 calibration samples (model.calibration_inputs)", type=int, minimum=1, default=256
    ),
    "provider": Option(
        "CUDA only: default (the CUDA provider) or tensorrt (TensorRT, CUDA as fallback)",
        choices=PROVIDERS,
        default="default",
    ),
    "transfers": Option(
        "CUDA only: include = inputs and outputs bound in host memory, so each call copies the inputs to the "
        "GPU and the outputs back (host latency); exclude = both bound on the GPU (compute only)",
        choices=("exclude", "include"),
        default="exclude",
    ),
    "tf32": Option(
        "CUDA only: let fp32 GEMMs and convolutions use TF32 tensor cores (off: fp32 computes in fp32, as on "
        "the other backends; the CUDA provider's use_tf32, and for the TensorRT provider, which has no such "
        "option, NVIDIA_TF32_OVERRIDE=0 in the cell's worker)",
        type=bool,
        default=False,
    ),
}
#: what a cell that sets no option runs with
DEFAULTS: dict[str, Any] = {name: option.default for name, option in OPTIONS.items() if option.default is not None}
#: CPU features with an int8 dot product that accumulates without saturating (u8 x s8 -> s32)
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: ops that compute on integers (a graph without any ran in float, whatever was asked)
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QGemm",
        "QAttention",
        "QEmbedLayerNormalization",
    }
)
#: quantize_static's extra options for a Q/DQ model TensorRT builds: zero points of 0 (the only ones its
#: parser takes); weights kept in float behind a Q/DQ pair and biases in float (it folds a weight's
#: pair into int8 weights itself, and takes no int32 bias); Q/DQ at the inputs of the GEMMs and
#: convolutions only, not at their outputs (TensorRT's advice: it fuses the rest, and a quantised
#: output before an activation costs accuracy: dlrm-small's cosine to fp32 0.966 with, 0.998 without)
TENSORRT_QDQ = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "AddQDQPairToWeight": True,
    "QuantizeBias": False,
    "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul", "Conv"],
}
#: the ops TensorRT's int8 recipe quantises (their inputs)
TENSORRT_QDQ_OPS = ("Gemm", "MatMul", "Conv")
#: samples per calibration batch when the model's batch axis is dynamic
CALIBRATION_BATCH = 32
#: bumped when the quantisation or fp16 recipe changes, so older cached files are not reused
RECIPE = 2
#: facts about a derived model, saved beside it so that a cache hit reports them too
SIDECAR = "recipe.json"
#: ONNX tensor type -> numpy dtype name, for checking the model's example inputs against the graph
ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
SPINNING_KEY = "session.intra_op.allow_spinning"
#: run option: Run returns once its work is enqueued, without waiting for the GPU (the session waits on its stream)
NO_SYNC_KEY = "disable_synchronize_execution_providers"


class ModelFileError(RuntimeError):
    """An ONNX file that cannot be read (truncated, corrupt, missing): a failed cell, never a skip,
    since it is broken here as anywhere."""


def tensorrt_library_version(library: int) -> str:
    """TensorRT's ``getInferLibVersion()`` as a version: 100300 -> ``10.3.0`` (TensorRT 10 and later,
    major x 10000), 8601 -> ``8.6.1`` (earlier, major x 1000)."""
    if library >= 100000:
        return f"{library // 10000}.{library // 100 % 100}.{library % 100}"
    return f"{library // 1000}.{library // 100 % 10}.{library % 100}"


def needed_libraries(path: Path) -> list[str]:
    """The shared libraries an ELF64 file names (its ``DT_NEEDED`` entries, as ``readelf -d`` lists
    them), read from its dynamic section; [] for a file that is not a little-endian ELF64, is
    truncated or malformed, or names none. OSError where it cannot be read. How bench tells which
    CUDA and TensorRT an onnxruntime provider was built for without loading it."""
    with open(path, "rb") as f:
        try:
            return _dt_needed(f)
        except (struct.error, IndexError, ValueError):  # cut short, or offsets past its end
            return []


def _dt_needed(f: Any) -> list[str]:
    header = f.read(64)
    if len(header) < 64 or header[:6] != b"\x7fELF\x02\x01":  # ELF, 64-bit, little-endian
        return []
    (shoff,) = struct.unpack_from("<Q", header, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
    if shentsize < 64:
        return []
    f.seek(shoff)
    table = f.read(shentsize * shnum)
    sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
    needed: list[str] = []
    for _, kind, _, _, offset, size, link, _, _, _ in sections:
        if kind != 6:  # SHT_DYNAMIC; its sh_link is its string table
            continue
        f.seek(offset)
        dynamic = f.read(size)
        strtab = sections[link]
        f.seek(strtab[4])
        strings = f.read(strtab[5])
        for tag, value in struct.iter_unpack("<qQ", dynamic[: len(dynamic) // 16 * 16]):
            if tag == 1:  # DT_NEEDED
                needed.append(strings[value : strings.index(b"\0", value)].decode())
    return needed


def _provider_library(ort: Any, provider: str) -> Path:
    """The file of one of onnxruntime's provider libraries (``cuda``, ``tensorrt``): it may be absent."""
    return Path(ort.__file__).parent / "capi" / f"libonnxruntime_providers_{provider}.so"


def _provider_needs(ort: Any, provider: str) -> list[str]:
    """The libraries an onnxruntime provider links ([] where its file is absent or unreadable)."""
    try:
        return needed_libraries(_provider_library(ort, provider))
    except OSError:
        return []


def _major(needs: list[str], library: str) -> str | None:
    """The major version of ``library`` (``libcudart``, ``libnvinfer``) among the linked libraries
    ``needs`` (``libcudart.so.13`` -> ``13``), or None where it is not among them."""
    return next((name.rsplit(".", 1)[-1] for name in needs if name.startswith(f"{library}.so.")), None)


def _linked_major(ort: Any, provider: str, library: str) -> str | None:
    """The major version of ``library`` that an onnxruntime provider links, or None where its file is
    absent or names none."""
    return _major(_provider_needs(ort, provider), library)


#: the TensorRT libraries onnxruntime's TensorRT provider may link, in the order they load (the
#: parser and the plugins link the core library)
TENSORRT_LIBRARIES = ("libnvinfer.so.", "libnvonnxparser.so.", "libnvinfer_plugin.so.")


def _pip_tensorrt_folder() -> Path | None:
    """Where TensorRT's pip wheel (``tensorrt-cuNN-libs``, module ``tensorrt_libs``) keeps its
    libraries: a folder no loader path names, so a library that links them by name finds them only
    once they are loaded. None where that wheel is not installed."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _tensorrt_library(ort: Any) -> tuple[str | None, str | None]:
    """The version of the TensorRT library onnxruntime's TensorRT provider links (the ``libnvinfer``
    its provider library names, asked ``getInferLibVersion()``), and why not where that library does
    not load: then the provider cannot load either, and onnxruntime would quietly fall back to CUDA.
    (None, None) where the provider's file names no library to check.

    The TensorRT libraries the provider links are loaded here, from TensorRT's pip wheel where it is
    installed: the provider, loaded later in this process, then finds them by name."""
    import ctypes

    needs = _provider_needs(ort, "tensorrt")
    linked = [n for prefix in TENSORRT_LIBRARIES for n in needs if n.startswith(prefix)]
    if not linked or not linked[0].startswith(TENSORRT_LIBRARIES[0]):
        return None, None
    soname, major = linked[0], linked[0].rsplit(".", 1)[-1]
    wheel = _pip_tensorrt_folder()
    try:
        handles = [ctypes.CDLL(str(wheel / n) if wheel and (wheel / n).is_file() else n, mode=ctypes.RTLD_GLOBAL)
                   for n in linked]  # fmt: skip
        handles[0].getInferLibVersion.restype = ctypes.c_int32
        return tensorrt_library_version(int(handles[0].getInferLibVersion())), None
    except (OSError, AttributeError) as exc:
        said = f"onnxruntime {ort.__version__}'s TensorRT provider needs TensorRT {major} ({', '.join(linked)})"
        if wheel is not None and (wheel / soname).is_file():
            return None, f"{said}; TensorRT's wheel has it in {wheel}, but it does not load: {first_line(exc)}"
        cuda = _major(needs, "libcudart") or _linked_major(ort, "cuda", "libcudart")
        package = f"pip install 'tensorrt-cu{cuda}=={major}.*' --extra-index-url https://pypi.nvidia.com"
        return None, (
            f"{said}, which does not load here ({first_line(exc)}): install TensorRT {major}'s libraries"
            + (f" built for CUDA {cuda} ({package})" if cuda else " built for this onnxruntime's CUDA")
        )


def _trt_engine_folder(
    root: Path, ort_version: str, tensorrt: str | None, device_id: int, tf32: bool, info: dict[str, Any]
) -> Path:
    """The TensorRT provider's engine folder for this cell's settings, created. The provider names an
    engine by a hash of the model's file name and its tensors' names (not its weights: a quantised
    model calibrated otherwise has the same), the onnxruntime, CUDA and TensorRT versions it was built
    with, its precision flags and the GPU's compute capability; and it loads a cached engine without
    checking it. So bench keeps a folder per onnxruntime version, TensorRT library, GPU model and TF32
    setting, and in it one per model file's content (``engine_folder``). ``tensorrt``: the version of
    the TensorRT library the provider links (``_tensorrt_library``), None where it was not read."""
    gpu = f"cuda{device_id}"
    with contextlib.suppress(Exception):  # torch was imported first where installed; its name for the GPU
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(device_id)
    info["tensorrt_version"] = tensorrt
    name = f"ort{ort_version}-trt{tensorrt or 'unknown'}-{gpu}-{'tf32' if tf32 else 'no-tf32'}"
    folder = root / re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def engine_folder(providers: list[tuple[str, dict[str, Any]]], model_key: str, info: dict[str, Any]) -> None:
    """Point the TensorRT provider's engine cache (the first provider's options) at the subfolder of
    the model file's content key, created; its timing cache stays shared by the models of the folder."""
    options = providers[0][1]
    folder = Path(options["trt_timing_cache_path"]) / model_key
    folder.mkdir(parents=True, exist_ok=True)
    options["trt_engine_cache_path"] = str(folder)
    info["trt_engine_cache_dir"] = str(folder)


class CudaStream:
    """A CUDA stream of the session's own (made with torch), handed to onnxruntime as its
    ``user_compute_stream``, with two timing events on it and the run options under which Run
    returns without synchronising: what lets CUDA events bracket onnxruntime's compute.

    Only for a session that serves one call at a time on the GPU's memory (``transfers: exclude``,
    concurrency 1): replicas would all compute on this one stream, where onnxruntime otherwise gives
    each concurrent Run a stream of its own; and with host-bound outputs Run copies them back and
    waits inside, so no event could end where the compute ends."""

    def __init__(self, ort: Any, torch: Any, device_id: int, tensorrt: bool) -> None:
        self._torch, self.device = torch, device_id
        self.stream = torch.cuda.Stream(device=device_id)  # not the default stream: onnxruntime refuses handle 0
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry(NO_SYNC_KEY, "1")
        self.timer = CallTimes("run_with_iobinding" + (" (TensorRT execution provider)" if tensorrt else ""))

    def wait_for_copies(self) -> None:
        """Wait for the device: onnxruntime copies inputs to the GPU (binding, update_inplace) with a
        cudaMemcpy on the legacy default stream, which this non-blocking stream does not wait for."""
        self._torch.cuda.synchronize(self.device)

    @property
    def handle(self) -> str:
        """The stream's address, as onnxruntime's ``user_compute_stream`` option takes it."""
        return str(int(self.stream.cuda_stream))

    @staticmethod
    def why_not(cell: Cell, transfers: str) -> str | None:
        """Why this cell's session computes on onnxruntime's own streams, without events; None if it can have one."""
        if transfers == "include":
            return (
                "transfers: include: Run copies the outputs to the host and waits for them inside, so no "
                "CUDA event can end where the compute ends: wall clock only"
            )
        if cell.concurrency > 1:
            return (
                f"concurrency {cell.concurrency}: onnxruntime gives each concurrent Run a stream of its own, "
                "which one stream of bench's (needed for events) would serialise: wall clock only"
            )
        return None


def _cuda_stream(ort: Any, cell: Cell, device_id: int, tensorrt: bool, transfers: str,
                 info: dict[str, Any]) -> CudaStream | None:  # fmt: skip
    """The session's own stream with its events, or None with ``gpu_timing_skipped`` saying why."""
    why = CudaStream.why_not(cell, transfers)
    if why is None:
        try:
            import torch

            if torch.cuda.is_available():
                return CudaStream(ort, torch, device_id, tensorrt)
            why = "torch sees no CUDA device (a CPU build of torch?): bench makes the session's stream with torch"
        except ImportError as exc:
            why = f"torch is not importable ({exc}): bench makes the session's stream with torch"
    info["gpu_timing_skipped"] = why
    return None


class OrtSession(Session):
    """One onnxruntime session with its inputs and outputs bound; :meth:`run` is the timed call."""

    def __init__(
        self,
        sess: ort.InferenceSession,
        binding: ort.IOBinding,
        output_names: tuple[str, ...],
        *,
        inputs: dict[str, Any],
        on_device: bool,
        info: dict[str, Any],
        rebind: Callable[[], tuple[Any, dict[str, Any]]] | None = None,
        stream: CudaStream | None = None,
    ) -> None:
        super().__init__()
        self.info = info
        #: the CUDA stream onnxruntime computes on (``user_compute_stream``) with its events, or None
        self._stream = stream
        self._rebind = rebind
        self._on_device = on_device
        #: the onnxruntime.InferenceSession, for inspection (providers, metadata), not for timing
        self.session = sess
        self._binding = binding
        #: the buffers the binding reads (host arrays, or OrtValues on the GPU): kept alive with it
        self._inputs = inputs
        self._output_names = output_names
        # looked up once: run() is one bound-method call. Run waits for its own stream before it returns
        # (outputs ready), so no synchronize_outputs, which is a cudaDeviceSynchronize: it would make each
        # call wait for the other replicas' work too
        self._run = sess.run_with_iobinding

    def run(self) -> None:
        # Outputs need no rebinding: the first call allocates them and later calls write into the
        # same buffers (same shapes), so each call costs onnxruntime's Run and nothing else.
        stream = self._stream
        if stream is None:
            self._run(self._binding)
            return
        # On a stream of bench's own: Run enqueues without waiting, the events bracket its work on
        # that stream, and the call ends when the stream has finished (outputs ready on the GPU).
        timed = stream.timer.recording
        if timed:
            stream.start.record(stream.stream)
        t0 = time.perf_counter_ns()
        self._run(self._binding, stream.run_options)
        t1 = time.perf_counter_ns()
        if timed:
            stream.end.record(stream.stream)
        stream.stream.synchronize()
        if timed:
            stream.timer.add(stream.start.elapsed_time(stream.end) * 1e6, t1 - t0)

    def call_times(self) -> CallTimes | None:
        return self._stream.timer if self._stream is not None else None

    def outputs(self) -> dict[str, np.ndarray]:
        import numpy as np

        self.run()
        arrays = self._binding.copy_outputs_to_cpu()  # fresh host copies, in the order bound
        result = {}
        for name, array in zip(self._output_names, arrays, strict=True):
            result[name] = array.astype(np.float32) if array.dtype == np.float16 else array
        return result

    def set_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        import numpy as np

        for name, bound in self._inputs.items():
            if isinstance(bound, np.ndarray):  # bound on the host: the binding reads this memory each call
                np.copyto(bound, arrays[name], casting="same_kind")
            else:  # an OrtValue on the GPU
                bound.update_inplace(np.ascontiguousarray(arrays[name], dtype=bound.numpy().dtype))
        if self._stream is not None:
            # update_inplace copies on the legacy default stream, which bench's non-blocking stream does not wait for
            self._stream.wait_for_copies()

    def replica(self) -> OrtSession | None:
        """The same InferenceSession (its ``run`` is thread-safe) with a binding of its own; None for a
        session on a stream of bench's (one concurrent call at a time: a replica's work would run on
        that stream too, inside this session's events), so that the harness prepares another."""
        if self._rebind is None or self._stream is not None:
            return None
        binding, keep = self._rebind()
        return OrtSession(
            self.session, binding, self._output_names, inputs=keep, on_device=self._on_device, info=self.info,
            rebind=self._rebind,
        )  # fmt: skip

    def close(self) -> None:
        self._rebind = None
        if self._binding is not None:
            self._binding.clear_binding_inputs()
            self._binding.clear_binding_outputs()
        self._binding = None  # type: ignore[assignment]  # released on close
        self._inputs = {}
        self._run = None  # type: ignore[assignment]  # released on close
        self._stream = None
        self.session = None  # type: ignore[assignment]  # released on close


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = (
        "ONNX Runtime on the exported ONNX model: fp32, int8 (quantize_dynamic or static QDQ, CPU), "
        "fp16 and bf16 (converted models, CUDA); CPU, CUDA or TensorRT execution provider"
    )
    devices = ("cpu", "cuda")
    precisions = ("fp32", "fp16", "bf16", "int8")
    #: one InferenceSession, a binding per replica: its run() is thread-safe
    max_concurrency = 16
    options: ClassVar[dict[str, Option]] = OPTIONS

    #: the CPU and the GPU builds (either provides ``import onnxruntime``), and TensorRT for provider=tensorrt
    packages = ("onnxruntime", "onnxruntime-gpu", "tensorrt")

    @classmethod
    def availability(cls) -> Support:
        return module_available("onnxruntime")

    @classmethod
    def probe(cls) -> dict[str, Any]:
        """The build's execution providers and device (``bench doctor``)."""
        import onnxruntime as ort

        providers = ort.get_available_providers()
        info: dict[str, Any] = {"version": ort.__version__, "providers": providers, "device": ort.get_device()}
        summary = ["providers " + ", ".join(providers)]
        warnings: list[str] = []
        cuda = _linked_major(ort, "cuda", "libcudart") if "CUDAExecutionProvider" in providers else None
        if cuda is not None:
            info["cuda_major"] = cuda
            summary.append(f"CUDA provider built for CUDA {cuda}")
            with contextlib.suppress(Exception):  # torch's CUDA libraries are the ones the provider finds
                import torch

                if torch.version.cuda and torch.version.cuda.split(".")[0] != cuda:
                    warnings.append(
                        f"onnxruntime {ort.__version__}'s CUDA provider links CUDA {cuda}, torch "
                        f"{torch.__version__} brings CUDA {torch.version.cuda}: the provider finds no CUDA {cuda} "
                        "libraries unless installed apart (onnxruntime-gpu 1.26 and earlier are for CUDA 12)"
                    )
        if "TensorrtExecutionProvider" in providers:
            version, why = _tensorrt_library(ort)
            info["tensorrt_provider_library"] = version
            summary.append(
                f"TensorRT provider with TensorRT {version}" if version
                else "TensorRT provider unusable" if why else "TensorRT provider (its TensorRT not read)"
            )  # fmt: skip
            if why is not None:
                warnings.append(why)
        info["summary"] = "; ".join(summary)
        if warnings:
            info["warnings"] = warnings
        return info

    @classmethod
    def supports(cls, cell: Cell) -> Support:
        base = super().supports(cell)
        if not base.ok:
            return base
        device_kind = cell.device_kind
        if device_kind == "cpu" and cell.precision == "fp16":
            return Support.no(
                "fp16 on CPU: onnxruntime's CPU provider has fp16 kernels for few ops and wraps the others "
                "in casts to fp32, so it would not measure fp16 inference"
            )
        if device_kind == "cpu" and cell.precision == "bf16":
            return Support.no(
                "bf16 on CPU: onnxruntime's CPU provider has bf16 kernels for few ops (no MatMul or Gemm), "
                "so a bf16 model would not load there; bf16 runs on the CUDA and TensorRT providers"
            )
        if device_kind == "cuda" and cell.precision == "int8":
            return Support.no(
                "int8 here is onnxruntime's quantize_dynamic/quantize_static, whose integer kernels "
                "(MatMulInteger, QLinear*) the CUDA provider lacks: they would run on the CPU"
            )
        # Option values were checked against OPTIONS (base.ok); what is left are combinations that a
        # sweep makes and that would repeat another cell or cannot run on the cell's device.
        opts = cell.backend_options
        if cell.precision != "int8":
            # A sweep over quantization keeps its non-int8 cells once: under the default value only.
            if opts.get("quantization", DEFAULTS["quantization"]) != DEFAULTS["quantization"]:
                return Support.no(
                    f"option quantization={opts['quantization']} applies only with precision int8 (this "
                    f"{cell.precision} cell would repeat the one with quantization={DEFAULTS['quantization']}, "
                    "the default)"
                )
            if "quantize_ops" in opts:
                return Support.no(
                    f"option quantize_ops applies only with precision int8 (this {cell.precision} cell would "
                    "repeat the one without it)"
                )
        static = opts.get("quantization", DEFAULTS["quantization"]) == "static"
        for option in ("calibration", "calibration_samples"):
            if option in opts and not (static and cell.precision == "int8"):
                return Support.no(f"option {option} applies only with precision int8 and quantization=static")
        if opts.get("provider", "default") == "tensorrt" and device_kind != "cuda":
            return Support.no("option provider=tensorrt applies only to CUDA devices (TensorRT runs on NVIDIA GPUs)")
        if "transfers" in opts and device_kind != "cuda":
            return Support.no("option transfers applies to cuda cells: a CPU cell's inputs are in host memory already")
        return tf32_support(cell)

    def prepare(self, model: Model, cell: Cell, workdir: Path) -> Session:
        """Convert ``model`` for the cell (ONNX export, quantisation or fp16: each cached by content),
        open an onnxruntime session on the cell's provider and bind one batch of example inputs."""
        verdict = self.supports(cell)  # the harness asks first; this guards direct calls
        if not verdict.ok:
            raise SkipCell(verdict.reason)
        import onnxruntime as ort

        workdir = Path(workdir)
        opts = self.option_values(cell)
        device_kind, _, index = cell.device.partition(":")
        device_id = int(index) if index else 0
        on_device = device_kind == "cuda"
        tensorrt = on_device and opts["provider"] == "tensorrt"
        info: dict[str, Any] = {"onnxruntime_version": ort.__version__}
        if on_device:
            # torch first, where it is installed: its wheel loads the CUDA, cuBLAS and cuDNN libraries that
            # onnxruntime-gpu looks for, which a machine with pip-installed CUDA has nowhere else
            with contextlib.suppress(ImportError):
                import torch  # noqa: F401
        stream = _cuda_stream(ort, cell, device_id, tensorrt, opts["transfers"], info) if on_device else None
        providers = self._providers(ort, cell, device_id, tensorrt, workdir, info)
        if stream is not None:  # every GPU provider computes on it (the TensorRT provider takes it too)
            for _, provider_options in providers:
                provider_options["user_compute_stream"] = stream.handle

        conv = onnx_model(model, workdir)
        info.update(conv.info("onnx_export"))
        conversions = [conv]
        path = conv.path
        if cell.precision == "int8":
            derived = _quantize(model, conv, cell, opts, workdir, info)
            conversions.append(derived)
            path = derived.path
        elif cell.precision == "fp16":
            derived = _to_fp16(conv, workdir, info)
            conversions.append(derived)
            path = derived.path
            if tensorrt:  # the fp16 file for TensorRT 11 (strongly typed only: its fp16 flag is gone), the flag for 10
                info["executed_precision_note"] += (
                    "; TensorRT provider: the fp16 model, with trt_fp16_enable for TensorRT 10, whose networks "
                    "take their types as hints; TensorRT 11's take them as they are and have no fp16 flag"
                )
        elif cell.precision == "bf16":
            derived = _to_bf16(conv, device_id, workdir, info)
            conversions.append(derived)
            path = derived.path
            if tensorrt:
                info["executed_precision_note"] += (
                    "; TensorRT provider: the bf16 model, with trt_bf16_enable for TensorRT 10, whose networks "
                    "take their types as hints; TensorRT 11's take them as they are"
                )
        else:
            info["executed_precision"] = "fp32"
        info["compile_cache_hits"] = sum(c.cached for c in conversions)
        info["compile_cache_misses"] = sum(not c.cached for c in conversions)
        info["model_file"] = str(path)
        if tensorrt:
            engine_folder(providers, conversions[-1].key, info)

        so = self._session_options(ort, cell, opts, info)
        if on_device:  # where each node runs, from one profiled call (profiling stops after it)
            so.enable_profiling = True
            so.profile_file_prefix = str(workdir / "onnxruntime-placement")
        sess = _open(ort, path, so, providers, cell)
        try:
            gpu = device_id if on_device else None
            return self._session(ort, sess, model, cell, path, opts, info, stream, gpu, tensorrt, providers[0][0])
        except BaseException:
            profile = sess.end_profiling() if on_device else ""  # profiling was on: end it, drop its file
            if profile:
                Path(profile).unlink(missing_ok=True)
            raise

    def _session(
        self, ort: Any, sess: Any, model: Model, cell: Cell, path: Path, opts: dict[str, Any], info: dict[str, Any],
        stream: CudaStream | None, device_id: int | None, tensorrt: bool, wanted: str,
    ) -> OrtSession:  # fmt: skip
        """The OrtSession on an open InferenceSession: its providers checked, its inputs bound, the
        TensorRT engine built and the nodes' placement read where the cell is on CUDA (``device_id``;
        None on the CPU)."""
        on_device = device_id is not None
        used = list(sess.get_providers())
        info["providers"] = used
        if wanted not in used:
            raise SkipCell(
                f"onnxruntime fell back to {', '.join(used)}: {wanted} did not load for {cell.device} "
                "(see the worker log for onnxruntime's warning; check the CUDA/cuDNN/TensorRT libraries)"
            )

        # transfers: include binds the inputs and outputs in host memory: each Run copies them over
        bound_on_device = on_device and opts["transfers"] == "exclude"
        if on_device:
            info["transfers"] = opts["transfers"]

        def rebind() -> tuple[Any, dict[str, Any]]:
            return self._bind(ort, sess, model, cell, path, device_id if bound_on_device else None)

        binding, keep = rebind()
        if stream is not None:
            stream.wait_for_copies()
        session = OrtSession(
            sess, binding, tuple(model.output_names), inputs=keep, on_device=bound_on_device, info=info,
            rebind=rebind, stream=stream,
        )  # fmt: skip
        if tensorrt:
            # TensorRT builds its engine on the first call: build it here, so that prepare_s includes it
            engines = _count_engines(info)
            start = time.perf_counter()
            session.run()
            info["trt_first_call_s"] = time.perf_counter() - start
            info["trt_engines_built"] = _count_engines(info) - engines
        if on_device:
            session.run()
            _record_placement(Path(sess.end_profiling()), wanted, info)
        return session

    @staticmethod
    def _providers(
        ort: Any, cell: Cell, device_id: int, tensorrt: bool, workdir: Path, info: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Execution providers in order of preference; a skip when the installed build lacks them."""
        available = list(ort.get_available_providers())
        info["providers_available"] = available
        if cell.device.partition(":")[0] == "cpu":
            return [("CPUExecutionProvider", {})]
        needed = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if tensorrt else ["CUDAExecutionProvider"]
        missing = [p for p in needed if p not in available]
        if missing:
            raise SkipCell(
                f"this onnxruntime build ({ort.__version__}) has no {' or '.join(missing)} "
                f"(installed providers: {', '.join(available)}); install onnxruntime-gpu for CUDA"
                + (" built with TensorRT, and TensorRT itself" if tensorrt else "")
            )
        tensorrt_version = None
        if tensorrt:
            tensorrt_version, why = _tensorrt_library(ort)
            if why is not None:
                raise SkipCell(why)
            if cell.precision == "bf16" and _version(ort.__version__) < TRT_BF16_SINCE:
                raise SkipCell(
                    f"onnxruntime {ort.__version__}'s TensorRT provider has no bf16 option (trt_bf16_enable came "
                    f"with {'.'.join(map(str, TRT_BF16_SINCE))}): install onnxruntime-gpu 1.23 or later"
                )
        # TF32 off unless asked: the CUDA provider's own default is TF32 on Ampere and newer
        tf32 = tf32_allowed(bool(cell.backend_options.get("tf32", False)), info)
        cuda = ("CUDAExecutionProvider", {"device_id": device_id, "use_tf32": "1" if tf32 else "0"})
        if not tensorrt:
            return [cuda]
        if not tf32:  # the TensorRT provider has no TF32 option, and TensorRT's builder allows TF32 by default
            os.environ[TF32_OVERRIDE_ENV] = "0"  # read by TensorRT when it builds, by cuBLAS/cuDNN when they start
            info["tf32_note"] = (
                f"TensorRT provider: {TF32_OVERRIDE_ENV}=0 set in this cell's worker (the provider has no TF32 "
                "option; TensorRT honours the variable when it builds the engine)"
            )
        root = cache_dir("onnxruntime-trt") or workdir / "onnxruntime-trt"
        # the model's own subfolder: engine_folder
        engines = _trt_engine_folder(root, ort.__version__, tensorrt_version, device_id, tf32, info)
        trt = {
            "device_id": device_id,
            "trt_fp16_enable": cell.precision == "fp16",
            **({"trt_bf16_enable": True} if cell.precision == "bf16" else {}),  # an option since onnxruntime 1.23
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(engines),
        }
        return [("TensorrtExecutionProvider", trt), cuda]

    @staticmethod
    def _session_options(ort: Any, cell: Cell, opts: dict[str, Any], info: dict[str, Any]) -> Any:
        """SessionOptions with every setting explicit, and recorded (threads, mode, optimisation level)."""
        so = ort.SessionOptions()
        if cell.threads > 0:
            so.intra_op_num_threads = cell.threads
        so.inter_op_num_threads = int(opts["inter_op_threads"])
        so.execution_mode = getattr(ort.ExecutionMode, EXECUTION_MODES[opts["execution_mode"]])
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[opts["graph_optimization"]]
        )
        info["threads"] = info["intra_op_threads"] = so.intra_op_num_threads  # 0: onnxruntime's default
        if cell.threads <= 0:
            info["intra_op_threads_note"] = "0: onnxruntime's default (one thread per physical core)"
        info["inter_op_threads"] = so.inter_op_num_threads
        if opts["execution_mode"] == "sequential":
            info["inter_op_threads_note"] = "unused: the inter-op pool runs only with execution_mode=parallel"
        info["execution_mode"] = opts["execution_mode"]
        info["graph_optimization"] = opts["graph_optimization"]
        # onnxruntime's intra-op threads spin-wait after each call by default: lower latency, CPU burnt
        # between calls, and a stall of every thread when a neighbour preempts one. The scenario's
        # cpu.wait: passive turns it off; otherwise the default is left, and recorded.
        if wait_policy() == "passive":
            so.add_session_config_entry(SPINNING_KEY, "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            spinning = so.get_session_config_entry(SPINNING_KEY)
            info["intra_op_allow_spinning"] = spinning
        except RuntimeError:  # not set: the default applies
            info["intra_op_allow_spinning"] = "1"
            info["intra_op_allow_spinning_note"] = "onnxruntime's default, not set here: idle intra-op threads spin"
        return so

    @staticmethod
    def _bind(
        ort: Any, sess: Any, model: Model, cell: Cell, path: Path, device_id: int | None
    ) -> tuple[Any, dict[str, Any]]:
        """An IOBinding with the example inputs bound once (host arrays, or copies on the GPU) and the
        outputs bound by name to the host or the GPU; returns it and the buffers it reads."""
        import numpy as np

        arrays = model.example_inputs(cell.batch_size, cell.seed)
        expected = {i.name: i.type for i in sess.get_inputs()}
        binding = sess.io_binding()
        keep: dict[str, Any] = {}
        for name in model.input_names:
            if name not in expected:
                msg = f"the ONNX graph {path} has no input '{name}' (its inputs: {', '.join(expected)})"
                raise ValueError(msg)
            array = np.array(arrays[name], copy=True, order="C")  # a copy: the session owns its inputs
            want = ONNX_TYPES.get(expected[name])
            if want is not None and array.dtype != np.dtype(want):
                msg = (
                    f"input '{name}': model '{model.name}' example_inputs give {array.dtype}, but the ONNX graph "
                    f"{path} expects {expected[name]}; make example_inputs return {want}"
                )
                raise ValueError(msg)
            if device_id is None:
                binding.bind_cpu_input(name, array)  # reads the array's memory in place, every call
                keep[name] = array
            else:
                value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", device_id)  # copied to the GPU once
                binding.bind_ortvalue_input(name, value)
                keep[name] = value
        outputs = {o.name for o in sess.get_outputs()}
        for name in model.output_names:
            if name not in outputs:
                msg = f"the ONNX graph {path} has no output '{name}' (its outputs: {', '.join(sorted(outputs))})"
                raise ValueError(msg)
            if device_id is None:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, "cuda", device_id)
        return binding, keep


def _open(ort: Any, path: Path, so: Any, providers: list[tuple[str, dict[str, Any]]], cell: Cell) -> Any:
    """The InferenceSession; an unreadable file is a clear :class:`ModelFileError`, a provider that
    cannot take this model a skip."""
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as exc:
        names = ", ".join(p for p, _ in providers)
        if _unreadable(exc) or not Path(path).is_file():
            raise ModelFileError(_unreadable_message(path, exc)) from exc
        if cell.device.partition(":")[0] != "cpu":
            raise SkipCell(f"onnxruntime could not build {path} on {names} ({cell.device}): {first_line(exc)}") from exc
        msg = f"onnxruntime could not build {path} on {names}: {first_line(exc)}"
        raise RuntimeError(msg) from exc


def node_providers(profile: Path) -> dict[str, int]:
    """Nodes per execution provider in an onnxruntime profile (one event per node's kernel, with the
    provider that ran it): what ``get_providers()`` cannot say, since it lists the providers
    registered, not where each node ran."""
    nodes: dict[str, set[str]] = {}
    for event in json.loads(profile.read_text()):
        name = str(event.get("name", ""))
        provider = (event.get("args") or {}).get("provider")
        if event.get("cat") == "Node" and name.endswith("_kernel_time") and provider:
            nodes.setdefault(str(provider), set()).add(name)
    return {provider: len(names) for provider, names in sorted(nodes.items())}


def _record_placement(profile: Path, wanted: str, info: dict[str, Any]) -> None:
    """``node_providers`` into ``info``, with a note where nodes ran on the CPU of a GPU cell (their
    inputs and outputs cross the bus at each call: a model the GPU provider cannot wholly take)."""
    try:
        counts = node_providers(profile)
    except (OSError, ValueError) as exc:
        info["node_providers_note"] = f"onnxruntime's profile {profile} could not be read: {exc}"
        return
    finally:
        profile.unlink(missing_ok=True)
    info["node_providers"] = counts
    on_cpu = counts.get("CPUExecutionProvider", 0)
    if on_cpu:
        info["node_providers_note"] = (
            f"{on_cpu} of {sum(counts.values())} nodes ran on the CPU, not on {wanted} (no kernel there, or "
            "shape computations onnxruntime keeps on the CPU): their data crosses the bus in each call"
        )


def _unreadable(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ in {"InvalidProtobuf", "NoSuchFile", "DecodeError"} or "Protobuf parsing failed" in text


def _unreadable_message(path: Path, exc: BaseException) -> str:
    return (
        f"cannot read ONNX model file {path}: {first_line(exc)}. The file is truncated or corrupt: delete it "
        "(a cached export or quantised model is rebuilt on the next run; a model's own file must be replaced)"
    )


def _load(path: Path) -> onnx.ModelProto:
    """The ONNX graph of ``path`` (weights kept external when they are), or a clear ModelFileError."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(_unreadable_message(path, exc)) from exc


def load_with_weights(path: Path) -> onnx.ModelProto:
    """The ONNX model of ``path`` with its weights, external ones included (a converter rewrites them)."""
    import onnx

    source = _load(path)
    if path.with_suffix(".onnx.data").exists() or any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in source.graph.initializer
    ):
        source = onnx.load(str(path))  # with its external weights
    return source


def _names_read(node: onnx.NodeProto) -> set[str]:
    """The tensor names a node reads: its inputs, and those its subgraphs (If, Loop, Scan) read."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in (attr.g, *attr.graphs):
            for inner in sub.node:
                names |= _names_read(inner)
    return names


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Put ``graph``'s nodes in topological order, in place, keeping the given order wherever it
    already is one. ONNX requires that order (its checker refuses a graph without it; TensorRT's
    parser sorts for itself), and the fp16 converter breaks it: its casts of the graph inputs come
    last."""
    import heapq

    nodes = list(graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    needs = [{producer[name] for name in _names_read(node) if name in producer} - {i} for i, node in enumerate(nodes)]
    users: list[list[int]] = [[] for _ in nodes]
    for i, deps in enumerate(needs):
        for dep in deps:
            users[dep].append(i)
    waiting = [len(deps) for deps in needs]
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users[i]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) == len(nodes) and order != sorted(order):  # a cycle (not ONNX) is left as it is
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


def count_ops(graph: onnx.GraphProto, ops: Callable[[str], bool]) -> int:
    """Nodes of ``graph`` and its subgraphs whose op type ``ops`` accepts."""
    count = 0
    for node in graph.node:
        count += ops(node.op_type)
        for attr in node.attribute:
            if attr.g.node:
                count += count_ops(attr.g, ops)
            for sub in attr.graphs:
                count += count_ops(sub, ops)
    return count


def is_quantized_op(op_type: str) -> bool:
    """An op that computes on integers (weight-only DequantizeLinear does not count: it computes in float)."""
    return op_type in QUANTIZED_OPS or op_type.startswith("QLinear")


def reduce_range_choice() -> tuple[bool, str]:
    """(reduce_range, why): 7-bit weights where the CPU's u8 x s8 dot product can saturate (no VNNI)."""
    flags = cpu_flags()
    vnni = sorted(flags & VNNI_FLAGS)
    if vnni:
        return False, f"this CPU has {', '.join(vnni)}: int8 dot products do not saturate, full 8-bit range kept"
    return True, (
        "this CPU has no VNNI (avx512_vnni/avx_vnni/amx_int8 absent): AVX2's u8 x s8 multiply-add saturates "
        "int16, so weights are quantised to 7 bits (reduce_range=True)"
    )


def _quantize(
    model: Model, conv: Conversion, cell: Cell, opts: dict[str, Any], workdir: Path, info: dict[str, Any]
) -> Conversion:
    """The int8 model (dynamic, or static QDQ calibrated on ``model.calibration_inputs``), cached by
    the source's key, the onnxruntime version and the settings; facts about it go into ``info``."""
    import onnxruntime as ort

    source = _load(conv.path)  # a clear error for an unreadable file, before quantisation reads it
    method = opts["quantization"]
    symmetric = bool(opts.get("symmetric", False))
    reduce_range, why = reduce_range_choice()
    if symmetric:
        reduce_range, why = False, "for TensorRT: the GPU's int8 kernels do not saturate, full 8-bit range kept"
    settings: dict[str, Any] = {
        "method": method,
        "weight_type": "QInt8",
        "per_channel": False,
        "reduce_range": reduce_range,
        "op_types": _op_list(opts["quantize_ops"]) if "quantize_ops" in opts else "all",
        "preprocess": "onnxruntime.quantization.quant_pre_process",
    }
    if method == "static":
        fixed = _fixed_batch(source)
        samples = int(opts["calibration_samples"])
        settings.update(
            {
                "format": "QDQ",
                "activation_type": "QInt8",
                "calibration": opts["calibration"],
                "calibration_samples": samples,
                "calibration_batch": fixed or CALIBRATION_BATCH,
                "calibration_batch_fixed": fixed is not None,
                "calibration_seed": cell.seed,
            }
        )
        if symmetric:  # TensorRT takes only zero points of 0, for activations as for weights
            settings["symmetric"] = True
            settings["extra_options"] = TENSORRT_QDQ
            settings["per_channel"] = True  # a scale per output channel of each weight, which TensorRT takes
            if settings["op_types"] == "all":
                settings["op_types"] = TENSORRT_QDQ_OPS
    else:
        settings["activations"] = "QUInt8, quantised per call (DynamicQuantizeLinear)"
    del source
    key = digest("onnxruntime-int8", conv.key, ort.__version__, settings, RECIPE)

    def build(folder: Path) -> None:
        facts = _build_int8(model, conv.path, folder, settings)
        (folder / SIDECAR).write_text(json.dumps(facts, indent=1))

    try:
        result = cached("onnxruntime-int8", key, "model.onnx", build, workdir)
    except ModelFileError:
        raise
    except Exception as exc:  # the quantiser cannot take this model: the cell cannot run here
        raise SkipCell(f"onnxruntime {method} int8 quantisation of {conv.path} failed: {first_line(exc)}") from exc
    facts = json.loads((result.path.parent / SIDECAR).read_text())
    quantized_ops = count_ops(_load(result.path).graph, is_quantized_op)
    info.update(result.info("quantization"))
    info.update({f"quantization_{k}": v for k, v in {**settings, **facts}.items()})
    info["quantization_reduce_range_reason"] = why
    info["quantized_ops"] = quantized_ops
    if quantized_ops:
        info["executed_precision"] = "int8"
    else:
        info["executed_precision"] = "fp32"
        info["executed_precision_note"] = (
            f"{method} quantisation found no op to quantise in this model: the graph computes in fp32"
        )
    return result


def _build_int8(model: Model, source: Path, folder: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder/model.onnx``: pre-process (shape inference, basic fusions), then quantise."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    facts: dict[str, Any] = {}
    prepped = folder / "preprocessed.onnx"
    quiet = contextlib.redirect_stdout(io.StringIO())  # the calibrators print progress to stdout
    cwd = Path.cwd()
    before = set(folder.iterdir())
    try:
        # it writes scratch files (sym_shape_infer_temp.onnx, external data) into the current folder
        os.chdir(folder)
        with quiet, _quiet_root_logger():
            quant_pre_process(str(source), str(prepped))
        src = prepped
        facts["preprocessed"] = True
    except Exception as exc:  # symbolic shape inference refuses some graphs: quantise the original
        src = source
        facts["preprocessed"] = False
        facts["preprocess_error"] = first_line(exc)
    finally:
        os.chdir(cwd)
        _drop_scratch(folder, before, prepped)
    out = str(folder / "model.onnx")
    op_types = None if settings["op_types"] == "all" else list(settings["op_types"])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if settings["method"] == "dynamic":
            quantize_dynamic(
                str(src),
                out,
                weight_type=QuantType.QInt8,
                per_channel=settings["per_channel"],
                reduce_range=settings["reduce_range"],
                op_types_to_quantize=op_types,
            )
        else:
            reader = _calibration_reader(model, settings)
            quantize_static(
                str(src),
                out,
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=settings["per_channel"],
                reduce_range=settings["reduce_range"],
                op_types_to_quantize=op_types,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[settings["calibration"]]),
                extra_options=settings.get("extra_options"),
            )
            facts["calibration_samples_used"] = reader.samples
            facts["calibration_batches"] = len(reader.batches)
    facts["quantize_s"] = time.perf_counter() - start
    prepped.unlink(missing_ok=True)
    return facts


def _drop_scratch(folder: Path, before: set[Path], keep: Path) -> None:
    """Delete what pre-processing left in ``folder`` besides ``keep`` and its external data: symbolic
    shape inference writes ``sym_shape_infer_temp.onnx`` and its weights (a model's size) there when it
    cannot finish, and would leave them in the cache."""
    import onnx

    kept = {keep}
    if keep.is_file():
        model = onnx.load(str(keep), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    kept.add(folder / entry.value)
    for path in set(folder.iterdir()) - before - kept:
        if path.is_file():
            path.unlink()


def _calibration_reader(model: Model, settings: dict[str, Any]) -> Any:
    """A CalibrationDataReader over ``model.calibration_inputs`` in batches (a whole last batch only
    when the graph's batch axis is fixed)."""
    from onnxruntime.quantization import CalibrationDataReader

    samples, batch = settings["calibration_samples"], settings["calibration_batch"]
    data = model.calibration_inputs(samples, settings["calibration_seed"])
    names = tuple(model.input_names)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            stop = samples - samples % batch if settings["calibration_batch_fixed"] else samples
            self.batches = [{n: data[n][i : min(i + batch, stop)] for n in names} for i in range(0, stop, batch)]
            self.samples = stop
            self._next = iter(self.batches)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._next, None)

        def rewind(self) -> None:
            self._next = iter(self.batches)

    reader = Reader()
    if not reader.batches:
        msg = f"calibration_samples={samples} is less than the model's fixed batch of {batch}"
        raise ValueError(msg)
    return reader


def _fixed_batch(graph_model: onnx.ModelProto) -> int | None:
    """The first input's batch size when the graph fixes it, else None (a dynamic batch axis)."""
    inputs = [i for i in graph_model.graph.input if i.name not in {t.name for t in graph_model.graph.initializer}]
    if not inputs or not inputs[0].type.tensor_type.shape.dim:
        return None
    dim = inputs[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


@contextlib.contextmanager
def _quiet_root_logger() -> Any:
    """The quantisation tools log advice through the root logger: keep it out of the worker's log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def fp16_converter() -> tuple[str, Callable[..., Any]]:
    """(name and version, convert_float_to_float16): onnxconverter-common's when installed, else the
    copy inside onnxruntime.transformers (same function, same arguments)."""
    try:
        import onnxconverter_common
        from onnxconverter_common import float16

        return f"onnxconverter-common {onnxconverter_common.__version__}", float16.convert_float_to_float16
    except ImportError:
        import onnxruntime as ort
        from onnxruntime.transformers import float16

        return f"onnxruntime.transformers.float16 {ort.__version__}", float16.convert_float_to_float16


def fp16_model(convert: Callable[..., Any], source: onnx.ModelProto) -> onnx.ModelProto:
    """``source`` through the fp16 converter (``fp16_converter()``'s function): fp16 weights and
    compute, fp32 inputs and outputs (keep_io_types), nodes in topological order."""
    with _quiet_root_logger():
        converted = convert(source, keep_io_types=True)
    sort_nodes(converted.graph)
    return converted


def _to_fp16(conv: Conversion, workdir: Path, info: dict[str, Any]) -> Conversion:
    """The model with fp16 weights and compute, fp32 inputs and outputs (keep_io_types), cached."""
    import onnx

    converter, convert = fp16_converter()
    key = digest("onnxruntime-fp16", conv.key, converter, onnx.__version__, {"keep_io_types": True}, RECIPE)

    def build(folder: Path) -> None:
        onnx.save(fp16_model(convert, load_with_weights(conv.path)), str(folder / "model.onnx"))

    try:
        result = cached("onnxruntime-fp16", key, "model.onnx", build, workdir)
    except ModelFileError:
        raise
    except Exception as exc:
        raise SkipCell(f"fp16 conversion of {conv.path} ({converter}) failed: {first_line(exc)}") from exc
    info.update(result.info("fp16_conversion"))
    info["fp16_converter"] = converter
    _reduced_precision(result.path, onnx.TensorProto.FLOAT16, "fp16", info)
    info["executed_precision_note"] = (
        "weights and compute fp16, inputs and outputs fp32 (keep_io_types); the converter's op block list "
        "keeps a few ops in fp32"
    )
    return result


def _reduced_precision(path: Path, data_type: int, precision: str, info: dict[str, Any]) -> None:
    """How many of the converted model's weights are ``precision`` (``<precision>_initializers``) and
    fp32, and ``executed_precision``: ``precision`` where any weight is, else fp32."""
    import onnx

    graph = _load(path).graph
    weights = sum(t.data_type == data_type for t in graph.initializer)
    info[f"{precision}_initializers"] = weights
    info["fp32_initializers"] = sum(t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer)
    info["executed_precision"] = precision if weights else "fp32"


#: the first onnxruntime whose TensorRT provider takes ``trt_bf16_enable`` (read from the provider
#: libraries of onnxruntime-gpu 1.20-1.31: 1.22 has no such option, 1.23 has)
TRT_BF16_SINCE = (1, 23)


def _version(text: str) -> tuple[int, ...]:
    """A version's leading numbers: ``1.23.2`` -> (1, 23, 2), ``1.24.0.dev1`` -> (1, 24, 0, 1)."""
    return tuple(int(n) for n in re.findall(r"[0-9]+", text))


def _to_bf16(conv: Conversion, device_id: int, workdir: Path, info: dict[str, Any]) -> Conversion:
    """The bf16 model (:func:`plugins.bf16_onnx.bf16_file`, the tensorrt backend's too): the fp16
    converter's choice of ops, typed bf16, inputs and outputs fp32. A skip on a GPU before compute
    capability 8.0 (Ampere), which has no bf16 tensor cores: torch tells, where it is installed (the
    CUDA-event timing needs it too); without torch the cell runs and its kernels say what they can."""
    import onnx

    from plugins.bf16_onnx import bf16_file, no_bf16_tensor_cores

    why = None
    with contextlib.suppress(ImportError, RuntimeError, AssertionError):
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device_id)
            why = no_bf16_tensor_cores(torch.cuda.get_device_name(device_id), major, minor)
    if why is not None:
        raise SkipCell(why)
    result = bf16_file(conv, workdir, info)
    _reduced_precision(result.path, onnx.TensorProto.BFLOAT16, "bf16", info)
    info["executed_precision_note"] = (
        "weights and compute bf16, inputs and outputs fp32; the fp16 converter's op block list keeps a few "
        "ops in fp32 (the placement says which nodes, if any, ran on the CPU)"
    )
    return result


def _count_engines(info: dict[str, Any]) -> int:
    folder = info.get("trt_engine_cache_dir")
    return sum(1 for _ in Path(folder).glob("*.engine")) if folder else 0


@hookimpl
def bench_register_backends(register: RegisterBackend) -> None:
    register(OnnxRuntimeBackend)
