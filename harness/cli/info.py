"""``bench validate``, ``bench export``, ``bench list`` and ``bench doctor``: what is here and what a
scenario would do, before anything runs."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    pass
from harness.cli.app import _load, _only_with, _registries, cli


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Check against a Ray cluster: which machine kinds it has now and which cells none of its "
                   "nodes can run (default: ray for a scenario with machines:, else local).")  # fmt: skip
@click.option("--ray-address", default=None, metavar="ADDR", help="The Ray cluster (default: auto).")
@click.pass_context
def validate(ctx: click.Context, scenario: str, executor: str | None, ray_address: str | None) -> None:
    """Check a scenario file (schema, names of models and backends) without running it."""
    from harness import environment, planning
    from harness.scenario import describe, expand_cells

    loaded = _load(scenario, ctx)
    regs = _registries(ctx)
    planning.check_scenario(loaded, regs)
    if (executor or ("ray" if loaded.machines else "local")) == "ray":
        _validate_on_cluster(ctx, loaded, scenario, ray_address)
        return
    _only_with(ctx, "--executor ray (or a scenario with machines:)", "ray_address")
    planned = planning.plan(expand_cells(loaded, environment.usable_cpus()), regs)
    skipped = [p for p in planned if p.skip_reason]
    click.echo(describe(loaded))
    click.echo(f"{len(planned)} cells: {len(planned) - len(skipped)} to run here, {len(skipped)} skipped")
    for line in skip_counts(skipped):
        click.echo(f"  {line}")
    for p in skipped:
        click.echo(f"  skipped {p.cell.label}: {p.skip_reason}")
    click.echo(f"{scenario}: valid")


def skip_counts(skipped: list[Any]) -> list[str]:
    """Each distinct skip reason with how many cells it skips, the most first: where a sweep of a
    hundred cells skips for three reasons, the three come before the hundred lines. Nothing for one
    reason alone (each line says it)."""
    counts = collections.Counter(p.skip_reason for p in skipped)
    if len(counts) < 2:
        return []
    return [f"{n} cell{'s' if n > 1 else ''}: {reason}" for reason, n in counts.most_common()]


def _validate_on_cluster(ctx: click.Context, loaded: Any, scenario: str, address: str | None) -> None:
    """The scenario against the cluster as it is now: its machine kinds, and per kind what a node of
    it can serve (asked of the node itself)."""
    from harness.errors import UsageError
    from harness.executors import ray_cluster as rc
    from harness.executors.ray_sweep import plan_on_cluster
    from harness.planning import RunOptions
    from harness.pluginmanager import explicit_plugins
    from harness.scenario import describe

    click.echo(describe(loaded))
    cluster = rc.connect(address)
    try:
        kinds = cluster.kinds(loaded.machines)
        click.echo(f"Ray cluster at {cluster.address}:")
        for line in rc.describe_kinds(kinds):
            click.echo(f"  {line}")
        present = [k for k in kinds if k.nodes]
        plugins = explicit_plugins(ctx.obj["plugins"])
        settings = SimpleNamespace(plugins=plugins, autoload=None)
        planned, _, refusals = (
            plan_on_cluster(loaded, RunOptions(), cluster, present, settings) if present else ([], {}, [])
        )
        for refusal in refusals:
            click.echo(f"  {refusal}")
        for kind in kinds:
            if not kind.nodes:
                cells = [c for c in loaded.cells(1) if c.machine == kind.name]
                click.echo(f"  nothing can run the {len(cells)} cell(s) of {kind.title}: the cluster has no such node")
        skipped = [p for p in planned if p.skip_reason]
        click.echo(f"{len(planned)} cells on the cluster's kinds: {len(planned) - len(skipped)} to run, "
                   f"{len(skipped)} skipped")  # fmt: skip
        for line in skip_counts(skipped):
            click.echo(f"  {line}")
        for p in skipped:
            click.echo(f"  skipped {p.cell.label}: {p.skip_reason}")
        problem = rc.missing_kinds_message(kinds, cluster.address)
    finally:
        cluster.close()
    if problem:
        raise UsageError(problem)
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
