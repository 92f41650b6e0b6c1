"""Run folders: the manifest, the fsync'ed journal, and the tidy tables built from it.

Layout of ``<root>/<run_id>/``::

    manifest.json       schema version, scenario as given and its hash, environment, settings
    journal.jsonl       one fsync'ed JSON line per finished cell attempt: the source of truth
    results.parquet     one row per cell and repeat (rebuilt from the journal, written atomically)
    latencies.parquet   raw per-query latencies of every ok cell (written atomically)
    cells/<cell_id>/    the worker's log and its raw latencies (.npy), kept as written
    work/               caches and temporary files of the runtimes (compiled kernels, conversions)
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import StoreError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
RESULTS = "results.parquet"
LATENCIES = "latencies.parquet"


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


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename: a reader sees the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class JournalRead:
    records: list[dict[str, Any]]
    #: the byte length of the well-formed prefix; anything after it is a torn last line
    good_bytes: int
    dropped_tail: bool


class RunDir:
    """One run's folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, run_id: str, manifest: dict[str, Any]) -> RunDir:
        path = Path(root) / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError as exc:
            raise StoreError(f"run folder {path} already exists") from exc
        except OSError as exc:
            raise StoreError(f"cannot create run folder {path}: {exc.strerror}") from exc
        run = cls(path)
        write_atomic(run.manifest_path, json.dumps({"schema_version": SCHEMA_VERSION, **manifest}, indent=2).encode())
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

    # -- manifest -----------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.manifest_path}: unreadable manifest ({exc})") from exc
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            msg = (
                f"{self.manifest_path}: schema_version {version!r} is newer than this bench understands "
                f"({SCHEMA_VERSION}); upgrade bench to read it"
            )
            raise StoreError(msg)
        return data

    def update_manifest(self, **fields: Any) -> None:
        data = self.manifest()
        data.update(fields)
        write_atomic(self.manifest_path, json.dumps(data, indent=2).encode())

    # -- journal ------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line and fsync it before returning."""
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with open(self.journal_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def read_journal(self) -> JournalRead:
        """All well-formed records. An unterminated last line (a kill mid-write) is dropped; a corrupt
        line elsewhere is an error naming its line number."""
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return JournalRead([], 0, False)
        complete, newline, tail = raw.rpartition(b"\n")
        records: list[dict[str, Any]] = []
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
            records.append(record)
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

    def records(self) -> Iterator[dict[str, Any]]:
        yield from self.read_journal().records

    # -- tables -------------------------------------------------------------------------------
    def write_tables(self) -> None:
        """Rebuild results.parquet and latencies.parquet from the journal, atomically."""
        import io

        import numpy as np
        import pandas as pd

        records = list(self.records())
        results = records_to_frame(records)
        buf = io.BytesIO()
        results.to_parquet(buf, index=False)
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


def records_to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
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
    (None where the row lacks one of its metrics)."""
    from harness.economics import FRONTIERS, pareto_front

    measured = [r for r in rows if r.get("status") == "ok"]
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

    Reads results.parquet when it is complete, else rebuilds from the journal (a killed run).
    """
    import pandas as pd

    run = RunDir.open(Path(path))
    table = run.path / RESULTS
    records = list(run.records())
    if table.is_file():
        frame = pd.read_parquet(table)
        if len(frame) == len(records):
            return frame
    return records_to_frame(records)
