"""A bench plugin written outside bench: the model ``squares`` and the backend ``numpy-ref``.

``squares`` maps each sample ``x`` (256 float32 features) to ``y``, the sum of its squared
features. ``numpy-ref`` computes that with plain numpy on the CPU, in fp32, one stream at a time.

Written against bench's plugin contract (docs/plugins.md) alone: it imports nothing of bench but
``harness.api``, registers through the two hooks, and is loaded by name, e.g.
``BENCH_PLUGINS=bench_numpy_plugin bench run scenario.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# numpy is this backend's runtime, but it is also the currency of the plugin contract itself
# (models hand out their inputs as numpy arrays, sessions return numpy outputs) and a dependency of
# bench, so importing it here costs the CLI nothing it does not load anyway. torch, which only the
# reference needs, is imported inside ``build_torch``.
import numpy as np
import numpy.typing as npt

from harness.api import (
    Backend,
    Cell,
    Model,
    RegisterBackend,
    RegisterModel,
    Session,
    SkipCell,
    Support,
    hookimpl,
    module_available,
)

#: features per sample
FEATURES = 256
#: the largest batch ``numpy-ref`` runs: its per-call scratch buffer (batch x 256 float32, 64 KiB at
#: 64) then stays within a core's L2 cache, which is the regime this reference backend is meant for
MAX_BATCH = 64

Array = npt.NDArray[Any]


class Squares(Model):
    """y = sum(x ** 2) per sample: no weights, so every runtime computes exactly the same function."""

    name = "squares"
    description = "sum of squares of 256 float32 features per sample (the numpy-ref plugin's model)"
    input_names = ("x",)
    output_names = ("y",)
    # `other`: y is neither a click probability, class scores nor an embedding, so the accuracy
    # check measures errors and cosine only, no agreement
    task = "other"

    # __init__ is the base class's: this model takes no options, and the default refuses any with
    # the ValueError bench reports as a scenario error.

    def build_torch(self) -> Any:
        # torch is imported here, not at the top: the module is imported by the CLI and every worker,
        # and only the reference worker (and backends starting from PyTorch) build the module.
        import torch

        class SumOfSquares(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return (x * x).sum(dim=1, keepdim=True)

        # No parameters and no random draws: torch's global random state is left as it was.
        return SumOfSquares().eval()

    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, Array]:
        # A generator of its own, seeded: deterministic for a seed and independent of any global
        # state, so every backend (and the reference) measures the same data.
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch_size, FEATURES), dtype=np.float32)
        return {"x": x}

    def params(self) -> dict[str, Any]:
        return {"features": FEATURES, "parameters": 0}


class NumpySession(Session):
    """One batch of ``x`` bound once, and the buffers ``run()`` writes into."""

    def __init__(self, x: Array, info: dict[str, Any]) -> None:
        super().__init__()
        self._x = x
        # Preallocated so that the timed call allocates nothing: the squares, then their row sums.
        self._squares = np.empty_like(x)
        self._y = np.empty((x.shape[0], 1), dtype=np.float32)
        self.info = info

    def run(self) -> None:
        # The timed call: one batch on the bound inputs, into the preallocated buffers. numpy
        # computes synchronously on the host, so the result is usable when this returns.
        np.multiply(self._x, self._x, out=self._squares)
        np.sum(self._squares, axis=1, keepdims=True, out=self._y)

    def outputs(self) -> dict[str, Array]:
        self.run()
        # A copy: the accuracy check keeps each chunk's outputs while later calls overwrite _y.
        return {"y": self._y.copy()}

    def set_inputs(self, arrays: dict[str, Array]) -> None:
        # The accuracy check hands chunks of the validation set of the bound shape and dtype; copy
        # them into the very buffer run() reads. The shape is checked rather than trusted, since
        # np.copyto would silently broadcast a single row over the whole batch.
        x = arrays["x"]
        if x.shape != self._x.shape:
            raise ValueError(f"numpy-ref: input x has shape {x.shape}, the session is bound to {self._x.shape}")
        np.copyto(self._x, x, casting="same_kind")

    # replica() stays the base class's (None): the backend declares max_concurrency 1, so bench never
    # asks for a second session of a cell.


class NumpyRefBackend(Backend):
    """The model ``squares`` in plain numpy: a reference runtime with no conversion step."""

    name = "numpy-ref"
    description = "plain numpy on the CPU, fp32, batches up to 64, one stream (model squares only)"
    devices = ("cpu",)
    precisions = ("fp32",)  # int8 and the others are skipped by the default supports()
    # numpy's version identifies this backend's numbers: bench records it in each run's manifest,
    # shows it in `bench doctor` and refuses to compare runs whose versions differ.
    packages = ("numpy",)
    # numpy drops the GIL only inside a ufunc's inner loop; at batches of at most 64 rows a call is
    # mostly Python-level dispatch under the GIL, so concurrent streams would take turns and hold up
    # LoadGen's issuing thread. One stream at a time, and no replica() to write.
    max_concurrency = 1

    @classmethod
    def availability(cls) -> Support:
        return module_available("numpy")

    @classmethod
    def supports(cls, cell: Cell) -> Support:
        # The built-in checks first (availability, device kind, precision, option values): an
        # override that skipped them would send undeclared devices and precisions to prepare().
        base = super().supports(cell)
        if not base.ok:
            return base
        if cell.model != Squares.name:
            return Support.no(f"numpy-ref runs only the model '{Squares.name}', not '{cell.model}'")
        if cell.batch_size > MAX_BATCH:
            return Support.no(f"numpy-ref runs batches of up to {MAX_BATCH} samples, not {cell.batch_size}")
        return Support.yes()

    def prepare(self, model: Model, cell: Cell, workdir: Path) -> Session:
        # bench does not call supports() again in the worker; guard direct calls (the conformance
        # suite's, a script's) the same way.
        support = self.supports(cell)
        if not support.ok:
            raise SkipCell(support.reason)
        if tuple(model.input_names) != ("x",) or tuple(model.output_names) != ("y",):
            raise SkipCell(f"numpy-ref runs only the model '{Squares.name}'")

        # The inputs every backend measures for this cell, converted once to the layout run() wants
        # (C-contiguous float32); set_inputs later copies the validation set into this same buffer.
        x = np.ascontiguousarray(model.example_inputs(cell.batch_size, cell.seed)["x"], dtype=np.float32)
        if x.shape != (cell.batch_size, FEATURES):
            raise ValueError(f"numpy-ref: example input x has shape {x.shape}, expected {(cell.batch_size, FEATURES)}")

        info: dict[str, Any] = {
            "executed_precision": "fp32",
            "numpy": np.__version__,
            # Elementwise ufuncs and reductions run on the calling thread: cell.threads (which bench
            # also puts in OMP/MKL/OPENBLAS_NUM_THREADS) has nothing to set here, so say so.
            "threads": 1,
            "threads_asked": cell.threads,
        }
        return NumpySession(x, info)


@hookimpl
def bench_register_backends(register: RegisterBackend) -> None:
    register(NumpyRefBackend)


@hookimpl
def bench_register_models(register: RegisterModel) -> None:
    register(Squares)
