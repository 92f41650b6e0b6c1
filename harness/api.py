"""The contract a plugin implements: models, backends and the sessions backends prepare.

Plugin modules import this module and nothing heavy: runtimes (torch, onnxruntime, ...) are
imported inside :meth:`Backend.prepare` and :meth:`Model.build_torch`, which run in the worker.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

    from harness.cells import Cell


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


class Backend(ABC):
    """A runtime plugin. Class attributes and :meth:`availability` / :meth:`supports` must be
    cheap and free of side effects: the CLI calls them without importing the runtime."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: options a scenario may set (``options:`` / ``sweep:``), with a one-line meaning each
    options: ClassVar[dict[str, str]] = {}

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
        device_kind = cell.device.split(":", 1)[0]
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
