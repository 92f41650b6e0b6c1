"""``bench gate``: is this checkout slower than a baseline commit, measured here and now, within a
wall-time budget?

Both sides run as fresh worker processes of the scenario's cells (its ``gate:`` subset), in pairs:
one baseline process and one candidate process back to back, which first drawn at random from a
seed. All the pairs of a round (one per cell, the cells in a random order) run before the next
round, so a machine that drifts, or changes pace for minutes, weighs on both sides alike. Each
process measures a short window (:func:`gate_scenario`). The statistics are those of
:mod:`harness.analysis.gate_stats`; the order of work:

1. calibration: pairs of two baseline processes on a few cells, tonight's noise of a pair and the
   seconds a process takes;
2. screen: a few pairs of every cell; the cells that look slower (one-sided p < 0.25) are suspects;
3. confirmation: fresh pairs for each suspect, as many as 80 % power at the threshold needs at
   Holm's level, where the time left affords them; only these decide;
4. while time is left: more screen pairs for the cells the screen let through short of its power,
   their suspects confirmed in turn.

No pair starts that the time left cannot hold (the budget counts from the command's start), and the
verdicts come from what was measured. Everything is recorded under ``--out``: a journal
(``gate.jsonl``, one fsync'ed line per pair and per decision), the three run folders the processes
were journaled in (calibration and baseline with the baseline's code, candidate with this
checkout's) and the result (``gate.json``).

Kept whole, at about 580 lines: the course (:func:`decide`), the pairs it draws on (:class:`Pairs`)
and the live gate that measures them share the rounds, the budget and the journal. Each side's code
is :mod:`gate_sides`'s, the statistics :mod:`gate_stats`'s.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.analysis import gate_stats as gs
from harness.analysis.comparison import METRICS, CellComparison, Comparison, NotMeasured, _status
from harness.analysis.economics import is_trusted
from harness.analysis.gate_sides import Sides, check_baseline_can_run, sides_of
from harness.errors import UsageError
from harness.store import new_run_id, write_atomic

if TYPE_CHECKING:
    from harness.cells import Cell
    from harness.manifest import Manifest
    from harness.planning import PlannedCell
    from harness.records import CellRecord
    from harness.scenario import Scenario
    from harness.store import RunDir

#: the longest measured window of a gate process (s): the scenario's min_duration_s when shorter.
#: The unit is the process, and many short processes tell more than a few long ones when processes
#: differ (fast and slow paces from one process to the next)
GATE_WINDOW_S = 0.5
#: the longest warm-up of a gate process (s)
GATE_WARMUP_S = 0.2
#: the longest wait for a quiet machine before a gate process's warm-up (s): a process measured on a
#: busy machine takes its pair out, and the next round makes up for it
GATE_QUIET_WAIT_S = 2.0
#: what starting a worker costs before its warm-up (Python, the plugins, the model), for the budget
#: check made before anything runs; measured processes replace it as soon as there are some
PROCESS_START_S = 1.0
#: LoadGen cells measure --quick's LoadGen tests
GATE_LOADGEN = {"min_duration_s": 1.0, "min_query_count": 100}
#: cells the calibration samples (one per backend first), pairs of baseline processes on each, and
#: the most of the budget it may take
CALIBRATION_CELLS = 4
CALIBRATION_PAIRS = 2
CALIBRATION_SHARE = 0.2
#: the most of the time left after the calibration the screen may take
SCREEN_SHARE = 0.5
#: failed processes of one side of a cell (a skip counts as many) after which the cell is given up
FAILURES_TO_GIVE_UP = 2
#: kept free at the end of the budget to finish the run folders and write the result (s)
FINISH_RESERVE_S = 2.0
#: one call of :meth:`Pairs.rounds` stops giving a cell pairs after this many times the usable pairs
#: it still wanted (the rest were measured on a busy machine); a later plan, while time is left, tries
#: again: a neighbour that comes and goes leaves quiet stretches later in the night
ATTEMPTS_PER_PAIR = 2
JOURNAL = "gate.jsonl"
RESULT = "gate.json"
#: the stages in the order they run; their index seeds their rounds' orders
STAGES = ("calibration", "screen", "confirm")
DEFAULT_OUT = Path("results") / ".gate"


@dataclass(frozen=True)
class GateOptions:
    #: a git ref or ``installed``; None with ``baseline_code``
    baseline: str | None
    baseline_code: Path | None = None
    budget_s: float = 1800.0
    threshold: float = 0.05
    #: p99's threshold; None: the larger of ``threshold`` and gate_stats.DEFAULT_P99_THRESHOLD
    p99_threshold: float | None = None
    #: the metrics judged (the others are reported with their change, not judged)
    metrics: tuple[str, ...] = tuple(METRICS)
    alpha: float = 0.01
    screen_alpha: float = gs.SCREEN_ALPHA
    seed: int = 0
    out_root: Path = DEFAULT_OUT
    plugins: tuple[str, ...] = ()
    allow_dirty: bool = False
    command: str = field(default_factory=lambda: shlex.join(["bench", *sys.argv[1:]]))

    @property
    def thresholds(self) -> dict[str, float]:
        """Each metric's threshold (p99's at least gate_stats.DEFAULT_P99_THRESHOLD unless given)."""
        return gs.gate_thresholds(self.threshold, self.p99_threshold, self.metrics)


# --------------------------------------------------------------------------------------------
# what runs: the cells, their windows, the order of the pairs
# --------------------------------------------------------------------------------------------


def gate_scenario(scenario: Scenario) -> Scenario:
    """The scenario as the gate measures it: warm-up at most ``GATE_WARMUP_S``, a window of exactly
    min(min_duration_s, ``GATE_WINDOW_S``), one attempt (a disturbed process takes its pair out),
    a quiet wait of at most ``GATE_QUIET_WAIT_S``, LoadGen's tests --quick's, no fidelity check, and
    the ``gate:`` block's cpu settings where it has them."""
    m = scenario.measurement
    window = min(m.min_duration_s, GATE_WINDOW_S)
    measurement = m.model_copy(update={
        "warmup_s": min(m.warmup_s, GATE_WARMUP_S), "min_duration_s": window, "max_duration_s": window,
        "repeats": 1, "max_attempts": 1, "quiet_wait_s": min(m.quiet_wait_s, GATE_QUIET_WAIT_S),
    })  # fmt: skip
    cpu = scenario.gate.cpu if scenario.gate is not None and scenario.gate.cpu is not None else scenario.cpu
    return scenario.model_copy(update={
        "measurement": measurement,
        "loadgen": scenario.loadgen.model_copy(update=GATE_LOADGEN),
        "fidelity": scenario.fidelity.model_copy(update={"samples": 0}),
        "cpu": cpu,
    })  # fmt: skip


