"""The scenario schema's building blocks: precisions, loads, names, devices and the annotated field
types and validators the sections share."""

from __future__ import annotations

import math
import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic_core import PydanticCustomError

from harness.names import NAME_RULE, valid_name
from harness.scenario.messages import _kind, _show

Precision = Literal["fp32", "fp16", "bf16", "int8"]
#: the precisions a scenario may ask for
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
LoadName = Literal["single_stream", "offline", "server", "multi_stream"]
#: the load scenarios, MLPerf's four: single_stream runs on bench's own loop, the others on LoadGen
LOADS: tuple[str, ...] = typing.get_args(LoadName)

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
    if not valid_name(value):
        raise PydanticCustomError("scenario_name", NAME_RULE + " (got {value})", {"value": _show(value)})
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
