"""``bench run``: a sweep or a resume, its summary, report and CI files, and the exit code."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness.errors import BenchError

if TYPE_CHECKING:
    pass
from harness.cli.app import _load, _warn, cli


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--out",
    "out_root",
    type=click.Path(file_okay=False),
    default="results",
    show_default=True,
    help="Results root; the run gets its own folder inside it.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(),
    default=None,
    help="Finish an interrupted run folder: run only the cells missing from its journal.",
)
@click.option("--backend", "backends", multiple=True, help="Only these backends (repeatable).")
@click.option("--batch-size", "batch_sizes", multiple=True, type=click.IntRange(min=1), help="Only these batch sizes.")
@click.option("--precision", "precisions", multiple=True, help="Only these precisions (repeatable).")
@click.option("--quick", is_flag=True, help="Smoke run: short windows, the smallest batch size only.")
@click.option(
    "--report/--no-report",
    "make_report",
    default=True,
    show_default=True,
    help="Render reports/<run_id>.html at the end.",
)
@click.option(
    "--cache/--no-cache",
    default=True,
    show_default=True,
    help="Reuse compiled kernels and converted models from OUT/.cache across runs; "
    "--no-cache compiles every cell from scratch inside the run folder.",
)
@click.option("--repeats", type=click.IntRange(1, 100), default=None,
              help="Processes per cell, overriding the scenario's measurement.repeats (nightly: 3).")  # fmt: skip
@click.option("--reports-dir", type=click.Path(file_okay=False), default="reports", show_default=True)
@click.option("--json", "json_output", is_flag=True, help="Print the run's summary as JSON on stdout.")
@click.option("--fail-on-budget", is_flag=True, help="Exit 1 when a cell breaks one of the scenario's budgets.")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False), default=None,
              help="Write JUnit XML: one test case per cell and budget.")  # fmt: skip
@click.option("--summary-md", "summary_md", type=click.Path(dir_okay=False), default=None,
              help="Write a Markdown summary (for a CI job page).")  # fmt: skip
@click.option("--allow-changed-inputs", is_flag=True,
              help="With --resume: finish the run although a model file changed since it started, or "
                   "this machine is not the one it started on (recorded in its manifest).")  # fmt: skip
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where cells run: worker processes on this machine, or a Ray cluster's nodes (one cell "
                   "per node at a time; the scenario's machines: are its node kinds).")  # fmt: skip
@click.option("--ray-address", default=None, metavar="ADDR",
              help="With --executor ray: the cluster's head (HOST:PORT, or ray://HOST:PORT); default: the "
                   "cluster `ray start` made on this machine. With --resume: overrides the recorded one.")  # fmt: skip
@click.option("--requeue-lost", is_flag=True,
              help="With --executor ray: a cell whose node was lost runs once more on another node of its "
                   "kind (default: it is failed, reason 'node lost', and --resume runs it again).")  # fmt: skip
@click.pass_context
def run(
    ctx: click.Context,
    scenario: str | None,
    out_root: str,
    resume_dir: str | None,
    backends: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    precisions: tuple[str, ...],
    quick: bool,
    make_report: bool,
    cache: bool,
    repeats: int | None,
    reports_dir: str,
    json_output: bool,
    fail_on_budget: bool,
    junit_file: str | None,
    summary_md: str | None,
    allow_changed_inputs: bool,
    executor: str,
    ray_address: str | None,
    requeue_lost: bool,
) -> None:
    """Run a scenario's sweep (or --resume an interrupted one)."""
    from harness import planning, runner
    from harness.errors import UsageError
    from harness.output.files import check_writable
    from harness.output.progress import make_reporter

    options = planning.RunOptions(
        out_root=Path(out_root),
        quick=quick,
        cache=cache,
        backends=backends,
        batch_sizes=batch_sizes,
        precisions=precisions,
        plugins=ctx.obj["plugins"],
        allow_changed_inputs=allow_changed_inputs,
        executor=executor,
        ray_address=ray_address,
        requeue_lost=requeue_lost,
    )
    if executor != "ray" and (ray_address or requeue_lost) and not resume_dir:
        raise UsageError("--ray-address and --requeue-lost go with --executor ray")
    # every file asked for is checked before the sweep: a bad path costs seconds, not the sweep
    for option, path in (("--junit", junit_file), ("--summary-md", summary_md)):
        if path:
            check_writable(path, option)
    if make_report:
        check_writable(Path(reports_dir) / "report.html", "--reports-dir")
    reporter = make_reporter(json_output)
    if resume_dir:
        if scenario or backends or batch_sizes or precisions or quick or repeats or executor != "local":
            raise UsageError("--resume takes the scenario and filters stored in the run folder; give no others")
        run_dir, _ = runner.resume(Path(resume_dir), options, reporter, warn=_warn)
    else:
        if not scenario:
            raise UsageError("give a SCENARIO file, or --resume RUN_DIR")
        if allow_changed_inputs:
            raise UsageError("--allow-changed-inputs goes with --resume RUN_DIR")
        loaded = _load(scenario, ctx)
        if repeats is not None:  # recorded in the manifest's settings
            loaded = loaded.model_copy(
                update={"measurement": loaded.measurement.model_copy(update={"repeats": repeats})}
            )
        run_dir = runner.run_scenario(loaded, options, reporter)
    records = list(run_dir.records())
    failed: list[BenchError] = []  # outputs that could not be written: said after the summary, exit 2
    report_path = None
    if make_report:
        from harness.report import render_run

        try:
            report_path = render_run([run_dir.path], Path(reports_dir) / f"{run_dir.path.name}.html")
        except BenchError as exc:
            failed.append(exc)
    if json_output:
        payload = {
            "run_dir": str(run_dir.path),
            "report": str(report_path) if report_path else None,
            "counts": runner.outcome(records),
            "cells": [record.to_json_dict() for record in records],
        }
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        from harness.output.summary import print_summary

        print_summary(records)
        click.echo(f"results: {run_dir.path}")
        if report_path:
            click.echo(f"report:  {report_path}")
    _ci_outputs(run_dir, records, junit_file, summary_md, fail_on_budget, failed)


