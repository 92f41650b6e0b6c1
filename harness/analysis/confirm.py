"""``bench compare --confirm``: measure the cells that look slower again before failing.

The sweep's comparison is only a screen (:func:`harness.analysis.comparison.suspects`). The suspects are
measured again on this machine, one process at a time with the sides alternating (baseline,
candidate, candidate, baseline, ...), so that a machine getting slower or faster during the
re-measurement weighs on both sides alike: the candidate with the candidate's code, the baseline
with the baseline's code, found from the commit its manifest recorded (this checkout when it is
that commit, else a temporary git worktree of it) or given with ``--baseline-code``. Only the
re-measurement, Holm-corrected over the suspects, decides; where the baseline's code cannot be
had, its stored processes stand in.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import environment
from harness.analysis import comparison as cmp
from harness.errors import UsageError
from harness.manifest import Manifest
from harness.pluginmanager import explicit_plugins, registries
from harness.store import RunDir

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Code:
    """Where one side's code comes from: ``path`` None is this checkout; ``available`` False: nowhere."""

    available: bool
    path: Path | None
    how: str


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def _has_commit(commit: str) -> bool:
    try:
        return _git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def code_of(environment_of_run: Mapping[str, Any], explicit: Path | None = None) -> Iterator[Code]:
    """The code a run was measured with, checked out here if need be (removed afterwards)."""
    if explicit is not None:
        if not any((explicit / "harness" / where).is_file() for where in ("executors/worker.py", "worker.py")):
            msg = f"--baseline-code {explicit}: not a bench checkout (there is no harness/executors/worker.py in it)"
            raise UsageError(msg)
        yield Code(True, explicit.resolve(), f"its code from {explicit}")
        return
    git = environment_of_run.get("git") or {}
    commit, dirty = git.get("commit"), bool(git.get("dirty"))
    here = environment.git_commit()
    if not commit and not here.get("commit"):  # an installed package, not a git checkout
        version = environment_of_run.get("packages", {}).get("bench")
        mine = environment.package_versions(("bench",))["bench"]
        if version and version == mine:
            yield Code(True, None, f"this installation (bench {mine}; no git commit to tell more)")
        else:
            yield Code(False, None, f"it ran bench {version}, this is bench {mine}, and neither is a git checkout")
        return
    if commit and commit == here.get("commit") and dirty == bool(here.get("dirty")):
        note = " with uncommitted changes, taken to be the ones measured" if dirty else ""
        yield Code(True, None, f"this checkout (commit {commit[:12]}{note})")
        return
    if commit and not dirty and _has_commit(commit):
        tmp = Path(tempfile.mkdtemp(prefix="bench-code-"))
        checkout = tmp / commit[:12]
        made = _git("worktree", "add", "--detach", str(checkout), commit)
        if made.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            yield Code(False, None, f"git could not check out {commit[:12]}: {made.stderr.strip()}")
            return
        try:
            yield Code(True, checkout, f"its commit {commit[:12]} (a temporary git worktree)")
        finally:
            _git("worktree", "remove", "--force", str(checkout))
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if dirty:
        why = "it ran uncommitted changes, which are not here"
    elif commit:
        why = f"its commit {commit[:12]} is not in this repository (fetch it, or give --baseline-code)"
    else:
        why = "it recorded no git commit"
    yield Code(False, None, why)


def _scenario_for_remeasure(scenario: Any, repeats: int) -> Any:
    """The stored scenario with ``repeats`` repeats and no fidelity check: only speed is measured again."""
    return scenario.model_copy(update={
        "measurement": scenario.measurement.model_copy(update={"repeats": repeats}),
        "fidelity": scenario.fidelity.model_copy(update={"samples": 0}),
    })  # fmt: skip


