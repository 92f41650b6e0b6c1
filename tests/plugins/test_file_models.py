"""Models given as files: onnx-file (ONNX) and torch-export-file (torch.export .pt2), never through pickle."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plugins.models import files
from plugins.models.files import ModelFileError, OnnxFile, TorchExportFile

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'bench[torch]')")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'bench[onnxruntime]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'bench[onnxruntime]')")

ROOT = Path(__file__).resolve().parents[2]


class Tiny(torch.nn.Module):
    """x [B,4] float, ids [B,N] int64 -> [B,3]: a linear layer plus summed embeddings."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)
        self.table = torch.nn.Embedding(10, 3)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.table(ids).sum(1)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny module as ONNX: dynamic batch on every tensor, a dynamic 'n' axis on ids."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Tiny().eval(),
            (torch.randn(2, 4), torch.randint(0, 10, (2, 5))),
            str(path),
            input_names=["x", "ids"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "ids": {0: "batch", 1: "n"}, "y": {0: "batch"}},
            dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def pt2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny module as a torch.export program with a dynamic batch (1..64), saved with torch.export.save."""
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        Tiny().eval(),
        (torch.randn(2, 4), torch.randint(0, 10, (2, 5))),
        dynamic_shapes={"x": {0: batch}, "ids": {0: batch}},
    )
    torch.export.save(program, str(path))
    return path


def test_import_is_cheap() -> None:
    code = (
        "import sys, plugins.models.files\n"
        "print([m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "torch" not in out.stdout and "onnx" not in out.stdout


def test_registers_both() -> None:
    registered: list[type] = []
    files.bench_register_models(registered.append)
    assert [cls.name for cls in registered] == ["onnx-file", "torch-export-file"]


def test_each_model_declares_its_scenario_shorthand() -> None:
    from harness.pluginmanager import registries

    beside = tuple(option for option in files.FILE_MODEL_OPTIONS if option != "path")
    declared = registries(["plugins.models.files"], autoload=False).file_shorthands()
    assert declared == {
        "onnx": ("onnx-file", OnnxFile.file_shorthand),
        "torch_export": ("torch-export-file", TorchExportFile.file_shorthand),
    }
    for cls in (OnnxFile, TorchExportFile):
        assert cls.file_shorthand.options == beside and cls.file_shorthand.path_option == "path"
    assert set(files.FILE_MODEL_OPTIONS) == {"path", "shapes", "int_high", "float_range"}
    assert OnnxFile.file_shorthand.suffixes == (".onnx",) and TorchExportFile.file_shorthand.suffixes == (".pt2",)


# -- onnx-file --------------------------------------------------------------------------------


def test_onnx_reads_names_dtypes_and_shapes(onnx_path: Path) -> None:
    model = OnnxFile(path=str(onnx_path), shapes={"ids": ["batch", 5]})
    assert model.input_names == ("x", "ids") and model.output_names == ("y",)
    assert "input_names" in vars(model) and "input_names" not in vars(OnnxFile)  # per instance
    assert [(s.name, s.dtype, s.dims) for s in model.inputs] == [
        ("x", "float32", ("batch", 4)),
        ("ids", "int64", ("batch", 5)),
    ]
    assert model.dynamic_axes() == {"x": {0: "batch"}, "ids": {0: "batch"}, "y": {0: "batch"}}
    params = model.params()
    assert params["parameters"] == 4 * 3 + 3 + 10 * 3 and params["file"] == str(onnx_path)


def test_onnx_dynamic_axis_needs_a_size(onnx_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"axis 1 of input 'ids' is dynamic \('n'\).*option shapes"):
        OnnxFile(path=str(onnx_path))


def test_onnx_example_inputs_are_deterministic(onnx_path: Path) -> None:
    model = OnnxFile(path=str(onnx_path), shapes={"ids": ["batch", 7]}, int_high=10)
    a, b, c = model.example_inputs(6, 0), model.example_inputs(6, 0), model.example_inputs(6, 1)
    assert a["x"].dtype == np.float32 and a["x"].shape == (6, 4)
    assert a["ids"].dtype == np.int64 and a["ids"].shape == (6, 7)
    assert a["ids"].min() >= 0 and a["ids"].max() < 10
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], c["x"])
    (y,) = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, a)
    assert y.shape == (6, 3)


def test_int_high_and_float_range_per_input(onnx_path: Path) -> None:
    shapes = {"ids": ["batch", 50]}
    model = OnnxFile(path=str(onnx_path), shapes=shapes, int_high={"ids": 3}, float_range={"x": [0, 1]})
    a = model.example_inputs(40, 0)
    assert a["ids"].min() == 0 and a["ids"].max() == 2  # 2000 draws from [0, 3)
    assert a["x"].dtype == np.float32 and a["x"].min() >= 0 and a["x"].max() < 1
    assert model.int_high == {"ids": 3} and model.float_range == {"x": (0.0, 1.0)}
    assert model.params()["int_high"] == {"ids": 3} and model.params()["float_range"] == {"x": [0.0, 1.0]}
    one = OnnxFile(path=str(onnx_path), shapes=shapes, int_high=7, float_range=[-2, -1])  # one value: every input
    b = one.example_inputs(40, 0)
    assert b["ids"].max() == 6 and b["x"].max() < -1 and b["x"].min() >= -2
    default = OnnxFile(path=str(onnx_path), shapes=shapes, int_high={})  # an input left out: the default
    assert default.int_high == {"ids": files.INT_HIGH_DEFAULT} and default.float_range == {}
    assert default.example_inputs(40, 0)["x"].min() < 0  # standard normal


def test_inputs_hint_names_the_bounds(onnx_path: Path) -> None:
    shapes = {"ids": ["batch", 5]}
    assert OnnxFile(path=str(onnx_path), shapes=shapes).inputs_hint() == (
        "integer inputs are drawn from [0, int_high) = [0, 100): give int_high per input (int_high: {ids: ROWS})"
    )
    assert "[0, int_high) = [0, 3)" in OnnxFile(path=str(onnx_path), shapes=shapes, int_high={"ids": 3}).inputs_hint()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"int_high": {"idz": 3}}, r"option int_high names 'idz', not an input of the model; it applies to the "
                                   r"integer inputs \(ids\)"),
        ({"int_high": {"x": 3}}, r"option int_high names 'x', a float32 input; it applies to the integer inputs"),
        ({"float_range": {"ids": [0, 1]}}, r"option float_range names 'ids', a int64 input; it applies to the "
                                           r"floating-point inputs \(x\)"),
    ],
)  # fmt: skip
def test_per_input_options_name_inputs_of_their_kind(onnx_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelFileError, match=message):
        OnnxFile(path=str(onnx_path), shapes={"ids": ["batch", 5]}, **options)


def test_onnx_file_has_no_torch_form(onnx_path: Path, tmp_path: Path) -> None:
    from harness.api import onnx_model

    model = OnnxFile(path=str(onnx_path), shapes={"ids": ["batch", 5]})
    support = model.torch_support()
    assert not support.ok and support.reason.startswith("model given as an ONNX file: no PyTorch form")
    with pytest.raises(ModelFileError, match="no PyTorch form"):
        model.build_torch()
    assert model.onnx_file() == onnx_path
    assert onnx_model(model, tmp_path).path == onnx_path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs the option path"),
        ({"path": "x.onnx", "shape": {}}, "has no option shape"),
        ({"path": "x.onnx", "int_high": 0}, "int_high must be an integer >= 1"),
        ({"path": "x.onnx", "int_high": {"ids": 0}}, r"int_high: input 'ids' must be an integer >= 1"),
        ({"path": "x.onnx", "float_range": [1, 0]}, r"float_range must be a pair \[low, high\].*low < high"),
        ({"path": "x.onnx", "float_range": {"x": [0, float("inf")]}}, r"float_range: input 'x' must be a pair"),
        ({"path": "x.onnx", "shapes": [1, 2]}, "shapes must be a mapping"),
        ({"path": "x.onnx", "shapes": {"ids": ["batch", -1]}}, "needs a list of sizes"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OnnxFile(**options)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"idz": ["batch", 5]}, "names 'idz', not an input of the model"),
        ({"ids": ["batch"]}, "gives input 'ids' 1 axes, the file 2"),
        ({"x": ["batch", 5]}, "the file fixes it at 4"),
    ],
)
def test_shapes_must_fit_the_file(onnx_path: Path, shapes: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelFileError, match=message):
        OnnxFile(path=str(onnx_path), shapes={"ids": ["batch", 5], **shapes})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"no such file"):
        OnnxFile(path=str(tmp_path / "nope.onnx"))


def test_truncated_file_is_a_clear_error(onnx_path: Path, tmp_path: Path) -> None:
    data = onnx_path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3):
        broken = tmp_path / "broken.onnx"
        broken.write_bytes(data[:cut])
        with pytest.raises(
            ModelFileError,
            match=rf"{re.escape(str(broken))}: (not a readable ONNX model.*truncated|fails the ONNX checker)",
        ):
            OnnxFile(path=str(broken))
    text = tmp_path / "notes.onnx"
    text.write_text("not a model at all\n")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        OnnxFile(path=str(text))


def _with_external_data(onnx_path: Path, folder: Path, location: str | None = None) -> Path:
    """The tiny model saved with its weights in ``weights.bin`` next to it, then (if given) the
    tensors' ``location`` rewritten to ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    proto = onnx.load(str(onnx_path))
    onnx.save_model(proto, str(target), save_as_external_data=True, location="weights.bin", size_threshold=0)
    if location is not None:
        proto = onnx.load(str(target), load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(proto, str(target))
    return target


def test_external_data_next_to_the_model_loads(onnx_path: Path, tmp_path: Path) -> None:
    path = _with_external_data(onnx_path, tmp_path / "ok")
    model = OnnxFile(path=str(path), shapes={"ids": ["batch", 5]})
    assert model.input_names == ("x", "ids")


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("../outside.bin", r"reads external data from '../outside.bin', outside the model's folder"),
        ("sub/../../outside.bin", r"outside the model's folder"),
        ("/etc/passwd", r"reads external data from the absolute path '/etc/passwd'; refused"),
    ],
)
def test_external_data_outside_the_folder_is_refused(
    onnx_path: Path, tmp_path: Path, location: str, message: str
) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)  # exists: refused for where it is, not for missing
    path = _with_external_data(onnx_path, tmp_path / "model", location)
    with pytest.raises(ModelFileError, match=message) as info:
        OnnxFile(path=str(path), shapes={"ids": ["batch", 5]})
    assert "tensor 'linear.weight'" in str(info.value) or "tensor '" in str(info.value)


