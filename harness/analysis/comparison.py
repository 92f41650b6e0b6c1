"""Comparing runs: a baseline against a candidate, cell by cell.

Cells are matched by configuration identity (the cell id). Per matched cell and metric
(throughput, p50, p99) the relative change of the level over the run's processes (their mean, a
disturbed process left out) comes with a confidence interval whose variance adds two parts: a
bootstrap over the stored per-query latencies within each process, and the spread between
independent processes: the cell's own where the runs measured repeats (:func:`cell_spread`),
shrunk towards the spread pooled robustly over every cell of both runs, itself shrunk towards an
assumed noise floor (``NOISE_FLOOR``), which stands alone for runs of one process per cell.
A cell is ``regressed`` (or ``improved``) when the change is significant after a Holm correction
over every metric of every cell compared and its interval reaches ``threshold`` (a change that large is
not ruled out); ``unchanged`` when it is smaller than the threshold (its interval inside it, or
not significant with an estimate under it); ``inconclusive`` when the estimate is at least the
threshold but not significant.

The nightly gate is sequential (:func:`suspects`, :func:`apply_confirmation`): the sweep's
comparison only screens, with a loose one-sided test per cell; the suspects are measured again,
baseline code and candidate code in alternating rounds on this machine, and only that second,
independent measurement, Holm-corrected over the suspects, decides. Nothing here imports a runtime.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.economics import is_trusted
from harness.analysis.intervals import (
    _level,
    _normal,
    bootstrap_log_variance,
    cell_dof,
    cell_spread,
    holm,
    pooled_run_sigma,
)
from harness.errors import UsageError
from harness.records import CellRecord
from harness.store import RunDir

#: metric -> (record field, True when higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "throughput": ("throughput_sps", True),
    "p50": ("p50_ms", False),
    "p99": ("p99_ms", False),
}
#: the verdict of a metric reported but not judged (``bench gate --metrics`` left it out)
NOT_JUDGED = "not judged"
#: environment fields that must match for a comparison to mean something
ENV_KEYS = ("cpu.model", "cpu.usable_cpus", "memory_total_mb", "gpus", "python")
#: CUDA variables that change what a GPU cell measures, compared where both runs recorded them (a run
#: made before bench recorded ``gpu_env`` has no such record: nothing to compare)
GPU_ENV_KEYS = ("CUDA_LAUNCH_BLOCKING", "NVIDIA_TF32_OVERRIDE")
#: packages compared whatever the backends: the array library every input and output goes through
#: (the backends' own runtimes come from their declarations, see :func:`runtime_packages`)
CORE_RUNTIME_PACKAGES = ("numpy",)

#: the screen's one-sided p-value below which a cell that looks slower is measured again
SCREEN_ALPHA = 0.25
#: processes per side when suspects are measured again
CONFIRM_REPEATS = 20

#: between-process spread assumed when neither run has repeats to measure it (sd of the log): 3 %
#: is the assumption the tests and the README's older numbers rest on. Fresh processes of dlrm-small
#: b64 at the runtimes' default threads differed by 17-19 % on a 2-CPU VM (benchmarks/thread_settings.py),
#: and with 3 % assumed two one-process sweeps of the same code differ "significantly" there
#: (benchmarks/compare_power.py): measure repeats, or use bench gate, on such a machine
NOISE_FLOOR = 0.03


@dataclass
class MetricChange:
    metric: str
    baseline: float | None
    candidate: float | None
    change: float | None  # candidate / baseline - 1
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None = None
    worse: bool = False  # the change is in the bad direction
    verdict: str = "inconclusive"


@dataclass
class CellComparison:
    cell_id: str
    label: str
    metrics: dict[str, MetricChange] = field(default_factory=dict)
    verdict: str = "unchanged"
    #: the sweep's verdict when the cell was measured again (``--confirm``); its numbers are then
    #: the re-measurement's
    screen_verdict: str | None = None
    #: why the verdict is what it is when the numbers alone do not say (a side measured on a busy machine)
    note: str | None = None
    #: ``bench gate``: the cell's pairs, noise and power (docs/compare.md); None in a comparison of runs
    gate: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"cell_id": self.cell_id, "label": self.label, "verdict": self.verdict,
                "screen_verdict": self.screen_verdict, "note": self.note, "gate": self.gate,
                "metrics": {k: asdict(v) for k, v in self.metrics.items()}}  # fmt: skip


@dataclass
class NotMeasured:
    """A cell of both runs that one of them, or both, did not measure: there is nothing to compare,
    only why. The candidate losing a cell the baseline measured is a regression."""

    cell_id: str
    label: str
    missing_in: str  # "baseline", "candidate" or "both"
    baseline_status: str  # "ok" where the run measured it
    baseline_reason: str
    candidate_status: str
    candidate_reason: str
    #: "regressed" when the baseline measured the cell and the candidate did not, else "not compared"
    verdict: str = "not compared"
    #: with ``--confirm``, for a cell measured again: what the sweep's comparison had said
    screen_verdict: str | None = None

    def why(self) -> str:
        """One line: the status of each run that did not measure the cell, and its reason."""

        def side(status: str, reason: str, where: str) -> str:
            reason = " ".join(reason.split())  # one line: a worker's output tail has many
            return f"{status} {where}" + (f" ({reason[:160]})" if reason else "")

        base, cand = (self.baseline_status, self.baseline_reason), (self.candidate_status, self.candidate_reason)
        if self.missing_in == "candidate":
            return side(*cand, "in the candidate") + "; the baseline measured it"
        if self.missing_in == "baseline":
            return side(*base, "in the baseline") + "; the candidate measured it"
        if base == cand:
            return side(*base, "in both")
        return side(*base, "in the baseline") + "; " + side(*cand, "in the candidate")


def _status(records: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """A run's status of one cell and why: "ok" when any of its processes measured."""
    if any(r.get("status") == "ok" for r in records):
        return "ok", ""
    if not records:
        return "not run", "no record of the cell"
    statuses = list(dict.fromkeys(str(r.get("status")) for r in records))  # several processes: each status once
    reason = next((str(r["reason"]) for r in records if r.get("reason")), "")
    return ", ".join(statuses), reason[:500]


