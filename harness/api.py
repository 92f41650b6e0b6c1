"""Everything a plugin may use: the contract it implements (models, backends and the sessions
backends prepare) and the helpers the harness lends it.

A plugin imports this module and no other part of ``harness``: what is here stays, what is
elsewhere may move. Nothing heavy is imported here: runtimes (torch, onnxruntime, ...) are imported
inside :meth:`Backend.prepare` and :meth:`Model.build_torch`, which run in the worker.

docs/plugins.md states when bench calls each member, from which process and thread, and lists every
name here with its signature (tests/harness/test_plugin_docs.py keeps the two in step).
"""

from __future__ import annotations

import builtins
import difflib
import functools
import importlib.metadata
import importlib.util
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.cells import Cell, Scalar
from harness.environment import cpu_flags
from harness.errors import SkipCell
from harness.hookspecs import RegisterBackend, RegisterModel, hookimpl
from harness.measure.call_times import CallTimes
from harness.onnx_export import Conversion, cached, digest, file_digest, onnx_model

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_FOLDER",
    "PIN_CPUS_ENV",
    "TF32_OVERRIDE_ENV",
    "WAIT_POLICY_ENV",
    "Backend",
    "CallTimes",
    "Cell",
    "Conversion",
    "FileShorthand",
    "Model",
    "Option",
    "RegisterBackend",
    "RegisterModel",
    "Scalar",
    "Session",
    "SkipCell",
    "Support",
    "cache_dir",
    "cached",
    "cpu_flags",
    "digest",
    "file_digest",
    "first_line",
    "hookimpl",
    "module_available",
    "onnx_model",
    "pinned_cpus",
    "tf32_allowed",
    "tf32_support",
    "wait_policy",
]


#: environment variable through which the harness hands workers the cross-run cache folder
CACHE_DIR_ENV = "BENCH_CACHE_DIR"
#: that folder's name inside the results root
CACHE_FOLDER = ".cache"
#: environment variables through which bench hands a worker the scenario's ``cpu`` settings
WAIT_POLICY_ENV = "BENCH_WAIT_POLICY"
PIN_CPUS_ENV = "BENCH_PIN_CPUS"
#: NVIDIA's switch: ``0`` turns TF32 off in every NVIDIA library of the process (cuBLAS, cuDNN, and
#: TensorRT when it builds an engine), whatever the program asks of them
TF32_OVERRIDE_ENV = "NVIDIA_TF32_OVERRIDE"


def wait_policy() -> str:
    """The scenario's ``cpu.wait`` for this worker: ``passive`` (idle runtime threads should sleep,
    not spin: a backend whose runtime spins by default turns that off) or ``default``."""
    return "passive" if os.environ.get(WAIT_POLICY_ENV) == "passive" else "default"


def pinned_cpus() -> tuple[int, ...]:
    """The CPUs this worker is pinned to under ``cpu.pin`` (bench has set the process's affinity; a
    runtime with its own thread placement may bind its threads to these), or ``()`` when not pinned."""
    text = os.environ.get(PIN_CPUS_ENV, "")
    return tuple(int(cpu) for cpu in text.split(",") if cpu.strip().isdigit())


