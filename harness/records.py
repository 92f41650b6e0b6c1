"""The records that flow between the parent, its workers and the store, typed and immutable.

- :class:`Job`: what the parent hands a worker to measure one cell (JSON on the worker's stdin);
  :class:`ReferenceJob` the run's one fp32 reference computation.
- :class:`CellRecord`: one line of a run's journal, a cell's attempt as the parent recorded it.
  Its typed attributes are the cell's identity and outcome; every other field is a measurement
  whose name :mod:`harness.metrics` documents, checked when the parent builds the record, so an
  undocumented field cannot reach the store. It is a read-only mapping over the journal line's
  flat fields, because the readers (tables, report, comparison) treat a run as rows of a table.

The manifest's type is :class:`harness.manifest.Manifest`. Records become JSON only at the edges:
the worker's pipe, the journal line, results.parquet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Literal, cast, get_args

from harness.metrics import describe

Status = Literal["ok", "skipped", "failed", "crashed", "oom", "timeout"]
#: the statuses that end a cell's attempt (a journal line with one is a recorded cell)
STATUSES: tuple[str, ...] = get_args(Status)


@dataclass(frozen=True)
class StopRule:
    """When a single-stream window stops (harness.measure.single_stream documents the rule)."""

    warmup_s: float
    warmup_queries: int
    min_duration_s: float
    max_duration_s: float
    min_queries: int
    headline_percentile: float
    confidence: float
    ci_rel_width: float | None  # None: no early stop, run to max_duration_s


@dataclass(frozen=True)
class Job:
    """One cell for one worker process: the cell, the rule of its window and where to write."""

    cell: Mapping[str, Any]  # Cell.config(): the cell's identity
    repeat: int
    attempt: int
    rule: StopRule
    percentiles: tuple[float, ...]
    noise_threshold: float
    quiet_wait_s: float  # how long to wait for a quiet machine before the window
    loadgen: Mapping[str, Any] | None  # LoadGen's settings (LoadGen cells)
    reference: Mapping[str, Any] | None  # the run's reference facts (fidelity), when computed
    fidelity: Mapping[str, Any] | None  # thresholds of agreement per precision
    timeout_s: float
    plugins: tuple[str, ...]
    autoload: bool | None
    workdir: str
    cell_dir: str
    kind: Literal["cell"] = "cell"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        values = dict(data)
        values["rule"] = StopRule(**values["rule"])
        values["percentiles"] = tuple(values["percentiles"])
        values["plugins"] = tuple(values["plugins"])
        return cls(**values)


@dataclass(frozen=True)
class ReferenceJob:
    """The run's fp32 PyTorch reference: outputs on the validation set, FLOPs, the machine's peak."""

    model: str
    model_options: Mapping[str, Any]
    samples: int
    seed: int
    threads: int
    path: str
    plugins: tuple[str, ...]
    autoload: bool | None
    #: the .npz the model's inputs are cut from (Cell.input_data), or None
    input_data: str | None = None
    kind: Literal["reference"] = "reference"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceJob:
        return cls(**{**data, "plugins": tuple(data["plugins"])})


def job_from_json(text: str) -> Job | ReferenceJob:
    data = json.loads(text)
    if data.get("kind") == "reference":
        return ReferenceJob.from_dict(data)
    return Job.from_dict(data)


class UndocumentedField(ValueError):
    """A measurement field that harness.metrics does not document: a programming error."""


#: the journal line's keys held as typed attributes, not as measurements
_CORE = ("cell_id", "label", "repeat", "config", "status", "reason", "started_at", "ended_at")
#: nested facts stored as they are (documented as whole objects)
_NESTED = frozenset({"config", "info", "budgets", "output_shapes", "load_curve", "peak_rss_per_phase"})


def check_documented(fields: Mapping[str, Any]) -> None:
    """Raise UndocumentedField for any key harness.metrics cannot describe."""
    missing = sorted(key for key in fields if key not in _NESTED and describe(key) is None)
    if missing:
        msg = f"result fields not documented in harness.metrics: {', '.join(missing)}; document each (unit, meaning)"
        raise UndocumentedField(msg)


@dataclass(frozen=True, eq=False)  # equal as mappings (Mapping.__eq__): to a dict of the same line too
class CellRecord(Mapping[str, Any]):
    """One cell attempt as recorded: identity and outcome typed, measurements by documented name."""

    cell_id: str
    label: str
    repeat: int
    config: Mapping[str, Any]
    status: Status
    reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    measurements: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        object.__setattr__(self, "measurements", MappingProxyType(dict(self.measurements)))

    @classmethod
    def build(
        cls,
        cell_id: str,
        label: str,
        repeat: int,
        config: Mapping[str, Any],
        started_at: float,
        ended_at: float,
        result: Mapping[str, Any],
    ) -> CellRecord:
        """A new record from a worker's result (and the parent's additions): every measurement
        checked against harness.metrics."""
        status = result.get("status")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r} (known: {', '.join(STATUSES)})")
        measurements = {k: v for k, v in result.items() if k not in ("status", "reason")}
        check_documented(measurements)
        return cls(
            cell_id, label, repeat, config, cast("Status", status), str(result.get("reason") or ""),
            started_at, ended_at, measurements,
        )  # fmt: skip

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> CellRecord:
        """A journal line read back. Lenient: a field another version of bench wrote is kept as is.
        A field of the wrong type (``repeat`` not a whole number, ``config`` not an object, a
        measurement with a unit not a number) is a ValueError naming the key."""
        status = data.get("status")
        repeat = data.get("repeat") or 0
        if isinstance(repeat, bool) or not isinstance(repeat, int):
            raise ValueError(f"repeat is {repeat!r}, not a whole number")
        if not isinstance(data.get("config") or {}, Mapping):
            raise ValueError(f"config is {data.get('config')!r}, not an object")
        for key, value in data.items():
            unit = (describe(key) or ("",))[0] if key not in _CORE and key not in _NESTED else ""
            if unit and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{key} is {value!r}, not a number ({unit})")
        return cls(
            cell_id=str(data.get("cell_id", "")),
            label=str(data.get("label", "")),
            repeat=repeat,
            config=data.get("config") or {},
            status=cast("Status", str(status)),  # as written, even a status this version does not know
            reason=str(data.get("reason") or ""),
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            measurements={k: v for k, v in data.items() if k not in _CORE},
        )

    def with_fields(self, **fields: Any) -> CellRecord:
        """A copy with more (documented) measurements, e.g. the parent's cost and budget verdicts."""
        check_documented(fields)
        return CellRecord(
            self.cell_id, self.label, self.repeat, self.config, self.status, self.reason, self.started_at,
            self.ended_at, {**self.measurements, **fields},
        )  # fmt: skip

    # -- the flat journal line, read-only ----------------------------------------------------------
    def _flat(self) -> dict[str, Any]:
        core = {
            "cell_id": self.cell_id, "label": self.label, "repeat": self.repeat, "config": dict(self.config),
            "status": self.status, "reason": self.reason, "started_at": self.started_at, "ended_at": self.ended_at,
        }  # fmt: skip
        return {**core, **self.measurements}

    def __getitem__(self, key: str) -> Any:
        if key in _CORE:
            value = getattr(self, key)
            return dict(value) if key == "config" else value
        return self.measurements[key]

    def __iter__(self) -> Iterator[str]:
        yield from _CORE
        yield from self.measurements

    def __len__(self) -> int:
        return len(_CORE) + len(self.measurements)

    def to_json_dict(self) -> dict[str, Any]:
        """The journal line: one flat dict."""
        return self._flat()
