"""``bench export`` and a model file measured on real data: dlrm-small exported with its inputs, run
as ``model: {onnx: m.onnx, inputs: inputs.npz}`` on onnxruntime and openvino, against made-up
inputs that index past its smallest table (3 rows)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import bench, run_dirs
from harness.errors import UsageError
from harness.export import export, parse_options
from harness.pluginmanager import registries

pytest.importorskip("torch", reason="exporting dlrm-small needs torch (pip install 'bench[torch]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'bench[onnxruntime]')")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """dlrm-small's ONNX file and 16 samples of inputs, written by ``bench export``; its stdout."""
    folder = tmp_path_factory.mktemp("export")
    out = bench("export", "dlrm-small", "-o", "m.onnx", "--inputs", "inputs.npz", "--samples", "16",
                "--batch-size", "4", cwd=folder)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return folder, out.stdout


SCENARIO = """\
name: data
model: {model}
backends: {backends}
batch_sizes: [4]
threads: 1
measurement: {{min_duration_s: 0.05, max_duration_s: 0.2, warmup_s: 0.02, min_queries: 20}}
fidelity: {{samples: {samples}}}
limits: {{timeout_s: 120}}
"""


def run(folder: Path, name: str, model: str, backends: str, samples: int = 0) -> dict[str, Any]:
    """``bench run`` of a small scenario in ``folder``; the run's JSON summary, cells by backend."""
    scenario = folder / f"{name}.yaml"
    scenario.write_text(SCENARIO.format(model=model, backends=backends, samples=samples))
    out = bench("run", str(scenario), "--out", str(folder / f"results-{name}"), "--no-report", "--json")
    assert out.returncode in (0, 3), out.stderr
    return {cell["config"]["backend"]: cell for cell in json.loads(out.stdout)["cells"]}


def test_export_writes_the_model_its_inputs_and_the_tools_command_lines(exported: tuple[Path, str]) -> None:
    folder, stdout = exported
    with np.load(folder / "inputs.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["dense", "sparse"]
        dense, sparse = data["dense"], data["sparse"]
    assert dense.shape == (16, 13) and dense.dtype == np.float32 and sparse.shape == (16, 26)
    batch = np.load(folder / "inputs.sparse.npy", allow_pickle=False)
    np.testing.assert_array_equal(batch, sparse[:4])  # the batch a seed-0 cell cuts from the file
    raw = np.fromfile(folder / "inputs.dense.bin", dtype=np.float32).reshape(4, 13)
    np.testing.assert_array_equal(raw, dense[:4])
    assert "benchmark_app -m m.onnx -d CPU -hint latency -api sync -shape 'dense[4,13],sparse[4,26]' " in stdout
    assert "-i dense:inputs.dense.npy sparse:inputs.sparse.npy" in stdout
    assert "trtexec --onnx=m.onnx --shapes=dense:4x13,sparse:4x26 " in stdout
    assert "--loadInputs=dense:inputs.dense.bin,sparse:inputs.sparse.bin" in stdout
    assert "model: {onnx: m.onnx, inputs: inputs.npz}" in stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["dense", "sparse"]
    (probability,) = session.run(None, {"dense": dense, "sparse": sparse})
    assert probability.shape == (16, 1)


@pytest.mark.slow
def test_the_file_on_its_data_runs_alike_on_both_runtimes(exported: tuple[Path, str]) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'bench[openvino]')")
    folder, _ = exported
    cells = run(folder, "real", "{onnx: m.onnx, inputs: inputs.npz}", "[onnxruntime, openvino]", samples=16)
    for backend in ("onnxruntime", "openvino"):
        cell = cells[backend]
        assert cell["status"] == "ok", cell.get("reason")
        assert cell["fidelity_ok"] is True and cell["cosine"] > 0.9999 and cell["fidelity_samples"] == 16
        assert cell["fidelity_reference"].startswith("onnxruntime ")  # the file has no PyTorch form
        assert cell["config"]["input_data"] == str(folder / "inputs.npz")
        assert cell["info"]["model"]["input_data"] == {"file": str(folder / "inputs.npz"), "samples": 16}
    (run_dir,) = run_dirs(folder / "results-real")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert str(folder / "inputs.npz") in manifest["inputs"]  # hashed like the model file


