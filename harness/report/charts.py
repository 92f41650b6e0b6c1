"""What the report shows besides the table: the answers first, the charts (as Chart.js configs,
handed to the page as JSON), budgets, and the machines of a merged report side by side.

A chart or section whose data the run does not have is left out, never drawn empty.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.analysis.economics import FRONTIERS, pareto_front
from harness.store import RunDir

#: points per latency CDF (quantiles of the per-query latencies)
CDF_POINTS = 100
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22")  # fmt: skip
#: line patterns: with the palette, 30 series before a (colour, pattern) pair comes back
_DASHES: tuple[list[int], ...] = ([], [8, 4], [2, 3])
#: point shapes, a count prime to the palette's: (colour, pattern, shape) stays unique for 210 series
_POINTS = ("circle", "triangle", "rect", "rectRot", "star", "crossRot", "rectRounded")
#: a legend with more entries, or longer ones, goes under the chart, where it wraps: at the right
#: long entries ran off the canvas and lost their ends (a cell's p50 and p99 both read as the cell)
_LEGEND_RIGHT_MAX = (12, 36)
#: a legend key: a label (split into words) or its words already
Key = str | tuple[str, ...]


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _series(rec: Mapping[str, Any]) -> tuple[str, ...]:
    """A cell's configuration without its batch size, word by word: one line of a chart across
    batch sizes."""
    cfg = rec.get("config", {})
    words = [str(cfg.get("backend"))]
    words += [f"{k}={v}" for k, v in sorted((cfg.get("backend_options") or {}).items())]
    words += [str(cfg.get("device")), str(cfg.get("precision"))]
    load = cfg.get("load", "single_stream")
    if load != "single_stream":
        words.append(str(load))
    conc = (cfg.get("load_options") or {}).get("concurrency")
    if conc and conc > 1:
        words.append(f"c{conc}")
    return tuple(words)


def _words(key: Key) -> tuple[str, ...]:
    """A legend key's words; a cell label splits at spaces, brackets and commas
    ("toy fake[fault=none,service_ms=0.2] cpu fp32 b1": toy, fake, fault=none, ...)."""
    return key if isinstance(key, tuple) else tuple(w for w in re.split(r"[\s\[\],]+", key) if w)


def legend_names(keys: Sequence[Key]) -> tuple[list[str], str]:
    """Short, distinct legend names for a chart's series, and the words they all share (said once,
    under the title): only what tells the lines apart goes into the legend, so it stays short
    enough to be read whole. Falls back to the full names when dropping words would merge two."""
    words = [_words(k) for k in keys]
    full = [" ".join(w) for w in words]
    if len(words) > 1:
        shared = set(words[0]).intersection(*map(set, words[1:]))
        short = [" ".join(w for w in ws if w not in shared) for ws in words]
        if all(short) and len(set(short)) == len(short):
            return short, " ".join(w for w in words[0] if w in shared)
    if len(set(full)) == len(full):
        return full, ""
    return [f"{name} #{i + 1}" for i, name in enumerate(full)], ""  # keys that differ only in spacing


def _color(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


def line_style(index: int) -> dict[str, Any]:
    """The look of a chart's ``index``-th line: colour, then line pattern (30 lines before a pair
    repeats), and a point shape on top."""
    color = _color(index)
    return {
        "borderColor": color,
        "backgroundColor": color + "66",  # a translucent fill: the legend box shows the line's pattern
        "borderDash": _DASHES[(index // len(_PALETTE)) % len(_DASHES)],
        "pointStyle": _POINTS[index % len(_POINTS)],
        "pointRadius": 4,
    }


def _line_chart(cid: str, title: str, series: Mapping[Key, Sequence[Mapping[str, float | None]]], x: str, y: str,
                xlog: bool = True, ylog: bool = False) -> dict[str, Any]:  # fmt: skip
    keys = sorted(series, key=_words)
    names, shared = legend_names(keys)
    datasets = [
        {"label": name, "data": sorted(series[key], key=lambda p: p["x"]), "showLine": True, "tension": 0,
         **line_style(i)}
        for i, (key, name) in enumerate(zip(keys, names, strict=True))
    ]  # fmt: skip
    right = len(names) <= _LEGEND_RIGHT_MAX[0] and max(map(len, names), default=0) <= _LEGEND_RIGHT_MAX[1]
    return {
        "id": cid,
        "title": title,
        "config": {
            "type": "scatter",
            "data": {"datasets": datasets},
            "options": {
                "animation": False,
                "responsive": True,
                "plugins": {
                    "legend": {"position": "right" if right else "bottom", "labels": {"boxWidth": 30}},
                    "title": {"display": True, "text": title},
                    "subtitle": {"display": bool(shared), "text": f"every line: {shared}"},
                },
                "scales": {
                    "x": {"type": "logarithmic" if xlog else "linear", "title": {"display": True, "text": x}},
                    "y": {"type": "logarithmic" if ylog else "linear", "title": {"display": True, "text": y}},
                },
            },
        },
    }


def _bar_chart(cid: str, title: str, labels: list[str], values: list[float], y: str) -> dict[str, Any]:
    return {
        "id": cid,
        "title": title,
        "config": {
            "type": "bar",
            "data": {"labels": labels, "datasets": [{"label": y, "data": values, "backgroundColor": _color(0)}]},
            "options": {
                "animation": False,
                "indexAxis": "y",
                "plugins": {"legend": {"display": False}, "title": {"display": True, "text": title}},
                "scales": {"x": {"title": {"display": True, "text": y}}},
            },
        },
    }


def _cdf(run: RunDir, rec: Mapping[str, Any]) -> list[dict[str, float]]:
    path = rec.get("latency_file")
    if not path or not (run.path / path).is_file():
        return []
    lat = np.sort(np.load(run.path / path, allow_pickle=False)) / 1e6
    if lat.size < 2:
        return []
    qs = np.linspace(0, 1, CDF_POINTS)
    values = np.quantile(lat, qs, method="inverted_cdf")
    return [{"x": round(float(v), 6), "y": round(float(q), 4)} for v, q in zip(values, qs, strict=True)]


def _frontier_chart(cid: str, title: str, ok: Sequence[Mapping[str, Any]], objectives: tuple[tuple[str, str], ...],
                    xlabel: str, ylabel: str) -> dict[str, Any] | None:  # fmt: skip
    (xf, _), (yf, _) = objectives
    rows = [r for r in ok if _num(r.get(xf)) is not None and _num(r.get(yf)) is not None]
    if len(rows) < 2:
        return None
    front = sorted((rows[i] for i in pareto_front(rows, objectives)), key=lambda r: r[xf])
    points = [{"x": _num(r[xf]), "y": _num(r[yf]), "cell": r["label"]} for r in rows]
    chart = _line_chart(cid, title, {}, xlabel, ylabel, xlog=False)
    chart["config"]["data"]["datasets"] = [
        {"label": "cells", "data": points, "backgroundColor": "#9aa4ad", "showLine": False},
        {"label": "frontier", "data": [{"x": _num(r[xf]), "y": _num(r[yf]), "cell": r["label"]} for r in front],
         "borderColor": _color(1), "backgroundColor": _color(1), "showLine": True, "tension": 0},
    ]  # fmt: skip
    return chart


def charts(run: RunDir, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The run's charts, each a Chart.js config; those without data are left out."""
    ok = [r for r in records if r.get("status") == "ok"]
    out: list[dict[str, Any]] = []
    tput: dict[Key, list[dict[str, float | None]]] = defaultdict(list)
    lat: dict[Key, list[dict[str, float | None]]] = defaultdict(list)
    for rec in ok:
        batch = rec["config"]["batch_size"]
        if _num(rec.get("throughput_sps")) is not None:
            tput[_series(rec)].append({"x": batch, "y": _num(rec["throughput_sps"])})
        for pct in ("p50", "p99"):
            value = _num(rec.get(f"{pct}_ms"))
            if value is None:
                continue
            lo, hi = _num(rec.get(f"{pct}_ci_low_ms")), _num(rec.get(f"{pct}_ci_high_ms"))
            key: tuple[str, ...] = (pct, *_series(rec))
            lat[key].append({"x": batch, "y": value, "lo": lo, "hi": hi})
    if tput:
        out.append(_line_chart("throughput", "Throughput vs batch size", tput, "batch size", "samples/s", ylog=True))
    if lat:
        chart = _line_chart("latency", "p50 and p99 latency vs batch size (bars: 95% CI)", lat, "batch size",
                            "latency (ms)", ylog=True)  # fmt: skip
        chart["errorbars"] = True
        out.append(chart)
    cdfs = {rec["label"]: pts for rec in ok if rec["config"].get("load", "single_stream") != "offline"
            for pts in [_cdf(run, rec)] if pts}  # fmt: skip
    if cdfs:
        chart = _line_chart("cdf", "Latency distribution per cell (CDF)", cdfs, "latency (ms)", "fraction of queries")
        chart["config"]["data"]["datasets"] = [dict(d, pointRadius=0) for d in chart["config"]["data"]["datasets"]]
        chart["config"]["options"]["plugins"]["legend"]["display"] = len(cdfs) <= 3 * len(_PALETTE)
        out.append(chart)
    costs = sorted((r for r in ok if _num(r.get("cost_per_million_usd")) is not None),
                   key=lambda r: r["cost_per_million_usd"])  # fmt: skip
    if costs:
        out.append(_bar_chart("cost", "Cost per million inferences (USD)", [r["label"] for r in costs],
                              [_num(r["cost_per_million_usd"]) or 0 for r in costs], "USD per million"))  # fmt: skip
    front = _frontier_chart("pareto-latency", "p99 latency vs throughput: the frontier", ok,
                            (("throughput_sps", "max"), ("p99_ms", "min")), "samples/s", "p99 (ms)")  # fmt: skip
    if front:
        out.append(front)
    front = _frontier_chart("pareto-cost", "Cost vs accuracy: the frontier", ok,
                            FRONTIERS["cost_accuracy"], "USD per million", "agreement with the reference")  # fmt: skip
    if front:
        out.append(front)
    load: dict[Key, list[dict[str, float | None]]] = defaultdict(list)
    for rec in ok:  # server cells at fixed rates: one line across the rates
        rate = (rec["config"].get("load_options") or {}).get("target_qps")
        if rec["config"].get("load") == "server" and _num(rate) and _num(rec.get("p99_ms")) is not None:
            key = (*_series(rec), f"b{rec['config']['batch_size']}", "p99")
            load[key].append({"x": _num(rate), "y": rec["p99_ms"]})
    for rec in ok:  # peak searches: every LoadGen test of the search
        for point in rec.get("load_curve") or []:
            p99 = _num(point.get("p99_ms")) or _num(next((v for k, v in point.items() if k.endswith("_ms")
                                                          and k != "p50_ms"), None))  # fmt: skip
            if _num(point.get("target_qps")) and p99 is not None:
                load[rec["label"]].append({"x": _num(point["target_qps"]), "y": p99})
    if load:
        out.append(_line_chart("load", "Server: tail latency vs offered load", load, "offered queries/s",
                               "latency percentile (ms)", ylog=True))  # fmt: skip
    acc = sorted((r for r in ok if _num(r.get("agreement")) is not None),
                 key=lambda r: (r["config"]["precision"], r["label"]))  # fmt: skip
    if acc:
        out.append(_bar_chart("accuracy", "Agreement with the fp32 reference per cell", [r["label"] for r in acc],
                              [_num(r["agreement"]) or 0 for r in acc], "agreement"))  # fmt: skip
    return out


