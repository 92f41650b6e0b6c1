"""The report's charts, as Chart.js configs handed to the page as JSON (and drawn again by
harness.report.images for files), budgets, and the machines of a merged report side by side.

A chart or section whose data the run does not have is left out, never drawn empty. A chart holds
at most ``MAX_SERIES`` lines: more become small multiples, one chart per precision or runtime
(whichever needs the fewest charts), sharing their axes' ranges and each line's look. A cell
measured on a disturbed machine (harness.analysis.economics.is_trusted) is drawn hollow, says so
on hover, and stays off every frontier.

It stays one module past 500 lines because it is the one place a chart's look is decided: the
palette, patterns and shapes, how lines are named and split into small multiples, and every chart
built from them; the page, the image files and the first screen all read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from harness.analysis.economics import (
    FLEET_RATE_SOURCE,
    FRONTIERS,
    is_trusted,
    latency_basis,
    meets_budgets,
    pareto_front,
    untrusted_reason,
)
from harness.store import RunDir

#: points per latency CDF (quantiles of the per-query latencies)
CDF_POINTS = 100
#: the most lines one chart holds; more are split into small multiples. Past about eight lines a
#: reader can no longer match a colour in the plot with its legend entry
MAX_SERIES = 8
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22")  # fmt: skip
#: line patterns, cycling with the colours: (colour, pattern) comes back only after 30 series
_DASHES: tuple[list[int], ...] = ([], [8, 4], [2, 3])
#: point shapes, a count prime to the palette's: (colour, pattern, shape) stays unique for 210 series
_POINTS = ("circle", "triangle", "rect", "rectRot", "star", "crossRot", "rectRounded")
#: the latency chart pairs each configuration's p50 and p99: one colour, p99 solid, p50 dashed
_PERCENTILE_DASH = {"p99": [], "p50": [6, 4]}
#: a legend with more entries, or longer ones, goes under the chart, where it wraps: at the right
#: long entries ran off the canvas and lost their ends (a cell's p50 and p99 both read as the cell)
_LEGEND_RIGHT_MAX = (12, 36)
#: fill of an untrusted cell's point or bar: hollow, so it reads as "not a quiet machine's figure"
HOLLOW = "#ffffff"
#: grey of untrusted bars and of the cells off a frontier
GREY = "#8c959f"
#: height of one bar of a horizontal bar chart, px: every bar keeps a readable label
BAR_PX = 20
#: room a bar chart takes besides its bars (title, subtitle, axis, legend), px
BAR_CHART_EXTRA_PX = 130
#: a legend key: a label (split into words) or its words already
Key = str | tuple[str, ...]
#: said under a chart that has untrusted cells
UNTRUSTED_NOTE = "hollow: untrusted, measured while the machine was disturbed (hover for why)"


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def config_words(config: Mapping[str, Any], rate: bool = True, batch: bool = False) -> tuple[str, ...]:
    """A cell's configuration word by word (``batch``: with its batch size; ``rate``: with a server
    cell's offered rate, which a load chart draws along its x axis instead)."""
    words = [str(config.get("model"))] if config.get("model") else []
    words.append(str(config.get("backend")))
    words += [f"{k}={v}" for k, v in sorted((config.get("backend_options") or {}).items())]
    words += [f"{k}={v}" for k, v in sorted((config.get("model_options") or {}).items())]
    words += [str(config.get("device")), str(config.get("precision"))]
    load = config.get("load", "single_stream")
    opts = config.get("load_options") or {}
    if load != "single_stream":
        target = opts.get("target_qps")
        if rate and target is not None:  # as in a cell's label: server@peak, server@500qps
            load += "@peak" if target == "peak" else f"@{target:g}qps" if _num(target) else f"@{target}"
        words.append(str(load))
    conc = opts.get("concurrency")
    if conc and conc > 1:
        words.append(f"c{conc}")
    if opts.get("max_wait_us") is not None:
        words.append(f"wait={opts['max_wait_us']}us")
    if opts.get("samples_per_query") is not None and load == "multi_stream":
        words.append(f"spq={opts['samples_per_query']}")
    if batch:
        words.append(f"b{config.get('batch_size')}")
    return tuple(words)


def _series(rec: Mapping[str, Any]) -> tuple[str, ...]:
    """A cell's configuration without its batch size: one line of a chart across batch sizes."""
    return config_words(rec.get("config") or {})


