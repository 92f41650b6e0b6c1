"""What bench writes for people and machines to read stays readable: CI files, comparisons,
messages, limits and the report's charts, through the real command line and the fake backend."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import pytest

from conftest import bench, fake_scenario, journal, run_dirs
from harness.analysis import comparison, render
from harness.errors import UsageError
from harness.output import ci as verdicts

#: an option value with a Markdown column separator, a bell and a control character XML 1.0 forbids
NASTY = "a|b\a\x01"


def _table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table row, split on the pipes Markdown reads as column separators."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            rows.append(re.split(r"(?<!\\)\|", line.strip())[1:-1])
    return rows


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_junit_and_markdown_stay_valid_with_any_option_value(tmp_path: Path) -> None:
    # the value reaches the cell's label through a sweep axis (spawn_tag: a free-text option, unused
    # without fault=spawn); a budget no cell meets puts the label in the broken-budget table and in
    # a JUnit failure too
    scenario = fake_scenario(tmp_path, extra="budgets: {p99_ms: 0.0001}\n")
    text = scenario.read_text().replace("      fault: [none]\n", '      spawn_tag: ["a|b\\a\\x01"]\n')
    scenario.write_text(text)
    junit, md = tmp_path / "junit.xml", tmp_path / "summary.md"
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report", "--junit", str(junit),
                 "--summary-md", str(md))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = journal(run_dirs(tmp_path / "r")[0])
    assert record["config"]["backend_options"]["spawn_tag"] == NASTY and record["status"] == "ok"

    suite = ET.parse(junit).getroot().find("testsuite")  # parses: no character XML 1.0 forbids
    assert suite is not None
    (case,) = suite.iter("testcase")
    assert "a|b\\x07\\x01" in case.get("classname", "") and case.find("failure") is not None  # told apart

    rows = _table_rows(md.read_text())
    assert len(rows) == 6  # two tables: header, rule and one row each
    assert [len(r) for r in rows[:3]] == [4, 4, 4] and [len(r) for r in rows[3:]] == [7, 7, 7]
    assert "a\\|b\\x07\\x01" in md.read_text() and "\x01" not in md.read_text()
    (run,) = run_dirs(tmp_path / "r")
    compared = bench("compare", str(run), str(run), "--format", "md")  # published beside the summary
    assert compared.returncode == 0, compared.stderr
    assert [len(r) for r in _table_rows(compared.stdout)] == [5, 5, 5]
    # every character XML 1.0 forbids, a surrogate and U+FFFF included
    forbidden = "".join(map(chr, [*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xD800, 0xFFFE, 0xFFFF]))
    ET.fromstring(verdicts.junit_xml([{"label": forbidden, "status": "failed", "reason": forbidden}], {}, "s"))
    assert verdicts.md_cell("x\r\ny|z") == "x<br>y\\|z"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["recommend", "RUN", "--p99-ms", "nan"], "--p99-ms"),
        (["recommend", "RUN", "--p99-ms", "inf"], "--p99-ms"),
        (["recommend", "RUN", "--p99-ms", "-3"], "--p99-ms"),
        (["recommend", "RUN", "--p99-ms", "1", "--min-throughput", "nan"], "--min-throughput"),
        (["recommend", "RUN", "--p99-ms", "1", "--min-throughput", "-5"], "--min-throughput"),
        (["recommend", "RUN", "--p99-ms", "1", "--min-agreement", "nan"], "--min-agreement"),
        (["recommend", "RUN", "--p99-ms", "1", "--hourly-usd", "inf"], "--hourly-usd"),
        (["history", "ROOT", "--threshold", "nan"], "--threshold"),
        (["history", "ROOT", "--threshold", "-5"], "--threshold"),
        (["compare", "A", "B", "--threshold", "nan"], "--threshold"),
        (["compare", "A", "B", "--threshold", "-inf"], "--threshold"),
        (["compare", "A", "B", "--alpha", "nan"], "--alpha"),
        (["compare", "A", "B", "--screen-alpha", "nan"], "--screen-alpha"),
    ],
)  # fmt: skip
def test_limits_that_are_not_finite_or_are_negative_are_refused(args: list[str], option: str, tmp_path: Path) -> None:
    # the limits are checked before any folder is read: none of these needs a run
    args = [str(tmp_path / a) if a.isupper() else a for a in args]
    out = bench(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert option in out.stderr and "Traceback" not in out.stderr and not out.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_threshold_is_in_percent_everywhere_and_a_fraction_looking_one_is_flagged(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (run,) = run_dirs(tmp_path / "r")
    tiny = bench("compare", str(run), str(run), "--threshold", "0.05")
    assert tiny.returncode == 0, tiny.stderr
    assert "--threshold 0.05 is read as 0.05 %; for 5 % give 5" in tiny.stderr
    assert "threshold 0.05 %" in tiny.stdout  # not rounded to "0%"
    plain = bench("compare", str(run), str(run), "--threshold", "5")
    assert plain.returncode == 0 and "warning" not in plain.stderr and "threshold 5 %" in plain.stdout
    assert "percent" in bench("compare", "--help").stdout
    history = bench("history", str(tmp_path / "r"), "--threshold", "0.2")
    assert history.returncode == 0 and "--threshold 0.2 is read as 0.2 %; for 20 % give 20" in history.stderr
    with pytest.raises(UsageError) as refused:  # the library's own check speaks percent too
        comparison.compare_runs(run, run, threshold=5.0)
    assert "%" in str(refused.value) and "fraction" not in str(refused.value)


def _fault_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Two real runs of four cells: one measured in both, one failed and one skipped in both, and one
    that allocates 160 MiB, measured in the baseline and killed by the candidate's memory cap."""
    scenario = fake_scenario(tmp_path, faults="[none, raise, skip, alloc]")
    scenario.write_text(scenario.read_text().replace("{service_ms: 0.2}", "{service_ms: 0.2, alloc_mb: 160}"))
    assert bench("run", str(scenario), "--out", str(tmp_path / "b"), "--no-report").returncode == 0
    scenario.write_text(scenario.read_text().replace("timeout_s: 30", "timeout_s: 30\n  memory_mb: 120"))
    assert bench("run", str(scenario), "--out", str(tmp_path / "c"), "--no-report").returncode == 0
    (base,), (cand,) = run_dirs(tmp_path / "b"), run_dirs(tmp_path / "c")
    assert {r["status"] for r in journal(cand)} == {"ok", "failed", "skipped", "oom"}
    return base, cand


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_cells_not_measured_in_both_runs_are_listed_apart_with_why(tmp_path: Path) -> None:
    base, cand = _fault_runs(tmp_path)
    out = bench("compare", str(base), str(cand), "--format", "json", "--json-out", str(tmp_path / "c.json"))
    assert out.returncode == 1, out.stderr  # the candidate lost a cell the baseline measured: a regression
    result = json.loads(out.stdout)
    assert [c["label"] for c in result["cells"]] == [r["label"] for r in journal(cand) if r["status"] == "ok"]
    # one cell compared (its verdict is the machine's noise between two short runs: not asserted)
    assert sum(result["counts"].values()) == 1 and all(c["metrics"] for c in result["cells"])
    missing = {m["label"].split("fault=")[1].split(",")[0]: m for m in result["not_measured"]}
    assert set(missing) == {"raise", "skip", "alloc"}
    lost = missing["alloc"]
    assert (lost["missing_in"], lost["verdict"], lost["baseline_status"], lost["candidate_status"]) == (
        "candidate", "regressed", "ok", "oom")  # fmt: skip
    assert "cap of 120 MiB" in lost["candidate_reason"]
    assert missing["raise"]["missing_in"] == "both" and missing["raise"]["verdict"] == "not compared"
    assert "injected failure" in missing["raise"]["candidate_reason"]
    assert missing["skip"]["baseline_status"] == "skipped"

    text = bench("compare", str(base), str(cand)).stdout
    assert "1 cells compared: " in text and "3 cell(s) not measured in both runs" in text
    # the cap's wording depends on who enforced it: the kernel (a cgroup) or bench's own poll
    reason = lost["candidate_reason"]
    assert f"oom in the candidate ({reason}" in text and "skipped in both (injected skip" in text
    md = bench("compare", str(base), str(cand), "--format", "md").stdout
    assert "**regression**" in md and "| regressed | toy fake[alloc_mb=160,fault=alloc" in md
    assert f"oom: {reason}" in md
    # the other way round the cell is one the candidate gained: listed, not a regression
    back = bench("compare", str(cand), str(base), "--format", "json")
    assert back.returncode == 0, back.stderr
    gained = [m for m in json.loads(back.stdout)["not_measured"] if m["missing_in"] == "baseline"]
    assert len(gained) == 1 and gained[0]["verdict"] == "not compared"
    # drawn in the report from the JSON written, the same as when compared there
    for how in (("--comparison", str(tmp_path / "c.json")), ("--baseline", str(base))):
        page = tmp_path / f"report{how[0]}.html"
        assert bench("report", str(cand), *how, "-o", str(page)).returncode == 0
        section = page.read_text().split('<section class="compare">')[1].split("</section>")[0]
        assert "Not measured in both runs" in section and "cap of 120 MiB" in section
    data = json.loads((tmp_path / "c.json").read_text())
    assert render.comparison_from_dict(data).as_dict() == data  # read back whole
    # measured again, under the candidate's scenario (its memory cap) on both sides: the baseline's code
    # runs out of memory there too, so the loss is the cap's, not the candidate code's
    again = bench("compare", str(base), str(cand), "--confirm", "--confirm-repeats", "2", "--format", "json")
    assert again.returncode == 0, again.stdout + again.stderr
    result = json.loads(again.stdout)
    (alloc,) = [m for m in result["not_measured"] if "fault=alloc" in m["label"]]
    assert (alloc["missing_in"], alloc["verdict"]) == ("both", "not compared")
    assert alloc["screen_verdict"] == "regressed (oom in the candidate)" and result["confirmation"]["held"] == 0
    assert all(c["metrics"] for c in result["cells"])


