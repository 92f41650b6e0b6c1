"""Scenario files: safe YAML loading, a strict schema, and expansion into cells.

A scenario is a small declarative YAML file (see ``scenarios/rec.yaml``). :func:`load_scenario`
reads it defensively (size limit, ``SafeLoader`` only, alias-bomb and depth limits, duplicate keys
rejected) and validates it with a strict pydantic schema. Every problem becomes one line of a
:class:`~harness.errors.ScenarioError`, ``"{file}:{line}: {key.path}: {message}"``, never a
traceback. Loading is pure: no device probing, no environment writes, no runtime imports.

:func:`expand_cells` turns a validated scenario into the ordered list of :class:`~harness.cells.Cell`.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import re
import stat
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from harness.cells import Cell, Scalar
from harness.errors import ScenarioError

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_SCENARIO_BYTES",
    "PRECISIONS",
    "BackendEntry",
    "Limits",
    "Measurement",
    "ModelRef",
    "Scenario",
    "describe",
    "expand_cells",
    "load_scenario",
    "load_scenario_text",
    "usable_cpu_count",
]

#: the most bytes a scenario file may have; one more is read to detect a bigger file
MAX_SCENARIO_BYTES = 1_000_000
#: the most aliases (``*name``) a document may use
MAX_ALIASES = 100
#: the most nodes a document may have once its aliases are expanded
MAX_NODES = 100_000
#: the deepest nesting of lists and mappings, aliases expanded
MAX_DEPTH = 64

Loc = tuple[str | int, ...]

# --------------------------------------------------------------------------------------------
# Error formatting
# --------------------------------------------------------------------------------------------


def _dotted(loc: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in loc)


def _format(source: str, line: int | None, loc: Iterable[str | int], message: str) -> str:
    """``file:line: dotted.loc: message`` (the line and the loc left out where unknown or empty)."""
    parts = [f"{source}:{line}" if line else source]
    dotted = _dotted(loc)
    if dotted:
        parts.append(dotted)
    parts.append(message)
    return ": ".join(parts)


def _show(value: Any) -> str:
    """A short, YAML-flavoured rendering of a value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:56] + "...'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return _show(value)


