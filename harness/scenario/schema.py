"""The scenario schema: backends, measurement, LoadGen, cost, budgets, fidelity, limits and the
:class:`Scenario` that holds them (strict: unknown keys are errors)."""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from harness.cells import Cell, Scalar
from harness.errors import ScenarioError
from harness.scenario.messages import Loc, _format, _show
from harness.scenario.model_ref import ModelRef
from harness.scenario.types import (
    _FROZEN,
    BatchSize,
    Concurrency,
    Device,
    LoadName,
    Options,
    Percentile,
    PluginName,
    Positive,
    Precision,
    Precisions,
    SweepValues,
    _axis,
    _name,
    _schema_version,
    _shorthand,
    _sorted,
    _unique,
)


class BackendEntry(BaseModel):
    """One backend plugin with fixed options, option axes to sweep, and optional own precisions."""

    model_config = _FROZEN

    name: PluginName
    options: Options = Field(default_factory=dict)
    sweep: dict[StrictStr, SweepValues] = Field(default_factory=dict)
    precisions: Precisions | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        return _shorthand(data, "backend")

    @model_validator(mode="after")
    def _check_overlap(self) -> BackendEntry:
        for key in self.sweep:
            if key in self.options:
                raise PydanticCustomError(
                    "scenario_overlap",
                    "option '{key}' is both fixed (options) and swept (sweep); keep it in one of them",
                    {"key": key, "at": ("sweep", key)},
                )
        return self

    def combos(self) -> list[dict[str, Scalar]]:
        """The cartesian product of the sweep axes, in the file's key order ([{}] without a sweep)."""
        keys = list(self.sweep)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.sweep.values())]


class Measurement(BaseModel):
    """How each cell is measured; measurement settings are not part of a cell's identity."""

    model_config = _FROZEN

    percentiles: Annotated[
        tuple[Percentile, ...], Field(min_length=1), AfterValidator(_unique), AfterValidator(_sorted)
    ] = (50.0, 90.0, 95.0, 99.0, 99.9)
    headline_percentile: Percentile = 99.0
    confidence: Annotated[StrictFloat, Field(gt=0.5, lt=1)] = 0.95
    warmup_s: Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)] = 0.5
    warmup_queries: Annotated[StrictInt, Field(ge=1)] = 10
    min_duration_s: Positive = 2.0
    max_duration_s: Positive = 10.0
    min_queries: Annotated[StrictInt, Field(ge=1)] | None = None
    ci_rel_width: Positive = 0.05
    noise_threshold: Annotated[StrictFloat, Field(ge=0, le=1)] = 0.10
    #: how long a worker waits, before its warm-up, for a probe in which others use at most noise_threshold
    quiet_wait_s: Annotated[StrictFloat, Field(ge=0, le=600, allow_inf_nan=False)] = 10.0
    #: worker runs per cell and repeat while the machine disturbs the window; the last keeps it untrusted
    max_attempts: Annotated[StrictInt, Field(ge=1, le=10)] = 3
    repeats: Annotated[StrictInt, Field(ge=1, le=100)] = 1

    @model_validator(mode="after")
    def _cross_check(self) -> Measurement:
        if self.headline_percentile not in self.percentiles:
            raise PydanticCustomError(
                "scenario_headline",
                "headline_percentile {value} is not one of percentiles [{known}]; add it to percentiles or pick one",
                {
                    "value": _show(self.headline_percentile),
                    "known": ", ".join(f"{p:g}" for p in self.percentiles),
                    "at": ("headline_percentile",),
                },
            )
        if self.max_duration_s < self.min_duration_s:
            raise PydanticCustomError(
                "scenario_durations",
                "max_duration_s ({max}) must be >= min_duration_s ({min}); "
                "raise max_duration_s or lower min_duration_s",
                {"max": _show(self.max_duration_s), "min": _show(self.min_duration_s), "at": ("max_duration_s",)},
            )
        return self