@pytest.mark.usefixtures("fake_plugin")
def test_history_of_a_run_folder_points_at_its_results_root(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (run,) = run_dirs(tmp_path / "r")
    out = bench("history", str(run))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{run} is a run folder; give its results root ({run.parent})" in out.stderr
    assert bench("history", str(tmp_path / "r")).returncode == 0


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_comparing_a_quick_run_with_a_full_one_says_which_is_quick(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path)
    assert bench("run", str(scenario), "--out", str(tmp_path / "full"), "--no-report").returncode == 0
    assert bench("run", str(scenario), "--quick", "--out", str(tmp_path / "quick"), "--no-report").returncode == 0
    (full,), (quick,) = run_dirs(tmp_path / "full"), run_dirs(tmp_path / "quick")
    out = bench("compare", str(full), str(quick), "--format", "json")
    assert out.returncode in (0, 1), out.stderr
    assert f"the candidate ({quick}) is a --quick run" in out.stderr and "0.2-0.4 s windows" in out.stderr
    assert json.loads(out.stdout)["quick"] == {"baseline": False, "candidate": True}
    back = bench("compare", str(quick), str(full))
    assert f"the baseline ({quick}) is a --quick run" in back.stderr
    same = bench("compare", str(full), str(full), "--format", "json")
    assert "quick" not in same.stderr and json.loads(same.stdout)["quick"] == {"baseline": False, "candidate": False}


def test_list_scenarios_outside_the_repository_says_where_it_looked(tmp_path: Path) -> None:
    out = bench("list", "scenarios", cwd=tmp_path)
    assert out.returncode == 0 and not out.stdout
    assert str(tmp_path / "scenarios") in out.stderr and "no scenario" in out.stderr
    inside = bench("list", "scenarios")
    assert inside.returncode == 0 and "scenarios/rec.yaml" in inside.stdout and not inside.stderr


@pytest.mark.usefixtures("fake_plugin")
def test_budget_verdicts_say_what_happened(tmp_path: Path) -> None:
    # 0.2 ms a call: a p99 budget of 3 ms is met, one of 0.0001 ms broken; the same wording everywhere
    scenario = fake_scenario(tmp_path, extra="budgets: {p99_ms: 0.0001, p50_ms: 3}\n")
    md, junit = tmp_path / "s.md", tmp_path / "j.xml"
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "rep"),
                 "--summary-md", str(md), "--junit", str(junit))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = journal(run_dirs(tmp_path / "r")[0])
    broken, met = record["budgets"]["p99_ms"]["why"], record["budgets"]["p50_ms"]["why"]
    assert re.fullmatch(r"p99 per call \d+\.\d+ ms > limit 0\.0001 ms", broken), broken
    assert re.fullmatch(r"p50 per call \d+\.\d+ ms <= limit 3 ms", met), met
    assert f"p99_ms: {broken}" in done.stderr and broken in md.read_text()
    failure = ET.parse(junit).getroot().find(".//failure")
    assert failure is not None and failure.get("message") == f"p99_ms: {broken}"
    (page,) = (tmp_path / "rep").glob("*.html")
    html = page.read_text()
    assert escape(f"FAIL: {broken}") in html and escape(f"pass: {met}") in html


