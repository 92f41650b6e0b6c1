"""The whole plugin contract of bench (pluggy project name ``bench``).

A plugin is a module (or object) with functions named like the hooks below, decorated with
``harness.hookimpl``, registered through the ``bench`` entry-point group or an explicit plugin list
(``bench -p MODULE`` / ``BENCH_PLUGINS=MODULE,...``). The built-in plugins use the same route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from harness.api import Backend, Model

PROJECT = "bench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RegisterBackend(Protocol):
    def __call__(self, cls: type[Backend]) -> type[Backend]: ...


class RegisterModel(Protocol):
    def __call__(self, cls: type[Model]) -> type[Model]: ...


@hookspec
def bench_register_backends(register: RegisterBackend) -> None:
    """Register backend classes: call ``register(cls)`` once per :class:`harness.api.Backend` subclass.

    Called whenever the registries are built (in the CLI, and once in every worker).
    Must not import the runtime itself: keep heavy imports inside ``Backend.prepare``.
    A name already registered by another plugin is an error naming both plugins.
    """


@hookspec
def bench_register_models(register: RegisterModel) -> None:
    """Register model classes: call ``register(cls)`` once per :class:`harness.api.Model` subclass.

    Called whenever the registries are built. Must not build weights or import torch:
    that happens in ``Model.build_torch`` inside the worker.
    """
