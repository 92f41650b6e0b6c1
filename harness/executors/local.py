"""Run each cell in its own worker process, with a hard timeout and an optional memory cap.

The cell is the worker's whole process tree (:mod:`harness.executors.containment`): a cgroup where
the kernel allows one, whose memory cap the kernel enforces, else the tree of descendants. The parent
blocks in ``select`` on the worker's result pipe (it never spins): it wakes every ``MEMORY_POLL_S``
to sum the tree's resident sets under a cap it enforces itself, every ``PEAK_POLL_S`` for the tree's
peak where no cgroup keeps it, otherwise when the worker writes, the deadline passes or at most
``EXIT_POLL_S`` to see whether the worker is still there. Before a timeout or a memory kill the
worker writes every thread's stack to its log. Output of the worker goes to the cell's log file,
whose tail is kept with any failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.executors.containment import CellProcesses, Usage
from harness.executors.worker import RESULT_FD_ENV, STACKS_SIGNAL
from harness.measure import noise
from harness.records import Job, ReferenceJob

#: memory sampling under a cap the parent enforces (no cgroup), and for the peak alone
MEMORY_POLL_S = 0.2
PEAK_POLL_S = 1.0
#: how often a silent worker is checked for having exited while a descendant holds its result pipe
EXIT_POLL_S = 1.0
#: the longest wait for a worker's stacks to reach its log before it is killed
STACK_DUMP_WAIT_S = 1.0
STDERR_TAIL_CHARS = 4000
#: environment variables that size the runtimes' thread pools, set to the cell's thread count
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int | None = None


def _tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chars))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


#: the module a worker process runs
WORKER_MODULE = "harness.executors.worker"


def worker_module(code: Path | None) -> str:
    """The worker's module in a checkout of bench (``--confirm`` measures a baseline with its own
    code): ``harness.worker`` in checkouts older than the executors package."""
    if code is None or (code / "harness" / "executors" / "worker.py").is_file():
        return WORKER_MODULE
    return "harness.worker"


def run_cell(
    job: Job | ReferenceJob,
    *,
    limits: Limits,
    log_path: Path,
    env: Mapping[str, str],
    on_event: Callable[[dict[str, Any]], None] | None = None,
    module: str = WORKER_MODULE,
) -> dict[str, Any]:
    """Run ``job`` in a fresh worker process group; always return a result record with a ``status``.
    Every process the worker starts is part of the cell: counted in its memory, killed at its end."""
    read_fd, write_fd = os.pipe()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with CellProcesses(limits.memory_mb) as cell:
        worker_env = {
            **os.environ,
            **env,
            **cell.worker_env(),
            RESULT_FD_ENV: str(write_fd),
            "PYTHONUNBUFFERED": "1",
        }
        started = time.monotonic()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=worker_env,
                pass_fds=(write_fd,),
                start_new_session=True,  # its own process group, and no terminal's signals
            )
        cell.started(proc)
        os.close(write_fd)
        killed_for: str | None = None
        result: dict[str, Any] | None = None
        try:
            assert proc.stdin is not None
            try:
                proc.stdin.write(job.to_json().encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            # others' share of the machine in each sub-window of the measured window, from here
            watch = noise.Watch(job.noise_threshold, cell.tree_pids) if isinstance(job, Job) else None
            result, killed_for = _wait(proc, read_fd, limits, started, on_event, cell, log_path, watch)
            if result is not None and watch is not None:
                _add_watch(result, watch)
        except BaseException:  # interrupted parent: take the whole cell down with it
            cell.kill()
            raise
        finally:
            os.close(read_fd)
            try:  # a worker that hangs after its result (a runtime's exit handler) is not waited for forever
                proc.wait(timeout=max(5.0, started + limits.timeout_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                cell.kill()
                proc.wait()
        usage = cell.finish()  # what the cell started dies with it, ok or not
    elapsed = time.monotonic() - started
    return _finish(result, proc.returncode, killed_for, limits, log_path, elapsed, usage)


def _wait(
    proc: subprocess.Popen[bytes],
    read_fd: int,
    limits: Limits,
    started: float,
    on_event: Callable[[dict[str, Any]], None] | None,
    cell: CellProcesses,
    log_path: Path,
    watch: noise.Watch | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    deadline = started + limits.timeout_s
    buffer = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _stop(proc, cell, log_path, f"no result within the hard timeout of {limits.timeout_s:g} s")
            return None, "timeout"
        poll_s = cell.poll_interval_s(MEMORY_POLL_S, PEAK_POLL_S)
        watch_s = watch.poll() if watch is not None else None
        wait_s = min(remaining, poll_s or EXIT_POLL_S, EXIT_POLL_S, EXIT_POLL_S if watch_s is None else watch_s)
        ready, _, _ = select.select([read_fd], [], [], wait_s)
        if poll_s is not None:
            mb = cell.sample_mb()
            if limits.memory_mb and not cell.kernel_caps_memory and mb > limits.memory_mb:
                _stop(proc, cell, log_path, f"resident memory {mb:.0f} MiB passed the cap of {limits.memory_mb} MiB")
                return None, "memory"
        if not ready:
            # a descendant holding the result pipe open keeps its end from closing: look at the worker
            if proc.poll() is not None and not select.select([read_fd], [], [], 0)[0]:
                return None, None
            continue
        chunk = os.read(read_fd, 1 << 20)
        if not chunk:  # worker closed its end: it exited (or crashed) without a result
            return None, None
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if message.get("event") == "result":
                return message["result"], None
            if message.get("event") == "contained":
                cell.confirm_joined()
                continue
            if watch is not None and message.get("event") == "phase":
                if message.get("phase") == "measure":
                    watch.start()
                elif message.get("phase") == "measured":
                    watch.stop()
            if on_event:
                on_event(message)


def _add_watch(result: dict[str, Any], watch: noise.Watch) -> None:
    """The sub-windows the parent saw: a disturbed one makes the window noisy, whatever its average."""
    watch.stop()
    if result.get("status") != "ok":
        return
    result.update(watch.fields())
    if result["noise_disturbed_subwindows"]:
        result["noisy"] = True


def _stop(proc: subprocess.Popen[bytes], cell: CellProcesses, log_path: Path, why: str) -> None:
    """Have the worker write every thread's stack to its log, then kill the whole cell."""
    _dump_stacks(proc, log_path, why)
    cell.kill()


