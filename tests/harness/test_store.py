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


def test_a_table_older_than_the_journal_is_not_read_though_its_row_count_matches(tmp_path: Path) -> None:
    """A resume on Ray replaces a lost node's retryable record: the journal gains a line, the rows
    stay as many. Killed before it rewrote the tables, the old table must not be returned."""
    run = _run(tmp_path)
    config = {"model": "toy", "backend": "fake", "batch_size": 1}
    run.append({"cell_id": "a", "repeat": 0, "status": "ok", "config": config})
    run.append({"cell_id": "b", "repeat": 0, "status": "failed", "reason": "node lost", "retryable": True,
                "config": config})  # fmt: skip
    run.write_tables()
    assert list(load_results(run.path)["status"]) == ["ok", "failed"]
    run.append({"cell_id": "b", "repeat": 0, "status": "ok", "config": config})  # the resume's record
    frame = load_results(run.path)
    assert list(frame["cell_id"]) == ["a", "b"] and list(frame["status"]) == ["ok", "ok"]
    run.write_tables()  # rewritten: the table is read again, and says the same
    assert list(load_results(run.path)["status"]) == ["ok", "ok"]


def test_a_lost_nodes_retryable_cell_leaves_its_run_incomplete(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.update_manifest(planned=2, finished_at=1.0)
    run.append({"cell_id": "a", "repeat": 0, "status": "ok"})
    run.append({"cell_id": "b", "repeat": 0, "status": "failed", "reason": "node lost", "retryable": True})
    state = run.state()
    assert (state.recorded, state.complete) == (1, False)
    assert state.notes(run.path) == [f"run incomplete: 1 of 2 planned cells measured; finish it with: "
                                     f"bench run --resume {run.path}"]  # fmt: skip
    run.append({"cell_id": "b", "repeat": 0, "status": "ok"})  # its resume
    assert run.state().complete and run.state().notes(run.path) == []


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [("repeat", '"x"', "repeat is 'x', not a whole number"), ("config", "[1, 2]", "config is [1, 2], not an object"),
     ("throughput_sps", '"fast"', "throughput_sps is 'fast', not a number (samples/s)"),
     ("p99_ms", "true", "p99_ms is True, not a number (ms)")],
)  # fmt: skip
def test_a_journal_line_with_a_field_of_the_wrong_type_names_its_line_and_key(
    tmp_path: Path, field: str, value: str, says: str
) -> None:
    run = _run(tmp_path)
    run.append({"cell_id": "a", "status": "ok", "throughput_sps": 10.0, "p99_ms": None})
    with open(run.journal_path, "a") as fh:
        fh.write(f'{{"cell_id": "b", "status": "ok", "{field}": {value}}}\n')
    with pytest.raises(StoreError) as raised:
        run.read_journal()
    expected = f"{run.journal_path}:2: journal line of the wrong shape: {says}; fix or delete that line"
    assert str(raised.value) == expected