def not_measured(
    cell_id: str, label: str, base: Sequence[Mapping[str, Any]], cand: Sequence[Mapping[str, Any]]
) -> NotMeasured | None:
    """Why a cell of both runs cannot be compared (from each run's records of it), or None when both
    measured it."""
    (b_status, b_reason), (c_status, c_reason) = _status(base), _status(cand)
    if b_status == "ok" and c_status == "ok":
        return None
    missing_in = "both" if b_status != "ok" and c_status != "ok" else ("baseline" if c_status == "ok" else "candidate")
    verdict = "regressed" if missing_in == "candidate" else "not compared"
    return NotMeasured(cell_id, label, missing_in, b_status, b_reason, c_status, c_reason, verdict)


@dataclass
class Comparison:
    baseline: str
    candidate: str
    threshold: float
    alpha: float
    cells: list[CellComparison]
    only_baseline: list[str]
    only_candidate: list[str]
    env_differences: list[str]
    #: how the suspects were measured again (None: they were not)
    confirmation: dict[str, Any] | None = None
    #: cells of both runs that one or both did not measure (``cells`` holds those measured in both)
    not_measured: list[NotMeasured] = field(default_factory=list)
    #: which run is a ``--quick`` run: {"baseline": bool, "candidate": bool}
    quick: dict[str, bool] = field(default_factory=dict)
    #: ``bench gate``: its budget, calibration and stages (docs/compare.md); None in a comparison of runs
    gate: dict[str, Any] | None = None

    @property
    def regressed(self) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict == "regressed"]

    @property
    def lost(self) -> list[NotMeasured]:
        """Cells the baseline measured and the candidate did not."""
        return [n for n in self.not_measured if n.verdict == "regressed"]

    @property
    def has_regression(self) -> bool:
        return bool(self.regressed or self.lost)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cell in self.cells:
            out[cell.verdict] = out.get(cell.verdict, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline, "candidate": self.candidate, "threshold": self.threshold,
            "alpha": self.alpha, "counts": self.counts(), "cells": [c.as_dict() for c in self.cells],
            "only_baseline": self.only_baseline, "only_candidate": self.only_candidate,
            "env_differences": self.env_differences, "confirmation": self.confirmation,
            "not_measured": [asdict(n) for n in self.not_measured], "quick": self.quick, "gate": self.gate,
        }  # fmt: skip


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def runtime_packages(plugins: Sequence[str] = ()) -> tuple[str, ...]:
    """numpy and every runtime distribution the registered backends declare (``Backend.packages``):
    the packages whose versions two runs must share. The plugins are those of ``BENCH_PLUGINS``,
    the entry points and ``plugins``; one that fails to load declares nothing."""
    from harness.pluginmanager import explicit_plugins, registries

    regs = registries(explicit_plugins(plugins), strict=False)
    return tuple(dict.fromkeys([*CORE_RUNTIME_PACKAGES, *regs.runtime_packages()]))