def test_checker_failures_are_reported(onnx_path: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(onnx_path))
    proto.graph.node[0].input[0] = "does_not_exist"
    path = tmp_path / "bad_graph.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match="fails the ONNX checker"):
        OnnxFile(path=str(path), shapes={"ids": ["batch", 5]})


# -- torch-export-file ---------------------------------------------------------------------------


def test_torch_export_round_trip(pt2_path: Path) -> None:
    model = TorchExportFile(path=str(pt2_path), int_high=10)  # ids index a 10-row table
    assert model.input_names == ("x", "ids") and model.output_names == ("output_0",)
    assert [(s.name, s.dtype, s.dims, s.batch_min, s.batch_max) for s in model.inputs] == [
        ("x", "float32", ("batch", 4), 1, 64),
        ("ids", "int64", ("batch", 5), 1, 64),
    ]
    assert model.torch_support().ok
    assert model.params()["parameters"] == 4 * 3 + 3 + 10 * 3
    module = model.build_torch()
    assert not module.training
    for batch in (1, 7):
        inputs = model.example_inputs(batch, seed=batch)
        args = [torch.from_numpy(inputs[name]) for name in model.input_names]
        with torch.no_grad():
            np.testing.assert_array_equal(module(*args).numpy(), Tiny().eval()(*args).numpy())
    with pytest.raises(ModelFileError, match=r"accepts batch sizes 1\.\.64, not 65"):
        model.example_inputs(65)
    assert model.calibration_inputs(100)["x"].shape == (100, 4)  # feeds the converted model: no range


