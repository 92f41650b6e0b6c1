"""Wall time of the default sweep and of its --quick smoke run, end to end through the CLI.

Targets (issue: core harness): `bench run scenarios/rec.yaml` under 5 minutes on a 2-core machine,
`--quick` under 45 s. Each is timed twice in one fresh results root: cold (empty compile cache, what
a fresh clone pays) and then warm (the cache of the first run reused, what every later run pays).
Run: .venv/bin/python benchmarks/sweep_time.py [--skip-full]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from _common import ROOT, temp_root

TARGETS = {"quick": 45.0, "full": 300.0}


def timed_run(out_root: Path, *extra: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "bench"), "run", "scenarios/rec.yaml", "--out", str(out_root), "--json",
         "--reports-dir", str(out_root), *extra],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-full", action="store_true", help="time only --quick")
    args = parser.parse_args()
    ok = True
    for name, extra in (("quick", ("--quick",)), ("full", ())):
        if name == "full" and args.skip_full:
            continue
        out_root = temp_root("sweep-")
        for cache in ("cold", "warm"):
            elapsed, payload = timed_run(out_root, *extra)
            prepare = sum(c.get("prepare_s") or 0 for c in payload["cells"])
            hits = sum((c.get("info") or {}).get("compile_cache_hits", 0) for c in payload["cells"])
            passed = elapsed < TARGETS[name]
            ok = ok and passed
            print(
                f"{name:>5} {cache}: {elapsed:6.1f} s wall (target < {TARGETS[name]:.0f} s) "
                f"{'PASS' if passed else 'FAIL'}; cells {payload['counts']}; prepare total {prepare:.1f} s; "
                f"compile cache hits {hits}",
                flush=True,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
