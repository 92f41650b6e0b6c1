"""Speed of the statistics on large windows: harness.analysis.stats.summarize over 1e6 latencies.

Run: .venv/bin/python benchmarks/stats_speed.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from harness.analysis.stats import summarize


def main() -> int:
    rng = np.random.default_rng(0)
    latencies = rng.lognormal(mean=13.0, sigma=0.3, size=1_000_000).astype(np.int64)
    summarize(latencies[:1000])
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        summarize(latencies, headline=(90.0, 99.0))
        times.append(time.perf_counter() - t0)
    print(f"summarize(1e6 samples): median {statistics.median(times) * 1e3:.1f} ms, min {min(times) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
