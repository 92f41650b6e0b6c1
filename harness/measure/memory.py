"""Resident-memory high-water marks per phase, from the kernel (VmHWM), Linux only."""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str, status: Path = _STATUS) -> int | None:
    try:
        text = status.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (writes "5" to clear_refs); False if not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float | None:
    """The resident-set high-water mark since start or the last :func:`reset_peak`, in MiB."""
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


def rss_mb(pid: int | None = None) -> float | None:
    """Current resident set of ``pid`` (default: this process), in MiB."""
    status = _STATUS if pid is None else Path(f"/proc/{pid}/status")
    kb = _status_kb("VmRSS", status)
    return None if kb is None else kb / 1024


class PhasePeaks:
    """Peak RSS of consecutive phases: ``start("prepare")`` closes the previous phase and resets the mark.

    Where the reset is not allowed the mark is cumulative, which is still an upper bound.
    """

    def __init__(self) -> None:
        self.peaks_mb: dict[str, float | None] = {}
        self.resettable = reset_peak()
        self._current: str | None = None

    def start(self, name: str) -> None:
        self.stop()
        self._current = name
        if self.resettable:
            reset_peak()

    def stop(self) -> None:
        if self._current is not None:
            self.peaks_mb[self._current] = peak_rss_mb()
            self._current = None
