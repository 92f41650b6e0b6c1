"""A cell: one fully specified configuration of a sweep, with a stable identity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Cell:
    """One point of the sweep: model x backend (with options) x device x precision x batch x threads x seed.

    Measurement settings are not part of the identity: two runs with other durations measure the
    same cell, which is what resume and comparison need.
    """

    model: str
    backend: str
    device: str
    precision: str
    batch_size: int
    threads: int
    load: str = "single_stream"
    #: seed of the generated inputs (the model's weights have their own fixed seed)
    seed: int = 0
    model_options: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, Scalar] = field(default_factory=dict)
    #: the load scenario's own axes: concurrency, target_qps, latency_bound_ms, max_wait_us, ...
    load_options: dict[str, Scalar] = field(default_factory=dict)
    #: the .npz the model's inputs are cut from (absolute path; the scenario's ``model: {inputs:
    #: FILE}``), or None for the model's own example inputs
    input_data: str | None = None
    #: the scenario's machine kind the cell runs on (``machines:``, Ray executor), or None: the
    #: machine the run is on
    machine: str | None = None

    def config(self) -> dict[str, Any]:
        """The configuration as a plain, JSON-ready dict (keys sorted on serialisation).

        Empty ``load_options`` and a ``None`` ``input_data`` or ``machine`` are left out, so cells keep the ids
        they had before those existed (resume and comparison match them)."""
        data = asdict(self)
        if not data["load_options"]:
            del data["load_options"]
        if data["input_data"] is None:
            del data["input_data"]
        if data["machine"] is None:
            del data["machine"]
        return data

    @property
    def concurrency(self) -> int:
        """Sessions serving queries at once (1 for single-stream)."""
        return int(self.load_options.get("concurrency") or 1)

    @property
    def id(self) -> str:
        """A 12-hex-digit hash of the configuration: equal configurations, equal ids."""
        canonical = json.dumps(self.config(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def device_kind(self) -> str:
        """The device without its index: ``cuda:1`` -> ``cuda``."""
        return self.device.split(":", 1)[0]

    @property
    def label(self) -> str:
        """A short human name, e.g. ``pytorch[mode=compile] cpu int8 b64``."""
        shown = ",".join(f"{k}={v}" for k, v in sorted(self.backend_options.items()))
        backend = f"{self.backend}[{shown}]" if shown else self.backend
        label = f"{self.model} {backend} {self.device} {self.precision} b{self.batch_size}"
        if self.machine is not None:
            label += f" @{self.machine}"
        if self.load == "single_stream":
            return label
        opts = self.load_options
        load = self.load
        if self.load == "server":
            rate = opts.get("target_qps")
            load += "@peak" if rate == "peak" else f"@{rate:g}qps" if isinstance(rate, int | float) else ""
        if self.concurrency > 1:
            load += f" c{self.concurrency}"
        if opts.get("max_wait_us"):
            load += f" wait{opts['max_wait_us']}us"
        return f"{label} {load}"

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> Cell:
        return cls(**data)
