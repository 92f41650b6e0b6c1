"""A scenario's history: every run under a results root, by date and commit, and where each cell's
throughput or p99 shifted (change points)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.economics import is_trusted, untrusted_reason
from harness.environment import machine_of
from harness.errors import StoreError
from harness.store import MANIFEST, RunDir

# --------------------------------------------------------------------------------------------
# history and change points
# --------------------------------------------------------------------------------------------


def change_points(values: list[float], min_size: int = 3, threshold: float = 0.05, z: float = 4.0) -> list[int]:
    """Indices where a series' level shifts: binary segmentation on log values. A split is kept when
    the two sides' means differ by at least ``threshold`` (relative) and by ``z`` standard errors
    (Welch); each side is then searched again. Returns the first index of each new level."""
    x = np.log(np.asarray(values, dtype=np.float64))
    found: list[int] = []

    def search(lo: int, hi: int) -> None:
        best, best_t = None, 0.0
        for k in range(lo + min_size, hi - min_size + 1):
            a, b = x[lo:k], x[k:hi]
            se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) if a.size > 1 and b.size > 1 else 0.0
            diff = abs(b.mean() - a.mean())
            t = diff / se if se > 0 else (math.inf if diff > 0 else 0.0)
            if math.expm1(diff) >= threshold and t > best_t:
                best, best_t = k, t
        if best is not None and best_t >= z:
            found.append(best)
            search(lo, best)
            search(best, hi)

    search(0, x.size)
    return sorted(found)


@dataclass
class History:
    """The rows of a history (one per run and cell), the run folders left out of it, each with why,
    and what a reader must know of the runs kept (one still being written, one left unfinished)."""

    rows: list[dict[str, Any]]
    skipped: list[str]
    notes: list[str] = field(default_factory=list)


def history(root: Path, scenario: str | None = None) -> History:
    """Every run under ``root`` (of ``scenario``), oldest first: its date, git commit and, per cell,
    throughput and p99 (the mean over the cell's measured repeats, so a run is one point however many
    repeats it made). A damaged run folder costs only its own place in the history: it is left out
    and named in ``skipped``, never an error for the others."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    notes: list[str] = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (path / MANIFEST).is_file():
            continue  # not a run folder (a cache, a user's own folder)
        try:
            run = RunDir.open(path)
            manifest = run.manifest()
            if scenario and manifest.scenario.name != scenario:
                continue
            read = run.read_journal()
            records = list(run.records(read))
            notes += [f"{path.name}: {note}" for note in run.state(read).notes(path)]
        except StoreError as exc:
            skipped.append(f"{path.name} left out: {str(exc).splitlines()[0]}")
            continue
        git = manifest.environment.get("git") or {}
        by_cell: dict[str, list[Any]] = {}
        for rec in records:
            if rec.get("status") == "ok":
                by_cell.setdefault(rec["cell_id"], []).append(rec)
        for cell_id, repeats in by_cell.items():
            first = repeats[0]
            config = first.get("config") or {}
            untrusted = [r for r in repeats if not is_trusted(r)]
            rows.append({
                "run": path.name, "created_at": manifest.created_at, "commit": (git.get("commit") or "")[:12],
                "scenario": manifest.scenario.name, "cell_id": cell_id, "label": first["label"],
                "throughput_sps": _mean(r.get("throughput_sps") for r in repeats),
                "p99_ms": _mean(r.get("p99_ms") for r in repeats), "repeats": len(repeats),
                "quick": manifest.settings.quick, "config": config,
                "machine": config.get("machine") or machine_of(manifest.environment),
                "trusted": not untrusted, "untrusted_reason": untrusted_reason(untrusted[0]) if untrusted else None,
            })  # fmt: skip
    rows.sort(key=lambda r: (r["created_at"] or 0, r["run"]))
    return History(rows, skipped, notes)


def _mean(values: Iterable[Any]) -> float | None:
    """The mean of the numbers among ``values``; None when there is none."""
    found = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(found) / len(found) if found else None


def series_key(row: dict[str, Any]) -> tuple[str, bool, str]:
    """What makes rows one series: the cell, measured by full runs or by quick ones, on one machine
    (runs of several machines gathered under one root are several histories)."""
    return row["cell_id"], bool(row.get("quick")), str(row.get("machine") or "")


def history_changes(rows: list[dict[str, Any]], threshold: float = 0.05) -> list[dict[str, Any]]:
    """Change points per series (:func:`series_key`) and metric over a history. Only trusted
    figures count: a level shift never rests on a cell measured on a disturbed machine."""
    by_series: dict[tuple[str, bool, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("trusted", True):
            by_series.setdefault(series_key(row), []).append(row)
    machines = {str(r.get("machine") or "") for r in rows}
    out = []
    for (_, quick, machine), series in by_series.items():
        for metric in ("throughput_sps", "p99_ms"):
            points = [r for r in series if r.get(metric)]
            if len(points) < 6:
                continue
            values = [float(r[metric]) for r in points]
            found = change_points(values, threshold=threshold)
            edges = [0, *found, len(values)]
            for i, k in enumerate(found):  # each level against the one just before it
                before, after = float(np.mean(values[edges[i] : k])), float(np.mean(values[k : edges[i + 2]]))
                out.append({"label": points[0]["label"], "metric": metric, "at_run": points[k]["run"],
                            "commit": points[k]["commit"], "before": before, "after": after,
                            "change": after / before - 1, "quick": quick,
                            "machine": machine if len(machines) > 1 else None})  # fmt: skip
    return out