def cpu_settings(recorded: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's cpu settings (reserve, pin, wait), the defaults for runs made before bench recorded them."""
    return {"reserve": 0, "pin": False, "wait": "default", **(recorded or {})}


def env_differences(base: Mapping[str, Any], cand: Mapping[str, Any], packages: Sequence[str]) -> list[str]:
    """The machine fields and the versions of ``packages`` (see :func:`runtime_packages`) that differ
    between two runs' environments."""
    out = []
    for key in ENV_KEYS:
        a, b = _get(base, key), _get(cand, key)
        if key == "gpus":
            a = [g.get("name") for g in a or []]
            b = [g.get("name") for g in b or []]
        if a != b:
            out.append(f"{key}: {a!r} vs {b!r}")
    if "gpu_env" in base and "gpu_env" in cand:
        for var in GPU_ENV_KEYS:
            a, b = base["gpu_env"].get(var), cand["gpu_env"].get(var)
            if a != b:
                out.append(f"gpu_env.{var}: {a!r} vs {b!r}")
    for pkg in packages:
        a, b = _get(base, f"packages.{pkg}"), _get(cand, f"packages.{pkg}")
        if a != b:
            out.append(f"packages.{pkg}: {a!r} vs {b!r}")
    return out


def _latencies(run: RunDir, records: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    groups = []
    for rec in records:
        path = rec.get("latency_file")
        if path and (run.path / path).is_file():
            lat = np.load(run.path / path, allow_pickle=False).astype(np.float64) / 1e6
            if lat.size:
                groups.append(lat)
    return groups


@dataclass
class Side:
    """One run's measurement of a cell: per process, its latencies and its metric values."""

    latencies: list[np.ndarray]
    values: dict[str, list[float]]


def ok(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records that measured (a failed or skipped process has no numbers to compare)."""
    return [r for r in records if r.get("status") == "ok"]


def side_of(run: RunDir, records: Sequence[Mapping[str, Any]]) -> Side | None:
    if not records:
        return None
    values = {m: [float(r[key]) for r in records if r.get(key)] for m, (key, _) in METRICS.items()}
    return Side(_latencies(run, records), values)


def judge_cells(
    cells: list[tuple[str, str, int, Side | None, Side | None]],
    threshold: float,
    alpha: float,
    noise_floor: float = NOISE_FLOOR,
) -> list[CellComparison]:
    """Compare each (id, label, batch, baseline side, candidate side) and decide, Holm over every
    metric of every cell."""
    sigma = {
        metric: pooled_run_sigma([side.values[metric] for *_, b, c in cells for side in (b, c) if side], noise_floor)
        for metric in METRICS
    }
    results = []
    for cid, label, batch, base, cand in cells:
        cell = CellComparison(cid, label)
        results.append(cell)
        if base is None or cand is None:
            cell.verdict = "regressed" if base is not None else "inconclusive"  # measured before, not now
            continue
        for metric, (_, higher_better) in METRICS.items():
            b_vals, c_vals = base.values[metric], cand.values[metric]
            if not b_vals or not c_vals:
                continue
            pooled = sigma[metric] or noise_floor
            (bv, nb), (cv, nc) = _level(b_vals, pooled), _level(c_vals, pooled)
            variance = cell_spread(b_vals, c_vals, pooled) ** 2 * (1 / nb + 1 / nc)
            if base.latencies and cand.latencies:  # plus the within-process spread, by bootstrap
                seed = zlib.crc32(f"{cid}:{metric}".encode())  # the same numbers every time it is run
                variance += bootstrap_log_variance(base.latencies, cand.latencies, metric, batch, seed, processes=False)
            change, lo, hi, p = _normal(math.log(cv / bv), variance, 0.95, cell_dof(b_vals, c_vals))
            worse = change < 0 if higher_better else change > 0
            cell.metrics[metric] = MetricChange(metric, bv, cv, change, lo, hi, p, worse=worse)
    _decide(results, threshold, alpha)
    return results


def records_by_cell(run: RunDir) -> dict[str, list[CellRecord]]:
    cells: dict[str, list[CellRecord]] = {}
    for rec in run.records():
        cells.setdefault(rec["cell_id"], []).append(rec)
    return cells


def compare_runs(
    baseline: Path,
    candidate: Path,
    threshold: float = 0.05,
    alpha: float = 0.01,
    allow_env_mismatch: bool = False,
    noise_floor: float = NOISE_FLOOR,
    packages: Sequence[str] | None = None,
) -> Comparison:
    """Compare two run folders; raises UsageError for runs that cannot be compared.

    ``packages``: the runtime versions that must match (default :func:`runtime_packages`)."""
    if not 0 < threshold < 1:  # a fraction here; the user gave percent (--threshold 5 is 0.05)
        raise UsageError(f"the threshold must be above 0 % and below 100 % (got {threshold * 100:g} %)")
    base_run, cand_run = RunDir.open(baseline), RunDir.open(candidate)
    bm, cm = base_run.manifest(), cand_run.manifest()
    if bm.scenario.name != cm.scenario.name:
        raise UsageError(
            f"{baseline} measured scenario '{bm.scenario.name}' and {candidate} '{cm.scenario.name}': "
            "compare runs of one scenario"
        )
    if packages is None:
        packages = runtime_packages()
    diffs = env_differences(bm.environment, cm.environment, packages)
    cpu_b, cpu_c = cpu_settings(bm.settings.cpu), cpu_settings(cm.settings.cpu)
    if cpu_b != cpu_c:  # threads pinned or passive measure other numbers than the defaults
        diffs.append(f"settings.cpu: {cpu_b} vs {cpu_c}")
    if diffs and not allow_env_mismatch:
        raise UsageError(
            "the runs come from different machines or runtime versions, so their numbers differ for reasons "
            "other than the code: " + "; ".join(diffs) + " (pass --allow-env-mismatch to compare anyway)"
        )
    base_cells, cand_cells = records_by_cell(base_run), records_by_cell(cand_run)
    common = [cid for cid in cand_cells if cid in base_cells]
    if not common:
        raise UsageError(f"{baseline} and {candidate} have no cell in common: nothing to compare")
    sides: list[tuple[str, str, int, Side | None, Side | None]] = []
    missing: list[NotMeasured] = []
    untrusted: dict[str, str] = {}
    for cid in common:
        label = cand_cells[cid][0]["label"]
        gone = not_measured(cid, label, base_cells[cid], cand_cells[cid])
        if gone is not None:  # nothing to compare: listed apart, with why
            missing.append(gone)
            continue
        b_recs, c_recs = ok(base_cells[cid]), ok(cand_cells[cid])
        batch = int(c_recs[0]["config"]["batch_size"])
        # processes measured on a busy machine say nothing about the code: left out where a side has
        # quiet ones, and a side with none makes the cell inconclusive whatever its numbers
        busy = [name for name, recs in (("baseline", b_recs), ("candidate", c_recs)) if not any(map(is_trusted, recs))]
        if busy:
            untrusted[cid] = f"measured only on a busy machine in the {' and the '.join(busy)}: not judged"
        else:
            b_recs, c_recs = [r for r in b_recs if is_trusted(r)], [r for r in c_recs if is_trusted(r)]
        issued = [sorted({generator_of(r) or "-" for r in recs}) for recs in (b_recs, c_recs)]
        if issued[0] != issued[1] and cid not in untrusted:
            untrusted[cid] = (
                f"its queries were issued by different generators (baseline {', '.join(issued[0])}, candidate "
                f"{', '.join(issued[1])}): latency moves with the generator's own lateness, not only with the "
                "code; not judged"
            )
        sides.append((cid, label, batch, side_of(base_run, b_recs), side_of(cand_run, c_recs)))
    results = judge_cells(sides, threshold, alpha, noise_floor)
    for cell in results:
        if cell.cell_id in untrusted:
            cell.verdict, cell.note = "inconclusive", untrusted[cell.cell_id]
    return Comparison(
        str(baseline), str(candidate), threshold, alpha, results,
        sorted(set(base_cells) - set(cand_cells)), sorted(set(cand_cells) - set(base_cells)), diffs,
        not_measured=missing,
        quick={"baseline": bm.settings.quick, "candidate": cm.settings.quick},
    )  # fmt: skip


def generator_of(record: Mapping[str, Any]) -> str | None:
    """Who issued a LoadGen cell's queries: its ``generator``, or ``loadgen`` for records older than
    the field (only LoadGen issued them then); None for a single-stream cell."""
    if record.get("stop_reason") != "loadgen":
        return None
    return str(record.get("generator") or "loadgen")


def _decide(cells: list[CellComparison], threshold: float, alpha: float) -> None:
    # one family: every metric of every cell, so that alpha bounds the chance of any false verdict
    changes = [m for c in cells for m in c.metrics.values() if m.p_value is not None]
    for change, adjusted in zip(changes, holm([c.p_value or 1.0 for c in changes]), strict=True):
        change.p_adjusted = adjusted
    for cell in cells:
        if cell.verdict == "regressed":  # measured before, not any more
            continue
        verdicts = []
        for change in cell.metrics.values():
            change.verdict = _verdict(change, threshold, alpha)
            verdicts.append(change.verdict)
        for verdict in ("regressed", "improved", "inconclusive"):
            if verdict in verdicts:
                cell.verdict = verdict
                break
        else:
            cell.verdict = "unchanged" if verdicts else "inconclusive"


def _verdict(change: MetricChange, threshold: float, alpha: float) -> str:
    if change.change is None:
        return "inconclusive"
    significant = change.p_adjusted is not None and change.p_adjusted < alpha
    # the end of the interval in the direction of the change: how large the change may be
    far = change.ci_high if change.change > 0 else change.ci_low
    if significant and far is not None and abs(far) >= threshold:
        return "regressed" if change.worse else "improved"
    if significant or abs(change.change) < threshold:  # a real change smaller than the threshold, or noise
        return "unchanged"
    return "inconclusive"  # as large as the threshold, but within the noise


def suspects(result: Comparison, screen_alpha: float = SCREEN_ALPHA) -> list[str]:
    """The cells to measure again before a regression is declared: those regressed, and those with
    any metric worse at a one-sided p-value (unadjusted) under ``screen_alpha``. The screen is loose
    on purpose: a cell it lets through is never flagged, a cell it keeps costs a re-measurement."""
    out = []
    for cell in result.cells:
        looks_worse = any(
            m.worse and m.p_value is not None and m.p_value / 2 < screen_alpha for m in cell.metrics.values()
        )
        if cell.verdict == "regressed" or looks_worse:
            out.append(cell.cell_id)
    # a cell the candidate lost may have failed by chance (a timeout on a busy machine): measured again too
    return out + [n.cell_id for n in result.lost]


def apply_confirmation(
    result: Comparison, confirmed: list[CellComparison], how: dict[str, Any], missing: list[NotMeasured] | None = None
) -> None:
    """Replace the suspects' verdicts and numbers with those of their re-measurement (which was
    judged on its own, Holm over the suspects): the sweep only chose what to measure again.
    ``missing``: the suspects one side did not measure again; they join ``not_measured``."""
    missing = missing or []
    said = {c.cell_id: (c.label, c.verdict) for c in result.cells}
    said |= {n.cell_id: (n.label, f"{n.verdict} ({n.candidate_status} in the candidate)") for n in result.lost}
    both: list[CellComparison | NotMeasured] = [*confirmed, *missing]
    for again in both:
        again.label, again.screen_verdict = said[again.cell_id]
    by_id = {c.cell_id: c for c in confirmed}
    gone = {n.cell_id for n in missing}
    cells = [by_id.pop(c.cell_id, c) for c in result.cells if c.cell_id not in gone]
    result.cells = cells + list(by_id.values())  # the rest were not measured in the sweep
    again_ids = {c.cell_id for c in confirmed} | gone
    result.not_measured = [n for n in result.not_measured if n.cell_id not in again_ids] + missing
    held = sum(c.verdict == "regressed" for c in confirmed) + sum(n.verdict == "regressed" for n in missing)
    result.confirmation = {**how, "suspects": len(again_ids), "held": held}
