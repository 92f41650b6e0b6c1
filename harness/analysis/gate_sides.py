"""Where each side of ``bench gate`` gets its code: the candidate is this checkout (refused with
uncommitted changes to what the workers import, unless allowed); the baseline a git ref checked out in
a temporary worktree (:func:`harness.analysis.confirm.code_of`), the bench installed in this Python
environment, or a folder; and the cheap check, before anything runs, that the baseline's code has
the scenario's model and backends."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import environment
from harness.analysis.confirm import REPO, Code, code_of
from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.cells import Cell
    from harness.scenario import Scenario


def dirty_paths(repo: Path) -> list[str]:
    """Uncommitted changes (untracked files too) under ``harness/`` and ``plugins/`` of a git checkout:
    what the workers import."""
    out = subprocess.run(["git", "status", "--porcelain", "--", "harness", "plugins"], cwd=repo,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    return [line[3:] for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def resolve_ref(ref: str) -> str:
    """The commit a git ref (branch, tag, commit) names in this repository, or a UsageError."""
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--baseline {ref}: git could not be asked ({exc})") from exc
    if out.returncode != 0 or not out.stdout.strip():
        raise UsageError(
            f"--baseline {ref}: no such commit, branch or tag in {REPO} (fetch it: a shallow clone has no history; "
            "or give --baseline-code DIR)"
        )
    return out.stdout.strip()


def installed_code() -> tuple[Path, str]:
    """Where the bench installed in this Python environment lives (imported without PYTHONPATH, from
    outside any checkout), and its version."""
    probe = (
        "import harness, importlib.metadata as m, sys; sys.stdout.write(harness.__file__ + '\\n' + m.version('bench'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONSAFEPATH": "1"}
    try:
        out = subprocess.run([sys.executable, "-c", probe], cwd=tempfile.gettempdir(), env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--baseline installed: could not ask {sys.executable} ({exc})") from exc
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        raise UsageError(f"--baseline installed: no bench is installed in {sys.executable}'s environment ({tail})")
    where, version = out.stdout.split("\n", 1)
    return Path(where).resolve().parents[1], version.strip()


@dataclass(frozen=True)
class Sides:
    """Where each side's code is (None: this checkout, as imported here) and what to call it."""

    baseline: Code
    baseline_name: str
    baseline_commit: str | None
    candidate_path: Path | None
    candidate_name: str
    candidate_commit: str | None
    candidate_dirty: bool


def _candidate(allow_dirty: bool) -> tuple[Path | None, str, str | None, bool]:
    """This checkout as the candidate: (code path, name, commit, dirty); refused with uncommitted
    changes to what the workers import unless ``allow_dirty``, since the result would name no commit."""
    here = environment.git_commit(REPO)
    commit = here.get("commit")
    if not commit:
        version = environment.package_versions(("bench",))["bench"]
        return None, f"this installation (bench {version}, {REPO}; no git commit)", None, False
    dirty = dirty_paths(REPO)
    if dirty and not allow_dirty:
        listed = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise UsageError(
            f"this checkout has uncommitted changes to harness/ or plugins/ ({listed}): the result would name no "
            "commit; commit them, or pass --allow-dirty"
        )
    note = ", with uncommitted changes" if dirty else ""
    return REPO, f"this checkout (commit {commit[:12]}{note})", commit, bool(dirty)


@contextmanager
def sides_of(baseline: str | None, baseline_code: Path | None, allow_dirty: bool) -> Iterator[Sides]:
    """Both sides' code: the baseline a git ref (checked out in a temporary git worktree when it is a
    commit other than this checkout's, removed afterwards), ``installed``, or ``baseline_code``."""
    cand_path, cand_name, cand_commit, cand_dirty = _candidate(allow_dirty)
    if baseline_code is not None:
        with code_of({}, baseline_code) as code:
            commit = environment.git_commit(baseline_code).get("commit")
            name = f"the code in {baseline_code}"
            yield Sides(code, name, commit, cand_path, cand_name, cand_commit, cand_dirty)
        return
    if baseline == "installed":
        root, version = installed_code()
        code = Code(True, root, f"the installed bench {version} ({root})")
        commit = environment.git_commit(root).get("commit")
        yield Sides(code, f"installed (bench {version})", commit, cand_path, cand_name, cand_commit, cand_dirty)
        return
    assert baseline is not None
    commit = resolve_ref(baseline)
    with code_of({"git": {"commit": commit, "dirty": False}}) as code:
        if not code.available:
            raise UsageError(f"--baseline {baseline}: {code.how}")
        name = baseline if baseline.startswith(commit[:7]) else f"{baseline} ({commit[:12]})"
        yield Sides(code, name, commit, cand_path, cand_name, cand_commit, cand_dirty)


def _listed(code: Path, what: str, plugins: Sequence[str]) -> dict[str, str]:
    """``bench list backends|models`` as the code at ``code`` answers it: name -> its line."""
    args = [sys.executable, "-m", "harness", *(f"--plugin={p}" for p in plugins), "list", what]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])),
           "PYTHONSAFEPATH": "1"}  # fmt: skip
    try:
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"the baseline's code ({code}) could not list its {what}: {exc}") from exc
    if out.returncode != 0:
        tail = " ".join(out.stderr.strip().splitlines()[-2:]) or f"exit {out.returncode}"
        raise UsageError(f"the baseline's code ({code}) could not list its {what}: {tail}")
    return {line.split()[0]: line for line in out.stdout.splitlines() if line.strip() and not line[0].isspace()}


def check_baseline_can_run(code: Path, scenario: Scenario, cells: Sequence[Cell], plugins: Sequence[str]) -> None:
    """The cheap check that the baseline's code can run these cells: its ``bench list`` has the
    scenario's model and every backend of the cells, available here (about a second each)."""
    models = _listed(code, "models", plugins)
    if scenario.model.name not in models:
        raise UsageError(
            f"the baseline's code has no model '{scenario.model.name}' (it has {', '.join(models) or 'none'}): it "
            "cannot run this scenario"
        )
    backends = _listed(code, "backends", plugins)
    for name in dict.fromkeys(cell.backend for cell in cells):
        if name not in backends:
            raise UsageError(
                f"the baseline's code has no backend '{name}' (it has {', '.join(backends) or 'none'}): it cannot "
                "run this scenario"
            )
        if "unavailable" in backends[name]:
            why = backends[name].split("unavailable", 1)[1].lstrip(": ")
            raise UsageError(f"the baseline's backend '{name}' is unavailable here: {why}")
