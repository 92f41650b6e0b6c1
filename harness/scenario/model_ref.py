"""``model:``: a model plugin by name with its options, or a user's model file by the shorthand its
model plugin declares (``{onnx: FILE}``, ``{torch_export: FILE}``: ``Model.file_shorthand``),
resolved against the scenario's folder.

The shorthands come from the model registry in the validation context (``registries``: the
registries, or a function that builds them); without one, from the default plugins
(:func:`harness.pluginmanager.default_registries`). The registry is asked only for a ``model:``
that may use a shorthand (a mapping with keys besides ``name``, or with options): ``model: NAME``
loads no plugin.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    StrictStr,
    ValidationInfo,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from harness.scenario.messages import Loc, _kind
from harness.scenario.types import _FROZEN, ModelOptions, PluginName, _shorthand

if TYPE_CHECKING:
    from harness.api import FileShorthand
    from harness.pluginmanager import Registries

#: what a scenario's validation is given to find the model shorthands: the registries, a function
#: that builds them (called only when a shorthand may be in use), or None for the default plugins
RegistriesSource = Union["Registries", Callable[[], "Registries"], None]
#: a shorthand key -> (the model's name, its declaration)
Shorthands = dict[str, tuple[str, "FileShorthand"]]


#: the key of ``model:`` that names an .npz the inputs are cut from, in every form
INPUTS_KEY = "inputs"


def _model_file_error(message: str, at: Loc) -> PydanticCustomError:
    """An error at ``model.<at>``; the message is final text (pydantic fills only ``{at}``, never used)."""
    return PydanticCustomError("scenario_model_file", message, {"at": at})


def _resolve_model_file(value: Any, base_dir: Path | None, at: Loc, what: str) -> str:
    """The absolute path of a model file (or inputs file) named in the scenario, relative paths
    taken from the scenario file's folder (the current folder for a scenario given as text); it
    must exist now, and be a regular file."""
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


def _shorthands(source: RegistriesSource) -> Shorthands:
    """The shorthands of the registered models (see :data:`RegistriesSource`)."""
    if source is None:
        from harness.pluginmanager import default_registries

        return default_registries().file_shorthands()
    if callable(source):
        return source().file_shorthands()
    return source.file_shorthands()


def _may_use_shorthand(data: dict[str, Any]) -> bool:
    """Whether ``model:`` may name a model file: keys besides ``name``, ``options`` and
    ``inputs``, or options (a path option of the long form to resolve)."""
    return bool(set(data) - {"name", "options", INPUTS_KEY}) or bool(data.get("options"))


def _file_model(data: dict[str, Any], base_dir: Path | None, shorthands: Shorthands) -> dict[str, Any]:
    """``{onnx: FILE, shapes: ...}`` -> ``{name: onnx-file, options: {path: /abs/FILE, shapes: ...}}``
    (likewise every shorthand a model declares); ``{name: onnx-file, options: {path: FILE}}`` gets
    its path resolved the same way. Keys beside the file key must be that model's options: the
    schema stays strict."""
    keys = [key for key in shorthands if key in data]
    if not keys:
        named, given = data.get("name"), data.get("options")
        by_name = {model: declared for model, declared in shorthands.values()}
        long_form = by_name.get(named) if isinstance(named, str) else None
        if long_form is not None and isinstance(given, dict) and long_form.path_option in given:
            at = ("options", long_form.path_option)
            path = _resolve_model_file(given[long_form.path_option], base_dir, at, long_form.what)
            return {**data, "options": {**given, long_form.path_option: path}}
        return data
    key = keys[0]
    if len(keys) > 1:
        raise _model_file_error(f"give one model file, '{key}' or '{keys[1]}', not both", (keys[1],))
    name, declared = shorthands[key]
    allowed = declared.options
    options: dict[str, Any] = {}
    for other, value in data.items():
        if other in (key, INPUTS_KEY):  # inputs: the model reference's own key, in every form
            continue
        if other == "name":
            message = (
                f"'name' and '{key}' both pick the model; keep one "
                f"('{key}: FILE' is short for {{name: {name}, options: {{{declared.path_option}: FILE}}}})"
            )
            raise _model_file_error(message, ("name",))
        if other == "options":
            example = f"{{{key}: FILE, {allowed[0]}: ...}}" if allowed else f"{{{key}: FILE}}"
            message = (
                f"with '{key}: FILE' the model's options sit beside it, not under 'options' "
                f"(e.g. {example}; options: {', '.join(allowed) or 'none'})"
            )
            raise _model_file_error(message, ("options",))
        if other not in allowed:
            close = difflib.get_close_matches(str(other), [*allowed, INPUTS_KEY], n=1, cutoff=0.6)
            beside = ", ".join([*allowed, INPUTS_KEY])
            hint = f"did you mean '{close[0]}'?" if close else f"remove it (allowed beside '{key}': {beside})"
            raise _model_file_error(f"unknown key '{other}'; {hint}", (str(other),))
        options[other] = value
    options[declared.path_option] = _resolve_model_file(data[key], base_dir, (key,), declared.what)
    resolved = {"name": name, "options": options}
    if INPUTS_KEY in data:
        resolved[INPUTS_KEY] = data[INPUTS_KEY]
    return resolved


class ModelRef(BaseModel):
    """The model plugin and its options; ``model: dlrm-small`` is short for ``{name: dlrm-small}``,
    ``model: {onnx: FILE}`` for ``{name: onnx-file, options: {path: FILE}}`` (likewise every
    shorthand a model plugin declares), the path relative to the scenario file's folder.

    ``inputs: FILE.npz``, in any form, cuts the model's inputs from the arrays of that file instead
    of the model's made-up ones (:mod:`harness.input_data`); its path is resolved the same way."""

    model_config = _FROZEN

    name: PluginName
    options: ModelOptions = Field(default_factory=dict)
    #: the absolute path of the .npz the inputs are cut from, or None
    inputs: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any, info: ValidationInfo) -> Any:
        data = _shorthand(data, "model")
        context = info.context if isinstance(info.context, dict) else {}
        if isinstance(data, dict) and _may_use_shorthand(data):
            shorthands = _shorthands(context.get("registries"))
            data = _file_model(data, context.get("base_dir"), shorthands)
        if isinstance(data, dict) and data.get(INPUTS_KEY) is not None:
            path = _resolve_model_file(data[INPUTS_KEY], context.get("base_dir"), (INPUTS_KEY,), "inputs (.npz)")
            data = {**data, INPUTS_KEY: path}
        return data

    @model_serializer(mode="wrap")
    def _leave_out_no_inputs(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without inputs the key is left out: a scenario's fingerprint stays what it was before
        the key existed."""
        dumped: dict[str, Any] = handler(self)
        if dumped.get(INPUTS_KEY) is None:
            dumped.pop(INPUTS_KEY, None)
        return dumped
