"""A plugin's mistakes reach its author as one line naming the plugin, its module and the exception;
the other plugins keep working wherever the broken one can be left out."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import bench, fake_scenario
from harness.api import Cell
from harness.errors import PluginError
from harness.planning import plan
from harness.pluginmanager import get_plugin_manager, registries

PluginModule = Callable[[str, str], str]


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginModule]:
    """Writes an importable plugin module into ``tmp_path`` and forgets it afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, body: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The CLI in a subprocess finds the modules written into ``tmp_path``."""
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


RAISING_HOOK = """
from harness.api import Backend, hookimpl

class HalfWay(Backend):
    name = "half-way"
    def prepare(self, model, cell, workdir):
        raise NotImplementedError

@hookimpl
def bench_register_backends(register):
    register(HalfWay)
    raise RuntimeError("settings file missing\\nsecond line of detail")
"""


def test_a_raising_registration_hook_leaves_that_plugin_out(plugin_module: PluginModule) -> None:
    mod = plugin_module("raising_hook_mod", RAISING_HOOK)
    regs = registries(["plugins.fake", mod], autoload=False, strict=False)
    assert regs.backends.names() == ["fake"]  # what it registered before raising is gone too
    assert regs.models.names() == ["toy"]
    (failure,) = regs.failures
    assert failure.plugin == mod
    line = str(failure)
    assert "bench_register_backends raised RuntimeError: settings file missing" in line
    assert "\n" not in line
    with pytest.raises(PluginError, match=f"plugin '{mod}' failed and was left out: bench_register_backends raised"):
        registries(["plugins.fake", mod], autoload=False)


def test_cli_lists_the_other_plugins_and_names_the_failed_one(tmp_path: Path, plugin_module: PluginModule) -> None:
    mod = plugin_module("raising_hook_cli_mod", RAISING_HOOK)
    env = {**cli_env(tmp_path), "BENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    listed = bench("-p", "plugins.fake", "-p", mod, "list", "backends", env=env)
    assert listed.returncode == 2
    assert "fake" in listed.stdout and "half-way" not in listed.stdout
    assert "Traceback" not in listed.stderr
    (line,) = listed.stderr.strip().splitlines()
    assert line.startswith(f"bench: error: plugin '{mod}' failed") and "RuntimeError: settings file missing" in line

    scenario = fake_scenario(tmp_path)
    checked = bench("-p", "plugins.fake", "-p", mod, "validate", str(scenario), env=env)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert f"plugin '{mod}'" in checked.stderr and "settings file missing" in checked.stderr


def test_an_entry_point_that_cannot_be_imported_leaves_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "broken_bench_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-bench-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bench]\nbroken = no_such_module_for_bench_tests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    regs = registries(autoload=True, strict=False)
    assert "pytorch" in regs.backends and "dlrm-small" in regs.models
    (failure,) = regs.failures
    assert failure.plugin == "broken" and failure.module == "no_such_module_for_bench_tests"
    assert "cannot be imported: ModuleNotFoundError" in str(failure)


RAISING_AVAILABILITY = """
from harness.api import Backend, hookimpl

class Fragile(Backend):
    name = "fragile"

    @classmethod
    def availability(cls):
        raise OSError("cannot read /dev/fragile0")

    def prepare(self, model, cell, workdir):
        raise NotImplementedError

class Moody(Backend):
    name = "moody"

    @classmethod
    def supports(cls, cell):
        raise KeyError("batch_size")

    def prepare(self, model, cell, workdir):
        raise NotImplementedError

@hookimpl
def bench_register_backends(register):
    register(Fragile)
    register(Moody)
"""


def test_availability_or_supports_raising_is_a_reason_not_a_traceback(
    tmp_path: Path, plugin_module: PluginModule
) -> None:
    mod = plugin_module("raising_checks_mod", RAISING_AVAILABILITY)
    env = {**cli_env(tmp_path), "BENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    listed = bench("-p", "plugins.fake", "-p", mod, "list", "backends", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    (fragile,) = [line for line in lines if line.startswith("fragile")]
    assert "unavailable: backend 'fragile': availability() raised OSError: cannot read /dev/fragile0" in fragile
    assert any(line.startswith("fake") and "available" in line for line in lines)
    assert any(line.startswith("moody") for line in lines)

    regs = registries(["plugins.fake", mod], autoload=False)
    cells = [Cell("toy", name, "cpu", "fp32", 1, 1) for name in ("fragile", "moody", "fake")]
    reasons = [p.skip_reason for p in plan(cells, regs)]
    assert reasons[0] == "backend 'fragile': availability() raised OSError: cannot read /dev/fragile0"
    assert reasons[1] == "backend 'moody': supports() raised KeyError: 'batch_size'"
    assert reasons[2] is None


UNMARKED = """
from harness.api import Backend

class Lost(Backend):
    name = "lost"
    def prepare(self, model, cell, workdir):
        raise NotImplementedError

def bench_register_backends(register):
    register(Lost)

def bench_register_model(register):
    pass

def bench_helper_not_a_hook():
    pass

bench_setting = 3
"""


def test_a_function_named_like_a_hook_without_hookimpl_is_warned_about(
    plugin_module: PluginModule, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = plugin_module("unmarked_hook_mod", UNMARKED)
    regs = registries([mod], autoload=False)
    assert "lost" not in regs.backends  # pluggy does not call it: the warning says why
    err = capsys.readouterr().err
    assert (
        f"bench: warning: plugin module {mod}: function bench_register_backends is named like the hook but has no "
        "@hookimpl, so bench never calls it" in err
    )
    assert "function bench_register_model is named like a hook (there is no hook of that name" in err
    assert "bench_helper_not_a_hook" in err  # every bench_* function: the prefix is the hooks'
    assert "bench_setting" not in err
    get_plugin_manager([mod], autoload=False)  # built again (the CLI does): said once
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("kind", "base"), [("backend", "Backend"), ("model", "Model")])
def test_a_name_no_scenario_can_use_is_refused_at_registration(
    plugin_module: PluginModule, kind: str, base: str
) -> None:
    body = f"""
    from harness.api import {base}, hookimpl

    class Spaced({base}):
        name = "my {kind}[x]"

    @hookimpl
    def bench_register_{kind}s(register):
        register(Spaced)
    """
    mod = plugin_module(f"bad_name_{kind}_mod", body)
    with pytest.raises(PluginError) as info:
        registries([mod], autoload=False)
    message = str(info.value)
    assert f"registered {kind} class Spaced as 'my {kind}[x]', a name no scenario can use" in message
    assert "letters, digits, '_', '.' and '-'; rename it" in message


def test_trace_env_traces_the_registration_calls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BENCH_TRACE_PLUGINS", "1")
    registries(["plugins.fake"], autoload=False)
    err = capsys.readouterr().err
    assert "bench_register_backends" in err and "bench_register_models" in err
    assert "<register a backend for plugin 'plugins.fake'>" in err
    assert "finish bench_register_models" in err