def process_estimate(scenario: Scenario, cell: Cell) -> float:
    """Seconds one gate process of ``cell`` takes at least, from the gate scenario's durations:
    ``PROCESS_START_S`` + warm-up + window (a LoadGen test's minimum for LoadGen cells). Preparing a
    model (a compilation) can take much longer: measured processes replace this."""
    m = scenario.measurement
    window = m.min_duration_s if cell.load == "single_stream" else scenario.loadgen.min_duration_s
    return PROCESS_START_S + m.warmup_s + window


def round_order(seed: int, stage: str, round_index: int, cell_ids: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs of one round: the cells in a random order, each with the side that runs first;
    a function of the seed, the stage, the round and the cells only, so any run can be replayed."""
    rng = np.random.default_rng([seed, STAGES.index(stage), round_index])
    order = rng.permutation(len(cell_ids))
    first = rng.integers(0, 2, len(cell_ids))
    return [(cell_ids[i], "candidate" if first[k] else "baseline") for k, i in enumerate(order)]


def calibration_cells(seed: int, cells: Sequence[GateCell], count: int) -> list[GateCell]:
    """``count`` cells drawn at random (from the seed), one per backend before a second of any."""
    rng = np.random.default_rng([seed, len(STAGES)])
    shuffled = [cells[i] for i in rng.permutation(len(cells))]
    firsts: list[GateCell] = []
    rest: list[GateCell] = []
    seen: set[str] = set()
    for cell in shuffled:
        (rest if cell.backend in seen else firsts).append(cell)
        seen.add(cell.backend)
    return (firsts + rest)[:count]


# --------------------------------------------------------------------------------------------
# the gate
# --------------------------------------------------------------------------------------------


class Clock:
    """The budget, counted from the command's start (``now``: the clock read; benchmarks/gate_power.py
    gives a simulated one)."""

    def __init__(self, budget_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.budget_s, self.now = budget_s, now
        self.start = now()
        self.ran_out = False

    @property
    def used(self) -> float:
        return self.now() - self.start

    @property
    def left(self) -> float:
        return max(0.0, self.budget_s - FINISH_RESERVE_S - self.used)

    def fits(self, seconds: float) -> bool:
        """Whether ``seconds`` of work end within the budget; once one does not, the time is up."""
        if seconds <= self.left:
            return True
        self.ran_out = True
        return False


@dataclass(frozen=True)
class GateCell:
    id: str
    label: str
    backend: str
    #: seconds a process takes at least, before any was measured (:func:`process_estimate`)
    estimate_s: float


class Pairs:
    """A gate's pairs and how they come: rounds in the seed's order within the budget, a cell given
    up when a side keeps failing it. Subclasses measure the processes (:meth:`process`): worker
    processes here, a pool of recorded ones in benchmarks/gate_power.py."""

    def __init__(self, cells: Sequence[GateCell], seed: int, clock: Clock, say: Callable[[str], None]) -> None:
        self.cells = {c.id: c for c in cells}
        self.seed, self.clock, self.say = seed, clock, say
        self.pairs: list[gs.Pair] = []
        self.failures: dict[tuple[str, str], int] = {}
        self.given_up: dict[str, set[str]] = {}  # cell -> the sides that failed it
        self.seconds: dict[str, list[float]] = {}  # cell -> its processes' wall times
        self.round_numbers = dict.fromkeys(STAGES, 0)

    def process(self, side: str, cid: str) -> gs.Process:
        """Measure one process of ``cid`` with ``side``'s code (``calibration``: the baseline's)."""
        raise NotImplementedError

    def log(self, event: str, **fields: Any) -> None:
        """Record an event (the live gate's journal)."""

    def pair(self, stage: str, number: int, cid: str, first: str) -> gs.Pair:
        """Measure one pair, ``first`` first; in the calibration both processes run the baseline's code."""
        names = ("calibration", "calibration") if stage == "calibration" else ("baseline", "candidate")
        order = [0, 1] if first == "baseline" else [1, 0]
        measured: dict[int, gs.Process] = {}
        for index in order:
            if measured and measured[order[0]].status != "ok":  # the pair is lost already: no second process
                measured[index] = gs.Process("not run", False, {}, 0.0, reason="the other process of its pair failed")
                continue
            made = measured[index] = self.process(names[index], cid)
            self.seconds.setdefault(cid, []).append(made.seconds)
            if made.status != "ok":
                who = "baseline" if names[index] == "calibration" else names[index]
                # a skip is the code's answer, not bad luck: given up at once
                step = FAILURES_TO_GIVE_UP if made.status == "skipped" else 1
                self.failures[(cid, who)] = self.failures.get((cid, who), 0) + step
                if self.failures[(cid, who)] >= FAILURES_TO_GIVE_UP:
                    self.given_up.setdefault(cid, set()).add(who)
        done = gs.Pair(stage, number, cid, first, measured[0], measured[1])
        self.pairs.append(done)
        self.log("pair", **done.as_dict())
        return done

    def seconds_per_process(self, cid: str | None = None) -> float:
        """The mean wall time of a process of ``cid`` so far (of any cell when it has none; the
        scenario's estimate before any)."""
        mine = self.seconds.get(cid or "", [])
        every = [s for values in self.seconds.values() for s in values]
        if mine:
            return float(np.mean(mine))
        if every:
            return float(np.mean(every))
        return self.cells[cid].estimate_s if cid else max(c.estimate_s for c in self.cells.values())

    def rounds(self, stage: str, wanted: Mapping[str, int], share_s: float | None = None) -> None:
        """Rounds of pairs until every cell has its ``wanted`` usable pairs of ``stage`` (or was given
        up, or was tried in this call ``ATTEMPTS_PER_PAIR`` times as often as the usable pairs it
        still wanted), or the next pair does not fit the time left, or, given ``share_s``, the stage's
        own share of it (its first pair apart). Rounds are numbered on across calls, so that each round
        of a stage has its own order."""
        until = None if share_s is None else self.clock.used + share_s
        before = {cid: self.of(stage, cid) for cid in wanted}
        allowed = {cid: ATTEMPTS_PER_PAIR * max(1, want - sum(p.usable for p in before[cid]))
                   for cid, want in wanted.items()}  # fmt: skip
        while not self.clock.ran_out:
            todo = []
            for cid, want in wanted.items():
                mine = self.of(stage, cid)
                usable = sum(p.usable for p in mine)
                tried = len(mine) - len(before[cid])
                if cid not in self.given_up and usable < want and tried < allowed[cid]:
                    todo.append(cid)
            if not todo:
                return
            number = self.round_numbers[stage]
            self.round_numbers[stage] += 1
            for cid, first in round_order(self.seed, stage, number, todo):
                if cid in self.given_up:
                    continue
                need = 2 * self.seconds_per_process(cid)
                if not self.clock.fits(need):
                    self.log("budget", stage=stage, round=number, left_s=self.clock.left, used_s=self.clock.used)
                    return
                if until is not None and self.clock.used + need > until and any(p.stage == stage for p in self.pairs):
                    self.log("budget", stage=stage, round=number, share_s=share_s, used_s=self.clock.used)
                    return  # the stage's share is spent (its first pair always runs)
                self.pair(stage, number, cid, first)
            self.say(f"{stage} round {number + 1}: {len(todo)} pair(s), {self.clock.left:.0f} s left")

    def of(self, stage: str, cid: str) -> list[gs.Pair]:
        return [p for p in self.pairs if p.cell_id == cid and p.stage == stage]


@dataclass
class Decision:
    """What :func:`decide` found: the verdicts of the cells not given up (in the cells' order), and
    how it got there."""

    cells: list[CellComparison]
    given_up: list[str]
    calibration_cells: list[str]
    calibration_pairs: int
    noise: dict[str, float]
    screen_pairs: int
    suspects: int
    measured_again: int
    left_out: int
    level: float


def decide(pairs: Pairs, threshold: gs.Threshold, alpha: float, screen_alpha: float = gs.SCREEN_ALPHA) -> Decision:
    """The gate's course, on whatever measures the pairs: calibration, screen, confirmation of the
    suspects, more screen pairs while time is left, and the verdicts (:mod:`gate_stats`)."""
    clock, ids = pairs.clock, list(pairs.cells)

    # 1. calibration: pairs of baseline processes, tonight's noise and seconds per process; planned
    # from the scenario's durations, and stopped at its share of the budget once processes turn out
    # slower (preparing a model) than those durations say
    share = CALIBRATION_SHARE * clock.left
    affordable = max(1, int(share // (2 * pairs.seconds_per_process())))
    count = min(len(ids), CALIBRATION_CELLS, affordable)
    sample = calibration_cells(pairs.seed, list(pairs.cells.values()), count)
    each = max(1, min(CALIBRATION_PAIRS, affordable // count))
    pairs.rounds("calibration", {c.id: each for c in sample}, share_s=share)
    calibration = [p for p in pairs.pairs if p.stage == "calibration"]
    prior = gs.calibration_noise(calibration)
    pairs.log("plan", stage="calibration", noise=prior, pairs=sum(p.usable for p in calibration),
              seconds_per_process=pairs.seconds_per_process())  # fmt: skip

    # 2. the screen, and 3. the confirmation of its suspects with fresh pairs, as many as the power
    # needs where they fit; then, while time is left, more screen pairs for the cells the screen let
    # through without the power to have seen a slowdown, and their suspects confirmed in turn
    active = [c for c in ids if c not in pairs.given_up]
    targets = gs.plan_screen({c: prior for c in active}, dict.fromkeys(active, 0), threshold,
                             {c: 2 * pairs.seconds_per_process(c) for c in active}, clock.left, SCREEN_SHARE,
                             screen_alpha)  # fmt: skip
    n1 = max(targets.values(), default=0)
    if active and not targets:  # not one pair of any cell fits what is left
        clock.ran_out = True
    pairs.say(f"calibration: noise {', '.join(f'{m} {v:.1%}' for m, v in prior.items())}; screen: {n1} pair(s) a cell")
    planned: dict[str, int] = {}  # suspect -> pairs planned for its confirmation
    left_out: dict[str, tuple[int, int]] = {}
    level = alpha / (len(gs.judged(threshold)) * max(len(active), 1))
    screened = gs.screen({c: [] for c in active}, prior, threshold, screen_alpha)  # in case none fits
    while targets or planned:
        measured = len(pairs.pairs)
        if targets:
            pairs.log("plan", stage="screen", pairs=targets, seconds_left=clock.left)
            pairs.rounds("screen", targets)
            active = [c for c in active if c not in pairs.given_up]
            screened = gs.screen({c: pairs.of("screen", c) for c in active}, prior, threshold, screen_alpha)
            new = [c for c in active if screened[c].suspect and c not in planned and c not in left_out]
            if new:
                plan = gs.plan_confirmation({c: screened[c].noise for c in new},
                                            {c: 2 * pairs.seconds_per_process(c) for c in new}, clock.left,
                                            threshold, alpha, already=len(planned), extras=False)  # fmt: skip
                planned.update(plan.pairs)
                left_out.update(plan.left_out)
                level = plan.level
                # a larger Holm family: earlier suspects need what the stricter level needs too
                for cid, had in planned.items():
                    planned[cid] = max(had, gs.needs_of(screened[cid].noise, threshold, level, gs.TARGET_POWER)[0])
                pairs.log("plan", stage="confirm", suspects=new, pairs=plan.pairs, level=plan.level,
                          left_out={c: list(v) for c, v in plan.left_out.items()}, seconds_left=clock.left)  # fmt: skip
                pairs.say(f"screen: {len(new)} suspect(s); measuring {len(plan.pairs)} again, "
                          f"{len(plan.left_out)} left out for their noise")  # fmt: skip
        # every suspect's confirmation, again while its pairs fall short (a busy stretch took them out)
        pairs.rounds("confirm", {c: n for c, n in planned.items() if c not in pairs.given_up})
        if clock.ran_out or len(pairs.pairs) == measured:  # out of time, or nothing more could be measured
            break
        short = [c for c in active if c not in planned and c not in left_out and not screened[c].suspect
                 and min(screened[c].power.values()) < gs.SCREEN_POWER]  # fmt: skip
        targets = gs.plan_screen({c: screened[c].noise for c in short}, {c: screened[c].pairs for c in short},
                                 threshold, {c: 2 * pairs.seconds_per_process(c) for c in short}, clock.left,
                                 SCREEN_SHARE, screen_alpha)  # fmt: skip
    # 4. what is left: the suspects' noisier metrics, the cheapest first (after the screen's cells short
    # of power got theirs: a few pairs there turn an inconclusive cell unchanged, where a noisy p99 at
    # the confirmation's strict level can swallow the night)
    live = [c for c in planned if c not in pairs.given_up]
    if live and not clock.ran_out:
        noise_now = {c: gs.cell_noise([pairs.of("screen", c), pairs.of("confirm", c)], prior, threshold) for c in live}
        seconds = {c: 2 * pairs.seconds_per_process(c) for c in live}
        more = gs.plan_extras({c: planned[c] for c in live}, noise_now, seconds, clock.left, threshold, level)
        grown = {c: n for c, n in more.items() if n > planned[c]}
        if grown:
            planned.update(grown)
            pairs.log("plan", stage="confirm", extras=grown, level=level, seconds_left=clock.left)
            pairs.rounds("confirm", grown)
    confirmed = gs.judge_confirmed(
        {c: (pairs.cells[c].label, pairs.of("screen", c), pairs.of("confirm", c)) for c in planned
         if c not in pairs.given_up}, prior, threshold, alpha,
    )  # fmt: skip

    # the verdicts, in the cells' order
    cells = []
    for cid in ids:
        if cid in pairs.given_up:
            continue
        label, before = pairs.cells[cid].label, pairs.of("screen", cid)
        dropped = sum(not p.usable for p in pairs.pairs if p.cell_id == cid and p.stage != "calibration")
        info: dict[str, Any] = {
            "stage": "screen", "suspect": screened[cid].suspect, "screen_pairs": screened[cid].pairs,
            "confirm_pairs": None, "dropped_pairs": dropped, "screen_p": screened[cid].p,
            "noise": screened[cid].noise, "power": screened[cid].power, "pairs_needed": None,
        }  # fmt: skip
        if cid in confirmed:
            cell, sd, pw = confirmed[cid]
            fresh = sum(p.usable for p in pairs.of("confirm", cid))
            info.update(stage="confirm", confirm_pairs=fresh, noise=sd, power=pw, pairs_needed=planned[cid])
        elif cid in left_out:
            needed, afford = left_out[cid]
            cell = gs.judge_left_out(cid, label, before, screened[cid], needed, afford)
            info["pairs_needed"] = needed
        else:
            cell = gs.judge_screened(cid, label, before, screened[cid], threshold)
            if not before:
                cell.note = "not measured: the budget ran out before its first pair"
        cell.gate = info
        cells.append(cell)
    return Decision(
        cells, [c for c in ids if c in pairs.given_up], [c.id for c in sample if pairs.of("calibration", c.id)],
        sum(p.usable for p in calibration),
        prior, n1, len(planned) + len(left_out), len(planned), len(left_out), level,
    )  # fmt: skip


@dataclass
class _Side:
    run: RunDir
    manifest: Manifest
    repeats: dict[str, int] = field(default_factory=dict)  # cell id -> processes measured so far


class WorkerPairs(Pairs):
    """The live gate: worker processes of each side's code, each journaled in its side's run folder,
    the pairs in the gate's journal."""

    def __init__(self, folder: Path, scenario: Scenario, planned: Sequence[PlannedCell], sides: Sides,
                 options: GateOptions, clock: Clock, say: Callable[[str], None]) -> None:  # fmt: skip
        from harness import planning, runner

        cells = [GateCell(p.cell.id, p.cell.label, p.cell.backend, process_estimate(scenario, p.cell)) for p in planned]
        super().__init__(cells, options.seed, clock, say)
        self.folder, self.scenario, self.options = folder, scenario, options
        self.planned = {p.cell.id: p for p in planned}
        self.journal = folder / JOURNAL
        self.records: dict[tuple[str, str], list[CellRecord]] = {}  # (cell, side) -> its failed processes
        base_path = sides.baseline.path
        self.sides: dict[str, _Side] = {}
        for name, code in (("calibration", base_path), ("baseline", base_path), ("candidate", sides.candidate_path)):
            cache = folder / ("candidate" if name == "candidate" else "baseline") / ".cache"
            run_options = planning.RunOptions(
                out_root=folder / name, plugins=options.plugins, code_path=code, cache_dir=cache,
                command=f"{options.command} ({name})",
            )  # fmt: skip
            run = runner.create_run(scenario, run_options)
            self.sides[name] = _Side(run, run.manifest())

    def log(self, event: str, **fields: Any) -> None:
        """One line of the gate's journal, fsync'ed: a killed gate keeps every pair it finished."""
        line = json.dumps({"event": event, "time": time.time(), **fields}, default=str) + "\n"
        with open(self.journal, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def process(self, side: str, cid: str) -> gs.Process:
        from harness import runner

        state = self.sides[side]
        repeat = state.repeats.get(cid, 0)
        state.repeats[cid] = repeat + 1
        record = runner.measure_one(state.run, self.planned[cid], repeat, state.manifest, runner.SilentReporter())
        seconds = float((record.ended_at or 0) - (record.started_at or 0))
        values = {m: float(record.get(key) or 0.0) for m, (key, _) in METRICS.items()}
        status = str(record.status)
        if status != "ok":  # kept to say why, should the cell be given up
            self.records.setdefault((cid, "baseline" if side == "calibration" else side), []).append(record)
        return gs.Process(status, status == "ok" and is_trusted(record), values, seconds, repeat, record.reason[:300])

    def finish(self) -> dict[str, str]:
        from harness import runner

        for state in self.sides.values():
            runner.finish(state.run, runner.SilentReporter())
        return {name: str(state.run.path) for name, state in self.sides.items()}

    def release(self) -> None:
        for state in self.sides.values():
            state.run.release()

    def lost(self, cid: str) -> NotMeasured:
        """A cell a side kept failing: nothing to compare, only why; the candidate failing it where
        the baseline measured it is a regression, as in bench compare."""
        failing = self.given_up[cid]
        missing_in = "both" if len(failing) == 2 else next(iter(failing))
        base = _status(self.records.get((cid, "baseline"), [])) if "baseline" in failing else ("ok", "")
        cand = _status(self.records.get((cid, "candidate"), [])) if "candidate" in failing else ("ok", "")
        verdict = "regressed" if missing_in == "candidate" else "not compared"
        return NotMeasured(cid, self.cells[cid].label, missing_in, *base, *cand, verdict)


def _gate_cells(
    scenario: Scenario, plugins: Sequence[str], metrics: Sequence[str] = tuple(METRICS)
) -> tuple[list[PlannedCell], list[dict[str, str]]]:
    """The cells the gate measures here, and those it leaves out (skipped here, a peak search, an
    offline cell where only latencies are judged) with why."""
    from harness import planning
    from harness.pluginmanager import explicit_plugins, registries

    regs = registries(explicit_plugins(plugins))
    planning.check_scenario(scenario, regs)
    cells = planning.select_cells(scenario, planning.RunOptions())
    if scenario.gate is not None:
        cells = [c for c in cells if scenario.gate.selects(c)]
    kept, excluded = [], []
    for p in planning.plan(cells, regs):
        if p.skip_reason is not None:
            excluded.append({"cell_id": p.cell.id, "label": p.cell.label, "reason": f"skipped here: {p.skip_reason}"})
        elif p.cell.load_options.get("target_qps") == "peak":
            why = "a peak search measures another rate in every process: compare its runs with bench compare"
            excluded.append({"cell_id": p.cell.id, "label": p.cell.label, "reason": why})
        elif p.cell.load == "offline" and "throughput" not in metrics:
            why = "an offline cell has no latency per query, and --metrics leaves out its throughput"
            excluded.append({"cell_id": p.cell.id, "label": p.cell.label, "reason": why})
        else:
            kept.append(p)
    if not kept:
        reasons = "; ".join(f"{e['label']}: {e['reason']}" for e in excluded[:5])
        raise UsageError(f"no cell of {scenario.source_name} to gate here: {reasons}")
    return kept, excluded


def check_budget(scenario: Scenario, planned: Sequence[PlannedCell], budget_s: float) -> None:
    """Refuse a budget that cannot hold one pair of processes per cell and one calibration pair,
    estimated from the scenario's durations (:func:`process_estimate`; preparing models comes on top)."""
    each = [process_estimate(scenario, p.cell) for p in planned]
    need = 2 * (max(each) + sum(each)) + FINISH_RESERVE_S
    if budget_s < need:
        raise UsageError(
            f"--budget {budget_s:g}s cannot hold one pair of processes per cell: {len(planned)} cell(s) and a "
            f"calibration pair need at least {need:.0f} s ({2 * (len(planned) + 1)} processes of at least "
            f"{min(each):.1f} s: start {PROCESS_START_S:g} s + warm-up + window, from the scenario's durations; "
            f"preparing a model comes on top) and {FINISH_RESERVE_S:g} s to finish"
        )


def run_gate(scenario: Scenario, options: GateOptions, say: Callable[[str], None] = lambda line: None) -> Comparison:
    """Measure and judge; raises UsageError for input that cannot be gated, before anything runs."""
    clock = Clock(options.budget_s)
    for name, value in (("threshold", options.threshold), ("p99 threshold", options.p99_threshold)):
        if value is not None and not 0 < value < 1:
            raise UsageError(f"the {name} must be above 0 % and below 100 % (got {value * 100:g} %)")
    if (options.baseline is None) == (options.baseline_code is None):
        raise UsageError("give the baseline, one way: --baseline REF (a git branch, tag or commit, or 'installed'), "
                         "or --baseline-code DIR (a checkout of it)")  # fmt: skip
    measured = gate_scenario(scenario)
    planned, excluded = _gate_cells(measured, options.plugins, options.metrics)
    check_budget(measured, planned, options.budget_s)
    with sides_of(options.baseline, options.baseline_code, options.allow_dirty) as sides:
        if sides.baseline.path is not None and sides.baseline.path != sides.candidate_path:
            check_baseline_can_run(sides.baseline.path, scenario, [p.cell for p in planned], options.plugins)
        folder = options.out_root / new_run_id(scenario.name)
        folder.mkdir(parents=True, exist_ok=False)
        gate = WorkerPairs(folder, measured, planned, sides, options, clock, say)
        try:
            result = _measure_and_judge(gate, sides, excluded)
        finally:
            gate.release()
    return result


def _measure_and_judge(gate: WorkerPairs, sides: Sides, excluded: list[dict[str, Any]]) -> Comparison:
    options, clock = gate.options, gate.clock
    cells = [{"cell_id": c.id, "label": c.label} for c in gate.cells.values()]
    gate.log("start", scenario=gate.scenario.name, cells=cells, excluded=excluded, seed=options.seed,
             budget_s=options.budget_s, threshold=options.threshold, thresholds=options.thresholds, alpha=options.alpha,
             screen_alpha=options.screen_alpha, baseline=sides.baseline_name, baseline_commit=sides.baseline_commit,
             baseline_code=sides.baseline.how, candidate=sides.candidate_name,
             candidate_commit=sides.candidate_commit)  # fmt: skip
    gate.say(f"gate: {len(gate.cells)} cell(s), baseline {sides.baseline_name} ({sides.baseline.how}), candidate "
             f"{sides.candidate_name}, budget {options.budget_s:.0f} s, seed {options.seed}")  # fmt: skip
    decision = decide(gate, options.thresholds, options.alpha, options.screen_alpha)
    runs = gate.finish()
    used, window = clock.used, gate.scenario.measurement
    info = {
        "scenario": gate.scenario.name,
        "baseline": {"name": sides.baseline_name, "commit": sides.baseline_commit, "code": sides.baseline.how},
        "candidate": {"name": sides.candidate_name, "commit": sides.candidate_commit, "dirty": sides.candidate_dirty},
        "seed": options.seed, "budget_s": options.budget_s, "used_s": used, "budget_ran_out": clock.ran_out,
        "thresholds": options.thresholds,
        "window": {"warmup_s": window.warmup_s, "duration_s": window.min_duration_s,
                   "quiet_wait_s": window.quiet_wait_s},
        "processes": sum(len(v) for v in gate.seconds.values()), "seconds_per_process": gate.seconds_per_process(),
        "calibration": {"cells": decision.calibration_cells, "pairs": decision.calibration_pairs,
                        "noise": decision.noise},
        "screen": {"alpha": options.screen_alpha, "power": gs.SCREEN_POWER, "pairs_per_cell": decision.screen_pairs,
                   "suspects": decision.suspects},
        "confirm": {"target_power": gs.TARGET_POWER, "level": decision.level, "measured": decision.measured_again,
                    "left_out": decision.left_out},
        "excluded": excluded, "folder": str(gate.folder), "runs": runs,
    }  # fmt: skip
    missing = [gate.lost(cid) for cid in decision.given_up]
    result = Comparison(sides.baseline_name, sides.candidate_name, options.threshold, options.alpha, decision.cells,
                        [], [], [], not_measured=missing, gate=info)  # fmt: skip
    from harness.analysis.render import render

    write_atomic(gate.folder / RESULT, render(result, "json").encode())
    gate.log("end", used_s=used, budget_ran_out=clock.ran_out, counts=result.counts(), regression=result.has_regression)
    return result


def read_journal(folder: Path) -> list[dict[str, Any]]:
    """A gate's journal as written: its start, every pair (each process's outcome and values), each
    stage's plan, the budget running out, its end."""
    path = folder / JOURNAL
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pairs_of(folder: Path) -> list[gs.Pair]:
    """The pairs a gate's journal holds, to judge again (the functions of :mod:`gate_stats`)."""
    return [gs.Pair.from_dict(e) for e in read_journal(folder) if e["event"] == "pair"]
