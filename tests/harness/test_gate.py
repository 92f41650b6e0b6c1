"""bench gate: the scenario's gate subset, the statistics that decide, and the gate end to end with
the fake backend in real worker processes."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, bench, fake_scenario, journal, run_dirs
from harness.analysis import gate, gate_sides, render
from harness.analysis import gate_stats as gs
from harness.analysis.comparison import Comparison
from harness.errors import ScenarioError, UsageError
from harness.scenario import expand_cells, load_scenario, load_scenario_text

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


def test_the_gate_runs_its_processes_with_its_own_cpu_settings() -> None:
    plain = load_scenario_text(_gated("gate: {batch_sizes: [1]}"), "s.yaml")
    steady = load_scenario_text(_gated("gate: {batch_sizes: [1], cpu: {reserve: 1, pin: true}}"), "s.yaml")
    assert gate.gate_scenario(plain).cpu == plain.cpu  # none given: the scenario's
    measured = gate.gate_scenario(steady)
    assert (measured.cpu.reserve, measured.cpu.pin, measured.cpu.wait) == (1, True, "default")
    assert steady.cpu == plain.cpu and steady.fingerprint() == plain.fingerprint()  # a run is unchanged
    with pytest.raises(ScenarioError, match=r"gate\.cpu\.reserve"):
        load_scenario_text(_gated("gate: {cpu: {reserve: -1}}"), "s.yaml")


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


# --------------------------------------------------------------------------------------------
# the statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fake_plugin")
def test_offline_cells_are_left_out_with_why_where_only_latencies_are_judged() -> None:
    text = "name: g\nmodel: toy\nbackends: [fake]\nbatch_sizes: [1]\nthreads: 1\nload: [offline, single_stream]\n"
    scenario = load_scenario_text(text, "s.yaml")
    kept, excluded = gate._gate_cells(scenario, ["plugins.fake"], ("p50", "p99"))
    assert [p.cell.load for p in kept] == ["single_stream"]
    assert [e["reason"] for e in excluded] == [
        "an offline cell has no latency per query, and --metrics leaves out its throughput"]  # fmt: skip
    kept, excluded = gate._gate_cells(scenario, ["plugins.fake"])  # throughput judged: both kept
    assert sorted(p.cell.load for p in kept) == ["offline", "single_stream"] and not excluded


def _process(thr: float, p50: float, p99: float, *, trusted: bool = True, status: str = "ok") -> gs.Process:
    return gs.Process(status, trusted, {"throughput": thr, "p50": p50, "p99": p99}, 1.0)


def _pairs(cid: str, slower: float, noise: float, n: int, seed: int, stage: str = "confirm") -> list[gs.Pair]:
    """``n`` pairs of a cell whose candidate is ``slower`` (a fraction) with lognormal noise per process."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        b, c = rng.lognormal(0, noise, 2)
        base = _process(1000 / b, b, 3 * b)
        cand = _process(1000 / (c * (1 + slower)), c * (1 + slower), 3 * c * (1 + slower))
        out.append(gs.Pair(stage, k, cid, "baseline", base, cand))
    return out


def test_the_signed_rank_test_and_its_estimate() -> None:
    worse = np.array([0.05, 0.07, 0.04, 0.06, 0.08, 0.05, 0.03])
    assert gs.worse_p(worse) == pytest.approx(2**-7)  # all seven worse: the exact test's smallest p
    assert gs.worse_p(-worse) > 0.99 and gs.worse_p(np.array([])) == 1.0 and gs.worse_p(np.zeros(4)) == 1.0
    assert gs.hodges_lehmann(worse) == pytest.approx(0.055)
    # six pairs: the exact 95 % interval is their whole range (2/64 outside it); five give none
    assert gs.hl_interval(worse[:6]) == (pytest.approx(0.04), pytest.approx(0.08))
    assert gs.hl_interval(worse[:5]) is None


@pytest.mark.parametrize(("n", "sigma", "level"), [(13, 0.0271, 0.01 / 30), (4, 0.0518, 0.25), (11, 0.0284, 0.01 / 9)])
def test_the_power_is_the_exact_tests_near_the_fewest_pairs_that_reach_its_level(
    n: int, sigma: float, level: float
) -> None:
    """Where the normal formula said 80 %, the exact test found 68-74 % (12 pairs planned at 0.01/30,
    a 5 % slowdown at 2.7 % noise): the screen's "unchanged" and the confirmation's plan rest on it."""
    delta = gs.delta_of(0.05)
    rng = np.random.default_rng(n)
    trials = 1500
    found = sum(gs.worse_p(rng.normal(delta, sigma, n)) < level for _ in range(trials)) / trials
    assert gs.power(n, sigma, delta, level) == pytest.approx(found, abs=0.035)