def first_line(exc: BaseException) -> str:
    """``"TypeName: first line of its message"`` (the type alone where the message is empty): an
    exception said in one line, for a skip's or a failure's reason."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def tf32_allowed(asked: bool, info: dict[str, Any]) -> bool:
    """Whether a CUDA cell's fp32 matmuls and convolutions may use TF32 tensor cores (inputs rounded to
    10 bits of mantissa, Ampere and newer): as the cell's ``tf32`` option asks, unless
    ``NVIDIA_TF32_OVERRIDE=0`` in the environment forbids it in every NVIDIA library. Recorded as
    ``info["tf32"]``, with ``tf32_note`` where the environment overrode the option."""
    allowed = asked and os.environ.get(TF32_OVERRIDE_ENV) != "0"
    info["tf32"] = allowed
    if asked and not allowed:
        info["tf32_note"] = (
            f"tf32 asked, but {TF32_OVERRIDE_ENV}=0 in the environment turns TF32 off in every NVIDIA library"
        )
    return allowed


def tf32_support(cell: Cell) -> Support:
    """The verdict on a cell's ``tf32`` option, for a backend's ``supports()``: CUDA cells only, and
    ``true`` at precision fp32 only (TF32 is how fp32 matmuls may compute: an fp16, bf16 or int8 cell
    with it would repeat the one without, so a sweep over tf32 keeps those once)."""
    if "tf32" not in cell.backend_options:
        return Support.yes()
    if cell.device_kind != "cuda":
        return Support.no("option tf32 applies to cuda cells: TF32 is a mode of NVIDIA's tensor cores")
    if cell.backend_options["tf32"] is True and cell.precision != "fp32":
        return Support.no(
            f"option tf32 applies only with precision fp32 (TF32 is how fp32 matmuls may compute: this "
            f"{cell.precision} cell would repeat the one with tf32=false)"
        )
    return Support.yes()


def cache_dir(name: str) -> Path | None:
    """``<results root>/.cache/<name>``, created: a folder kept across runs for what is costly to
    rebuild and safe to reuse (compiled kernels, converted models, keyed by content), or ``None``
    when the run was started with ``--no-cache`` (then keep such files under ``workdir``).

    What a cache saved must show in the cell's ``info`` (hits and misses), so that ``prepare_s``
    is read as warm or cold.
    """
    root = os.environ.get(CACHE_DIR_ENV)
    if not root:
        return None
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class Support:
    """Whether something can run here, and if not, why (shown to the user as the skip reason)."""

    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Support:
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Support:
        return cls(False, reason)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _of_type(value: Any, kinds: tuple[type, ...]) -> bool:
    """``isinstance`` as a scenario means it: a boolean is no number, an integer is a number."""
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


@dataclass(frozen=True)
class Option:
    """One option a backend takes (``options:`` / ``sweep:`` in a scenario), declared so that the
    harness checks every value before anything runs: a misspelt name or a bad value is a scenario
    error naming the file, line, backend, option and what is allowed, never a skipped cell.

    A value is allowed when it is one of ``choices``, or (with ``type`` set) a value of that type,
    at least ``minimum`` for numbers, that ``check`` does not refuse. Without ``type`` only the
    choices are allowed; with neither, any value that ``check`` does not refuse is.
    ``Option("...", choices=("a", "b"))`` and ``Option("...", type=int, minimum=1)`` are the common
    cases; ``Option("...", type=int, minimum=1, choices=("auto",))`` allows ``auto`` or an integer >= 1.
    """

    #: what the option does, one line (``bench list backends`` shows it)
    help: str
    #: ``str``, ``int``, ``float`` (an integer is a number too), ``bool``, or a tuple of them
    type: builtins.type | tuple[builtins.type, ...] | None = None
    #: the allowed values (or, with ``type``, the allowed values besides those of the type)
    choices: tuple[Scalar, ...] | None = None
    #: the value the backend uses when a scenario does not set one (``None``: the runtime decides)
    default: Scalar = None
    #: the smallest allowed number
    minimum: float | None = None
    #: a further test of a value of the right type: what is wrong with it (e.g. ``"must be op types
    #: separated by commas, got 'a;b'"``), or ``None`` when it is fine
    check: Callable[[Any], str | None] | None = None

    def _types(self) -> tuple[builtins.type, ...]:
        if self.type is None:
            return ()
        return self.type if isinstance(self.type, tuple) else (self.type,)

    def allowed(self) -> str:
        """The allowed values in words: ``one of a, b``, ``an integer >= 1``, ``auto or an integer >= 1``."""
        words = []
        for kind in self._types():
            word = _TYPE_WORDS.get(kind, kind.__name__)
            if self.minimum is not None and kind in (int, float):
                word += f" >= {self.minimum:g}"
            words.append(word)
        typed = " or ".join(words)
        if self.choices is None:
            return typed or "any value"
        listed = ", ".join(str(choice) for choice in self.choices)
        if not typed:
            return f"one of {listed}"
        return f"{listed} or {typed}"

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``"must be one of a, b, got 'c'"``), or ``None`` when it is allowed."""
        if self.choices is not None and any(_of_type(value, (type(c),)) and value == c for c in self.choices):
            return None
        kinds = self._types()
        if not kinds:
            if self.choices is None:  # any value, but for what ``check`` refuses
                return self.check(value) if self.check is not None else None
            return f"must be {self.allowed()}, got {value!r}"
        if not _of_type(value, kinds) or (
            self.minimum is not None and isinstance(value, int | float) and not isinstance(value, bool)
            and value < self.minimum
        ):  # fmt: skip
            return f"must be {self.allowed()}, got {value!r}"
        return self.check(value) if self.check is not None else None

    def describe(self) -> str:
        """``help (allowed values; default X)``: one line for ``bench list backends``."""
        default = "" if self.default is None else f"; default {self.default}"
        return f"{self.help} ({self.allowed()}{default})"


