"""``bench compare``, ``bench gate`` and ``bench history``: whether the code got slower."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from harness.cli.app import Duration, Finite, _load, _only_with, _warn_if_fraction, _warn_unfinished, cli

if TYPE_CHECKING:
    from harness.analysis.comparison import Comparison


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
    if not confirm:
        _only_with(ctx, "--confirm", "confirm_repeats", "screen_alpha", "baseline_code")
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
    _emit(ctx, result, fmt, output, json_out)


def _metrics_option(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    """``--metrics``: known metric names, comma-separated, at least one, in the results' order."""
    from harness.analysis.comparison import METRICS

    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise click.BadParameter(f"{value!r}: give one or more of {', '.join(METRICS)}, comma-separated")
    return tuple(m for m in METRICS if m in names)


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
              help="Least slowdown that matters, in percent (5 means 5 %): throughput and p50, and p99 unless "
                   "--p99-threshold says otherwise.")  # fmt: skip
@click.option("--p99-threshold", type=Finite(0, 100, low_open=True, high_open=True), default=None,
              help="Least p99 slowdown that matters, in percent [default: the larger of --threshold and 10: a "
                   "short window's tail moves several times more between processes than its median].")  # fmt: skip
@click.option("--metrics", "metrics", default="throughput,p50,p99", show_default=True, callback=_metrics_option,
              help="The metrics judged, comma-separated; the others are reported with their change, not judged "
                   "(throughput,p50 leaves out p99, whose noise between processes keeps most cells inconclusive "
                   "on a small machine's budget).")  # fmt: skip
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
    p99_threshold: float | None,
    metrics: tuple[str, ...],
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

    from harness.analysis.gate import GateOptions, run_gate
    from harness.output.files import check_writable

    _warn_if_fraction(threshold)
    if p99_threshold is not None:
        _warn_if_fraction(p99_threshold, "--p99-threshold")
    for option, path in (("-o", output), ("--json-out", json_out)):
        if path:  # before the measuring, which takes the budget
            check_writable(path, option)
    options = GateOptions(
        baseline=baseline, baseline_code=Path(baseline_code) if baseline_code else None, budget_s=budget,
        threshold=threshold / 100, p99_threshold=p99_threshold / 100 if p99_threshold is not None else None,
        alpha=alpha, screen_alpha=screen_alpha, seed=seed if seed is not None else int(time.time()) % 2**31,
        out_root=Path(out_root), metrics=metrics,
        plugins=ctx.obj["plugins"], allow_dirty=allow_dirty,
    )  # fmt: skip
    result = run_gate(_load(scenario, ctx), options, say=lambda line: click.echo(line, err=True))
    _emit(ctx, result, fmt, output, json_out)


def _emit(ctx: click.Context, result: Comparison, fmt: str, output: str | None, json_out: str | None) -> None:
    """A comparison's output (compare's and gate's alike), then exit 1 on a regression: a cell
    slower, or lost (measured in the baseline, not in the candidate)."""
    from harness.analysis import render as cmp_render
    from harness.output.files import write

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
    for note in [*found.skipped, *found.notes]:
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
        where = (f" [{c['machine']}]" if c.get("machine") else "") + (" (quick runs)" if c.get("quick") else "")
        click.echo(f"  {c['label']}{where} {c['metric']}: {c['before']:.4g} -> {c['after']:.4g} ({c['change']:+.1%}) "
                   f"from {c['at_run']} ({c['commit']})")  # fmt: skip