def _words(key: Key) -> tuple[str, ...]:
    """A legend key's words; a cell label splits at spaces, brackets and commas
    ("toy fake[fault=none,service_ms=0.2] cpu fp32 b1": toy, fake, fault=none, ...)."""
    return key if isinstance(key, tuple) else tuple(w for w in re.split(r"[\s\[\],]+", key) if w)


def _natural(key: Key) -> tuple[tuple[int, float, str], ...]:
    """A sort key that orders b8 before b64 and service_ms=0.2 before service_ms=0.11."""
    out = []
    for word in _words(key):
        number = re.search(r"-?\d+(?:\.\d+)?", word)
        out.append((0, float(number[0]), word) if number else (1, 0.0, word))
    return tuple(out)


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
    """The look of a chart's ``index``-th line: a colour and a line pattern, both cycling (30 lines
    before a pair repeats, and neighbours differ in both), and a point shape on top."""
    color = _color(index)
    return {
        "borderColor": color,
        "backgroundColor": color + "66",  # a translucent fill: the legend box shows the line's pattern
        "borderDash": _DASHES[index % len(_DASHES)],
        "pointStyle": _POINTS[index % len(_POINTS)],
        "pointRadius": 4,
    }


# --------------------------------------------------------------------------------------------
# small multiples
# --------------------------------------------------------------------------------------------


@dataclass
class Series:
    """One line: the words that name it, the configuration it draws (what small multiples split
    by), its points ({"x", "y"} and the cell's label, CI bounds, trust), and a tag (p50, p99)
    that pairs lines of one configuration."""

    key: tuple[str, ...]
    config: Mapping[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)
    tag: str = ""


def _runtime(config: Mapping[str, Any]) -> str:
    options = ",".join(f"{k}={v}" for k, v in sorted((config.get("backend_options") or {}).items()))
    return f"{config.get('backend')}[{options}]" if options else str(config.get("backend"))


def _load(config: Mapping[str, Any]) -> str:
    conc = (config.get("load_options") or {}).get("concurrency") or 1
    return f"{config.get('load', 'single_stream')}" + (f" c{conc}" if conc > 1 else "")


#: what small multiples may split a chart by, in order of preference: one chart per precision puts
#: the runtimes side by side, the comparison a reader came for
FACETS: tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("precision", lambda c: str(c.get("precision"))),
    ("runtime", _runtime),
    ("load", _load),
    ("device", lambda c: str(c.get("device"))),
    ("model", lambda c: str(c.get("model"))),
    ("batch", lambda c: f"b{c.get('batch_size')}"),
)


def _lines_of(series: Sequence[Series]) -> dict[tuple[str, ...], list[Series]]:
    """Series grouped by configuration (a latency chart's p50 and p99 of one cell stay together)."""
    out: dict[tuple[str, ...], list[Series]] = {}
    for s in series:
        out.setdefault(tuple(w for w in s.key if w != s.tag), []).append(s)
    return out


def facet(series: Sequence[Series], limit: int = MAX_SERIES) -> list[tuple[str, list[Series]]]:
    """Split a chart's series into groups of at most ``limit``, each named. Tries one facet (or two
    combined) of FACETS and keeps the split with the fewest charts; when even that makes more
    than twice the charts plain chunks would (one option swept over many values), chunks of the
    series in order, as even as can be. A configuration's paired series are never split apart."""
    if len(series) <= limit:
        return [("", list(series))]
    lines = _lines_of(series)
    width = max(len(group) for group in lines.values())
    per_chart = max(1, limit // width)
    chunks = math.ceil(len(lines) / per_chart)
    best: tuple[int, list[tuple[str, list[Series]]]] | None = None
    for n in (1, 2):
        for combo in combinations(FACETS, n):
            groups: dict[str, list[Series]] = {}
            for group in lines.values():
                name = " ".join(fn(group[0].config) for _, fn in combo)
                groups.setdefault(name, []).extend(group)
            if len(groups) > 1 and max(map(len, groups.values())) <= limit and (best is None or len(groups) < best[0]):
                best = (len(groups), list(groups.items()))
        if best:
            break
    if best and best[0] <= max(3, 2 * chunks):
        return best[1]
    ordered = sorted(lines.items(), key=lambda item: _natural(item[0]))
    size = math.ceil(len(ordered) / chunks)
    return [
        (f"{i // size + 1} of {chunks}", [s for _, group in ordered[i : i + size] for s in group])
        for i in range(0, len(ordered), size)
    ]


def _nice(value: float, up: bool) -> float:
    """The nearest of 1, 2, 5 x 10^k at or beyond ``value`` (> 0): a log axis shows its bounds as
    ticks, and 20,000 reads better there than 15,680.7."""
    exponent = math.floor(math.log10(value))
    steps = [m * 10.0**e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)]
    return min(s for s in steps if s >= value * (1 - 1e-9)) if up else max(s for s in steps if s <= value * (1 + 1e-9))


