"""The schema's validation errors, one line each with the key's file line and a message in the
scenario's own terms (not pydantic's)."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ValidationError,
)

from harness.scenario.messages import Loc, _kind, _raise_problems
from harness.scenario.model_ref import RegistriesSource
from harness.scenario.schema import Scenario


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The schema class that validates the mapping at ``loc`` (None when it is not a model)."""
    tp: Any = Scenario
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif origin in (tuple, list) and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict and isinstance(part, str):
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_TYPE_MESSAGES = {
    "tuple_type": "Input should be a list",
    "list_type": "Input should be a list",
    "dict_type": "Input should be a mapping",
    "model_type": "Input should be a mapping",
    "model_attributes_type": "Input should be a mapping",
    "too_short": "Input should not be empty",
}


def _describe_error(error: Any) -> tuple[Loc, str]:
    """The key path and the one-line message (with the fix where one is obvious) of a pydantic error."""
    loc: Loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if "at" in ctx:
        loc = (*loc, *ctx["at"])
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(loc[:-1])
        fields = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
        if close:
            return loc, f"unknown key '{key}'; did you mean '{close[0]}'?"
        allowed = ", ".join(fields) or "none"
        return loc, f"unknown key '{key}'; remove it (allowed here: {allowed})"
    if kind == "missing":
        return loc, f"required key '{loc[-1]}' is missing; add it"
    if kind == "too_short" and isinstance(error.get("input"), list | tuple) and error["input"]:
        return loc, ""  # items failed, so "empty after validation": their own errors say why
    if kind.startswith("scenario_"):
        return loc, error["msg"]
    message = _TYPE_MESSAGES.get(kind, error["msg"])
    if kind == "too_short":
        return loc, message
    got = _kind(error.get("input"))
    return loc, f"{message} (got {got})"


def _validate(
    data: dict[str, Any],
    source: str,
    locations: dict[Loc, int],
    base_dir: Path | None = None,
    registries: RegistriesSource = None,
) -> Scenario:
    try:
        # base_dir: the folder model file paths (model: {onnx: FILE}) are relative to;
        # registries: where the model shorthands (onnx: ...) come from
        return Scenario.model_validate(data, context={"base_dir": base_dir, "registries": registries})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    problems: list[tuple[int | None, Loc, str]] = []
    for error in errors:
        loc, message = _describe_error(error)
        if not message:
            continue
        path = loc
        while path not in locations and path:
            path = path[:-1]
        problems.append((locations.get(path), loc, message))
    _raise_problems(source, problems or [(None, (), "does not validate")])
    raise AssertionError  # unreachable: _raise_problems raised
