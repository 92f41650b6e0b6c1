"""The noise guard with real neighbours: CPU hogs started by the test, real worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import bench, fake_scenario, run_dirs
from harness.measure import noise

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fake_plugin")]

HOG = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass"


@contextmanager
def hogs(n: int = 2, seconds: float = 60) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen([sys.executable, "-c", HOG.format(s=seconds)]) for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_noise_fraction_is_a_share_of_the_machine_even_with_more_hogs_than_cpus() -> None:
    """Others' share is of every CPU's time over the same ticks: it cannot pass 1 (it reached 1.19)."""
    with hogs(3):
        start = noise.sample()
        import time

        time.sleep(1.0)
        found = noise.between(start, noise.sample())
    assert found.other_fraction is not None and 0.5 < found.other_fraction <= 1.0
    assert found.steal_fraction is not None and 0 <= found.steal_fraction <= 1


def _scenario(tmp_path: Path, extra: str) -> Path:
    scenario = fake_scenario(tmp_path, batches="[1]", min_s=0.6, max_s=0.8)
    text = scenario.read_text().replace("  quiet_wait_s: 0\n", "").replace("  max_attempts: 1\n", "")
    text = text.replace("  noise_threshold: 1.0\n", "")
    text = text.replace("warmup_s: 0.05", "warmup_s: 0.05\n" + extra)
    scenario.write_text(text.replace("fidelity:", "budgets: {p99_ms: 100}\nfidelity:"))
    return scenario


def test_a_cell_disturbed_in_every_attempt_is_untrusted_and_every_consumer_says_so(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "  quiet_wait_s: 0.3\n  max_attempts: 2")
    with hogs(2):
        out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--json", "--no-report")
    assert out.returncode == 0, out.stderr
    (cell,) = json.loads(out.stdout)["cells"]
    assert cell["attempts"] == 2 and cell["trusted"] is False and cell["noisy"] is True
    assert "busy in all 2 attempt(s)" in cell["untrusted_reason"]
    assert cell["quiet_at_start"] is False and cell["quiet_wait_s"] >= 0.3
    assert cell["noise_subwindows"] >= 2 and cell["noise_disturbed_subwindows"] >= 1
    assert 0 < cell["noise_max_subwindow_fraction"] <= 1
    # budgets: not judged
    verdict = cell["budgets"]["p99_ms"]
    assert verdict["ok"] is None and verdict["why"].startswith("not judged:")
    # compare: inconclusive, with the reason
    (run,) = run_dirs(tmp_path / "r")
    compared = bench("compare", str(run), str(run), "--format", "json")
    (judged,) = json.loads(compared.stdout)["cells"]
    assert judged["verdict"] == "inconclusive" and "busy machine" in judged["note"]
    manifest = json.loads((run / "manifest.json").read_text())
    state = manifest["machine_state"]
    assert set(state) >= {"others_fraction", "steal_fraction", "loadavg", "governor", "cpu_mhz"}


def test_the_worker_waits_for_a_quiet_machine_before_its_window(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "  quiet_wait_s: 20\n  max_attempts: 1")
    with hogs(2, seconds=1.5):  # a neighbour that stops: the window starts after it
        out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--json", "--no-report")
    assert out.returncode == 0, out.stderr
    (cell,) = json.loads(out.stdout)["cells"]
    assert cell["quiet_at_start"] is True
    assert 0.2 <= cell["quiet_wait_s"] < 20


@dataclass
class _Job:
    attempt: int = 0


def test_a_retry_that_fails_never_replaces_the_measurement_it_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy machine disturbs the window and then, as often, times the retry out: the disturbed
    measurement is kept, untrusted, saying why, rather than the timeout (whose noise fields, absent,
    read as the quietest)."""
    from harness import runner

    outcomes = iter([
        {"status": "ok", "noisy": True, "noise_fraction": 0.4, "throughput_sps": 900.0},
        {"status": "timeout", "reason": "no result within 30 s"},
    ])  # fmt: skip
    monkeypatch.setattr(runner, "run_cell", lambda job, **kwargs: dict(next(outcomes)))
    monkeypatch.setattr(runner, "ATTEMPT_BACKOFF_S", 0.0)
    kept = runner.measure_attempts(
        cast("Any", _Job()), limits=cast("Any", None), log_path=Path("unused"), env={}, max_attempts=3,
        noise_threshold=0.1,
    )  # fmt: skip
    assert (kept["status"], kept["throughput_sps"], kept["attempts"], kept["trusted"]) == ("ok", 900.0, 2, False)
    assert kept["untrusted_reason"].startswith(
        "the machine was busy in every attempt that measured (attempt 2 timeout)"
    )