def _target_qps(value: Any) -> tuple[float, ...] | str | None:
    """``target_qps``: null, ``peak``, a rate in queries/s or a list of distinct rates."""
    if value is None:
        return None
    if value == "peak":
        return "peak"
    rates = value if isinstance(value, list | tuple) else [value]
    if not rates:
        raise PydanticCustomError("scenario_target_qps", "give at least one rate, or 'peak'", {})
    out: list[float] = []
    for index, rate in enumerate(rates):
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise PydanticCustomError(
                "scenario_target_qps",
                "Input should be a rate in queries/s, a list of rates, or 'peak' (got {value})",
                {"value": _show(rate), "at": (index,) if isinstance(value, list | tuple) else ()},
            )
        if rate <= 0:
            raise PydanticCustomError(
                "scenario_target_qps",
                "a target rate must be above 0 queries/s (got {value}); give the Poisson arrival rate to offer",
                {"value": _show(rate), "at": (index,) if isinstance(value, list | tuple) else ()},
            )
        if float(rate) in out:
            raise PydanticCustomError("scenario_duplicate", "duplicate rate {value}; remove it", {"value": _show(rate)})
        out.append(float(rate))
    return tuple(out)


class PeakSearchSettings(BaseModel):
    """Server with ``target_qps: peak``: bisect on the offered rate for the highest one whose
    latency percentile stays under ``latency_bound_ms``."""

    model_config = _FROZEN

    min_qps: Positive = 1.0
    max_qps: Positive | None = None
    precision: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.05
    trial_duration_s: Positive = 2.0
    max_trials: Annotated[StrictInt, Field(ge=2, le=30)] = 10

    @model_validator(mode="after")
    def _check_range(self) -> PeakSearchSettings:
        if self.max_qps is not None and self.max_qps <= self.min_qps:
            raise PydanticCustomError(
                "scenario_peak_range",
                "max_qps ({max}) must be above min_qps ({min})",
                {"max": _show(self.max_qps), "min": _show(self.min_qps), "at": ("max_qps",)},
            )
        return self


class LoadGenSettings(BaseModel):
    """How LoadGen drives the offline, server and multi_stream cells (MLPerf's TestSettings)."""

    model_config = _FROZEN

    min_duration_s: Positive = 10.0
    max_duration_s: Positive | None = None
    min_query_count: Annotated[StrictInt, Field(ge=1)] | None = None
    target_qps: Annotated[Any, PlainValidator(_target_qps)] = None
    latency_bound_ms: Positive | None = None
    latency_percentile: Percentile = 99.0
    samples_per_query: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 8
    expected_qps: Positive | None = None
    max_wait_us: _axis(Annotated[StrictInt, Field(ge=0, le=10_000_000)]) = (0,)  # type: ignore[valid-type]  # _axis builds the type (one value or a list) at run time
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    peak_search: PeakSearchSettings = Field(default_factory=PeakSearchSettings)
    #: who issues server queries: auto = bench's spinning open-loop generator where a cell is served
    #: inline (one session, batch 1, no batching wait), LoadGen's scheduler otherwise; loadgen = always
    #: LoadGen's (its timer wake-ups included)
    generator: Literal["auto", "loadgen"] = "auto"


class CostSettings(BaseModel):
    """What a machine costs: a catalog instance or an hourly price, and the load to plan for."""

    model_config = _FROZEN

    instance: StrictStr | None = None
    hourly_usd: Positive | None = None
    target_qps: Positive | None = None
    utilisation: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.7
    daily_volume: Positive | None = None
    #: the price of a kWh: a GPU cell's measured energy per inference is added to its cost per million
    #: (on premises; a cloud's hourly price already holds the power)
    energy_usd_per_kwh: Positive | None = None

    @model_validator(mode="after")
    def _check_price(self) -> CostSettings:
        if self.instance is None and self.hourly_usd is None:
            raise PydanticCustomError(
                "scenario_cost_price",
                "cost needs a price: instance (a row of the catalog, `bench list instances`) or hourly_usd",
                {},
            )
        if self.instance is not None:
            from harness.analysis.economics import UnknownInstance, find_instance

            try:
                find_instance(self.instance)
            except UnknownInstance as exc:
                message = {"message": str(exc), "at": ("instance",)}
                raise PydanticCustomError("scenario_instance", "{message}", message) from None
        return self