@functools.cache
def _bench_extras() -> dict[str, str]:
    """Distribution (normalised name) -> the first of bench's extras that installs it."""
    try:
        requirements = importlib.metadata.metadata("bench").get_all("Requires-Dist") or []
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return {}
    extras: dict[str, str] = {}
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9._-]+).*;.*extra\s*==\s*['\"]([\w.-]+)['\"]", requirement)
        if match:
            extras.setdefault(_normalised(match.group(1)), match.group(2))
    return extras


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def module_available(name: str) -> Support:
    """Whether ``import name`` would find the module, without importing it. The reason names the
    extra of bench that installs it where there is one (``pip install 'bench[openvino]'`` for
    ``nncf``)."""
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:  # a dotted name whose parent package is not there
        spec = None
    if spec is None:
        extra = _bench_extras().get(_normalised(name))
        hint = f" (pip install 'bench[{extra}]')" if extra else ""
        return Support.no(f"python package '{name}' is not installed{hint}")
    return Support.yes()


@dataclass(frozen=True)
class FileShorthand:
    """How a scenario names, in short, a model that stands for a user's file:
    ``model: {KEY: FILE, OPTION: ...}`` is ``{name: <the model>, options: {PATH_OPTION: FILE, OPTION: ...}}``.

    FILE is taken relative to the scenario file's folder and must exist when the scenario is
    loaded (also in the long form); only the ``options`` named here may sit beside the key.
    """

    #: the scenario key, e.g. ``onnx`` for ``model: {onnx: model.onnx}``
    key: str
    #: what the file is, for messages ("the path of the ONNX file")
    what: str = "model"
    #: the model's other options, allowed beside the key
    options: tuple[str, ...] = ()
    #: the model option the file's absolute path becomes
    path_option: str = "path"
    #: the file name endings that mark such a file (``.onnx``): ``bench export FILE`` picks the model by them
    suffixes: tuple[str, ...] = ()


