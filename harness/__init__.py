"""bench's core: scenario, measurement, store and report. Nothing here imports a runtime.

Public API for plugin authors: :mod:`harness.api` and :data:`hookimpl`, and for their tests the
conformance suite, :mod:`harness.conformance`; for readers of results: :func:`load_results`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.hookspecs import hookimpl

if TYPE_CHECKING:
    import os

    import pandas as pd

__all__ = ["hookimpl", "load_results"]


def load_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A run folder's results as a DataFrame, one row per cell and repeat (see :mod:`harness.store`)."""
    from harness.store import load_results as _load

    return _load(path)