def _budgets(value: Any) -> Any:
    """``budgets``: known metric names, each with a non-negative limit."""
    from harness.analysis.economics import BUDGETS

    if not isinstance(value, dict):
        return value
    for key, limit in value.items():
        if key not in BUDGETS:
            close = difflib.get_close_matches(str(key), list(BUDGETS), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise PydanticCustomError(
                "scenario_budget",
                "no metric '{key}' to budget; {hint}known: {known}",
                {"key": str(key), "hint": hint, "known": ", ".join(BUDGETS), "at": (key,)},
            )
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit) or limit < 0:
            raise PydanticCustomError(
                "scenario_budget_limit",
                "a budget is a number >= 0 in {unit} (got {value})",
                {"unit": BUDGETS[key].unit, "value": _show(limit), "at": (key,)},
            )
        if BUDGETS[key].unit == "fraction" and limit > 1:
            raise PydanticCustomError(
                "scenario_budget_fraction",
                "{key} is a fraction: a threshold in [0, 1] (got {value})",
                {"key": str(key), "value": _show(limit), "at": (key,)},
            )
    return {key: float(limit) for key, limit in value.items()}


Fraction = Annotated[StrictFloat, Field(ge=0, le=1)]


class FidelitySettings(BaseModel):
    """How each cell's outputs are checked against the fp32 PyTorch reference."""

    model_config = _FROZEN

    samples: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 1024
    min_cosine: dict[Precision, Fraction] = Field(default_factory=dict)
    min_agreement: Fraction | None = None


class Limits(BaseModel):
    """Hard limits on one cell's worker process."""

    model_config = _FROZEN

    timeout_s: Positive = 600.0
    memory_mb: Annotated[StrictInt, Field(ge=64)] | None = None


class CpuSettings(BaseModel):
    """How a cell's threads use the CPUs: measurement settings, recorded with the run (not part of a
    cell's identity); ``bench compare`` refuses runs whose settings differ."""

    model_config = _FROZEN

    #: CPUs ``threads: auto`` leaves free, for the system, the harness and a neighbour
    reserve: Annotated[StrictInt, Field(ge=0, le=1024)] = 0
    #: pin each worker (and so its runtime's threads) to the CPUs its threads may use
    pin: StrictBool = False
    #: ``passive``: idle runtime threads sleep instead of spin-waiting (OMP_WAIT_POLICY=PASSIVE,
    #: onnxruntime's allow_spinning=0); ``default``: each runtime's own default
    wait: Literal["default", "passive"] = "default"


class GateSubset(BaseModel):
    """The cells ``bench gate`` measures: the scenario's cells whose backend, precision and batch size
    are among these (an axis left out keeps all of its values). It chooses what the nightly gate
    measures, not what a run measures: it is no part of the scenario's fingerprint."""

    model_config = _FROZEN

    backends: Annotated[tuple[PluginName, ...], Field(min_length=1), AfterValidator(_unique)] | None = None
    precisions: Precisions | None = None
    batch_sizes: Annotated[tuple[BatchSize, ...], Field(min_length=1), AfterValidator(_unique)] | None = None
    #: the cpu settings the gate's processes run with (null: the scenario's). The gate asks whether the
    #: code got slower, so steadiness between processes matters more than speed: on a 2-CPU machine
    #: ``{reserve: 1, pin: true}`` took the process-to-process spread from 17-19 % to 1-1.4 %
    cpu: CpuSettings | None = None
    AXES: ClassVar[dict[str, str]] = {"backends": "backend", "precisions": "precision", "batch_sizes": "batch_size"}

    def selects(self, cell: Cell) -> bool:
        """Whether the gate measures ``cell``."""
        for axis, attr in self.AXES.items():
            wanted = getattr(self, axis)
            if wanted is not None and getattr(cell, attr) not in wanted:
                return False
        return True


