"""The built-in plugins use bench through ``harness.api`` alone, as a third-party plugin must."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import harness
import harness.api

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def harness_imports(source: str) -> list[tuple[int, str]]:
    """Every ``harness`` module a module imports, with its line: top level, inside functions and
    under ``TYPE_CHECKING`` alike (``from harness import api`` counts as ``harness.api``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "harness"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "harness":
                found += [(node.lineno, f"harness.{alias.name}") for alias in node.names]
            elif node.module.split(".")[0] == "harness":
                found.append((node.lineno, node.module))
    return found


def test_the_scan_sees_every_form_of_import() -> None:
    source = (
        "import harness.cells\n"
        "from harness import hookimpl\n"
        "from harness.api import Backend\n"
        "def f():\n"
        "    from harness.environment import cpu_flags\n"
        "if TYPE_CHECKING:\n"
        "    from harness import api\n"
    )
    assert harness_imports(source) == [
        (1, "harness.cells"),
        (2, "harness.hookimpl"),
        (3, "harness.api"),
        (5, "harness.environment"),
        (7, "harness.api"),
    ]


def test_plugins_import_only_harness_api() -> None:
    modules = sorted(PLUGINS.rglob("*.py"))
    assert len(modules) >= 7
    offending = [
        f"{path.relative_to(PLUGINS.parent)}:{line}: imports {name}"
        for path in modules
        for line, name in harness_imports(path.read_text())
        if name != "harness.api"
    ]
    assert offending == [], "plugins must import bench through harness.api only:\n" + "\n".join(offending)


def test_api_exports_what_plugins_need() -> None:
    for name in ("Backend", "Model", "Session", "Support", "Cell", "SkipCell", "cache_dir", "module_available",
                 "cpu_flags", "hookimpl", "onnx_model", "cached", "digest", "file_digest", "Conversion"):  # fmt: skip
        assert name in harness.api.__all__ and hasattr(harness.api, name), name
    assert harness.hookimpl is harness.api.hookimpl  # the older spelling keeps working


def test_module_available_names_the_extra_of_bench_that_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert harness.api.module_available("nncf").reason == (
        "python package 'nncf' is not installed (pip install 'bench[openvino]')"
    )
    assert harness.api.module_available("torch").reason.endswith("(pip install 'bench[torch]')")
    # a third-party runtime is no extra of bench: no bench extra to suggest
    assert harness.api.module_available("my_runtime").reason == "python package 'my_runtime' is not installed"
