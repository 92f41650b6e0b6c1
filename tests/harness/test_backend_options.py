"""Backend options are declared with their values; the harness checks every value a scenario gives
before anything runs (a scenario error at its line), never a cell skipped after the sweep."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conftest import bench, fake_scenario, run_dirs
from harness.api import Backend, Cell, Option, Session
from harness.errors import ScenarioError
from harness.planning import check_scenario
from harness.pluginmanager import registries
from harness.scenario import load_scenario_text


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        (Option("m", choices=("a", "b")), "c", "must be one of a, b, got 'c'"),
        (Option("m", choices=("a", "b")), "a", None),
        (Option("m", choices=(1, 2)), True, "must be one of 1, 2, got True"),  # a boolean is not the number 1
        (Option("m", type=int, minimum=1), 0, "must be an integer >= 1, got 0"),
        (Option("m", type=int, minimum=1), "2", "must be an integer >= 1, got '2'"),
        (Option("m", type=int, minimum=1), True, "must be an integer >= 1, got True"),
        (Option("m", type=int, minimum=1), 2.0, "must be an integer >= 1, got 2.0"),
        (Option("m", type=int, minimum=1), 3, None),
        (Option("m", type=float, minimum=0), 2, None),  # an integer is a number
        (Option("m", type=float, minimum=0), -0.5, "must be a number >= 0, got -0.5"),
        (Option("m", type=bool), "yes", "must be true or false, got 'yes'"),
        (Option("m", type=int, minimum=1, choices=("auto",)), "auto", None),
        (Option("m", type=int, minimum=1, choices=("auto",)), "many", "must be auto or an integer >= 1, got 'many'"),
        (Option("m", type=(str, int)), 4, None),
        (Option("m"), [1], None),  # undeclared values: anything
        (Option("m", type=str, check=lambda v: None if "," in v else "must hold a comma"), "a", "must hold a comma"),
        # without a type (nor choices) the check applies to any value
        (Option("m", check=lambda v: None if isinstance(v, str) else "must be text"), 3, "must be text"),
        (Option("m", check=lambda v: None if isinstance(v, str) else "must be text"), "x", None),
    ],
)
def test_option_problem(option: Option, value: Any, problem: str | None) -> None:
    assert option.problem(value) == problem


def test_option_describe_for_the_listing() -> None:
    assert Option("level", choices=("x", "y"), default="x").describe() == "level (one of x, y; default x)"
    assert Option("threads", type=int, minimum=1).describe() == "threads (an integer >= 1)"


class Strings(Backend):
    """A backend of the older form: options as name -> meaning, any value."""

    name = "strings"
    options: ClassVar[dict[str, str]] = {"anything": "takes any value"}

    def prepare(self, model: Any, cell: Cell, workdir: Path) -> Session:
        raise NotImplementedError


def test_plain_string_options_take_any_value() -> None:
    assert Strings.option_specs() == {"anything": Option("takes any value")}
    assert Strings.option_problem({"anything": [1, "x"]}) is None
    assert Strings.option_problem({"colour": 1}) == "backend 'strings' has no option colour (known: anything)"
    cell = Cell("m", "strings", "cpu", "fp32", 1, 1, backend_options={"anything": 3})
    assert Strings.option_values(cell) == {"anything": 3}


SCENARIO = """\
name: opts
model: toy
backends:
  - name: fake
    options:
      service_ms: 0.1
{extra}batch_sizes: [1]
fidelity: {{samples: 0}}
"""


def check(extra: str) -> None:
    scenario = load_scenario_text(SCENARIO.format(extra=textwrap.indent(extra, "    ")), source="opts.yaml")
    check_scenario(scenario, registries(["plugins.fake"], autoload=False))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  fault: explode\n",
         "opts.yaml:7: backends.0.options.fault: backend 'fake' option fault must be one of none, raise, segfault, "
         "abort, hang, exit, alloc, skip, spawn, got 'explode'"),
        ("  servce_ms: 2\n",
         "opts.yaml:7: backends.0.options.servce_ms: backend 'fake' has no option servce_ms; did you mean "
         "'service_ms'? (known: "),
        ("sweep:\n  fault_after: [1, -1]\n",
         "opts.yaml:8: backends.0.sweep.fault_after.1: backend 'fake' option fault_after must be an integer >= 0, "
         "got -1"),
        ("sweep:\n  faults: [none]\n", "opts.yaml:8: backends.0.sweep.faults: backend 'fake' has no option faults"),
    ],
)  # fmt: skip
def test_check_scenario_refuses_bad_options_at_their_line(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        check(extra)
    assert str(info.value).startswith(message), str(info.value)


def test_check_scenario_takes_declared_values() -> None:
    check("  fault: none\nsweep:\n  per_sample_us: [0, 1.5]\n")


def test_validate_and_run_exit_2_on_a_bad_option_before_any_run_folder(tmp_path: Path) -> None:
    """Before, a misspelt value was a skipped cell: validate said 'valid' and run exited 0."""
    scenario = fake_scenario(tmp_path, faults="[none, explode]")
    env = {"BENCH_PLUGINS": "plugins.fake"}
    expected = (
        f"bench: error: {scenario}:7: backends.0.sweep.fault.1: backend 'fake' option fault must be one of none, "
        "raise, segfault, abort, hang, exit, alloc, skip, spawn, got 'explode'"
    )
    checked = bench("validate", str(scenario), env=env)
    assert checked.returncode == 2 and checked.stderr.strip() == expected, checked.stderr
    out = tmp_path / "results"
    ran = bench("run", str(scenario), "--out", str(out), "--no-report", env=env)
    assert ran.returncode == 2 and ran.stderr.strip() == expected, ran.stderr
    assert not out.exists() or run_dirs(out) == []


def test_list_backends_shows_each_option_with_its_values() -> None:
    listed = bench("list", "backends")
    assert listed.returncode == 0, listed.stderr
    assert "option graph_optimization: onnxruntime graph optimisation level (one of disable, basic, extended, " \
        "all; default all)" in listed.stdout  # fmt: skip
    assert "option streams: NUM_STREAMS; default: what the hint picks (auto or an integer >= 1)" in listed.stdout
