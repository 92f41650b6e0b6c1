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

    def config(self) -> dict[str, Any]:
        """The configuration as a plain, JSON-ready dict (keys sorted on serialisation)."""
        return asdict(self)

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
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.backend_options.items()))
        backend = f"{self.backend}[{opts}]" if opts else self.backend
        return f"{self.model} {backend} {self.device} {self.precision} b{self.batch_size}"

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> Cell:
        return cls(**data)