#: a Ray custom resource name: what ``ray start --resources='{"NAME": 1}'`` gives a node
_RESOURCE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class MachineKind(BaseModel):
    """A kind of machine of a Ray cluster (``--executor ray``): the nodes that carry its Ray custom
    resource (``ray start --resources``) or its node label (``ray start --labels``), and its price."""

    model_config = _FROZEN

    #: names the kind in cells, tables and the report (letters, digits, _ . -)
    name: PluginName
    #: the Ray custom resource its nodes carry, e.g. ``machine_c6i_large``
    resource: StrictStr | None = None
    #: or the node label that marks them, ``KEY=VALUE``, e.g. ``instance-type=g6.xlarge``
    label: StrictStr | None = None
    #: its price: a catalog row (``bench list instances``) or an hourly price
    instance: StrictStr | None = None
    hourly_usd: Positive | None = None

    @model_validator(mode="after")
    def _check(self) -> MachineKind:
        if (self.resource is None) == (self.label is None):
            raise PydanticCustomError(
                "scenario_machine_match",
                "a machine kind names its nodes by exactly one of resource: (a Ray custom resource, as in "
                "`ray start --resources='{example}'`) or label: (KEY=VALUE, as in `ray start --labels`)",
                {"example": '{"machine_x": 1}'},
            )
        if self.resource is not None and not _RESOURCE_RE.fullmatch(self.resource):
            raise PydanticCustomError(
                "scenario_machine_resource",
                "{value} is not a Ray resource name: letters, digits and _ . -, not starting with a digit",
                {"value": _show(self.resource), "at": ("resource",)},
            )
        if self.label is not None and not re.fullmatch(r"[A-Za-z0-9_.\-/]+=[A-Za-z0-9_.\-]+", self.label):
            raise PydanticCustomError(
                "scenario_machine_label",
                "label {value} should be KEY=VALUE (a node label given to `ray start --labels`)",
                {"value": _show(self.label), "at": ("label",)},
            )
        if self.instance is not None and self.hourly_usd is not None:
            raise PydanticCustomError(
                "scenario_machine_price",
                "give the machine's price once: instance (a catalog row) or hourly_usd, not both",
                {"at": ("hourly_usd",)},
            )
        if self.instance is not None:
            from harness.analysis.economics import UnknownInstance, find_instance

            try:
                find_instance(self.instance)
            except UnknownInstance as exc:
                raise PydanticCustomError(
                    "scenario_instance", "{message}", {"message": str(exc), "at": ("instance",)}
                ) from None
        return self

    @property
    def label_pair(self) -> tuple[str, str] | None:
        """The label as (key, value), or None for a kind named by resource."""
        if self.label is None:
            return None
        key, value = self.label.split("=", 1)
        return key, value

    def matches(self) -> str:
        """How its nodes are recognised, for messages."""
        return f"resource {self.resource}" if self.resource is not None else f"label {self.label}"


def _unique_machines(value: tuple[MachineKind, ...]) -> tuple[MachineKind, ...]:
    _unique(tuple(m.name for m in value))
    return value


def _unique_backends(value: tuple[BackendEntry, ...]) -> tuple[BackendEntry, ...]:
    """Two entries of one backend with other options are two configurations; the same entry twice is
    a slip (it would plan the same cells again)."""
    first: dict[str, int] = {}
    for index, entry in enumerate(value):
        key = json.dumps(entry.model_dump(mode="json"), sort_keys=True)
        if key in first:
            raise PydanticCustomError(
                "scenario_duplicate",
                "backend '{name}' is the same as at index {first} (same options, sweep and precisions); remove "
                "one, or give them different options",
                {"name": entry.name, "first": first[key], "at": (index,)},
            )
        first[key] = index
    return value