class _Problem(Exception):
    """An internal, already-located problem found while composing; becomes a ScenarioError."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _raise_problems(source: str, problems: list[tuple[int | None, Loc, str]]) -> None:
    if not problems:
        return
    ordered = sorted(set(problems), key=lambda p: (p[0] is None, p[0] or 0, _dotted(p[1]), p[2]))
    raise ScenarioError("\n".join(_format(source, line, loc, msg) for line, loc, msg in ordered))


# --------------------------------------------------------------------------------------------
# Safe YAML: a SafeLoader that counts while composing, and our own constructor on the node tree
# --------------------------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = _TAG + "seq", _TAG + "map", _TAG + "merge"
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL})
_ALLOWED_HINT = "a scenario holds only plain strings, numbers, booleans, null, lists and mappings; remove the tag"


def _show_tag(tag: str | None) -> str:
    if tag and tag.startswith(_TAG):
        return "!!" + tag[len(_TAG) :]
    return str(tag)


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that bounds aliases, nodes and nesting while it composes the node graph.

    Implicit typing: dates and ``=`` stay strings (no timestamp/value resolvers), and ``1e3``
    style floats are floats (YAML 1.2), on top of SafeLoader's YAML 1.1 rules.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.bench_aliases = 0
        self.bench_nodes = 0
        self.bench_depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, AliasEvent):
            self.bench_aliases += 1
            if self.bench_aliases > MAX_ALIASES:
                msg = (
                    f"more than {MAX_ALIASES} aliases (*name) in one document; "
                    "a scenario needs few: write the values out (this looks like an alias bomb)"
                )
                raise _Problem(line, msg)
            return super().compose_node(parent, index)
        self.bench_nodes += 1
        if self.bench_nodes > MAX_NODES:
            raise _Problem(line, f"more than {MAX_NODES:,} values in one document; a scenario is far smaller")
        self.bench_depth += 1
        try:
            if self.bench_depth > MAX_DEPTH:
                raise _Problem(line, f"lists and mappings nested more than {MAX_DEPTH} levels deep; flatten the file")
            return super().compose_node(parent, index)
        finally:
            self.bench_depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_TAG + "timestamp", _TAG + "value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _compose(text: str, source: str) -> Node | None:
    """The node graph of the single YAML document in ``text`` (None for an empty document)."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        return loader.get_single_node()
    except _Problem as problem:
        raise ScenarioError(_format(source, problem.line, (), problem.message)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        hint = "fix the YAML syntax (indentation, quoting, a missing ':' or bracket) on this line or the one before"
        if isinstance(exc, yaml.composer.ComposerError):
            if "document" in what:
                hint = "keep one document per file (remove the second '---' and what follows)"
            else:
                hint = "define each anchor (&name) once, before its aliases (*name)"
        raise ScenarioError(_format(source, line, (), f"invalid YAML: {what}; {hint}")) from None
    except yaml.reader.ReaderError as exc:
        position = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        msg = f"character #x{char:04x} is not allowed in YAML; remove it"
        raise ScenarioError(_format(source, line, (), msg)) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(_format(source, None, (), f"invalid YAML: {exc}")) from None
    except RecursionError:
        msg = f"lists and mappings nested too deep (at most {MAX_DEPTH} levels); flatten the file"
        raise ScenarioError(_format(source, None, (), msg)) from None
    finally:
        if loader is not None:
            loader.dispose()


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _check_graph(root: Node) -> list[tuple[int | None, Loc, str]]:
    """Check tags everywhere and bound the expanded size and depth of the graph.

    Aliases make the composed graph a DAG (or a cyclic graph): sizes and heights are memoised
    per node, so counting is linear in the graph, not in its exponential expansion.
    """
    problems: list[tuple[int | None, Loc, str]] = []
    sizes: dict[Node, int] = {}
    heights: dict[Node, int] = {}
    active: set[Node] = set()

    def too_big(node: Node) -> _Problem:
        msg = (
            f"the document expands to more than {MAX_NODES:,} values through its aliases (*name); "
            "write the values out (this looks like an alias bomb)"
        )
        return _Problem(_line(node), msg)

    def too_deep(node: Node) -> _Problem:
        msg = f"lists and mappings nested more than {MAX_DEPTH} levels deep (aliases expanded); flatten the file"
        return _Problem(_line(node), msg)

    def check_tag(node: Node, allowed: Iterable[str]) -> None:
        if node.tag not in allowed:
            problems.append((_line(node), (), f"unsupported YAML tag '{_show_tag(node.tag)}': {_ALLOWED_HINT}"))

    def visit(node: Node, depth: int) -> int:
        if node in sizes:
            if depth + heights[node] > MAX_DEPTH:
                raise too_deep(node)
            return sizes[node]
        if node in active:
            msg = "an alias (*name) refers to a value that contains it; recursive structures are not allowed"
            raise _Problem(_line(node), msg)
        if depth > MAX_DEPTH:
            raise too_deep(node)
        size, height = 1, 1
        if isinstance(node, ScalarNode):
            check_tag(node, _SCALAR_TAGS)
        else:
            active.add(node)
            if isinstance(node, SequenceNode):
                check_tag(node, (_SEQ,))
                children = list(node.value)
            else:
                check_tag(node, (_MAP,))
                children = []
                for key, value in node.value:
                    if isinstance(key, ScalarNode):
                        check_tag(key, _SCALAR_TAGS | {_MERGE})
                        size += 1
                    else:
                        children.append(key)
                    children.append(value)
            for child in children:
                size += visit(child, depth + 1)
                height = max(height, heights[child] + 1)
                if size > MAX_NODES:
                    raise too_big(node)
            active.discard(node)
        sizes[node] = size
        heights[node] = height
        return size

    try:
        visit(root, 1)
    except _Problem as problem:
        return [(problem.line, (), problem.message)]
    return problems


class _Builder:
    """Python values from a checked node graph, with the line of every key path."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.locations: dict[Loc, int] = {}
        self.problems: list[tuple[int | None, Loc, str]] = []

    def build(self, node: Node, path: Loc) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            items = []
            for index, child in enumerate(node.value):
                self.locations[(*path, index)] = _line(child)
                items.append(self.build(child, (*path, index)))
            return items
        return self.mapping(node, path)

    def scalar(self, node: ScalarNode, path: Loc) -> Any:
        tag = node.tag
        try:
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return self.loader.construct_yaml_bool(node)
            if tag == _INT:
                return self.loader.construct_yaml_int(node)
            if tag == _FLOAT:
                return self.loader.construct_yaml_float(node)
        except (ValueError, KeyError, TypeError, OverflowError):
            msg = f"cannot read {node.value!r} as {_show_tag(tag)}; fix the value or remove the tag"
            self.problems.append((_line(node), path, msg))
            return None
        return node.value  # str, and any tag already reported

    def mapping(self, node: MappingNode, path: Loc) -> dict[str, Any]:
        merges: list[Node] = []
        own: list[tuple[str, ScalarNode, Node]] = []
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                msg = (
                    f"a key must be a plain name, not {'a list' if isinstance(key_node, SequenceNode) else 'a mapping'}"
                )
                self.problems.append((_line(key_node), path, msg))
                continue
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            key = key_node.value  # keys are names: the text as written ('on', '1' stay strings)
            if key in first_line:
                msg = f"duplicate key (first at line {first_line[key]}); keep only one of them"
                self.problems.append((_line(key_node), (*path, key), msg))
                continue
            first_line[key] = _line(key_node)
            own.append((key, key_node, value_node))

        result: dict[str, Any] = {}
        sources: list[MappingNode] = []
        for merge in merges:
            if isinstance(merge, MappingNode):
                sources.append(merge)
            elif isinstance(merge, SequenceNode) and all(isinstance(item, MappingNode) for item in merge.value):
                sources.extend(merge.value)
            else:
                self.problems.append((_line(merge), path, "'<<' (merge) needs a mapping or a list of mappings"))
        for merged in reversed(sources):  # earlier merge sources win over later ones
            result.update(self.mapping(merged, path))
        for key, key_node, value_node in own:  # the mapping's own keys win over merged ones
            self.locations[(*path, key)] = _line(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

Precision = Literal["fp32", "fp16", "bf16", "int8"]
#: the precisions a scenario may ask for
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
LoadName = Literal["single_stream", "offline", "server", "multi_stream"]
#: the load scenarios, MLPerf's four: single_stream runs on bench's own loop, the others on LoadGen
LOADS: tuple[str, ...] = typing.get_args(LoadName)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_DEVICE_RE = re.compile(r"cpu|cuda(?::[0-9]+)?")


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError(
                "scenario_finite", "Input should be a finite number (got {value})", {"value": _show(value)}
            )
        return value
    raise PydanticCustomError(
        "scenario_scalar",
        "Input should be a single value (string, number, boolean or null), not {kind}",
        {"kind": _kind(value)},
    )


def _unique(values: tuple[Any, ...]) -> tuple[Any, ...]:
    first: dict[tuple[type, Any], int] = {}
    for index, value in enumerate(values):
        key = (type(value), value)
        if key in first:
            raise PydanticCustomError(
                "scenario_duplicate",
                "duplicate value {value} (already at index {first}); remove it",
                {"value": _show(value), "first": first[key], "at": (index,)},
            )
        first[key] = index
    return values


def _sorted(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sorted(values))


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "scenario_name",
            "a name may use only letters, digits, '_', '.' and '-' (got {value})",
            {"value": _show(value)},
        )
    return value


def _device(value: str) -> str:
    if not _DEVICE_RE.fullmatch(value):
        raise PydanticCustomError(
            "scenario_device",
            "Input should be 'cpu', 'cuda' or 'cuda:N' with N a device index (got {value})",
            {"value": _show(value)},
        )
    return value


def _schema_version(value: int) -> int:
    if value != 1:
        raise PydanticCustomError(
            "scenario_version",
            "unsupported schema_version {value}: this bench reads schema_version 1",
            {"value": _show(value)},
        )
    return value


ScalarValue = Annotated[Any, PlainValidator(_scalar)]
Options = dict[StrictStr, ScalarValue]
SweepValues = Annotated[tuple[ScalarValue, ...], Field(min_length=1), AfterValidator(_unique)]
PluginName = Annotated[StrictStr, Field(min_length=1), AfterValidator(_name)]
Device = Annotated[StrictStr, AfterValidator(_device)]
Precisions = Annotated[tuple[Precision, ...], Field(min_length=1), AfterValidator(_unique)]
BatchSize = Annotated[StrictInt, Field(gt=0, le=1_000_000)]
Percentile = Annotated[StrictFloat, Field(gt=0, lt=100)]
Positive = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


def _listify(value: Any) -> Any:
    """An axis may be written as one value: ``concurrency: 2`` is ``concurrency: [2]``."""
    return value if isinstance(value, list | tuple) else [value]


def _axis(item: Any) -> Any:
    """A sweep axis of ``item``: one value or a non-empty list of distinct values."""
    return Annotated[tuple[item, ...], BeforeValidator(_listify), Field(min_length=1), AfterValidator(_unique)]


Concurrency = Annotated[StrictInt, Field(ge=1, le=256)]


def _shorthand(data: Any, what: str) -> Any:
    """``"name"`` -> ``{"name": "name"}``; mappings and instances pass; anything else is an error."""
    if isinstance(data, str):
        return {"name": data}
    if isinstance(data, dict | BaseModel):
        return data
    raise PydanticCustomError(
        "scenario_shorthand",
        "Input should be a {what} name or a mapping with 'name' (got {value})",
        {"what": what, "value": _kind(data)},
    )


def _option_value(value: Any) -> Any:
    """A model option: a scalar, or lists and mappings of them (``shapes: {x: [batch, 3, 224, 224]}``)."""
    if isinstance(value, list | tuple):
        return [_option_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _option_value(item) for key, item in value.items()}
    return _scalar(value)


ModelOptions = dict[StrictStr, Annotated[Any, PlainValidator(_option_value)]]

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


class BackendEntry(BaseModel):
    """One backend plugin with fixed options, option axes to sweep, and optional own precisions."""

    model_config = _FROZEN

    name: PluginName
    options: Options = Field(default_factory=dict)
    sweep: dict[StrictStr, SweepValues] = Field(default_factory=dict)
    precisions: Precisions | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        return _shorthand(data, "backend")

    @model_validator(mode="after")
    def _check_overlap(self) -> BackendEntry:
        for key in self.sweep:
            if key in self.options:
                raise PydanticCustomError(
                    "scenario_overlap",
                    "option '{key}' is both fixed (options) and swept (sweep); keep it in one of them",
                    {"key": key, "at": ("sweep", key)},
                )
        return self

    def combos(self) -> list[dict[str, Scalar]]:
        """The cartesian product of the sweep axes, in the file's key order ([{}] without a sweep)."""
        keys = list(self.sweep)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.sweep.values())]


