"""The OpenVINO backend (``openvino``): the model as OpenVINO IR on the CPU plugin, fp32/bf16/fp16, NNCF int8.

The model goes PyTorch -> ONNX (``harness.api.onnx_model``) -> IR, each cached by content; int8 variants
(NNCF post-training quantisation, or int8 weight-only compression) are derived from that IR and cached
the same way, so a sweep quantises once. OpenVINO and NNCF are imported inside
:meth:`OpenVinoBackend.prepare` only: the CLI imports this module to list backends, and
:meth:`OpenVinoBackend.supports` decides from the cell and ``/proc/cpuinfo`` alone.

One module, as each built-in backend is: the runtime's whole adapter in one place.

Why the session looks the way it does (measured on a 2-core EPYC, dlrm-small, see docs/plugins.md):

- A Python ``request.infer(inputs)`` call spends 120-250 us at batch 1 creating and copying input
  tensors. The session binds zero-copy ``ov.Tensor`` views of its input arrays to one infer request
  once, in prepare, and :meth:`OpenVinoSession.run` calls ``infer()`` with no arguments.
- The IR keeps a dynamic batch axis (one conversion serves every batch size); the session reshapes
  it to the cell's static input shapes before compiling, which the CPU plugin runs ~1.5x faster at
  batch 1 and ~1.1x at batch 64 (option ``shapes=dynamic`` keeps the dynamic model).
- On CPUs with native bf16 (avx512_bf16/AMX) the CPU plugin's *default* inference precision is bf16,
  so an fp32 cell sets ``INFERENCE_PRECISION_HINT=f32`` explicitly (unset, dlrm-small differs from
  torch fp32 by 2.4e-3); int8 cells do too, so what is not quantised runs fp32, not bf16.
- A precision hint is a request, not a guarantee: ``executed_precision`` is derived from the compiled
  model's runtime graph (the kernel each compute op got), never copied from the cell.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api import (
    Backend,
    Cell,
    Conversion,
    Model,
    Option,
    RegisterBackend,
    Session,
    SkipCell,
    Support,
    cached,
    cpu_flags,
    digest,
    first_line,
    hookimpl,
    module_available,
    onnx_model,
    pinned_cpus,
)

if TYPE_CHECKING:
    import numpy as np

HINTS = ("latency", "throughput")
QUANTIZATIONS = ("ptq", "weights")
SHAPES = ("static", "dynamic")
#: calibration samples of post-training quantisation when the cell does not say (NNCF's default subset size)
DEFAULT_CALIBRATION_SAMPLES = 300
#: seed of the calibration inputs: fixed, so cells that differ only in their input seed share one quantised IR
CALIBRATION_SEED = 0
#: bumped when the quantisation recipe below changes, so older cached int8 IRs are not reused
QUANTIZATION_RECIPE = 1
#: bench precision -> OpenVINO INFERENCE_PRECISION_HINT (int8 keeps what is not quantised in f32)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
#: bench precision -> the CPU plugin's OPTIMIZATION_CAPABILITIES entry that says it runs natively
CAPABILITIES = {"bf16": "BF16", "fp16": "FP16"}
#: x86 CPU flags under which the CPU plugin runs bf16 / fp16 natively (else it would emulate or upcast)
NATIVE_FLAGS = {"bf16": frozenset({"avx512_bf16", "amx_bf16"}), "fp16": frozenset({"avx512_fp16", "amx_fp16"})}
#: runtime-graph layer types whose kernel precision is "the precision the model ran in"
COMPUTE_LAYERS = frozenset(
    {"FullyConnected", "MatMul", "Convolution", "Deconvolution", "GroupConvolution", "ScaledDotProductAttention"}
)
#: runtime-graph layer types that move or hold data; left out of the precision count
BOOKKEEPING_LAYERS = frozenset({"Input", "Output", "Const", "Reshape", "Reorder", "Convert"})
#: OpenVINO element type (lowercase) -> bench precision name; integer index types are left out
RUNTIME_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}


class OpenVinoSession(Session):
    """One compiled model and one infer request with its input tensors bound; :meth:`run` is the timed call."""

    def __init__(
        self,
        compiled: Any,
        request: Any,
        arrays: dict[str, np.ndarray],
        output_names: tuple[str, ...],
        info: dict[str, Any],
    ) -> None:
        super().__init__()
        self.info = info
        #: the compiled model, for inspection (runtime graph, properties): not used by run()
        self.compiled = compiled
        self._request = request
        # the ov.Tensors bound to the request share these arrays' memory: they must outlive the request
        self._arrays = arrays
        self._output_names = output_names
        self._infer = request.infer

    def run(self) -> None:
        # No arguments: no input dispatch or copy in Python; inference releases the GIL.
        self._infer()

    def outputs(self) -> dict[str, np.ndarray]:
        import numpy as np

        self._request.infer()
        return {name: np.array(self._request.get_tensor(name).data, copy=True) for name in self._output_names}

    def close(self) -> None:
        self._infer = None  # type: ignore[assignment]  # released on close
        self._request = None
        self.compiled = None
        self._arrays = {}

    def set_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        import numpy as np

        for name, bound in self._arrays.items():  # the request's tensors share this memory
            np.copyto(bound, arrays[name], casting="same_kind")

    def replica(self) -> OpenVinoSession:
        """Another infer request of the same compiled model, on its own copy of the inputs (the
        compiled model serves several requests at once: streams, or queued on one stream)."""
        compiled = self.compiled
        request, arrays = _bound_request(compiled, self._arrays)
        return OpenVinoSession(compiled, request, arrays, self._output_names, self.info)


def _bound_request(compiled: Any, arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
    """A new infer request whose input tensors share memory with copies of ``arrays``."""
    import numpy as np
    import openvino as ov

    own = {name: np.array(array, copy=True, order="C") for name, array in arrays.items()}
    request = compiled.create_infer_request()
    for name, array in own.items():
        request.set_tensor(name, ov.Tensor(array, shared_memory=True))
    return request, own


def openvino_ir(onnx: Conversion, workdir: Path) -> Conversion:
    """The ONNX model converted to OpenVINO IR (``model.xml`` + ``model.bin``, weights kept fp32),
    cached by content like every conversion."""
    import openvino as ov

    key = digest("openvino-ir", onnx.key, ov.get_version())

    def convert(folder: Path) -> None:
        ov.save_model(ov.convert_model(str(onnx.path)), str(folder / "model.xml"), compress_to_fp16=False)

    return cached("openvino", key, "model.xml", convert, workdir)


class OpenVinoBackend(Backend):
    name = "openvino"
    description = (
        "OpenVINO on the CPU plugin (IR from the ONNX export, static input shapes): fp32, bf16/fp16 where the CPU "
        "runs them natively, int8 via NNCF (post-training quantisation or weight-only); OpenVINO's GPU device "
        "means Intel GPUs and is not offered"
    )
    devices = ("cpu",)
    precisions = ("fp32", "bf16", "fp16", "int8")
    #: one compiled model, an infer request per replica
    max_concurrency = 16
    options: ClassVar[dict[str, Option]] = {
        "hint": Option("PERFORMANCE_HINT", choices=HINTS, default="latency"),
        "streams": Option("NUM_STREAMS; default: what the hint picks", type=int, minimum=1, choices=("auto",)),
        "requests": Option(
            "PERFORMANCE_HINT_NUM_REQUESTS: parallel requests the hint sizes streams for; the single-stream "
            "load still runs one request",
            type=int,
            minimum=1,
        ),
        "quantization": Option(
            "int8 only: ptq (NNCF post-training int8, calibrated) or weights (NNCF int8 weight-only)",
            choices=QUANTIZATIONS,
            default="ptq",
        ),
        "calibration_samples": Option(
            "int8 ptq only: calibration samples", type=int, minimum=1, default=DEFAULT_CALIBRATION_SAMPLES
        ),
        "shapes": Option(
            "static (reshape to the cell's input shapes before compiling; faster) or dynamic",
            choices=SHAPES,
            default="static",
        ),
    }

    packages = ("openvino",)

    @classmethod
    def availability(cls) -> Support:
        return module_available("openvino")

    @classmethod
    def probe(cls) -> dict[str, Any]:
        """The devices, the CPU plugin's capabilities and its default inference precision (``bench doctor``)."""
        import openvino as ov

        core = ov.Core()
        info: dict[str, Any] = {"version": ov.get_version(), "devices": core.available_devices}
        try:
            info["cpu_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            info["cpu_default_precision"] = core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
        except Exception as exc:  # a CPU plugin that cannot be asked: said, the rest still shown
            info["cpu_error"] = str(exc)
        details = ["devices " + ", ".join(info["devices"])]
        if "cpu_capabilities" in info:
            details.append("CPU capabilities " + ", ".join(info["cpu_capabilities"]))
        if "cpu_default_precision" in info:
            details.append(f"CPU default precision {info['cpu_default_precision']}")
        info["summary"] = "; ".join(details)
        if info.get("cpu_default_precision") not in (None, "f32"):
            info["warnings"] = [
                f"OpenVINO runs CPU models in {info['cpu_default_precision']} unless told otherwise: "
                "bench sets the precision of every openvino cell explicitly"
            ]
        return info

    @classmethod
    def supports(cls, cell: Cell) -> Support:
        base = super().supports(cell)
        if not base.ok:
            return base
        # Option values were checked against the declarations (base.ok); what is left are the
        # combinations a sweep makes that apply to int8 only, and what this machine can run.
        opts = cell.backend_options
        if "quantization" in opts and cell.precision != "int8":
            return Support.no(f"option quantization applies only with precision int8, not {cell.precision}")
        if "calibration_samples" in opts and (cell.precision != "int8" or opts.get("quantization", "ptq") != "ptq"):
            return Support.no(
                "option calibration_samples applies only with precision int8 and quantization=ptq, "
                f"not {cell.precision} with quantization={opts.get('quantization', 'ptq')}"
            )
        if cell.precision == "int8":
            nncf = module_available("nncf")
            if not nncf.ok:
                return Support.no(f"int8 is made by NNCF: {nncf.reason}")
        native = NATIVE_FLAGS.get(cell.precision)
        # Off x86 the flags say nothing about fp16/bf16 (ARM cores run fp16 natively): prepare asks the plugin.
        if native is not None and platform.machine() in ("x86_64", "AMD64", "i686") and not (cpu_flags() & native):
            return Support.no(
                f"this CPU has no native {cell.precision} ({'/'.join(sorted(native))} absent): OpenVINO would "
                "emulate it or silently run fp32"
            )
        return Support.yes()

    def prepare(self, model: Model, cell: Cell, workdir: Path) -> Session:
        """Convert (cached), quantise if int8 (cached), reshape, compile for the cell, bind one batch of inputs.

        ``cell.threads`` > 0 sets ``INFERENCE_NUM_THREADS``; 0 or less leaves OpenVINO's default.
        """
        verdict = self.supports(cell)  # the harness asks first; this guards direct calls
        if not verdict.ok:
            raise SkipCell(verdict.reason)
        import numpy as np
        import openvino as ov

        opts = cell.backend_options
        workdir = Path(workdir)
        core = ov.Core()
        info: dict[str, Any] = {"openvino_version": ov.get_version(), "device": "CPU"}
        if cell.precision in CAPABILITIES:
            capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            if CAPABILITIES[cell.precision] not in capabilities:
                raise SkipCell(
                    f"OpenVINO's CPU plugin has no native {cell.precision} here (OPTIMIZATION_CAPABILITIES: "
                    f"{', '.join(capabilities)}): the hint would be emulated or silently run fp32"
                )

        onnx = onnx_model(model, workdir)
        ir = openvino_ir(onnx, workdir)
        info.update(onnx.info("onnx_export"))
        info.update(ir.info("openvino_ir"))
        source = ir
        if cell.precision == "int8":
            quantization = str(opts.get("quantization", "ptq"))
            if quantization == "ptq":
                samples = int(opts.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES))
                source = self._ptq(model, ir, samples, workdir, info)
            else:
                source = self._compress_weights(ir, workdir, info)

        ov_model = core.read_model(str(source.path))
        arrays = model.example_inputs(cell.batch_size, cell.seed)
        ir_inputs = sorted(name for port in ov_model.inputs for name in port.get_names())
        missing = [name for name in model.input_names if name not in ir_inputs]
        if missing:
            msg = (
                f"model '{model.name}' names inputs {', '.join(missing)} that its IR {source.path} lacks (IR inputs: "
                f"{', '.join(ir_inputs)}): the ONNX file must name its inputs as Model.input_names does"
            )
            raise ValueError(msg)
        ports = {name: ov_model.input(name) for name in model.input_names}
        # the session owns C-contiguous arrays of the types the IR declares: ov.Tensor shares them, no copy per call
        bound = {
            name: np.ascontiguousarray(arrays[name], dtype=port.get_element_type().to_dtype())
            for name, port in ports.items()
        }
        shapes = str(opts.get("shapes", "static"))
        if shapes == "static":
            ov_model.reshape({name: list(array.shape) for name, array in bound.items()})
        info["shapes"] = shapes
        info["input_shapes"] = {name: [str(d) for d in ov_model.input(name).get_partial_shape()] for name in ports}

        config: dict[str, Any] = {
            "PERFORMANCE_HINT": str(opts.get("hint", "latency")).upper(),
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[cell.precision],
        }
        if "streams" in opts:
            config["NUM_STREAMS"] = "AUTO" if opts["streams"] == "auto" else int(opts["streams"])  # type: ignore[arg-type]  # OpenVINO takes str or int
        if "requests" in opts:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = int(opts["requests"])  # type: ignore[arg-type]  # OpenVINO takes str or int
        if cell.threads > 0:
            config["INFERENCE_NUM_THREADS"] = cell.threads
        if pinned_cpus():  # the scenario's cpu.pin: bench pinned the process; OpenVINO binds its threads
            config["ENABLE_CPU_PINNING"] = True
        info["compile_config"] = {key: str(value) for key, value in config.items()}
        start = time.perf_counter()
        compiled = core.compile_model(ov_model, "CPU", config)
        info["compile_s"] = time.perf_counter() - start

        # what OpenVINO settled on, read back: a hint or a stream count may be adjusted to the machine
        info["hint"] = str(compiled.get_property("PERFORMANCE_HINT")).lower()
        info["streams"] = int(compiled.get_property("NUM_STREAMS"))
        info["threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        info["hint_num_requests"] = int(compiled.get_property("PERFORMANCE_HINT_NUM_REQUESTS"))
        info["optimal_nireq"] = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        info["nireq"] = cell.concurrency  # infer requests in flight: one per replica (LoadGen concurrency)
        info["inference_precision_hint"] = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        info["execution_devices"] = list(compiled.get_property("EXECUTION_DEVICES"))
        info.update(executed_precision(compiled.get_runtime_model()))

        request, bound = _bound_request(compiled, bound)
        return OpenVinoSession(compiled, request, bound, tuple(model.output_names), info)

    @staticmethod
    def _ptq(model: Model, ir: Conversion, samples: int, workdir: Path, info: dict[str, Any]) -> Conversion:
        """NNCF post-training int8 (activations and weights) of the IR, calibrated on ``samples`` samples.

        Two departures from ``nncf.quantize``'s defaults, both measured on dlrm-small (1024 samples, agreement
        of ``p > 0.5`` with torch fp32): the MIXED preset (asymmetric activations: embeddings and dot
        products are signed) and MatMuls of two activations (DLRM's pairwise-dot interaction, attention
        scores) kept in float. Defaults: agreement 0.86, max error 0.47; this recipe: 0.97, 0.18.
        """
        import numpy as np
        import openvino as ov

        nncf = _import_nncf()
        calibration = {
            name: np.ascontiguousarray(array)
            for name, array in model.calibration_inputs(samples, CALIBRATION_SEED).items()
        }
        ignored = activation_matmuls(ov.Core().read_model(str(ir.path)))
        settings = {
            "samples": samples,
            "seed": CALIBRATION_SEED,
            "preset": "mixed",
            "ignored_matmuls": ignored,
            "recipe": QUANTIZATION_RECIPE,
        }
        data_key = digest(*(array.tobytes() for array in calibration.values()), sorted(calibration))
        key = digest("nncf-ptq", ir.key, ov.get_version(), nncf.__version__, settings, data_key)

        def build(folder: Path) -> None:
            items = [{name: array[i : i + 1] for name, array in calibration.items()} for i in range(samples)]
            source = ov.Core().read_model(str(ir.path))
            kwargs: dict[str, Any] = {"subset_size": samples, "preset": nncf.QuantizationPreset.MIXED}
            if ignored:
                kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored)
            with _quiet_nncf(nncf):
                quantized = nncf.quantize(source, nncf.Dataset(items), **kwargs)
            ov.save_model(quantized, str(folder / "model.xml"), compress_to_fp16=False)

        conversion = cached("openvino-int8-ptq", key, "model.xml", build, workdir)
        info.update(conversion.info("int8_ptq"))
        info["nncf_version"] = nncf.__version__
        info["quantization"] = (
            f"nncf.quantize post-training int8, preset mixed, {samples} calibration samples "
            f"(calibration_inputs seed {CALIBRATION_SEED}); activation x activation MatMuls kept float: "
            f"{', '.join(ignored) or 'none'}"
        )
        return conversion

    @staticmethod
    def _compress_weights(ir: Conversion, workdir: Path, info: dict[str, Any]) -> Conversion:
        """NNCF int8 weight-only compression (asymmetric, per channel): weights stored int8, math in fp32."""
        import openvino as ov

        nncf = _import_nncf()
        mode = "int8_asym"
        key = digest("nncf-weights", ir.key, ov.get_version(), nncf.__version__, mode, QUANTIZATION_RECIPE)

        def build(folder: Path) -> None:
            source = ov.Core().read_model(str(ir.path))
            with _quiet_nncf(nncf):
                compressed = nncf.compress_weights(source, mode=nncf.CompressWeightsMode.INT8_ASYM)
            ov.save_model(compressed, str(folder / "model.xml"), compress_to_fp16=False)

        conversion = cached("openvino-int8-weights", key, "model.xml", build, workdir)
        info.update(conversion.info("int8_weights"))
        info["nncf_version"] = nncf.__version__
        info["quantization"] = f"nncf.compress_weights {mode} (weight-only, per channel); activations fp32"
        return conversion


