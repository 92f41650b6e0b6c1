"""What a report's first screen holds: the answers (best throughput, lowest latency per request,
cheapest meeting the budgets, each with its cell) and the heat table (one row per configuration,
one column per batch size, each table cell its throughput and p99, coloured by throughput).

Untrusted cells (harness.analysis.economics.is_trusted) never give an answer; in the heat table
they keep their place and numbers, greyed, with the reason on hover. Latency answers are per
request (harness.analysis.economics.request_latency): the run's server cells where it has any,
else a call plus the time its batch takes to gather at the scenario's cost.target_qps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.analysis.economics import (
    RequestLatency,
    is_trusted,
    median_repeat,
    meets_budgets,
    one_per_cell,
    request_latency,
    untrusted_reason,
    wrong_outputs,
)
from harness.report.charts import _num, config_words, legend_names

#: the heat table's colour scale, light (lowest throughput) to dark (highest): ColorBrewer's
#: sequential Blues, which prints and reads in grey, less its near-white first stop (the slowest
#: cell would read as blank, or as a skipped one)
_BLUES = ("#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
#: above this position on the scale (0 light .. 1 dark) a cell's text turns white
_DARK_TEXT_FROM = 0.55


def answers(records: Sequence[Mapping[str, Any]], basis: RequestLatency) -> dict[str, Any]:
    """The headline answers among the trusted measured cells (each cell by its median repeat:
    :func:`harness.analysis.economics.one_per_cell`), how latency was judged, and the cells left out
    (each with why)."""
    ok = [r for r in one_per_cell(records) if r.get("status") == "ok"]
    trusted = [r for r in ok if is_trusted(r) and wrong_outputs(r) is None]  # a fast wrong answer is none
    rows: list[dict[str, str]] = []
    best = max((r for r in trusted if _num(r.get("throughput_sps"))), key=lambda r: r["throughput_sps"], default=None)
    if best:
        rows.append({"question": "highest throughput", "cell": best["label"],
                     "value": f"{best['throughput_sps']:,.0f} samples/s", "how": ""})  # fmt: skip
    judged = [(r, *request_latency(r, basis)) for r in trusted]
    fast = min(((r, v, how) for r, v, how in judged if v is not None), key=lambda t: t[1], default=None)
    if fast:
        rec, value, how = fast
        rows.append({"question": "lowest p99 latency per request", "cell": rec["label"], "value": f"{value:.3f} ms",
                     "how": how})  # fmt: skip
    priced = [r for r in trusted if _num(r.get("cost_per_million_usd")) is not None]
    if priced:
        budgets = any(r.get("budgets") for r in priced)
        fits = [r for r in priced if meets_budgets(r, basis) is None]
        question = "cheapest per million inferences" + (" meeting every budget" if budgets else "")
        cheap = min(fits, key=lambda r: r["cost_per_million_usd"], default=None)
        if cheap:
            p99, how = request_latency(cheap, basis)
            latency = f"p99 {p99:.3f} ms per request ({how})" if p99 is not None else f"latency: {how}"
            rows.append({"question": question, "cell": cheap["label"],
                         "value": f"${cheap['cost_per_million_usd']:.3g}", "how": latency})  # fmt: skip
        else:
            rows.append({"question": question, "cell": "none", "value": "",
                         "how": f"no trusted cell meets every budget ({len(priced)} judged)"})  # fmt: skip
    if ok and not trusted:
        why = f"all {len(ok)} measured cells are untrusted or failed fidelity: see the cells left out"
        rows.append({"question": "every answer", "cell": "none", "value": "", "how": why})
    left_out = [{"cell": r["label"], "why": untrusted_reason(r) or wrong_outputs(r) or ""} for r in ok
                if not is_trusted(r) or wrong_outputs(r)]  # fmt: skip
    return {"rows": rows, "basis": basis.describe(), "left_out": left_out}


def _blue(t: float) -> str:
    """The colour at ``t`` (0..1) of the Blues scale, interpolated between its stops."""
    t = min(1.0, max(0.0, t)) * (len(_BLUES) - 1)
    i = min(int(t), len(_BLUES) - 2)
    frac = t - i
    a, b = _BLUES[i], _BLUES[i + 1]
    mix = [round(int(a[k : k + 2], 16) * (1 - frac) + int(b[k : k + 2], 16) * frac) for k in (1, 3, 5)]
    return "#" + "".join(f"{v:02x}" for v in mix)


def _pick(recs: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], int]:
    """The record a table cell shows (:func:`harness.analysis.economics.median_repeat`), and how many
    repeats there were."""
    return median_repeat(recs), len(recs)


def heat_table(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Rows: the configurations (runtime, options, precision, and load, concurrency, rate where
    the run has several), in the order the sweep ran them; columns: batch sizes. None for a run
    without cells."""
    if not records:
        return None
    slots: dict[tuple[str, ...], dict[int, list[Mapping[str, Any]]]] = {}
    for rec in records:
        config = rec.get("config") or {}
        slots.setdefault(config_words(config), {}).setdefault(int(config.get("batch_size") or 0), []).append(rec)
    batches = sorted({b for by_batch in slots.values() for b in by_batch})
    names, shared = legend_names(list(slots))
    rated = [_num(r.get("throughput_sps")) for r in records if r.get("status") == "ok" and is_trusted(r)]
    logs = [math.log(v) for v in rated if v and v > 0]
    lo, hi = (min(logs), max(logs)) if logs else (0.0, 0.0)
    rows = []
    for (words, by_batch), name in zip(slots.items(), names, strict=True):
        cells = []
        for batch in batches:
            recs = by_batch.get(batch)
            if not recs:
                cells.append({"kind": "missing", "title": "not in this run", "lines": ["·"], "style": ""})
                continue
            rec, n = _pick(recs)
            cells.append(_table_cell(rec, n, lo, hi))
        rows.append({"name": name, "full": " ".join(words), "cells": cells})
    return {
        "columns": [f"b{b}" for b in batches],
        "rows": rows,
        "shared": shared,
        "scale": {"low": math.exp(lo), "high": math.exp(hi), "from": _blue(0.0), "to": _blue(1.0)} if logs else None,
        "untrusted": sum(1 for r in records if r.get("status") == "ok" and not is_trusted(r)),
    }


