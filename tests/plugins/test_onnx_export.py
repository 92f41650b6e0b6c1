"""Conversions are cached by content, built atomically, and keyed by everything they depend on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import onnx_export as convert
from harness.api import CACHE_DIR_ENV
from plugins.models.dlrm import DLRMSmall


def test_cached_builds_once_and_reuses(tmp_path: Path) -> None:
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "out.txt").write_text("x")

    first = convert.cached("kind", "k1", "out.txt", build, tmp_path)
    second = convert.cached("kind", "k1", "out.txt", build, tmp_path)
    assert len(calls) == 1
    assert first.path == second.path == tmp_path / "kind" / "k1" / "out.txt"
    assert (first.cached, second.cached) == (False, True)
    assert second.seconds == 0.0 and first.seconds > 0
    assert [p.name for p in (tmp_path / "kind").iterdir()] == ["k1"]  # no staging folder left


def test_a_failed_build_leaves_nothing_that_looks_finished(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "out.txt").write_text("half")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        convert.cached("kind", "k2", "out.txt", broken, tmp_path)
    assert list((tmp_path / "kind").iterdir()) == []
    with pytest.raises(RuntimeError, match=r"wrote no out\.txt"):
        convert.cached("kind", "k3", "out.txt", lambda folder: None, tmp_path)


def test_cache_dir_of_the_run_is_used_when_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    done = convert.cached("kind", "k4", "f", lambda folder: (folder / "f").write_text("1"), tmp_path / "work")
    assert done.path == tmp_path / "cache" / "kind" / "k4" / "f"


def test_onnx_export_is_cached_and_keyed_by_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="export needs torch")
    ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime")
    model = DLRMSmall()
    first = convert.onnx_model(model, tmp_path)
    again = convert.onnx_model(model, tmp_path)
    assert again.cached and again.path == first.path and not first.cached

    session = ort.InferenceSession(str(first.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(model.input_names)
    assert [o.name for o in session.get_outputs()] == list(model.output_names)
    for batch in (1, 7):  # the batch axis stays dynamic
        inputs = model.example_inputs(batch, 3)
        (out,) = session.run(None, inputs)
        with torch.inference_mode():
            ref = model.build_torch()(*(torch.from_numpy(inputs[n]) for n in model.input_names)).numpy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)

    module = model.build_torch()
    key = convert.torch_model_key(model, module)
    with torch.no_grad():
        module.top[0].bias[0] += 1e-3
    assert convert.torch_model_key(model, module) != key
    assert convert.digest("a", b"b") != convert.digest("a", b"c")
