from __future__ import annotations

import time

from harness.measure import memory, noise


def test_phase_peaks_reset_between_phases() -> None:
    peaks = memory.PhasePeaks()
    assert peaks.resettable, "this kernel allows clear_refs; the notes say so"
    peaks.start("big")
    block = bytearray(200 * 1024 * 1024)
    block[::4096] = b"\x01" * len(block[::4096])
    del block
    peaks.start("small")
    small = bytearray(1024)
    peaks.stop()
    assert peaks.peaks_mb["big"] is not None and peaks.peaks_mb["small"] is not None
    assert peaks.peaks_mb["big"] - peaks.peaks_mb["small"] > 150
    assert small is not None


def test_noise_counts_other_processes_not_our_own_work() -> None:
    import subprocess
    import sys

    start = noise.sample()
    end_busy = time.perf_counter() + 0.5
    while time.perf_counter() < end_busy:  # our own CPU: must not count as noise
        pass
    quiet = noise.between(start, noise.sample())
    assert quiet.other_fraction is not None

    start = noise.sample()
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend=time.time()+0.8\nwhile time.time()<end: pass"])
    spinner.wait()
    busy = noise.between(start, noise.sample())
    assert busy.other_cpu_s is not None and busy.other_cpu_s >= 0.5
    assert busy.other_fraction > quiet.other_fraction
