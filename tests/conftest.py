from __future__ import annotations

import ast
import json
import os
import re
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


# --- what a test costs: the e2e marker by rule, the slow marker by hand -----------------------------

#: ``python -m harness`` in a list literal or in the text of a script a test runs
_CLI_TEXT = re.compile(r"""["']-m["'],\s*["']harness["']""")


def _starts_the_cli(node: ast.AST) -> bool:
    """Whether a function's body calls the ``bench`` helper below or starts ``python -m harness``."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "bench":
            return True
        if isinstance(sub, (ast.List, ast.Tuple)):
            values = [e.value if isinstance(e, ast.Constant) else None for e in sub.elts]
            if any(values[i : i + 2] == ["-m", "harness"] for i in range(len(values) - 1)):
                return True
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and _CLI_TEXT.search(sub.value):
            return True
    return False


def _cli_functions(path: Path) -> set[str]:
    """Qualified names of the functions of a test module that start the real CLI, directly or
    through another function or fixture of the module they name."""
    tree = ast.parse(path.read_text())
    functions: dict[str, ast.AST] = {}  # and module-level constants: the text of a script a test runs
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions[node.name] = node
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            functions[node.targets[0].id] = node
        elif isinstance(node, ast.ClassDef):
            functions.update({f"{node.name}.{sub.name}": sub for sub in node.body if isinstance(sub, ast.FunctionDef)})
    names = {}  # what a body may call each function by: its name, or ``self.name`` for a method
    for qualname in functions:
        names.setdefault(qualname.rsplit(".", 1)[-1], set()).add(qualname)
    found = {q for q, node in functions.items() if _starts_the_cli(node)}
    while True:
        more = set()
        for qualname, node in functions.items():
            if qualname in found:
                continue
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            used |= {  # a method of the same class
                n.attr
                for n in ast.walk(node)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")
            }
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                used |= {a.arg for a in node.args.args}  # fixtures of the module it requests
            if any(names.get(name, set()) & found for name in used):
                more.add(qualname)
        if not more:
            return found
        found |= more


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``e2e`` every test that runs the real CLI in a subprocess (see ``_cli_functions``), so
    a new one is marked without anyone remembering to."""
    by_module: dict[Path, set[str]] = {}
    for item in items:
        function = getattr(item, "function", None)
        if function is None or function.__module__ != getattr(item.module, "__name__", None):
            continue  # a test built by a function of another module (harness.conformance): in-process
        path = Path(item.module.__file__)
        if path not in by_module:
            by_module[path] = _cli_functions(path)
        cli = by_module[path]
        if function.__qualname__ in cli or cli & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


#: a test over this many seconds of call time without the ``slow`` marker is listed at the end
SLOW_S = 3.0
_unmarked_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > SLOW_S and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unmarked_slow:
        terminalreporter.write_sep("-", f"over {SLOW_S:.0f} s without @pytest.mark.slow (mark them, or speed them up)")
        for nodeid, seconds in sorted(_unmarked_slow, key=lambda t: -t[1]):
            terminalreporter.write_line(f"{seconds:6.1f}s {nodeid}")


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
        "percentiles": [50, 99], "noise_threshold": 0.1, "max_attempts": 2, "repeats": 1,
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


def gpu_check_module():
    """benchmarks/gpu_check.py as a module (a script, not a package module): its functions for tests."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bf16_as_float(model):
    """``model`` with every BFLOAT16 type made FLOAT, its weights and constants keeping their bf16
    values: what onnxruntime's CPU provider can run, to check the weights' rounding apart from bf16
    arithmetic."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from plugins.bf16_onnx import bf16_values

    def as_float(tensor):
        bits = np.frombuffer(tensor.raw_data, dtype="<u2").reshape(tuple(tensor.dims))
        return numpy_helper.from_array(bf16_values(bits), tensor.name)

    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == onnx.TensorProto.BFLOAT16:
            graph.initializer[i].CopyFrom(as_float(tensor))
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.i == onnx.TensorProto.BFLOAT16:
                attr.i = onnx.TensorProto.FLOAT
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.BFLOAT16:
                attr.t.CopyFrom(as_float(attr.t))
    return model


def run_dirs(out_root: Path) -> list[Path]:
    """The run folders in a results root (not its ``.cache``)."""
    return sorted(p for p in out_root.iterdir() if p.is_dir() and not p.name.startswith("."))


def journal(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines() if line.strip()]


#: a test plugin's model source (a ``Model`` subclass ``Tiny`` named ``{name}``: one input "x" of 3
#: floats per sample, no torch module), for plugin files written by tests; the file imports ``Model``
TINY_MODEL = """\
class Tiny(Model):
    name = "{name}"
    input_names = ("x",)
    output_names = ("y",)

    def build_torch(self):
        raise NotImplementedError

    def example_inputs(self, batch_size, seed=0):
        import numpy as np

        return {{"x": np.random.default_rng(seed).standard_normal((batch_size, 3)).astype("float32")}}
"""


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
  # tests of the engine judge the engine, not the machine: no wait for quiet, no second attempt, no
  # window disturbed (the noise guard's own tests set these: tests/harness/test_noise.py)
  noise_threshold: 1.0
  quiet_wait_s: 0
  max_attempts: 1
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
