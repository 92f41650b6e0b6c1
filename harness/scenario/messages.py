"""Scenario errors as one line each: ``file:line: key.path: message``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.errors import ScenarioError

Loc = tuple[str | int, ...]


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
