"""Scenario files: safe YAML loading, a strict schema, and expansion into cells.

A scenario is a small declarative YAML file (see ``scenarios/rec.yaml``). :func:`load_scenario`
reads it defensively (size limit, ``SafeLoader`` only, alias-bomb and depth limits, duplicate keys
rejected) and validates it with a strict pydantic schema. Every problem becomes one line of a
:class:`~harness.errors.ScenarioError`, ``"{file}:{line}: {key.path}: {message}"``, never a
traceback. Loading is pure: no device probing, no environment writes, no runtime imports; the
plugins are asked (for the model shorthands ``Model.file_shorthand`` declares) only when ``model:``
may use one, through the ``registries`` a command passes (else the default plugins).

:func:`expand_cells` turns a validated scenario into the ordered list of :class:`~harness.cells.Cell`.

The package, in the order a scenario flows through it: ``safe_yaml`` (reading YAML defensively),
``types``, ``model_ref`` and ``schema`` (the strict pydantic schema), ``messages`` and
``validation`` (every problem one line), ``loading`` (file to :class:`Scenario`), ``expansion``
(scenario to cells, and its description).
"""

from __future__ import annotations

from harness.scenario.expansion import (
    describe,
    expand_cells,
    load_variants,
    loadgen_min_queries,
    loadgen_seconds,
)
from harness.scenario.loading import load_scenario, load_scenario_text
from harness.scenario.model_ref import ModelRef, RegistriesSource
from harness.scenario.safe_yaml import MAX_ALIASES, MAX_DEPTH, MAX_NODES, MAX_SCENARIO_BYTES
from harness.scenario.schema import (
    BackendEntry,
    CostSettings,
    FidelitySettings,
    GateSubset,
    Limits,
    LoadGenSettings,
    Measurement,
    PeakSearchSettings,
    Scenario,
)
from harness.scenario.types import LOADS, PRECISIONS

__all__ = [
    "LOADS",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_SCENARIO_BYTES",
    "PRECISIONS",
    "BackendEntry",
    "CostSettings",
    "FidelitySettings",
    "GateSubset",
    "Limits",
    "LoadGenSettings",
    "Measurement",
    "ModelRef",
    "PeakSearchSettings",
    "RegistriesSource",
    "Scenario",
    "describe",
    "expand_cells",
    "load_scenario",
    "load_scenario_text",
    "load_variants",
    "loadgen_min_queries",
    "loadgen_seconds",
]
