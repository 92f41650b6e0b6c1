"""A run folder's ``manifest.json`` as a typed, immutable record, checked on every read.

A manifest that is valid JSON of the wrong shape (``[]``, ``null``, a dict missing ``settings``)
would otherwise crash every reader with an AttributeError or KeyError deep inside. Readers get one
:class:`~harness.errors.StoreError` instead, one ``file: key: message`` line per problem, as
scenarios do. Keys a newer bench adds are kept (``extra="allow"``); the ones the readers rely on
are required, with their types. ``environment`` (the machine's fingerprint) and the reference's
facts stay mappings: they are facts to show and compare, read by key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError

from harness.errors import StoreError

#: how many problems one error lists before it says "and N more"
MAX_LISTED = 8

Number = StrictInt | float


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ScenarioInfo(_Open):
    name: StrictStr
    text: StrictStr
    description: StrictStr | None = None
    path: StrictStr | None = None
    fingerprint: StrictStr | None = None


class Filters(_Open):
    backends: list[StrictStr]
    batch_sizes: list[StrictInt]
    precisions: list[StrictStr]


class MeasurementRule(_Open):
    warmup_s: Number
    warmup_queries: StrictInt
    min_duration_s: Number
    max_duration_s: Number
    min_queries: StrictInt
    headline_percentile: Number
    confidence: Number
    ci_rel_width: Number | None


class LimitsInfo(_Open):
    timeout_s: Number
    memory_mb: StrictInt | None = None


class Settings(_Open):
    quick: StrictBool
    filters: Filters
    measurement: MeasurementRule
    percentiles: list[Number]
    noise_threshold: Number
    #: runs made before max_attempts existed recorded the retries after a noisy window
    noise_retries: StrictInt | None = None
    max_attempts: StrictInt | None = None
    #: the scenario's cpu settings (reserve, pin, wait); None in runs made before they existed
    cpu: dict[str, Any] | None = None
    quiet_wait_s: Number = 0.0
    repeats: StrictInt
    limits: LimitsInfo
    plugins: list[StrictStr]
    autoload: StrictBool | None
    loadgen: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    budgets: dict[str, Any] | None = None
    cache_dir: StrictStr | None = None
    code_path: StrictStr | None = None
    #: where the cells ran: {"kind": "local"} or {"kind": "ray", "address": ..., "requeue_lost": ...};
    #: None in runs made before executors were chosen (local)
    executor: dict[str, Any] | None = None
    #: the scenario's machine kinds (name, resource or label, price), None without ``machines:``
    machines: list[dict[str, Any]] | None = None


class Manifest(_Open):
    schema_version: StrictInt
    run_id: StrictStr
    created_at: Number
    command: StrictStr | None = None
    scenario: ScenarioInfo
    environment: dict[str, Any]
    settings: Settings
    #: the run's fp32 reference facts (fidelity), once computed
    reference: dict[str, Any] | None = None
    #: what the machine was doing as the run started: others' and steal share, load, clocks
    machine_state: dict[str, Any] | None = None
    #: sha256 of every file the run's measurements depend on (model files, the scenario file)
    inputs: dict[str, StrictStr] | None = None
    #: model files that changed, or the machine (``machine_before``/``machine_now``), before a resume
    #: finished the run (--allow-changed-inputs)
    changed_inputs: list[dict[str, Any]] | None = None
    #: Ray runs: every node that ran or refused a cell, by node id: host, address, machine kind, bench
    #: version and code digest, and its environment fingerprint (CPU, GPUs, versions)
    nodes: dict[str, Any] | None = None
    #: (cell, repeat) pairs the run plans to record, set when a sweep starts
    planned: StrictInt | None = None
    finished_at: Number | None = None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)

    def updated(self, **fields: Any) -> Manifest:
        """A copy with ``fields`` set, checked again."""
        return Manifest.model_validate({**self.model_dump(mode="json"), **fields})


def _where(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def check(data: Any, path: Path) -> Manifest:
    """``data`` as a Manifest if it has a manifest's shape, else a StoreError naming the file and
    each bad key."""
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        msg = f"{path}: not a bench manifest (a JSON object is expected, found {kind}); the run folder is damaged"
        raise StoreError(msg)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [f"{path}: {_where(e['loc'])}: {e['msg'].lower()}" for e in errors[:MAX_LISTED]]
        if len(errors) > MAX_LISTED:
            lines.append(f"... and {len(errors) - MAX_LISTED} more")
        lines.append(f"{path}: this manifest does not have the shape bench writes; the run folder is damaged")
        raise StoreError("\n".join(lines)) from None
