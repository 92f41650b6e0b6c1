"""Shared helpers of the benchmark scripts: run a scenario through the real harness in-process."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_scenario_text(text: str, out_root: Path, plugins: tuple[str, ...] = ()) -> list[dict]:
    """Run a scenario given as YAML text; return its journal records."""
    from harness.runner import RunOptions, run_scenario
    from harness.scenario import load_scenario_text

    scenario = load_scenario_text(text, source="<benchmark>")
    run = run_scenario(scenario, RunOptions(out_root=out_root, plugins=plugins, command="benchmark"))
    return list(run.records())


def temp_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TMPDIR")))
