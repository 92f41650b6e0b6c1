"""``bench export``: the ONNX file bench measures for a model, and inputs to go with it, so that the
same work can be handed to the runtimes' own tools (OpenVINO's benchmark_app, TensorRT's trtexec).

The ONNX file is :func:`harness.api.onnx_model`'s, the one the ONNX-based backends measure: the
model's own file (copied, with its external data), or the export of its PyTorch module. The inputs
are the model's example inputs, ``samples`` of them, in an .npz (``model: {..., inputs: FILE.npz}``
measures exactly these), and one batch of them (the file's first ``batch_size`` rows: the batch a
cell of seed 0 measures with that file) per input as ``.npy`` (benchmark_app ``-i``) and raw
``.bin`` (trtexec ``--loadInputs``).
"""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.pluginmanager import Registries


@dataclass(frozen=True)
class Exported:
    """What ``bench export`` wrote."""

    #: the model: a name, or the file it was made from
    model: str
    onnx: Path
    #: external data files copied next to the ONNX file (a model file that has them)
    companions: tuple[Path, ...]
    inputs: Path
    samples: int
    batch_size: int
    #: per input: one batch as .npy and as raw bytes (.bin), and its shape
    batch_files: Mapping[str, tuple[Path, Path, tuple[int, ...]]]
    #: the inputs with a dynamic axis (benchmark_app and trtexec need their shapes given)
    dynamic: tuple[str, ...]
    #: the shorthand key of the model that reads ONNX files (``onnx``), for bench's own model line
    onnx_key: str | None


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--option k=v`` values: v read as a YAML value (``int_high={sparse: 3}``, ``shapes={x: [batch, 4]}``)."""
    import yaml

    from harness.scenario.safe_yaml import _Loader

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option {pair!r}: give KEY=VALUE, e.g. --option int_high=1000")
        try:
            value = yaml.load(text, Loader=_Loader)  # a SafeLoader that bounds aliases and nesting
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise UsageError(f"--option {pair!r}: the value is not valid YAML ({first})") from None
        options[key.strip()] = value
    return options


def resolve_model(spec: str, regs: Registries) -> tuple[str, dict[str, Any]]:
    """(model name, the options it needs) of a model name or a model file (chosen by its suffix)."""
    if spec in regs.models:
        return spec, {}
    path = Path(spec).expanduser()
    shorthands = regs.file_shorthands().values()
    if path.exists():
        if not path.is_file():
            raise UsageError(f"{spec}: not a file; give a model name or a model file")
        for name, declared in shorthands:
            if any(path.name.endswith(suffix) for suffix in declared.suffixes):
                return name, {declared.path_option: str(path.resolve())}
        known = ", ".join(suffix for _, declared in shorthands for suffix in declared.suffixes) or "none"
        raise UsageError(f"{spec}: no model reads files of this kind (files bench reads end in {known})")
    models = ", ".join(regs.models.names())
    raise UsageError(f"{spec}: no model of that name and no such file (models: {models}; or a file path)")


def _file_name(name: str) -> str:
    """An input's name as part of a file name (ONNX names may hold '/', ':')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "input"


def export(
    regs: Registries,
    spec: str,
    options: Mapping[str, Any],
    out: Path,
    inputs: Path,
    batch_size: int,
    samples: int,
) -> Exported:
    """Write the model's ONNX file to ``out`` and its inputs to ``inputs`` (and the batch files
    beside it); a bad model, option or path is a UsageError (exit 2)."""
    import numpy as np

    from harness.api import onnx_model

    if out.suffix != ".onnx":
        raise UsageError(f"-o {out}: give a file name ending in .onnx (the tools tell a model's format by it)")
    if inputs.suffix != ".npz":
        raise UsageError(f"--inputs {inputs}: give a file name ending in .npz")
    name, needed = resolve_model(spec, regs)
    overlap = set(needed) & set(options)
    if overlap:
        raise UsageError(f"--option {sorted(overlap)[0]}: the model file is given as MODEL already")
    try:
        model = regs.models.get(name)(**{**options, **needed})
    except ValueError as exc:
        raise UsageError(f"model '{name}': {exc}") from None
    try:
        example = model.example_inputs(samples, 0)
    except ValueError as exc:
        raise UsageError(f"model '{name}': {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    companions: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as workdir:
        conversion = onnx_model(model, Path(workdir))
        source = Path(conversion.path)
        if source.resolve() == out.resolve():
            raise UsageError(f"-o {out}: that is the model file itself; give another file name")
        shutil.copyfile(source, out)
        if model.onnx_file() is not None:  # the model's own file: its external data go with it
            for each in model.input_files():
                extra = Path(each)
                if extra.resolve() != source.resolve() and extra.is_relative_to(source.parent):
                    target = out.parent / extra.relative_to(source.parent)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(extra, target)
                    companions.append(target)
    inputs.parent.mkdir(parents=True, exist_ok=True)
    np.savez(inputs, allow_pickle=False, **example)
    batch_files: dict[str, tuple[Path, Path, tuple[int, ...]]] = {}
    stem = inputs.with_suffix("")
    rows = np.arange(batch_size) % samples  # the batch a cell of seed 0 cuts from the file
    for input_name, array in example.items():
        batch = np.ascontiguousarray(array[rows])
        npy = stem.with_name(f"{stem.name}.{_file_name(input_name)}.npy")
        raw = npy.with_suffix(".bin")
        np.save(npy, batch, allow_pickle=False)
        raw.write_bytes(batch.tobytes())
        batch_files[input_name] = (npy, raw, tuple(batch.shape))
    dynamic = tuple(input_name for input_name, axes in model.dynamic_axes().items() if axes and input_name in example)
    onnx_key = next((d.key for _, d in regs.file_shorthands().values() if ".onnx" in d.suffixes), None)
    return Exported(spec, out, tuple(companions), inputs, samples, batch_size, batch_files, dynamic, onnx_key)


def command_lines(done: Exported) -> dict[str, str]:
    """The command lines that measure the exported model on the exported batch: benchmark_app,
    trtexec, and bench's own scenario line."""
    q = shlex.quote
    files = done.batch_files
    shapes_ov = ",".join(f"{name}[{','.join(map(str, files[name][2]))}]" for name in done.dynamic)
    shapes_trt = ",".join(f"{name}:{'x'.join(map(str, files[name][2]))}" for name in done.dynamic)
    benchmark_app = ["benchmark_app", "-m", str(done.onnx), "-d", "CPU", "-hint", "latency", "-api", "sync"]
    if shapes_ov:
        benchmark_app += ["-shape", shapes_ov]
    benchmark_app += ["-i", *(f"{name}:{npy}" for name, (npy, _, _) in files.items())]
    trtexec = ["trtexec", f"--onnx={done.onnx}"]
    if shapes_trt:
        trtexec.append(f"--shapes={shapes_trt}")
    trtexec.append("--loadInputs=" + ",".join(f"{name}:{raw}" for name, (_, raw, _) in files.items()))
    lines = {
        "benchmark_app": " ".join(q(part) for part in benchmark_app),
        "trtexec": " ".join(q(part) for part in trtexec),
    }
    if done.onnx_key:
        lines["bench"] = f"model: {{{done.onnx_key}: {done.onnx}, inputs: {done.inputs}}}"
    return lines
