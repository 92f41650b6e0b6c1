"""A plugin written outside the package, using only the public API, runs a whole sweep."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

import harness
from conftest import ROOT, bench, fake_scenario, run_dirs

#: the plugin lives in its own folder, outside the package, imported only by name
PLUGIN_DIR = Path(__file__).resolve().parents[1] / "thirdparty"


SCENARIO = """\
name: thirdparty
model: squares
backends: [numpy-ref]
precisions: [fp32, int8]
batch_sizes: [1, 16, 128]
threads: 1
measurement: {min_duration_s: 0.1, max_duration_s: 0.2, warmup_s: 0.01, quiet_wait_s: 0, max_attempts: 1}
"""


def plugin_env(*modules: str, path: Path = PLUGIN_DIR) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]),
        "BENCH_PLUGINS": ",".join(modules),
    }


@pytest.mark.slow
def test_third_party_plugin_runs_a_sweep(tmp_path: Path) -> None:
    scenario = tmp_path / "third.yaml"
    scenario.write_text(SCENARIO)
    env = plugin_env("bench_numpy_plugin")
    listed = bench("list", "backends", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "numpy-ref" in listed.stdout and "bench_numpy_plugin" in listed.stdout

    out = bench("run", str(scenario), "--out", str(tmp_path / "results"), "--reports-dir", str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "results")
    frame = harness.load_results(run_dir)
    by_key = {(r.precision, r.batch_size): r for r in frame.itertuples()}
    assert len(by_key) == 6
    for batch in (1, 16):
        row = by_key[("fp32", batch)]
        assert row.status == "ok"
        assert row.throughput_sps > 0
        assert row.outputs_finite
        assert row.fidelity_ok and row.cosine > 0.999, row.fidelity_skipped  # set_inputs rebinds its inputs
    assert by_key[("fp32", 128)].status == "skipped"
    assert "up to 64" in by_key[("fp32", 128)].reason
    assert all(by_key[("int8", b)].status == "skipped" for b in (1, 16, 128))
    assert "no precision 'int8'" in by_key[("int8", 1)].reason
    assert isinstance(frame, pd.DataFrame)


def _with_version(run: Path, dest: Path, package: str, version: str) -> Path:
    """A copy of ``run`` whose manifest says it ran another version of ``package``."""
    shutil.copytree(run, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["environment"]["packages"][package] = version
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_third_party_runtime_is_in_doctor_the_manifest_and_compare(tmp_path: Path) -> None:
    env = plugin_env("bench_numpy_plugin")
    numpy = metadata.version("numpy")
    doctor = bench("doctor", "--json", env=env)
    assert doctor.returncode == 0, doctor.stderr
    found = json.loads(doctor.stdout)
    assert found["runtimes"]["numpy"] == {"installed": True, "version": numpy, "backends": ["numpy-ref"]}
    assert found["backends"]["numpy-ref"] == {"available": True, "reason": None, "packages": ["numpy"]}
    text = bench("doctor", env=env)
    assert f"numpy           {numpy} (backend numpy-ref)" in text.stdout

    scenario = tmp_path / "third.yaml"
    scenario.write_text(SCENARIO.replace("[1, 16, 128]", "[1]").replace("[fp32, int8]", "[fp32]"))
    ran = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", env=env)
    assert ran.returncode == 0, ran.stderr
    (run,) = run_dirs(tmp_path / "r")
    assert json.loads((run / "manifest.json").read_text())["environment"]["packages"]["numpy"] == numpy
    other = _with_version(run, tmp_path / "other", "numpy", "0.0.1")
    refused = bench("compare", str(run), str(other), env=env)
    assert refused.returncode == 2 and f"packages.numpy: '{numpy}' vs '0.0.1'" in refused.stderr
    assert bench("compare", str(run), str(other), "--allow-env-mismatch", env=env).returncode == 0


YAML_RUNTIME = """
from harness.api import hookimpl
from plugins.fake import FakeBackend

class YamlBackend(FakeBackend):
    name = "fake-yaml"
    packages = ("PyYAML",)  # a runtime no built-in backend declares

@hookimpl
def bench_register_backends(register):
    register(YamlBackend)
"""


def test_a_runtime_only_a_plugin_declares_is_recorded_and_compared(tmp_path: Path) -> None:
    """Before, the packages recorded and compared were a fixed list: a plugin's runtime was in neither."""
    (tmp_path / "bench_yaml_runtime.py").write_text(textwrap.dedent(YAML_RUNTIME))
    env = plugin_env("plugins.fake", "bench_yaml_runtime", path=tmp_path)
    scenario = fake_scenario(tmp_path)
    scenario.write_text(scenario.read_text().replace("  - name: fake\n", "  - name: fake-yaml\n"))
    ran = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", env=env)
    assert ran.returncode == 0, ran.stderr
    (run,) = run_dirs(tmp_path / "r")
    recorded = json.loads((run / "manifest.json").read_text())["environment"]["packages"]
    assert recorded["PyYAML"] == metadata.version("PyYAML")
    other = _with_version(run, tmp_path / "other", "PyYAML", "0.1")
    refused = bench("compare", str(run), str(other), env=env)
    assert refused.returncode == 2 and "packages.PyYAML" in refused.stderr and "--allow-env-mismatch" in refused.stderr
    assert bench("compare", str(run), str(other), "--allow-env-mismatch", env=env).returncode == 0


@pytest.mark.slow
def test_the_plugin_runs_the_conformance_suite_in_its_own_tests(tmp_path: Path) -> None:
    """The plugin and its test file copied out of this repository and run with a bare pytest: bench's
    conftest, pytest settings and markers play no part, as in the plugin author's own package."""
    for name in ("bench_numpy_plugin.py", "test_bench_numpy_plugin.py"):
        shutil.copy(PLUGIN_DIR / name, tmp_path / name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "--strict-markers", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed, 1 skipped" in done.stdout, done.stdout[-3000:]
    assert "numpy-ref serves one stream (max_concurrency 1)" in done.stdout  # the reason, with -rs
    assert f"rootdir: {tmp_path}" in done.stdout
