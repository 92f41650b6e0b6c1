"""Budget verdicts for CI: JUnit XML (one test case per cell and budget) and a Markdown summary."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

#: characters XML 1.0 forbids even escaped (C0 controls other than tab, newline and carriage return;
#: lone surrogates; U+FFFE, U+FFFF): one in a label or a reason would make the whole file unreadable
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: control characters a Markdown page would show as nothing (or garbage)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _escape_code(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def xml_safe(value: object) -> str:
    """``value`` as text XML 1.0 can hold: a forbidden character becomes its visible escape
    (``\\x01``), so the file parses and the value can still be told apart."""
    return _XML_FORBIDDEN.sub(_escape_code, str(value))


def md_cell(value: object) -> str:
    """``value`` as the text of one Markdown table cell: a ``|`` would start a new column and a
    newline end the row, so they are escaped (``\\|``, ``<br>``); control characters become visible
    escapes."""
    text = _CONTROL.sub(_escape_code, "" if value is None else str(value))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("|", "\\|").replace("\n", "<br>")


def md_line(value: object) -> str:
    """``value`` as text of one Markdown line (a heading, a sentence): newlines and controls made visible."""
    return _CONTROL.sub(_escape_code, str(value)).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _cells(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("status") != "skipped"]


def junit_xml(records: Sequence[Mapping[str, Any]], budgets: dict[str, float], suite: str) -> bytes:
    """One test case per measured cell and budget (a cell with no budgets: one case, its status);
    a broken budget is a failure, a cell that did not measure an error, a metric the cell does not
    have (offline percentiles) a skip."""
    root = ET.Element("testsuites")
    cases: list[ET.Element] = []
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    for rec in records:
        classname = xml_safe(f"bench.{suite}.{rec.get('label', rec.get('cell_id'))}")
        if rec.get("status") == "skipped":
            case = ET.Element("testcase", classname=classname, name="run", time="0")
            ET.SubElement(case, "skipped", message=xml_safe(str(rec.get("reason", ""))[:500]))
            counts["skipped"] += 1
            cases.append(case)
            continue
        names = list(budgets) or ["run"]
        for name in names:
            case = ET.Element("testcase", classname=classname, name=name, time=f"{rec.get('elapsed_s') or 0:.3f}")
            if rec.get("status") != "ok":
                message = f"{rec.get('status')}: {str(rec.get('reason', ''))[:400]}"
                ET.SubElement(case, "error", message=xml_safe(message))
                counts["errors"] += 1
            elif name != "run":
                verdict = (rec.get("budgets") or {}).get(name, {})
                if verdict.get("ok") is False:
                    ET.SubElement(case, "failure", message=xml_safe(f"{name}: {verdict.get('why')}"))
                    counts["failures"] += 1
                elif verdict.get("ok") is None:
                    ET.SubElement(case, "skipped", message=xml_safe(verdict.get("why", "not measured")))
                    counts["skipped"] += 1
            cases.append(case)
    attributes = {
        "name": xml_safe(f"bench.{suite}"),
        "tests": str(len(cases)),
        **{k: str(v) for k, v in counts.items()},
    }
    suite_el = ET.SubElement(root, "testsuite", attributes)
    suite_el.extend(cases)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _budget_mark(verdicts: Mapping[str, Mapping[str, Any]]) -> str:
    """A cell's budgets in a word: FAIL (one broken), pass (all met), not judged (none judged), or pass
    with how many were not judged."""
    if not verdicts:
        return ""
    oks = [v.get("ok") for v in verdicts.values()]
    if False in oks:
        return "FAIL"
    unjudged = oks.count(None)
    if unjudged == len(oks):
        return "not judged"
    return "pass" + (f" ({unjudged} not judged)" if unjudged else "")


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(records: Sequence[Mapping[str, Any]], budgets: dict[str, float], title: str) -> str:
    """A Markdown summary fit for a CI job page: counts, broken budgets first, then every cell."""
    cells = _cells(records)
    ok = [r for r in cells if r.get("status") == "ok"]
    broken = [(r, k, v) for r in cells for k, v in (r.get("budgets") or {}).items() if v.get("ok") is False]
    unjudged = [(r, k, v) for r in ok for k, v in (r.get("budgets") or {}).items() if v.get("ok") is None]
    if broken:
        verdict = f"**{len(broken)} budget(s) broken**"
    elif unjudged:  # not a pass: a cell measured on a busy machine (or without the metric) was not judged
        verdict = f"no budget broken, but **{len(unjudged)} budget verdict(s) not judged** (untrusted or not measured)"
    else:
        verdict = "all budgets met" if budgets else "no budgets set"
    lines = [f"## bench: {md_line(title)}", ""]
    lines.append(f"{len(ok)} of {len(cells)} cells measured, {len(records) - len(cells)} skipped; " + verdict)
    lines.append("")
    if broken:
        lines += ["| cell | budget | limit | what happened |", "|---|---|---|---|"]
        lines += [f"| {md_cell(r['label'])} | {md_cell(k)} | {v['limit']:g} | {md_cell(v.get('why', ''))} |"
                  for r, k, v in broken]  # fmt: skip
        lines.append("")
    lines += [
        "| cell | status | samples/s | p50 ms | p99 ms | $/M inferences | budgets |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        mark = _budget_mark(r.get("budgets") or {})
        lines.append(
            f"| {md_cell(r.get('label'))} | {md_cell(r.get('status'))} | {_fmt(r.get('throughput_sps'), ',.0f')} | "
            f"{_fmt(r.get('p50_ms'), '.3f')} | {_fmt(r.get('p99_ms'), '.3f')} | "
            f"{_fmt(r.get('cost_per_million_usd'), '.3g')} | {mark} |"
        )
    return "\n".join(lines) + "\n"
