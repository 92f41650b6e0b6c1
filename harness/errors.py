"""Errors that are already explained: the CLI prints their message and exits with their code."""

from __future__ import annotations


class BenchError(Exception):
    """Base for every error whose message is complete: printed as is, no traceback."""

    exit_code = 2


class UsageError(BenchError):
    """Bad command-line usage or a bad argument value."""


class ScenarioError(BenchError):
    """A scenario file that cannot be read or does not validate."""


class PluginError(BenchError):
    """A plugin that cannot be loaded, or that registers a name already taken."""


class StoreError(BenchError):
    """A run folder that is missing, corrupt, or of an unknown schema version."""


class RunLocked(StoreError):
    """Another process is writing the run folder (a run or a resume of it is under way)."""


class DiskFull(StoreError):
    """The disk filled up during a run: no cell was started after it, the journal is intact."""


class OutputError(BenchError):
    """A file the user asked for (a report, JUnit, Markdown, a comparison) cannot be written there."""


class AllCellsFailed(BenchError):
    """The run finished but no cell produced a measurement."""

    exit_code = 3


class BudgetBroken(BenchError):
    """The run finished and a cell broke a budget (with ``--fail-on-budget``)."""

    exit_code = 1


class SkipCell(Exception):
    """Raised by a backend during prepare when it cannot serve a cell here; the reason is recorded."""

    #: why the cell cannot run here: the skipped cell's reason
    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
