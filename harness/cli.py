"""The command line: parse, call the library, map errors to exit codes. Nothing heavy at import.

One module for every command (run, report, recommend, compare, gate, history, validate, export, list,
doctor): its length is the count of commands and their documented options, each command's body a
screen or less; the logic behind them lives in the library."""

from __future__ import annotations

import json
import math
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness.errors import BenchError

if TYPE_CHECKING:
    from harness.pluginmanager import Registries
    from harness.scenario import Scenario

#: exit codes of an interrupted command: 128 + the signal's number, as a shell reports it
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled, ``kill``, a container stopped), handled as an interrupt."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _interrupted(exc: KeyboardInterrupt) -> str:
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    run = getattr(exc, "bench_run", None)
    if run is None:
        return f"bench: {what}"
    return (
        f"bench: {what}; the finished cells of {run} are kept in its journal; "
        f"finish the run with: bench run --resume {run}"
    )


class _Group(click.Group):
    """Turns already-explained errors into one line and an exit code, never a traceback; SIGTERM
    is handled like Ctrl-C (finished cells kept, the resume command named)."""

    def invoke(self, ctx: click.Context) -> Any:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            click.echo(f"bench: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            click.echo(_interrupted(exc), err=True)
            ctx.exit(EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT)


class Finite(click.ParamType[float, Any]):
    """A finite number within bounds. Click's FloatRange lets nan through (every comparison with nan
    is false) and inf through an open upper end, and a limit of nan or inf turns every check it
    takes part in into nonsense ("p99 <= nan ms")."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> None:  # fmt: skip
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def _bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"above {self.low:g}" if self.low_open else f"at least {self.low:g}"
        return f"below {self.high:g}" if self.high_open else f"at most {self.high:g}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number; give one {self._bounds()}", param, ctx)
        low, high = self.low, self.high
        if (low is not None and (number <= low if self.low_open else number < low)) or (
            high is not None and (number >= high if self.high_open else number > high)
        ):
            self.fail(f"{number:g} is not {self._bounds()}", param, ctx)
        return number


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-p",
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE",
    help="Load a plugin module (repeatable); also BENCH_PLUGINS=mod1,mod2.",
)
@click.version_option(package_name="bench", prog_name="bench")
@click.pass_context
def cli(ctx: click.Context, plugins: tuple[str, ...]) -> None:
    """bench: measure inference runtimes across batch sizes, precisions and devices.

    Set BENCH_DISABLE_PLUGIN_AUTOLOAD=1 to load only the plugins named with -p.
    """
    ctx.obj = {"plugins": plugins}


def _load(path: str, ctx: click.Context) -> Scenario:
    """The scenario, its model shorthands from the plugins this command loads (built only if asked)."""
    from harness.scenario import load_scenario

    return load_scenario(Path(path), registries=lambda: _registries(ctx))


def _registries(ctx: click.Context) -> Registries:
    """The registries of the plugins this command loads, built once per command."""
    from harness.pluginmanager import registries

    if "registries" not in ctx.obj:
        ctx.obj["registries"] = registries(ctx.obj["plugins"])
    regs: Registries = ctx.obj["registries"]
    return regs


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
              help="With --resume: finish the run although a model file changed since it started "
                   "(recorded in its manifest).")  # fmt: skip
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
    )
    # every file asked for is checked before the sweep: a bad path costs seconds, not the sweep
    for option, path in (("--junit", junit_file), ("--summary-md", summary_md)):
        if path:
            check_writable(path, option)
    if make_report:
        check_writable(Path(reports_dir) / "report.html", "--reports-dir")
    reporter = make_reporter(json_output)
    if resume_dir:
        if scenario or backends or batch_sizes or precisions or quick or repeats:
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


def _warn(message: str) -> None:
    click.echo(f"bench: warning: {message}", err=True)


def _warn_unfinished(paths: Any) -> None:
    """Say of each run folder that is in progress, interrupted or torn, before its numbers are used."""
    from harness.store import RunDir

    for path in paths:
        for note in RunDir.open(Path(path)).state().notes(Path(path)):
            _warn(f"{path}: {note}")


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


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default=None,
    help="HTML file to write (default reports/<run_id>.html); with --format png|svg, the folder of the images.",
)
@click.option("--allow-mixed", is_flag=True, help="Merge runs of different scenarios (refused by default).")
@click.option(
    "--baseline",
    "baseline_run",
    type=click.Path(),
    default=None,
    help="Compare the run with this baseline run (bench compare's defaults) and show that first.",
)
@click.option(
    "--comparison",
    "comparison_json",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Show this comparison first: a file `bench compare --json-out` wrote (--confirm's outcome too).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "png", "svg"]),
    default="html",
    show_default=True,
    help="png or svg: the report's charts as image files, one per chart (small multiples as one grid), in the "
    "folder -o names (default reports/<run_id>-charts/); needs matplotlib (bench[images]).",
)
@click.option(
    "--chart",
    "chart_names",
    multiple=True,
    help="With --format png|svg: only this chart (throughput, latency, cdf, cost, accuracy, ...); repeatable.",
)
@click.pass_context
def report(
    ctx: click.Context,
    run_dirs: tuple[str, ...],
    output: str | None,
    allow_mixed: bool,
    baseline_run: str | None,
    comparison_json: str | None,
    fmt: str,
    chart_names: tuple[str, ...],
) -> None:
    """Render the HTML report of one run, or merge several (the same scenario on several machines);
    or write its charts as PNG or SVG files."""
    from harness.analysis.comparison import compare_runs, runtime_packages
    from harness.analysis.render import comparison_from_dict, render_html
    from harness.errors import UsageError
    from harness.report import render_images, render_run

    paths = [Path(p) for p in run_dirs]
    _warn_unfinished(paths)
    if fmt != "html":
        if len(paths) > 1 or baseline_run or comparison_json or allow_mixed:
            raise UsageError(f"--format {fmt} writes the charts of one run: give one RUN_DIR, without --baseline, "
                             "--comparison or --allow-mixed")  # fmt: skip
        folder = Path(output) if output else Path("reports") / f"{paths[0].name}-charts"
        for written in render_images(paths[0], folder, fmt, chart_names):
            click.echo(written)
        return
    if chart_names:
        raise UsageError("--chart picks charts to write as images: give --format png or svg")
    if output and Path(output).is_dir():
        raise UsageError(f"-o {output}: a folder; the HTML report is a file (images go to a folder: --format png)")
    target = Path(output) if output else Path("reports") / f"{paths[0].name}.html"
    section = ""
    if baseline_run:
        packages = runtime_packages(ctx.obj["plugins"])
        section = render_html(compare_runs(Path(baseline_run), paths[0], packages=packages))
    elif comparison_json:
        try:
            section = render_html(comparison_from_dict(json.loads(Path(comparison_json).read_text())))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"{comparison_json}: not a comparison written by bench compare --json-out ({exc})"
            ) from exc
    click.echo(render_run(paths, target, allow_mixed=allow_mixed, comparison_html=section))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--p99-ms", type=Finite(0, low_open=True), required=True, help="The latency SLO: p99 at most this, ms.")
@click.option("--min-throughput", type=Finite(0), default=None, help="And at least this many samples/s.")
@click.option(
    "--min-agreement", type=Finite(0, 1), default=None, help="And at least this agreement with the reference."
)
@click.option(
    "--hourly-usd", type=Finite(0, low_open=True), default=None, help="Price per machine-hour when a run has none."
)
@click.option(
    "--qps",
    type=Finite(0, low_open=True),
    default=None,
    help="Requests (samples) per second reaching the queue that fills each batch, to judge batch > 1 per request "
    "(default: the scenario's cost.target_qps).",
)
def recommend(
    run_dirs: tuple[str, ...],
    p99_ms: float,
    min_throughput: float | None,
    min_agreement: float | None,
    hourly_usd: float | None,
    qps: float | None,
) -> None:
    """The cheapest configuration of one or several runs that meets an SLO, and why the others lost.

    The p99 is judged per request: a run's server cells where it has them, else a call's p99 plus
    the time its batch takes to gather at --qps (or cost.target_qps); batch > 1 is left out when no
    rate is known."""
    from harness.analysis import economics
    from harness.errors import UsageError
    from harness.store import RunDir

    _warn_unfinished(run_dirs)
    rows = []
    bases: dict[str, economics.RequestLatency] = {}
    for path in run_dirs:
        run = RunDir.open(Path(path))
        manifest = run.manifest()
        machine = manifest.environment.get("cpu", {}).get("model") or run.path.name
        records = list(run.records())
        planned = (manifest.settings.cost or {}).get("target_qps")
        rate, source = (qps, "--qps") if qps is not None else (planned, "cost.target_qps")
        bases[path] = economics.latency_basis(records, rate, source)
        for rec in records:
            if rec.get("status") == "skipped":
                continue
            row = dict(rec)
            row["label"] = f"{rec['label']}" + (f" [{run.path.name}]" if len(run_dirs) > 1 else "")
            if row.get("cost_per_million_usd") is None and hourly_usd is not None:
                row["cost_per_million_usd"] = economics.cost_per_million(hourly_usd, row.get("throughput_sps"))
                row["price_source"] = "--hourly-usd"
            row["machine"] = machine
            row["run_dir"] = path
            rows.append(row)
    if not rows:
        raise UsageError("no measured cells in " + ", ".join(run_dirs))
    if all(r.get("cost_per_million_usd") is None for r in rows if r.get("status") == "ok"):
        raise UsageError(
            "these runs have no price: give --hourly-usd PRICE, or run a scenario with cost: {instance: NAME}"
        )
    if min_agreement is not None and all(r.get("agreement") is None for r in rows):
        raise UsageError(
            "--min-agreement: these runs hold no accuracy measurement (agreement with the reference); "
            "their fidelity was not measured: " + str(next((r.get("fidelity_skipped") for r in rows), ""))
        )

    def latency(row: Mapping[str, Any]) -> tuple[float | None, str]:
        return economics.request_latency(row, bases[row["run_dir"]])

    meets = economics.slo_check(p99_ms, min_throughput, min_agreement, latency=latency)
    best, losers = economics.cheapest(rows, meets, "cost_per_million_usd")
    slo = f"p99 <= {p99_ms:g} ms per request" + (f", >= {min_throughput:,.0f} samples/s" if min_throughput else "")
    slo += f", agreement >= {min_agreement:g}" if min_agreement is not None else ""
    if best is None:
        click.echo(f"no configuration meets {slo}")
    else:
        p99, how = latency(best)
        click.echo(
            f"cheapest meeting {slo}: {best['label']}\n"
            f"  ${best['cost_per_million_usd']:.3g} per million inferences, p99 {p99:.3f} ms per request ({how}), "
            f"{best['throughput_sps']:,.0f} samples/s"
            + (f", agreement {best['agreement']:.4f}" if best.get("agreement") is not None else "")
            + f"; price: {best.get('price_source')}"
        )
    for path, basis in bases.items():  # how the p99 was judged: measured, estimated, or left out
        click.echo(("  " + (f"{path}: " if len(bases) > 1 else "")) + basis.describe())
    click.echo("why the others lost:")
    for row, why in sorted(losers, key=lambda item: item[0].get("cost_per_million_usd") or float("inf")):
        click.echo(f"  {row['label']}: {why}")
    if best is None:
        click.get_current_context().exit(1)


def _warn_if_fraction(threshold: float) -> None:
    """Thresholds are percent; a value under 0.5 was most likely meant as a fraction (0.05 for 5 %),
    which would make every tiny change count. Said, not refused: a tiny threshold can be wanted."""
    if 0 < threshold < 0.5:
        click.echo(
            f"bench: warning: --threshold {threshold:g} is read as {threshold:g} %; "
            f"for {threshold * 100:g} % give {threshold * 100:g}",
            err=True,
        )


@cli.command()
@click.argument("baseline", type=click.Path())
@click.argument("candidate", type=click.Path())
@click.option("--threshold", type=Finite(0, 100, low_open=True, high_open=True), default=5.0, show_default=True,
              help="Least change that matters, in percent (5 means 5 %).")  # fmt: skip
@click.option(
    "--alpha",
    type=Finite(0, 1, low_open=True, high_open=True),
    default=0.01,
    show_default=True,
    help="Chance of any false verdict over the cells compared (Holm).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "md", "json", "html"]), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None,
              help="Also write the comparison as JSON here (for `bench report --comparison`).")  # fmt: skip
@click.option("--allow-env-mismatch", is_flag=True, help="Compare runs from different machines or runtime versions.")
@click.option("--confirm", is_flag=True,
              help="Measure the cells that look slower again (baseline and candidate code, alternating) and let "
                   "that decide.")  # fmt: skip
@click.option("--confirm-repeats", type=click.IntRange(min=2, max=100), default=20, show_default=True,
              help="Processes per side when measuring again.")  # fmt: skip
@click.option(
    "--screen-alpha",
    type=Finite(0, 1, low_open=True, high_open=True),
    default=0.25,
    show_default=True,
    help="A slower-looking cell is measured again under this one-sided p-value.",
)
@click.option(
    "--baseline-code",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="A checkout of the baseline's code (default: its recorded commit, from this repository).",
)
@click.pass_context
def compare(
    ctx: click.Context,
    baseline: str,
    candidate: str,
    threshold: float,
    alpha: float,
    fmt: str,
    output: str | None,
    json_out: str | None,
    allow_env_mismatch: bool,
    confirm: bool,
    confirm_repeats: int,
    screen_alpha: float,
    baseline_code: str | None,
) -> None:
    """Compare a candidate run with a baseline run, cell by cell; exit 1 on a regression.

    With --confirm the comparison only screens: the cells that look slower are measured again here,
    the baseline with its own code, and that measurement alone decides (see the README)."""
    from harness.analysis import render as cmp_render
    from harness.analysis.comparison import compare_runs, runtime_packages
    from harness.output.files import check_writable

    _warn_if_fraction(threshold)
    for option, path in (("-o", output), ("--json-out", json_out)):
        if path:  # before --confirm's re-measurement, which can take an hour
            check_writable(path, option)
    _warn_unfinished((baseline, candidate))
    packages = runtime_packages(ctx.obj["plugins"])  # the runtimes of the backends loaded here, -p ones too
    result = compare_runs(Path(baseline), Path(candidate), threshold / 100, alpha, allow_env_mismatch,
                          packages=packages)  # fmt: skip
    note = cmp_render.quick_note(result)
    if note:
        click.echo(f"bench: warning: {note}", err=True)
    if confirm:
        from harness.analysis.confirm import confirm as remeasure
        from harness.output.progress import make_reporter

        remeasure(
            result, Path(baseline), Path(candidate), plugins=ctx.obj["plugins"], repeats=confirm_repeats,
            screen_alpha=screen_alpha, baseline_code=Path(baseline_code) if baseline_code else None,
            allow_env_mismatch=allow_env_mismatch, reporter=make_reporter(False),
        )  # fmt: skip
        click.echo(cmp_render.confirmation_line(result.confirmation or {}), err=True)
    text = cmp_render.render(result, fmt)
    from harness.output.files import write

    if json_out:
        write(json_out, cmp_render.render(result, "json"), "--json-out")
    if output:
        write(output, text, "-o")
    else:
        click.echo(text, nl=False)
    if result.has_regression:  # a cell slower, or lost: measured in the baseline, not in the candidate
        ctx.exit(1)


class Duration(click.ParamType[float, Any]):
    """A wall time: ``90s``, ``30m``, ``1h``, ``1h30m``, or a number of seconds."""

    name = "duration"
    _UNITS = (3600.0, 60.0, 1.0)  # the pattern's groups: hours, minutes, seconds

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        import re

        text = str(value).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text)
        if not text or parts is None or not any(parts.groups()):
            self.fail(f"{value!r} is not a duration (give e.g. 90s, 30m, 1h or 1h30m)", param, ctx)
        seconds = sum(float(v) * unit for v, unit in zip(parts.groups(), self._UNITS, strict=True) if v)
        if not 0 < seconds < math.inf:
            self.fail(f"{value!r} is not a duration above 0 s", param, ctx)
        return seconds


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--baseline", default=None, metavar="REF",
              help="The baseline: a git branch, tag or commit of this repository, or 'installed' (the bench "
                   "installed in this Python environment).")  # fmt: skip
@click.option("--baseline-code", type=click.Path(file_okay=False, exists=True), default=None,
              help="Instead of --baseline: a checkout of the baseline's code.")  # fmt: skip
@click.option("--budget", type=Duration(), default="30m", show_default=True,
              help="Wall time the whole gate may take (90s, 30m, 1h30m); no process starts that would not end "
                   "within it.")  # fmt: skip
@click.option("--threshold", type=Finite(0, 100, low_open=True, high_open=True), default=5.0, show_default=True,
              help="Least slowdown that matters, in percent (5 means 5 %).")  # fmt: skip
@click.option("--alpha", type=Finite(0, 1, low_open=True, high_open=True), default=0.01, show_default=True,
              help="Chance of any false regression over the cells measured again (Holm).")  # fmt: skip
@click.option("--screen-alpha", type=Finite(0, 1, low_open=True, high_open=True), default=0.25, show_default=True,
              help="A cell is measured again when a metric looks worse under this one-sided p-value.")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the order of the pairs (default: from the clock; recorded, to replay an "
                   "order).")  # fmt: skip
@click.option("--out", "out_root", type=click.Path(file_okay=False), default="results/.gate", show_default=True,
              help="Where the gate's folder (journal, run folders, result) goes.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["text", "md", "json", "html"]), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None,
              help="Also write the result as JSON here (for `bench report --comparison`).")  # fmt: skip
@click.option("--allow-dirty", is_flag=True,
              help="Gate this checkout although harness/ or plugins/ have uncommitted changes.")  # fmt: skip
@click.pass_context
def gate(
    ctx: click.Context,
    scenario: str,
    baseline: str | None,
    baseline_code: str | None,
    budget: float,
    threshold: float,
    alpha: float,
    screen_alpha: float,
    seed: int | None,
    out_root: str,
    fmt: str,
    output: str | None,
    json_out: str | None,
    allow_dirty: bool,
) -> None:
    """Is this checkout slower than a baseline commit? Both measured here, now, in pairs of processes,
    within a wall-time budget; exit 1 on a confirmed regression (see the README)."""
    import time

    from harness.analysis import render as cmp_render
    from harness.analysis.gate import GateOptions, run_gate
    from harness.output.files import check_writable, write

    _warn_if_fraction(threshold)
    for option, path in (("-o", output), ("--json-out", json_out)):
        if path:  # before the measuring, which takes the budget
            check_writable(path, option)
    options = GateOptions(
        baseline=baseline, baseline_code=Path(baseline_code) if baseline_code else None, budget_s=budget,
        threshold=threshold / 100, alpha=alpha, screen_alpha=screen_alpha,
        seed=seed if seed is not None else int(time.time()) % 2**31, out_root=Path(out_root),
        plugins=ctx.obj["plugins"], allow_dirty=allow_dirty,
    )  # fmt: skip
    result = run_gate(_load(scenario, ctx), options, say=lambda line: click.echo(line, err=True))
    text = cmp_render.render(result, fmt)
    if json_out:
        write(json_out, cmp_render.render(result, "json"), "--json-out")
    if output:
        write(output, text, "-o")
    else:
        click.echo(text, nl=False)
    if result.has_regression:
        ctx.exit(1)


@cli.command(name="history")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--scenario", default=None, help="Only runs of this scenario.")
@click.option("--threshold", type=Finite(0), default=5.0, show_default=True,
              help="Least level shift, in percent (5 means 5 %).")  # fmt: skip
@click.option("--json", "json_output", is_flag=True)
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
              help="Also write the trends as an HTML page (one chart per metric, change points listed).")  # fmt: skip
def history_(root: str, scenario: str | None, threshold: float, json_output: bool, html_file: str | None) -> None:
    """Every run of a scenario under a results root, by date and commit, and where each cell's
    throughput or p99 shifted (change points)."""
    from harness.analysis.history import history, history_changes
    from harness.errors import UsageError

    if not Path(root).is_dir():
        raise UsageError(f"{root}: not a folder (give a results root such as results/)")
    if (Path(root) / "manifest.json").is_file():  # history reads the run folders inside a root, not a run
        raise UsageError(f"{root} is a run folder; give its results root ({Path(root).parent})")
    _warn_if_fraction(threshold)
    found = history(Path(root), scenario)
    for note in found.skipped:
        click.echo(f"bench: warning: {note}", err=True)
    rows = found.rows
    if not rows:
        raise UsageError(f"{root}: no measured runs" + (f" of scenario '{scenario}'" if scenario else ""))
    changes = history_changes(rows, threshold / 100)
    if html_file:
        from harness.report import render_history

        render_history(Path(root), scenario, rows, changes, Path(html_file))
    if json_output:
        click.echo(json.dumps({"runs": rows, "changes": changes}, indent=2, default=str))
        return
    runs = sorted({(r["created_at"] or 0, r["run"], r["commit"]) for r in rows})
    click.echo(f"{len(runs)} runs, {len({r['cell_id'] for r in rows})} cells")
    for _, run, commit in runs:
        click.echo(f"  {run}  {commit}")
    click.echo(f"{len(changes)} change point(s):" if changes else "no change points")
    for c in changes:
        click.echo(f"  {c['label']} {c['metric']}: {c['before']:.4g} -> {c['after']:.4g} ({c['change']:+.1%}) "
                   f"from {c['at_run']} ({c['commit']})")  # fmt: skip


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.pass_context
def validate(ctx: click.Context, scenario: str) -> None:
    """Check a scenario file (schema, names of models and backends) without running it."""
    from harness import environment, planning
    from harness.scenario import describe, expand_cells

    loaded = _load(scenario, ctx)
    regs = _registries(ctx)
    planning.check_scenario(loaded, regs)
    planned = planning.plan(expand_cells(loaded, environment.usable_cpus()), regs)
    skipped = [p for p in planned if p.skip_reason]
    click.echo(describe(loaded))
    click.echo(f"{len(planned)} cells: {len(planned) - len(skipped)} to run here, {len(skipped)} skipped")
    for p in skipped:
        click.echo(f"  skipped {p.cell.label}: {p.skip_reason}")
    click.echo(f"{scenario}: valid")


@cli.command(name="export")
@click.argument("model")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), required=True,
              help="The ONNX file to write (ending in .onnx).")  # fmt: skip
@click.option("--inputs", "inputs", type=click.Path(dir_okay=False), default=None,
              help="The inputs .npz to write (default: next to the ONNX file, NAME.inputs.npz); one batch per "
                   "input goes beside it as .npy (benchmark_app) and .bin (trtexec).")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Samples of the batch written per input, and in the printed command lines.")  # fmt: skip
@click.option("--samples", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Samples in the inputs .npz (the model's example inputs, seed 0).")  # fmt: skip
@click.option("--option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="A model option, the value in YAML (int_high={sparse: 3}); repeatable.")  # fmt: skip
@click.pass_context
def export_(
    ctx: click.Context,
    model: str,
    output: str,
    inputs: str | None,
    batch_size: int,
    samples: int,
    model_options: tuple[str, ...],
) -> None:
    """Write the ONNX file bench measures for MODEL (a model name, or a model file) and inputs for it,
    with the benchmark_app and trtexec command lines that measure the same work."""
    from harness.export import command_lines, export, parse_options
    from harness.output.files import check_writable

    out = Path(output)
    inputs_path = Path(inputs) if inputs else out.with_name(f"{out.stem}.inputs.npz")
    options = parse_options(model_options)
    check_writable(out, "-o")
    check_writable(inputs_path, "--inputs")
    done = export(_registries(ctx), model, options, out, inputs_path, batch_size, samples)
    click.echo(f"wrote {done.onnx}" + "".join(f", {extra}" for extra in done.companions))
    click.echo(f"wrote {done.inputs} ({done.samples} samples of {', '.join(done.batch_files)})")
    for name, (npy, raw, shape) in done.batch_files.items():
        click.echo(f"wrote {npy} and {raw} (input {name}: one batch, shape {list(shape)})")
    lines = command_lines(done)
    click.echo("measure the same batch with:")
    for tool, line in lines.items():
        click.echo(f"  {tool + ':':<15}{line}")


@cli.command(name="list")
@click.argument("what", type=click.Choice(["backends", "models", "scenarios", "instances"]))
@click.pass_context
def list_(ctx: click.Context, what: str) -> None:
    """What is available here, and why not where it is not."""
    if what == "scenarios":
        found = sorted(Path("scenarios").glob("*.yaml"))
        for path in found:
            click.echo(str(path))
        if not found:  # outside the repository: say where it looked rather than print nothing
            click.echo(f"no scenario files (*.yaml) in {Path('scenarios').resolve()}", err=True)
        return
    if what == "instances":
        from harness.analysis.economics import catalog

        for row in catalog():
            gpu = row.gpu or "-"
            click.echo(f"{row.key:<32} {row.vcpus:>4} vCPU {row.memory_gib:>6g} GiB  {gpu:<14} "
                       f"${row.hourly_usd:>8.4f}/h  {row.region} {row.as_of}")  # fmt: skip
        click.echo("on-demand Linux prices as of the date shown, from each cloud's public price page (see "
                   "harness/data/prices.yaml); cost: {hourly_usd: X} in a scenario overrides")  # fmt: skip
        return
    from harness.pluginmanager import registries
    from harness.registry import safe_availability

    regs = registries(ctx.obj["plugins"], strict=False)  # list what loaded; the plugins left out are said last
    if what == "backends":
        for name in regs.backends.names():
            cls = regs.backends.get(name)
            avail = safe_availability(cls)
            state = "available" if avail.ok else f"unavailable: {avail.reason}"
            click.echo(f"{name:<14} {state}")
            if cls.description:
                click.echo(f"{'':<14} {cls.description}")
            click.echo(
                f"{'':<14} devices {', '.join(cls.devices)}; precisions {', '.join(cls.precisions)}; "
                f"plugin {regs.backends.owner(name)}"
            )
            for opt, spec in cls.option_specs().items():
                click.echo(f"{'':<14} option {opt}: {spec.describe()}")
    else:
        for name in regs.models.names():
            model = regs.models.get(name)
            click.echo(f"{name:<14} {model.description} (plugin {regs.models.owner(name)})")
    regs.check()


@cli.command()
@click.option("--json", "json_output", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def doctor(ctx: click.Context, json_output: bool) -> None:
    """Runtimes, versions, devices and CPU features here, and what would spoil a measurement."""
    from harness.doctor import diagnose, render

    found = diagnose(ctx.obj["plugins"])
    click.echo(json.dumps(found, indent=2) if json_output else render(found))


def main() -> None:
    cli(prog_name="bench")


if __name__ == "__main__":
    main()
