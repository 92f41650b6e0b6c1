"""Run folders: the manifest, the fsync'ed journal, and the tidy tables built from it.

Layout of ``<root>/<run_id>/``::

    manifest.json       schema version, scenario as given and its hash, environment, settings
    .lock               held (flock) by the one process writing the run; names it, for the others
    journal.jsonl       one fsync'ed JSON line per finished cell attempt: the source of truth
    results.parquet     one row per cell and repeat (rebuilt from the journal, written atomically)
    latencies.parquet   raw per-query latencies of every ok cell (written atomically)
    cells/<cell_id>/    the worker's log and its raw latencies (.npy), kept as written
    work/               caches and temporary files of the runtimes (compiled kernels, conversions)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import manifest as manifest_shape
from harness.errors import RunLocked, StoreError
from harness.manifest import Manifest
from harness.records import STATUSES, CellRecord

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
RESULTS = "results.parquet"
LATENCIES = "latencies.parquet"
LOCK = ".lock"
#: room kept in the run folder so the cell in flight can still be journaled when the disk fills up
RESERVE = ".reserve"
RESERVE_BYTES = 4 << 20
#: how long a writer waits for the lock: a reader probing it holds it for microseconds
LOCK_WAIT_S = 2.0
#: results.parquet's schema metadata key: the byte length of the journal the table was built from
JOURNAL_BYTES_KEY = b"bench.journal_bytes"
#: statuses that end a cell's attempt; a journal line with one of them is a recorded cell
FINAL_STATUSES = STATUSES


def new_run_id(scenario_name: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{scenario_name}-{secrets.token_hex(2)}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename: a reader sees the old file or the new, never half.
    A failed write (a full disk) leaves the old file and no temporary behind."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


@dataclass
class WriterLock:
    """The exclusive flock a run's one writer holds on ``<run>/.lock``. The kernel drops it when
    the process dies, however it dies, so a killed run never leaves a stale lock."""

    fd: int
    path: Path

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1
        _HELD.pop(self.path, None)


#: the run folders this process writes (by resolved path), so its own readers do not see "in progress"
_HELD: dict[Path, WriterLock] = {}


def _holder_text(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    host = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    command = f" ({holder['command']})" if holder.get("command") else ""
    return f"process {holder.get('pid')}{host}{command}, since {since}"


@dataclass(frozen=True)
class RunState:
    """What a reader should know about a run folder before trusting it as complete."""

    #: (cell, repeat) pairs the run planned; None for runs made before bench recorded it
    planned: int | None
    #: (cell, repeat) pairs with a final journal line
    recorded: int
    #: the process writing the run now (pid, command, since), or None
    writer: dict[str, Any] | None
    finished: bool
    #: an unterminated last journal line (a process killed while writing it) was left out
    dropped_tail: bool

    @property
    def complete(self) -> bool:
        return self.writer is None and self.finished and (self.planned is None or self.recorded >= self.planned)

    def notes(self, path: Path) -> list[str]:
        """One sentence per thing a reader must be told; empty for a complete, clean run."""
        of = f"{self.recorded} of {self.planned}" if self.planned is not None else f"{self.recorded}"
        notes = []
        if self.writer is not None:
            notes.append(f"run in progress ({_holder_text(self.writer)}): {of} planned cells measured so far")
        elif not self.complete:
            notes.append(f"run incomplete: {of} planned cells measured; finish it with: bench run --resume {path}")
        if self.dropped_tail:
            notes.append("a torn last journal line (a cell killed while it was being written) was left out")
        return notes


@dataclass(frozen=True)
class JournalRead:
    records: list[CellRecord]
    #: the byte length of the well-formed prefix; anything after it is a torn last line
    good_bytes: int
    dropped_tail: bool


class RunDir:
    """One run's folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, run_id: str, manifest: Mapping[str, Any], command: str = "") -> RunDir:
        """A new run folder, its writer's lock held by this process (:meth:`release` it)."""
        path = Path(root) / run_id
        typed = manifest_shape.check({"schema_version": SCHEMA_VERSION, **manifest}, path / MANIFEST)
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError as exc:
            raise StoreError(f"run folder {path} already exists") from exc
        except OSError as exc:
            raise StoreError(f"cannot create run folder {path}: {exc.strerror}") from exc
        run = cls(path)
        run.acquire(command)
        write_atomic(run.manifest_path, typed.to_json().encode())
        run.journal_path.touch()
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        run = cls(Path(path))
        if not run.path.is_dir():
            raise StoreError(f"{run.path}: not a folder (expected a run folder made by 'bench run')")
        if not run.manifest_path.is_file():
            raise StoreError(f"{run.path}: no {MANIFEST}: this is not a bench run folder")
        run.manifest()  # validates the schema version
        return run

    # -- paths ------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL

    @property
    def work_dir(self) -> Path:
        return self.path / "work"

    def cell_dir(self, cell_id: str) -> Path:
        return self.path / "cells" / cell_id

    # -- the one writer -------------------------------------------------------------------------
    def acquire(self, command: str = "") -> WriterLock:
        """Become the run's only writer, or raise RunLocked naming the process that is."""
        key = self.path.resolve()
        if key in _HELD:
            return _HELD[key]
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:  # a reader's probe holds it for microseconds
                    time.sleep(0.05)
                    continue
                holder = self._holder()
                os.close(fd)
                msg = (
                    f"{self.path} is being written by {_holder_text(holder)}; one process writes a run folder "
                    f"at a time: wait for it to finish (or stop it), then: bench run --resume {self.path}"
                )
                raise RunLocked(msg) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        lock = _HELD[key] = WriterLock(fd, key)
        return lock

    def release(self) -> None:
        """Stop being the run's writer (the kernel does this too when the process ends)."""
        lock = _HELD.get(self.path.resolve())
        if lock is not None:
            lock.release()

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads((self.path / LOCK).read_text() or "null")
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def writer(self) -> dict[str, Any] | None:
        """The other process writing this run now, or None (nobody, or this process)."""
        if self.path.resolve() in _HELD:
            return None
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._holder() or {"pid": None}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def state(self, read: JournalRead | None = None) -> RunState:
        """What a reader must know of the run (of ``read``, the journal as a caller read it, else read now)."""
        read = read or self.read_journal()
        recorded = self.done(read)
        manifest = self.manifest()
        return RunState(
            planned=manifest.planned,
            recorded=len(recorded),
            writer=self.writer(),
            finished=manifest.finished_at is not None,
            dropped_tail=read.dropped_tail,
        )

    # -- room for the last journal line ---------------------------------------------------------
    def reserve(self, nbytes: int = RESERVE_BYTES) -> None:
        """Set disk space aside (allocated, not sparse) that :meth:`free_reserve` gives back when the
        disk fills up, so the finished cell in flight can still be journaled."""
        path = self.path / RESERVE
        if path.exists():
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        os.close(fd)

    def free_reserve(self) -> bool:
        try:
            (self.path / RESERVE).unlink()
        except FileNotFoundError:
            return False
        return True

    def disk_free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    # -- manifest -----------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.manifest_path}: unreadable manifest ({exc})") from exc
        version = data.get("schema_version") if isinstance(data, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            msg = (
                f"{self.manifest_path}: schema_version {version!r} is newer than this bench understands "
                f"({SCHEMA_VERSION}); upgrade bench to read it"
            )
            raise StoreError(msg)
        return manifest_shape.check(data, self.manifest_path)

    def update_manifest(self, **fields: Any) -> Manifest:
        """Set ``fields`` in the manifest (checked, written atomically); return the new manifest."""
        manifest = self.manifest().updated(**fields)
        write_atomic(self.manifest_path, manifest.to_json().encode())
        return manifest

    # -- journal ------------------------------------------------------------------------------
    def append(self, record: CellRecord | Mapping[str, Any]) -> None:
        """Append one record as a JSON line and fsync it before returning. A failed write (a full
        disk) is cut back off, so the journal never keeps a torn line."""
        flat = record.to_json_dict() if isinstance(record, CellRecord) else dict(record)
        line = (json.dumps(flat, sort_keys=True, default=str) + "\n").encode()
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def read_journal(self) -> JournalRead:
        """All well-formed records. An unterminated last line (a kill mid-write) is dropped; a corrupt
        line elsewhere is an error naming its line number."""
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return JournalRead([], 0, False)
        complete, newline, tail = raw.rpartition(b"\n")
        records: list[CellRecord] = []
        for number, line in enumerate(complete.split(b"\n") if newline else [], start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                msg = f"{self.journal_path}:{number}: corrupt journal line ({exc}); fix or delete that line"
                raise StoreError(msg) from exc
            if not isinstance(record, dict):
                raise StoreError(f"{self.journal_path}:{number}: journal line is not a JSON object")
            try:
                records.append(CellRecord.from_json_dict(record))
            except ValueError as exc:
                msg = f"{self.journal_path}:{number}: journal line of the wrong shape: {exc}; fix or delete that line"
                raise StoreError(msg) from exc
        good = len(complete) + len(newline)
        return JournalRead(records, good, bool(tail.strip()))

    def repair_journal(self) -> bool:
        """Cut an unterminated last line so appends start on a fresh line; True if something was cut."""
        read = self.read_journal()
        if not self.journal_path.exists() or self.journal_path.stat().st_size == read.good_bytes:
            return False
        with open(self.journal_path, "r+b") as fh:
            fh.truncate(read.good_bytes)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def records(self, read: JournalRead | None = None) -> Iterator[CellRecord]:
        """The journal's records (of ``read``, else read now), less a ``retryable`` one (a cell whose
        Ray node was lost) that a later record of the same cell and repeat replaced (its --resume)."""
        records = (read or self.read_journal()).records
        last = {(r.cell_id, r.repeat): index for index, r in enumerate(records)}
        for index, record in enumerate(records):
            if record.get("retryable") and last[(record.cell_id, record.repeat)] != index:
                continue
            yield record

    def done(self, read: JournalRead | None = None) -> set[tuple[str, int]]:
        """(cell id, repeat) of every record a resume keeps: all but a ``retryable`` failure (a cell
        whose Ray node was lost, which --resume runs again, so its run is not complete)."""
        return {(r.cell_id, r.repeat) for r in self.records(read)
                if r.status in FINAL_STATUSES and not r.get("retryable")}  # fmt: skip

    # -- tables -------------------------------------------------------------------------------
    def write_tables(self) -> None:
        """Rebuild results.parquet and latencies.parquet from the journal, atomically."""
        import io

        import numpy as np
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        read = self.read_journal()
        records = list(self.records(read))
        table = pa.Table.from_pandas(records_to_frame(records), preserve_index=False)
        # the journal it was built from, so a reader can tell a table that a later append made stale
        meta = {**(table.schema.metadata or {}), JOURNAL_BYTES_KEY: str(read.good_bytes).encode()}
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), buf)
        write_atomic(self.path / RESULTS, buf.getvalue())

        parts = []
        for rec in records:
            if rec.get("status") != "ok" or not rec.get("latency_file"):
                continue
            try:
                lat = np.load(self.path / rec["latency_file"], allow_pickle=False)
            except (OSError, ValueError):
                continue
            parts.append(
                pd.DataFrame(
                    {
                        "cell_id": rec["cell_id"],
                        "repeat": rec.get("repeat", 0),
                        "query": np.arange(lat.size, dtype=np.int64),
                        "latency_ns": lat.astype(np.int64),
                    }
                )
            )
        latencies = (
            pd.concat(parts, ignore_index=True)
            if parts
            else pd.DataFrame({"cell_id": [], "repeat": [], "query": [], "latency_ns": []})
        )
        buf = io.BytesIO()
        latencies.to_parquet(buf, index=False)
        write_atomic(self.path / LATENCIES, buf.getvalue())