class Model(ABC):
    """A model plugin: a seeded PyTorch module factory plus example inputs.

    Inputs are numpy arrays keyed by input name, in the order of :attr:`input_names`; every
    runtime converts them once, in prepare.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    input_names: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]]
    #: what the first output means, for the agreement measure: ctr (a click probability),
    #: classification (class scores), embedding (a vector per sample), or other
    task: ClassVar[str] = "other"
    #: a model made from a user's file declares the scenario shorthand that names it
    #: (``model: {onnx: FILE}``); ``None``: named by ``name`` only
    file_shorthand: ClassVar[FileShorthand | None] = None

    def __init__(self, **options: Any) -> None:
        if options:
            msg = f"model '{self.name}' takes no options, got {sorted(options)}"
            raise ValueError(msg)

    @abstractmethod
    def build_torch(self) -> Any:
        """Return the ``torch.nn.Module`` in eval mode, weights from a fixed seed."""

    @abstractmethod
    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Return one batch of inputs of ``batch_size`` samples, deterministic for a seed."""

    def params(self) -> dict[str, Any]:
        """Facts about the model recorded with each result (parameter count, sizes)."""
        return {}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Axes that vary between calls, by input and output name (exporters keep them dynamic).

        The default: axis 0 of every input and output is the batch.
        """
        return {name: {0: "batch"} for name in (*self.input_names, *self.output_names)}

    def torch_support(self) -> Support:
        """Whether :meth:`build_torch` can give this model (a model that exists only as an ONNX
        file cannot: PyTorch cells are skipped with this reason)."""
        return Support.yes()

    def onnx_file(self) -> Path | None:
        """The model's own ONNX file, or ``None`` to export :meth:`build_torch` (cached by content)."""
        return None

    def input_files(self) -> tuple[Path, ...]:
        """Every file the model reads (a model file and its external data). Their sha256 goes into
        the run's manifest, so ``bench run --resume`` refuses to finish a run whose model changed."""
        return ()

    def validation_set(self, n_samples: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """A fixed set for accuracy: ``n_samples`` inputs under a seed apart from the measured and
        calibration inputs', and their labels where the model has them (else None). Runs in a
        worker; may use the model itself (e.g. labels drawn from a fixed teacher)."""
        return self.example_inputs(n_samples, seed + 20_000), None

    def calibration_inputs(self, n_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs for post-training quantisation: by default ``n_samples`` samples of
        :meth:`example_inputs` under a seed apart from the measured inputs'."""
        return self.example_inputs(n_samples, seed + 10_000)

    def inputs_hint(self) -> str:
        """How :meth:`example_inputs` draws the values a model may use as indices, and the options
        that change them, in one phrase (``integer inputs are drawn from [0, int_high) = [0, 100):
        give int_high per input``); bench adds it to the reason of a cell that fails on an index
        out of range. ``""``: nothing to say (the model's own inputs fit it by construction)."""
        return ""


class Session(ABC):
    """A prepared model on one backend, device, precision and batch size, inputs already bound.

    :meth:`run` is the timed call: it runs one batch and returns only when the results are
    usable on the host (GPU sessions synchronise inside it).
    """

    #: facts recorded with the result: precision that actually executed, thread settings, ...; read
    #: from the first session after the accuracy check, before :meth:`close`
    info: dict[str, Any]

    def __init__(self) -> None:
        self.info = {}

    @abstractmethod
    def run(self) -> None:
        """Run one batch on the bound inputs. Called on the worker's main thread, and under LoadGen
        on a thread of the session's own while other sessions run (see :meth:`replica`)."""

    @abstractmethod
    def outputs(self) -> dict[str, np.ndarray]:
        """Run one batch and return its outputs as numpy arrays keyed by output name (every name of
        the model's ``output_names``, batch axis first): fresh copies, which the accuracy check
        keeps from one call to the next."""

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what prepare acquired."""

    def set_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy new values, of the bound inputs' names, shapes and dtypes, into the bound inputs, so
        that the next :meth:`outputs` computes on them (the accuracy check runs the validation set
        this way, after measuring). This default raises NotImplementedError: the cell's accuracy is
        then not measured, with its message as the reason."""
        raise NotImplementedError(f"{type(self).__name__} cannot rebind its inputs")

    def call_times(self) -> CallTimes | None:
        """The recorder of this session's GPU time per call (CUDA events around each call's compute,
        and the host time its launches took: :class:`harness.measure.call_times.CallTimes`), which
        :meth:`run` fills while the worker has a window open; ``None`` (the default) where the
        session keeps none: CPU sessions, and GPU runtimes that do not expose their stream."""
        return None

    def replica(self) -> Session | None:
        """Another session on the same prepared model with its own inputs, run from another thread
        at the same time as this one (LoadGen cells with ``concurrency`` > 1), or ``None`` to let
        the harness call :meth:`Backend.prepare` again. Share what is read-only (the compiled model),
        never what a call writes (inputs, outputs, bindings)."""
        return None


class Backend(ABC):
    """A runtime plugin. Class attributes and :meth:`availability` / :meth:`supports` must be
    cheap and free of side effects: the CLI calls them without importing the runtime."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: options a scenario may set (``options:`` / ``sweep:``), each declared with what it means and
    #: the values it takes; a plain string is an option with that meaning that takes any value
    options: ClassVar[Mapping[str, Option | str]] = {}
    #: the distributions whose versions identify this backend's numbers (its runtime, e.g.
    #: ``("onnxruntime",)``): recorded in every run's manifest, shown by ``bench doctor`` and
    #: compared by ``bench compare``
    packages: ClassVar[tuple[str, ...]] = ()
    #: the most sessions of one cell that may run at once, each on its own thread (``concurrency``);
    #: 1 unless the backend's sessions are known to run side by side
    max_concurrency: ClassVar[int] = 1

    @classmethod
    def service_floor_ms(cls, cell: Cell) -> float | None:
        """A lower bound on one call's time for ``cell``, where the backend knows one without
        running (a latency bound below it is refused at validation); ``None`` when unknown."""
        return None

    @classmethod
    def probe(cls) -> dict[str, Any]:
        """What ``bench doctor`` shows of this backend's runtime beyond its packages' versions.

        Called only where :meth:`availability` is ok, in a process of its own (so it may import the
        runtime: a crash or a hang there cannot take doctor down), and only when overridden. Return
        JSON-able facts; doctor reads ``summary`` (one line: devices, providers, ...), ``warnings``
        (lines it adds to its own) and ``cuda_available`` (``False`` on a machine with an NVIDIA
        GPU is a warning that the backend's CUDA cells will skip); it shows the rest in ``--json``.
        """
        return {}

    @classmethod
    def availability(cls) -> Support:
        """Whether the runtime is importable here (``find_spec``, never an import)."""
        return Support.yes()

    @classmethod
    def supports(cls, cell: Cell) -> Support:
        """Whether this backend can serve ``cell`` here. The default checks :meth:`availability`, the
        declared ``devices`` and ``precisions``, and the option values; an override starts from
        ``super().supports(cell)`` and returns it unless it is ok, or those checks are lost."""
        avail = cls.availability()
        if not avail.ok:
            return avail
        device_kind = cell.device_kind
        if device_kind not in cls.devices:
            return Support.no(f"backend '{cls.name}' has no device '{cell.device}' (has {', '.join(cls.devices)})")
        if cell.precision not in cls.precisions:
            return Support.no(
                f"backend '{cls.name}' has no precision '{cell.precision}' (has {', '.join(cls.precisions)})"
            )
        problem = cls.option_problem(cell.backend_options)
        return Support.no(problem) if problem else Support.yes()

    @classmethod
    def option_specs(cls) -> dict[str, Option]:
        """:attr:`options` with every plain string taken as an :class:`Option` that allows any value."""
        return {name: spec if isinstance(spec, Option) else Option(spec) for name, spec in cls.options.items()}

    @classmethod
    def unknown_option(cls, name: str) -> str | None:
        """Why ``name`` is not an option of this backend (with the nearest one), or ``None`` when it is."""
        if name in cls.options:
            return None
        close = difflib.get_close_matches(name, list(cls.options), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(cls.options)) or "none"
        return f"backend '{cls.name}' has no option {name}{hint} (known: {known})"

    @classmethod
    def option_problem(cls, options: Mapping[str, Any]) -> str | None:
        """The first unknown option or bad value among ``options``, in words, or ``None``.

        The harness asks this of every value a scenario gives before a run starts (a problem is a
        scenario error); the default :meth:`supports` asks it too, for cells made elsewhere."""
        specs = cls.option_specs()
        for name, value in options.items():
            unknown = cls.unknown_option(name)
            if unknown:
                return unknown
            problem = specs[name].problem(value)
            if problem:
                return f"backend '{cls.name}' option {name} {problem}"
        return None

    @classmethod
    def option_values(cls, cell: Cell) -> dict[str, Scalar]:
        """The cell's options over the declared defaults: what the backend runs with."""
        defaults = {name: spec.default for name, spec in cls.option_specs().items() if spec.default is not None}
        return {**defaults, **cell.backend_options}

    @abstractmethod
    def prepare(self, model: Model, cell: Cell, workdir: Path) -> Session:
        """Build, convert or compile the model for the cell and bind one batch of inputs,
        ``model.example_inputs(cell.batch_size, cell.seed)``.

        Runs in the worker; its wall time is the cell's ``prepare_s``. ``workdir`` is a folder
        inside the run folder for caches and temporary files. Raise :class:`SkipCell` when the cell
        cannot run here (the reason is recorded).
        """
