"""A comparison as text, Markdown, JSON or an HTML section, and back from its JSON."""

from __future__ import annotations

import json
from typing import Any

from harness.analysis.comparison import METRICS, NOT_JUDGED, CellComparison, Comparison, MetricChange, NotMeasured

# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def threshold_text(threshold: float) -> str:
    """The threshold (a fraction) in the unit users give it: percent, never rounded to 0 %."""
    return f"{threshold * 100:g} %"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:+.1f}%"


def _ci(change: MetricChange) -> str:
    return f"[{_pct(change.ci_low)}, {_pct(change.ci_high)}]" if change.ci_low is not None else "(no CI)"


def _again(cell: CellComparison | NotMeasured) -> str:
    """What a verdict's line adds: the sweep's verdict of a cell measured again, the cell's note, and
    with bench gate its pairs, noise and power."""
    said = f" (measured again; the sweep said {cell.screen_verdict})" if cell.screen_verdict else ""
    note = getattr(cell, "note", None)
    return said + (f" ({note})" if note else "") + _gate_cell(getattr(cell, "gate", None))


def _gate_cell(gate: dict[str, Any] | None) -> str:
    """A gate cell's evidence in brackets: the pairs that decided, its noisiest metric, its weakest power."""
    if not gate:
        return ""
    if gate.get("stage") == "confirm":
        parts = [f"measured again: {gate.get('confirm_pairs')} pair(s)"]
    else:
        parts = [f"screen: {gate.get('screen_pairs')} pair(s)"]
    noise, power = gate.get("noise") or {}, gate.get("power") or {}
    if noise:
        worst = max(noise, key=lambda m: noise[m])
        parts.append(f"noise {noise[worst] * 100:.1f} % on {worst}")
    if power:
        weakest = min(power, key=lambda m: power[m])
        parts.append(f"power {power[weakest]:.0%} on {weakest}")
    return " [" + ", ".join(parts) + "]"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def result_threshold_text(result: Comparison) -> str:
    """A comparison's threshold, with the metrics whose own threshold differs (the gate's p99)."""
    text = threshold_text(result.threshold)
    per = (result.gate or {}).get("thresholds") or {}
    others = [f"{metric} {threshold_text(value)}" for metric, value in per.items() if value != result.threshold]
    if per and len(per) < len(METRICS):  # bench gate --metrics: the others reported, not judged
        others.append(f"judged: {', '.join(per)}")
    return f"{text} ({', '.join(others)})" if others else text


def gate_line(gate: dict[str, Any]) -> str:
    """What bench gate did, in one line: its budget, calibration, screen and confirmation."""
    cal, scr, con = gate["calibration"], gate["screen"], gate["confirm"]
    noise = ", ".join(f"{m} {v * 100:.1f} %" for m, v in cal["noise"].items())
    ran_out = " (the budget ran out)" if gate["budget_ran_out"] else ""
    line = (
        f"gate: budget {_minutes(gate['budget_s'])}, used {_minutes(gate['used_s'])}{ran_out}; {gate['processes']} "
        f"processes of {gate['seconds_per_process']:.1f} s; calibration: {cal['pairs']} pair(s) of baseline processes "
        f"on {len(cal['cells'])} cell(s), noise {noise}; screen: {scr['pairs_per_cell']} pair(s) a cell, one-sided "
        f"p < {scr['alpha']:g}, {scr['suspects']} suspect(s)"
    )
    if scr["suspects"]:
        line += (
            f"; measured again: {con['measured']} ({con['target_power']:.0%} power at the threshold planned at "
            f"{con['level']:.2g} per test)"
        )
        if con["left_out"]:
            line += f", {con['left_out']} left out (more pairs needed than the time left afforded)"
    return line


def quick_note(result: Comparison) -> str | None:
    """A warning when one run is a ``--quick`` run and the other is not: their windows differ so
    much that a change between them says little about the code."""
    quick = [side for side in ("baseline", "candidate") if result.quick.get(side)]
    if len(quick) != 1:
        return None
    from harness.planning import QUICK_MEASUREMENT

    side = quick[0]
    other = "candidate" if side == "baseline" else "baseline"
    path = result.baseline if side == "baseline" else result.candidate
    windows = f"{QUICK_MEASUREMENT['min_duration_s']:g}-{QUICK_MEASUREMENT['max_duration_s']:g} s"
    return (
        f"the {side} ({path}) is a --quick run: its numbers come from {windows} windows, the {other}'s from full "
        "ones, so a change between them may be the windows', not the code's"
    )


