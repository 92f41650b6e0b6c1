from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, bench, fake_scenario
from harness.metrics import describe, markdown


def test_docs_results_md_is_in_sync() -> None:
    assert (ROOT / "docs" / "results.md").read_text() == markdown(), "run: python -m harness.metrics > docs/results.md"


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_every_field_of_a_real_run_is_documented(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, faults="[none, raise]")
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--json", "--no-report")
    assert out.returncode == 0, out.stderr
    fields = set()
    for record in json.loads(out.stdout)["cells"]:
        fields |= set(record) | set(record["config"])
    fields.discard("config")
    undocumented = sorted(f for f in fields if describe(f) is None)
    assert undocumented == []