def _range(values: Sequence[float], log: bool, pad: bool = True) -> dict[str, float]:
    """Axis bounds shared by a family of small multiples: a log axis a little wider than the data,
    to nice values (``pad``); else exactly its extent (batch sizes, fractions, run indices)."""
    values = [v for v in values if v is not None and (v > 0 or not log)]
    if not values or (not pad and min(values) == max(values)):
        return {}
    lo, hi = min(values), max(values)
    if not pad:
        return {"min": lo, "max": hi}
    if log:
        return {"min": _nice(lo / 1.1, up=False), "max": _nice(hi * 1.1, up=True)}
    return {"min": lo, "max": hi}  # a linear axis (a fraction, a run's index) has nice ends of its own


def _mark_untrusted(dataset: dict[str, Any], color: str) -> bool:
    """Hollow points for the dataset's untrusted cells; whether it has any."""
    points = dataset["data"]
    flags = [bool(p.get("untrusted")) for p in points]
    if not any(flags):
        return False
    dataset["pointBackgroundColor"] = [HOLLOW if f else color for f in flags]
    dataset["pointBorderColor"] = color
    dataset["pointBorderWidth"] = [2 if f else 1 for f in flags]
    return True


def _hoist(dataset: dict[str, Any]) -> None:
    """A line of one cell (a CDF, a peak search) says its cell and trust once, on the line, not on
    each of its hundred points: the default report is a third lighter."""
    data = dataset["data"]
    if len(data) > 1 and len({p.get("cell") for p in data}) == 1:
        for name in ("cell", "untrusted"):
            value = data[0].get(name)
            for p in data:
                p.pop(name, None)
            if value is not None:
                dataset[name] = value


def _point(rec: Mapping[str, Any], x: Any, y: Any, **more: Any) -> dict[str, Any]:
    """A point of a cell: its coordinates, its full name (for hover) and, when untrusted, why."""
    out: dict[str, Any] = {"x": x, "y": y, "cell": rec.get("label"), **more}
    why = untrusted_reason(rec)
    if why:
        out["untrusted"] = why
    return out


