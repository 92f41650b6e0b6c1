"""The built-in PyTorch backend (``pytorch``): eager or ``torch.compile``, fp32/fp16/bf16/dynamic int8, CPU or CUDA.

Torch is imported inside :meth:`TorchBackend.prepare` only: the CLI imports this module to list
backends, and :meth:`TorchBackend.supports` decides from the cell and ``/proc/cpuinfo`` alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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
    cpu_flags,
    first_line,
    hookimpl,
    module_available,
    tf32_allowed,
    tf32_support,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

MODES = ("eager", "compile")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: precision name -> torch dtype name of the weights and floating-point inputs (int8: see _quantize)
FLOAT_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INDUCTOR_DIR = "torchinductor"


class TorchSession(Session):
    """One prepared module with its inputs bound; :meth:`run` is the timed call."""

    def __init__(
        self,
        fn: Callable[..., Any],
        inputs: tuple[torch.Tensor, ...],
        output_names: tuple[str, ...],
        *,
        module: torch.nn.Module,
        sync: Callable[[], None] | None,
        info: dict[str, Any],
        on_close: Callable[[], None] | None = None,
        cuda_device: torch.device | None = None,
        host_inputs: tuple[torch.Tensor, ...] | None = None,
        stream: torch.cuda.Stream | None = None,
    ) -> None:
        super().__init__()
        import torch

        #: a replica's own CUDA stream (None: the device's current stream): replicas' calls overlap on
        #: the GPU, and each waits for its own work only
        self._stream = stream
        self._stream_context = torch.cuda.stream if stream is not None else None

        self.info = info
        #: the module as converted for the cell (before torch.compile): for inspection, not for timing
        self.module = module
        self._fn = fn
        self._inputs = inputs
        self._output_names = output_names
        self._sync = sync
        self._on_close = on_close
        # A fresh inference-mode guard per call (thread-safe, re-entrant, no state left behind between
        # calls): the C++ guard behind torch.inference_mode() costs ~1.6 us a call here against ~4 us
        # for the Python wrapper; a guard held open for the session's lifetime saves that but binds
        # the mode to the preparing thread only, and leaks it into the caller's code.
        self._inference_mode = getattr(torch._C, "_InferenceMode", torch.inference_mode)
        #: the model's input names, in the order of the bound inputs
        self.input_names: tuple[str, ...] = ()
        #: transfers: include: pinned host copies of the inputs, copied to the GPU at each call (and the
        #: outputs copied back); None: the inputs stay on the device
        self._host_inputs = host_inputs
        self._device = cuda_device
        #: CUDA: the recorder and two CUDA events, recorded around the forward of every call of a window
        self._timing: tuple[CallTimes, Any, Any] | None = None
        if cuda_device is not None:
            outside = " (the copies to and from the host outside them)" if host_inputs is not None else ""
            events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._timing = (CallTimes(f"the module's forward{outside}"), *events)

    def call_times(self) -> CallTimes | None:
        return self._timing[0] if self._timing is not None else None

    def run(self) -> None:
        if self._stream_context is not None:
            with self._stream_context(self._stream):
                self._call()
        else:
            self._call()

    def _call(self) -> None:
        if self._host_inputs is not None:
            for device_tensor, host_tensor in zip(self._inputs, self._host_inputs, strict=True):
                device_tensor.copy_(host_tensor, non_blocking=True)
        timing = self._timing if self._timing is not None and self._timing[0].recording else None
        stream, t0, t1 = None, 0, 0
        if timing is not None:  # the events on the device's current stream, around the forward
            import torch

            stream = torch.cuda.current_stream(self._device)
            t0 = time.perf_counter_ns()
            timing[1].record(stream)
        with self._inference_mode(True):
            result = self._fn(*self._inputs)
        if timing is not None:
            timing[2].record(stream)
            t1 = time.perf_counter_ns()
        if self._host_inputs is not None:
            _to_host(result)
        if self._sync is not None:
            self._sync()
        if timing is not None:
            timer, start, end = timing
            timer.add(start.elapsed_time(end) * 1e6, t1 - t0)  # elapsed_time: ms

    def outputs(self) -> dict[str, np.ndarray]:
        if self._stream_context is not None:
            with self._stream_context(self._stream):
                return self._outputs()
        return self._outputs()

    def _outputs(self) -> dict[str, np.ndarray]:
        import torch

        with self._inference_mode(True):
            result = self._fn(*self._inputs)
            if self._sync is not None:
                self._sync()
            if isinstance(result, torch.Tensor):
                tensors = {self._output_names[0]: result}
            elif isinstance(result, dict):
                tensors = {name: result[name] for name in self._output_names}
            else:
                tensors = dict(zip(self._output_names, result, strict=True))
            return {name: t.to("cpu", torch.float32, copy=True).numpy() for name, t in tensors.items()}

    def set_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        import numpy as np
        import torch

        for index, (name, tensor) in enumerate(zip(self.input_names, self._inputs, strict=True)):
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name])))
            if self._host_inputs is not None:  # transfers: include copies these to the GPU at each call
                self._host_inputs[index].copy_(tensor)
        if self._device is not None:
            torch.cuda.synchronize(self._device)

    def replica(self) -> TorchSession:
        """The same prepared module (a call only reads it) on copies of the inputs; on CUDA with a
        stream of its own, so that the replicas' calls overlap on the GPU as separate servers' would."""
        inputs = tuple(t.clone() for t in self._inputs)
        host = tuple(t.clone().pin_memory() for t in self._host_inputs) if self._host_inputs is not None else None
        stream, sync = None, self._sync
        if self._device is not None:
            import torch

            stream = torch.cuda.Stream(device=self._device)
            stream.wait_stream(torch.cuda.current_stream(self._device))  # the clones are made before it reads them
            sync = stream.synchronize
            # this session runs on the device's default stream: from now on it waits for that stream
            # only, not for the whole device (the replicas' work)
            self._sync = torch.cuda.default_stream(self._device).synchronize
        twin = TorchSession(self._fn, inputs, self._output_names, module=self.module, sync=sync, info=self.info,
                            cuda_device=self._device, host_inputs=host, stream=stream)  # fmt: skip
        twin.input_names = self.input_names
        return twin

    def close(self) -> None:
        self._fn = None  # type: ignore[assignment]  # released on close
        self.module = None  # type: ignore[assignment]  # released on close
        self._inputs = ()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


def _to_host(result: Any) -> None:
    """Copy a call's outputs (a tensor, a tuple or a dict of them) to the host: transfers: include."""
    import torch

    values = result.values() if isinstance(result, dict) else result if isinstance(result, tuple | list) else (result,)
    for value in values:
        if isinstance(value, torch.Tensor):
            value.to("cpu")


