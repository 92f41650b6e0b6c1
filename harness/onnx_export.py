"""The conversions backends share: PyTorch -> ONNX, and a content-keyed cache for any file a backend
derives from it (OpenVINO IR, quantised variants), so a sweep converts a model once.

Plugins reach these through :mod:`harness.api` (``onnx_model``, ``cached``, ``digest``,
``file_digest``, ``Conversion``).

A conversion lands in ``<cache>/<kind>/<key>/`` where ``<cache>`` is the results root's cache
(:func:`harness.api.cache_dir`) or, under ``--no-cache``, the run's work folder. ``<key>`` hashes
everything the output depends on (the source's content, the converter's version and settings). The
folder is built under a temporary name and renamed into place, so a killed conversion leaves nothing
that looks finished, and two workers converting at once both end with one complete folder.

torch is imported inside the functions: importing this module (the CLI does, through
:mod:`harness.api`) costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.api import Model

#: ONNX opset of exports (onnxruntime >= 1.17 and OpenVINO >= 2024.0 read it)
OPSET = 17
#: bumped when the export recipe changes, so older cached exports are not reused
EXPORT_RECIPE = 1


@dataclass(frozen=True)
class Conversion:
    """One converted file: where it is, its content key, and what producing it cost."""

    path: Path
    key: str
    #: seconds this call spent converting (0 when the file came from the cache)
    seconds: float
    cached: bool

    def info(self, prefix: str) -> dict[str, Any]:
        """Facts for a session's ``info``: ``<prefix>_key``, ``<prefix>_s``, ``<prefix>_cached``."""
        return {f"{prefix}_key": self.key, f"{prefix}_s": self.seconds, f"{prefix}_cached": self.cached}


def digest(*parts: Any) -> str:
    """A short content key over JSON-able parts and bytes (sha256, 16 hex digits)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            h.update(bytes(part))
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_digest(*paths: Path) -> str:
    """Content key of files (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def cached(kind: str, key: str, filename: str, build: Callable[[Path], None], workdir: Path) -> Conversion:
    """``<cache>/<kind>/<key>/<filename>``, made by ``build(folder)`` unless already there.

    ``build`` writes ``filename`` (and any companion files) into the empty folder it is given.
    """
    from harness.api import cache_dir  # harness.api re-exports this module: imported here, not at the top

    root = cache_dir(kind) or Path(workdir) / kind
    final = root / key
    if (final / filename).is_file():
        return Conversion(final / filename, key, 0.0, True)
    staging = root / f".{key}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    start = time.perf_counter()
    try:
        build(staging)
        if not (staging / filename).is_file():
            msg = f"conversion '{kind}' wrote no {filename} into {staging}"
            raise RuntimeError(msg)
        try:
            staging.rename(final)
        except OSError:
            if not (final / filename).is_file():  # not another worker's finished folder: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Conversion(final / filename, key, time.perf_counter() - start, False)


def torch_model_key(model: Model, module: Any) -> str:
    """Content key of a PyTorch model: its class and layout, weights, inputs' names/dtypes, torch version."""
    import torch

    h = hashlib.sha256()
    for name, tensor in (*module.state_dict().items(), *((f"buffer:{n}", b) for n, b in module.named_buffers())):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    example = model.example_inputs(2, 0)
    layout = {
        "model": model.name,
        "module": repr(module),
        "inputs": {k: [str(v.dtype), list(v.shape[1:])] for k, v in example.items()},
        "outputs": list(model.output_names),
        "dynamic_axes": model.dynamic_axes(),
    }
    return digest(layout, h.digest(), torch.__version__, OPSET, EXPORT_RECIPE)


def onnx_model(model: Model, workdir: Path) -> Conversion:
    """The model as ONNX: the model's own file, or an export of :meth:`Model.build_torch` (cached).

    The export (TorchScript-based, opset 17, one self-contained file) keeps the model's dynamic
    axes and names inputs and outputs as the model does.
    """
    own = model.onnx_file()
    if own is not None:
        return Conversion(Path(own), file_digest(Path(own)), 0.0, True)
    module = model.build_torch().eval()
    key = torch_model_key(model, module)

    def export(folder: Path) -> None:
        import warnings

        import torch

        example = model.example_inputs(2, 0)
        args = tuple(torch.from_numpy(example[name]) for name in model.input_names)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                module,
                args,
                str(folder / "model.onnx"),
                input_names=list(model.input_names),
                output_names=list(model.output_names),
                dynamic_axes=model.dynamic_axes(),
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )

    return cached("onnx", key, "model.onnx", export, workdir)