def confirmation_line(how: dict[str, Any]) -> str:
    if not how.get("suspects"):
        return "confirmed: no cell looked slower, none was measured again"
    return (
        f"confirmed: {how['suspects']} cell(s) that looked slower measured again, {how['repeats']} processes per "
        f"side, {how['baseline']}; {how['held']} regression(s) held"
    )


def render_text(result: Comparison) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in sorted(result.counts().items()))
    lines = [f"baseline  {result.baseline}", f"candidate {result.candidate}",
             f"{len(result.cells)} cells compared: {counts} (threshold {result_threshold_text(result)}, "
             f"alpha {result.alpha:g}, Holm-corrected)"]  # fmt: skip
    if result.env_differences:
        lines.append("environment differs: " + "; ".join(result.env_differences))
    if quick_note(result):
        lines.append(f"warning: {quick_note(result)}")
    if result.confirmation is not None:
        lines.append(confirmation_line(result.confirmation))
    if result.gate is not None:
        lines.append(gate_line(result.gate))
    for cell in sorted(
        result.cells, key=lambda c: ("regressed", "improved", "inconclusive", "unchanged").index(c.verdict)
    ):
        parts = [f"{m} {_pct(c.change)} {_ci(c)}" + (f" ({NOT_JUDGED})" if c.verdict == NOT_JUDGED else "")
                 for m, c in cell.metrics.items()]  # fmt: skip
        lines.append(f"  {cell.verdict:12s} {cell.label}{_again(cell)}: " + "; ".join(parts))
    if result.not_measured:
        lines.append(f"{len(result.not_measured)} cell(s) not measured in both runs, not compared:")
        for gone in _not_measured_in_order(result):
            mark = "regressed" if gone.verdict == "regressed" else "-"
            lines.append(f"  {mark:12s} {gone.label}{_again(gone)}: {gone.why()}")
    for name, ids in (("only in the baseline", result.only_baseline), ("only in the candidate", result.only_candidate)):
        if ids:
            lines.append(f"{len(ids)} cell(s) {name}: {', '.join(ids)}")
    return "\n".join(lines) + "\n"


def _not_measured_in_order(result: Comparison) -> list[NotMeasured]:
    """The cells not compared, those the candidate lost (regressions) first."""
    return sorted(result.not_measured, key=lambda n: n.verdict != "regressed")


def _side_text(status: str, reason: str) -> str:
    """One run's outcome of a cell for a table: "ok", or the status and its reason on one line."""
    reason = " ".join(reason.split())
    return status if status == "ok" or not reason else f"{status}: {reason[:200]}"