def test_the_pairs_needed_give_the_power_asked_and_no_fewer() -> None:
    delta = gs.delta_of(0.05)
    assert gs.min_pairs(0.25) == 3 and gs.min_pairs(0.01 / 3) == 9  # 2^-n under the level
    for sigma in (0.005, 0.03, 0.1):
        for level, target in ((0.25, gs.SCREEN_POWER), (0.01 / 30, gs.TARGET_POWER)):
            n = gs.pairs_needed(sigma, delta, level, target)
            assert gs.power(n, sigma, delta, level) >= target > gs.power(n - 1, sigma, delta, level)
    # the formula's growth: four times the pairs for twice the noise, once above the exact test's floor
    ratio = gs.pairs_needed(0.2, delta, 0.001, 0.8) / gs.pairs_needed(0.1, delta, 0.001, 0.8)
    assert 3.5 < ratio < 4.2


def test_the_plan_spends_the_time_left_on_what_can_be_decided() -> None:
    quiet = {"throughput": 0.01, "p50": 0.01, "p99": 0.02}
    noisy = {"throughput": 0.01, "p50": 0.01, "p99": 0.5}  # p99 hopeless, throughput cheap
    hopeless = {"throughput": 0.4, "p50": 0.4, "p99": 0.6}
    cost = {"quiet": 2.0, "noisy": 2.0, "hopeless": 2.0}
    plan = gs.plan_confirmation({"quiet": quiet, "noisy": noisy, "hopeless": hopeless}, cost, 200, 0.05, 0.01)
    # the hopeless suspect is left out, which relaxes the level to alpha / (3 metrics x 2 suspects)
    assert set(plan.pairs) == {"quiet", "noisy"} and plan.level == pytest.approx(0.01 / 6)
    assert "hopeless" in plan.left_out and plan.left_out["hopeless"][0] > 100
    # the noisy cell gets what its throughput needs, not the thousands its p99 would
    assert plan.pairs["noisy"] <= plan.pairs["quiet"] + 5 and sum(plan.pairs.values()) * 2.0 <= 200
    assert gs.plan_confirmation({"hopeless": hopeless}, cost, 10, 0.05, 0.01).pairs == {}


def test_the_noisier_metrics_extras_come_only_when_asked_and_within_the_time() -> None:
    quiet = {"throughput": 0.01, "p50": 0.01, "p99": 0.05}
    cost = {"a": 2.0, "b": 2.0}
    full = gs.plan_confirmation({"a": quiet, "b": quiet}, cost, 1000, 0.05, 0.01)
    bare = gs.plan_confirmation({"a": quiet, "b": quiet}, cost, 1000, 0.05, 0.01, extras=False)
    assert bare.level == full.level and all(bare.pairs[c] < full.pairs[c] for c in cost)  # p99 needs more
    # later, the extras: what p99 needs at the confirmation's level, where the time left holds it
    p99_needs = gs.pairs_needed(0.05, gs.delta_of(0.05), bare.level, gs.TARGET_POWER)
    assert gs.plan_extras(bare.pairs, {"a": quiet, "b": quiet}, cost, 1000, 0.05, bare.level) == {
        "a": p99_needs, "b": p99_needs,
    }  # fmt: skip
    one = gs.plan_extras(bare.pairs, {"a": quiet, "b": quiet}, cost, (p99_needs - bare.pairs["a"]) * 2.0, 0.05,
                         bare.level)  # fmt: skip
    assert sorted(one.values()) == [bare.pairs["a"], p99_needs]  # only one fits
    assert gs.plan_extras(bare.pairs, {"a": quiet, "b": quiet}, cost, 0.0, 0.05, bare.level) == bare.pairs


