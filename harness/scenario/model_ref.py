"""``model:``: a model plugin by name with its options, or a user's model file (``{onnx: FILE}``,
``{torch_export: FILE}``) resolved against the scenario's folder."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from harness.scenario.messages import Loc, _kind
from harness.scenario.types import _FROZEN, ModelOptions, PluginName, _shorthand

#: ``model: {onnx: FILE}`` and ``model: {torch_export: FILE}``: the model plugin each key stands for,
#: and the options that may sit beside the key (those of plugins/models/files.py, which its tests
#: keep equal); the file's path becomes the option ``path``, resolved against the scenario's folder
FILE_MODEL_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnx": ("onnx-file", ("shapes", "int_high")),
    "torch_export": ("torch-export-file", ("shapes", "int_high")),
}
_FILE_MODEL_NAMES = {name: key for key, (name, _) in FILE_MODEL_KEYS.items()}


def _model_file_error(message: str, at: Loc) -> PydanticCustomError:
    """An error at ``model.<at>``; the message is final text (pydantic fills only ``{at}``, never used)."""
    return PydanticCustomError("scenario_model_file", message, {"at": at})


def _resolve_model_file(value: Any, base_dir: Path | None, at: Loc, what: str) -> str:
    """The absolute path of a model file named in the scenario, relative paths taken from the
    scenario file's folder (the current folder for a scenario given as text); it must exist now."""
    if not isinstance(value, str) or not value.strip():
        raise _model_file_error(f"Input should be the path of the {what} file (got {_kind(value)})", at)
    given = Path(os.path.expanduser(value))
    base = base_dir if base_dir is not None else Path.cwd()
    path = Path(os.path.abspath(given if given.is_absolute() else base / given))
    if not path.exists():
        where = "" if given.is_absolute() else f" (relative to {base})"
        message = f"no such file {path}{where}; check the path (a relative path is relative to the scenario file)"
        raise _model_file_error(message, at)
    if not path.is_file():
        raise _model_file_error(f"{path} is not a file; give the path of the {what} file", at)
    return str(path)


def _file_model(data: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """``{onnx: FILE, shapes: ...}`` -> ``{name: onnx-file, options: {path: /abs/FILE, shapes: ...}}``
    (likewise ``torch_export``); ``{name: onnx-file, options: {path: FILE}}`` gets its path resolved
    the same way. Keys beside the file key must be that model's options: the schema stays strict."""
    keys = [key for key in FILE_MODEL_KEYS if key in data]
    if not keys:
        name, options = data.get("name"), data.get("options")
        if name in _FILE_MODEL_NAMES and isinstance(options, dict) and "path" in options:
            what = "ONNX" if name == "onnx-file" else "torch.export"
            path = _resolve_model_file(options["path"], base_dir, ("options", "path"), what)
            return {**data, "options": {**options, "path": path}}
        return data
    key = keys[0]
    if len(keys) > 1:
        raise _model_file_error(f"give one model file, '{key}' or '{keys[1]}', not both", (keys[1],))
    name, allowed = FILE_MODEL_KEYS[key]
    options: dict[str, Any] = {}
    for other, value in data.items():
        if other == key:
            continue
        if other == "name":
            message = (
                f"'name' and '{key}' both pick the model; keep one "
                f"('{key}: FILE' is short for {{name: {name}, options: {{path: FILE}}}})"
            )
            raise _model_file_error(message, ("name",))
        if other == "options":
            message = (
                f"with '{key}: FILE' the model's options sit beside it, not under 'options' "
                f"(e.g. {{{key}: FILE, {allowed[0]}: ...}}; options: {', '.join(allowed)})"
            )
            raise _model_file_error(message, ("options",))
        if other not in allowed:
            close = difflib.get_close_matches(str(other), allowed, n=1, cutoff=0.6)
            hint = (
                f"did you mean '{close[0]}'?" if close else f"remove it (allowed beside '{key}': {', '.join(allowed)})"
            )
            raise _model_file_error(f"unknown key '{other}'; {hint}", (str(other),))
        options[other] = value
    what = "ONNX" if key == "onnx" else "torch.export (.pt2)"
    options["path"] = _resolve_model_file(data[key], base_dir, (key,), what)
    return {"name": name, "options": options}


class ModelRef(BaseModel):
    """The model plugin and its options; ``model: dlrm-small`` is short for ``{name: dlrm-small}``,
    ``model: {onnx: FILE}`` for ``{name: onnx-file, options: {path: FILE}}`` (likewise
    ``torch_export``), the path relative to the scenario file's folder."""

    model_config = _FROZEN

    name: PluginName
    options: ModelOptions = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any, info: ValidationInfo) -> Any:
        data = _shorthand(data, "model")
        if isinstance(data, dict):
            base_dir = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
            data = _file_model(data, base_dir)
        return data
