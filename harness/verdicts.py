"""Budget verdicts for CI: JUnit XML (one test case per cell and budget) and a Markdown summary."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET


def _cells(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") != "skipped"]


def junit_xml(records: list[dict[str, Any]], budgets: dict[str, float], suite: str) -> bytes:
    """One test case per measured cell and budget (a cell with no budgets: one case, its status);
    a broken budget is a failure, a cell that did not measure an error, a metric the cell does not
    have (offline percentiles) a skip."""
    root = ET.Element("testsuites")
    cases: list[ET.Element] = []
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    for rec in records:
        classname = f"bench.{suite}.{rec.get('label', rec.get('cell_id'))}"
        if rec.get("status") == "skipped":
            case = ET.Element("testcase", classname=classname, name="run", time="0")
            ET.SubElement(case, "skipped", message=str(rec.get("reason", ""))[:500])
            counts["skipped"] += 1
            cases.append(case)
            continue
        names = list(budgets) or ["run"]
        for name in names:
            case = ET.Element("testcase", classname=classname, name=name, time=f"{rec.get('elapsed_s') or 0:.3f}")
            if rec.get("status") != "ok":
                ET.SubElement(case, "error", message=f"{rec.get('status')}: {str(rec.get('reason', ''))[:400]}")
                counts["errors"] += 1
            elif name != "run":
                verdict = (rec.get("budgets") or {}).get(name, {})
                if verdict.get("ok") is False:
                    ET.SubElement(case, "failure", message=f"{name}: {verdict.get('why')}")
                    counts["failures"] += 1
                elif verdict.get("ok") is None:
                    ET.SubElement(case, "skipped", message=str(verdict.get("why", "not measured")))
                    counts["skipped"] += 1
            cases.append(case)
    suite_el = ET.SubElement(root, "testsuite", name=f"bench.{suite}", tests=str(len(cases)),
                             **{k: str(v) for k, v in counts.items()})  # fmt: skip
    suite_el.extend(cases)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(records: list[dict[str, Any]], budgets: dict[str, float], title: str) -> str:
    """A Markdown summary fit for a CI job page: counts, broken budgets first, then every cell."""
    cells = _cells(records)
    ok = [r for r in cells if r.get("status") == "ok"]
    broken = [(r, k, v) for r in cells for k, v in (r.get("budgets") or {}).items() if v.get("ok") is False]
    lines = [f"## bench: {title}", ""]
    lines.append(
        f"{len(ok)} of {len(cells)} cells measured, {len(records) - len(cells)} skipped; "
        + (f"**{len(broken)} budget(s) broken**" if broken else ("all budgets met" if budgets else "no budgets set"))
    )
    lines.append("")
    if broken:
        lines += ["| cell | budget | limit | value |", "|---|---|---|---|"]
        lines += [f"| {r['label']} | {k} | {v['limit']:g} | {v.get('why', '')} |" for r, k, v in broken]
        lines.append("")
    lines += [
        "| cell | status | samples/s | p50 ms | p99 ms | $/M inferences | budgets |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        verdicts = r.get("budgets") or {}
        mark = "" if not verdicts else ("pass" if r.get("budgets_ok") else "FAIL")
        lines.append(
            f"| {r.get('label')} | {r.get('status')} | {_fmt(r.get('throughput_sps'), ',.0f')} | "
            f"{_fmt(r.get('p50_ms'), '.3f')} | {_fmt(r.get('p99_ms'), '.3f')} | "
            f"{_fmt(r.get('cost_per_million_usd'), '.3g')} | {mark} |"
        )
    return "\n".join(lines) + "\n"