class Scenario(BaseModel):
    """A validated scenario, with where it came from: its file, text and the line of each key."""

    model_config = _FROZEN

    schema_version: Annotated[StrictInt, AfterValidator(_schema_version)] = 1
    name: Annotated[StrictStr, AfterValidator(_name)]
    description: StrictStr | None = None
    model: ModelRef
    backends: Annotated[tuple[BackendEntry, ...], Field(min_length=1), AfterValidator(_unique_backends)]
    devices: Annotated[tuple[Device, ...], Field(min_length=1), AfterValidator(_unique)] = ("cpu",)
    precisions: Precisions = ("fp32",)
    batch_sizes: Annotated[tuple[BatchSize, ...], Field(min_length=1), AfterValidator(_unique)]
    threads: int | Literal["auto"] = "auto"
    cpu: CpuSettings = Field(default_factory=CpuSettings)
    load: _axis(LoadName) = ("single_stream",)  # type: ignore[valid-type]  # _axis: a type built at run time
    concurrency: _axis(Concurrency) = (1,)  # type: ignore[valid-type]  # _axis: a type built at run time
    loadgen: LoadGenSettings = Field(default_factory=LoadGenSettings)
    cost: CostSettings | None = None
    fidelity: FidelitySettings = Field(default_factory=FidelitySettings)
    budgets: Annotated[dict[StrictStr, Any], BeforeValidator(_budgets)] = Field(default_factory=dict)
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    measurement: Measurement = Field(default_factory=Measurement)
    limits: Limits = Field(default_factory=Limits)
    #: the cells ``bench gate`` measures (all when absent)
    gate: GateSubset | None = None
    #: kinds of machine of a Ray cluster: every cell runs once on each kind that can serve it
    #: (``bench run --executor ray``); absent: the machine the cells run on
    machines: Annotated[tuple[MachineKind, ...], Field(min_length=1), AfterValidator(_unique_machines)] | None = None

    _source_path: Path | None = PrivateAttr(default=None)
    _source_name: str = PrivateAttr(default="<scenario>")
    _source_text: str = PrivateAttr(default="")
    _locations: dict[Loc, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_load(self) -> Scenario:
        lg = self.loadgen
        if "server" in self.load:
            if lg.target_qps is None:
                raise PydanticCustomError(
                    "scenario_server_rate",
                    "load 'server' needs loadgen.target_qps: the Poisson arrival rate in queries/s, a list of "
                    "rates, or 'peak' to search for the highest rate that meets latency_bound_ms",
                    {"at": ("load",)},
                )
            if lg.latency_bound_ms is None:
                raise PydanticCustomError(
                    "scenario_server_bound",
                    "load 'server' needs loadgen.latency_bound_ms: the bound its latency_percentile "
                    "(p{pct}) must stay under, in ms",
                    {"pct": f"{lg.latency_percentile:g}", "at": ("load",)},
                )
        if "cost_per_million_usd" in self.budgets and self.cost is None:
            raise PydanticCustomError(
                "scenario_budget_cost",
                "a cost_per_million_usd budget needs a price: add cost: {instance: NAME} or cost: {hourly_usd: X}",
                {"at": ("budgets", "cost_per_million_usd")},
            )
        driven = [load for load in self.load if load != "single_stream"]
        if driven:
            from harness.scenario.expansion import loadgen_seconds  # expansion reads this schema

            need = max(loadgen_seconds(self, load) for load in driven) + self.measurement.warmup_s
            if need >= self.limits.timeout_s:
                raise PydanticCustomError(
                    "scenario_loadgen_timeout",
                    "a LoadGen cell needs at least {need} s here (warm-up, min_duration_s, min_query_count at the "
                    "target rate, peak-search trials), which limits.timeout_s ({timeout} s) cannot hold: raise "
                    "limits.timeout_s or lower the durations",
                    {
                        "need": f"{need:.4g}",
                        "timeout": _show(self.limits.timeout_s),
                        "at": ("loadgen", "min_duration_s"),
                    },
                )
        return self

    @model_validator(mode="after")
    def _check_gate(self) -> Scenario:
        """Every value of the gate subset names some cell of the scenario, and together they name one."""
        if self.gate is None:
            return self
        from harness.scenario.expansion import expand_cells  # expansion reads this schema

        cells = expand_cells(self, 1)  # threads do not change which cells there are
        for axis, attr in GateSubset.AXES.items():
            present = {getattr(cell, attr) for cell in cells}
            for index, value in enumerate(getattr(self.gate, axis) or ()):
                if value not in present:
                    raise PydanticCustomError(
                        "scenario_gate_value",
                        "{value} names no cell of the scenario (its {axis}: {known}); the gate measures the "
                        "scenario's own cells",
                        {"value": _show(value), "axis": axis, "at": ("gate", axis, index),
                         "known": ", ".join(sorted({str(v) for v in present}))},
                    )  # fmt: skip
        if not any(self.gate.selects(cell) for cell in cells):
            raise PydanticCustomError(
                "scenario_gate_empty",
                "no cell of the scenario has all of these at once (each value is in the scenario, their "
                "combination is not); widen the subset",
                {"at": ("gate",)},
            )
        return self

    @field_validator("threads", mode="before")
    @classmethod
    def _check_threads(cls, value: Any) -> Any:
        if isinstance(value, str) and value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise PydanticCustomError(
            "scenario_threads", "Input should be an integer >= 1 or 'auto' (got {value})", {"value": _show(value)}
        )

    # -- where it came from ---------------------------------------------------------------

    @property
    def source_path(self) -> Path | None:
        """The file it was loaded from (None when loaded from text)."""
        return self._source_path

    @property
    def source_name(self) -> str:
        """The name used in messages: the path as given, or the text's ``source``."""
        return self._source_name

    @property
    def source_text(self) -> str:
        """The scenario's text as read (for storing an exact copy with the results)."""
        return self._source_text

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        """The 1-based line of a key path, or of its nearest enclosing key that is in the file."""
        path = tuple(loc)
        while True:
            if path in self._locations:
                return self._locations[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, loc: Iterable[str | int], message: str) -> ScenarioError:
        """A ScenarioError ``"{file}:{line}: {dotted.loc}: {message}"`` to raise (not raised here)."""
        path = tuple(loc)
        return ScenarioError(_format(self._source_name, self.line_of(path), path, message))

    # -- identity -----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON of the validated content (not of the text)."""
        # the gate subset is left out: it chooses what bench gate measures, not what a run measures
        # machines: left out when absent, so scenarios keep the fingerprint they had before it existed
        content = self.model_dump(mode="json", exclude={"gate"} if self.machines else {"gate", "machines"})
        if content["loadgen"].get("generator") == "auto":  # the default: fingerprints as before it existed
            del content["loadgen"]["generator"]
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Scenario):
            return self.model_dump() == other.model_dump()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    # -- expansion ------------------------------------------------------------------------------

    def resolved_threads(self, cpu_count: int) -> int:
        """``threads`` as a number: itself, or for ``auto`` the CPUs left after ``cpu.reserve`` (at least 1)."""
        if isinstance(cpu_count, bool) or not isinstance(cpu_count, int) or cpu_count < 1:
            msg = f"cpu_count must be an integer >= 1, got {cpu_count!r}"
            raise ValueError(msg)
        return self.auto_cpus(cpu_count) if self.threads == "auto" else int(self.threads)

    def auto_cpus(self, cpu_count: int) -> int:
        """The CPUs ``threads: auto`` shares out: all usable ones but ``cpu.reserve``, at least one."""
        return max(1, cpu_count - self.cpu.reserve)

    def cells(self, cpu_count: int) -> list[Cell]:
        """Same as :func:`expand_cells`."""
        from harness.scenario.expansion import expand_cells

        return expand_cells(self, cpu_count)
