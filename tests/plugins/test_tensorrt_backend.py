"""The TensorRT backend where TensorRT cannot be installed (its libraries come from NVIDIA's index):
its declarations, the reasons it gives, its checks of cells and options, and how it reads an engine's
precision from the inspector. Engines build and run in benchmarks/gpu_check.py on a GPU machine."""

from __future__ import annotations

import json
from importlib.util import find_spec

import pytest

from harness.api import Support
from harness.cells import Cell
from harness.errors import ScenarioError
from harness.scenario import load_scenario_text
from plugins.tensorrt_backend import TensorRTBackend, executed_precision, layer_precisions

NO_TENSORRT = find_spec("tensorrt") is None


@pytest.mark.skipif(not NO_TENSORRT, reason="tensorrt is installed here")
def test_without_tensorrt_the_reason_names_the_extra_and_nvidias_index() -> None:
    found = TensorRTBackend.availability()
    assert not found.ok
    assert "tensorrt" in found.reason
    assert "https://pypi.nvidia.com" in found.reason
    cell = Cell("dlrm-small", "tensorrt", "cuda", "fp16", 8, 1)
    assert TensorRTBackend.supports(cell).reason == found.reason


def test_cells_and_options_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TensorRTBackend, "availability", classmethod(lambda cls: Support.yes()))
    assert TensorRTBackend.supports(Cell("dlrm-small", "tensorrt", "cuda", "fp16", 8, 1)).ok
    assert not TensorRTBackend.supports(Cell("dlrm-small", "tensorrt", "cpu", "fp32", 8, 1)).ok
    odd = Cell("dlrm-small", "tensorrt", "cuda", "fp16", 8, 1, backend_options={"calibration_samples": 64})
    assert "only with precision int8" in TensorRTBackend.supports(odd).reason
    int8 = Cell("dlrm-small", "tensorrt", "cuda", "int8", 8, 1, backend_options={"calibration_samples": 64})
    assert TensorRTBackend.supports(int8).ok == (find_spec("onnxruntime") is not None)


def test_an_optimisation_level_past_5_is_a_scenario_error() -> None:
    text = (
        "name: t\nmodel: dlrm-small\nbackends: [{name: tensorrt, options: {opt_level: 6}}]\n"
        "devices: [cuda]\nbatch_sizes: [1]\n"
    )
    from harness import planning
    from harness.pluginmanager import registries

    scenario = load_scenario_text(text, source="t.yaml")
    with pytest.raises(ScenarioError, match="opt_level must be at most 5, got 6"):
        planning.check_scenario(scenario, registries(autoload=True))


def test_the_engines_precision_is_read_from_its_layers() -> None:
    engine = {
        "Layers": [
            {"Name": "gemm1", "Outputs": [{"Name": "a", "Format/Datatype": "Row major linear FP16 format"}]},
            {"Name": "gemm2", "Outputs": [{"Name": "b", "Format/Datatype": "Half"}]},
            {"Name": "q", "Outputs": [{"Name": "c", "Format/Datatype": "Int8"}]},
            {"Name": "cast", "Outputs": [{"Name": "d", "Format/Datatype": "Float"}]},
            "a layer given only by name",
        ]
    }
    counts = layer_precisions(json.dumps(engine))
    assert counts == {"fp16": 1, "int8": 1, "fp32": 1}  # "FP16 format" is not TensorRT's word: Half is
    assert executed_precision({"fp16": 5, "fp32": 2, "int8": 1}) == "fp16"
    assert executed_precision({"fp16": 2, "fp32": 2}) == "fp16"  # a tie goes to the lower precision
    assert executed_precision({}) is None
