"""Cost per inference, capacity, Pareto frontiers and budgets: the arithmetic behind a purchase.

Prices come from the catalog shipped in ``harness/data/prices.yaml`` (dated, each with its public
source) or from the scenario's own ``hourly_usd``. Nothing here imports a runtime.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

SECONDS_PER_HOUR = 3600.0
#: a month, for monthly costs: 30 days
DAYS_PER_MONTH = 30.0


@dataclass(frozen=True)
class Instance:
    """One row of the price catalog."""

    cloud: str
    instance: str
    vcpus: int
    memory_gib: float
    gpu: str | None
    hourly_usd: float
    region: str
    as_of: str
    source: str

    @property
    def key(self) -> str:
        return f"{self.cloud}/{self.instance}"


@lru_cache(maxsize=1)
def catalog() -> tuple[Instance, ...]:
    """The shipped price catalog."""
    import yaml

    text = resources.files("harness").joinpath("data/prices.yaml").read_text()
    data = yaml.safe_load(text)
    return tuple(Instance(**{**row, "as_of": str(row["as_of"])}) for row in data["instances"])


class UnknownInstance(KeyError):
    def __init__(self, name: str, suggestions: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.suggestions = suggestions

    def __str__(self) -> str:
        hint = f"; nearest: {', '.join(self.suggestions)}" if self.suggestions else ""
        return (
            f"instance '{self.name}' is not in the price catalog{hint} (`bench list instances` shows them all; "
            "or give cost: {hourly_usd: PRICE})"
        )


def find_instance(name: str) -> Instance:
    """An instance by ``cloud/instance`` or by its bare name when that is unique (case-insensitive)."""
    wanted = name.strip().lower()
    rows = catalog()
    matches = [r for r in rows if wanted in (r.key.lower(), r.instance.lower())]
    if len(matches) == 1:
        return matches[0]
    names = [r.key for r in rows]
    if matches:  # the bare name exists in several clouds
        raise UnknownInstance(name, [r.key for r in matches])
    close = difflib.get_close_matches(wanted, [n.lower() for n in names], n=3, cutoff=0.5)
    close += difflib.get_close_matches(wanted, [r.instance.lower() for r in rows], n=3, cutoff=0.5)
    suggestions = [r.key for r in rows if r.gpu and wanted in r.gpu.lower()]  # "a100": the A100 hosts
    for item in close:
        for row in rows:
            if item in (row.key.lower(), row.instance.lower()) and row.key not in suggestions:
                suggestions.append(row.key)
    raise UnknownInstance(name, suggestions[:3])


# --------------------------------------------------------------------------------------------
# cost arithmetic
# --------------------------------------------------------------------------------------------


def cost_per_million(hourly_usd: float, throughput_sps: float | None) -> float | None:
    """USD per million inferences: hourly price / (samples/s x 3600) x 1e6."""
    if not throughput_sps or throughput_sps <= 0:
        return None
    return hourly_usd / (throughput_sps * SECONDS_PER_HOUR) * 1e6


def instances_needed(target_sps: float, throughput_sps: float | None, utilisation: float) -> int | None:
    """Machines needed to serve ``target_sps`` samples/s with each run at ``utilisation`` of what
    it was measured to sustain."""
    if not throughput_sps or throughput_sps <= 0:
        return None
    return max(1, math.ceil(target_sps / (throughput_sps * utilisation)))


def monthly_usd(
    hourly_usd: float, throughput_sps: float | None, daily_volume: float, utilisation: float
) -> float | None:
    """USD a 30-day month of ``daily_volume`` inferences a day costs at ``utilisation``."""
    if not throughput_sps or throughput_sps <= 0:
        return None
    hours_per_day = daily_volume / (throughput_sps * utilisation * SECONDS_PER_HOUR)
    return hours_per_day * DAYS_PER_MONTH * hourly_usd


@dataclass(frozen=True)
class Price:
    hourly_usd: float
    source: str  # "catalog: aws/c7i.xlarge, us-east-1, 2024-06, https://..." or "scenario"
    instance: str | None = None


def price_of(cost: Mapping[str, Any]) -> Price | None:
    """The price a scenario's ``cost`` block names (None without one)."""
    if not cost:
        return None
    if cost.get("hourly_usd") is not None:
        return Price(float(cost["hourly_usd"]), "scenario (hourly_usd)", cost.get("instance"))
    if cost.get("instance"):
        row = find_instance(cost["instance"])
        source = f"catalog: {row.key}, {row.region}, on-demand as of {row.as_of}, {row.source}"
        return Price(row.hourly_usd, source, row.key)
    return None


