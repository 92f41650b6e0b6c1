"""Cost arithmetic, the price catalog, Pareto frontiers, budgets and the CI outputs."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import bench, fake_scenario, journal, run_dirs
from harness.analysis import economics
from harness.analysis.economics import budget_verdicts, cost_per_million, dominates, pareto_front


def test_cost_per_million_is_hourly_price_over_hourly_samples() -> None:
    assert cost_per_million(3.60, 1000.0) == pytest.approx(1.00)  # $3.60/h at 1,000 samples/s: $1 per million
    assert cost_per_million(1.0, 0.0) is None and cost_per_million(1.0, None) is None
    # 10,000 samples/s wanted, 1,000 measured per machine, run at 70 %: ceil(14.29) = 15 machines
    assert economics.instances_needed(10_000, 1000.0, 0.7) == 15
    # 1e9 inferences a day at 1,000 samples/s, full use: 277.8 machine-hours a day, 30 days, $2/h
    assert economics.monthly_usd(2.0, 1000.0, 1e9, 1.0) == pytest.approx(1e9 / 3.6e6 * 30 * 2.0)


def test_the_catalog_covers_the_big_three_with_dated_sourced_prices() -> None:
    rows = economics.catalog()
    assert len(rows) >= 20
    assert {r.cloud for r in rows} == {"aws", "gcp", "azure"}
    gpus = " ".join(r.gpu or "" for r in rows)
    for gpu in ("A10G", "L4", "A100", "H100"):
        assert gpu in gpus, gpu
    for row in rows:
        assert row.hourly_usd > 0 and row.vcpus > 0
        assert row.source.startswith("https://") and len(row.as_of) >= 7 and row.region
    assert len({r.key for r in rows}) == len(rows)


def test_instances_are_found_by_name_and_unknown_ones_get_suggestions() -> None:
    assert economics.find_instance("aws/c7i.xlarge").hourly_usd == economics.find_instance("C7I.XLARGE").hourly_usd
    with pytest.raises(economics.UnknownInstance) as info:
        economics.find_instance("c7i.xlarg")
    assert "aws/c7i.xlarge" in info.value.suggestions
    with pytest.raises(economics.UnknownInstance) as info:
        economics.find_instance("h100")
    assert info.value.suggestions and all("h100" in s.lower() or "a3" in s or "p5" in s for s in info.value.suggestions)


points = st.lists(
    st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False)), min_size=1, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(points)
def test_pareto_front_keeps_exactly_the_undominated(values: list[tuple[float, float]]) -> None:
    rows = [{"cost": c, "throughput": t} for c, t in values]
    objectives = [("cost", "min"), ("throughput", "max")]
    front = set(pareto_front(rows, objectives))
    as_min = [(c, -t) for c, t in values]
    assert front, "a non-empty set has a frontier"
    for i in front:  # no frontier point is dominated
        assert not any(dominates(as_min[j], as_min[i]) for j in range(len(values)))
    for i in set(range(len(values))) - front:  # every excluded point is dominated by a frontier point
        assert any(dominates(as_min[j], as_min[i]) for j in front)


def test_pareto_front_skips_rows_without_the_metric_and_checks_its_arguments() -> None:
    rows = [{"a": 1.0, "b": 2.0}, {"a": None, "b": 0.0}, {"a": 0.5, "b": 3.0}]
    assert pareto_front(rows, [("a", "min"), ("b", "min")]) == [0, 2]
    with pytest.raises(ValueError, match="sense"):
        pareto_front(rows, [("a", "lowest")])


def test_budget_verdicts() -> None:
    record = {"status": "ok", "p99_ms": 4.0, "throughput_sps": 900.0, "p50_ms": None}
    verdicts = budget_verdicts(record, {"p99_ms": 5.0, "min_throughput_sps": 1000.0, "p50_ms": 1.0})
    assert verdicts["p99_ms"]["ok"] is True and verdicts["p99_ms"]["why"] == "p99 per call 4 ms <= limit 5 ms"
    assert verdicts["min_throughput_sps"]["ok"] is False and verdicts["min_throughput_sps"]["why"] == (
        "throughput 900 samples/s < limit 1000 samples/s"
    )
    assert verdicts["p50_ms"]["ok"] is None  # not measured for this cell: not judged
    failed = budget_verdicts({"status": "crashed"}, {"p99_ms": 5.0})
    assert failed["p99_ms"]["ok"] is False and "crashed" in failed["p99_ms"]["why"]
    served = budget_verdicts({**record, "config": {"load": "server"}}, {"p99_ms": 5.0})
    assert served["p99_ms"]["why"] == "p99 per query 4 ms <= limit 5 ms"  # LoadGen: a query is a request


def test_a_summary_never_says_all_budgets_met_of_verdicts_not_judged() -> None:
    from harness.output import ci

    judged = {"status": "ok", "label": "a", "budgets": {"p99_ms": {"ok": True, "limit": 5}}, "budgets_ok": True}
    unjudged = {
        "status": "ok",
        "label": "b",
        "budgets_ok": True,
        "budgets": {"p99_ms": {"ok": None, "limit": 5, "why": "not judged: a compile ran beside it"}},
    }
    assert "all budgets met" in ci.markdown([judged], {"p99_ms": 5}, "t")
    text = ci.markdown([judged, unjudged], {"p99_ms": 5}, "t")
    assert "all budgets met" not in text and "no budget broken, but **1 budget verdict(s) not judged**" in text
    assert "| pass |" in text and "| not judged |" in text


BUDGETED = """\
cost: {hourly_usd: 3.6}
budgets: {p99_ms: 0.5, min_throughput_sps: 1}
"""


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_budgets_gate_ci_with_junit_and_markdown(tmp_path: Path) -> None:
    # two cells: 0.2 ms per call meets a 0.5 ms p99 budget, 1.0 ms per call breaks it
    scenario = fake_scenario(tmp_path, batches="[1]", extra=BUDGETED)
    text = scenario.read_text().replace("options: {service_ms: 0.2}", "sweep: {service_ms: [0.2, 1.0]}")
    text = text.replace("    sweep:\n      fault: [none]\n", "")
    scenario.write_text(text)
    out, junit, md = tmp_path / "r", tmp_path / "junit.xml", tmp_path / "summary.md"
    done = bench("run", str(scenario), "--out", str(out), "--no-report", "--fail-on-budget",
                 "--junit", str(junit), "--summary-md", str(md))  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "1 budget(s) broken" in done.stderr and "p99_ms" in done.stderr and "Traceback" not in done.stderr
    records = {r["config"]["backend_options"]["service_ms"]: r for r in journal(run_dirs(out)[0])}
    fast, slow = records[0.2], records[1.0]
    assert fast["budgets_ok"] is True and slow["budgets_ok"] is False
    assert fast["cost_per_million_usd"] == pytest.approx(3.6 / (fast["throughput_sps"] * 3600) * 1e6)
    assert fast["price_source"] == "scenario (hourly_usd)"

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "0")
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["p99_ms"] and "1.0" in failed[0].get("classname", "")
    summary = md.read_text()
    assert "**1 budget(s) broken**" in summary and "| FAIL |" in summary and "| pass |" in summary

    # the same run without --fail-on-budget: reported, exit 0
    again = bench("run", str(scenario), "--out", str(out), "--no-report")
    assert again.returncode == 0 and "budget(s) broken" in again.stderr

    # the cheapest configuration that meets the SLO, and why the other lost
    rec = bench("recommend", str(run_dirs(out)[0]), "--p99-ms", "0.5")
    assert rec.returncode == 0, rec.stderr
    assert "service_ms=0.2" in rec.stdout.splitlines()[0]
    assert "service_ms=1.0" in rec.stdout and "> 0.5 ms" in rec.stdout
    looser = bench("recommend", str(run_dirs(out)[0]), "--p99-ms", "50")
    assert "service_ms=0.2" in looser.stdout.splitlines()[0] and "costs more" in looser.stdout
    none = bench("recommend", str(run_dirs(out)[0]), "--p99-ms", "0.01")
    assert none.returncode == 1 and "no configuration meets" in none.stdout
    bad = bench("recommend", str(run_dirs(out)[0]), "--p99-ms", "1", "--min-agreement", "1.5")
    assert bad.returncode == 2 and "[0, 1]" in bad.stderr


@pytest.mark.usefixtures("fake_plugin")
@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("cost: {instance: c7i.xlarg}\n", "cost.instance: instance 'c7i.xlarg' is not in the price catalog; nearest: "
                                          "aws/c7i.xlarge"),
        ("cost: {hourly_usd: -2}\n", "cost.hourly_usd: Input should be greater than 0 (got -2)"),
        ("budgets: {p98_ms: 2}\n", "budgets.p98_ms: no metric 'p98_ms' to budget; did you mean 'p99_ms'?"),
        ("budgets: {cost_per_million_usd: 1}\n", "a cost_per_million_usd budget needs a price"),
        ("cost: {hourly_usd: 1, utilisation: 1.5}\n", "cost.utilisation: Input should be less than or equal to 1"),
    ],
)  # fmt: skip
def test_bad_cost_and_budget_input_is_exit_2(tmp_path: Path, extra: str, fragment: str) -> None:
    scenario = fake_scenario(tmp_path, extra=extra)
    done = bench("validate", str(scenario))
    assert done.returncode == 2
    assert fragment in done.stderr and "Traceback" not in done.stderr


def test_list_instances_prints_the_catalog() -> None:
    done = bench("list", "instances")
    assert done.returncode == 0
    assert "aws/p5.48xlarge" in done.stdout and "8x H100" in done.stdout and "2024-06" in done.stdout


def test_json_cost_fields_are_documented() -> None:
    from harness.metrics import describe

    for field in ("hourly_usd", "price_source", "cost_per_million_usd", "instances_needed", "monthly_usd",
                  "budgets", "budgets_ok"):  # fmt: skip
        assert describe(field) is not None, field
    assert json.dumps(economics.BUDGETS["p99_ms"].__dict__)


def _cell(batch: int, p99: float, *, load: str = "single_stream", **more: object) -> dict:
    return {"status": "ok", "label": f"m b{batch} {load}", "p99_ms": p99, "p50_ms": p99 / 2,
            "config": {"batch_size": batch, "load": load}, **more}  # fmt: skip


def test_trust_follows_the_recorded_field_and_else_the_noisy_flag() -> None:
    assert economics.is_trusted({"status": "ok"}) and economics.untrusted_reason({"status": "ok"}) is None
    old = {"noisy": True, "noise_fraction": 0.53, "attempts": 2}
    assert not economics.is_trusted(old)
    assert economics.untrusted_reason(old) == (
        "other processes used 53% of the CPUs while it was measured (noise_fraction, the quieter of its 2 attempts)"
    )
    recorded = {"noisy": True, "trusted": True}  # the run's own verdict wins over the legacy flag
    assert economics.is_trusted(recorded)
    assert economics.untrusted_reason({"trusted": False, "untrusted_reason": "a compile ran"}) == "a compile ran"
    # an untrusted cell loses an SLO whatever its numbers
    meets = economics.slo_check(10.0, None)
    assert meets(_cell(1, 0.1)) is None and (meets(_cell(1, 0.1, noisy=True)) or "").startswith("untrusted: ")


def test_request_latency_adds_the_gathering_time_of_a_batch_or_leaves_it_out() -> None:
    single = [_cell(1, 0.2), _cell(64, 1.5)]
    gathering = economics.latency_basis(single, 100_000.0, "cost.target_qps")
    assert gathering.basis == "gathering" and "estimated, not measured" in gathering.describe()
    assert economics.request_latency(single[0], gathering) == (0.2, "per call = per request at batch 1")
    value, how = economics.request_latency(single[1], gathering)
    assert value == pytest.approx(1.5 + 63 / 100_000 * 1e3) and how.startswith("estimate: p99 per call 1.5 ms")
    # no rate: batch > 1 is left out, with why
    unknown = economics.latency_basis(single, None)
    assert unknown.basis == "per_call" and "batch > 1 left out" in unknown.describe()
    value, why = economics.request_latency(single[1], unknown)
    assert value is None and "--qps" in why
    # a 2 ms SLO per request: the batch-64 cell that met it per call does not once gathering counts
    meets = economics.slo_check(2.0, None, latency=lambda row: economics.request_latency(row, gathering))
    assert meets(single[0]) is None and "2.13" in (meets(single[1]) or "")
    # server cells measure it: single-stream cells are then left out of latency answers
    served = [*single, _cell(16, 3.0, load="server", target_qps=5000.0), _cell(16, 0.0, load="offline")]
    server = economics.latency_basis(served, 100_000.0)
    assert server.basis == "server"
    assert economics.request_latency(served[2], server) == (3.0, "measured per request at 5,000 queries/s, "
                                                                 "batching up to b16 included")  # fmt: skip
    assert economics.request_latency(served[0], server)[0] is None
    assert economics.request_latency(served[3], gathering)[0] is None  # offline has no latency percentiles


def test_a_fleet_rate_is_shared_by_the_machines_a_cell_needs_and_an_overloaded_cell_is_left_out() -> None:
    fleet = economics.latency_basis([_cell(64, 0.5)], 100_000.0, economics.FLEET_RATE_SOURCE)
    two = _cell(64, 0.5, instances_needed=2, throughput_sps=80_000.0)  # each machine gets 50,000/s
    value, how = economics.request_latency(two, fleet)
    assert value == pytest.approx(0.5 + 63 / 50_000 * 1e3) and "(100,000/s (cost.target_qps) over 2 machines)" in how
    one_queue = economics.latency_basis([two], 100_000.0, "--qps")  # --qps is the rate at one queue
    slow, why = economics.request_latency(two, one_queue)
    assert slow is None and "its throughput 80,000 samples/s is under the 100,000 requests/s reaching it" in why
    small = _cell(1, 0.05, throughput_sps=15_000.0)  # batch 1 queues too when the rate outruns it
    assert economics.request_latency(small, one_queue)[0] is None


def test_no_answer_comes_from_wrong_outputs_or_a_lucky_repeat() -> None:
    meets = economics.slo_check(10.0, None)
    assert meets(_cell(1, 0.1, fidelity_ok=False, fidelity_reason="cosine 0.9 < 0.99 (int8)")) == (
        "fidelity failed: cosine 0.9 < 0.99 (int8)")  # fmt: skip
    assert meets(_cell(1, 0.1, outputs_finite=False)) == "its outputs were not all finite numbers"
    repeats = [_cell(8, 1.0, cell_id="c", repeat=i, throughput_sps=t) for i, t in enumerate((7376.0, 7361.0, 7300.0))]
    other = _cell(1, 0.1, cell_id="d", throughput_sps=100.0)
    picked = economics.one_per_cell([*repeats, other])
    assert [r["throughput_sps"] for r in picked] == [7361.0, 100.0]  # the median repeat, in the records' order
    busy = {**repeats[0], "trusted": False}
    assert economics.one_per_cell([busy, repeats[2]]) == [repeats[2]]  # a trusted repeat before a disturbed one


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 99), st.floats(1.0, 1e6))
def test_the_gathering_wait_is_the_99th_percentile_wait_of_an_evenly_filled_batch(batch: int, qps: float) -> None:
    """Requests i = 0 .. B-1 of a batch arrive at i / qps and all leave when the call ends: the
    first waits longest, (B - 1) / qps, and for B < 100 that is the 99th percentile (nearest rank)
    of their waits."""
    waits = sorted((batch - 1 - i) / qps * 1e3 for i in range(batch))
    p99 = waits[-(-99 * batch // 100) - 1]  # nearest rank: the ceil(0.99 B)-th smallest
    assert economics.gathering_ms(batch, qps) == pytest.approx(waits[-1]) == pytest.approx(p99)


def test_untrusted_cells_are_left_out_of_the_tables_frontier_flags() -> None:
    from harness.store import records_to_frame

    quiet = {"status": "ok", "label": "quiet", "p99_ms": 2.0, "throughput_sps": 1000.0, "config": {}}
    # a disturbed cell that looks better on both: it must neither join the frontier nor push quiet off it
    noisy = {"status": "ok", "label": "noisy", "p99_ms": 1.0, "throughput_sps": 5000.0, "noisy": True, "config": {}}
    frame = records_to_frame([quiet, noisy]).set_index("label")
    assert frame.loc["quiet", "pareto_latency_throughput"] is True
    assert frame.loc["noisy", "pareto_latency_throughput"] is None


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_recommend_judges_the_slo_per_request_with_the_time_a_batch_takes_to_gather(tmp_path: Path) -> None:
    # 0.2 ms a call at batch 1 and at batch 64: b64 is 64x cheaper; at 1,000 requests/s its first
    # request waits 63 ms for the other 63
    scenario = fake_scenario(tmp_path, batches="[1, 64]", extra="cost: {hourly_usd: 3.6, target_qps: 1000}\n")
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (run_dir,) = run_dirs(tmp_path / "r")
    p99 = {r["config"]["batch_size"]: r["p99_ms"] for r in journal(run_dir)}
    slo = f"{max(p99.values()) * 1.01:.6f}"  # per call, both cells meet it (a busy machine sets the scale)
    planned = bench("recommend", str(run_dir), "--p99-ms", slo)
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines()[0].endswith(" b1") and "per call = per request at batch 1" in planned.stdout
    assert "estimated, not measured" in planned.stdout and "(cost.target_qps)" in planned.stdout
    assert re.search(r"b64: p99 6\d\.\d+ ms > [\d.]+ ms \(estimate: p99 per call [\d.]+ ms \+ 63 ms gathering 63 more "
                     r"requests at 1,000/s\)", planned.stdout), planned.stdout  # fmt: skip
    # a rate b64 serves at half its throughput, and an SLO with room for its batch to gather at that
    # rate: b64 meets it and is the cheapest; b1 cannot keep up with the rate, and is left out saying so
    qps = next(r["throughput_sps"] for r in journal(run_dir) if r["config"]["batch_size"] == 64) / 2
    roomy = f"{p99[64] * 1.01 + 63 / qps * 1e3 * 1.05:.6f}"
    faster = bench("recommend", str(run_dir), "--p99-ms", roomy, "--qps", f"{qps:.0f}")
    assert faster.stdout.splitlines()[0].endswith(" b64") and "(--qps)" in faster.stdout, faster.stdout
    assert "ms gathering 63 more requests" in faster.stdout
    assert "b1: its throughput" in faster.stdout and "its queue would grow without bound" in faster.stdout
    # no rate known (a run priced by the hour only): batch 64 is left out, and the output says why
    manifest = (run_dir / "manifest.json").read_text().replace('"target_qps": 1000.0', '"target_qps": null')
    (run_dir / "manifest.json").write_text(manifest)
    unknown = bench("recommend", str(run_dir), "--p99-ms", slo)
    assert unknown.stdout.splitlines()[0].endswith(" b1"), unknown.stdout
    assert "batch > 1 left out" in unknown.stdout
    assert "b64: batch 64: a request also waits for 63 more" in unknown.stdout
