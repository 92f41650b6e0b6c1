"""The typed records: a worker's job, a journal line, the manifest."""

from __future__ import annotations

import json

import pytest

from harness.records import (
    CellRecord,
    Job,
    ReferenceJob,
    StopRule,
    UndocumentedField,
    job_from_json,
)


def _job() -> Job:
    rule = StopRule(0.1, 3, 0.2, 0.4, 50, 99.0, 0.95, None)
    return Job(
        cell={"model": "toy", "backend": "fake", "batch_size": 1}, repeat=1, attempt=0, rule=rule,
        percentiles=(50.0, 99.0), noise_threshold=0.1, quiet_wait_s=0.0, loadgen=None, reference=None, fidelity=None,
        timeout_s=30.0,        plugins=("plugins.fake",), autoload=None, workdir="/w", cell_dir="/w/c",
    )  # fmt: skip


def test_jobs_cross_the_pipe_as_json_and_back() -> None:
    job = _job()
    assert job_from_json(job.to_json()) == job
    # the keys a worker of an older checkout reads (``bench compare --confirm`` runs one)
    assert {"cell", "repeat", "attempt", "rule", "percentiles", "workdir", "cell_dir"} <= set(json.loads(job.to_json()))
    ref = ReferenceJob("toy", {}, 64, 0, 2, "/r/ref.npz", ("plugins.fake",), None)
    assert job_from_json(ref.to_json()) == ref


def test_a_record_refuses_an_undocumented_field() -> None:
    result = {"status": "ok", "throughput_sps": 10.0, "p99_ms": 1.0, "made_up_field": 1}
    with pytest.raises(UndocumentedField, match="made_up_field"):
        CellRecord.build("abc", "toy fake", 0, {"batch_size": 1}, 1.0, 2.0, result)


def test_a_record_is_a_read_only_mapping_of_its_journal_line() -> None:
    record = CellRecord.build("abc", "toy fake", 0, {"batch_size": 1}, 1.0, 2.0, {"status": "ok", "p99_ms": 1.5})
    assert record["p99_ms"] == 1.5 and record.get("p50_ms") is None and record.status == "ok"
    assert dict(record) == record.to_json_dict()
    with pytest.raises(TypeError):
        record["p99_ms"] = 2.0  # type: ignore[index]  # the point: records cannot be changed
    more = record.with_fields(cost_per_million_usd=0.5)
    assert more["cost_per_million_usd"] == 0.5 and "cost_per_million_usd" not in record
    assert CellRecord.from_json_dict(json.loads(json.dumps(more.to_json_dict()))) == more


def test_a_journal_line_of_another_version_is_read_as_written() -> None:
    line = {"cell_id": "x", "label": "l", "repeat": 0, "config": {}, "status": "ok", "a_future_field": 3}
    record = CellRecord.from_json_dict(line)
    assert record["a_future_field"] == 3 and record.cell_id == "x"
