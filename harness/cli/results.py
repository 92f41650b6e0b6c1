"""``bench report`` and ``bench recommend``: what a run (or several machines' runs) says."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    pass
from harness.cli.app import Finite, _warn_unfinished, cli


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
    if baseline_run and comparison_json:
        raise UsageError("give --baseline RUN_DIR or --comparison FILE, not both: the report shows one comparison")
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
    if output:
        from harness.output.files import check_writable

        check_writable(output, "-o")  # named as the user gave it, before the report is rendered
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
    seen: dict[Path, str] = {}
    for path in run_dirs:
        if Path(path).resolve() in seen:
            raise UsageError(f"{path} is given twice (also as {seen[Path(path).resolve()]}): give each run once")
        seen[Path(path).resolve()] = path
    rows = []
    bases: dict[str, economics.RequestLatency] = {}
    for path in run_dirs:
        run = RunDir.open(Path(path))
        manifest = run.manifest()
        run_machine = manifest.environment.get("cpu", {}).get("model") or run.path.name
        instance = (manifest.settings.cost or {}).get("instance")
        run_machine = f"{instance}: {run_machine}" if instance else run_machine
        if len(run_dirs) > 1:  # one machine per run: two instance sizes of one CPU model are two machines
            run_machine += f" ({run.path.name})"
        records = list(run.records())
        planned = (manifest.settings.cost or {}).get("target_qps")
        rate, source = (qps, "--qps") if qps is not None else (planned, economics.FLEET_RATE_SOURCE)
        bases[path] = economics.latency_basis(records, rate, source)
        for rec in economics.one_per_cell(records):  # a cell by its median repeat, not its luckiest
            if rec.get("status") == "skipped":
                continue
            row = dict(rec)
            row["label"] = f"{rec['label']}" + (f" [{run.path.name}]" if len(run_dirs) > 1 else "")
            if row.get("cost_per_million_usd") is None and hourly_usd is not None:
                row["cost_per_million_usd"] = economics.cost_per_million(hourly_usd, row.get("throughput_sps"))
                row["price_source"] = "--hourly-usd"
            kind = (rec.get("config") or {}).get("machine")
            row["machine"] = f"{kind} ({run.path.name})" if kind and len(run_dirs) > 1 else kind or run_machine
            row["run_dir"] = path
            rows.append(row)
    if not any(r.get("status") == "ok" for r in rows):
        counts = Counter(str(r.get("status")) for r in rows)
        what = f" ({', '.join(f'{n} {s}' for s, n in counts.most_common())})" if counts else ""
        raise UsageError("no measured cells in " + ", ".join(run_dirs) + what)
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
    kinds = sorted({str(r["machine"]) for r in rows})
    if len(kinds) > 1:  # the hardware evaluation: each machine's best answer, cheapest first
        click.echo("by machine, each with its cheapest configuration meeting the SLO:")
        ranked = []
        for kind in kinds:
            top, _ = economics.cheapest([r for r in rows if str(r["machine"]) == kind], meets, "cost_per_million_usd")
            ranked.append((kind, top))
        ranked.sort(key=lambda item: (item[1] is None, (item[1] or {}).get("cost_per_million_usd") or 0))
        for position, (kind, top) in enumerate(ranked, start=1):
            if top is None:
                click.echo(f"  -  {kind}: nothing meets the SLO")
            else:
                click.echo(f"  {position}. {kind}: ${top['cost_per_million_usd']:.3g} per million, {top['label']}, "
                           f"{top['throughput_sps']:,.0f} samples/s")  # fmt: skip
    for path, basis in bases.items():  # how the p99 was judged: measured, estimated, or left out
        click.echo(("  " + (f"{path}: " if len(bases) > 1 else "")) + basis.describe())
    click.echo("why the others lost:")
    for row, why in sorted(losers, key=lambda item: item[0].get("cost_per_million_usd") or float("inf")):
        click.echo(f"  {row['label']}: {why}")
    if best is None:
        click.get_current_context().exit(1)