def energy_per_million(joules_per_inference: Any, usd_per_kwh: Any) -> float | None:
    """USD of the energy of a million inferences (3.6e6 J a kWh), or None without both figures."""
    if not isinstance(joules_per_inference, int | float) or not isinstance(usd_per_kwh, int | float):
        return None
    return float(joules_per_inference) * 1e6 / 3.6e6 * float(usd_per_kwh)


def cell_costs(record: Mapping[str, Any], cost: Mapping[str, Any]) -> dict[str, Any]:
    """The economics of one measured cell under the scenario's ``cost`` block."""
    price = price_of(cost)
    if price is None or record.get("status") != "ok":
        return {}
    sps = record.get("throughput_sps")
    utilisation = float(cost.get("utilisation") or 1.0)
    out: dict[str, Any] = {
        "hourly_usd": price.hourly_usd,
        "price_source": price.source,
        "cost_per_million_usd": cost_per_million(price.hourly_usd, sps),
    }
    energy = energy_per_million(record.get("gpu_energy_per_inference_j"), cost.get("energy_usd_per_kwh"))
    if energy is not None:
        out["energy_usd_per_million"] = energy
        if out["cost_per_million_usd"] is not None:
            out["cost_per_million_usd"] += energy
    if cost.get("target_qps"):
        out["instances_needed"] = instances_needed(float(cost["target_qps"]), sps, utilisation)
    if cost.get("daily_volume"):
        out["monthly_usd"] = monthly_usd(price.hourly_usd, sps, float(cost["daily_volume"]), utilisation)
    return out


# --------------------------------------------------------------------------------------------
# Pareto frontiers
# --------------------------------------------------------------------------------------------