def test_torch_export_through_onnx(pt2_path: Path, tmp_path: Path) -> None:
    from harness.api import onnx_model

    model = TorchExportFile(path=str(pt2_path), int_high=10)
    conversion = onnx_model(model, tmp_path)
    session = ort.InferenceSession(str(conversion.path), providers=["CPUExecutionProvider"])
    inputs = model.example_inputs(5, seed=0)
    (out,) = session.run(None, inputs)
    with torch.no_grad():
        expected = Tiny().eval()(*(torch.from_numpy(inputs[n]) for n in model.input_names)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def _rewrite(source: Path, target: Path, edit: Callable[[dict[str, bytes], str], None]) -> Path:
    """A copy of a .pt2 archive with members edited (``edit(members, root)``): never loaded by
    torch in these tests, so the alignment torch's reader needs does not matter."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    root = next(iter(members)).split("/", 1)[0]
    edit(members, root)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _edit_program(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes], str], None]:
    def edit(members: dict[str, bytes], root: str) -> None:
        name = f"{root}/models/model.json"
        program = json.loads(members[name])
        change(program)
        members[name] = json.dumps(program).encode()

    return edit


def _set_guards(program: dict[str, Any]) -> None:
    program["guards_code"] = ["__import__('os').system('touch PWNED')"]


def _set_expr(program: dict[str, Any]) -> None:
    sizes = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
    sizes[0]["as_expr"]["expr_str"] = "exec('import os')"


def _set_target(program: dict[str, Any]) -> None:
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.hub.load"


def _set_name(program: dict[str, Any]) -> None:
    program["graph_module"]["graph"]["nodes"][0]["inputs"][0]["name"] = "x=__import__('os')"


def _pickled_weight(members: dict[str, bytes], root: str) -> None:
    name = f"{root}/data/weights/model_weights_config.json"
    config = json.loads(members[name])
    next(iter(config["config"].values()))["use_pickle"] = True
    members[name] = json.dumps(config).encode()


def _compiled_code(members: dict[str, bytes], root: str) -> None:
    members[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"


def _opaque_constant(members: dict[str, bytes], root: str) -> None:
    name = f"{root}/data/constants/model_constants_config.json"
    members[name] = json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "use_pickle": False}}}).encode()
    members[f"{root}/data/constants/opaque_obj_0"] = b"\x80\x04."


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit_program(_set_guards), r"guard .*calls .*__import__"),
        (_edit_program(_set_expr), r"shape expression .* calls 'exec'"),
        (_edit_program(_set_target), r"graph calls 'torch.hub.load'"),
        (_edit_program(_set_name), r"is not a \(dotted\) identifier"),
        (_pickled_weight, r"is a pickled payload"),
        (_compiled_code, r"entry 'data/aotinductor/model/model.so' is not part of a plain torch.export archive"),
        (_opaque_constant, r"'opaque_obj_0' object, not a tensor"),
    ],
    ids=["guard-code", "sympy-eval", "call-target", "fx-name", "pickle", "aoti-library", "opaque-object"],
)
def test_unsafe_archives_are_refused_before_torch_reads_them(
    pt2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = _rewrite(pt2_path, tmp_path / "bad.pt2", edit)
    with pytest.raises(ModelFileError, match=rf"{re.escape(str(bad))}: refused to load: .*{message}"):
        TorchExportFile(path=str(bad))
    assert not (tmp_path / "PWNED").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle, which is exactly what is never loaded
    with pytest.raises(ModelFileError, match=r"not a torch\.export archive"):
        TorchExportFile(path=str(path))


def test_serialization_constants_match_torch() -> None:
    """The audit reads the archive without torch: its copies of torch's format numbers must agree."""
    from torch._export.serde.schema import ScalarType
    from torch.export.pt2_archive import constants

    numpy_names = {"BYTE": "uint8", "CHAR": "int8", "SHORT": "int16", "INT": "int32", "LONG": "int64"}
    numpy_names |= {"HALF": "float16", "FLOAT": "float32", "DOUBLE": "float64", "BOOL": "bool"}
    numpy_names |= {"BFLOAT16": "bfloat16", "COMPLEXHALF": "complex32", "COMPLEXFLOAT": "complex64"}
    numpy_names |= {"COMPLEXDOUBLE": "complex128"}
    assert {number: numpy_names[ScalarType(number).name] for number in files._SCALAR_TYPES} == files._SCALAR_TYPES
    assert constants.WEIGHT_FILENAME_PREFIX == "weight_"
    assert constants.TENSOR_CONSTANT_FILENAME_PREFIX == "tensor_"
    assert constants.MODELS_FILENAME_FORMAT == "models/{}.json"
    assert constants.SAMPLE_INPUTS_FILENAME_FORMAT == "data/sample_inputs/{}.pt"
    assert constants.ARCHIVE_FORMAT_VALUE == "pt2"


def test_fixed_batch_onnx_runs_only_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Tiny().eval(),
            (torch.randn(2, 4), torch.randint(0, 10, (2, 5))),
            str(path),
            input_names=["x", "ids"],
            output_names=["y"],
            dynamo=False,
        )
    model = OnnxFile(path=str(path))
    assert model.inputs[0].dims == (2, 4) and model.example_inputs(2)["ids"].shape == (2, 5)
    with pytest.raises(ModelFileError, match=r"no input has a dynamic batch axis .*use batch_sizes: \[2\]"):
        model.example_inputs(4)
