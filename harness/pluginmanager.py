"""The plugin manager factory and the registries it fills."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import pluggy

from harness import hookspecs
from harness.api import Backend, Model
from harness.errors import PluginError
from harness.registry import Registry

DISABLE_AUTOLOAD_ENV = "BENCH_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "BENCH_PLUGINS"
TRACE_ENV = "BENCH_TRACE_PLUGINS"


def autoload_enabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")


def explicit_plugins(extra: Sequence[str] = ()) -> list[str]:
    """Module names from ``BENCH_PLUGINS`` (comma-separated) followed by ``extra``, without repeats."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    return list(dict.fromkeys([*names, *extra]))


def get_plugin_manager(plugins: Sequence[str] = (), *, autoload: bool | None = None) -> pluggy.PluginManager:
    """A plugin manager with the ``bench`` hookspecs, entry points loaded unless disabled,
    and every module of ``BENCH_PLUGINS`` and ``plugins`` registered."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = autoload_enabled()
    if autoload:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as exc:  # a broken third-party plugin: say which
            msg = f"could not load a plugin of the '{hookspecs.PROJECT}' entry-point group: {exc!r}"
            raise PluginError(msg) from exc
    for name in explicit_plugins(plugins):
        if pm.get_plugin(name) is not None:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            msg = f"plugin module '{name}' cannot be imported: {exc} (check -p / {PLUGINS_ENV})"
            raise PluginError(msg) from exc
        if pm.is_registered(module):
            continue
        pm.register(module, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"invalid plugin: {exc}") from exc
    if os.environ.get(TRACE_ENV, "") not in ("", "0"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


@dataclass(frozen=True)
class Registries:
    backends: Registry[Backend]
    models: Registry[Model]


def _plugin_name(pm: pluggy.PluginManager, impl: pluggy.HookImpl) -> str:
    return pm.get_name(impl.plugin) or impl.plugin_name


def load_registries(pm: pluggy.PluginManager) -> Registries:
    """Call the registration hooks of every plugin, each with a ``register`` bound to its name."""
    backends: Registry[Backend] = Registry("backend", Backend)
    models: Registry[Model] = Registry("model", Model)
    for hook_name, registry in (("bench_register_backends", backends), ("bench_register_models", models)):
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            register = partial(registry.register, plugin=_plugin_name(pm, impl))
            impl.function(register=register)
    return Registries(backends=backends, models=models)


def registries(plugins: Sequence[str] = (), *, autoload: bool | None = None) -> Registries:
    """Shortcut: the registries of a fresh plugin manager."""
    return load_registries(get_plugin_manager(plugins, autoload=autoload))
