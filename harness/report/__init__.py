"""HTML report rendering: one self-contained file (no network), Jinja2 with autoescape."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.output.files import write
from harness.store import RunDir

#: columns of the results table, in order; each gets its unit and meaning from harness.metrics.
#: The first ones answer "how fast, how slow at the tail, how dear, how accurate"; the rest wait
#: behind the column chooser
TABLE_COLUMNS = (
    "label", "status", "throughput_sps", "p50_ms", "p99_ms", "cost_per_million_usd", "agreement", "backend",
    "backend_options", "device", "precision", "batch_size", "threads", "load", "concurrency", "p50_ci_low_ms",
    "p50_ci_high_ms", "p90_ms", "p99_ci_low_ms", "p99_ci_high_ms", "p99_early_stop_ms", "p99_9_ms", "mean_ms",
    "target_qps", "peak_qps", "loadgen_validity", "generator_kept_up", "mean_batch", "cosine", "max_abs_error",
    "task_value", "fidelity_ok", "instances_needed", "budgets_ok", "achieved_gflops", "fraction_of_peak", "cold_ms",
    "prepare_s", "n_queries", "wall_s", "stop_reason", "valid", "peak_rss_mb_prepare", "peak_rss_mb_measure",
    "noise_fraction", "gpu_compute_p50_ms", "gpu_compute_cv", "enqueue_mean_ms", "gpu_energy_per_inference_j",
    "gpu_power_mean_w", "energy_usd_per_million", "machine", "node_host", "reason",
)  # fmt: skip
#: the columns shown before the reader picks others
SHOWN_COLUMNS = 7


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _run_view(run: RunDir) -> dict[str, Any]:
    from harness.analysis.economics import FLEET_RATE_SOURCE, latency_basis, untrusted_reason
    from harness.metrics import describe
    from harness.report.firstscreen import answers, heat_table, readable_options

    manifest = run.manifest()
    records = list(run.records())
    notes = run.state().notes(run.path)
    columns = []
    for i, name in enumerate(TABLE_COLUMNS):
        unit, meaning = describe(name) or ("", "")
        if name == "backend_options":
            meaning = meaning.replace(", JSON", ", as key=value")
        columns.append({"name": name, "unit": unit, "meaning": meaning, "shown": i < SHOWN_COLUMNS})
    rows = []
    for rec in records:
        flat = {**rec.get("config", {}), **rec}
        flat["backend_options"] = readable_options(flat.get("backend_options"))
        flat["concurrency"] = (flat.get("load_options") or {}).get("concurrency", 1)
        rows.append({"values": [_clean(flat.get(c)) for c in TABLE_COLUMNS],
                     "untrusted": untrusted_reason(rec) if rec.get("status") == "ok" else None})  # fmt: skip
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    planned = (manifest.settings.cost or {}).get("target_qps")
    return {
        "run_id": manifest.run_id,
        "path": str(run.path),
        "notes": notes,
        "manifest": manifest,
        "columns": columns,
        "rows": rows,
        "counts": counts,
        "not_ok": [r for r in records if r["status"] != "ok"],
        "answers": answers(records, latency_basis(records, planned, FLEET_RATE_SOURCE)),
        "heat": heat_table(records),
        "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(manifest.created_at)),
    }


def _environment() -> Any:
    """Jinja2 over the package's templates, autoescaped, failing on an undefined name."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )


def _chartjs() -> str:
    """The vendored Chart.js, inlined into every page (no network needed to open a report)."""
    return (Path(__file__).parent / "static" / "chart.umd.min.js").read_text()


