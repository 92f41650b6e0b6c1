"""What keeps a run honest beyond the store: the files its numbers depend on, hashed when it starts
and checked when it resumes, and a full disk told apart from a cell's own failure."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import BenchError, UsageError
from harness.pluginmanager import Registries
from harness.store import RESERVE_BYTES, RunDir

if TYPE_CHECKING:
    from harness.scenario import Scenario


#: what a worker's failure says when the disk filled up under it (the cell is then run again on resume)
_DISK_FULL_MARKERS = ("No space left on device", "[Errno 28]", "Disk quota exceeded", "[Errno 122]")
#: a failed cell on a disk with less than this left is taken as failed for want of space
DISK_NEARLY_FULL_BYTES = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_hashes(scenario: Scenario, regs: Registries) -> dict[str, str]:
    """sha256 of every file a run's numbers depend on, by absolute path: the scenario file and the
    files its model reads (``Model.input_files``, its inputs file among them)."""
    from harness.input_data import build_model

    files = [Path(os.path.abspath(scenario.source_path))] if scenario.source_path else []
    model = build_model(regs.models.get(scenario.model.name), scenario.model.options, scenario.model.inputs)
    files += [Path(os.path.abspath(f)) for f in model.input_files()]
    return {str(path): _sha256(path) for path in files if path.is_file()}


def check_inputs(run: RunDir, allow_changed: bool, warn: Callable[[str], None]) -> None:
    """Refuse to resume a run whose model files changed since it started: its finished cells
    measured the old files. ``allow_changed`` goes on and records what changed in the manifest."""
    manifest = run.manifest()
    scenario_path = manifest.scenario.path
    changed: list[dict[str, Any]] = []
    for name, digest in (manifest.inputs or {}).items():
        try:
            now: str | None = _sha256(Path(name))
        except OSError:
            now = None
        if now == digest:
            continue
        if name == scenario_path:  # a resume runs the scenario stored in the manifest, not the file
            warn(f"{name} changed since the run started; the resume runs the scenario as stored in {run.manifest_path}")
            continue
        changed.append({"path": name, "sha256_before": digest, "sha256_now": now, "at": time.time()})
    if not changed:
        return
    what = "; ".join(
        f"{c['path']}: " + ("missing now" if c["sha256_now"] is None else
                             f"sha256 {c['sha256_before'][:12]}... at the start, {c['sha256_now'][:12]}... now")
        for c in changed
    )  # fmt: skip
    if not allow_changed:
        msg = (
            f"{run.path}: a model file changed since the run started ({what}); its finished cells measured the old "
            "file, so finishing it would mix two models in one run. Restore the file, or start a new run, or pass "
            "--allow-changed-inputs to finish it anyway (recorded in the manifest)"
        )
        raise UsageError(msg)
    warn(f"finishing {run.path} with changed model files ({what}); recorded in its manifest as changed_inputs")
    run.update_manifest(changed_inputs=[*(manifest.changed_inputs or []), *changed])


def check_machine(run: RunDir, allow_changed: bool, warn: Callable[[str], None]) -> None:
    """Refuse to resume a run on a machine other than the one it started on (another CPU model, GPU,
    or number of usable CPUs, as under ``taskset`` or a smaller container): its finished cells measured
    the first one. ``allow_changed`` goes on and records the change in the manifest. The cells still
    run with the threads the run planned."""
    from harness import environment

    manifest = run.manifest()
    if (manifest.settings.executor or {}).get("kind") == "ray":
        return  # its cells ran on the cluster's nodes, each recorded with its own fingerprint
    if not manifest.environment.get("cpu"):
        return  # a run folder without a fingerprint: nothing to compare
    before = environment.machine_of(manifest.environment)
    now = environment.machine_of({"cpu": environment.cpu_info(), "gpus": environment.gpus()})
    if now == before:
        return
    if not allow_changed:
        msg = (
            f"{run.path}: the run started on another machine ({before}) than this one ({now}); its finished cells "
            "measured that one, so finishing it here would mix two machines in one run. Resume it there, or start a "
            "new run, or pass --allow-changed-inputs to finish it anyway (recorded in the manifest)"
        )
        raise UsageError(msg)
    warn(f"finishing {run.path} on another machine ({now}; it started on {before}); recorded in its manifest "
         "as changed_inputs")  # fmt: skip
    change = {"machine_before": before, "machine_now": now, "at": time.time()}
    run.update_manifest(changed_inputs=[*(manifest.changed_inputs or []), change])


def _failed_for_disk_space(run: RunDir, result: dict[str, Any]) -> bool:
    """A cell that failed because the disk is full: its error says so, or (a worker that could not
    even write its traceback) the run's disk has next to nothing left."""
    if result.get("status") in ("ok", "skipped"):
        return False
    text = " ".join(str(result.get(key) or "") for key in ("reason", "stderr_tail", "traceback_tail"))
    if any(marker in text for marker in _DISK_FULL_MARKERS):
        return True
    try:
        return run.disk_free_bytes() < DISK_NEARLY_FULL_BYTES
    except OSError:
        return False


def disk_full_message(run: RunDir, what: str) -> str:
    """What happened, what is kept, how much room to make and how to go on."""
    try:
        state = run.state()
        free_mb = run.disk_free_bytes() / 2**20
        used = sum(f.stat().st_size for f in run.path.rglob("*") if f.is_file() and f.name != ".reserve")
    except (OSError, BenchError):
        return f"{what}; the disk is full under {run.path}: free space, then: bench run --resume {run.path}"
    per_cell = used / max(state.recorded, 1)
    left = max((state.planned or state.recorded) - state.recorded, 0)
    need_mb = max(64.0, (per_cell * left + 2 * used + RESERVE_BYTES) / 2**20)
    of = f"{state.recorded} of {state.planned}" if state.planned is not None else str(state.recorded)
    return (
        f"disk full: {what}. {run.path} has {free_mb:.1f} MiB free; {of} planned cells are kept in its journal and "
        f"no cell was started after this. Free at least {need_mb:.0f} MiB (this run has used about "
        f"{per_cell / 2**20:.1f} MiB per cell), then: bench run --resume {run.path}"
    )
