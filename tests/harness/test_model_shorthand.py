"""``model: {KEY: FILE}`` comes from the model plugins (``Model.file_shorthand``): a plugin's model
gets a shorthand like the built-in file models, and a scenario that uses none loads no plugin."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import bench
from harness import pluginmanager
from harness.errors import PluginError, ScenarioError
from harness.pluginmanager import Registries, registries
from harness.scenario import ModelRef, load_scenario, load_scenario_text

NPY_MODEL = """
from harness.api import FileShorthand, Model, hookimpl


class NpyFile(Model):
    name = "npy-file"
    description = "a weights file of a plugin's own format"
    input_names = ("x",)
    output_names = ("y",)
    file_shorthand = FileShorthand("npy", what="NumPy weights", options=("scale",))

    def __init__(self, path=None, scale=1):
        self.path, self.scale = path, scale

    def build_torch(self):
        raise NotImplementedError

    def example_inputs(self, batch_size, seed=0):
        raise NotImplementedError


@hookimpl
def bench_register_models(register):
    register(NpyFile)
"""

SCENARIO = "name: t\nmodel: {model}\nbackends: [onnxruntime]\nbatch_sizes: [1]\n"


@pytest.fixture
def npy_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "npy_model_plugin.py").write_text(NPY_MODEL)
    (tmp_path / "w.npy").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield "npy_model_plugin"
    sys.modules.pop("npy_model_plugin", None)


def test_a_plugin_model_declares_its_own_shorthand(tmp_path: Path, npy_plugin: str) -> None:
    regs = registries([npy_plugin], autoload=True)
    scenario = load_scenario_text(SCENARIO.format(model="{npy: w.npy, scale: 2}"), registries=regs)
    assert scenario.model == ModelRef(name="npy-file", options={"scale": 2, "path": str(tmp_path / "w.npy")})
    long = load_scenario_text(SCENARIO.format(model="{name: npy-file, options: {path: w.npy}}"), registries=regs)
    assert long.model.options == {"path": str(tmp_path / "w.npy")}  # the long form's path resolved alike
    with pytest.raises(ScenarioError, match=r"^<string>:2: model\.scal: unknown key 'scal'; did you mean 'scale'\?"):
        load_scenario_text(SCENARIO.format(model="{npy: w.npy, scal: 2}"), registries=regs)
    with pytest.raises(ScenarioError, match=r"model\.npy: no such file .*gone\.npy"):
        load_scenario_text(SCENARIO.format(model="{npy: gone.npy}"), registries=regs)
    with pytest.raises(ScenarioError, match=r"model\.npy: Input should be the path of the NumPy weights file"):
        load_scenario_text(SCENARIO.format(model="{npy: 3}"), registries=regs)
    # the built-in ones come from their plugin the same way, beside it
    assert load_scenario_text(SCENARIO.format(model="{onnx: w.npy}"), registries=regs).model.name == "onnx-file"
    without = registries(autoload=True)
    with pytest.raises(ScenarioError, match=r"model\.npy: unknown key 'npy'"):
        load_scenario_text(SCENARIO.format(model="{npy: w.npy}"), registries=without)


def test_cli_validates_a_plugin_shorthand(tmp_path: Path, npy_plugin: str) -> None:
    path = tmp_path / "npy.yaml"
    path.write_text(SCENARIO.format(model="{npy: w.npy, scale: 3}"))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    checked = bench("-p", npy_plugin, "validate", str(path), cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr
    assert f"{path}: valid" in checked.stdout
    unknown = bench("validate", str(path), cwd=tmp_path, env=env)  # without the plugin: no such key
    assert unknown.returncode == 2 and "model.npy: unknown key 'npy'" in unknown.stderr


def test_a_scenario_without_a_shorthand_loads_no_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Registries:
        raise AssertionError("plugins loaded for a scenario that names its model")

    monkeypatch.setattr(pluginmanager, "default_registries", refuse)
    scenario = load_scenario_text(SCENARIO.format(model="dlrm-small"))
    assert scenario.model == ModelRef(name="dlrm-small")
    assert load_scenario_text(SCENARIO.format(model="{name: dlrm-small}"), registries=refuse).model.name == "dlrm-small"


def test_without_registries_the_default_plugins_give_the_shorthands(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(model="{onnx: m.onnx}"))
    assert load_scenario(path).model == ModelRef(name="onnx-file", options={"path": str(tmp_path / "m.onnx")})


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("onnx", "already the shorthand of model 'onnx-file' (plugin 'files')"),
        ("name", "which a scenario cannot use"),
        ("my key", "which a scenario cannot use"),
    ],
)
def test_a_shorthand_a_scenario_cannot_use_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, fragment: str
) -> None:
    module = f"clash_{abs(hash(key))}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(NPY_MODEL).replace('FileShorthand("npy"', f"FileShorthand({key!r}")
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        registries([module], autoload=True)
    assert f"registered model NpyFile with the shorthand key {key!r}, " in str(info.value)
    assert fragment in str(info.value)
    sys.modules.pop(module, None)