def render_run(run_paths: Sequence[Path], target: Path, allow_mixed: bool = False, comparison_html: str = "") -> Path:
    """Render one or several run folders into ``target`` (written atomically); return its path.

    Several runs are one scenario measured on several machines; runs of different scenarios are
    refused unless ``allow_mixed``. ``comparison_html``: a ``bench compare`` section to show first."""
    from harness.errors import UsageError
    from harness.report.charts import budget_rows, charts, has_machine_kinds, machines

    opened = [RunDir.open(p) for p in run_paths]
    names: dict[tuple[str, str | None], list[str]] = {}
    for run in opened:
        scenario = run.manifest().scenario
        names.setdefault((scenario.name, scenario.fingerprint), []).append(run.path.name)
    if len(names) > 1 and not allow_mixed:
        listed = "; ".join(f"{name} ({', '.join(runs)})" for (name, _), runs in names.items())
        raise UsageError(
            f"these runs measured different scenarios: {listed}; a merged report compares one scenario across "
            "machines: pass --allow-mixed to merge them anyway"
        )
    runs = [_run_view(run) for run in opened]
    all_records = [(run, list(run.records())) for run in opened]
    for view, (run, records) in zip(runs, all_records, strict=True):
        view["charts"] = charts(run, records)
        view["budgets"] = budget_rows(records)
    for view in runs:
        view["history"] = None
    if len(opened) == 1:  # the scenario's earlier runs beside this one: its trends
        runs[0]["history"], skipped = _history(opened[0])
        runs[0]["notes"] += skipped
        if runs[0]["history"]:
            runs[0]["charts"] += runs[0]["history"]["charts"]
    for view in runs:
        for i, chart in enumerate(view["charts"]):
            chart.setdefault("history", False)
            chart.setdefault("family", chart["id"])
            chart["index"] = i
        view["families"] = _families(view["charts"])
    comparison = machines(all_records) if len(opened) > 1 or has_machine_kinds(all_records) else []
    env = _environment()
    chartjs = _chartjs()
    html = env.get_template("run.html.j2").render(
        runs=runs,
        machines=comparison,
        comparison=comparison_html,
        chartjs=chartjs,
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    return write(target, html, "report")


def _families(charts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The charts in page order, a family's small multiples together (drawn side by side)."""
    out: list[dict[str, Any]] = []
    for chart in charts:
        if out and out[-1]["family"] == chart["family"]:
            out[-1]["charts"].append(chart)
        else:
            out.append({"family": chart["family"], "history": chart["history"], "charts": [chart]})
    return out


def render_images(run_path: Path, folder: Path, fmt: str, names: Sequence[str] = ()) -> list[Path]:
    """The charts of one run's report (its history's trends included) as PNG or SVG files in
    ``folder``, one per chart family (small multiples as one grid); ``names`` picks families."""
    from harness.report.charts import charts
    from harness.report.images import write_images

    run = RunDir.open(run_path)
    drawn = charts(run, list(run.records()))
    history, _ = _history(run)
    if history:
        drawn += history["charts"]
    return write_images(drawn, folder, fmt, names)


def _runs_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of a history (its rows come run by run, oldest first), with their commits."""
    runs: list[dict[str, Any]] = []
    for row in rows:
        if not runs or runs[-1]["run"] != row["run"]:
            runs.append({"run": row["run"], "commit": row["commit"]})
    return runs


def _history(run: RunDir) -> tuple[dict[str, Any] | None, list[str]]:
    """This run's scenario across the runs in the same results folder (quick runs apart from full
    ones): trend charts and change points, or None when this is its only run; and the damaged
    run folders left out, each with why."""
    from harness.analysis.history import history, history_changes
    from harness.report.charts import trend_charts

    manifest = run.manifest()
    quick = manifest.settings.quick
    found = history(run.path.parent, manifest.scenario.name)
    rows = [r for r in found.rows if r["quick"] == quick]
    runs = _runs_of(rows)
    skipped = [f"history: {note}" for note in found.skipped]
    if len(runs) < 2:
        return None, skipped
    charts = trend_charts(rows, runs)
    for chart in charts:
        chart["history"] = True
    return {"root": str(run.path.parent), "runs": runs, "changes": history_changes(rows), "charts": charts}, skipped


def render_history(root: Path, scenario: str | None, rows: list[dict[str, Any]], changes: list[dict[str, Any]],
                   target: Path) -> Path:  # fmt: skip
    """The trend of every cell's throughput and p99 across runs, with the change points found."""
    from harness.report.charts import trend_charts

    runs = _runs_of(rows)
    env = _environment()
    chartjs = _chartjs()
    charts = trend_charts(rows, runs)
    for i, chart in enumerate(charts):
        chart["index"], chart["history"] = i, True
    html = env.get_template("history.html.j2").render(
        root=str(root), scenario=scenario, runs=runs, changes=changes, charts=charts, families=_families(charts),
        chartjs=chartjs, generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )  # fmt: skip
    return write(target, html, "report")
