"""Inputs from data: ``model: {..., inputs: FILE.npz}`` measures a model on the user's own arrays
instead of the inputs its plugin makes up, for every model alike, built-in or file.

The file is an ``.npz`` (``np.savez``) of named arrays, one per model input, each with the samples
on its first axis and all with the same number of samples N. It is read with ``allow_pickle=False``
and nothing else: object arrays are refused, and only the arrays' headers are read to validate it.

The model is built as usual and given the data by :func:`build_model`, which makes it an instance
of a subclass of its own class (so ``isinstance`` and every attribute stay as the plugin wrote
them) whose input methods cut from the data:

- ``example_inputs(B, seed)`` (the batch a cell binds): rows ``seed*B .. seed*B + B - 1`` of the
  file, modulo N: the data in order, wrapping around; the same seed gives the same batch.
- ``validation_set(n, seed)`` (the accuracy check's set): the model's own method, during which
  ``example_inputs`` gives the file's first rows: the first ``min(n, N)`` samples, with the labels a
  model makes from its inputs (``dlrm-small``'s teacher) made on them. A model whose validation
  set is a dataset of its own, with its own labels, keeps it.
- ``calibration_inputs(n, seed)``: the first ``n`` samples, wrapping.

The model's own inputs are still drawn at each call and serve as the template: the data must give
every input by name with the same dtype and per-sample shape (what the model's ``example_inputs``
gives), or the call raises :class:`InputDataError` naming the input, what the model wants and
what the file holds. :func:`check` asks the same of the headers alone, at validation.

numpy is imported inside the functions: the CLI imports this module to validate scenarios.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from harness.api import Model

if TYPE_CHECKING:
    import numpy as np


class InputDataError(ValueError):
    """An inputs file that cannot be read, or that does not fit the model; the message names the
    file, the input, what the model wants and what the file holds."""


@dataclass(frozen=True)
class ArrayHeader:
    """One array of an .npz as its header describes it."""

    dtype: str
    shape: tuple[int, ...]


def _show(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _regular_file(path: Path) -> None:
    try:
        info = path.stat()
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read the inputs file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputDataError(f"{path}: not a regular file; give an .npz file of input arrays (np.savez)")


def read_headers(path: Path) -> dict[str, ArrayHeader]:
    """The arrays of an .npz by name, from their headers alone (nothing is unpickled or loaded)."""
    import numpy as np

    _regular_file(path)
    how = "write it with np.savez(path, input_name=array, ...)"
    if not zipfile.is_zipfile(path):
        raise InputDataError(f"{path}: not an .npz file (a zip of .npy arrays); {how}")
    headers: dict[str, ArrayHeader] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.is_dir():
                    continue
                if not member.filename.endswith(".npy"):
                    raise InputDataError(f"{path}: holds {member.filename!r}, not a .npy array; {how}")
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                    else:
                        msg = f"{path}: array {member.filename!r} has .npy format {version}; {how}"
                        raise InputDataError(msg)
                name = member.filename[: -len(".npy")]
                if dtype.hasobject or dtype.names is not None:
                    msg = (
                        f"{path}: array '{name}' holds {'Python objects' if dtype.hasobject else 'records'} "
                        f"(dtype {dtype}); bench reads plain numeric arrays only, never pickled data"
                    )
                    raise InputDataError(msg)
                headers[name] = ArrayHeader(str(dtype), tuple(int(d) for d in shape))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, InputDataError):
            raise
        raise InputDataError(f"{path}: a damaged .npz file ({type(exc).__name__}: {exc}); {how}") from None
    if not headers:
        raise InputDataError(f"{path}: holds no arrays; {how}")
    return headers


class InputData:
    """An inputs file: its arrays' headers at once, the arrays themselves on first use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self.headers = read_headers(self.path)
        for name, header in self.headers.items():
            if not header.shape:
                msg = f"{self.path}: array '{name}' is a scalar; each input needs its samples on the first axis"
                raise InputDataError(msg)
        counts = {name: header.shape[0] for name, header in self.headers.items()}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{name} {count}" for name, count in counts.items())
            msg = f"{self.path}: the arrays hold different numbers of samples (first axis): {listed}"
            raise InputDataError(msg)
        #: N, the samples every array holds
        self.samples = next(iter(counts.values()))
        if self.samples == 0:
            raise InputDataError(f"{self.path}: the arrays hold no samples (first axis 0)")
        self._arrays: dict[str, np.ndarray] | None = None

    def check(self, wanted: Mapping[str, np.ndarray]) -> None:
        """Raise InputDataError unless the file gives every input of ``wanted`` (one batch of the
        model's own inputs) by name, with its dtype and per-sample shape, and nothing else."""
        held = ", ".join(self.headers) or "nothing"
        for name, array in wanted.items():
            want = f"{array.dtype} {_show(array.shape[1:])} per sample"
            header = self.headers.get(name)
            if header is None:
                msg = (
                    f"{self.path}: input '{name}': the model wants {want}; "
                    f"the file holds no array '{name}' (it holds {held})"
                )
                raise InputDataError(msg)
            if header.dtype != str(array.dtype):
                msg = (
                    f"{self.path}: input '{name}': the model wants {array.dtype}; the file holds {header.dtype} "
                    f"(convert it: np.savez(..., {name}={name}.astype('{array.dtype}')))"
                )
                raise InputDataError(msg)
            if header.shape[1:] != tuple(array.shape[1:]):
                msg = (
                    f"{self.path}: input '{name}': the model wants {_show(array.shape[1:])} per sample; the file holds "
                    f"{_show(header.shape[1:])} per sample (shape {_show(header.shape)}, samples first)"
                )
                raise InputDataError(msg)
        extra = [name for name in self.headers if name not in wanted]
        if extra:
            msg = (
                f"{self.path}: holds {', '.join(repr(n) for n in extra)}, not an input of the model "
                f"(inputs: {', '.join(wanted)}); remove it"
            )
            raise InputDataError(msg)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays, loaded once (``allow_pickle=False``)."""
        if self._arrays is None:
            import numpy as np

            _regular_file(self.path)
            with np.load(self.path, allow_pickle=False) as data:
                self._arrays = {name: data[name] for name in self.headers}
        return self._arrays

    def cut(self, wanted: Mapping[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
        """The file's rows ``start, start + 1, ...`` modulo N, as many as ``wanted`` has of each
        input (checked against it first)."""
        import numpy as np

        self.check(wanted)
        arrays = self.arrays()
        out: dict[str, np.ndarray] = {}
        for name, template in wanted.items():
            rows = (start + np.arange(template.shape[0])) % self.samples
            out[name] = np.ascontiguousarray(arrays[name][rows])
        return out


class _FromData(Model):
    """Put before a model's class (:func:`build_model`): its inputs come from an :class:`InputData`."""

    _input_data: InputData
    #: while True, ``example_inputs`` starts at the file's first row whatever the seed
    _first_rows: bool = False

    def _own_inputs(self, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        # the model's class, next in the method order (_with_data), implements it
        return super().example_inputs(batch_size, seed)  # type: ignore[safe-super]

    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
        """The file's rows ``seed*B ..`` (wrapping), in the model's dtypes and shapes."""
        start = 0 if self._first_rows else seed * batch_size
        return self._input_data.cut(self._own_inputs(batch_size, seed), start)

    def validation_set(self, n_samples: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The model's own validation set, made while ``example_inputs`` gives the file's first
        ``min(n, N)`` samples."""
        self._first_rows = True
        try:
            return super().validation_set(min(n_samples, self._input_data.samples), seed)
        finally:
            self._first_rows = False

    def calibration_inputs(self, n_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
        """The file's first ``n`` samples (wrapping), in the shapes the model calibrates with."""
        self._first_rows = True
        try:
            own = super().calibration_inputs(n_samples, seed)
        finally:
            self._first_rows = False
        return self._input_data.cut(own, 0)

    def input_files(self) -> tuple[Path, ...]:
        return (*super().input_files(), self._input_data.path)

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "input_data": {"file": str(self._input_data.path), "samples": self._input_data.samples},
        }


@functools.cache
def _with_data(cls: type[Model]) -> type[_FromData]:
    """``cls`` with :class:`_FromData` first in its method order, under the same names."""
    made = type(cls.__name__, (_FromData, cls), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return cast("type[_FromData]", made)


def build_model(cls: type[Model], options: Mapping[str, Any], input_data: str | os.PathLike[str] | None) -> Model:
    """``cls(**options)``, its inputs cut from ``input_data`` (an .npz) when given. Every place
    that makes a model for a run (validation, the manifest, the reference, each cell's worker)
    makes it here, so the data reach every model the same way."""
    if input_data is None:
        return cls(**options)
    data = InputData(Path(input_data))
    model = _with_data(cls)(**options)
    model._input_data = data
    return model


def check(model: Model, path: str | os.PathLike[str], batch_size: int, seed: int = 0) -> None:
    """Raise InputDataError unless the inputs file at ``path`` fits the model's inputs (names,
    dtypes, per-sample shapes, as a batch of its own example inputs has them), from the file's
    headers alone: what validation asks before anything runs."""
    own = (
        model._own_inputs(batch_size, seed) if isinstance(model, _FromData) else model.example_inputs(batch_size, seed)
    )
    InputData(Path(path)).check(own)


def input_data_of(model: Model) -> Path | None:
    """The inputs file a model built by :func:`build_model` reads, or None."""
    return model._input_data.path if isinstance(model, _FromData) else None


#: what a runtime says when an input indexes past the end of a table: onnxruntime's Gather,
#: GatherElements and GatherND, torch's embedding and index ops, numpy, OpenVINO's checks
_INDEX_ERROR = re.compile(
    r"indices element out of data bounds|index out of range|out of bounds|invalid ind(?:ex|ice)", re.IGNORECASE
)


def index_error_hint(exc: BaseException, model: Model | None) -> str:
    """What to add to the reason of a cell that failed on what looks like an index out of range
    (an IndexError, or a runtime's message saying so): where the inputs came from and the options
    that change them. ``""`` for any other failure."""
    if not isinstance(exc, IndexError) and not _INDEX_ERROR.search(str(exc)):
        return ""
    data = input_data_of(model) if model is not None else None
    if data is not None:
        return f"the inputs are cut from {data}: check that its integer inputs index within the model's tables"
    own = model.inputs_hint() if model is not None else ""
    real = "real data with inputs: FILE.npz"
    return f"{own}, or {real}" if own else f"the inputs are the model's made-up example inputs; give {real}"