def _many_series_scenario(tmp_path: Path, lines: int) -> Path:
    """A fake sweep of ``lines`` service times: as many lines in each chart across batch sizes, and
    twice as many in the latency chart (each cell's p50 and p99)."""
    values = ", ".join(f"{0.1 + 0.01 * i:.2f}" for i in range(lines))
    scenario = fake_scenario(tmp_path, min_s=0.05, max_s=0.1)
    scenario.write_text(scenario.read_text().replace("options: {service_ms: 0.2}", f"sweep: {{service_ms: [{values}]}}")
                        .replace("    sweep:\n      fault: [none]\n", ""))  # fmt: skip
    return scenario  # (the fake scenario's noise_threshold 1.0: no cell untrusted on a busy machine)


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_chart_lines_keep_distinct_names_and_looks(tmp_path: Path) -> None:
    scenario = _many_series_scenario(tmp_path, 11)
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "rep"))
    assert done.returncode == 0, done.stderr
    (page,) = (tmp_path / "rep").glob("*.html")
    data = re.search(r'<script id="chart-data" type="application/json">(.*?)</script>', page.read_text(), re.S)
    assert data is not None
    charts = {c["id"]: c for c in json.loads(data[1])[0]}
    for chart in charts.values():
        datasets = chart["config"]["data"]["datasets"]
        if chart["config"]["type"] != "scatter" or len(datasets) < 2:
            continue
        names = [d["label"] for d in datasets]
        assert len(set(names)) == len(names), (chart["id"], names)
        looks = [(d.get("borderColor"), tuple(d.get("borderDash") or [])) for d in datasets]
        assert len(set(looks)) == len(looks), (chart["id"], looks)  # never the same colour and pattern twice
    # 22 latency lines (each cell's p50 and p99) become small multiples of at most eight, a cell's
    # pair kept together, the words every line of a chart shares said once under its title
    latency = [c["config"] for cid, c in charts.items() if cid.startswith("latency")]
    names = [d["label"] for chart in latency for d in chart["data"]["datasets"]]
    assert len(latency) == 3 and all(len(c["data"]["datasets"]) <= 8 for c in latency)
    assert len(names) == 22 and "p50 service_ms=0.1" in names and "p99 service_ms=0.1" in names
    assert all(c["options"]["plugins"]["subtitle"]["text"] == ["every line: toy fake cpu fp32"] for c in latency)
    # up to 30 lines never repeat a (colour, pattern) pair, and the shapes keep going well beyond
    from harness.report.charts import line_style

    styles = [line_style(i) for i in range(210)]
    assert len({(s["borderColor"], tuple(s["borderDash"])) for s in styles[:30]}) == 30
    assert len({(s["borderColor"], tuple(s["borderDash"]), s["pointStyle"]) for s in styles}) == 210
