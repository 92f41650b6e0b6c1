"""The summary table printed at the end of a run."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from harness.analysis.economics import is_trusted


def _num(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _ci(record: Mapping[str, Any], key: str) -> str:
    est = record.get(f"{key}_ms")
    if est is None:
        return ""
    lo, hi = record.get(f"{key}_ci_low_ms"), record.get(f"{key}_ci_high_ms")
    band = f" [{_num(lo, '.3f') or '?'}, {_num(hi, '.3f') or '?'}]"
    return f"{est:.3f}{band}"


def validity_notes(record: Mapping[str, Any]) -> list[str]:
    """Why an ok cell's numbers deserve doubt: an invalid window (and LoadGen's reasons), a load
    generator that fell behind its schedule."""
    notes = []
    if record.get("stop_reason") == "loadgen":
        if not record.get("valid", True):
            failed = [
                text
                for key, text in (
                    ("loadgen_perf_constraints_met", "latency bound broken"),
                    ("loadgen_min_duration_met", "min duration not met"),
                    ("loadgen_min_queries_met", "too few queries"),
                    ("loadgen_early_stopping_met", "early stopping unmet"),
                )
                if record.get(key) is False
            ]
            notes.append("LoadGen INVALID" + (f": {', '.join(failed)}" if failed else ""))
        if record.get("generator_kept_up") is False:
            late = record.get("generator_delay_p99_ms", record.get("issue_delay_p99_ms"))
            notes.append(f"generator late (issue delay p99 {_num(late, '.2f')} ms)")
    elif not record.get("valid", True):
        notes.append(f"too few queries ({record.get('n_queries')} < {record.get('min_queries')})")
    notes.extend(str(w).split(":")[0] for w in record.get("gpu_timing_warnings") or [])  # trtexec's, short
    return notes


COLUMNS = (
    ("cell", "model backend device precision batch"),
    ("status", ""),
    ("samples/s", "completed samples / wall time of the measured window"),
    ("p50 ms [95% CI]", "median latency per call, order-statistic CI"),
    ("p99 ms [95% CI]", "99th percentile latency per call; '?' = too few queries for that bound"),
    ("cold ms", "first call after prepare"),
    ("prepare s", "load + convert/compile"),
    ("peak MiB", "resident high-water mark while measuring"),
    ("note", ""),
)


def rows(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    out = []
    for r in records:  # in the order they ran, which is the scenario's order
        if r["status"] == "ok":
            notes = []
            if not is_trusted(r):
                notes.append(f"UNTRUSTED: busy machine ({r.get('noise_fraction') or 0:.0%} elsewhere)")
            if r.get("peak_qps"):
                notes.append(f"peak {r['peak_qps']:,.0f} q/s")
            notes += validity_notes(r)
            out.append([
                r["label"], "ok", _num(r.get("throughput_sps"), ",.0f"), _ci(r, "p50"), _ci(r, "p99"),
                _num(r.get("cold_ms"), ".2f"), _num(r.get("prepare_s"), ".2f"),
                _num(r.get("peak_rss_mb_measure"), ".0f"), "; ".join(notes),
            ])  # fmt: skip
        else:
            out.append([r["label"], r["status"], "", "", "", "", "", "", r.get("reason", "")[:120]])
    return out


def print_summary(records: Sequence[Mapping[str, Any]]) -> None:
    table_rows = rows(records)
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title="results", show_lines=False)
        for name, _ in COLUMNS:
            table.add_column(name, overflow="fold")
        for row in table_rows:
            table.add_row(*row)
        Console().print(table)
        return
    headers = [name for name, _ in COLUMNS]
    widths = [
        max(len(h), *(len(row[i]) for row in table_rows)) if table_rows else len(h) for i, h in enumerate(headers)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in table_rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
