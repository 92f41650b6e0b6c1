"""Inputs from data (``model: {..., inputs: FILE.npz}``): the file's checks, the rows each call cuts,
and validation's exit 2 naming the input."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import bench, run_dirs
from harness import input_data
from harness.input_data import InputData, InputDataError, build_model, index_error_hint
from plugins.fake import ToyModel
from plugins.models.dlrm import EMBEDDING_ROWS, DLRMSmall


def dlrm_data(path: Path, samples: int = 10) -> Path:
    """``samples`` rows of dlrm-small's inputs, row i holding i in every sparse column (so a row
    tells where it came from) and i/10 in every dense one."""
    rows = np.arange(samples)
    dense = np.repeat((rows / 10).astype(np.float32)[:, None], 13, axis=1)
    sparse = np.repeat(rows[:, None], len(EMBEDDING_ROWS), axis=1).astype(np.int64) % 3  # table 25 has 3 rows
    sparse[:, 0] = rows  # column 0 (12000 rows) keeps the row's number
    np.savez(path, dense=dense, sparse=sparse)
    return path


def test_batches_are_cut_in_order_and_wrap_around(tmp_path: Path) -> None:
    model = build_model(DLRMSmall, {}, dlrm_data(tmp_path / "d.npz", samples=10))
    assert isinstance(model, DLRMSmall) and type(model).__name__ == "DLRMSmall" and model.name == "dlrm-small"
    first = model.example_inputs(4, seed=0)
    assert first["sparse"].dtype == np.int64 and first["dense"].shape == (4, 13)
    assert first["sparse"][:, 0].tolist() == [0, 1, 2, 3]
    assert model.example_inputs(4, seed=1)["sparse"][:, 0].tolist() == [4, 5, 6, 7]
    assert model.example_inputs(4, seed=2)["sparse"][:, 0].tolist() == [8, 9, 0, 1]  # wraps around
    assert model.example_inputs(12, seed=0)["sparse"][:, 0].tolist() == [*range(10), 0, 1]
    again = build_model(DLRMSmall, {}, tmp_path / "d.npz").example_inputs(4, seed=2)
    assert all(np.array_equal(again[k], model.example_inputs(4, seed=2)[k]) for k in again)  # deterministic
    np.testing.assert_array_equal(model.example_inputs(3, seed=0)["dense"][:, 0], np.float32([0.0, 0.1, 0.2]))


def test_calibration_and_files_and_params(tmp_path: Path) -> None:
    path = dlrm_data(tmp_path / "d.npz", samples=10)
    model = build_model(DLRMSmall, {}, path)
    assert model.calibration_inputs(12, seed=5)["sparse"][:, 0].tolist() == [*range(10), 0, 1]
    assert model.input_files() == (path,)
    assert model.params()["input_data"] == {"file": str(path), "samples": 10}
    assert model.params()["parameters"] == DLRMSmall().params()["parameters"]


def test_validation_set_is_the_first_samples_with_the_models_own_labels(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="dlrm-small's teacher labels need torch")
    model = build_model(DLRMSmall, {}, dlrm_data(tmp_path / "d.npz", samples=10))
    inputs, labels = model.validation_set(1024, seed=0)
    assert inputs["sparse"][:, 0].tolist() == list(range(10))  # min(n, N) samples, from the first
    assert labels is not None and labels.shape == (10,)
    toy = build_model(ToyModel, {}, _toy_data(tmp_path / "t.npz", samples=6))
    inputs, labels = toy.validation_set(4, seed=3)
    assert labels is None and inputs["x"][:, 0].tolist() == [0, 1, 2, 3]
    assert toy.example_inputs(2, seed=0)["x"][:, 0].tolist() == [0, 1]  # the flag is reset


def _toy_data(path: Path, samples: int) -> Path:
    np.savez(path, x=np.repeat(np.arange(samples, dtype=np.float32)[:, None], 4, axis=1))
    return path


def test_without_data_the_model_is_its_own_class(tmp_path: Path) -> None:
    model = build_model(ToyModel, {}, None)
    assert type(model) is ToyModel and input_data.input_data_of(model) is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"dense": np.zeros((5, 13), np.float32)}, r"input 'sparse': the model wants int64 \[26\] per sample; "
                                                   r"the file holds no array 'sparse' \(it holds dense\)"),
        ({"dense": np.zeros((5, 13), np.float64), "sparse": np.zeros((5, 26), np.int64)},
         r"input 'dense': the model wants float32; the file holds float64 \(convert it"),
        ({"dense": np.zeros((5, 12), np.float32), "sparse": np.zeros((5, 26), np.int64)},
         r"input 'dense': the model wants \[13\] per sample; the file holds \[12\] per sample \(shape \[5, 12\]"),
        ({"dense": np.zeros((5, 13), np.float32), "sparse": np.zeros((5, 26), np.int64),
          "labels": np.zeros(5)}, r"holds 'labels', not an input of the model \(inputs: dense, sparse\)"),
        ({"dense": np.zeros((5, 13), np.float32), "sparse": np.zeros((4, 26), np.int64)},
         r"different numbers of samples \(first axis\): dense 5, sparse 4"),
        ({"dense": np.zeros((0, 13), np.float32), "sparse": np.zeros((0, 26), np.int64)}, r"hold no samples"),
        ({"dense": np.float32(1), "sparse": np.zeros((5, 26), np.int64)}, r"array 'dense' is a scalar"),
    ],
    ids=["name", "dtype", "shape", "extra", "samples", "empty", "scalar"],
)  # fmt: skip
def test_a_file_that_does_not_fit_names_the_input(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputDataError, match=message):
        input_data.check(DLRMSmall(), path, batch_size=2)
    with pytest.raises(InputDataError, match=message):
        build_model(DLRMSmall, {}, path).example_inputs(2)


def test_only_plain_arrays_are_read(tmp_path: Path) -> None:
    objects = tmp_path / "objects.npz"
    np.savez(objects, dense=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputDataError, match=r"array 'dense' holds Python objects \(dtype object\).*never pickled"):
        InputData(objects)
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"dense": 1}))
    with pytest.raises(InputDataError, match=r"not an \.npz file"):
        InputData(pickled)
    other = tmp_path / "other.npz"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(InputDataError, match=r"holds 'notes.txt', not a \.npy array"):
        InputData(other)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(InputDataError, match="not a regular file"):
        InputData(fifo)


def test_index_error_hint(tmp_path: Path) -> None:
    ort = RuntimeError("Gather node. Name:'/e/Gather' Status Message: indices element out of data bounds, idx=48")
    assert index_error_hint(ValueError("shapes differ"), None) == ""
    assert "give real data with inputs: FILE.npz" in index_error_hint(ort, DLRMSmall())
    assert index_error_hint(IndexError("index out of range in self"), None).startswith("the inputs are the model's")
    with_data = build_model(DLRMSmall, {}, dlrm_data(tmp_path / "d.npz"))
    assert index_error_hint(ort, with_data).startswith(f"the inputs are cut from {tmp_path / 'd.npz'}")


# -- validation: exit 2 naming the input, before a run folder exists ---------------------------------


SCENARIO = """\
name: data
model: {{name: dlrm-small, inputs: {inputs}}}
backends: [onnxruntime]
batch_sizes: [2]
"""


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"dense": np.zeros((4, 13), np.float32), "sprase": np.zeros((4, 26), np.int64)},
         "input 'sparse': the model wants int64 [26] per sample; the file holds no array 'sparse'"),
        ({"dense": np.zeros((4, 13), np.float32), "sparse": np.zeros((4, 26), np.int32)},
         "input 'sparse': the model wants int64; the file holds int32"),
        ({"dense": np.zeros((4, 13, 1), np.float32), "sparse": np.zeros((4, 26), np.int64)},
         "input 'dense': the model wants [13] per sample; the file holds [13, 1] per sample"),
    ],
    ids=["name", "dtype", "shape"],
)  # fmt: skip
def test_validate_and_run_refuse_a_file_that_does_not_fit(tmp_path: Path, arrays: dict, fragment: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(inputs="d.npz"))
    out = bench("validate", str(scenario))
    assert out.returncode == 2, out.stderr
    assert f"{scenario}:2: model.inputs: {tmp_path / 'd.npz'}: {fragment}" in out.stderr
    assert "Traceback" not in out.stderr
    run = bench("run", str(scenario), "--out", str(tmp_path / "results"), "--no-report")
    assert run.returncode == 2 and fragment in run.stderr
    assert not (tmp_path / "results").exists() or not run_dirs(tmp_path / "results")
