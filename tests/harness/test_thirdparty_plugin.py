"""A plugin written outside the package, using only the public API, runs a whole sweep."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pandas as pd

import harness
from conftest import bench, run_dirs

PLUGIN = '''
"""A third-party plugin: a pure-numpy backend and model, nothing from bench but its public API."""
from harness import hookimpl
from harness.api import Backend, Model, Session, Support


class Squares(Model):
    name = "squares"
    description = "y = sum(x**2) per sample"
    input_names = ("x",)
    output_names = ("y",)

    def build_torch(self):
        raise NotImplementedError("this model has no torch form")

    def example_inputs(self, batch_size, seed=0):
        import numpy as np
        return {"x": np.random.default_rng(seed).standard_normal((batch_size, 256)).astype("float32")}


class NumpySession(Session):
    def __init__(self, x):
        super().__init__()
        self.x = x
        self.info = {"executed_precision": "fp32", "runtime": "numpy"}

    def run(self):
        (self.x * self.x).sum(axis=1)

    def outputs(self):
        return {"y": (self.x * self.x).sum(axis=1, keepdims=True)}


class NumpyBackend(Backend):
    name = "numpy-ref"
    description = "numpy reference backend from a third-party plugin"
    precisions = ("fp32",)

    @classmethod
    def supports(cls, cell):
        if cell.batch_size > 64:
            return Support.no("numpy-ref serves batches up to 64")
        return super().supports(cell)

    def prepare(self, model, cell, workdir):
        return NumpySession(model.example_inputs(cell.batch_size)["x"])


@hookimpl
def bench_register_backends(register):
    register(NumpyBackend)


@hookimpl
def bench_register_models(register):
    register(Squares)
'''

SCENARIO = """\
name: thirdparty
model: squares
backends: [numpy-ref]
precisions: [fp32, int8]
batch_sizes: [1, 16, 128]
threads: 1
measurement: {min_duration_s: 0.1, max_duration_s: 0.2, warmup_s: 0.01}
"""


def test_third_party_plugin_runs_a_sweep(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bench_numpy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    scenario = tmp_path / "third.yaml"
    scenario.write_text(SCENARIO)
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "pkg"), os.environ.get("PYTHONPATH", "")]),
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
