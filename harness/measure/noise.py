"""The noise guard: how much CPU other processes used while a cell was measured.

From /proc/stat (all CPUs' busy time) minus this process's own CPU time (/proc/self/stat, all
threads). The difference is what everything else on the machine ran, the harness's parent included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _system_busy_ticks() -> int | None:
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest is already inside user)
    values = [int(v) for v in fields[1:9]]
    return values[0] + values[1] + values[2] + values[5] + values[6] + values[7]


def _self_ticks() -> int | None:
    try:
        text = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    after_comm = text.rsplit(")", 1)[1].split()
    return int(after_comm[11]) + int(after_comm[12])  # utime, stime


@dataclass(frozen=True)
class NoiseSample:
    busy: int | None
    own: int | None


@dataclass(frozen=True)
class Noise:
    """CPU used by other processes during a window."""

    other_cpu_s: float | None
    #: other_cpu_s / (window seconds x CPUs): 0 = the machine was ours, 1 = all CPUs busy elsewhere
    other_fraction: float | None


def sample() -> NoiseSample:
    return NoiseSample(_system_busy_ticks(), _self_ticks())


def between(start: NoiseSample, end: NoiseSample, window_s: float, cpus: int | None = None) -> Noise:
    if None in (start.busy, start.own, end.busy, end.own) or window_s <= 0:
        return Noise(None, None)
    assert start.busy is not None and end.busy is not None and start.own is not None and end.own is not None
    other_ticks = max(0, (end.busy - start.busy) - (end.own - start.own))
    other_s = other_ticks / _TICKS
    cpus = cpus or os.cpu_count() or 1
    return Noise(other_s, other_s / (window_s * cpus))
