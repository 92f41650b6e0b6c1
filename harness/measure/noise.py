"""The noise guard: how much of the machine other processes used around and during a cell's window.

A 2-thread runtime on a 2-CPU machine does not slow down in proportion to a neighbour: its threads
meet at barriers, and one preempted thread stalls them all (dlrm-small measured 22-30x slower while
another process used about one core). So a window is only a measurement of a quiet machine when
nothing else ran during it; bench checks three times:

- before the window, :func:`wait_for_quiet` (in the worker, before warm-up) waits up to
  ``quiet_wait_s`` for a probe in which others used at most the threshold;
- over the window, :func:`between` (in the worker) gives others' share of the whole window;
- during the window, :class:`Watch` (in the parent, which only waits while a cell runs, so its
  sampling costs the measured process nothing) takes others' share of every sub-window, so a burst
  the whole-window average hides is still seen.

"Others" is everything but the cell's own processes (and, for the parent's watch, the parent): the
machine's busy time from /proc/stat (user, nice, system, irq, softirq and steal: a VM neighbour's
steal counts as interference) minus the processes' own utime + stime. A share is of the machine's
whole CPU time over the same interval (busy + idle ticks of every CPU), so it lies in [0, 1].
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
#: the watch's sub-window: long enough for the 100 Hz tick accounting to resolve a few percent of
#: a 2-CPU machine (50 ticks), short enough that a burst of a fraction of a second shows
SUBWINDOW_S = 0.25
#: the probe of :func:`wait_for_quiet`, and the pause between probes
QUIET_PROBE_S = 0.25


@dataclass(frozen=True)
class MachineTicks:
    """/proc/stat's first line: every CPU's ticks so far."""

    busy: int
    total: int
    steal: int


def machine_ticks() -> MachineTicks | None:
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    values = [int(v) for v in fields[1:9]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return MachineTicks(busy, busy + values[3] + values[4], values[7])


def process_ticks(pids: Iterable[int | str]) -> int:
    """utime + stime of the processes (all their threads), ticks; a process gone counts 0."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        after_comm = text.rsplit(")", 1)[1].split()
        total += int(after_comm[11]) + int(after_comm[12])
    return total


def _share(other: int, total: int) -> float | None:
    return min(1.0, max(0, other) / total) if total > 0 else None


@dataclass(frozen=True)
class NoiseSample:
    machine: MachineTicks | None
    own: int


@dataclass(frozen=True)
class Noise:
    """What other processes used during a window."""

    other_cpu_s: float | None
    #: others' share of the machine's CPU time over the window: 0 = ours alone, 1 = every CPU busy elsewhere
    other_fraction: float | None
    steal_fraction: float | None = None


def sample(pids: Iterable[int | str] = ("self",)) -> NoiseSample:
    return NoiseSample(machine_ticks(), process_ticks(pids))


def between(start: NoiseSample, end: NoiseSample) -> Noise:
    if start.machine is None or end.machine is None:
        return Noise(None, None)
    total = end.machine.total - start.machine.total
    other = (end.machine.busy - start.machine.busy) - (end.own - start.own)
    steal = end.machine.steal - start.machine.steal
    return Noise(max(0, other) / _TICKS, _share(other, total), _share(steal, total))


@dataclass(frozen=True)
class Quiet:
    """How the wait for a quiet machine before a window went."""

    waited_s: float
    #: others' share in the last probe (None where /proc/stat is unreadable)
    last_fraction: float | None
    quiet: bool


def wait_for_quiet(
    limit_s: float, threshold: float, pids: Callable[[], Iterable[int | str]] = lambda: ("self",)
) -> Quiet:
    """Probe until others use at most ``threshold`` of the machine for one probe, or ``limit_s`` passes."""
    started = time.monotonic()
    while True:
        first = sample(pids())
        time.sleep(QUIET_PROBE_S)
        found = between(first, sample(pids())).other_fraction
        waited = time.monotonic() - started
        if found is None or found <= threshold or waited >= limit_s:
            return Quiet(waited, found, found is None or found <= threshold)


@dataclass
class Watch:
    """Others' share of the machine in each sub-window of a measured window, seen from the parent.

    ``start`` when the worker says its window opens, ``poll`` whenever the parent wakes (it returns
    how long until the next sub-window is due, for the parent's wait), ``stop`` when the window
    closes. ``pids`` names the cell's processes at each sample; the parent's own time is left out too.
    """

    threshold: float
    pids: Callable[[], Iterable[int]]
    subwindow_s: float = SUBWINDOW_S
    shares: list[float] = field(default_factory=list)
    _last: NoiseSample | None = None
    _due: float = 0.0

    @property
    def active(self) -> bool:
        return self._last is not None

    def _sample(self) -> NoiseSample:
        pids = [*self.pids(), os.getpid()]
        return sample(pids)

    def start(self) -> None:
        self._last = self._sample()
        self._due = time.monotonic() + self.subwindow_s

    def poll(self) -> float | None:
        """Take a sub-window if one is due; seconds until the next (None when not watching)."""
        if self._last is None:
            return None
        now = time.monotonic()
        if now >= self._due:
            self._close_subwindow()
            self._due = now + self.subwindow_s
        return max(0.0, self._due - time.monotonic())

    def _close_subwindow(self) -> None:
        current = self._sample()
        assert self._last is not None
        share = between(self._last, current).other_fraction
        if share is not None:
            self.shares.append(share)
        self._last = current

    def stop(self) -> None:
        if self._last is not None and time.monotonic() >= self._due - self.subwindow_s / 2:
            self._close_subwindow()  # the last, partial sub-window, if at least half long
        self._last = None

    def fields(self) -> dict[str, Any]:
        """The result fields (harness.metrics documents them)."""
        disturbed = [s for s in self.shares if s > self.threshold]
        return {
            "noise_subwindows": len(self.shares),
            "noise_disturbed_subwindows": len(disturbed),
            "noise_max_subwindow_fraction": max(self.shares) if self.shares else None,
        }


def _read_first(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def machine_state(probe_s: float = 0.5) -> dict[str, Any]:
    """What the machine was doing, recorded with a run and shown by ``bench doctor``: others' and the
    hypervisor's (steal) share of the CPUs over a short probe, the load averages, and the frequency
    governor and clocks of cpu0 where the kernel exposes them (null where it does not)."""
    start = sample(())
    time.sleep(probe_s)
    probe = between(start, sample(()))
    try:
        load: list[float] | None = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        load = None
    freq = "/sys/devices/system/cpu/cpu0/cpufreq/"

    def mhz(name: str) -> float | None:
        text = _read_first(freq + name)
        return int(text) / 1000 if text and text.isdigit() else None

    return {
        "others_fraction": probe.other_fraction,
        "steal_fraction": probe.steal_fraction,
        "probe_s": probe_s,
        "loadavg": load,
        "governor": _read_first(freq + "scaling_governor"),
        "cpu_mhz": {"current": mhz("scaling_cur_freq"), "min": mhz("scaling_min_freq"), "max": mhz("scaling_max_freq")},
    }
