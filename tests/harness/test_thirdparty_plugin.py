"""A plugin written outside the package, using only the public API, runs a whole sweep."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import harness
from conftest import bench, run_dirs

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
