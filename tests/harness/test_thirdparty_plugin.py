"""A plugin written outside the package, using only the public API, runs a whole sweep."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import harness
from conftest import ROOT, bench, run_dirs

#: the plugin lives in its own folder, outside the package, imported only by name
PLUGIN_DIR = Path(__file__).resolve().parents[1] / "thirdparty"


SCENARIO = """\
name: thirdparty
model: squares
backends: [numpy-ref]
precisions: [fp32, int8]
batch_sizes: [1, 16, 128]
threads: 1
measurement: {min_duration_s: 0.1, max_duration_s: 0.2, warmup_s: 0.01}
"""


@pytest.mark.slow
def test_third_party_plugin_runs_a_sweep(tmp_path: Path) -> None:
    scenario = tmp_path / "third.yaml"
    scenario.write_text(SCENARIO)
    env = {
        "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]),
        "BENCH_PLUGINS": "bench_numpy_plugin",
    }
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
    assert by_key[("fp32", 128)].status == "skipped"
    assert "up to 64" in by_key[("fp32", 128)].reason
    assert all(by_key[("int8", b)].status == "skipped" for b in (1, 16, 128))
    assert "no precision 'int8'" in by_key[("int8", 1)].reason
    assert isinstance(frame, pd.DataFrame)


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