@pytest.mark.slow
def test_made_up_inputs_fail_with_the_hint_and_int_high_per_input_fixes_them(exported: tuple[Path, str]) -> None:
    folder, _ = exported
    failed = run(folder, "made-up", "{onnx: m.onnx}", "[onnxruntime]")["onnxruntime"]
    assert failed["status"] == "failed"
    assert "indices element out of data bounds" in failed["reason"]
    assert failed["reason"].endswith(
        "(integer inputs are drawn from [0, int_high) = [0, 100): give int_high per input "
        "(int_high: {sparse: ROWS}), or real data with inputs: FILE.npz)"
    )
    fixed = run(folder, "int-high", "{onnx: m.onnx, int_high: {sparse: 3}}", "[onnxruntime]")["onnxruntime"]
    assert fixed["status"] == "ok", fixed.get("reason")
    assert fixed["info"]["model"]["int_high"] == {"sparse": 3}


@pytest.mark.slow
def test_benchmark_app_runs_the_printed_command(exported: tuple[Path, str]) -> None:
    tool = Path(sys.executable).parent / "benchmark_app"
    if not tool.exists():
        pytest.skip("benchmark_app is not installed (it comes with openvino)")
    folder, stdout = exported
    line = next(line for line in stdout.splitlines() if line.strip().startswith("benchmark_app:"))
    argv = shlex.split(line.split(":", 1)[1])
    out = subprocess.run([str(tool), *argv[1:], "-niter", "20"], cwd=folder,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Throughput" in out.stdout


def test_export_of_a_model_file_copies_it_with_its_external_data(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    source = tmp_path / "src"
    source.mkdir()
    module = torch.nn.Linear(4, 2).eval()
    plain = source / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(module, (torch.randn(1, 4),), str(plain), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)  # fmt: skip
    onnx.save_model(onnx.load(str(plain)), str(source / "m.onnx"), save_as_external_data=True,
                    location="m.weights", size_threshold=0)  # fmt: skip
    regs = registries()
    done = export(regs, str(source / "m.onnx"), parse_options(["float_range=[0, 1]"]), tmp_path / "out" / "c.onnx",
                  tmp_path / "out" / "c.inputs.npz", batch_size=2, samples=3)  # fmt: skip
    assert done.companions == (tmp_path / "out" / "m.weights",)
    assert (tmp_path / "out" / "m.weights").read_bytes() == (source / "m.weights").read_bytes()
    with np.load(done.inputs, allow_pickle=False) as data:
        assert data["x"].shape == (3, 4) and data["x"].min() >= 0 and data["x"].max() < 1
    assert done.dynamic == ("x",) and done.batch_files["x"][2] == (2, 4)


@pytest.mark.parametrize(
    ("spec", "options", "out", "message"),
    [
        (
            "no-such-model",
            [],
            "m.onnx",
            r"no-such-model: no model of that name and no such file \(models: .*dlrm-small",
        ),
        ("dlrm-small", [], "m.xml", r"-o m.xml: give a file name ending in \.onnx"),
        ("dlrm-small", ["x=1"], "m.onnx", r"model 'dlrm-small': model 'dlrm-small' takes no options"),
        ("DATA", [], "m.onnx", r"no model reads files of this kind \(files bench reads end in \.onnx, \.pt2\)"),
    ],
)
def test_export_refuses_bad_input(tmp_path: Path, spec: str, options: list[str], out: str, message: str) -> None:
    (tmp_path / "DATA").write_text("")
    with pytest.raises(UsageError, match=message):
        export(registries(), spec if spec != "DATA" else str(tmp_path / "DATA"), parse_options(options), Path(out),
               tmp_path / "i.npz", batch_size=1, samples=2)  # fmt: skip


def test_export_exits_2_on_bad_input(tmp_path: Path) -> None:
    out = bench("export", "dlrm-small", "-o", str(tmp_path / "m.onnx"), "--option", "int_high")
    assert out.returncode == 2 and "--option 'int_high': give KEY=VALUE" in out.stderr
    out = bench("export", "nope.pt2", "-o", str(tmp_path / "m.onnx"))
    assert out.returncode == 2 and "nope.pt2: no model of that name and no such file" in out.stderr
    assert "Traceback" not in out.stderr
