"""Host-owned registries that plugins add their backends and models to."""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from harness.api import Backend, Model
from harness.errors import PluginError

T = TypeVar("T", Backend, Model)


class Registry(Generic[T]):
    """Names to plugin classes. The host owns the names: a second class under a taken name is an error.

    A plugin receives :meth:`register` (bound to its own name) as the hook's ``register`` argument.
    """

    def __init__(self, kind: str, base: type[T]) -> None:
        self.kind = kind
        self._base = base
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

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __len__(self) -> int:
        return len(self._classes)
