from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import stub_manifest
from harness.errors import StoreError
from harness.store import SCHEMA_VERSION, RunDir, load_results


def _run(tmp_path: Path) -> RunDir:
    return RunDir.create(tmp_path, "r1", stub_manifest("r1"))


def test_manifest_has_schema_version(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert run.manifest().schema_version == SCHEMA_VERSION
    assert RunDir.open(run.path).manifest().run_id == "r1"


def test_create_refuses_an_existing_folder(tmp_path: Path) -> None:
    _run(tmp_path)
    with pytest.raises(StoreError, match="already exists"):
        _run(tmp_path)


def test_journal_roundtrip_and_torn_last_line(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.append({"cell_id": "a", "status": "ok"})
    run.append({"cell_id": "b", "status": "failed"})
    with open(run.journal_path, "a") as fh:
        fh.write('{"cell_id": "c", "sta')  # a kill in the middle of a write
    read = run.read_journal()
    assert [r["cell_id"] for r in read.records] == ["a", "b"]
    assert read.dropped_tail
    assert run.repair_journal()
    run.append({"cell_id": "c", "status": "ok"})
    assert [r["cell_id"] for r in run.records()] == ["a", "b", "c"]
    assert not run.repair_journal()


def test_corrupt_line_in_the_middle_names_the_line(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.append({"cell_id": "a", "status": "ok"})
    with open(run.journal_path, "a") as fh:
        fh.write("garbage\n")
    run.append({"cell_id": "b", "status": "ok"})
    with pytest.raises(StoreError, match=r"journal.jsonl:2: corrupt journal line"):
        run.read_journal()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    data = json.loads(run.manifest_path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    run.manifest_path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="newer than this bench understands"):
        RunDir.open(run.path)


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a bench run folder"):
        RunDir.open(tmp_path)
    with pytest.raises(StoreError, match="not a folder"):
        RunDir.open(tmp_path / "missing")


def test_tables_are_rebuilt_from_the_journal(tmp_path: Path) -> None:
    import numpy as np

    run = _run(tmp_path)
    cell_dir = run.cell_dir("abc")
    cell_dir.mkdir(parents=True)
    np.save(cell_dir / "latencies_ns.r0.npy", np.array([5, 6, 7], dtype=np.int64))
    config = {"model": "toy", "backend": "fake", "batch_size": 2, "backend_options": {"a": 1}}
    run.append({"cell_id": "abc", "repeat": 0, "status": "ok", "config": config,
                "latency_file": "cells/abc/latencies_ns.r0.npy", "info": {"x": 1}})  # fmt: skip
    run.append({"cell_id": "def", "repeat": 0, "status": "skipped", "reason": "no", "config": config})
    run.write_tables()
    frame = load_results(run.path)
    assert list(frame["cell_id"]) == ["abc", "def"]
    assert frame.loc[0, "batch_size"] == 2
    assert json.loads(frame.loc[0, "backend_options"]) == {"a": 1}
    import pandas as pd

    lat = pd.read_parquet(run.path / "latencies.parquet")
    assert list(lat["latency_ns"]) == [5, 6, 7]
    assert set(lat["cell_id"]) == {"abc"}
    # a record added after the tables (a killed run) is still seen
    run.append({"cell_id": "ghi", "repeat": 0, "status": "ok", "config": config})
    assert len(load_results(run.path)) == 3
    assert not list(run.path.glob(".*tmp*")), "temporary files left behind"
