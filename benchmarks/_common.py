"""Shared helpers of the benchmark scripts: run a scenario through the real harness in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_scenario_text(text: str, out_root: Path, plugins: tuple[str, ...] = ()) -> list[dict]:
    """Run a scenario given as YAML text; return its journal records."""
    from harness.planning import RunOptions
    from harness.runner import run_scenario
    from harness.scenario import load_scenario_text

    scenario = load_scenario_text(text, source="<benchmark>")
    run = run_scenario(scenario, RunOptions(out_root=out_root, plugins=plugins, command="benchmark"))
    return list(run.records())


def temp_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TMPDIR")))


# A hand-written loop under the conditions the harness's worker sets that are not overhead (thread
# pools sized by the environment, the garbage collector paused while timing), so that bench / this
# loop is the harness's cost alone. ``setup`` defines ``call()``; prints samples/s.
HAND_LOOP = """
import gc, sys, time
sys.path.insert(0, {root!r})
{setup}
end = time.perf_counter() + 0.5
while time.perf_counter() < end:
    call()
gc.collect()
gc.disable()
n = 0
t0 = time.perf_counter()
end = t0 + {seconds}
while time.perf_counter() < end:
    call()
    n += 1
print(n * {batch} / (time.perf_counter() - t0))
"""


def thread_env(threads: int) -> dict[str, str]:
    """This environment with every runtime's thread-pool variable set as the worker sets it."""
    from harness.executors.local import THREAD_ENV_VARS

    return {**os.environ, **{var: str(threads) for var in THREAD_ENV_VARS}}


def hand_loop_sps(setup: str, batch: int, threads: int, seconds: float) -> float:
    """Samples/s of :data:`HAND_LOOP` around ``setup``, in a fresh process of its own."""
    code = HAND_LOOP.format(root=str(ROOT), setup=setup, batch=batch, seconds=seconds)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=thread_env(threads)
    )
    if out.returncode != 0:
        raise RuntimeError(f"hand loop failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])