def _set_tf32(torch: Any, allowed: bool) -> None:
    """TF32 for fp32 matmuls (cuBLAS, and inductor's kernels, which read the same setting) and cuDNN
    convolutions, set in this worker before anything runs: torch's defaults differ between the two
    (matmuls without, convolutions with TF32). Through the older setters, which set every backend
    alike: mixing them with torch 2.9's ``fp32_precision`` makes torch's own getters raise."""
    torch.set_float32_matmul_precision("high" if allowed else "highest")
    torch.backends.cudnn.allow_tf32 = allowed
    if hasattr(torch.backends.cudnn, "fp32_precision"):  # torch 2.9+: what inductor's Triton convolutions read
        torch.backends.cudnn.fp32_precision = "tf32" if allowed else "ieee"


class TorchBackend(Backend):
    name = "pytorch"
    description = "PyTorch: eager or torch.compile (inductor); fp32, fp16/bf16 (cast), int8 (dynamic quantisation, CPU)"
    devices = ("cpu", "cuda")
    precisions = ("fp32", "fp16", "bf16", "int8")
    #: one module, inputs per replica; every call runs on its own thread
    max_concurrency = 8
    options: ClassVar[dict[str, Option]] = {
        "mode": Option("eager, or compile (torch.compile, default inductor)", choices=MODES, default="eager"),
        "compile_mode": Option("torch.compile mode (only with mode=compile)", choices=COMPILE_MODES, default="default"),
        "transfers": Option(
            "cuda: include = the inputs wait in pinned host memory and each call copies them to the GPU and "
            "its outputs back (host latency); exclude = the inputs stay on the GPU (compute only)",
            choices=("exclude", "include"),
            default="exclude",
        ),
        "tf32": Option(
            "cuda: let fp32 matmuls and convolutions use TF32 tensor cores (off: fp32 computes in fp32, as on "
            "the other backends; torch's own default allows TF32 in cuDNN convolutions)",
            type=bool,
            default=False,
        ),
    }

    packages = ("torch",)

    @classmethod
    def availability(cls) -> Support:
        return module_available("torch")

    @classmethod
    def probe(cls) -> dict[str, Any]:
        """torch's threads, CUDA build and devices, and whether oneDNN runs bf16 here (``bench doctor``)."""
        import torch

        info: dict[str, Any] = {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(),
            "cuda_build": torch.version.cuda,
        }
        if torch.cuda.is_available():
            info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            # bf16 and TF32 tensor cores from 8.0 (Ampere), fp8 from 8.9: what each GPU's cells can run
            info["cuda_capabilities"] = [
                ".".join(map(str, torch.cuda.get_device_capability(i))) for i in range(torch.cuda.device_count())
            ]
        with contextlib.suppress(Exception):  # a private op: absent from some builds
            info["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        devices = zip(info.get("cuda_devices", []), info.get("cuda_capabilities", []), strict=True)
        cuda = "; ".join(f"{name}: compute capability {cc}" for name, cc in devices) or "no CUDA device"
        info["summary"] = f"cuda {info['cuda_build'] or 'not built in'} ({cuda}); default threads {info['threads']}"
        return info

    @classmethod
    def supports(cls, cell: Cell) -> Support:
        base = super().supports(cell)
        if not base.ok:
            return base
        device_kind = cell.device_kind
        if device_kind == "cpu" and cell.precision == "fp16":
            return Support.no(
                "fp16 on CPU is not a supported inference precision in this backend "
                "(no native fp16 matmul path on CPU: it would be emulated or upcast)"
            )
        if device_kind == "cpu" and cell.precision == "bf16" and not (cpu_flags() & NATIVE_BF16_FLAGS):
            return Support.no("this CPU has no native bf16 (avx512_bf16/amx_bf16 absent): bf16 would be emulated")
        if device_kind == "cuda" and cell.precision == "int8":
            return Support.no("int8 here is dynamic quantisation, which PyTorch runs on CPU only")
        # Option values were checked against the declarations (base.ok): a sweep over mode and
        # compile_mode makes eager cells with a compile_mode, which would repeat the plain eager cell.
        if "compile_mode" in cell.backend_options and cell.backend_options.get("mode", "eager") != "compile":
            return Support.no("option compile_mode applies only with mode=compile")
        if "transfers" in cell.backend_options and device_kind != "cuda":
            return Support.no("option transfers applies to cuda cells: a CPU cell's inputs are in host memory already")
        return tf32_support(cell)

    def prepare(self, model: Model, cell: Cell, workdir: Path) -> Session:
        """Build ``model`` for the cell, bind one batch of its example inputs (``seed``), compile if asked.

        ``cell.threads`` > 0 sets torch's intra-op threads (process-wide); 0 or less leaves torch's default.
        """
        verdict = self.supports(cell)  # the harness asks first; this guards direct calls
        if not verdict.ok:
            raise SkipCell(verdict.reason)
        has_torch = model.torch_support()
        if not has_torch.ok:  # e.g. a model given as an ONNX file
            raise SkipCell(has_torch.reason)
        import torch

        mode = cell.backend_options.get("mode", "eager")
        compile_mode = str(cell.backend_options.get("compile_mode", "default"))
        device = torch.device(cell.device)
        on_cuda = device.type == "cuda"
        if on_cuda:
            self._check_cuda(torch, device, cell.precision)
            torch.cuda.reset_peak_memory_stats(device)

        info: dict[str, Any] = {"mode": mode, "torch_version": torch.__version__}
        if on_cuda:
            _set_tf32(torch, tf32_allowed(bool(cell.backend_options.get("tf32", False)), info))
        if mode == "compile":
            info["compile_mode"] = compile_mode
        if cell.threads > 0:
            torch.set_num_threads(cell.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError as exc:  # set already, or inter-op work has started in this process
            info["interop_threads_note"] = f"set_num_interop_threads(1) refused: {first_line(exc)}"
        info["threads"] = torch.get_num_threads()
        info["interop_threads"] = torch.get_num_interop_threads()

        module = model.build_torch().eval()
        if cell.precision == "int8":
            module = self._quantize(torch, module)
            info["quantization"] = (
                "dynamic int8 of nn.Linear (weights int8 per tensor, activations quantised per call), "
                "other ops fp32; torch.ao.quantization.quantize_dynamic"
            )
            info["quantized_engine"] = torch.backends.quantized.engine
            dtype = torch.float32
        else:
            dtype = getattr(torch, FLOAT_DTYPES[cell.precision])
            module = module.to(dtype)
        module = module.to(device)
        info["executed_precision"] = cell.precision
        if cell.precision == "int8":
            quantized = sum(1 for m in module.modules() if "quantized" in type(m).__module__)
            info["quantized_modules"] = quantized
            if not quantized:  # e.g. a torch.export program: no nn.Linear for quantize_dynamic to replace
                info["executed_precision"] = "fp32"
                info["executed_precision_note"] = "dynamic quantisation found no nn.Linear: the model ran in fp32"

        arrays = model.example_inputs(cell.batch_size, cell.seed)
        inputs = tuple(self._to_tensor(torch, arrays[name], dtype, device) for name in model.input_names)

        fn: Callable[..., Any] = module
        cleanups: list[Callable[[], None]] = []
        sync = functools.partial(torch.cuda.synchronize, device) if on_cuda else None
        if on_cuda:
            cleanups.append(torch.cuda.empty_cache)  # so the next cell's reserved-memory peak starts clean
        if mode == "compile":
            shared = cache_dir(INDUCTOR_DIR)
            inductor_dir = shared or Path(workdir) / INDUCTOR_DIR
            info["compile_cache_dir"] = str(inductor_dir)
            restore = _redirect_inductor_files(inductor_dir, Path(workdir) / INDUCTOR_DIR / "tmp")
            cleanups.insert(0, restore)
            try:
                with warnings.catch_warnings():
                    # torch's own import-time noise (torch.utils.mkldnn, imported by inductor)
                    warnings.filterwarnings(
                        "ignore", message=r".*torch\.jit\.script_method.*", category=DeprecationWarning
                    )
                    start = time.perf_counter()  # from torch.compile(): its first use imports dynamo (~3 s)
                    fn = torch.compile(module, mode=compile_mode, dynamic=False)
                    before = _dynamo_counts()
                    hits_before = _cache_counts()
                    with torch.inference_mode():
                        fn(*inputs)  # compiles here, so that prepare_s includes compilation
                        if sync is not None:
                            sync()
                    info["compile_s"] = time.perf_counter() - start
                    after = _dynamo_counts()
                    hits_after = _cache_counts()
                    if hits_before is not None and hits_after is not None:
                        # hits: kernels loaded from an earlier compile (warm, prepare_s much shorter)
                        info["compile_cache_hits"] = hits_after[0] - hits_before[0]
                        info["compile_cache_misses"] = hits_after[1] - hits_before[1]
                    if before is not None and after is not None:
                        # > 0 breaks: parts of the model run eagerly between compiled graphs
                        info["compiled_graphs"] = after[0] - before[0]
                        info["graph_breaks"] = after[1] - before[1]
                    if on_cuda and compile_mode == "reduce-overhead":
                        with torch.inference_mode():  # CUDA graphs record on the calls after the first
                            for _ in range(2):
                                fn(*inputs)
                            sync()
            except Exception as exc:
                restore()
                if cell.precision == "int8":
                    raise SkipCell(f"torch.compile of the dynamic-int8 model failed: {first_line(exc)}") from exc
                raise

        if on_cuda:
            info["device_name"] = torch.cuda.get_device_name(device)
            info["gpu_mem_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            info["gpu_mem_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
            info["gpu_mem_note"] = (
                "peaks of the CUDA caching allocator during prepare "
                "(torch.cuda.max_memory_allocated / max_memory_reserved), not the driver's view"
            )

        def on_close() -> None:
            for cleanup in cleanups:
                cleanup()

        host_inputs = None
        if on_cuda:
            info["transfers"] = str(cell.backend_options.get("transfers", "exclude"))
            if info["transfers"] == "include":
                host_inputs = tuple(t.to("cpu").pin_memory() for t in inputs)
        session = TorchSession(
            fn, inputs, tuple(model.output_names), module=module, sync=sync, info=info, on_close=on_close,
            cuda_device=device if on_cuda else None, host_inputs=host_inputs,
        )  # fmt: skip
        session.input_names = tuple(model.input_names)
        return session

    @staticmethod
    def _check_cuda(torch: Any, device: torch.device, precision: str) -> None:
        if not torch.cuda.is_available():
            raise SkipCell("no CUDA device visible to torch (torch.cuda.is_available() is False)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SkipCell(f"device {device} asked, but torch sees {count} CUDA device(s)")
        # not torch.cuda.is_bf16_supported(): it answers for the current device, and True wherever bf16
        # can be emulated; native bf16 tensor cores came with compute capability 8.0 (Ampere)
        capability = torch.cuda.get_device_capability(device)
        if precision == "bf16" and tuple(capability) < (8, 0):
            raise SkipCell(
                f"{torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]}) has no "
                "native bf16: it came with 8.0 (Ampere); torch would emulate it"
            )

    @staticmethod
    def _quantize(torch: Any, module: torch.nn.Module) -> torch.nn.Module:
        """Dynamic int8 quantisation of every nn.Linear.

        torch.ao.quantization is deprecated in favour of the separate torchao package, but it is the
        only route inside torch itself; its deprecation warnings are silenced here, locally.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)

    @staticmethod
    def _to_tensor(torch: Any, array: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        tensor = torch.tensor(array)  # a copy: the session owns its inputs
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        return tensor.to(device)


def _dynamo_counts() -> tuple[int, int] | None:
    """(graphs compiled, graph breaks) so far in this process, from dynamo's counters (private: None
    where they are not there)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))
    except Exception:
        return None


def _cache_counts() -> tuple[int, int] | None:
    """(FX graph cache hits, misses) so far in this process, from inductor's counters (private: None
    if they moved)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["fxgraph_cache_hit"]), int(counters["inductor"]["fxgraph_cache_miss"])
    except Exception:
        return None


def _redirect_inductor_files(cache: Path, tmp: Path) -> Callable[[], None]:
    """Point inductor's cache (``TORCHINDUCTOR_CACHE_DIR``) into ``cache`` and the temporary folder
    of this process (``tempfile.tempdir``) and of its children such as the C++ compiler (``TMPDIR``)
    into ``tmp``; return the function that puts all three back (each only if nobody changed it since).

    Inductor computes its precompiled-header folder once, at its first import, from the temporary
    folder; that import happens here with the temporary folder set to ``cache``, so the headers are
    kept (and reused) with the kernels. Later sessions of the process keep the first one's folder.
    """
    import tempfile  # here: importing it costs ~10 ms, and the CLI imports this module

    cache.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    tmp_path = str(tmp.resolve())
    new_env = {"TORCHINDUCTOR_CACHE_DIR": str(cache.resolve()), "TMPDIR": tmp_path}
    old_env = {key: os.environ.get(key) for key in new_env}
    old_tempdir = tempfile.tempdir
    if "torch._inductor.codecache" not in sys.modules:
        # inductor keeps its precompiled headers (~5 s of g++ per folder) under the temporary
        # folder as it is when codecache is first imported: put them beside the kernel cache
        tempfile.tempdir = str(cache.resolve())
        try:
            import torch._inductor.codecache  # noqa: F401
        finally:
            tempfile.tempdir = old_tempdir
    os.environ.update(new_env)
    tempfile.tempdir = tmp_path

    def restore() -> None:
        for key, value in new_env.items():
            # inductor rewrites its variable as an absolute path: compare resolved
            if os.path.realpath(os.environ.get(key, "")) == value:
                if old_env[key] is None:
                    del os.environ[key]
                else:
                    os.environ[key] = old_env[key]  # type: ignore[assignment]  # not None: checked above
        if tempfile.tempdir == tmp_path:
            tempfile.tempdir = old_tempdir

    return restore


@hookimpl
def bench_register_backends(register: RegisterBackend) -> None:
    register(TorchBackend)