def test_the_screen_takes_what_makes_it_work_and_tops_up_only_what_reaches_a_power() -> None:
    noise = {"throughput": 0.02, "p50": 0.02, "p99": 0.3}
    cells = {f"c{i}": noise for i in range(4)}
    cost = dict.fromkeys(cells, 2.0)
    none = dict.fromkeys(cells, 0)
    # half of 60 s buys 3 pairs a cell: what throughput and p50 need; p99 would need a hundred
    first = gs.plan_screen(cells, none, 0.05, cost, 60)
    assert set(first) == set(cells) and len(set(first.values())) == 1 and 3 <= first["c0"] <= 4
    # half of 30 s buys one pair a cell, under the three with which the test can reach p < 0.25: it takes more
    assert gs.plan_screen(cells, none, 0.05, cost, 30) == dict.fromkeys(cells, 3)
    assert gs.plan_screen(cells, none, 0.05, cost, 10) == dict.fromkeys(cells, 1)  # all the time holds
    # a later screen adds only pairs that bring a metric to its power: none here, p99's hundred do not fit
    assert gs.plan_screen(cells, dict.fromkeys(cells, 4), 0.05, cost, 100) == {}


def test_a_slowdown_regresses_and_noise_alone_does_not() -> None:
    prior = {"throughput": 0.03, "p50": 0.03, "p99": 0.05}
    cells = {
        "slow": ("slow", _pairs("slow", 0.10, 0.02, 4, 1, "screen"), _pairs("slow", 0.10, 0.02, 16, 2)),
        "same": ("same", _pairs("same", 0.0, 0.02, 4, 3, "screen"), _pairs("same", 0.0, 0.02, 16, 4)),
        "small": ("small", _pairs("small", 0.02, 0.005, 4, 5, "screen"), _pairs("small", 0.02, 0.005, 16, 6)),
    }
    judged = gs.judge_confirmed(cells, prior, threshold=0.05, alpha=0.01)
    slow, sd, pw = judged["slow"]
    assert slow.verdict == "regressed" and slow.metrics["p50"].change == pytest.approx(0.10, abs=0.03)
    # two processes of 2 % spread: a pair's ratio spreads about 2.8 %, shrunk towards the prior's 3 %
    assert 0.015 < sd["p50"] < 0.04 and pw["p50"] > 0.8
    assert slow.metrics["throughput"].worse and slow.metrics["throughput"].p_adjusted < 0.01
    assert judged["same"][0].verdict != "regressed"
    # significant, but the estimate stays under the 5 % threshold: not a regression
    small = judged["small"][0]
    assert small.metrics["p50"].p_value < 0.001 and small.verdict != "regressed"
    # a pair with a process measured on a busy machine is left out, its partner with it
    busy = gs.Pair("screen", 0, "x", "baseline", _process(1, 1, 1, trusted=False), _process(1, 1, 1))
    assert not busy.usable and gs.slowdowns([busy], "p50").size == 0


def test_the_screen_says_unchanged_only_with_the_power_to_have_seen_a_slowdown() -> None:
    prior = {"throughput": 0.02, "p50": 0.02, "p99": 0.02}
    few = {"c": _pairs("c", 0.0, 0.01, 2, 7, "screen")}  # two pairs: the exact test cannot reach 0.25
    screened = gs.screen(few, prior, 0.05)
    cell = gs.judge_screened("c", "c", few["c"], screened["c"], 0.05)
    assert not screened["c"].suspect and cell.verdict == "inconclusive" and "noise" in (cell.note or "")
    enough = {"c": _pairs("c", -0.05, 0.01, 8, 8, "screen")}  # faster: the gate looks for regressions only
    screened = gs.screen(enough, prior, 0.05)
    assert gs.judge_screened("c", "c", enough["c"], screened["c"], 0.05).verdict == "unchanged"


