"""Fidelity: each cell's outputs on a fixed validation set against the fp32 PyTorch reference."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import bench, journal, run_dirs
from harness.measure import fidelity


def brute_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = np.round(rng.random(200), 1)  # many ties
    assert fidelity.auc(labels, scores) == pytest.approx(brute_auc(labels, scores))
    assert fidelity.auc(np.ones(5), np.arange(5)) is None  # one class: undefined


def test_agreement_per_task() -> None:
    ref = np.array([[0.1], [0.6], [0.9], [0.4]])
    out = np.array([[0.2], [0.4], [0.8], [0.3]])
    assert fidelity.agreement("ctr", out, ref) == 0.75
    scores = np.array([[1, 0, 0], [0, 1, 0]])
    assert fidelity.agreement("classification", scores, np.array([[1, 0, 0], [1, 0, 0]])) == 0.5
    assert (
        fidelity.agreement("embedding", np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[2.0, 0.0], [0.0, 1.0]])) == 1.0
    )
    assert fidelity.agreement("other", out, ref) is None


def test_compare_and_verdict() -> None:
    ref = {"y": np.array([0.2, 0.7, 0.9, 0.1])}
    labels = np.array([0, 1, 1, 0])
    same = fidelity.compare({"y": ref["y"].copy()}, ref, "ctr", labels)
    assert same["max_abs_error"] == 0 and same["cosine"] == pytest.approx(1) and same["agreement"] == 1
    assert same["task_value"] == same["reference_task_value"] == 1.0
    assert fidelity.verdict(same, "fp32", {})["fidelity_ok"] is True
    off = fidelity.compare({"y": np.array([0.6, 0.4, 0.9, 0.1])}, ref, "ctr", labels)
    assert off["agreement"] == 0.5 and off["max_abs_error"] == pytest.approx(0.4)
    verdict = fidelity.verdict(off, "int8", {"min_agreement": 0.9})
    assert verdict["fidelity_ok"] is False and "agreement 0.5000 < 0.9" in verdict["fidelity_reason"]
    assert fidelity.verdict(off, "fp32", {"min_cosine": {"fp32": 0.5}})["min_cosine"] == 0.5


REC = """\
name: fid
model: dlrm-small
backends: [pytorch, onnxruntime]
precisions: [fp32, int8]
batch_sizes: [64]
threads: 2
measurement: {warmup_s: 0.05, warmup_queries: 2, min_duration_s: 0.2, max_duration_s: 0.3, min_queries: 20,
              quiet_wait_s: 0, max_attempts: 1, noise_threshold: 1.0}  # answers skip untrusted cells
fidelity: {samples: 512}
cost: {hourly_usd: 0.36, target_qps: 1000000}  # the rate that judges batch 64 per request (0.063 ms to gather)
"""


@pytest.mark.slow
def test_a_run_checks_every_cell_against_the_reference_and_prices_it(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the reference is PyTorch eager fp32")
    pytest.importorskip("onnxruntime")
    scenario = tmp_path / "fid.yaml"
    scenario.write_text(REC)
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    ref = manifest["reference"]
    assert ref["task"] == "ctr" and ref["samples"] == 512
    assert ref["flops_per_sample"] == pytest.approx(1_089_152, rel=0.01)  # DLRM-small's matmuls
    assert ref["peak_gflops"] > 1 and 0.5 < ref["reference_auc"] < 1
    records = {(r["config"]["backend"], r["config"]["precision"]): r for r in journal(run_dir)}
    assert all(r["status"] == "ok" for r in records.values()), [r.get("reason") for r in records.values()]
    for (backend, precision), rec in records.items():
        assert rec["fidelity_samples"] == 512, backend
        assert rec["task_metric"] == "auc" and rec["reference_task_value"] == pytest.approx(ref["reference_auc"])
        assert rec["fidelity_ok"] is True, rec["fidelity_reason"]
        assert rec["achieved_gflops"] == pytest.approx(rec["flops_per_sample"] * rec["throughput_sps"] / 1e9)
        assert rec["cost_per_million_usd"] == pytest.approx(0.36 / (rec["throughput_sps"] * 3600) * 1e6)
        if precision == "fp32":
            assert rec["cosine"] > 0.99999 and rec["agreement"] == 1.0 and rec["max_abs_error"] < 1e-4
        else:  # int8 loses some click decisions, and says how many
            assert 0.9 < rec["agreement"] < 1.0 and rec["max_abs_error"] > 1e-3

    # the recommendation follows the accuracy threshold: loose, the cheapest cell; strict, an fp32 one
    loose = bench("recommend", str(run_dir), "--p99-ms", "1000")
    strict = bench("recommend", str(run_dir), "--p99-ms", "1000", "--min-agreement", "0.9999")
    assert loose.returncode == 0 and strict.returncode == 0, loose.stderr + strict.stderr
    cheapest = min(records.values(), key=lambda r: r["cost_per_million_usd"])
    assert cheapest["label"] in loose.stdout.splitlines()[0]
    assert " fp32 " in strict.stdout.splitlines()[0]
    if cheapest["config"]["precision"] == "int8":
        assert strict.stdout.splitlines()[0] != loose.stdout.splitlines()[0]
        assert "agreement 0.9" in strict.stdout  # why the int8 cells lost


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("fidelity: {min_cosine: {int8: 1.5}}\n", "fidelity.min_cosine.int8: Input should be less than or equal to 1"),
        ("fidelity: {min_agreement: -0.1}\n", "fidelity.min_agreement: Input should be greater than or equal to 0"),
        ("budgets: {min_agreement: 2}\n", "budgets.min_agreement: min_agreement is a fraction: a threshold in [0, 1]"),
        ("fidelity: {min_cosine: {fp64: 0.9}}\n", "fidelity.min_cosine.fp64"),
    ],
)
def test_thresholds_outside_zero_one_are_refused(tmp_path: Path, extra: str, fragment: str) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: t\nmodel: dlrm-small\nbackends: [onnxruntime]\nbatch_sizes: [1]\n" + extra)
    done = bench("validate", str(scenario))
    assert done.returncode == 2 and fragment in done.stderr, done.stderr


@pytest.mark.slow  # the reference measures the machine's matmul peak too (1.5 s)
def test_a_model_that_is_only_an_onnx_file_gets_an_onnxruntime_reference(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    import warnings

    from harness.records import ReferenceJob

    path = tmp_path / "linear.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        axes = {"x": {0: "batch"}, "y": {0: "batch"}}
        torch.onnx.export(torch.nn.Linear(4, 2).eval(), (torch.randn(1, 4),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes=axes, dynamo=False)  # fmt: skip
    job = ReferenceJob(model="onnx-file", model_options={"path": str(path)}, samples=300, seed=0, threads=1,
                       path=str(tmp_path / "reference" / "onnx-file.npz"), plugins=(), autoload=None)  # fmt: skip
    facts = fidelity.run_reference(job)
    assert facts["reference_runtime"].startswith(f"onnxruntime {ort.__version__} CPU fp32, graph optimisations off")
    assert facts["flops_per_sample"] is None and "fidelity_skipped" not in facts
    inputs, outputs, labels = fidelity.load_reference(Path(facts["path"]))
    assert inputs["x"].shape == (300, 4) and outputs["y"].shape == (300, 2) and labels is None  # two chunks
    (expected,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-6, atol=1e-6)
