"""Everything a plugin may use: the contract it implements (models, backends and the sessions
backends prepare) and the helpers the harness lends it.

A plugin imports this module and no other part of ``harness``: what is here stays, what is
elsewhere may move. Nothing heavy is imported here: runtimes (torch, onnxruntime, ...) are imported
inside :meth:`Backend.prepare` and :meth:`Model.build_torch`, which run in the worker.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.cells import Cell
from harness.environment import cpu_flags
from harness.errors import SkipCell
from harness.hookspecs import hookimpl
from harness.onnx_export import Conversion, cached, digest, file_digest, onnx_model

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_FOLDER",
    "Backend",
    "Cell",
    "Conversion",
    "Model",
    "Session",
    "SkipCell",
    "Support",
    "cache_dir",
    "cached",
    "cpu_flags",
    "digest",
    "file_digest",
    "hookimpl",
    "module_available",
    "onnx_model",
]


#: environment variable through which the harness hands workers the cross-run cache folder
CACHE_DIR_ENV = "BENCH_CACHE_DIR"
#: that folder's name inside the results root
CACHE_FOLDER = ".cache"


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


def module_available(name: str) -> Support:
    """Whether ``import name`` would find the module, without importing it."""
    if importlib.util.find_spec(name) is None:
        return Support.no(f"python package '{name}' is not installed (pip install 'bench[{name}]')")
    return Support.yes()


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


class Session(ABC):
    """A prepared model on one backend, device, precision and batch size, inputs already bound.

    :meth:`run` is the timed call: it runs one batch and returns only when the results are
    usable on the host (GPU sessions synchronise inside it).
    """

    #: facts recorded with the result: precision that actually executed, thread settings, ...
    info: dict[str, Any]

    def __init__(self) -> None:
        self.info = {}

    @abstractmethod
    def run(self) -> None:
        """Run one batch on the bound inputs."""

    @abstractmethod
    def outputs(self) -> dict[str, np.ndarray]:
        """Run one batch and return its outputs as numpy arrays keyed by output name."""

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what prepare acquired."""

    def set_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy new values, of the bound inputs' shapes, into the bound inputs (the accuracy check
        runs the validation set this way, after measuring). Backends that cannot say so: the
        cell's fidelity is then not measured, with this reason."""
        raise NotImplementedError(f"{type(self).__name__} cannot rebind its inputs")

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
    #: options a scenario may set (``options:`` / ``sweep:``), with a one-line meaning each
    options: ClassVar[dict[str, str]] = {}
    #: the most sessions of one cell that may run at once, each on its own thread (``concurrency``);
    #: 1 unless the backend's sessions are known to run side by side
    max_concurrency: ClassVar[int] = 1

    @classmethod
    def service_floor_ms(cls, cell: Cell) -> float | None:
        """A lower bound on one call's time for ``cell``, where the backend knows one without
        running (a latency bound below it is refused at validation); ``None`` when unknown."""
        return None

    @classmethod
    def availability(cls) -> Support:
        """Whether the runtime is importable here (``find_spec``, never an import)."""
        return Support.yes()

    @classmethod
    def supports(cls, cell: Cell) -> Support:
        """Whether this backend can serve ``cell`` here; the default checks the declared lists."""
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
        unknown = sorted(set(cell.backend_options) - set(cls.options))
        if unknown:
            known = ", ".join(sorted(cls.options)) or "none"
            return Support.no(f"backend '{cls.name}' has no option {', '.join(unknown)} (known: {known})")
        return Support.yes()

    @abstractmethod
    def prepare(self, model: Model, cell: Cell, workdir: Path) -> Session:
        """Build, convert or compile the model for the cell and bind one batch of inputs.

        Runs in the worker; its wall time is the cell's ``prepare_s``. ``workdir`` is a folder
        inside the run folder for caches and temporary files. Raise :class:`harness.errors.SkipCell`
        when the cell cannot run here (the reason is recorded).
        """