class Measurement(BaseModel):
    """How each cell is measured; measurement settings are not part of a cell's identity."""

    model_config = _FROZEN

    percentiles: Annotated[
        tuple[Percentile, ...], Field(min_length=1), AfterValidator(_unique), AfterValidator(_sorted)
    ] = (50.0, 90.0, 95.0, 99.0, 99.9)
    headline_percentile: Percentile = 99.0
    confidence: Annotated[StrictFloat, Field(gt=0.5, lt=1)] = 0.95
    warmup_s: Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)] = 0.5
    warmup_queries: Annotated[StrictInt, Field(ge=1)] = 10
    min_duration_s: Positive = 2.0
    max_duration_s: Positive = 10.0
    min_queries: Annotated[StrictInt, Field(ge=1)] | None = None
    ci_rel_width: Positive = 0.05
    noise_threshold: Annotated[StrictFloat, Field(ge=0, le=1)] = 0.10
    repeats: Annotated[StrictInt, Field(ge=1, le=100)] = 1

    @model_validator(mode="after")
    def _cross_check(self) -> Measurement:
        if self.headline_percentile not in self.percentiles:
            raise PydanticCustomError(
                "scenario_headline",
                "headline_percentile {value} is not one of percentiles [{known}]; add it to percentiles or pick one",
                {
                    "value": _show(self.headline_percentile),
                    "known": ", ".join(f"{p:g}" for p in self.percentiles),
                    "at": ("headline_percentile",),
                },
            )
        if self.max_duration_s < self.min_duration_s:
            raise PydanticCustomError(
                "scenario_durations",
                "max_duration_s ({max}) must be >= min_duration_s ({min}); "
                "raise max_duration_s or lower min_duration_s",
                {"max": _show(self.max_duration_s), "min": _show(self.min_duration_s), "at": ("max_duration_s",)},
            )
        return self