Objective = tuple[str, str]  # (field, "min" | "max")


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` in every objective (all to minimise) and better in one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[int]:
    """Indices of the rows no other row dominates, among the rows that have every objective."""
    if not objectives:
        raise ValueError("a frontier needs at least one objective")
    for _, sense in objectives:
        if sense not in ("min", "max"):
            raise ValueError(f"objective sense must be 'min' or 'max', got {sense!r}")
    points: list[tuple[int, tuple[float, ...]]] = []
    for index, row in enumerate(rows):
        found = [row.get(field) for field, _ in objectives]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in found):
            continue
        values = [float(v) for v in found if v is not None]  # none is None here: for the type checker
        signed = (v if sense == "min" else -v for v, (_, sense) in zip(values, objectives, strict=True))
        points.append((index, tuple(signed)))
    return [i for i, p in points if not any(dominates(q, p) for _, q in points)]


#: the frontiers the report and the table flag
FRONTIERS: dict[str, tuple[Objective, ...]] = {
    "latency_throughput": (("p99_ms", "min"), ("throughput_sps", "max")),
    "cost_latency": (("cost_per_million_usd", "min"), ("p99_ms", "min")),
    "cost_accuracy": (("cost_per_million_usd", "min"), ("agreement", "max")),
}


# --------------------------------------------------------------------------------------------
# budgets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    field: str
    kind: str  # "max": the value must not exceed the limit; "min": must reach it
    unit: str
    meaning: str
    #: what verdicts call the metric ("p99 3.5 ms > limit 2 ms")
    name: str = ""


#: the budgets a scenario may set: key -> what it limits
BUDGETS: dict[str, Budget] = {
    "p50_ms": Budget("p50_ms", "max", "ms", "median latency", "p50"),
    "p90_ms": Budget("p90_ms", "max", "ms", "90th percentile latency", "p90"),
    "p95_ms": Budget("p95_ms", "max", "ms", "95th percentile latency", "p95"),
    "p99_ms": Budget("p99_ms", "max", "ms", "99th percentile latency", "p99"),
    "p99_9_ms": Budget("p99_9_ms", "max", "ms", "99.9th percentile latency", "p99.9"),
    "peak_memory_mb": Budget(
        "peak_rss_mb_measure", "max", "MiB", "resident memory high-water mark while measuring", "peak memory"
    ),
    "cost_per_million_usd": Budget(
        "cost_per_million_usd", "max", "USD", "cost per million inferences", "cost per million"
    ),
    "min_throughput_sps": Budget("throughput_sps", "min", "samples/s", "throughput", "throughput"),
    "min_agreement": Budget(
        "agreement", "min", "fraction", "agreement with the reference (the task's measure)", "agreement"
    ),
    "min_task_metric": Budget(
        "task_value", "min", "fraction", "AUC or accuracy on the labelled validation set", "task metric"
    ),
}


def budget_verdicts(record: Mapping[str, Any], budgets: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Per budget: the limit, the cell's value and ``ok`` (True, False, or None when the cell has
    no such measurement, offline having no percentiles, or when its figures are not a quiet
    machine's). A cell that did not measure breaks them all."""
    out: dict[str, dict[str, Any]] = {}
    for key, limit in budgets.items():
        budget = BUDGETS[key]
        if record.get("status") != "ok":
            out[key] = {"limit": limit, "value": None, "ok": False, "why": f"no measurement ({record.get('status')})"}
            continue
        if not is_trusted(record):
            why = f"not judged: {untrusted_reason(record)}"
            out[key] = {"limit": limit, "value": record.get(budget.field), "ok": None, "why": why}
            continue
        value = record.get(budget.field)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out[key] = {"limit": limit, "value": None, "ok": None, "why": "not measured for this cell"}
            continue
        ok = value <= limit if budget.kind == "max" else value >= limit
        load = (record.get("config") or {}).get("load", "single_stream")
        per = (" per call" if load == "single_stream" else " per query") if key in LATENCY_FIELDS else ""
        out[key] = {"limit": limit, "value": value, "ok": ok, "why": _verdict_text(budget, value, limit, ok, per)}
    return out


def _verdict_text(budget: Budget, value: float, limit: float, ok: bool, per: str = "") -> str:
    """What happened, the measured value first: "p99 per call 3.556 ms > limit 0.0001 ms" when
    broken, "p99 per call 0.5 ms <= limit 3 ms" when met. A latency budget is judged on the cell's
    own percentile: per call of batch_size samples in a single-stream cell (a request also waits for
    its batch: the report's answers judge that, :func:`meets_budgets`), per query under LoadGen."""
    sign = {("max", True): "<=", ("max", False): ">", ("min", True): ">=", ("min", False): "<"}[budget.kind, ok]
    unit = "" if budget.unit == "fraction" else f" {budget.unit}"
    return f"{budget.name or budget.field}{per} {value:.4g}{unit} {sign} limit {limit:g}{unit}"


def broken(records: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], str, dict[str, Any]]]:
    """(record, budget, verdict) for every budget a cell broke."""
    return [
        (rec, key, verdict)
        for rec in records
        if rec.get("status") != "skipped"
        for key, verdict in (rec.get("budgets") or {}).items()
        if verdict.get("ok") is False
    ]


def cheapest(
    rows: Sequence[dict[str, Any]], meets: Callable[[dict[str, Any]], str | None], key: str
) -> tuple[dict[str, Any] | None, list[tuple[dict[str, Any], str]]]:
    """The row with the lowest ``key`` among those ``meets`` accepts (it returns why not, or None),
    and every other row with the reason it lost."""
    losers: list[tuple[dict[str, Any], str]] = []
    candidates = []
    for row in rows:
        why = meets(row)
        if why:
            losers.append((row, why))
        elif row.get(key) is None:
            losers.append((row, f"no {key}"))
        else:
            candidates.append(row)
    candidates.sort(key=lambda r: r[key])
    if not candidates:
        return None, losers
    best, rest = candidates[0], candidates[1:]
    for row in rest:
        losers.append((row, f"meets the SLO but costs more: {key} {row[key]:.3g} > {best[key]:.3g}"))
    return best, losers


#: judges a row's latency for an SLO: (the value in ms, how it was had) or (None, why it is left out)
LatencyOf = Callable[[Mapping[str, Any]], tuple[float | None, str]]


def _p99_as_measured(row: Mapping[str, Any]) -> tuple[float | None, str]:
    p99 = row.get("p99_ms")
    return (None, "no p99 (offline measures throughput only)") if p99 is None else (float(p99), "as measured")


def median_repeat(repeats: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The record that stands for a cell's repeats: among the measured ones, trusted ones first, the
    one of median throughput (the lower middle of an even count); the first when none measured."""
    ok = [r for r in repeats if r.get("status") == "ok"]
    pool = [r for r in ok if is_trusted(r)] or ok
    if not pool:
        return repeats[0]
    pool = sorted(pool, key=lambda r: _finite(r.get("throughput_sps")))
    return pool[(len(pool) - 1) // 2]


def _finite(value: Any) -> float:
    """A number as a float to order by: 0 for a missing, non-numeric or non-finite one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return float(value)


def one_per_cell(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One record per cell, in the records' order: its :func:`median_repeat`. Answers and
    recommendations judge a cell by it, not by its luckiest repeat."""
    by_cell: dict[object, list[Mapping[str, Any]]] = {}
    for rec in records:  # a record without a cell id (not a journal's) stands alone
        by_cell.setdefault(rec.get("cell_id") or id(rec), []).append(rec)
    return [median_repeat(repeats) for repeats in by_cell.values()]


def wrong_outputs(row: Mapping[str, Any]) -> str | None:
    """Why a cell's outputs disqualify it from any answer (not all finite, or its fidelity check
    failed), or None."""
    if row.get("outputs_finite") is False:
        return "its outputs were not all finite numbers"
    if row.get("fidelity_ok") is False:
        return f"fidelity failed: {row.get('fidelity_reason') or 'outputs too far from the fp32 reference'}"
    return None


def slo_check(
    p99_ms: float | None,
    min_throughput: float | None,
    min_agreement: float | None = None,
    latency: LatencyOf | None = None,
) -> Callable[[dict[str, Any]], str | None]:
    """A ``meets`` for :func:`cheapest`: why a cell misses the SLO, or None. An untrusted cell
    misses it (its figures are not a quiet machine's), and so does one whose fidelity failed or whose
    outputs were not finite (:func:`wrong_outputs`); ``latency`` says what a row's p99 is for the
    SLO (:func:`request_latency`; default: the p99 as measured)."""
    latency_of = latency or _p99_as_measured

    def meets(row: dict[str, Any]) -> str | None:
        if row.get("status") != "ok":
            return f"not measured ({row.get('status')}: {str(row.get('reason', ''))[:80]})"
        why_not = untrusted_reason(row)
        if why_not:
            return f"untrusted: {why_not}"
        wrong = wrong_outputs(row)
        if wrong:  # a fast wrong answer is no answer, an SLO on agreement or not
            return wrong
        if min_agreement is not None:
            agreement = row.get("agreement")
            if agreement is None:
                return f"no agreement measured ({row.get('fidelity_skipped') or 'no reference'})"
            if agreement < min_agreement:
                return f"agreement {agreement:.4f} < {min_agreement:g}"
        if p99_ms is not None:
            p99, how = latency_of(row)
            if p99 is None:
                return how
            if p99 > p99_ms:
                return f"p99 {p99:.3f} ms > {p99_ms:g} ms ({how})"
        if min_throughput is not None and (row.get("throughput_sps") or 0) < min_throughput:
            return f"throughput {row.get('throughput_sps') or 0:,.0f} < {min_throughput:,.0f} samples/s"
        return None

    return meets


# --------------------------------------------------------------------------------------------
# trust: whether a cell's figures are a quiet machine's
# --------------------------------------------------------------------------------------------


def is_trusted(record: Mapping[str, Any]) -> bool:
    """Whether a cell's figures were measured on a quiet machine. Runs record ``trusted`` (false
    when every attempt at measuring the cell was disturbed); in runs made before that, a cell
    still ``noisy`` after its re-measurement is untrusted. Every reader (answers, frontiers, charts,
    ``bench recommend``) asks here, so the rule lives in one place."""
    trusted = record.get("trusted")
    if trusted is not None:
        return bool(trusted)
    return not record.get("noisy")


def untrusted_reason(record: Mapping[str, Any]) -> str | None:
    """Why a cell is untrusted, in words; None when it is trusted."""
    if is_trusted(record):
        return None
    if record.get("trusted") is not None:
        return str(record.get("untrusted_reason") or "the machine was disturbed while it was measured")
    fraction = record.get("noise_fraction")
    share = f"{fraction:.0%}" if isinstance(fraction, (int, float)) else "more than the noise threshold"
    attempts = record.get("attempts")
    tries = f", the quieter of its {attempts} attempts" if isinstance(attempts, int) and attempts > 1 else ""
    return f"other processes used {share} of the CPUs while it was measured (noise_fraction{tries})"


# --------------------------------------------------------------------------------------------
# latency per request: what an SLO on requests sees, batching included
# --------------------------------------------------------------------------------------------

#: latency fields judged per request (the percentiles a budget or an SLO may name)
LATENCY_FIELDS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99_9_ms")


@dataclass(frozen=True)
class RequestLatency:
    """How one run's latency is judged per request, for an SLO on requests that arrive one by one.

    - ``server``: the run has server cells: their latency runs from each query's scheduled
      arrival (a query is one request) to its completion, queueing and dynamic batching included.
      Only they are judged; a single-stream cell's latency is per call, not per request at load.
    - ``gathering``: single-stream cells only, a request rate ``qps`` known (requests, i.e.
      samples, per second reaching the one queue that fills each batch): a batch-B cell's latency
      per request is estimated as its latency per call plus (B - 1) / qps, the time the first
      request of a batch waits for the B - 1 after it (see :func:`request_latency`).
    - ``per_call``: single-stream only, no rate known: batch 1 is judged per call (a request is a
      call); batch > 1 is left out, since how long a request waits for its batch is unknown.
    """

    basis: Literal["server", "gathering", "per_call"]
    qps: float | None = None
    #: where ``qps`` came from ("--qps", "cost.target_qps")
    qps_source: str = ""

    @property
    def fleet(self) -> bool:
        """Whether ``qps`` is a whole fleet's rate (cost.target_qps plans the machines that serve it),
        each cell's machines sharing it, rather than the rate reaching one queue (--qps)."""
        return self.qps_source == FLEET_RATE_SOURCE

    def describe(self) -> str:
        """What was done, for the report and ``bench recommend``."""
        if self.basis == "server":
            return (
                "latency per request as the run's server cells measured it: from each query's scheduled arrival to "
                "its completion, queueing and dynamic batching included; single-stream cells (latency per call, "
                "no queue) are left out of latency answers"
            )
        if self.basis == "gathering":
            share = (
                f"Q = {self.qps:,.0f} requests/s ({self.qps_source}) shared by the machines each cell needs to serve "
                "it (instances_needed), one queue each"
                if self.fleet
                else f"Q = {self.qps:,.0f} requests/s ({self.qps_source}) reaching one queue"
            )
            return (
                f"latency per request estimated, not measured: a batch-B cell's p99 per call plus (B - 1) / Q, the "
                f"time the first request of a batch waits for B - 1 more, at {share}, arriving evenly; batch 1 as "
                "measured; a cell slower than the rate reaching it is left out (its queue would grow without bound)"
            )
        return (
            "latency per request: batch 1 as measured (one request a call); batch > 1 left out of latency answers: "
            "a request waits for its batch to fill, and no request rate is known to say how long "
            "(give cost.target_qps in the scenario, or bench recommend --qps Q)"
        )


def meets_budgets(rec: Mapping[str, Any], basis: RequestLatency) -> str | None:
    """Why a cell misses the run's budgets, or None, as the report's answers and its machine ranking
    judge them: latency budgets per request under ``basis`` (a cell left out of latency answers cannot
    show it meets one; the run's own verdicts, ``budgets``, judge them per call); the others as the run
    judged them."""
    for key, verdict in (rec.get("budgets") or {}).items():
        if key in LATENCY_FIELDS:
            value, how = request_latency(rec, basis, key)
            if value is None:
                return f"{key}: {how}"
            limit = float(verdict.get("limit"))
            if value > limit:
                return f"{key.removesuffix('_ms').replace('_', '.')} {value:.3g} ms per request > {limit:g} ms ({how})"
        elif verdict.get("ok") is False:
            return f"{key}: {verdict.get('why', '')}"
    return None


#: the ``qps_source`` of a rate that is a fleet's (the scenario's cost.target_qps), not one queue's
FLEET_RATE_SOURCE = "cost.target_qps"


def queue_rate(record: Mapping[str, Any], basis: RequestLatency) -> tuple[float, str]:
    """The request rate reaching one of a cell's queues under ``basis`` (a gathering basis), and how
    it was had: a fleet's rate (cost.target_qps) over the cell's ``instances_needed`` machines, each
    batching its own share; --qps as given (the rate at one queue)."""
    assert basis.qps is not None
    machines = record.get("instances_needed")
    if basis.fleet and isinstance(machines, int) and machines > 1:
        return basis.qps / machines, f"{basis.qps:,.0f}/s ({basis.qps_source}) over {machines} machines"
    return basis.qps, f"{basis.qps:,.0f}/s ({basis.qps_source})"


def latency_basis(records: Iterable[Mapping[str, Any]], qps: float | None, qps_source: str = "") -> RequestLatency:
    """How a run's latency is judged per request (:class:`RequestLatency`): its server cells where
    it has any, else the gathering estimate at ``qps`` (None: no rate known)."""
    if any(r.get("status") == "ok" and (r.get("config") or {}).get("load") == "server" for r in records):
        return RequestLatency("server")
    if qps is not None and qps > 0:
        return RequestLatency("gathering", float(qps), qps_source)
    return RequestLatency("per_call")


def gathering_ms(batch_size: int, qps: float) -> float:
    """Milliseconds the first request of a batch waits for the ``batch_size - 1`` after it, at
    ``qps`` requests/s arriving evenly: (B - 1) / qps. It is the longest wait in the batch, and
    1/B of the requests wait it, so for B < 100 (ceil(0.99 B) = B) it is the wait of the 99th-percentile request.
    Poisson arrivals at the same mean rate wait (B - 1) / qps on average, longer in a slow
    stretch."""
    return (batch_size - 1) / qps * 1e3


def request_latency(
    record: Mapping[str, Any], basis: RequestLatency, field: str = "p99_ms"
) -> tuple[float | None, str]:
    """A cell's latency ``field`` (p99_ms, p50_ms ...) per request under ``basis``: (ms, how it
    was had) or (None, why the cell is left out of latency answers).

    The gathering estimate adds (B - 1) / qps, the first request's wait (:func:`gathering_ms`),
    to the call's own percentile: the latency of a request that opens its batch and then meets a
    call as slow as that percentile. No request of the batch waits longer than the first, so with
    arrivals evenly spaced this is an upper bound of the requests' percentile; for p99 and
    B < 100 it is also close to it, as the batch's first requests (1/B of all) wait that long.
    For p50 it overstates (the median request waits about half as long). What it leaves out: a
    request queued behind a call still running (a machine near its capacity), and Poisson
    bursts; a server run measures both."""
    config = record.get("config") or {}
    load = config.get("load", "single_stream")
    batch = int(config.get("batch_size") or 1)
    value = record.get(field)
    name = field.removesuffix("_ms").replace("_", ".")
    if basis.basis == "server":
        if load != "server":
            return None, f"{load}: latency per call, not per request under load (this run's server cells measure that)"
        if value is None:
            return None, f"no {name} (no rate met the bound)"
        rate = record.get("target_qps")
        at = f" at {rate:,.0f} queries/s" if isinstance(rate, (int, float)) else ""
        return float(value), f"measured per request{at}, batching up to b{batch} included"
    if load == "offline":
        return None, f"no {name} (offline measures throughput only)"
    if load != "single_stream":
        return None, f"{load}: latency per query issued back to back, not per request at a rate"
    if value is None:
        return None, f"no {name}"
    rate, rate_how = queue_rate(record, basis) if basis.basis == "gathering" and basis.qps else (None, "")
    capacity = record.get("throughput_sps")
    if rate is not None and isinstance(capacity, (int, float)) and capacity < rate:
        return None, (
            f"its throughput {capacity:,.0f} samples/s is under the {rate:,.0f} requests/s reaching it "
            f"({rate_how}): its queue would grow without bound"
        )
    if batch == 1:
        return float(value), "per call = per request at batch 1"
    if rate is not None:
        wait = gathering_ms(batch, rate)
        return float(value) + wait, (
            f"estimate: {name} per call {float(value):.3g} ms + {wait:.3g} ms gathering {batch - 1} more requests "
            f"at {rate:,.0f}/s" + (f" ({rate_how})" if rate != basis.qps else "")
        )
    return None, (
        f"batch {batch}: a request also waits for {batch - 1} more to fill the batch, unknown without a request "
        "rate (--qps or cost.target_qps)"
    )
