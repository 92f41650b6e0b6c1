"""The command line: parse, call the library, map errors to exit codes. Nothing heavy at import.

``app`` holds the ``bench`` group and what every command shares; each other module registers its
commands on it: ``run``; ``results`` (report, recommend); ``regressions`` (compare, gate, history);
``info`` (validate, export, list, doctor). Each command's body is a screen or less: the logic
behind them lives in the library."""

from __future__ import annotations

from harness.cli import info, regressions, results, run  # noqa: F401  (each registers its commands)
from harness.cli.app import cli


def main() -> None:
    cli(prog_name="bench")


__all__ = ["cli", "main"]
