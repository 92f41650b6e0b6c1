"""The conformance suite every registered backend passes, the third-party test plugin's included.

The checks themselves ship in :mod:`harness.conformance` (outputs against the fp32 PyTorch eager
reference within the precision's tolerance, skips with a reason, repeatable prepare, replicas,
``set_inputs``), the code a plugin package runs in its own tests; here they run for every backend
the ``bench`` entry points register plus the test plugins, on a small real model of each kind and
on the option variants worth covering. Below them, through the real worker: each backend's cell
records memory, and a model that fails to build is a ``failed`` cell with the reason, the sweep
going on.

A new backend is covered by registering it: nothing here names a backend except to add option
variants.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.conformance import TOLERANCE, conformance_tests
from harness.pluginmanager import registries
from harness.scenario import PRECISIONS

THIRDPARTY = Path(__file__).resolve().parents[1] / "thirdparty"
sys.path.insert(0, str(THIRDPARTY))
PLUGINS = ("bench_numpy_plugin", "conformance_plugin")
sys.path.insert(0, str(Path(__file__).resolve().parent))

REGS = registries(PLUGINS, autoload=True)

#: every backend's real runtime prepared (OpenVINO's int8 quantisation, torch.compile, ...): minutes in all
pytestmark = pytest.mark.slow

#: models each backend runs here: small, real, fast (text models have their own tests)
MODELS = ("dlrm-small", "squares")
#: option variants worth covering beyond a backend's defaults (expensive ones at one precision only)
VARIANTS: dict[str, list[tuple[dict[str, Any], tuple[str, ...]]]] = {
    "pytorch": [({"mode": "compile"}, ("fp32",))],
    # the TensorRT provider: its fp16 and bf16 models, engine folders and TF32 override (skipped, with the
    # reason, where no GPU or no onnxruntime build with TensorRT is)
    "onnxruntime": [({"quantization": "static"}, ("int8",)), ({"provider": "tensorrt"}, ("fp32", "fp16", "bf16"))],
    "openvino": [({"quantization": "weights"}, ("int8",)), ({"hint": "throughput"}, ("fp32",))],
}

test_conformance = conformance_tests(backend=None, model=MODELS, plugins=PLUGINS, autoload=True, variants=VARIANTS)


def test_every_precision_a_scenario_may_ask_for_has_a_tolerance() -> None:
    assert set(TOLERANCE) == set(PRECISIONS)


# --- through the real worker: memory recorded, failures reported, the sweep going on ----------------

SCENARIO = """\
name: conformance
model: {model}
backends: {backends}
precisions: [fp32]
batch_sizes: [2]
threads: 2
measurement: {{warmup_s: 0.05, warmup_queries: 2, min_duration_s: 0.1, max_duration_s: 0.2, min_queries: 20,
              quiet_wait_s: 0, max_attempts: 1}}
limits: {{timeout_s: 240}}
"""


def _run(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from harness.planning import RunOptions
    from harness.runner import run_scenario
    from harness.scenario import load_scenario_text

    # the workers import the test plugins by name, as they would an installed third-party plugin
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(THIRDPARTY), here, os.environ.get("PYTHONPATH", "")]))

    backends = [name for name in REGS.backends.names() if REGS.backends.get(name).availability().ok]
    text = SCENARIO.format(model=model, backends="[" + ", ".join(backends) + "]")
    scenario = load_scenario_text(text, source="<conformance>")
    run = run_scenario(scenario, RunOptions(out_root=tmp_path, plugins=PLUGINS, command="conformance"))
    records = list(run.records())
    assert {r["config"]["backend"] for r in records} == set(backends)
    return records


def test_every_backend_measures_in_the_worker_with_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for record in _run("dlrm-small", tmp_path, monkeypatch):
        if record["status"] == "skipped":
            assert record["reason"]
            continue
        assert record["status"] == "ok", f"{record['label']}: {record.get('reason')}"
        assert record["peak_rss_mb_measure"] > 0
        assert record["throughput_sps"] > 0


def test_a_model_that_fails_is_a_failed_cell_for_every_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for record in _run("conformance-broken", tmp_path, monkeypatch):
        assert record["status"] in ("failed", "skipped"), record["label"]
        assert "conformance-broken" in (record.get("reason") or "") or record["status"] == "skipped"
