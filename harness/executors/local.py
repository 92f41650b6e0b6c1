"""Run each cell in its own worker process group, with a hard timeout and an optional memory cap.

The parent blocks in ``select`` on the worker's result pipe (it never spins): with a memory cap it
wakes every ``MEMORY_POLL_S`` to read the worker's resident set, otherwise only when the worker
writes or the deadline passes. Output of the worker goes to the cell's log file, whose tail is
kept with any failure.
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

from harness.measure.memory import rss_mb
from harness.worker import RESULT_FD_ENV

MEMORY_POLL_S = 0.2
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


def _group_rss_mb(pid: int) -> float:
    """RSS of the worker and its direct children, MiB (0 if gone)."""
    total = rss_mb(pid) or 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        total += rss_mb(int(child)) or 0.0
    return total


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_cell(
    job: Mapping[str, Any],
    *,
    limits: Limits,
    log_path: Path,
    env: Mapping[str, str],
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``job`` in a fresh worker process group; always return a result record with a ``status``."""
    read_fd, write_fd = os.pipe()
    worker_env = {**os.environ, **env, RESULT_FD_ENV: str(write_fd), "PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.worker"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=worker_env,
            pass_fds=(write_fd,),
            start_new_session=True,  # its own process group: a timeout kills everything it started
        )
    os.close(write_fd)
    killed_for: str | None = None
    result: dict[str, Any] | None = None
    peak_seen_mb = 0.0
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        result, killed_for, peak_seen_mb = _wait(proc, read_fd, limits, started, on_event)
    except BaseException:  # interrupted parent: take the worker's whole group down with it
        _kill_group(proc)
        raise
    finally:
        os.close(read_fd)
        try:  # a worker that hangs after its result (a runtime's exit handler) is not waited for forever
            proc.wait(timeout=max(5.0, started + limits.timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
    elapsed = time.monotonic() - started
    return _finish(result, proc.returncode, killed_for, limits, log_path, elapsed, peak_seen_mb)


def _wait(
    proc: subprocess.Popen[bytes],
    read_fd: int,
    limits: Limits,
    started: float,
    on_event: Callable[[dict[str, Any]], None] | None,
) -> tuple[dict[str, Any] | None, str | None, float]:
    deadline = started + limits.timeout_s
    buffer = b""
    peak_mb = 0.0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill_group(proc)
            return None, "timeout", peak_mb
        wait_s = min(remaining, MEMORY_POLL_S) if limits.memory_mb else remaining
        ready, _, _ = select.select([read_fd], [], [], wait_s)
        if limits.memory_mb:
            rss = _group_rss_mb(proc.pid)
            peak_mb = max(peak_mb, rss)
            if rss > limits.memory_mb:
                _kill_group(proc)
                return None, "memory", peak_mb
        if not ready:
            continue
        chunk = os.read(read_fd, 1 << 20)
        if not chunk:  # worker closed its end: it exited (or crashed) without a result
            return None, None, peak_mb
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if message.get("event") == "result":
                return message["result"], None, peak_mb
            if on_event:
                on_event(message)


def _finish(
    result: dict[str, Any] | None,
    returncode: int,
    killed_for: str | None,
    limits: Limits,
    log_path: Path,
    elapsed: float,
    peak_seen_mb: float,
) -> dict[str, Any]:
    tail = _tail(log_path)
    if result is not None:
        record = dict(result)
        if record.get("status") not in ("ok", "skipped"):
            record["stderr_tail"] = tail
    elif killed_for == "timeout":
        record = {"status": "timeout", "reason": f"no result within the hard timeout of {limits.timeout_s:g} s"}
    elif killed_for == "memory":
        record = {
            "status": "oom",
            "reason": f"resident memory {peak_seen_mb:.0f} MiB passed the cap of {limits.memory_mb} MiB",
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
    return record