def _target_qps(value: Any) -> tuple[float, ...] | str | None:
    """``target_qps``: null, ``peak``, a rate in queries/s or a list of distinct rates."""
    if value is None or value == "peak":
        return value
    rates = value if isinstance(value, list | tuple) else [value]
    if not rates:
        raise PydanticCustomError("scenario_target_qps", "give at least one rate, or 'peak'", {})
    out: list[float] = []
    for index, rate in enumerate(rates):
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise PydanticCustomError(
                "scenario_target_qps",
                "Input should be a rate in queries/s, a list of rates, or 'peak' (got {value})",
                {"value": _show(rate), "at": (index,) if isinstance(value, list | tuple) else ()},
            )
        if rate <= 0:
            raise PydanticCustomError(
                "scenario_target_qps",
                "a target rate must be above 0 queries/s (got {value}); give the Poisson arrival rate to offer",
                {"value": _show(rate), "at": (index,) if isinstance(value, list | tuple) else ()},
            )
        if float(rate) in out:
            raise PydanticCustomError("scenario_duplicate", "duplicate rate {value}; remove it", {"value": _show(rate)})
        out.append(float(rate))
    return tuple(out)


class PeakSearchSettings(BaseModel):
    """Server with ``target_qps: peak``: bisect on the offered rate for the highest one whose
    latency percentile stays under ``latency_bound_ms``."""

    model_config = _FROZEN

    min_qps: Positive = 1.0
    max_qps: Positive | None = None
    precision: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.05
    trial_duration_s: Positive = 2.0
    max_trials: Annotated[StrictInt, Field(ge=2, le=30)] = 10

    @model_validator(mode="after")
    def _check_range(self) -> PeakSearchSettings:
        if self.max_qps is not None and self.max_qps <= self.min_qps:
            raise PydanticCustomError(
                "scenario_peak_range",
                "max_qps ({max}) must be above min_qps ({min})",
                {"max": _show(self.max_qps), "min": _show(self.min_qps), "at": ("max_qps",)},
            )
        return self