def _ci_outputs(run_dir: Any, records: Sequence[Mapping[str, Any]], junit_file: str | None, summary_md: str | None,
                fail_on_budget: bool, failed: list[BenchError]) -> None:  # fmt: skip
    """JUnit and Markdown files, then the exit code: 2 when a file asked for could not be written
    (the results are kept), 3 when nothing was measured, 1 for a broken budget under --fail-on-budget."""
    from harness import runner
    from harness.analysis import economics
    from harness.errors import BudgetBroken, OutputError
    from harness.output import ci
    from harness.output.files import write

    manifest = run_dir.manifest()
    budgets = manifest.settings.budgets or {}
    name = manifest.scenario.name
    for option, path, make in (
        ("--junit", junit_file, lambda: ci.junit_xml(records, budgets, name)),
        ("--summary-md", summary_md, lambda: ci.markdown(records, budgets, f"{name} ({run_dir.path.name})")),
    ):
        if path:
            try:
                write(path, make(), option)
            except BenchError as exc:
                failed.append(exc)
    if failed:
        said = "\n".join(str(exc) for exc in failed)
        raise OutputError(f"{said}\nthe run's results are kept in {run_dir.path}: bench report {run_dir.path} -o FILE")
    runner.raise_if_nothing_measured(records, run_dir)
    broken = economics.broken(records)
    if broken:
        lines = [f"  {rec['label']}: {key}: {verdict['why']}" for rec, key, verdict in broken[:20]]
        more = f"\n  ... and {len(broken) - 20} more" if len(broken) > 20 else ""
        message = f"{len(broken)} budget(s) broken:\n" + "\n".join(lines) + more
        if fail_on_budget:
            raise BudgetBroken(message)
        click.echo(message, err=True)
