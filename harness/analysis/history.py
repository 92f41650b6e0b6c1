"""A scenario's history: every run under a results root, by date and commit, and where each cell's
throughput or p99 shifted (change points)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.economics import is_trusted, untrusted_reason
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
    """The rows of a history and the run folders left out of it, each with why."""

    rows: list[dict[str, Any]]
    skipped: list[str]


def history(root: Path, scenario: str | None = None) -> History:
    """Every run under ``root`` (of ``scenario``), oldest first: its date, git commit and, per cell,
    throughput and p99 (the mean over repeats). A damaged run folder costs only its own place in
    the history: it is left out and named in ``skipped``, never an error for the others."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (path / MANIFEST).is_file():
            continue  # not a run folder (a cache, a user's own folder)
        try:
            run = RunDir.open(path)
            manifest = run.manifest()
            if scenario and manifest.scenario.name != scenario:
                continue
            records = list(run.records())
        except StoreError as exc:
            skipped.append(f"{path.name} left out: {str(exc).splitlines()[0]}")
            continue
        git = manifest.environment.get("git") or {}
        for rec in records:
            if rec.get("status") != "ok":
                continue
            rows.append({
                "run": path.name, "created_at": manifest.created_at, "commit": (git.get("commit") or "")[:12],
                "scenario": manifest.scenario.name, "cell_id": rec["cell_id"], "label": rec["label"],
                "throughput_sps": rec.get("throughput_sps"), "p99_ms": rec.get("p99_ms"),
                "quick": manifest.settings.quick, "config": rec.get("config") or {},
                "trusted": is_trusted(rec), "untrusted_reason": untrusted_reason(rec),
            })  # fmt: skip
    rows.sort(key=lambda r: (r["created_at"] or 0, r["run"]))
    return History(rows, skipped)


def history_changes(rows: list[dict[str, Any]], threshold: float = 0.05) -> list[dict[str, Any]]:
    """Change points per cell and metric over a history."""
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault(row["cell_id"], []).append(row)
    out = []
    for series in by_cell.values():
        for metric in ("throughput_sps", "p99_ms"):
            values = [r[metric] for r in series if r.get(metric)]
            if len(values) < 6:
                continue
            for k in change_points(values, threshold=threshold):
                before, after = float(np.mean(values[:k])), float(np.mean(values[k:]))
                out.append({"label": series[0]["label"], "metric": metric, "at_run": series[k]["run"],
                            "commit": series[k]["commit"], "before": before, "after": after,
                            "change": after / before - 1})  # fmt: skip
    return out