class LoadGenSettings(BaseModel):
    """How LoadGen drives the offline, server and multi_stream cells (MLPerf's TestSettings)."""

    model_config = _FROZEN

    min_duration_s: Positive = 10.0
    max_duration_s: Positive | None = None
    min_query_count: Annotated[StrictInt, Field(ge=1)] | None = None
    target_qps: Annotated[Any, PlainValidator(_target_qps)] = None
    latency_bound_ms: Positive | None = None
    latency_percentile: Percentile = 99.0
    samples_per_query: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 8
    expected_qps: Positive | None = None
    max_wait_us: _axis(Annotated[StrictInt, Field(ge=0, le=10_000_000)]) = (0,)  # type: ignore[valid-type]
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    peak_search: PeakSearchSettings = Field(default_factory=PeakSearchSettings)


class CostSettings(BaseModel):
    """What a machine costs: a catalog instance or an hourly price, and the load to plan for."""

    model_config = _FROZEN

    instance: StrictStr | None = None
    hourly_usd: Positive | None = None
    target_qps: Positive | None = None
    utilisation: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.7
    daily_volume: Positive | None = None

    @model_validator(mode="after")
    def _check_price(self) -> CostSettings:
        if self.instance is None and self.hourly_usd is None:
            raise PydanticCustomError(
                "scenario_cost_price",
                "cost needs a price: instance (a row of the catalog, `bench list instances`) or hourly_usd",
                {},
            )
        if self.instance is not None:
            from harness.economics import UnknownInstance, find_instance

            try:
                find_instance(self.instance)
            except UnknownInstance as exc:
                message = {"message": str(exc), "at": ("instance",)}
                raise PydanticCustomError("scenario_instance", "{message}", message) from None
        return self


def _budgets(value: Any) -> Any:
    """``budgets``: known metric names, each with a non-negative limit."""
    from harness.economics import BUDGETS

    if not isinstance(value, dict):
        return value
    for key, limit in value.items():
        if key not in BUDGETS:
            close = difflib.get_close_matches(str(key), list(BUDGETS), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise PydanticCustomError(
                "scenario_budget",
                "no metric '{key}' to budget; {hint}known: {known}",
                {"key": str(key), "hint": hint, "known": ", ".join(BUDGETS), "at": (key,)},
            )
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit) or limit < 0:
            raise PydanticCustomError(
                "scenario_budget_limit",
                "a budget is a number >= 0 in {unit} (got {value})",
                {"unit": BUDGETS[key].unit, "value": _show(limit), "at": (key,)},
            )
        if BUDGETS[key].unit == "fraction" and limit > 1:
            raise PydanticCustomError(
                "scenario_budget_fraction",
                "{key} is a fraction: a threshold in [0, 1] (got {value})",
                {"key": str(key), "value": _show(limit), "at": (key,)},
            )
    return {key: float(limit) for key, limit in value.items()}


Fraction = Annotated[StrictFloat, Field(ge=0, le=1)]


class FidelitySettings(BaseModel):
    """How each cell's outputs are checked against the fp32 PyTorch reference."""

    model_config = _FROZEN

    samples: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 1024
    min_cosine: dict[Precision, Fraction] = Field(default_factory=dict)
    min_agreement: Fraction | None = None


class Limits(BaseModel):
    """Hard limits on one cell's worker process."""

    model_config = _FROZEN

    timeout_s: Positive = 600.0
    memory_mb: Annotated[StrictInt, Field(ge=64)] | None = None