def render_markdown(result: Comparison) -> str:
    from harness.output.ci import md_cell, md_line

    counts = ", ".join(f"{n} {v}" for v, n in sorted(result.counts().items()))
    head = "**regression**" if result.has_regression else "no regression"
    command = "bench gate" if result.gate is not None else "bench compare"
    lines = [f"## {command}: {head}", "", f"{len(result.cells)} cells: {counts}; threshold "
             f"{result_threshold_text(result)}, Holm-corrected alpha {result.alpha:g}.", "",
             "| verdict | cell | throughput | p50 | p99 |", "|---|---|---|---|---|"]  # fmt: skip
    if result.confirmation is not None:
        lines[3:3] = [confirmation_line(result.confirmation) + ".", ""]
    if result.gate is not None:
        lines[3:3] = [f"Baseline {md_line(result.baseline)}; candidate {md_line(result.candidate)}.", "",
                      md_line(gate_line(result.gate)) + ".", ""]  # fmt: skip
    if quick_note(result):
        lines[3:3] = [f"Warning: {md_line(quick_note(result))}.", ""]
    for cell in result.cells:
        cols = [f"{_pct(c.change)} {_ci(c)}" if (c := cell.metrics.get(m)) else "" for m in METRICS]
        lines.append(f"| {cell.verdict} | {md_cell(cell.label + _again(cell))} | " + " | ".join(cols) + " |")
    if result.not_measured:
        lines += ["", f"Not measured in both runs, so not compared: {len(result.not_measured)}.", "",
                  "| verdict | cell | baseline | candidate |", "|---|---|---|---|"]  # fmt: skip
        for gone in _not_measured_in_order(result):
            lines.append(
                f"| {gone.verdict} | {md_cell(gone.label + _again(gone))} | "
                f"{md_cell(_side_text(gone.baseline_status, gone.baseline_reason))} | "
                f"{md_cell(_side_text(gone.candidate_status, gone.candidate_reason))} |"
            )
    if result.only_baseline or result.only_candidate:
        lines += ["", f"Only in the baseline: {len(result.only_baseline)}; only in the candidate: "
                  f"{len(result.only_candidate)}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def render_html(result: Comparison) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True)
    template = env.from_string(
        '<section class="compare"><h2>Comparison</h2><p>{{ r.baseline }} &rarr; {{ r.candidate }}: '
        "{% for v, n in counts %}{{ n }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</p>"
        "{% if confirmed %}<p>{{ confirmed }}</p>{% endif %}{% if quick %}<p>Warning: {{ quick }}.</p>{% endif %}"
        "<table><thead><tr><th>verdict</th><th>cell</th>{% for m in metrics %}<th>{{ m }}</th>{% endfor %}"
        "</tr></thead><tbody>{% for c in r.cells %}<tr><td>{{ c.verdict }}</td><td>{{ c.label }}{{ again(c) }}</td>"
        "{% for m in metrics %}<td>{% if m in c.metrics %}{{ pct(c.metrics[m].change) }} {{ ci(c.metrics[m]) }}"
        "{% endif %}</td>{% endfor %}</tr>{% endfor %}</tbody></table>"
        "{% if gone %}<h3>Not measured in both runs</h3><p>Nothing to compare; a cell the candidate lost counts as "
        "a regression.</p><table><thead><tr><th>verdict</th><th>cell</th><th>baseline</th><th>candidate</th></tr>"
        "</thead><tbody>{% for n in gone %}<tr><td>{{ n.verdict }}</td><td>{{ n.label }}{{ again(n) }}</td>"
        "<td>{{ side(n.baseline_status, n.baseline_reason) }}</td>"
        "<td>{{ side(n.candidate_status, n.candidate_reason) }}</td></tr>{% endfor %}</tbody></table>{% endif %}"
        "</section>"
    )
    confirmed = confirmation_line(result.confirmation) if result.confirmation is not None else ""
    if result.gate is not None:
        confirmed = gate_line(result.gate)
    return template.render(r=result, counts=sorted(result.counts().items()), metrics=list(METRICS), pct=_pct, ci=_ci,
                           again=_again, confirmed=confirmed, gone=_not_measured_in_order(result),
                           side=_side_text, quick=quick_note(result))  # fmt: skip


def comparison_from_dict(data: dict[str, Any]) -> Comparison:
    """A comparison as ``bench compare --format json`` wrote it (to draw it in a report later)."""
    cells = []
    for c in data["cells"]:
        cell = CellComparison(
            c["cell_id"], c["label"], verdict=c["verdict"], screen_verdict=c.get("screen_verdict"), note=c.get("note"),
            gate=c.get("gate"),
        )  # fmt: skip
        cell.metrics = {k: MetricChange(**v) for k, v in c["metrics"].items()}
        cells.append(cell)
    return Comparison(
        data["baseline"], data["candidate"], data["threshold"], data["alpha"], cells, data["only_baseline"],
        data["only_candidate"], data["env_differences"], data.get("confirmation"),
        [NotMeasured(**n) for n in data.get("not_measured", [])],  # absent from files written before it existed
        data.get("quick", {}), data.get("gate"),
    )  # fmt: skip


def render(result: Comparison, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result.as_dict(), indent=2, default=str) + "\n"
    if fmt == "md":
        return render_markdown(result)
    if fmt == "html":
        return render_html(result)
    return render_text(result)