_NESTED = ("config", "info", "output_shapes", "budgets")


def records_to_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One tidy row per record: the cell's configuration flattened into columns, nested facts as JSON."""
    import pandas as pd

    rows = []
    for rec in records:
        row = {k: v for k, v in rec.items() if k not in _NESTED}
        row.update(rec.get("config", {}))
        load_options = row.get("load_options") or {}
        row["concurrency"] = int(load_options.get("concurrency") or 1)
        row["max_wait_us"] = load_options.get("max_wait_us")
        for key in ("model_options", "backend_options", "load_options", "load_curve"):
            if key in row:
                row[key] = json.dumps(row[key], sort_keys=True)
        for key in _NESTED[1:]:
            if key in rec:
                row[key] = json.dumps(rec[key], sort_keys=True, default=str)
        rows.append(row)
    _flag_frontiers(rows)
    return pd.DataFrame(rows)


def _flag_frontiers(rows: list[dict[str, Any]]) -> None:
    """``pareto_<name>``: whether a measured row is on each frontier of harness.economics
    (None where the row lacks one of its metrics, or is untrusted: a cell measured on a disturbed
    machine neither joins a frontier nor pushes a trusted cell off it)."""
    from harness.analysis.economics import FRONTIERS, is_trusted, pareto_front

    measured = [r for r in rows if r.get("status") == "ok" and is_trusted(r)]
    for name, objectives in FRONTIERS.items():
        column = f"pareto_{name}"
        has = [r for r in measured if all(r.get(field) is not None for field, _ in objectives)]
        if not has:
            continue
        front = {id(has[i]) for i in pareto_front(has, objectives)}
        judged = {id(r) for r in has}
        for row in rows:
            row[column] = (id(row) in front) if id(row) in judged else None


def load_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The public read API: a run folder's results as a DataFrame, one row per cell and repeat.

    Reads results.parquet when it was built from the journal as it is now, else rebuilds from the
    journal (a killed run, or a resume killed before it rewrote the table).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    run = RunDir.open(Path(path))
    table = run.path / RESULTS
    read = run.read_journal()
    if table.is_file():
        try:
            built_from = (pq.read_schema(table).metadata or {}).get(JOURNAL_BYTES_KEY)
        except (OSError, ValueError):  # a damaged table: the journal is the record
            built_from = None
        if built_from == str(read.good_bytes).encode():
            return pd.read_parquet(table)
    return records_to_frame(list(run.records(read)))