class Scenario(BaseModel):
    """A validated scenario, with where it came from: its file, text and the line of each key."""

    model_config = _FROZEN

    schema_version: Annotated[StrictInt, AfterValidator(_schema_version)] = 1
    name: Annotated[StrictStr, AfterValidator(_name)]
    description: StrictStr | None = None
    model: ModelRef
    backends: Annotated[tuple[BackendEntry, ...], Field(min_length=1)]
    devices: Annotated[tuple[Device, ...], Field(min_length=1), AfterValidator(_unique)] = ("cpu",)
    precisions: Precisions = ("fp32",)
    batch_sizes: Annotated[tuple[BatchSize, ...], Field(min_length=1), AfterValidator(_unique)]
    threads: int | Literal["auto"] = "auto"
    load: _axis(LoadName) = ("single_stream",)  # type: ignore[valid-type]
    concurrency: _axis(Concurrency) = (1,)  # type: ignore[valid-type]
    loadgen: LoadGenSettings = Field(default_factory=LoadGenSettings)
    cost: CostSettings | None = None
    fidelity: FidelitySettings = Field(default_factory=FidelitySettings)
    budgets: Annotated[dict[StrictStr, Any], BeforeValidator(_budgets)] = Field(default_factory=dict)
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    measurement: Measurement = Field(default_factory=Measurement)
    limits: Limits = Field(default_factory=Limits)

    _source_path: Path | None = PrivateAttr(default=None)
    _source_name: str = PrivateAttr(default="<scenario>")
    _source_text: str = PrivateAttr(default="")
    _locations: dict[Loc, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_load(self) -> Scenario:
        lg = self.loadgen
        if "server" in self.load:
            if lg.target_qps is None:
                raise PydanticCustomError(
                    "scenario_server_rate",
                    "load 'server' needs loadgen.target_qps: the Poisson arrival rate in queries/s, a list of "
                    "rates, or 'peak' to search for the highest rate that meets latency_bound_ms",
                    {"at": ("load",)},
                )
            if lg.latency_bound_ms is None:
                raise PydanticCustomError(
                    "scenario_server_bound",
                    "load 'server' needs loadgen.latency_bound_ms: the bound its latency_percentile "
                    "(p{pct}) must stay under, in ms",
                    {"pct": f"{lg.latency_percentile:g}", "at": ("load",)},
                )
        if "cost_per_million_usd" in self.budgets and self.cost is None:
            raise PydanticCustomError(
                "scenario_budget_cost",
                "a cost_per_million_usd budget needs a price: add cost: {instance: NAME} or cost: {hourly_usd: X}",
                {"at": ("budgets", "cost_per_million_usd")},
            )
        driven = [load for load in self.load if load != "single_stream"]
        if driven:
            need = max(loadgen_seconds(self, load) for load in driven) + self.measurement.warmup_s
            if need >= self.limits.timeout_s:
                raise PydanticCustomError(
                    "scenario_loadgen_timeout",
                    "a LoadGen cell needs at least {need} s here (warm-up, min_duration_s, min_query_count at the "
                    "target rate, peak-search trials), which limits.timeout_s ({timeout} s) cannot hold: raise "
                    "limits.timeout_s or lower the durations",
                    {
                        "need": f"{need:.4g}",
                        "timeout": _show(self.limits.timeout_s),
                        "at": ("loadgen", "min_duration_s"),
                    },
                )
        return self

    @field_validator("threads", mode="before")
    @classmethod
    def _check_threads(cls, value: Any) -> Any:
        if isinstance(value, str) and value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise PydanticCustomError(
            "scenario_threads", "Input should be an integer >= 1 or 'auto' (got {value})", {"value": _show(value)}
        )

    # -- where it came from ---------------------------------------------------------------

    @property
    def source_path(self) -> Path | None:
        """The file it was loaded from (None when loaded from text)."""
        return self._source_path

    @property
    def source_name(self) -> str:
        """The name used in messages: the path as given, or the text's ``source``."""
        return self._source_name

    @property
    def source_text(self) -> str:
        """The scenario's text as read (for storing an exact copy with the results)."""
        return self._source_text

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        """The 1-based line of a key path, or of its nearest enclosing key that is in the file."""
        path = tuple(loc)
        while True:
            if path in self._locations:
                return self._locations[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, loc: Iterable[str | int], message: str) -> ScenarioError:
        """A ScenarioError ``"{file}:{line}: {dotted.loc}: {message}"`` to raise (not raised here)."""
        path = tuple(loc)
        return ScenarioError(_format(self._source_name, self.line_of(path), path, message))

    # -- identity -----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON of the validated content (not of the text)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Scenario):
            return self.model_dump() == other.model_dump()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    # -- expansion ------------------------------------------------------------------------------

    def resolved_threads(self, cpu_count: int) -> int:
        """``threads`` as a number: itself, or ``cpu_count`` for ``auto``."""
        if isinstance(cpu_count, bool) or not isinstance(cpu_count, int) or cpu_count < 1:
            msg = f"cpu_count must be an integer >= 1, got {cpu_count!r}"
            raise ValueError(msg)
        return cpu_count if self.threads == "auto" else int(self.threads)

    def cells(self, cpu_count: int) -> list[Cell]:
        """Same as :func:`expand_cells`."""
        return expand_cells(self, cpu_count)


# --------------------------------------------------------------------------------------------
# Validation errors -> one line each
# --------------------------------------------------------------------------------------------


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


def _validate(data: dict[str, Any], source: str, locations: dict[Loc, int], base_dir: Path | None = None) -> Scenario:
    try:
        # base_dir: the folder model file paths (model: {onnx: FILE}) are relative to
        return Scenario.model_validate(data, context={"base_dir": base_dir})
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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _too_big(source: str, size: int | None) -> ScenarioError:
    have = f"{size:,} bytes" if size is not None else f"more than {MAX_SCENARIO_BYTES:,} bytes"
    msg = f"file is {have}, over the limit of {MAX_SCENARIO_BYTES:,} bytes for a scenario; is this the right file?"
    return ScenarioError(_format(source, None, (), msg))


def _read(path: Path, source: str) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        return _fail(source, "no such file; check the path (for example scenarios/rec.yaml)")
    except OSError as exc:
        return _fail(source, f"cannot read: {exc.strerror or exc}")
    if stat.S_ISDIR(info.st_mode):
        return _fail(source, "is a directory; give the path of a scenario .yaml file")
    if not stat.S_ISREG(info.st_mode):
        return _fail(source, "is not a regular file; give the path of a scenario .yaml file")
    if info.st_size > MAX_SCENARIO_BYTES:
        raise _too_big(source, info.st_size)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        return _fail(source, f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_SCENARIO_BYTES:
        raise _too_big(source, None)
    return data


def _fail(source: str, message: str) -> Any:
    raise ScenarioError(_format(source, None, (), message))


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        msg = f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); save the file as UTF-8"
        raise ScenarioError(_format(source, line, (), msg)) from None


def _node_kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        return f"a single value ({node.value!r})"
    return "a mapping"


def _load(text: str, source: str, path: Path | None, base_dir: Path | None = None) -> Scenario:
    root = _compose(text, source)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL and root.value in ("", "~")):
        raise ScenarioError(
            _format(source, None, (), "file is empty; a scenario needs at least name, model, backends and batch_sizes")
        )
    _raise_problems(source, _check_graph(root))
    if not isinstance(root, MappingNode):
        msg = f"the top level must be a mapping of keys (name: ..., backends: ...), not {_node_kind(root)}"
        raise ScenarioError(_format(source, _line(root), (), msg))
    loader = _Loader("")
    builder = _Builder(loader)
    builder.locations[()] = _line(root)
    try:
        data = builder.build(root, ())
    finally:
        loader.dispose()
    _raise_problems(source, builder.problems)
    if base_dir is None and path is not None:
        base_dir = Path(os.path.abspath(path)).parent
    scenario = _validate(data, source, builder.locations, base_dir)
    scenario._source_path = path
    scenario._source_name = source
    scenario._source_text = text
    scenario._locations = builder.locations
    return scenario


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read, check and validate a scenario file; raise :class:`ScenarioError` on any problem."""
    source = os.fspath(path)
    file = Path(source)
    text = _decode(_read(file, source), source)
    return _load(text, source, file)


def load_scenario_text(text: str, source: str = "<string>", base_dir: str | os.PathLike[str] | None = None) -> Scenario:
    """Validate a scenario given as text (tests, stored copies); ``source`` names it in messages.

    ``base_dir`` is the folder relative model file paths (``model: {onnx: FILE}``) are taken from:
    the original scenario file's folder for a stored copy; the current folder when not given.
    """
    if len(text) > MAX_SCENARIO_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SCENARIO_BYTES:
        raise _too_big(source, len(text.encode("utf-8", "surrogatepass")))
    return _load(text, source, None, Path(os.path.abspath(base_dir)) if base_dir is not None else None)


# --------------------------------------------------------------------------------------------
# Expansion and summary
# --------------------------------------------------------------------------------------------


def usable_cpu_count() -> int:
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def loadgen_min_queries(settings: LoadGenSettings, confidence: float = 0.95) -> int:
    """``min_query_count``, or when null the queries its percentile needs for a two-sided CI and
    LoadGen's early-stopping estimate (p99: 662)."""
    if settings.min_query_count is not None:
        return settings.min_query_count
    from harness import stats

    return stats.min_queries_for(settings.latency_percentile, confidence)


