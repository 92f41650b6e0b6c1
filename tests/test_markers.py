"""The e2e marker is given by rule (tests/conftest.py): the rule on a module of each shape it must catch."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import _cli_functions

#: a test module of every shape; "PKG" stands for harness, so that this file is not itself e2e by the rule
MODULE = '''
import subprocess, sys
from conftest import bench

SCRIPT = """
import subprocess, sys
subprocess.run([sys.executable, "-m", "PKG", "run", sys.argv[1]])
"""

def _sweep(tmp_path):
    return bench("run", str(tmp_path / "s.yaml"))

def _twice(tmp_path):
    return [_sweep(tmp_path), _sweep(tmp_path)]

@pytest.fixture
def swept(tmp_path):
    return _sweep(tmp_path)

def test_direct(tmp_path):
    assert bench("list", "backends").returncode == 0

def test_through_helpers(tmp_path):
    _twice(tmp_path)

def test_through_a_fixture(swept):
    pass

def test_popen(tmp_path):
    subprocess.Popen([sys.executable, "-m", "PKG", "doctor"]).wait()

def test_a_script_that_starts_it(tmp_path):
    subprocess.run([sys.executable, "-c", SCRIPT, "x"])

def test_in_process(tmp_path):
    from harness.scenario import load_scenario
    subprocess.run([sys.executable, "-c", "print(1)"])

class TestGrouped:
    def _go(self):
        return bench("doctor")

    def test_method(self):
        self._go()

    def test_plain(self):
        pass
'''


def test_the_e2e_rule_follows_helpers_fixtures_and_scripts(tmp_path: Path) -> None:
    path = tmp_path / "test_shapes.py"
    path.write_text(MODULE.replace("PKG", "harness"))
    found = {name for name in _cli_functions(path) if name.rsplit(".", 1)[-1].startswith("test")}
    assert found == {
        "test_direct",
        "test_through_helpers",
        "test_through_a_fixture",
        "test_popen",
        "test_a_script_that_starts_it",
        "TestGrouped.test_method",
    }


def test_markers_are_registered(pytestconfig: pytest.Config) -> None:
    declared = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"e2e", "slow"} <= declared