def _dump_stacks(proc: subprocess.Popen[bytes], log_path: Path, why: str) -> None:
    """The worker's faulthandler answers STACKS_SIGNAL from its signal handler, even while Python is
    stuck in C: wait until the log stops growing (bounded), so the tail says where it was."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError), open(log_path, "ab") as log:
        log.write(f"\nbench: {why}; stopping the cell. The worker's threads:\n".encode())
    size = _size(log_path)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, STACKS_SIGNAL)
    deadline = time.monotonic() + STACK_DUMP_WAIT_S
    grew_at: float | None = None
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = _size(log_path)
        if now > size:
            size, grew_at = now, time.monotonic()
        elif grew_at is not None and time.monotonic() - grew_at >= 0.1:
            return


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _finish(
    result: dict[str, Any] | None,
    returncode: int,
    killed_for: str | None,
    limits: Limits,
    log_path: Path,
    elapsed: float,
    usage: Usage,
) -> dict[str, Any]:
    tail = _tail(log_path)
    if usage.oom_kills and (result or {}).get("status") != "skipped":
        # the kernel killed inside the cell's cgroup: the cell went over its cap, whatever the worker
        # went on to report (a runtime may survive its helper's death, or fail on it)
        cap = f" at its memory cap of {limits.memory_mb} MiB" if limits.memory_mb else ""
        record: dict[str, Any] = {
            "status": "oom",
            "reason": f"the kernel's OOM killer killed {usage.oom_kills} of the cell's processes{cap} "
            f"({usage.accounting})",
        }
    elif result is not None:
        record = dict(result)
        if record.get("status") not in ("ok", "skipped"):
            record["stderr_tail"] = tail
    elif killed_for == "timeout":
        record = {"status": "timeout", "reason": f"no result within the hard timeout of {limits.timeout_s:g} s"}
    elif killed_for == "memory":
        record = {
            "status": "oom",
            "reason": f"resident memory {usage.peak_mb or 0:.0f} MiB passed the cap of {limits.memory_mb} MiB",
        }
    elif returncode < 0:
        sig = -returncode
        if sig == signal.SIGKILL:
            record = {
                "status": "oom",
                "reason": "killed by SIGKILL without a harness kill: most likely the kernel OOM killer",
            }
        else:
            record = {"status": "crashed", "reason": f"worker died by {_signal_name(sig)}"}
    else:
        record = {"status": "failed", "reason": f"worker exited with code {returncode} and no result"}
    if record["status"] not in ("ok", "skipped") and "stderr_tail" not in record:
        record["stderr_tail"] = tail
    record["exit_code"] = returncode
    record["elapsed_s"] = elapsed
    record["memory_accounting"] = usage.accounting
    record["peak_tree_mb"] = usage.peak_mb
    return record