def loadgen_seconds(scenario: Scenario, load: str) -> float:
    """The least time LoadGen takes to measure one cell of ``load`` (warm-up and preparing apart)."""
    lg = scenario.loadgen
    if load != "server" or lg.target_qps is None:
        return lg.min_duration_s
    if lg.target_qps == "peak":
        search = lg.peak_search
        return search.max_trials * search.trial_duration_s + lg.min_duration_s
    queries = loadgen_min_queries(lg, scenario.measurement.confidence)
    seconds = max(max(lg.min_duration_s, queries / rate) for rate in lg.target_qps)
    return min(seconds, lg.max_duration_s) if lg.max_duration_s else seconds


def load_variants(scenario: Scenario, load: str, cpu_count: int) -> list[tuple[dict[str, Scalar], int]]:
    """The load options of each cell of ``load`` (concurrency, rate, batching wait) with the
    threads each replica gets: ``threads: auto`` shares the CPUs among the replicas."""
    lg = scenario.loadgen
    if load == "single_stream":
        return [({}, scenario.resolved_threads(cpu_count))]
    rates: tuple[Any, ...] = (None,)
    if load == "server":
        rates = ("peak",) if lg.target_qps == "peak" else tuple(lg.target_qps or ())
    waits: tuple[int | None, ...] = lg.max_wait_us if load in ("server", "multi_stream") else (None,)
    out: list[tuple[dict[str, Scalar], int]] = []
    for concurrency in scenario.concurrency:
        threads = (
            max(1, cpu_count // concurrency) if scenario.threads == "auto" else scenario.resolved_threads(cpu_count)
        )
        for rate in rates:
            for wait in waits:
                options: dict[str, Scalar] = {"concurrency": concurrency}
                if load == "server":
                    options.update(target_qps=rate, latency_bound_ms=lg.latency_bound_ms)
                if load == "multi_stream":
                    options["samples_per_query"] = lg.samples_per_query
                if wait is not None:
                    options["max_wait_us"] = wait
                out.append((options, threads))
    return out


def expand_cells(scenario: Scenario, cpu_count: int) -> list[Cell]:
    """All cells of the scenario, backend outermost, then its sweep combinations, device,
    precision, batch size, load and the load's variants innermost; a cell equal to an earlier one
    is kept once."""
    scenario.resolved_threads(cpu_count)  # checks cpu_count
    cells: list[Cell] = []
    seen: set[str] = set()
    for backend in scenario.backends:
        precisions = backend.precisions if backend.precisions is not None else scenario.precisions
        for combo in backend.combos():
            options = {**backend.options, **combo}
            for device in scenario.devices:
                for precision in precisions:
                    for batch_size, load in itertools.product(scenario.batch_sizes, scenario.load):
                        for variant, threads in load_variants(scenario, load, cpu_count):
                            load_options = dict(variant)
                            if batch_size == 1 and load_options.get("max_wait_us"):
                                # a batch of one is full at once: no wait ever happens, the cell is the wait-0 one
                                load_options["max_wait_us"] = 0
                            cell = Cell(
                                model=scenario.model.name,
                                backend=backend.name,
                                device=device,
                                precision=precision,
                                batch_size=batch_size,
                                threads=threads,
                                load=load,
                                seed=scenario.seed,
                                model_options=dict(scenario.model.options),
                                backend_options=dict(options),
                                load_options=load_options,
                            )
                            if cell.id not in seen:
                                seen.add(cell.id)
                                cells.append(cell)
    return cells


def _load_summary(scenario: Scenario) -> str:
    parts = []
    lg = scenario.loadgen
    for load in scenario.load:
        text = load
        if load == "server":
            rates = "peak search" if lg.target_qps == "peak" else " | ".join(f"{r:g}" for r in lg.target_qps or ())
            text += f" ({rates} q/s, p{lg.latency_percentile:g} <= {lg.latency_bound_ms:g} ms)"
        elif load == "multi_stream":
            text += f" ({lg.samples_per_query} samples/query)"
        parts.append(text)
    text = ", ".join(parts)
    if any(load != "single_stream" for load in scenario.load):
        text += f"; concurrency {' | '.join(map(str, scenario.concurrency))}"
        text += f"; LoadGen >= {lg.min_duration_s:g} s"
    return text


def _backend_summary(backend: BackendEntry) -> str:
    parts = [f"{key}={value}" for key, value in backend.options.items()]
    parts += [f"{key}: {' | '.join(str(v) for v in values)}" for key, values in backend.sweep.items()]
    if backend.precisions is not None:
        parts.append(f"precisions: {', '.join(backend.precisions)}")
    return f"{backend.name} ({'; '.join(parts)})" if parts else backend.name


def describe(scenario: Scenario, cpu_count: int | None = None) -> str:
    """A short human summary for ``bench validate``: name, model, cells and axes."""
    cells = expand_cells(scenario, cpu_count or 1)
    m = scenario.measurement
    threads = str(scenario.threads)
    if scenario.threads == "auto" and cpu_count:
        threads = f"auto ({cpu_count} here)"
    model = scenario.model.name
    if scenario.model.options:
        model += " (" + ", ".join(f"{k}={v}" for k, v in scenario.model.options.items()) + ")"
    budget_s = m.repeats * sum(
        m.warmup_s + (m.max_duration_s if cell.load == "single_stream" else loadgen_seconds(scenario, cell.load))
        for cell in cells
    )
    title = f"scenario {scenario.name}"
    if scenario.description:
        first = " ".join(scenario.description.split()).split(". ")[0].rstrip(".")
        title += f": {first if len(first) <= 100 else first[:97] + '...'}"
    lines = [
        title,
        f"  source:       {scenario.source_name}",
        f"  model:        {model}",
        f"  backends:     {', '.join(_backend_summary(b) for b in scenario.backends)}",
        f"  devices:      {', '.join(scenario.devices)}",
        f"  precisions:   {', '.join(scenario.precisions)}",
        f"  batch sizes:  {', '.join(str(b) for b in scenario.batch_sizes)}",
        f"  threads:      {threads}; seed {scenario.seed}",
        f"  load:         {_load_summary(scenario)}",
        f"  cells:        {len(cells)}" + (f" x {m.repeats} repeats" if m.repeats > 1 else ""),
        f"  measurement:  {m.min_duration_s:g}-{m.max_duration_s:g} s per single-stream cell after {m.warmup_s:g} s "
        f"warm-up, headline p{m.headline_percentile:g} (CI {m.confidence:g})",
        f"  time:         at most ~{budget_s / 60:.1f} min measuring, plus preparing each cell; "
        f"timeout {scenario.limits.timeout_s:g} s per cell",
        f"  fingerprint:  {scenario.fingerprint()[:16]}",
    ]
    return "\n".join(lines)