def _table_cell(rec: Mapping[str, Any], repeats: int, lo: float, hi: float) -> dict[str, Any]:
    label = str(rec.get("label"))
    status = str(rec.get("status"))
    if status != "ok":
        why = str(rec.get("reason") or "")
        return {"kind": f"status-{status}", "title": f"{label}: {status}: {why}", "lines": [status], "style": ""}
    tput = _num(rec.get("throughput_sps"))
    p99 = _num(rec.get("p99_ms"))
    lines = [f"{tput:,.0f}/s" if tput is not None else "no throughput"]
    lines.append(f"p99 {p99:.3g} ms" if p99 is not None else "no p99")
    title = [label, f"throughput {tput:,.1f} samples/s" if tput is not None else "no throughput"]
    if p99 is not None:
        server = (rec.get("config") or {}).get("load") == "server"
        per = "per query from its scheduled arrival" if server else "per call"
        title.append(f"p99 {p99:.4g} ms ({per})")
    if _num(rec.get("target_qps")) is not None:
        title.append(f"at {rec['target_qps']:,.0f} queries/s offered")
    if repeats > 1:
        title.append(f"the median of {repeats} repeats by throughput")
    untrusted = untrusted_reason(rec)
    if untrusted:
        title.append(f"UNTRUSTED: {untrusted}")
        return {"kind": "untrusted", "title": "\n".join(title), "lines": [*lines, "untrusted"], "style": ""}
    t = (math.log(tput) - lo) / (hi - lo) if tput and tput > 0 and hi > lo else 1.0
    style = f"background:{_blue(t)};color:{'#ffffff' if t > _DARK_TEXT_FROM else '#1b1f24'}"
    return {"kind": "ok", "title": "\n".join(title), "lines": lines, "style": style}


def readable_options(options: Mapping[str, Any] | None) -> str:
    """Backend options as ``key=value`` words, for the table (``{"mode": "eager"}`` -> mode=eager)."""
    return " ".join(f"{k}={v}" for k, v in sorted((options or {}).items()))
