"""Files the user names on the command line (reports, JUnit, Markdown, comparisons): checked before
long work starts, written atomically, and a failure said in one line with exit 2, never a traceback."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from harness.errors import OutputError
from harness.store import write_atomic


def _cannot(path: Path, option: str, why: str) -> OutputError:
    return OutputError(f"{option} {path}: cannot write there ({why}); give a path in a writable folder")


def check_writable(path: str | os.PathLike[str], option: str) -> None:
    """Raise OutputError now if ``path`` could not be written later; creates nothing that stays.

    The test is a real one: a probe file created and removed in the nearest existing folder (a
    permission check alone is wrong for root and for read-only file systems)."""
    target = Path(path)
    if target.is_dir():
        raise _cannot(target, option, "it is a folder; give a file name")
    folder = target.parent
    while not folder.exists():  # the folders still to be made must be makeable in the first that exists
        folder = folder.parent
    if not folder.is_dir():
        raise _cannot(target, option, f"{folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bench-probe-", dir=folder)
    except OSError as exc:
        raise _cannot(target, option, exc.strerror or str(exc)) from None
    os.close(fd)
    os.unlink(probe)


def write(path: str | os.PathLike[str], data: bytes | str, option: str = "output") -> Path:
    """Write ``data`` to ``path`` atomically (its folders made as needed), or raise OutputError."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        raise _cannot(target, option, exc.strerror or str(exc)) from None
    return target