def _noisy_tail_pairs(n: int, seed: int) -> list[gs.Pair]:
    """Pairs of the same code whose throughput and p50 move 1 % between processes and p99 8 %."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        (b, c), (tb, tc) = rng.lognormal(0, 0.01, 2), rng.lognormal(0, 0.08 / np.sqrt(2), 2)
        out.append(gs.Pair("screen", k, "c", "baseline", _process(1000 / b, b, 3 * tb), _process(1000 / c, c, 3 * tc)))
    return out


def test_each_metric_is_judged_at_its_own_threshold() -> None:
    assert gs.thresholds_of(0.05) == {"throughput": 0.05, "p50": 0.05, "p99": 0.05}
    assert gs.gate_thresholds(0.05) == {"throughput": 0.05, "p50": 0.05, "p99": gs.DEFAULT_P99_THRESHOLD}
    assert gs.gate_thresholds(0.2)["p99"] == 0.2  # never below the others
    assert gs.gate_thresholds(0.05, 0.03)["p99"] == 0.03  # what the user asks
    assert gs.gate_thresholds(0.05, metrics=("p50", "throughput")) == {"throughput": 0.05, "p50": 0.05}
    assert gs.judged({"p99": 0.1, "throughput": 0.05}) == ["throughput", "p99"]  # in the results' order
    for bad in ({"p95": 0.05}, {}):
        with pytest.raises(ValueError, match="one or more of throughput, p50, p99"):
            gs.thresholds_of(bad)
    # five pairs of the same code, p99 noisy: at 5 % its power is short, at 10 % it is enough
    prior = {"throughput": 0.015, "p50": 0.015, "p99": 0.08}
    pairs = {"c": _noisy_tail_pairs(5, 3)}
    one = gs.screen(pairs, prior, 0.05)["c"]
    per_metric = gs.screen(pairs, prior, gs.gate_thresholds(0.05))["c"]
    assert one.power["throughput"] == per_metric.power["throughput"] >= gs.SCREEN_POWER
    assert one.power["p99"] < gs.SCREEN_POWER <= per_metric.power["p99"]
    tight = gs.judge_screened("c", "c", pairs["c"], one, 0.05)
    assert tight.verdict == "inconclusive" and "5 % slowdown" in (tight.note or "") and "on p99" in (tight.note or "")
    assert gs.judge_screened("c", "c", pairs["c"], per_metric, gs.gate_thresholds(0.05)).verdict == "unchanged"
    # the plans ask p99 for what its own threshold needs
    delta5, delta10 = gs.delta_of(0.05), gs.delta_of(0.10)
    need5, need10 = (gs.pairs_needed(0.08, d, gs.SCREEN_ALPHA, gs.SCREEN_POWER) for d in (delta5, delta10))
    assert need10 < need5
    planned = gs.plan_screen({"c": prior}, {"c": 3}, gs.gate_thresholds(0.05), {"c": 1.0}, 1000.0)
    assert planned == {"c": need10}


def test_a_metric_left_out_is_reported_not_judged() -> None:
    # p99 alone worse (a noisy tail, 30 % slower in every pair): judged, the cell is a suspect; not judged, it is not
    pairs = []
    for k in range(6):
        base, cand = _process(1000, 1.0, 3.0), _process(1000 * (1 + 0.001 * k), 1.0, 3.9)
        pairs.append(gs.Pair("screen", k, "c", "baseline", base, cand))
    prior = {"throughput": 0.01, "p50": 0.01, "p99": 0.05}
    every = gs.screen({"c": pairs}, prior, gs.gate_thresholds(0.05))["c"]
    two = gs.screen({"c": pairs}, prior, gs.gate_thresholds(0.05, metrics=("throughput", "p50")))["c"]
    assert every.suspect and not two.suspect and set(two.power) == {"throughput", "p50"}
    cell = gs.judge_screened("c", "c", pairs, two, gs.gate_thresholds(0.05, metrics=("throughput", "p50")))
    assert cell.verdict == "unchanged" and cell.metrics["p99"].verdict == gs.NOT_JUDGED
    assert cell.metrics["p99"].change == pytest.approx(0.3)  # still reported
    # confirmation: Holm over the judged metrics only, at alpha / (2 metrics x 1 cell)
    confirmed = gs.judge_confirmed({"c": ("c", pairs, pairs)}, prior, {"throughput": 0.05, "p50": 0.05}, 0.01)
    judged_cell, noise, power = confirmed["c"]
    assert set(noise) == set(power) == {"throughput", "p50"} and judged_cell.metrics["p99"].verdict == gs.NOT_JUDGED
    assert judged_cell.metrics["p99"].p_adjusted is None and judged_cell.verdict != "regressed"
    plan = gs.plan_confirmation({"c": prior}, {"c": 1.0}, 1000, {"throughput": 0.05, "p50": 0.05}, 0.01)
    assert plan.level == pytest.approx(0.01 / 2)
    text = render.result_threshold_text(
        Comparison("a", "b", 0.05, 0.01, [], [], [], [], gate={"thresholds": {"throughput": 0.05, "p50": 0.05}})
    )
    assert text == "5 % (judged: throughput, p50)"


def test_the_result_names_a_metric_whose_threshold_differs() -> None:
    plain = Comparison("a", "b", 0.05, 0.01, [], [], [], [])
    assert render.result_threshold_text(plain) == "5 %"
    gated = Comparison("a", "b", 0.05, 0.01, [], [], [], [], gate={"thresholds": gs.gate_thresholds(0.05)})
    assert render.result_threshold_text(gated) == "5 % (p99 10 %)"


class _Synthetic(gate.Pairs):
    """Processes of lognormal noise on a simulated clock (1 s each): the gate's course without workers."""

    def __init__(
        self, cells: int, budget_s: float, slower: dict[str, float], noise: float, trusted: bool = True,
        busy_until: float = 0.0, offline: frozenset[str] = frozenset(),
    ) -> None:  # fmt: skip
        self.now, self.slower, self.noise, self.trusted, self.busy_until = 0.0, slower, noise, trusted, busy_until
        self.offline = offline  # cells without a latency per query: p50 and p99 absent, as a worker records them
        self.rng = np.random.default_rng(5)
        made = [gate.GateCell(f"c{i}", f"c{i}", "fake", 1.0) for i in range(cells)]
        super().__init__(made, 1, gate.Clock(budget_s, now=lambda: self.now), lambda line: None)

    def process(self, side: str, cid: str) -> gs.Process:
        self.now += 1.0
        factor = (1 + self.slower.get(cid, 0.0)) * float(self.rng.lognormal(0, self.noise))
        factor = factor if side == "candidate" else float(self.rng.lognormal(0, self.noise))
        trusted = self.trusted and self.now > self.busy_until
        latency = 0.0 if cid in self.offline else factor
        return gs.Process("ok", trusted, {"throughput": 1000 / factor, "p50": latency, "p99": 3 * latency}, 1.0)


