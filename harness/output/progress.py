"""What the user sees while a sweep runs: a progress bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from harness.analysis.economics import is_trusted, untrusted_reason
from harness.output.summary import validity_notes

if TYPE_CHECKING:
    from harness.cells import Cell
    from harness.records import CellRecord
    from harness.store import RunDir


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cell_line(record: Mapping[str, Any]) -> str:
    """One line about a finished cell: the status, and the headline numbers or the reason."""
    status = record["status"]
    if status == "ok":
        flags = []
        if not is_trusted(record):
            flags.append(f"UNTRUSTED: {untrusted_reason(record)}")
        if record.get("peak_qps"):
            flags.append(f"peak {record['peak_qps']:,.0f} q/s")
        flags += validity_notes(record)
        extra = f"  [{'; '.join(flags)}]" if flags else ""
        latency = (
            f"p50 {_fmt(record.get('p50_ms'), '.3f')} ms  p99 {_fmt(record.get('p99_ms'), '.3f')} ms  "
            if record.get("p50_ms") is not None
            else ""
        )
        count = f"n={record.get('n_queries')}" if latency else f"{record.get('samples')} samples"
        return (
            f"ok  {_fmt(record.get('throughput_sps'), ',.0f')} samples/s  {latency}"
            f"({count}, prepare {_fmt(record.get('prepare_s'), '.1f')} s){extra}"
        )
    return f"{status}: {record.get('reason', '')}"


class PlainReporter:
    """Plain lines (CI logs, pipes): one when a cell starts, one when it ends."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = 0
        self.index = 0
        self.t0 = time.monotonic()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, run_dir: RunDir, total: int) -> None:
        self.total = total
        self._print(f"run {run_dir.path}: {total} cell(s) to run")

    def cell_started(self, cell: Cell, repeat: int) -> None:
        self.index += 1
        rep = f" r{repeat}" if repeat else ""
        self._print(f"[{self.index}/{self.total}] {cell.label}{rep} ...")

    def event(self, cell: Cell, message: dict[str, Any]) -> None:
        pass

    def cell_finished(self, cell: Cell, record: CellRecord) -> None:
        self._print(f"[{self.index}/{self.total}]   {cell_line(record)}")

    def finish(self, run_dir: RunDir, records: list[CellRecord]) -> None:
        self._print(f"finished in {time.monotonic() - self.t0:.0f} s")


class BarReporter(PlainReporter):
    """A rich progress bar with the current cell and its phase; finished cells print above it."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task: Any = None
        self.label = ""

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def start(self, run_dir: RunDir, total: int) -> None:
        super().start(run_dir, total)
        self.progress.start()
        self.task = self.progress.add_task("starting", total=total)

    def cell_started(self, cell: Cell, repeat: int) -> None:
        self.index += 1
        self.label = cell.label + (f" r{repeat}" if repeat else "")
        self.progress.update(self.task, description=f"{self.label}: starting")

    def event(self, cell: Cell, message: dict[str, Any]) -> None:
        if message.get("event") == "phase":
            self.progress.update(self.task, description=f"{self.label}: {message['phase']}")

    def cell_finished(self, cell: Cell, record: CellRecord) -> None:
        self._print(f"{self.label}  {cell_line(record)}")
        self.progress.advance(self.task)

    def finish(self, run_dir: RunDir, records: list[CellRecord]) -> None:
        self.progress.stop()
        super().finish(run_dir, records)


def make_reporter(json_output: bool) -> PlainReporter:
    """A bar on an interactive terminal; plain lines in CI (``CI`` set), pipes and with ``--json``."""
    if not json_output and sys.stderr.isatty() and os.environ.get("CI", "") in ("", "0", "false"):
        return BarReporter()
    return PlainReporter()