def confirm(
    result: cmp.Comparison,
    baseline: Path,
    candidate: Path,
    *,
    plugins: tuple[str, ...],
    repeats: int = cmp.CONFIRM_REPEATS,
    screen_alpha: float = cmp.SCREEN_ALPHA,
    baseline_code: Path | None = None,
    allow_env_mismatch: bool = False,
    reporter: Any = None,
) -> cmp.Comparison:
    """Measure ``result``'s suspects again and let that measurement decide them (in place)."""
    from harness import planning, runner

    ids = cmp.suspects(result, screen_alpha)
    how: dict[str, Any] = {"repeats": repeats, "screen_alpha": screen_alpha, "baseline": "", "runs": []}
    if not ids:
        cmp.apply_confirmation(result, [], how)
        return result
    base_run, cand_run = RunDir.open(baseline), RunDir.open(candidate)
    regs = registries(explicit_plugins(plugins), autoload=None)
    packages = (*cmp.CORE_RUNTIME_PACKAGES, *regs.runtime_packages())
    here = environment.fingerprint(regs.runtime_packages())
    diffs = cmp.env_differences(cand_run.manifest().environment, here, packages)
    if diffs and not allow_env_mismatch:
        raise UsageError(
            "--confirm measures again on this machine, which is not the candidate's: " + "; ".join(diffs)
            + " (run the comparison where the candidate ran, or pass --allow-env-mismatch)"
        )  # fmt: skip
    scenario = _scenario_for_remeasure(runner.stored_scenario(cand_run, regs), repeats)
    out_root = cand_run.path.parent / ".confirm"
    with (
        code_of(cand_run.manifest().environment) as cand_code,
        code_of(base_run.manifest().environment, baseline_code) as base_code,
    ):
        if not cand_code.available:
            raise UsageError(f"--confirm cannot measure the candidate {candidate} again: {cand_code.how}")
        sides = [("candidate", cand_code)] + ([("baseline", base_code)] if base_code.available else [])
        cells = planning.select_cells(scenario, planning.RunOptions(cell_ids=set(ids)))
        planned = [p for p in planning.plan(cells, regs) if p.skip_reason is None]
        runs: dict[str, tuple[RunDir, Manifest]] = {}
        for name, code in sides:
            options = planning.RunOptions(
                out_root=out_root / name, plugins=plugins, cell_ids=set(ids), code_path=code.path,
                command=f"bench compare --confirm {baseline} {candidate} ({name})",
            )  # fmt: skip
            run = runner.create_run(scenario, options)
            runs[name] = (run, run.manifest())
        reporter = reporter or runner.SilentReporter()
        reporter.start(runs["candidate"][0], repeats * len(planned) * len(sides))
        # process by process, the sides alternating (baseline, candidate, candidate, baseline, ...):
        # a machine that drifts, or changes pace for minutes, weighs on both alike
        for repeat in range(repeats):
            for i, p in enumerate(planned):
                order = sides if (repeat + i) % 2 else sides[::-1]
                for name, _ in order:
                    run, manifest = runs[name]
                    runner.measure_one(run, p, repeat, manifest, reporter)
        for name, (run, _) in runs.items():  # the progress shown ends with the candidate's run
            runner.finish(run, reporter if name == "candidate" else runner.SilentReporter())
    how["runs"] = [str(run.path) for run, _ in runs.values()]
    if base_code.available:
        how["baseline"] = f"baseline: {base_code.how}; candidate: {cand_code.how}"
    else:
        how["baseline"] = (
            f"the baseline's stored processes (it could not be measured again: {base_code.how}); "
            f"candidate: {cand_code.how}"
        )
    stored = cmp.records_by_cell(base_run)
    again = {name: (run, cmp.records_by_cell(run)) for name, (run, _) in runs.items()}  # each journal read once
    if not base_code.available:
        again["baseline"] = (base_run, stored)
    sides_by_cell, missing = [], []
    for cid in ids:
        (b_run, b_all), (c_run, c_all) = again["baseline"], again["candidate"]
        b_recs, c_recs = b_all.get(cid, []), c_all.get(cid, [])
        first = stored[cid][0]  # every suspect was measured in the baseline
        gone = cmp.not_measured(cid, first["label"], b_recs, c_recs)
        if gone is not None:  # one side failed again: nothing to compare, and why
            missing.append(gone)
            continue
        sides_by_cell.append((cid, first["label"], int(first["config"]["batch_size"]),
                              cmp.side_of(b_run, cmp.ok(b_recs)), cmp.side_of(c_run, cmp.ok(c_recs))))  # fmt: skip
    confirmed = cmp.judge_cells(sides_by_cell, result.threshold, result.alpha)
    cmp.apply_confirmation(result, confirmed, how, missing)
    return result