def _import_nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:  # supports() checked find_spec; this is a broken install
        raise SkipCell(f"int8 needs NNCF, which does not import here: {first_line(exc)}") from exc
    return nncf


@contextlib.contextmanager
def _quiet_nncf(nncf: Any) -> Any:
    """NNCF's progress bars (rich, on stdout) and INFO tables off for the call; its warnings stay."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def activation_matmuls(ov_model: Any) -> list[str]:
    """Friendly names of the MatMuls whose two inputs are both activations (no Constant behind either).

    Weights reach a MatMul through a Constant, possibly via decompression (Convert, Subtract, Multiply)
    or layout ops (Reshape, Transpose); anything else makes the input an activation.
    """
    passthrough = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose"}

    def from_constant(node: Any) -> bool:
        while node.get_type_name() in passthrough:
            node = node.input_value(0).get_node()
        return node.get_type_name() == "Constant"

    names = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        if not any(from_constant(port.get_source_output().get_node()) for port in op.inputs()):
            names.append(op.get_friendly_name())
    return names


def executed_precision(runtime_model: Any) -> dict[str, Any]:
    """What ran, from the compiled model's runtime graph (``compiled_model.get_runtime_model()``).

    Each runtime op carries ``layerType``, ``runtimePrecision`` and ``primitiveType`` (the kernel, e.g.
    ``brgemm_avx512_bf16``, ``brgemm_avx512_I8``), whose suffix is the precision the kernel computes in.
    ``executed_precision`` is the compute ops' (FullyConnected, MatMul, Convolution, ...) kernel precision:
    one name when they agree, ``a+b`` (most ops first) when they do not, with `` (int8 weights)`` when
    float kernels read int8 weights (weight-only compression). A model without compute ops is judged by
    its other ops. ``compute_precisions`` and ``runtime_precisions`` hold the counts behind it.
    """
    compute: Counter[str] = Counter()
    other: Counter[str] = Counter()
    runtime: Counter[str] = Counter()
    int8_weights = 0
    for op in runtime_model.get_ordered_ops():
        rt = op.get_rt_info()
        layer = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        if layer in {"Input", "Output", "Const"}:
            continue
        declared = rt["runtimePrecision"].astype(str).lower() if "runtimePrecision" in rt else ""
        runtime[declared or "unknown"] += 1
        kernel = rt["primitiveType"].astype(str).rsplit("_", 1)[-1].lower() if "primitiveType" in rt else ""
        precision = RUNTIME_PRECISIONS.get(kernel) or RUNTIME_PRECISIONS.get(declared)
        if precision is None or layer in BOOKKEEPING_LAYERS:
            continue
        if layer in COMPUTE_LAYERS:
            compute[precision] += 1
            if precision != "int8" and RUNTIME_PRECISIONS.get(declared) == "int8":
                int8_weights += 1
        else:
            other[precision] += 1
    counts = compute or other
    label = "+".join(name for name, _ in counts.most_common()) or "unknown"
    if int8_weights and "int8" not in counts:
        label += " (int8 weights)"
    return {
        "executed_precision": label,
        "compute_precisions": dict(compute),
        "int8_weight_compute_ops": int8_weights,
        "runtime_precisions": dict(runtime),
    }


@hookimpl
def bench_register_backends(register: RegisterBackend) -> None:
    register(OpenVinoBackend)
