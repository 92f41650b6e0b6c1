from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from harness.api import Backend, Model
from harness.errors import PluginError
from harness.pluginmanager import get_plugin_manager, load_registries, registries


def test_builtins_come_through_the_entry_point_group() -> None:
    pm = get_plugin_manager(autoload=True)
    regs = load_registries(pm)
    assert "pytorch" in regs.backends
    assert "dlrm-small" in regs.models
    assert regs.backends.owner("pytorch") == "pytorch"  # the entry-point name, as for any plugin


def test_disable_autoload_env_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("BENCH_PLUGINS", raising=False)
    regs = registries()
    assert len(regs.backends) == 0
    assert len(regs.models) == 0


def test_explicit_list_with_autoload_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("BENCH_PLUGINS", "plugins.fake")
    regs = registries(["plugins.torch_backend"])
    assert regs.backends.names() == ["fake", "pytorch"]
    assert regs.models.names() == ["toy"]


def test_unknown_plugin_module_is_a_clear_error() -> None:
    with pytest.raises(PluginError, match="plugin module 'no_such_plugin_mod' cannot be imported"):
        get_plugin_manager(["no_such_plugin_mod"], autoload=False)


def _plugin_module(tmp_path: Path, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


@pytest.mark.parametrize(
    ("body", "says"),
    [('raise RuntimeError("no licence server")', "RuntimeError: no licence server"),
     ("def broken(:\n", "SyntaxError: ")],
)  # fmt: skip
def test_a_plugin_whose_import_raises_anything_is_named_and_the_others_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, says: str
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = _plugin_module(tmp_path, "raising_plugin_mod", body)
    with pytest.raises(PluginError, match=f"plugin module '{mod}' cannot be imported: {says}"):
        get_plugin_manager([mod], autoload=False)
    regs = registries(["plugins.fake", mod], autoload=False, strict=False)  # what bench doctor and list show
    assert regs.backends.names() == ["fake"]
    (failure,) = regs.failures
    assert failure.plugin == mod and f"cannot be imported: {says}" in str(failure)
    with pytest.raises(PluginError, match=r"plugin module '\.\./x' cannot be imported: TypeError"):
        registries(["../x"], autoload=False)  # a path, not a module name


DUPLICATE = """
from harness import hookimpl
from harness.api import Backend

class Other(Backend):
    name = "pytorch"
    def prepare(self, model, cell, workdir):
        raise NotImplementedError

@hookimpl
def bench_register_backends(register):
    register(Other)
"""


def test_duplicate_name_names_both_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = _plugin_module(tmp_path, "dup_plugin_mod", DUPLICATE)
    with pytest.raises(PluginError) as info:
        registries([mod], autoload=True)
    message = str(info.value)
    assert "backend name 'pytorch' is registered twice" in message
    assert "plugin 'pytorch'" in message
    assert f"plugin '{mod}'" in message
    sys.modules.pop(mod, None)


NOT_A_BACKEND = """
from harness import hookimpl

class Thing:
    name = "thing"

@hookimpl
def bench_register_backends(register):
    register(Thing)
"""


def test_registering_a_non_backend_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = _plugin_module(tmp_path, "bad_plugin_mod", NOT_A_BACKEND)
    with pytest.raises(PluginError, match="not a subclass of Backend"):
        registries([mod], autoload=False)
    sys.modules.pop(mod, None)


TYPO_HOOK = """
from harness import hookimpl

@hookimpl
def bench_register_backend(register):
    pass
"""


def test_misspelt_hook_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = _plugin_module(tmp_path, "typo_plugin_mod", TYPO_HOOK)
    with pytest.raises(PluginError, match="bench_register_backend"):
        get_plugin_manager([mod], autoload=False)
    sys.modules.pop(mod, None)


def test_unknown_name_suggests_the_nearest() -> None:
    regs = registries(autoload=True)
    with pytest.raises(PluginError, match="did you mean 'pytorch'"):
        regs.backends.get("pytorh")


def test_registry_returns_classes_of_the_right_base() -> None:
    regs = registries(autoload=True)
    for name in regs.backends.names():
        assert issubclass(regs.backends.get(name), Backend)
    for name in regs.models.names():
        assert issubclass(regs.models.get(name), Model)


def test_trace_env_writes_hook_calls(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BENCH_TRACE_PLUGINS", "1")
    pm = get_plugin_manager(autoload=True)
    pm.hook.bench_register_models(register=lambda cls: cls)
    assert "bench_register_models" in capsys.readouterr().err