def test_the_course_finds_the_slowed_cell_within_its_budget() -> None:
    night = _Synthetic(6, 600, {"c2": 0.15}, 0.02)
    decision = gate.decide(night, threshold=0.05, alpha=0.01)
    verdicts = {c.cell_id: c.verdict for c in decision.cells}
    assert verdicts.pop("c2") == "regressed" and "regressed" not in verdicts.values(), verdicts
    assert night.clock.used <= 600 and decision.calibration_pairs >= 1 and decision.measured_again >= 1
    # every cell the screen let through had the power to have seen a 5 % slowdown: unchanged, not just quiet
    assert set(verdicts.values()) == {"unchanged"}


def test_offline_cells_are_judged_on_their_throughput_and_their_latencies_not_judged() -> None:
    night = _Synthetic(6, 600, {"c1": 0.15, "c2": 0.15}, 0.02, offline=frozenset({"c1", "c3"}))
    cells = {c.cell_id: c for c in gate.decide(night, threshold=0.05, alpha=0.01).cells}
    assert cells["c1"].verdict == "regressed" and cells["c1"].metrics["throughput"].verdict == "regressed"
    assert cells["c2"].verdict == "regressed"
    assert cells["c3"].verdict == "unchanged", cells["c3"].note
    for cid in ("c1", "c3"):
        assert [cells[cid].metrics[m].verdict for m in ("p50", "p99")] == ["not judged", "not judged"]
        assert cells[cid].metrics["p50"].baseline is None
    assert {cells[c].verdict for c in ("c0", "c4", "c5")} == {"unchanged"}


def test_a_night_on_a_busy_machine_ends_inconclusive_within_its_budget() -> None:
    night = _Synthetic(2, 600, {}, 0.02, trusted=False)  # every process untrusted: no pair is usable
    decision = gate.decide(night, threshold=0.05, alpha=0.01)
    assert [c.verdict for c in decision.cells] == ["inconclusive", "inconclusive"]
    assert all("no usable pair" in (c.note or "") for c in decision.cells)
    assert night.clock.used <= 600  # it kept trying (a neighbour may leave), never past the budget


def test_a_neighbour_that_leaves_mid_night_still_gets_an_answer() -> None:
    # the first 200 s every process is disturbed: the cells' first pairs are all taken out
    night = _Synthetic(4, 900, {"c1": 0.10}, 0.02, busy_until=200)
    decision = gate.decide(night, threshold=0.05, alpha=0.01)
    verdicts = {c.cell_id: c.verdict for c in decision.cells}
    assert verdicts.pop("c1") == "regressed", verdicts
    assert set(verdicts.values()) == {"unchanged"}
    assert night.clock.used <= 900


def test_a_slowdown_of_exactly_the_threshold_is_caught_one_well_under_it_is_not() -> None:
    caught = gate.decide(_Synthetic(4, 900, {"c1": 0.05}, 0.01), 0.05, 0.01)
    assert {c.cell_id: c.verdict for c in caught.cells}["c1"] == "regressed"
    under = gate.decide(_Synthetic(4, 900, {"c1": 0.02}, 0.005), 0.05, 0.01)
    assert {c.cell_id: c.verdict for c in under.cells}["c1"] == "unchanged"  # measured smaller than 5 %


