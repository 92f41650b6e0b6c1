from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config: pytest.Config) -> list[str]:
    from harness import environment

    versions = environment.package_versions(("torch", "onnxruntime", "openvino", "numpy", "pluggy", "pydantic"))
    return ["runtimes: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v)]


@pytest.fixture
def fake_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fake backend and toy model, loaded the way a user loads any plugin (and seen by workers)."""
    monkeypatch.setenv("BENCH_PLUGINS", "plugins.fake")
    yield


def stub_manifest(run_id: str = "r1", scenario: str = "x") -> dict:
    """The smallest manifest of the shape bench writes (harness.manifest), for tests of the store."""
    rule = {
        "warmup_s": 0.1, "warmup_queries": 3, "min_duration_s": 0.1, "max_duration_s": 0.3, "min_queries": 10,
        "headline_percentile": 99, "confidence": 0.95, "ci_rel_width": None,
    }  # fmt: skip
    settings = {
        "quick": False, "filters": {"backends": [], "batch_sizes": [], "precisions": []}, "measurement": rule,
        "percentiles": [50, 99], "noise_threshold": 0.1, "noise_retries": 1, "repeats": 1,
        "limits": {"timeout_s": 30, "memory_mb": None}, "plugins": [], "autoload": None,
    }  # fmt: skip
    return {
        "run_id": run_id, "created_at": 0.0, "scenario": {"name": scenario, "text": f"name: {scenario}\n"},
        "environment": {}, "settings": settings,
    }  # fmt: skip


def write_scenario(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def bench(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600):
    """Run the real CLI in a subprocess (exit codes and stderr as a user sees them)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_dirs(out_root: Path) -> list[Path]:
    """The run folders in a results root (not its ``.cache``)."""
    return sorted(p for p in out_root.iterdir() if p.is_dir() and not p.name.startswith("."))


def journal(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines() if line.strip()]


FAKE_SCENARIO = """\
name: fake
model: toy
backends:
  - name: fake
    options: {{service_ms: {service_ms}}}
    sweep:
      fault: {faults}
batch_sizes: {batches}
threads: 1
measurement:
  min_duration_s: {min_s}
  max_duration_s: {max_s}
  warmup_s: 0.05
limits:
  timeout_s: {timeout}
fidelity: {{samples: 0}}  # the fake backend computes nothing to compare; tests of fidelity use real backends
{extra}"""


def fake_scenario(
    tmp_path: Path,
    faults: str = "[none]",
    batches: str = "[1]",
    service_ms: float = 0.2,
    min_s: float = 0.1,
    max_s: float = 0.3,
    timeout: float = 30,
    extra: str = "",
    name: str = "fake.yaml",
) -> Path:
    text = FAKE_SCENARIO.format(
        faults=faults, batches=batches, service_ms=service_ms, min_s=min_s, max_s=max_s, timeout=timeout, extra=extra
    )
    return write_scenario(tmp_path / name, text)