def _meets_budgets(rec: Mapping[str, Any]) -> bool:
    return rec.get("budgets_ok") is not False


def answers(records: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The headline answers: best throughput, lowest p99, cheapest that meets the budgets."""
    ok = [r for r in records if r.get("status") == "ok"]
    out = []
    best = max((r for r in ok if _num(r.get("throughput_sps"))), key=lambda r: r["throughput_sps"], default=None)
    if best:
        out.append({"question": "highest throughput", "cell": best["label"],
                    "value": f"{best['throughput_sps']:,.0f} samples/s"})  # fmt: skip
    fast = min((r for r in ok if _num(r.get("p99_ms"))), key=lambda r: r["p99_ms"], default=None)
    if fast:
        out.append({"question": "lowest p99 latency", "cell": fast["label"], "value": f"{fast['p99_ms']:.3f} ms"})
    cheap = min((r for r in ok if _num(r.get("cost_per_million_usd")) and _meets_budgets(r)),
                key=lambda r: r["cost_per_million_usd"], default=None)  # fmt: skip
    if cheap:
        note = " meeting every budget" if cheap.get("budgets") else ""
        out.append({"question": f"cheapest per million inferences{note}", "cell": cheap["label"],
                    "value": f"${cheap['cost_per_million_usd']:.3g} ({cheap.get('price_source', '')})"})  # fmt: skip
    return out


def budget_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"cell": r["label"], "budget": key, "limit": v.get("limit"), "value": v.get("value"),
         "ok": v.get("ok"), "why": v.get("why", "")}
        for r in records for key, v in (r.get("budgets") or {}).items()
    ]  # fmt: skip


def machines(all_records: Sequence[tuple[RunDir, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per run (machine) of a merged report, ranked by cost per million of its cheapest cell
    meeting the budgets (throughput where no run has a price)."""
    rows = []
    for run, records in all_records:
        env = run.manifest().environment
        ok = [r for r in records if r.get("status") == "ok" and _meets_budgets(r)]
        cheap = min((r for r in ok if _num(r.get("cost_per_million_usd"))), key=lambda r: r["cost_per_million_usd"],
                    default=None)  # fmt: skip
        fast = max((r for r in ok if _num(r.get("throughput_sps"))), key=lambda r: r["throughput_sps"], default=None)
        gpus = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
        rows.append({
            "run": run.path.name, "cpu": (env.get("cpu") or {}).get("model"),
            "cpus": (env.get("cpu") or {}).get("usable_cpus"), "memory_mb": env.get("memory_total_mb"), "gpus": gpus,
            "hostname": env.get("hostname"), "cheapest_cell": cheap["label"] if cheap else None,
            "cost_per_million_usd": cheap["cost_per_million_usd"] if cheap else None,
            "best_cell": fast["label"] if fast else None, "throughput_sps": fast["throughput_sps"] if fast else None,
        })  # fmt: skip
    rows.sort(key=lambda r: (r["cost_per_million_usd"] is None, r["cost_per_million_usd"] or 0,
                             -float(r["throughput_sps"] or 0)))  # fmt: skip
    return rows


def trend_charts(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Throughput and p99 of every cell against the run's position in the history (oldest 0)."""
    index = {r["run"]: i for i, r in enumerate(runs)}
    out = []
    for field, title, unit, ylog in (("throughput_sps", "Throughput per run", "samples/s", True),
                                     ("p99_ms", "p99 latency per run", "ms", True)):  # fmt: skip
        series: dict[Key, list[dict[str, float | None]]] = defaultdict(list)
        for row in rows:
            value = _num(row.get(field))
            if value is not None:
                series[row["label"]].append({"x": index[row["run"]], "y": value})
        if series:
            out.append(_line_chart(f"trend-{field}", title, series, "run (oldest first)", unit, xlog=False, ylog=ylog))
    return out