def test_could_reach_asks_the_interval_not_the_estimate() -> None:
    delta = gs.delta_of(0.05)
    around = np.linspace(delta - 0.02, delta + 0.014, 20)  # estimate just under the threshold, interval over it
    assert gs.hodges_lehmann(around) < delta and gs.could_reach(around, delta)
    tight = np.linspace(0.019, 0.021, 20)  # a 2 % slowdown, measured tightly
    assert not gs.could_reach(tight, delta)
    assert not gs.could_reach(np.empty(0), delta)


def test_the_order_of_the_pairs_is_random_and_replayed_from_its_seed() -> None:
    ids = [f"c{i}" for i in range(12)]
    one = [gate.round_order(7, stage, r, ids) for stage in gate.STAGES for r in range(3)]
    assert one == [gate.round_order(7, stage, r, ids) for stage in gate.STAGES for r in range(3)]
    assert one != [gate.round_order(8, stage, r, ids) for stage in gate.STAGES for r in range(3)]
    first = one[0]
    assert sorted(c for c, _ in first) == sorted(ids) and [c for c, _ in first] != ids  # each cell once, shuffled
    sides = [side for order in one for _, side in order]
    assert 0.3 < sides.count("baseline") / len(sides) < 0.7  # which side goes first is a coin


# --------------------------------------------------------------------------------------------
# the gate end to end: the fake backend in real worker processes
# --------------------------------------------------------------------------------------------


def _faster_copy(tmp_path: Path, factor: float) -> Path:
    """A copy of this checkout's code whose fake backend busy-waits ``factor`` of the service time."""
    code = tmp_path / "basecode"
    for folder in ("harness", "plugins"):
        shutil.copytree(ROOT / folder, code / folder, ignore=shutil.ignore_patterns("__pycache__"))
    fake = code / "plugins" / "fake.py"
    source = fake.read_text()
    assert 'float(opts.get("service_ms", 1.0)) * 1e6' in source
    wait = 'float(opts.get("service_ms", 1.0)) * '
    fake.write_text(source.replace(wait + "1e6", wait + f"{factor * 1e6:g}"))
    return code


def _documented(keys: set[str]) -> list[str]:
    doc = (ROOT / "docs" / "compare.md").read_text()
    return sorted(k for k in keys if f"`{k}`" not in doc and f".{k}`" not in doc)


