"""The plugin manager factory and the registries it fills.

A plugin's mistakes are reported to its author in one line each, naming the plugin and its module:
an entry point that cannot be imported or a registration hook that raises leaves that plugin out
(the others still load, :attr:`Registries.failures` says why); a function named like a hook but
not marked ``@hookimpl`` gets a warning on stderr.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from harness import hookspecs
from harness.api import Backend, FileShorthand, Model
from harness.errors import PluginError
from harness.names import NAME_RULE, valid_name
from harness.registry import Registry, exception_line

DISABLE_AUTOLOAD_ENV = "BENCH_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "BENCH_PLUGINS"
TRACE_ENV = "BENCH_TRACE_PLUGINS"
#: the registration hooks, in the order they are called
HOOKS = ("bench_register_backends", "bench_register_models")

#: (module, function) pairs already warned about: the CLI builds the registries more than once
_warned: set[tuple[str, str]] = set()


def autoload_enabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")


def explicit_plugins(extra: Sequence[str] = ()) -> list[str]:
    """Module names from ``BENCH_PLUGINS`` (comma-separated) followed by ``extra``, without repeats."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    return list(dict.fromkeys([*names, *extra]))


@dataclass(frozen=True)
class PluginFailure:
    """A plugin left out: its name, its module and what went wrong, in one line."""

    plugin: str
    module: str
    message: str

    def __str__(self) -> str:
        where = f" ({self.module})" if self.module and self.module != self.plugin else ""
        return f"plugin '{self.plugin}'{where} failed and was left out: {self.message}"


def _warn(message: str) -> None:
    sys.stderr.write(f"bench: warning: {message}\n")


def _module_name(plugin: object) -> str:
    return str(getattr(plugin, "__name__", None) or type(plugin).__module__)


