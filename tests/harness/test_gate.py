"""bench gate: the scenario's gate subset, the statistics that decide, and the gate end to end with
the fake backend in real worker processes."""

from __future__ import annotations

import pytest

from harness.errors import ScenarioError
from harness.scenario import expand_cells, load_scenario_text

GATED = """\
name: g
model: toy
backends:
  - fake
  - {{name: other, precisions: [fp32]}}
precisions: [fp32, int8]
batch_sizes: [1, 2, 8]
{gate}
"""


def _gated(gate: str) -> str:
    return GATED.format(gate=gate)


def test_the_gate_subset_selects_cells_and_leaves_the_run_alone() -> None:
    whole = load_scenario_text(_gated(""), "s.yaml")
    subset = load_scenario_text(_gated("gate: {backends: [fake], batch_sizes: [1, 8]}"), "s.yaml")
    assert subset.gate is not None
    picked = [c for c in expand_cells(subset, 2) if subset.gate.selects(c)]
    assert {(c.backend, c.batch_size) for c in picked} == {("fake", 1), ("fake", 8)} and len(picked) == 4
    # what a run measures is unchanged: same cells, same fingerprint
    assert expand_cells(subset, 2) == expand_cells(whole, 2)
    assert subset.fingerprint() == whole.fingerprint()


@pytest.mark.parametrize(
    ("gate", "where", "words"),
    [
        ("gate: {batch_sizes: [1, 4]}", "s.yaml:8: gate.batch_sizes.1:", "4 names no cell"),
        ("gate: {backends: [nope]}", "s.yaml:8: gate.backends.0:", "'nope' names no cell"),
        ("gate: {batch_size: [1]}", "s.yaml:8: gate.batch_size:", "did you mean 'batch_sizes'"),
        ("gate: {backends: []}", "s.yaml:8: gate.backends:", "should not be empty"),
        # each value is in the scenario, the combination is not: backend other serves fp32 only
        ("gate: {backends: [other], precisions: [int8]}", "s.yaml:8: gate:", "no cell of the scenario has all"),
    ],
)
def test_a_gate_subset_naming_no_cell_is_an_error_at_its_key(gate: str, where: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(_gated(gate), "s.yaml")
    assert where in str(info.value) and words in str(info.value), str(info.value)