def _keys(value: object, skip: tuple[str, ...] = ("noise", "power", "screen_p", "values")) -> set[str]:
    """Every key of a JSON value, recursively (not the metric names keying per-metric mappings)."""
    if isinstance(value, dict):
        out = set()
        for key, item in value.items():
            out.add(key)
            if key not in skip:
                out |= _keys(item, skip)
        return out
    if isinstance(value, list):
        return set().union(*(_keys(item, skip) for item in value)) if value else set()
    return set()


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_gate_of_the_same_code_finds_no_regression_and_keeps_its_evidence(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2]", service_ms=0.5, min_s=0.2, max_s=0.3)
    out = tmp_path / "out"
    done = bench("gate", str(scenario), "--baseline-code", str(ROOT), "--allow-dirty", "--budget", "20s", "--seed",
                 "11", "--out", str(out), "--format", "json", "--json-out", str(tmp_path / "g.json"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["counts"].get("regressed", 0) == 0 and len(result["cells"]) == 2 and not result["not_measured"]
    info = result["gate"]
    assert info["used_s"] <= info["budget_s"] + 3 and info["seed"] == 11 and info["calibration"]["pairs"] >= 1
    assert all(c["gate"]["screen_pairs"] >= 1 for c in result["cells"])
    for cell in result["cells"]:  # an inconclusive cell says which metric's noise kept it so
        assert cell["verdict"] != "inconclusive" or "noise" in (cell["note"] or "") or "pair" in (cell["note"] or "")
    # every field documented, and the result reads back into the same HTML section
    assert _documented(_keys(result)) == []
    assert render.render_html(render.comparison_from_dict(result)) == render.render_html(
        render.comparison_from_dict(json.loads((tmp_path / "g.json").read_text()))
    )
    # the evidence: the journal, the run folders of each side, the result
    (folder,) = run_dirs(out)
    events = gate.read_journal(folder)
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"
    assert json.loads((folder / "gate.json").read_text()) == result
    pairs = gate.pairs_of(folder)
    runs = {side: journal(Path(info["runs"][side])) for side in ("calibration", "baseline", "candidate")}
    assert len(runs["calibration"]) == 2 * sum(p.stage == "calibration" for p in pairs)
    assert len(runs["baseline"]) == len(runs["candidate"]) == sum(p.stage != "calibration" for p in pairs)
    # the order is the seed's: each round's pairs are round_order's for the cells in it (cells in scenario order)
    ids = [c["cell_id"] for c in events[0]["cells"]]
    for (stage, number), group in itertools.groupby(pairs, key=lambda p: (p.stage, p.round)):
        made = list(group)
        in_round = sorted({p.cell_id for p in made}, key=ids.index)
        expected = gate.round_order(11, stage, number, in_round)
        assert [(p.cell_id, p.first) for p in made] == expected[: len(made)]
    # and the sides alternate in time as recorded: the first process of a pair started first
    starts = {(side, r["cell_id"], r["repeat"]): r["started_at"] for side in ("baseline", "candidate")
              for r in runs[side]}  # fmt: skip
    for p in pairs:
        if p.stage != "calibration":
            b = starts[("baseline", p.cell_id, p.baseline.repeat)]
            c = starts[("candidate", p.cell_id, p.candidate.repeat)]
            assert (b < c) == (p.first == "baseline")
    # judged again from the journal, the screen finds the same suspects
    prior = next(e for e in events if e["event"] == "plan" and e["stage"] == "calibration")["noise"]
    screened = gs.screen({cid: [p for p in pairs if p.stage == "screen" and p.cell_id == cid] for cid in ids},
                         prior, 0.05)  # fmt: skip
    assert {c: s.suspect for c, s in screened.items()} == {c["cell_id"]: c["gate"]["suspect"] for c in result["cells"]}


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_baseline_whose_backend_is_faster_makes_the_candidate_regress(tmp_path: Path) -> None:
    code = _faster_copy(tmp_path, 0.7)  # the baseline's fake backend waits 30 % less
    scenario = fake_scenario(tmp_path, service_ms=0.5, min_s=0.2, max_s=0.3)
    out = tmp_path / "out"
    # a 20 % threshold and alpha 0.1 keep the pairs few (the screen's 3, the confirmation's 5) for a short test
    done = bench("gate", str(scenario), "--baseline-code", str(code), "--allow-dirty", "--budget", "60s", "--threshold",
                 "20", "--alpha", "0.1", "--seed", "3", "--out", str(out), "--format", "md")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "## bench gate: **regression**" in done.stdout and "| regressed |" in done.stdout
    (folder,) = run_dirs(out)
    result = json.loads((folder / "gate.json").read_text())
    (cell,) = result["cells"]
    assert cell["gate"]["stage"] == "confirm" and cell["gate"]["suspect"]
    assert cell["metrics"]["p50"]["change"] == pytest.approx(1 / 0.7 - 1, abs=0.08)
    assert cell["metrics"]["p50"]["p_adjusted"] < 0.1 and cell["metrics"]["throughput"]["worse"]
    baseline = run_dirs(folder / "baseline")[0]
    assert json.loads((baseline / "manifest.json").read_text())["settings"]["code_path"] == str(code.resolve())
    assert max(r["p50_ms"] for r in journal(baseline)) < 0.45  # the copy's 0.35 ms, not this checkout's 0.5


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_cell_the_candidate_fails_and_the_baseline_measures_is_a_regression(tmp_path: Path) -> None:
    code = _faster_copy(tmp_path, 1.0)
    fake = code / "plugins" / "fake.py"  # the baseline's fake backend ignores the injected failure
    raising = 'raise RuntimeError("injected failure in the fake backend")'
    fake.write_text(fake.read_text().replace(raising, "return"))
    scenario = fake_scenario(tmp_path, faults="[raise]", min_s=0.1, max_s=0.2)
    done = bench("gate", str(scenario), "--baseline-code", str(code), "--allow-dirty", "--budget", "30s", "--out",
                 str(tmp_path / "out"), "--format", "json")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    (lost,) = result["not_measured"]
    assert lost["verdict"] == "regressed" and lost["missing_in"] == "candidate" and lost["baseline_status"] == "ok"
    assert lost["candidate_status"] == "failed" and "injected failure" in lost["candidate_reason"]
    assert result["cells"] == [] and result["gate"]["processes"] <= 2 * 2 + 4  # given up after two failures


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_the_budget_is_kept(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, service_ms=0.5, min_s=0.2, max_s=0.3)
    out = tmp_path / "out"
    # not even one pair fits: refused before anything runs, with the estimate and where it came from
    none = bench("gate", str(scenario), "--baseline", "HEAD", "--allow-dirty", "--budget", "3s", "--out", str(out))
    assert none.returncode == 2 and "cannot hold one pair of processes per cell" in none.stderr, none.stderr
    assert "from the scenario's durations" in none.stderr and not out.exists()
    # room for a calibration pair and a pair or two: the verdict is inconclusive, and says which noise made it so
    tiny = bench("gate", str(scenario), "--baseline", "HEAD", "--allow-dirty", "--budget", "12s", "--out", str(out),
                 "--format", "json")  # fmt: skip
    assert tiny.returncode == 0, tiny.stdout + tiny.stderr
    result = json.loads(tiny.stdout)
    (cell,) = result["cells"]
    assert cell["verdict"] == "inconclusive" and "noise" in cell["note"] and "%" in cell["note"], cell
    info = result["gate"]
    assert info["used_s"] <= 12 + 2  # at most a process over: none starts that the time left cannot hold
    assert "HEAD" in info["baseline"]["name"] and info["baseline"]["commit"]


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_bad_input_is_refused_before_anything_runs(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2]")
    out = tmp_path / "out"
    wrong_backend = _faster_copy(tmp_path, 1.0)
    fake = wrong_backend / "plugins" / "fake.py"
    fake.write_text(fake.read_text().replace('    name = "fake"\n', '    name = "fake2"\n'))
    subset = fake_scenario(tmp_path, batches="[1, 2]", extra="gate: {batch_sizes: [4]}\n", name="subset.yaml")
    cases = [
        (("--baseline", "no-such-branch-here"), "no such commit, branch or tag"),
        (("--baseline", "HEAD", "--baseline-code", str(ROOT)), "give the baseline, one way"),
        ((), "give the baseline, one way"),
        (("--baseline-code", str(wrong_backend)), "has no backend 'fake'"),
        (("--baseline", "HEAD", "--budget", "soon"), "not a duration"),
        (("--baseline", "HEAD", "--p99-threshold", "100"), "--p99-threshold"),
        (("--baseline", "HEAD", "--metrics", "throughput,p95"), "give one or more of throughput, p50, p99"),
        (("--baseline", "HEAD", "--metrics", ","), "give one or more of throughput, p50, p99"),
    ]
    for args, words in cases:
        refused = bench("gate", str(scenario), *args, "--allow-dirty", "--out", str(out))
        assert refused.returncode == 2 and words in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr
    empty = bench("gate", str(subset), "--baseline", "HEAD", "--allow-dirty", "--out", str(out))
    assert empty.returncode == 2 and "gate.batch_sizes.0: 4 names no cell" in empty.stderr, empty.stderr
    assert not out.exists()


@pytest.mark.usefixtures("fake_plugin")
def test_uncommitted_changes_to_the_measured_code_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "harness").mkdir(parents=True)
    (repo / "harness" / "x.py").write_text("a = 1\n")
    (repo / "README").write_text("r\n")
    for command in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    assert gate_sides.dirty_paths(repo) == []
    (repo / "README").write_text("changed\n")  # not what the workers import
    (repo / "plugins").mkdir()
    (repo / "plugins" / "new.py").write_text("")
    (repo / "harness" / "x.py").write_text("a = 2\n")
    assert sorted(gate_sides.dirty_paths(repo)) == ["harness/x.py", "plugins/"]
    monkeypatch.setattr(gate_sides, "REPO", repo)
    scenario = load_scenario(fake_scenario(tmp_path))
    options = gate.GateOptions(baseline="HEAD", out_root=tmp_path / "out")
    with pytest.raises(UsageError, match="uncommitted changes to harness/ or plugins/"):
        gate.run_gate(scenario, options)
    assert not (tmp_path / "out").exists()


def test_a_ref_resolves_to_its_commit_and_installed_to_a_bench() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout: " + head.stderr.strip())
    assert gate_sides.resolve_ref("HEAD") == head.stdout.strip()
    with pytest.raises(UsageError, match="no such commit"):
        gate_sides.resolve_ref("no-such-branch-here")
    try:
        where, version = gate_sides.installed_code()
    except UsageError as exc:
        pytest.skip(str(exc))
    assert (where / "harness" / "__init__.py").is_file() and version