class BenchPluginManager(pluggy.PluginManager):
    """pluggy's manager with the plugins that could not be loaded kept in :attr:`failures`, and a
    warning for every function named like a hook that pluggy would skip for want of ``@hookimpl``."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.failures: list[PluginFailure] = []

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("bench_"):
            self._warn_unmarked(plugin, name)
        return opts

    @staticmethod
    def _warn_unmarked(plugin: Any, name: str) -> None:
        value = inspect.getattr_static(plugin, name, None)
        if isinstance(value, classmethod | staticmethod):
            value = value.__func__
        if not inspect.isfunction(value):
            return
        module = _module_name(plugin)
        if inspect.ismodule(plugin) and value.__module__ != module:
            return  # imported from elsewhere (a hookspec, a helper): not this plugin's implementation
        if (module, name) in _warned:
            return
        _warned.add((module, name))
        known = name in HOOKS
        what = "the hook" if known else f"a hook (there is no hook of that name; the hooks: {', '.join(HOOKS)})"
        _warn(
            f"plugin module {module}: function {name} is named like {what} but has no @hookimpl, so bench never "
            "calls it; decorate it with @hookimpl (from harness.api import hookimpl)"
        )

    def load_entrypoints(self) -> None:
        """Register every module of the ``bench`` entry-point group; one that cannot be imported is
        a :class:`PluginFailure` and the others still load (pluggy's loader stops at the first)."""
        for dist in list(importlib.metadata.distributions()):
            for ep in dist.entry_points:
                if ep.group != hookspecs.PROJECT or self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                    continue
                try:
                    plugin = ep.load()
                except Exception as exc:
                    self.failures.append(PluginFailure(ep.name, ep.value, f"cannot be imported: {exception_line(exc)}"))
                    continue
                self._register(plugin, ep.name)

    def _register(self, plugin: object, name: str) -> None:
        if self.is_registered(plugin):
            return
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # a hook implementation pluggy cannot call
            raise PluginError(f"invalid plugin '{name}' ({_module_name(plugin)}): {exc}") from exc


def get_plugin_manager(
    plugins: Sequence[str] = (), *, autoload: bool | None = None, strict: bool = True
) -> BenchPluginManager:
    """A plugin manager with the ``bench`` hookspecs, entry points loaded unless disabled,
    and every module of ``BENCH_PLUGINS`` and ``plugins`` registered. A module that cannot be
    imported (whatever its import raises) is a :class:`PluginError`, or with ``strict=False`` a
    :class:`PluginFailure` in ``failures``, as an entry point's is."""
    pm = BenchPluginManager()
    pm.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = autoload_enabled()
    if autoload:
        pm.load_entrypoints()
    for name in explicit_plugins(plugins):
        if pm.get_plugin(name) is not None:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # a syntax error or a raise in the module, or a name that is no module's
            if not strict:
                pm.failures.append(PluginFailure(name, name, f"cannot be imported: {exception_line(exc)} "
                                                             f"(check -p / {PLUGINS_ENV})"))  # fmt: skip
                continue
            msg = f"plugin module '{name}' cannot be imported: {exception_line(exc)} (check -p / {PLUGINS_ENV})"
            raise PluginError(msg) from exc
        pm._register(module, name)
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
    #: plugins left out (not importable, or a registration hook raised), each with why
    failures: tuple[PluginFailure, ...] = field(default=())

    def runtime_packages(self) -> tuple[str, ...]:
        """The distributions the registered backends declare (``Backend.packages``), in name order,
        each once: recorded in a run's manifest, shown by ``bench doctor``, compared by ``bench compare``."""
        return tuple(dict.fromkeys(package for cls in self.backends.classes() for package in cls.packages))

    def file_shorthands(self) -> dict[str, tuple[str, FileShorthand]]:
        """Each scenario shorthand a registered model declares (``Model.file_shorthand``): its key
        -> (the model's name, the declaration)."""
        return {
            cls.file_shorthand.key: (cls.name, cls.file_shorthand)
            for cls in self.models.classes()
            if cls.file_shorthand is not None
        }

    def check(self) -> None:
        """Raise :class:`PluginError` naming every plugin that was left out (one line each)."""
        if self.failures:
            raise PluginError("\n".join(str(failure) for failure in self.failures))


class _Register:
    """The ``register`` a plugin's hook receives: the registry's, bound to the plugin's name (its
    repr names both, so a trace of hook calls says whose call it was)."""

    def __init__(self, registry: Registry[Any], plugin: str) -> None:
        self.registry = registry
        self.plugin = plugin

    def __call__(self, cls: type[Any]) -> type[Any]:
        if isinstance(cls, type) and issubclass(cls, Model) and cls.file_shorthand is not None:
            _check_shorthand(self.registry, cls, self.plugin)
        return self.registry.register(cls, plugin=self.plugin)

    def __repr__(self) -> str:
        return f"<register a {self.registry.kind} for plugin '{self.plugin}'>"


#: scenario keys of ``model:`` that a shorthand, or an option beside it, cannot take: the long
#: form's own, and ``inputs`` (the inputs file, in every form)
_RESERVED_KEYS = ("name", "options", "inputs")


def _check_shorthand(models: Registry[Any], cls: type[Model], plugin: str) -> None:
    """A model's shorthand must be usable in a scenario and its own: two models under one key
    would make ``model: {KEY: FILE}`` ambiguous."""
    shorthand = cls.file_shorthand
    if shorthand is None:
        return
    where = f"plugin '{plugin}' registered model {cls.__qualname__} with the shorthand key {shorthand.key!r}"
    if not valid_name(shorthand.key) or shorthand.key in _RESERVED_KEYS:
        msg = f"{where}, which a scenario cannot use: {NAME_RULE}, and not {' or '.join(_RESERVED_KEYS)}"
        raise PluginError(msg)
    if shorthand.path_option in shorthand.options:
        msg = f"{where}, whose path option {shorthand.path_option!r} is also among the options beside the key"
        raise PluginError(msg)
    taken = [option for option in shorthand.options if option in _RESERVED_KEYS]
    if taken:
        msg = f"{where}, whose option {taken[0]!r} beside the key is a key of model: itself; rename the option"
        raise PluginError(msg)
    for other in models.classes():
        if other is not cls and other.file_shorthand is not None and other.file_shorthand.key == shorthand.key:
            msg = (
                f"{where}, already the shorthand of model '{other.name}' (plugin '{models.owner(other.name)}'); "
                "rename one or disable a plugin"
            )
            raise PluginError(msg)


def _plugin_name(pm: pluggy.PluginManager, impl: pluggy.HookImpl) -> str:
    return pm.get_name(impl.plugin) or impl.plugin_name


def load_registries(pm: BenchPluginManager) -> Registries:
    """Call the registration hooks of every plugin, each with a ``register`` bound to its name.

    Each plugin's hook is called on its own, through pluggy (so ``BENCH_TRACE_PLUGINS`` traces it);
    a plugin whose hook raises is left out of both registries and kept in ``failures``."""
    backends: Registry[Backend] = Registry("backend", Backend)
    models: Registry[Model] = Registry("model", Model)
    failures = list(pm.failures)
    failed: set[str] = set()
    steps: list[tuple[str, Registry[Any]]] = [(HOOKS[0], backends), (HOOKS[1], models)]
    for hook_name, registry in steps:
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin = _plugin_name(pm, impl)
            if plugin in failed:
                continue
            others = [p for p in pm.get_plugins() if p is not impl.plugin]
            try:
                pm.subset_hook_caller(hook_name, remove_plugins=others)(register=_Register(registry, plugin))
            except PluginError as exc:  # already names the plugin (a taken or unusable name, ...)
                failures.append(PluginFailure(plugin, _module_name(impl.plugin), str(exc)))
                failed.add(plugin)
            except Exception as exc:
                failures.append(
                    PluginFailure(plugin, _module_name(impl.plugin), f"{hook_name} raised {exception_line(exc)}")
                )
                failed.add(plugin)
    for plugin in failed:  # what it registered before failing goes too: a plugin loads whole or not at all
        backends.forget_plugin(plugin)
        models.forget_plugin(plugin)
    return Registries(backends=backends, models=models, failures=tuple(failures))


def registries(plugins: Sequence[str] = (), *, autoload: bool | None = None, strict: bool = True) -> Registries:
    """Shortcut: the registries of a fresh plugin manager. ``strict`` (the default) raises
    :class:`PluginError` when a plugin was left out; otherwise see :attr:`Registries.failures`."""
    regs = load_registries(get_plugin_manager(plugins, autoload=autoload, strict=strict))
    if strict:
        regs.check()
    return regs


@functools.cache
def _default_registries(plugins: tuple[str, ...], autoload: bool) -> Registries:
    return registries(plugins, autoload=autoload, strict=False)


def default_registries() -> Registries:
    """The registries of the plugins a command loads by default (entry points unless disabled, and
    ``BENCH_PLUGINS``), built once per process for those settings: what validating a scenario asks
    when no registries were given (a plugin that fails to load is left out, not raised)."""
    return _default_registries(tuple(explicit_plugins()), autoload_enabled())