def line_charts(family: str, title: str, series: Sequence[Series], x: str, y: str, xlog: bool = True,
                ylog: bool = False, limit: int = MAX_SERIES, xexact: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """A family of line charts: one chart, or small multiples of at most ``limit`` lines that share
    their axes' ranges (``xexact``: the x axis spans the data exactly, as batch sizes should) and
    give a line the same look in every chart it appears in."""
    groups = facet(series, limit)
    styles = sorted({tuple(w for w in s.key if w != s.tag) for s in series}, key=_natural)
    shared_index = len(styles) <= len(_PALETTE)  # else per chart: colours distinct within each
    every = [p for s in series for p in s.points]
    xs = [v for p in every for v in [_num(p.get("x"))] if v is not None]
    ys = [v for p in every for k in ("y", "lo", "hi") for v in [_num(p.get(k))] if v is not None]
    out = []
    for n, (name, group) in enumerate(groups, start=1):
        members = sorted(group, key=lambda s: _natural(s.key))
        names, shared = legend_names([s.key for s in members])
        local = sorted({tuple(w for w in s.key if w != s.tag) for s in members}, key=_natural)
        datasets = []
        untrusted = False
        for s, name_of in zip(members, names, strict=True):
            config_key = tuple(w for w in s.key if w != s.tag)
            index = (styles if shared_index else local).index(config_key)
            style = line_style(index)
            if s.tag in _PERCENTILE_DASH:
                style["borderDash"] = _PERCENTILE_DASH[s.tag]
            data = sorted(s.points, key=lambda p: p["x"])
            label = name_of + (" (untrusted)" if data and all(p.get("untrusted") for p in data) else "")
            # clip: false: a point on the axis's end (the largest batch) is drawn whole
            dataset = {"label": label, "data": data, "showLine": True, "tension": 0, "clip": False, **style}
            untrusted |= _mark_untrusted(dataset, style["borderColor"])
            _hoist(dataset)
            datasets.append(dataset)
        right = len(names) <= _LEGEND_RIGHT_MAX[0] and max(map(len, names), default=0) <= _LEGEND_RIGHT_MAX[1]
        subtitle = [f"every line: {shared}"] if shared else []
        if untrusted:
            subtitle.append(UNTRUSTED_NOTE)
        chart_title = f"{title}: {name}" if name else title
        scales: dict[str, Any] = {
            "x": {"type": "logarithmic" if xlog else "linear", "title": {"display": True, "text": x}},
            "y": {"type": "logarithmic" if ylog else "linear", "title": {"display": True, "text": y}},
        }
        if len(groups) > 1:  # small multiples compare by position: the same ranges in each
            scales["x"].update(_range(xs, xlog, pad=xlog and not xexact))
            scales["y"].update(_range(ys, ylog))
        out.append({
            "id": family if len(groups) == 1 else f"{family}-{n}",
            "family": family,
            "title": chart_title,
            "small": len(groups) > 1,
            "config": {
                "type": "scatter",
                "data": {"datasets": datasets},
                "options": {
                    "animation": False,
                    "responsive": True,
                    "aspectRatio": 1.3 if len(groups) > 1 else 2,  # small multiples sit two abreast
                    "plugins": {
                        "legend": {"position": "right" if right and len(groups) == 1 else "bottom",
                                   "labels": {"boxWidth": 30}},
                        "title": {"display": True, "text": chart_title},
                        "subtitle": {"display": bool(subtitle), "text": subtitle},
                    },
                    "scales": scales,
                },
            },
        })  # fmt: skip
    return out


def _bar_chart(cid: str, title: str, rows: Sequence[tuple[Mapping[str, Any], float, dict[str, Any]]], x: str,
               xlog: bool = False, groups: Callable[[Mapping[str, Any]], str] | None = None,
               note: str = "", trust: bool = True) -> dict[str, Any]:  # fmt: skip
    """A horizontal bar per cell (``rows``: record, value, extra point fields), every bar labelled
    (the chart grows with its bars), each labelled by what tells it apart, the words all share
    said under the title. Datasets: by ``groups`` (precision...), and untrusted cells apart,
    hollow, unless ``trust`` is False (what the chart shows does not depend on a quiet machine);
    the datasets overlap (grouped: false) since each bar is in only one."""
    labels, shared = legend_names([str(rec.get("label")) for rec, _, _ in rows])
    datasets: dict[str, dict[str, Any]] = {}
    for (rec, value, extra), label in zip(rows, labels, strict=True):
        trusted = is_trusted(rec) or not trust
        name = groups(rec) if groups else x
        if not trusted:
            name = "untrusted (disturbed machine)"
        if name not in datasets:
            color = _color(len([d for d in datasets.values() if d["trusted"]])) if trusted else GREY
            fill = (color + "cc") if trusted else HOLLOW
            datasets[name] = {"label": name, "data": [], "trusted": trusted, "borderWidth": 1.5, "grouped": False,
                              "backgroundColor": fill, "borderColor": color}  # fmt: skip
        point = _point(rec, value, label, **extra)
        if not trust:
            point.pop("untrusted", None)
        datasets[name]["data"].append(point)
    ordered = sorted(datasets.values(), key=lambda d: not d["trusted"])
    for d in ordered:
        del d["trusted"]
    subtitle = [f"every bar: {shared}"] if shared else []
    if note:
        subtitle.append(note)
    if any(d["backgroundColor"] == HOLLOW for d in ordered):
        subtitle.append(UNTRUSTED_NOTE)
    return {
        "id": cid,
        "family": cid,
        "title": title,
        "small": False,
        "height": BAR_CHART_EXTRA_PX + BAR_PX * len(rows),
        "config": {
            "type": "bar",
            "data": {"labels": labels, "datasets": ordered},
            "options": {
                "animation": False,
                "responsive": True,
                "maintainAspectRatio": False,
                "indexAxis": "y",
                "plugins": {
                    "legend": {"display": len(ordered) > 1, "position": "top"},
                    "title": {"display": True, "text": title},
                    "subtitle": {"display": bool(subtitle), "text": subtitle},
                },
                "scales": {
                    "x": {"type": "logarithmic" if xlog else "linear", "title": {"display": True, "text": x}},
                    "y": {"ticks": {"autoSkip": False}},
                },
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
                    xlabel: str, ylabel: str, xlog: bool = False,
                    ylog: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """The cells as points and the frontier among the trusted ones; untrusted cells are drawn
    hollow and apart, never on the frontier."""
    (xf, _), (yf, _) = objectives
    rows = [r for r in ok if _num(r.get(xf)) is not None and _num(r.get(yf)) is not None]
    trusted = [r for r in rows if is_trusted(r)]
    if len(trusted) < 2:
        return None
    front = sorted((trusted[i] for i in pareto_front(trusted, objectives)), key=lambda r: r[xf])
    (chart,) = line_charts(cid, title, [], xlabel, ylabel, xlog=xlog, ylog=ylog)
    datasets = [
        {"label": "cells", "data": [_point(r, _num(r[xf]), _num(r[yf])) for r in trusted], "backgroundColor": GREY,
         "borderColor": GREY, "showLine": False},
        {"label": "frontier", "data": [_point(r, _num(r[xf]), _num(r[yf])) for r in front],
         "borderColor": _color(1), "backgroundColor": _color(1), "showLine": True, "tension": 0},
    ]  # fmt: skip
    left_out = [r for r in rows if not is_trusted(r)]
    if left_out:
        datasets.append({"label": "untrusted (left out of the frontier)", "showLine": False,
                         "data": [_point(r, _num(r[xf]), _num(r[yf])) for r in left_out], "backgroundColor": HOLLOW,
                         "borderColor": GREY, "pointBorderWidth": 2, "pointRadius": 5})  # fmt: skip
    chart["config"]["data"]["datasets"] = datasets
    return chart


def charts(run: RunDir, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The run's charts, each a Chart.js config; those without data are left out."""
    ok = [r for r in records if r.get("status") == "ok"]
    out: list[dict[str, Any]] = []
    tput: dict[tuple[str, ...], Series] = {}
    lat: dict[tuple[str, ...], Series] = {}
    for rec in ok:
        cfg = rec["config"]
        batch = cfg["batch_size"]
        words = _series(rec)
        if _num(rec.get("throughput_sps")) is not None:
            tput.setdefault(words, Series(words, cfg)).points.append(_point(rec, batch, _num(rec["throughput_sps"])))
        for pct in ("p50", "p99"):
            value = _num(rec.get(f"{pct}_ms"))
            if value is None:
                continue
            lo, hi = _num(rec.get(f"{pct}_ci_low_ms")), _num(rec.get(f"{pct}_ci_high_ms"))
            key = (pct, *words)
            lat.setdefault(key, Series(key, cfg, tag=pct)).points.append(_point(rec, batch, value, lo=lo, hi=hi))
    if tput:
        out += line_charts("throughput", "Throughput vs batch size", list(tput.values()), "batch size", "samples/s",
                           ylog=True, xexact=True)  # fmt: skip
    if lat:
        family = line_charts("latency", "p50 (dashed) and p99 latency vs batch size, bars: 95% CI", list(lat.values()),
                             "batch size", "latency (ms)", ylog=True, xexact=True)  # fmt: skip
        for chart in family:
            chart["errorbars"] = True
        out += family
    cdfs = [Series(_words(str(rec["label"])), rec["config"], [{**_point(rec, None, None), **p} for p in pts])
            for rec in ok if rec["config"].get("load", "single_stream") != "offline"
            for pts in [_cdf(run, rec)] if pts]  # fmt: skip
    if cdfs:
        family = line_charts("cdf", "Latency distribution per cell (CDF)", cdfs, "latency (ms)", "fraction of queries")
        for chart in family:
            chart["config"]["data"]["datasets"] = [dict(d, pointRadius=0) for d in chart["config"]["data"]["datasets"]]
        out += family
    costs = sorted((r for r in ok if _num(r.get("cost_per_million_usd")) is not None),
                   key=lambda r: r["cost_per_million_usd"])  # fmt: skip
    if costs:
        out.append(_bar_chart("cost", "Cost per million inferences (USD, log scale)",
                              [(r, _num(r["cost_per_million_usd"]) or 0.0, {}) for r in costs], "USD per million",
                              xlog=True))  # fmt: skip
    energy = sorted((r for r in ok if _num(r.get("gpu_energy_per_inference_j")) is not None),
                    key=lambda r: r["gpu_energy_per_inference_j"])  # fmt: skip
    if energy:  # GPU cells whose window NVML could watch (harness.measure.gpu_telemetry)
        out.append(_bar_chart("energy", "GPU energy per inference (J, log scale)",
                              [(r, _num(r["gpu_energy_per_inference_j"]) or 0.0,
                                {"power_w": _num(r.get("gpu_power_mean_w"))}) for r in energy],
                              "joules per inference", xlog=True))  # fmt: skip
    front = _frontier_chart("pareto-latency", "p99 latency vs throughput: the frontier (log scales)", ok,
                            (("throughput_sps", "max"), ("p99_ms", "min")), "samples/s", "p99 (ms)", xlog=True,
                            ylog=True)  # fmt: skip
    if front:
        out.append(front)
    front = _frontier_chart("pareto-cost", "Cost vs accuracy: the frontier", ok, FRONTIERS["cost_accuracy"],
                            "USD per million", "agreement with the reference", xlog=True)  # fmt: skip
    if front:
        out.append(front)
    load: dict[tuple[str, ...], Series] = {}
    for rec in ok:  # server cells at fixed rates: one line across the rates
        cfg = rec["config"]
        rate = (cfg.get("load_options") or {}).get("target_qps")
        if cfg.get("load") == "server" and _num(rate) and _num(rec.get("p99_ms")) is not None:
            key = (*config_words(cfg, rate=False), f"b{cfg['batch_size']}", "p99")
            load.setdefault(key, Series(key, cfg)).points.append(_point(rec, _num(rate), _num(rec["p99_ms"])))
    for rec in ok:  # peak searches: every LoadGen test of the search
        for point in rec.get("load_curve") or []:
            p99 = _num(point.get("p99_ms")) or _num(next((v for k, v in point.items() if k.endswith("_ms")
                                                          and k != "p50_ms"), None))  # fmt: skip
            if _num(point.get("target_qps")) and p99 is not None:
                key = _words(str(rec["label"]))
                load.setdefault(key, Series(key, rec["config"])).points.append(
                    _point(rec, _num(point["target_qps"]), p99)
                )
    if load:
        out += line_charts("load", "Server: tail latency vs offered load", list(load.values()), "offered queries/s",
                           "latency percentile (ms)", ylog=True)  # fmt: skip
    order = {p: i for i, p in enumerate(("fp32", "tf32", "fp16", "bf16", "int8", "int4"))}  # widest first
    acc = sorted((r for r in ok if _num(r.get("agreement")) is not None),
                 key=lambda r: (order.get(r["config"]["precision"], len(order)), r["label"]))  # fmt: skip
    if acc:
        out.append(_accuracy_chart(acc))
    return out


def _accuracy_chart(acc: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Disagreement with the reference, 1 - agreement, on a log axis: agreements of 0.94 to 1.00
    all look alike on a 0-1 axis, their losses of 6 % to 0.1 % do not. A loss of 0 (every decision
    the same) cannot sit on a log axis: it is drawn at half of one decision in the validation set
    (or half the least loss), and says so. Accuracy does not depend on a quiet machine: untrusted
    cells are drawn like the others here."""
    losses = [1.0 - float(r["agreement"]) for r in acc]
    samples = [int(r["fidelity_samples"]) for r in acc if _num(r.get("fidelity_samples"))]
    positive = [v for v in losses if v > 0]
    floor = 0.5 / max(samples) if samples else (min(positive) / 2 if positive else 1e-6)
    if positive:
        floor = min(floor, min(positive) / 2)
    rows = [
        (r, max(loss, floor), {"agreement": float(r["agreement"]), "loss": loss})
        for r, loss in zip(acc, losses, strict=True)
    ]
    note = f"0 (every decision as the reference's) drawn at {floor:.2g}"
    return _bar_chart("accuracy", "Disagreement with the fp32 reference, 1 - agreement (log scale)", rows,
                      "1 - agreement", xlog=True, groups=lambda r: str(r["config"]["precision"]), note=note,
                      trust=False)  # fmt: skip


def budget_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"cell": r["label"], "budget": key, "limit": v.get("limit"), "value": v.get("value"),
         "ok": v.get("ok"), "why": v.get("why", "")}
        for r in records for key, v in (r.get("budgets") or {}).items()
    ]  # fmt: skip


def machines(all_records: Sequence[tuple[RunDir, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per machine of a merged report (a run, or a machine kind of a Ray run with ``machines:``),
    ranked by cost per million of its cheapest cell meeting the budgets as the report's answers judge
    them (latency per request: :func:`harness.analysis.economics.meets_budgets`; throughput where no run
    has a price), with the fingerprint of the machine that measured it."""
    rows = []
    for run, records in all_records:
        manifest = run.manifest()
        basis = latency_basis(records, (manifest.settings.cost or {}).get("target_qps"), FLEET_RATE_SOURCE)
        kinds: dict[str | None, list[Mapping[str, Any]]] = {}
        for record in records:
            kinds.setdefault((record.get("config") or {}).get("machine"), []).append(record)
        for kind, mine in kinds.items():
            env = _machine_environment(manifest, kind)
            ok = [r for r in mine if r.get("status") == "ok" and is_trusted(r) and meets_budgets(r, basis) is None]
            cheap = min((r for r in ok if _num(r.get("cost_per_million_usd"))),
                        key=lambda r: r["cost_per_million_usd"], default=None)  # fmt: skip
            fast = max((r for r in ok if _num(r.get("throughput_sps"))), key=lambda r: r["throughput_sps"],
                       default=None)  # fmt: skip
            gpus = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
            hosts = sorted({str(r["node_host"]) for r in mine if r.get("node_host")})
            rows.append({
                "run": run.path.name + (f" @{kind}" if kind else ""), "machine": kind,
                "cpu": (env.get("cpu") or {}).get("model"), "cpus": (env.get("cpu") or {}).get("usable_cpus"),
                "memory_mb": env.get("memory_total_mb"), "gpus": gpus,
                "hostname": ", ".join(hosts) if hosts else env.get("hostname"),
                "cheapest_cell": cheap["label"] if cheap else None,
                "cost_per_million_usd": cheap["cost_per_million_usd"] if cheap else None,
                "hourly_usd": cheap.get("hourly_usd") if cheap else None,
                "best_cell": fast["label"] if fast else None,
                "throughput_sps": fast["throughput_sps"] if fast else None,
            })  # fmt: skip
    rows.sort(key=lambda r: (r["cost_per_million_usd"] is None, r["cost_per_million_usd"] or 0,
                             -float(r["throughput_sps"] or 0)))  # fmt: skip
    return rows


def _machine_environment(manifest: Any, kind: str | None) -> Mapping[str, Any]:
    """The fingerprint of the machine a kind's cells ran on: a node of that kind (Ray runs), else the run's."""
    nodes = [n for n in (manifest.nodes or {}).values() if n.get("machine") == kind and n.get("environment")]
    found: Mapping[str, Any] = nodes[0]["environment"] if nodes else manifest.environment
    return found


def has_machine_kinds(all_records: Sequence[tuple[RunDir, Sequence[Mapping[str, Any]]]]) -> bool:
    return any((r.get("config") or {}).get("machine") for _, records in all_records for r in records)


def trend_charts(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Throughput and p99 of every cell against the run's position in the history (oldest 0), in
    small multiples past ``MAX_SERIES`` cells."""
    index = {r["run"]: i for i, r in enumerate(runs)}
    machines = len({str(r.get("machine") or "") for r in rows}) > 1
    quick_and_full = len({bool(r.get("quick")) for r in rows}) > 1

    def line_of(row: dict[str, Any]) -> str:  # one line per cell, machine, and quick or full runs
        label = str(row["label"])
        label += f" [{row.get('machine')}]" if machines else ""
        return label + (" (quick)" if quick_and_full and row.get("quick") else "")

    out = []
    for name, title, unit, ylog in (("throughput_sps", "Throughput per run", "samples/s", True),
                                    ("p99_ms", "p99 latency per run", "ms", True)):  # fmt: skip
        series: dict[str, Series] = {}
        for row in rows:
            value = _num(row.get(name))
            if value is not None:
                label = line_of(row)
                line = series.setdefault(label, Series(_words(label), row.get("config") or {}))
                line.points.append(_point(row, index[row["run"]], value))
        if series:
            out += line_charts(f"trend-{name}", title, list(series.values()), "run (oldest first)", unit, xlog=False,
                               ylog=ylog)  # fmt: skip
    return out
