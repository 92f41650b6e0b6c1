"""The GPU scenarios on a machine without an NVIDIA GPU: every cell skipped with the reason, and a run
that says nothing could run (exit 3), not a traceback. Where a GPU is present, the GPU suite runs them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT, bench, gpu_check_module, run_dirs
from harness import environment

NO_GPU = not environment.gpus()
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="an NVIDIA GPU is present: these check the machines without one")


@needs_no_gpu
@pytest.mark.parametrize("name", ["gpu.yaml", "gpu-text.yaml"])
def test_validate_lists_every_gpu_cell_as_skipped_with_why(name: str) -> None:
    out = bench("validate", str(ROOT / "scenarios" / name))
    assert out.returncode == 0, out.stderr
    summary = next(line for line in out.stdout.splitlines() if " cells: " in line and "to run here" in line)
    total = int(summary.split()[0])
    assert total >= 64
    assert summary == f"{total} cells: 0 to run here, {total} skipped"
    skips = [line for line in out.stdout.splitlines() if line.startswith("  skipped ")]
    assert len(skips) == total
    # each reason once with its count, the most first, before the cells
    counts = {}
    for line in out.stdout.splitlines():
        found = re.fullmatch(r"  (\d+) cells?: (.+)", line)
        if found:
            counts[found.group(2)] = int(found.group(1))
    assert sum(counts.values()) == total and list(counts.values()) == sorted(counts.values(), reverse=True)
    reasons = [line.split(": ", 1)[1] for line in skips]
    assert all(counts[reason] == reasons.count(reason) for reason in counts)
    # a cell no GPU would serve says why the backend refuses it, not that this machine has no GPU:
    # PyTorch's int8 is CPU-only, and onnxruntime's CUDA provider has no integer kernels; TensorRT's
    # (its libraries come from NVIDIA's index) are not installed
    # cells: 4 precisions x 5 backends (pytorch eager and compile, onnxruntime CUDA and TensorRT, tensorrt) x batches
    batches = total // 20
    assert counts[next(r for r in counts if r.startswith("no NVIDIA GPU here"))] == 12 * batches
    assert counts["int8 here is dynamic quantisation, which PyTorch runs on CPU only"] == 2 * batches
    assert sum(n for r, n in counts.items() if "the CUDA provider lacks" in r) == 2 * batches
    assert sum(n for r, n in counts.items() if "python package 'tensorrt' is not installed" in r) == 4 * batches


@needs_no_gpu
def test_running_the_gpu_scenario_without_a_gpu_is_exit_3_with_the_reason(tmp_path: Path) -> None:
    out = bench("run", str(ROOT / "scenarios" / "gpu.yaml"), "--out", str(tmp_path / "r"), "--no-report")
    assert out.returncode == 3, out.stderr
    assert "no cell produced a measurement (100 skipped)" in out.stderr
    assert "Traceback" not in out.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    assert (run_dir / "journal.jsonl").read_text().count('"status": "skipped"') == 100


def test_a_cuda_device_needs_a_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    one = ({"name": "NVIDIA L4", "driver": "550", "memory": "23034 MiB", "uuid": "GPU-1"},)
    monkeypatch.setattr(environment, "_gpus_once", lambda: one)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert environment.cuda_device_problem("cpu") is None
    assert environment.cuda_device_problem("cuda") is None
    assert environment.cuda_device_problem("cuda:0") is None
    assert "only 1 NVIDIA GPU(s) visible" in str(environment.cuda_device_problem("cuda:1"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "hides every NVIDIA GPU" in str(environment.cuda_device_problem("cuda"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert "hides every NVIDIA GPU" in str(environment.cuda_device_problem("cuda"))
    monkeypatch.setattr(environment, "_gpus_once", lambda: ())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "no NVIDIA GPU here" in str(environment.cuda_device_problem("cuda:0"))


@needs_no_gpu
def test_gpu_check_says_why_each_check_skips_without_a_gpu() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--skip-conformance"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("1. here: ")
    assert lines[1] == "1b. bench doctor (exit 0):" and "   gpus         none" in lines
    assert "3. timing truth: skipped: no CUDA device visible to torch" in lines
    assert "3b. onnxruntime CUDA: skipped: nvidia-smi lists no NVIDIA GPU" in lines
    assert "4. NVML energy: skipped: no CUDA device visible to torch" in lines
    assert "5. TensorRT: skipped: no CUDA device visible to torch" in lines


def test_gpu_check_goes_on_past_a_check_that_raises(capsys: pytest.CaptureFixture[str]) -> None:
    """One GPU machine run shows every check: a check that raises is printed as failed, with where."""
    gpu_check = gpu_check_module()
    gpu_check.guarded("3. timing truth", lambda: {}["model_file"], also="4. NVML energy")
    gpu_check.guarded("5. TensorRT", lambda: print("5. TensorRT: ran"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3. timing truth: FAILED: KeyError: 'model_file'"
    assert any("test_gpu_scenarios.py" in line for line in lines[1:-2])
    assert lines[-2:] == ["4. NVML energy: not run: 3. timing truth failed", "5. TensorRT: ran"]
    assert gpu_check.FAILED == ["3. timing truth"]  # the script exits 1
