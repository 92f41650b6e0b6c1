"""The dlrm-small model plugin, with real torch (small and fast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plugins.models import dlrm
from plugins.models.dlrm import DLRMSmall

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'bench[torch]')")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> DLRMSmall:
    return DLRMSmall()


@pytest.fixture(scope="module")
def module(model: DLRMSmall) -> torch.nn.Module:
    return model.build_torch()


def forward(module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        out = module(torch.from_numpy(inputs["dense"]), torch.from_numpy(inputs["sparse"]))
    return out.numpy()


def test_class_attributes() -> None:
    assert DLRMSmall.name == "dlrm-small"
    assert DLRMSmall.description
    assert DLRMSmall.input_names == ("dense", "sparse")
    assert DLRMSmall.output_names == ("click_probability",)


def test_rejects_options() -> None:
    with pytest.raises(ValueError, match="takes no options"):
        DLRMSmall(width=3)


def test_parameter_count(model: DLRMSmall, module: torch.nn.Module) -> None:
    counted = sum(p.numel() for p in module.parameters())
    assert 4_200_000 <= counted <= 4_400_000
    assert model.params() == {"parameters": counted, "embedding_tables": 26, "dense_features": 13}


def test_structure(module: torch.nn.Module) -> None:
    tables = [m for m in module.modules() if isinstance(m, torch.nn.Embedding)]
    assert len(tables) == 26
    assert {t.embedding_dim for t in tables} == {64}
    assert len({t.num_embeddings for t in tables}) > 10  # varied cardinalities
    assert not any(isinstance(m, torch.nn.EmbeddingBag) for m in module.modules())
    linears = [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [(13, 512), (512, 256), (256, 64), (64 + 27 * 26 // 2, 512), (512, 256), (256, 1)]
    assert not module.training


def test_output_shape_dtype_range(model: DLRMSmall, module: torch.nn.Module) -> None:
    out = forward(module, model.example_inputs(5, seed=3))
    assert out.shape == (5, 1)
    assert out.dtype == np.float32
    assert np.all((out > 0) & (out < 1))


def test_outputs_spread_over_unit_interval(model: DLRMSmall, module: torch.nn.Module) -> None:
    out = forward(module, model.example_inputs(256)).ravel()
    assert out.std() > 0.05
    assert 0.1 < out.mean() < 0.9  # neither all ~0.5 by construction nor saturated
    assert out.min() < 0.4 and out.max() > 0.6


def test_weights_and_outputs_deterministic(model: DLRMSmall, module: torch.nn.Module) -> None:
    again = model.build_torch()
    first, second = module.state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    inputs = model.example_inputs(16)
    np.testing.assert_array_equal(forward(module, inputs), forward(again, inputs))
    other = model.build_torch(seed=1)
    assert not torch.equal(other.bottom[0].weight, module.bottom[0].weight)


def test_build_keeps_global_rng_state(model: DLRMSmall) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model.build_torch()
    assert torch.equal(torch.rand(3), expected)


def test_example_inputs_deterministic_and_in_range(model: DLRMSmall) -> None:
    a, b = model.example_inputs(300, seed=7), model.example_inputs(300, seed=7)
    assert list(a) == ["dense", "sparse"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    dense, sparse = a["dense"], a["sparse"]
    assert dense.shape == (300, 13) and dense.dtype == np.float32
    assert abs(float(dense.mean())) < 0.2 and 0.8 < float(dense.std()) < 1.2
    assert sparse.shape == (300, 26) and sparse.dtype == np.int64
    rows = np.asarray(dlrm.EMBEDDING_ROWS)
    assert np.all(sparse >= 0) and np.all(sparse < rows)
    assert np.all(sparse.max(axis=0) > (rows - 1) * 0.5)  # uniform over each table, not over the smallest
    c = model.example_inputs(300, seed=8)
    assert not np.array_equal(a["dense"], c["dense"])


def test_registers_through_hook() -> None:
    registered: list[type] = []
    dlrm.bench_register_models(register=registered.append)
    assert registered == [DLRMSmall]


def test_import_is_light() -> None:
    code = "import sys, plugins.models.dlrm; print('torch' in sys.modules, 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
