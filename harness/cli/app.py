"""The ``bench`` command group: errors mapped to exit codes with one line and no traceback, SIGTERM
handled like Ctrl-C, and what every command shares (number types, warnings, scenario loading)."""

from __future__ import annotations

import math
import signal
import threading
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


def _warn(message: str) -> None:
    click.echo(f"bench: warning: {message}", err=True)


def _warn_unfinished(paths: Any) -> None:
    """Say of each run folder that is in progress, interrupted or torn, before its numbers are used."""
    from harness.store import RunDir

    for path in paths:
        for note in RunDir.open(Path(path)).state().notes(Path(path)):
            _warn(f"{path}: {note}")


def _only_with(ctx: click.Context, needed: str, *options: str) -> None:
    """Refuse options given on the command line (not left at their defaults) that only mean something
    with ``needed``, rather than ignore them without a word."""
    given = [f"--{name.replace('_', '-')}" for name in options
             if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)]  # fmt: skip
    if given:
        from harness.errors import UsageError

        raise UsageError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with {needed}")


def _warn_if_fraction(threshold: float, option: str = "--threshold") -> None:
    """Thresholds are percent; a value under 0.5 was most likely meant as a fraction (0.05 for 5 %),
    which would make every tiny change count. Said, not refused: a tiny threshold can be wanted."""
    if 0 < threshold < 0.5:
        click.echo(
            f"bench: warning: {option} {threshold:g} is read as {threshold:g} %; "
            f"for {threshold * 100:g} % give {threshold * 100:g}",
            err=True,
        )


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
