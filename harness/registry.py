"""Host-owned registries that plugins add their backends and models to, and the guarded calls of a
backend's cheap class methods (a plugin's bug there is a one-line reason, never a traceback)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Generic, TypeVar

from harness.api import Backend, Model, Support
from harness.errors import PluginError
from harness.names import NAME_RULE, valid_name

if TYPE_CHECKING:
    from harness.cells import Cell

T = TypeVar("T", Backend, Model)


def exception_line(exc: BaseException) -> str:
    """``Type: first line of the message``: an exception as one line of a message."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class Registry(Generic[T]):
    """Names to plugin classes. The host owns the names: a second class under a taken name is an error.

    A plugin receives :meth:`register` (bound to its own name) as the hook's ``register`` argument.
    """

    def __init__(self, kind: str, base: type) -> None:
        self.kind = kind
        #: the class every registered class must derive from (abstract: hence not ``type[T]``)
        self._base: type = base
        self._classes: dict[str, type[T]] = {}
        self._owners: dict[str, str] = {}

    def register(self, cls: type[T], *, plugin: str = "<unknown>") -> type[T]:
        if not (isinstance(cls, type) and issubclass(cls, self._base)):
            base = self._base.__qualname__
            msg = f"plugin '{plugin}' registered {cls!r} as a {self.kind}, but it is not a subclass of {base}"
            raise PluginError(msg)
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            msg = f"plugin '{plugin}' registered {self.kind} class {cls.__qualname__} without a 'name'"
            raise PluginError(msg)
        if not valid_name(name):  # a scenario could never name it: refuse it here, where the author looks
            msg = (
                f"plugin '{plugin}' registered {self.kind} class {cls.__qualname__} as {name!r}, a name no scenario "
                f"can use: {NAME_RULE}; rename it"
            )
            raise PluginError(msg)
        if name in self._classes and self._classes[name] is not cls:
            msg = (
                f"{self.kind} name '{name}' is registered twice: by plugin '{self._owners[name]}' "
                f"({self._classes[name].__module__}.{self._classes[name].__qualname__}) and by plugin '{plugin}' "
                f"({cls.__module__}.{cls.__qualname__}); rename one or disable a plugin"
            )
            raise PluginError(msg)
        self._classes[name] = cls
        self._owners[name] = plugin
        return cls

    def forget_plugin(self, plugin: str) -> None:
        """Drop every class ``plugin`` registered (a plugin whose hook failed half-way is left out whole)."""
        for name in [name for name, owner in self._owners.items() if owner == plugin]:
            del self._classes[name]
            del self._owners[name]

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise PluginError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._classes, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(self._classes)) or "none"
        return f"unknown {self.kind} '{name}' (known: {known}){hint}"

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._classes)

    def classes(self) -> list[type[T]]:
        """The registered classes in name order."""
        return [self._classes[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __len__(self) -> int:
        return len(self._classes)


def safe_availability(cls: type[Backend]) -> Support:
    """``cls.availability()``; a backend whose check raises is unavailable, the exception the reason."""
    try:
        return cls.availability()
    except Exception as exc:  # a plugin's bug: one line for its author, the other backends unaffected
        return Support.no(f"backend '{cls.name}': availability() raised {exception_line(exc)}")


def safe_supports(cls: type[Backend], cell: Cell) -> Support:
    """``cls.supports(cell)`` after :func:`safe_availability`; one that raises is a skip with the exception
    as its reason."""
    available = safe_availability(cls)
    if not available.ok:
        return available
    from harness.environment import cuda_device_problem

    try:
        support = cls.supports(cell)
    except Exception as exc:  # a plugin's bug: this cell is skipped with the reason, the sweep goes on
        return Support.no(f"backend '{cls.name}': supports() raised {exception_line(exc)}")
    if not support.ok:  # the backend's own reason first (often true of any machine), then this machine's GPU
        return support
    if cell.device in cls.devices or cell.device_kind in cls.devices:
        gpu = cuda_device_problem(cell.device)
        if gpu is not None:
            return Support.no(gpu)
    return support
