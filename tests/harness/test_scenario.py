"""Tests of harness.scenario: safe loading, the schema's error messages, fingerprints and expansion."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cells import Cell
from harness.errors import ScenarioError
from harness.scenario import (
    MAX_SCENARIO_BYTES,
    BackendEntry,
    Limits,
    Measurement,
    ModelRef,
    Scenario,
    describe,
    expand_cells,
    load_scenario,
    load_scenario_text,
)

REC = Path(__file__).resolve().parents[2] / "scenarios" / "rec.yaml"

MINIMAL = """\
name: t
model: m
backends: [pytorch]
batch_sizes: [1, 8]
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path | str) -> str:
    """The message of the ScenarioError that loading ``path`` raises, checked to be traceback-free."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "Traceback" not in message
    assert 'File "' not in message
    assert message.strip() == message and message
    return message


def assert_line(message: str, path: Path | str, line: int | None, *fragments: str) -> str:
    """One line of ``message`` starts with ``{path}:{line}: `` and contains every fragment; return it."""
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    matches = [m for m in message.splitlines() if m.startswith(prefix) and all(f in m for f in fragments)]
    assert matches, f"no line starting {prefix!r} with {fragments} in:\n{message}"
    return matches[0]


# --------------------------------------------------------------------------------------------
# valid files
# --------------------------------------------------------------------------------------------


def test_rec_yaml_loads_and_expands_to_48_distinct_cells() -> None:
    scenario = load_scenario(REC)
    assert scenario.name == "rec"
    assert scenario.model == ModelRef(name="dlrm-small")
    assert isinstance(scenario.backends, tuple)
    assert all(isinstance(b, BackendEntry) for b in scenario.backends)
    assert scenario.threads == "auto"
    assert scenario.measurement.min_duration_s == 1.0
    assert scenario.measurement.max_duration_s == 4.0
    assert scenario.limits.timeout_s == 300
    assert scenario.source_path == REC
    assert scenario.source_text == REC.read_text(encoding="utf-8")

    cells = expand_cells(scenario, cpu_count=2)
    # pytorch eager + compile, onnxruntime, openvino x 3 precisions x 4 batch sizes
    assert len(cells) == 4 * 3 * 4 == 48
    assert len({c.id for c in cells}) == 48
    assert {c.backend for c in cells} == {"pytorch", "onnxruntime", "openvino"}
    assert {c.backend_options["mode"] for c in cells if c.backend == "pytorch"} == {"eager", "compile"}
    assert {c.precision for c in cells} == {"fp32", "int8", "bf16"}
    assert all(c.threads == 2 and c.model == "dlrm-small" and c.device == "cpu" for c in cells)

    # the default sweep's worst-case measuring time leaves room for preparing within 10 minutes
    m = scenario.measurement
    assert len(cells) * m.repeats * (m.warmup_s + m.max_duration_s) < 10 * 60 * 0.4

    # a stored copy reloads to the same scenario
    copy = load_scenario_text(scenario.source_text, "copy.yaml")
    assert copy == scenario
    assert copy.fingerprint() == scenario.fingerprint()
    assert copy.source_path is None

    summary = describe(scenario, cpu_count=2)
    assert "rec" in summary and "dlrm-small" in summary and "48" in summary


def test_full_file_round_trip(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        schema_version: 1
        name: full-1.0_x
        description: every key
        model: {name: dlrm-small, options: {tables: 4, tiny: true}}
        backends:
          - onnxruntime
          - name: pytorch
            options: {compile_mode: default}
            sweep:
              mode: [eager, compile]
              fuse: [true, false]
            precisions: [fp32]
        devices: [cpu, "cuda:1"]
        precisions: [fp32, int8]
        batch_sizes: [1, 64]
        threads: 3
        load: single_stream
        seed: 7
        measurement:
          percentiles: [99, 50, 99.9]
          headline_percentile: 99.9
          confidence: 0.9
          warmup_s: 0
          warmup_queries: 1
          min_duration_s: 1
          max_duration_s: 1
          min_queries: 1000
          ci_rel_width: 0.1
          noise_threshold: 1
          repeats: 3
        limits:
          timeout_s: 60
          memory_mb: 64
        """,
    )
    s = load_scenario(path)
    assert s.model == ModelRef(name="dlrm-small", options={"tables": 4, "tiny": True})
    assert s.backends[0] == BackendEntry(name="onnxruntime")
    assert s.backends[1].sweep == {"mode": ("eager", "compile"), "fuse": (True, False)}
    assert s.backends[1].precisions == ("fp32",)
    assert s.devices == ("cpu", "cuda:1")
    assert s.threads == 3
    assert s.measurement == Measurement(
        percentiles=(50.0, 99.0, 99.9),  # sorted
        headline_percentile=99.9,
        confidence=0.9,
        warmup_s=0.0,
        warmup_queries=1,
        min_duration_s=1.0,
        max_duration_s=1.0,
        min_queries=1000,
        ci_rel_width=0.1,
        noise_threshold=1.0,
        repeats=3,
    )
    assert s.limits == Limits(timeout_s=60.0, memory_mb=64)
    assert s.line_of(("measurement", "repeats")) == 30
    assert s.line_of(("backends", 1, "sweep", "fuse")) == 11
    assert s.line_of(("backends", 1, "sweep", "nope", 3)) == 9  # nearest enclosing key
    cells = expand_cells(s, cpu_count=8)
    # onnxruntime: 2 devices x 2 precisions x 2 batches; pytorch: 4 combos x 2 devices x 1 x 2
    assert len(cells) == 8 + 16
    assert cells[-1].backend_options == {"compile_mode": "default", "mode": "compile", "fuse": False}
    assert all(c.threads == 3 for c in cells)
    assert s.model_dump(mode="json")["measurement"]["percentiles"] == [50.0, 99.0, 99.9]


def test_defaults_and_shorthands() -> None:
    s = load_scenario_text(MINIMAL)
    assert s.schema_version == 1
    assert s.devices == ("cpu",)
    assert s.precisions == ("fp32",)
    assert s.threads == "auto"
    assert s.load == ("single_stream",)
    assert s.concurrency == (1,)
    assert s.seed == 0
    assert s.measurement == Measurement()
    assert s.measurement.headline_percentile in s.measurement.percentiles
    assert s.limits == Limits()
    assert s.limits.memory_mb is None
    assert isinstance(s.model, ModelRef) and s.model.options == {}
    assert s.backends == (BackendEntry(name="pytorch"),)
    assert s.source_path is None


def test_models_are_frozen() -> None:
    s = load_scenario_text(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        s.name = "other"  # type: ignore[misc]


def test_dates_and_exponents_are_read_sensibly() -> None:
    s = load_scenario_text(MINIMAL + "description: 2024-01-01\nmeasurement: {ci_rel_width: 5e-2}\n")
    assert s.description == "2024-01-01"
    assert s.measurement.ci_rel_width == 0.05


# --------------------------------------------------------------------------------------------
# schema errors: file, line, key path and the fix
# --------------------------------------------------------------------------------------------


def test_unknown_top_level_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "seed: 1\nbatch_size: [4]\n")
    message = error_of(path)
    assert message == f"{path}:6: batch_size: unknown key 'batch_size'; did you mean 'batch_sizes'?"


def test_unknown_nested_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "measurement:\n  warmup_s: 1\n  max_duraton_s: 3\n")
    message = error_of(path)
    assert_line(message, path, 7, "measurement.max_duraton_s", "did you mean 'max_duration_s'?")
    backend = write(
        tmp_path,
        "name: t\nmodel: m\nbackends:\n  - name: pytorch\n    sweeps: {mode: [eager]}\nbatch_sizes: [1]\n",
        "b.yaml",
    )
    assert_line(error_of(backend), backend, 5, "backends.0.sweeps", "did you mean 'sweep'?")


def test_unknown_key_without_close_match_lists_the_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "limits:\n  zzz: 1\n")
    assert_line(error_of(path), path, 6, "limits.zzz", "allowed here: timeout_s, memory_mb")


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "seed: abc\nthreads: many\n")
    message = error_of(path)
    assert_line(message, path, 5, "seed: Input should be a valid integer (got 'abc')")
    assert_line(message, path, 6, "threads: Input should be an integer >= 1 or 'auto' (got 'many')")
    assert len(message.splitlines()) == 2


def test_negative_batch_size(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nmodel: m\nbackends: [pytorch]\n\n\n\nbatch_sizes: [1, 8, -4]\n")
    assert error_of(path) == f"{path}:7: batch_sizes.2: Input should be greater than 0 (got -4)"


def test_the_same_backend_entry_twice_points_at_the_repeat(tmp_path: Path) -> None:
    text = "name: t\nmodel: m\nbackends:\n  - pytorch\n  - {name: pytorch, options: {a: 1}}\n  - name: pytorch\n"
    path = write(tmp_path, text + "batch_sizes: [1]\n")
    assert_line(error_of(path), path, 6, "backends.2", "backend 'pytorch' is the same as at index 0", "remove one")


def test_duplicate_batch_sizes_point_at_the_repeat(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nmodel: m\nbackends: [pytorch]\nbatch_sizes:\n  - 1\n  - 8\n  - 8\n")
    assert_line(error_of(path), path, 7, "batch_sizes.2", "duplicate value 8", "remove it")


def test_max_duration_below_min(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "measurement:\n  min_duration_s: 5\n  max_duration_s: 2\n")
    line = assert_line(error_of(path), path, 7, "measurement.max_duration_s")
    assert "max_duration_s (2.0)" in line and "min_duration_s (5.0)" in line


def test_headline_not_in_percentiles(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "measurement:\n  percentiles: [50, 90]\n  headline_percentile: 99\n")
    assert_line(error_of(path), path, 7, "measurement.headline_percentile", "not one of percentiles [50, 90]")


def test_bad_precision_lists_the_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "precisions: [fp32, fp64]\n")
    line = assert_line(error_of(path), path, 5, "precisions.1")
    assert "'fp32', 'fp16', 'bf16' or 'int8'" in line and "(got 'fp64')" in line


@pytest.mark.parametrize(
    ("extra", "line", "fragment"),
    [
        ("devices: [gpu]\n", 5, "devices.0: Input should be 'cpu', 'cuda' or 'cuda:N'"),
        ("threads: 0\n", 5, "threads: Input should be an integer >= 1 or 'auto' (got 0)"),
        ("seed: -1\n", 5, "seed: Input should be greater than or equal to 0 (got -1)"),
        ("load: burst\n", 5, "load.0: Input should be 'single_stream', 'offline', 'server' or 'multi_stream'"),
        ("load: server\n", 5, "load: load 'server' needs loadgen.target_qps"),
        ("concurrency: 0\n", 5, "concurrency.0: Input should be greater than or equal to 1 (got 0)"),
        (
            "load: server\nloadgen: {target_qps: 0, latency_bound_ms: 5}\n",
            6,
            "loadgen.target_qps: a target rate must be above 0 queries/s (got 0)",
        ),
        (
            "load: server\nloadgen: {target_qps: [100, -1], latency_bound_ms: 5}\n",
            6,
            "loadgen.target_qps.1: a target rate must be above 0 queries/s (got -1)",
        ),
        ("loadgen: {target_qps: fast}\n", 5, "loadgen.target_qps: Input should be a rate in queries/s"),
        ("loadgen: {generator: spin}\n", 5, "loadgen.generator: Input should be 'auto' or 'loadgen'"),
        ("load: server\nloadgen: {target_qps: 100}\n", 5, "load: load 'server' needs loadgen.latency_bound_ms"),
        (
            "load: offline\nloadgen: {min_duration_s: 700}\n",
            6,
            "loadgen.min_duration_s: a LoadGen cell needs at least 700.5 s here",
        ),
        (
            "load: server\nloadgen: {target_qps: 1, latency_bound_ms: 5, min_duration_s: 1}\nlimits: {timeout_s: 60}\n",
            6,
            "which limits.timeout_s (60.0 s) cannot hold",
        ),
        (
            "loadgen: {peak_search: {min_qps: 10, max_qps: 5}}\n",
            5,
            "loadgen.peak_search.max_qps: max_qps (5.0) must be above min_qps (10.0)",
        ),
        ("schema_version: 2\n", 5, "schema_version: unsupported schema_version 2"),
        ("measurement: {confidence: 1.5}\n", 5, "measurement.confidence: Input should be less than 1"),
        ("measurement: {repeats: 101}\n", 5, "measurement.repeats: Input should be less than or equal to 100"),
        ("measurement: {warmup_s: .nan}\n", 5, "measurement.warmup_s"),
        ("measurement: {percentiles: [0, 50]}\n", 5, "measurement.percentiles.0: Input should be greater than 0"),
        ("measurement: {percentiles: []}\n", 5, "measurement.percentiles: Input should not be empty"),
        ("limits: {memory_mb: 10}\n", 5, "limits.memory_mb: Input should be greater than or equal to 64"),
        ("limits: {timeout_s: 0}\n", 5, "limits.timeout_s: Input should be greater than 0"),
        ("measurement: 3\n", 5, "measurement: Input should be a mapping (got 3)"),
        ("description: [a]\n", 5, "description: Input should be a valid string"),
    ],
)
def test_field_errors(tmp_path: Path, extra: str, line: int, fragment: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    assert_line(error_of(path), path, line, fragment)


def test_backend_errors_each_on_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: t
        model: m
        backends:
          - name: pytorch
            sweep: {mode: []}
            options: {x: [1]}
          - 5
          - name: ort
            options: {mode: a}
            sweep:
              mode: [b]
        batch_sizes: [1]
        """,
    )
    message = error_of(path)
    assert len(message.splitlines()) == 4
    assert_line(message, path, 5, "backends.0.sweep.mode: Input should not be empty")
    assert_line(message, path, 6, "backends.0.options.x", "single value")
    assert_line(message, path, 7, "backends.1: Input should be a backend name or a mapping")
    assert_line(message, path, 11, "backends.2.sweep.mode", "both fixed (options) and swept (sweep)")


def test_missing_required_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "# a comment\nname: t\nbackends: [pytorch]\n")
    message = error_of(path)
    assert_line(message, path, 2, "model: required key 'model' is missing; add it")
    assert_line(message, path, 2, "batch_sizes: required key 'batch_sizes' is missing")


def test_bad_name(tmp_path: Path) -> None:
    path = write(tmp_path, "model: m\nname: a/../b\nbackends: [pytorch]\nbatch_sizes: [1]\n")
    assert_line(error_of(path), path, 2, "name: a name may use only letters")


# --------------------------------------------------------------------------------------------
# safety
# --------------------------------------------------------------------------------------------


def test_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.write(MINIMAL.encode())
        handle.truncate(50 * 1024 * 1024)  # sparse: quick to make
    start = time.perf_counter()
    message = error_of(path)
    assert time.perf_counter() - start < 0.5
    assert message.startswith(f"{path}: ")
    assert "52,428,800 bytes" in message and "1,000,000 bytes" in message


def test_file_just_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "over.yaml"
    path.write_bytes(MINIMAL.encode() + b"#" * (MAX_SCENARIO_BYTES + 1 - len(MINIMAL)))
    assert "over the limit of 1,000,000 bytes" in error_of(path)
    with pytest.raises(ScenarioError, match="over the limit"):
        load_scenario_text(path.read_text())


def test_billion_laughs_is_refused_fast(tmp_path: Path) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    for name in "bcdefghi":  # 9 levels: 9**9 strings once expanded
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = name
    path = write(tmp_path, "\n".join(lines) + "\n")
    start = time.perf_counter()
    message = error_of(path)
    assert time.perf_counter() - start < 0.5
    assert message.startswith(f"{path}:")
    assert "alias bomb" in message and "100,000" in message


def test_too_many_aliases(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "x: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n")
    assert_line(error_of(path), path, 6, "more than 100 aliases")


def test_recursive_alias(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "x: &x [*x]\n")
    assert_line(error_of(path), path, 5, "recursive")


def test_deep_nesting(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "x: " + "[" * 5000 + "]" * 5000 + "\n")
    assert_line(error_of(path), path, 5, "nested more than")


def test_python_tag_is_refused_and_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> int:
        raise AssertionError("os.system was called")

    monkeypatch.setattr(os, "system", boom)
    path = write(tmp_path, MINIMAL + "seed: !!python/object/apply:os.system ['echo hacked']\n")
    message = error_of(path)
    assert message == (
        f"{path}:5: unsupported YAML tag '!!python/object/apply:os.system': a scenario holds only plain strings, "
        "numbers, booleans, null, lists and mappings; remove the tag"
    )


def test_local_tag_and_bad_standard_tag(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "seed: !custom 1\ndescription: !!binary aGk=\n")
    message = error_of(path)
    assert_line(message, path, 5, "unsupported YAML tag '!custom'")
    assert_line(message, path, 6, "unsupported YAML tag '!!binary'")
    bad = write(tmp_path, MINIMAL + "seed: !!int twelve\n", "int.yaml")
    assert_line(error_of(bad), bad, 5, "seed: cannot read 'twelve' as !!int")


def test_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "measurement:\n  warmup_s: 1\n  repeats: 2\n  warmup_s: 2\n")
    assert error_of(path) == f"{path}:8: measurement.warmup_s: duplicate key (first at line 6); keep only one of them"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = error_of(path)
    assert message.startswith(f"{path}: no such file")


def test_directory(tmp_path: Path) -> None:
    assert error_of(tmp_path).startswith(f"{tmp_path}: is a directory")


def test_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + "description: caf\xe9\n".encode("latin-1"))
    assert_line(error_of(path), path, 5, "not valid UTF-8", "0xe9", "save the file as UTF-8")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}: file is empty; a scenario needs at least name, model, backends and batch_sizes"


@pytest.mark.parametrize(("text", "kind"), [("- name: t\n- model: m\n", "a list"), ("just words\n", "a single value")])
def test_top_level_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, "# header\n" + text)
    assert_line(error_of(path), path, 2, "the top level must be a mapping", f"not {kind}")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nmodel: m\n  backends: [pytorch]\n")
    assert_line(error_of(path), path, 3, "invalid YAML", "mapping values are not allowed here")


def test_two_documents(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "---\nname: u\n")
    assert_line(error_of(path), path, 5, "keep one document per file")


def test_control_character(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'description: "a\x07"\n')
    assert_line(error_of(path), path, 5, "#x0007 is not allowed")


def test_load_scenario_text_names_its_source() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(MINIMAL + "seed: x\n", source="stored/scenario.yaml")
    assert str(info.value).startswith("stored/scenario.yaml:5: seed: ")
    with pytest.raises(ScenarioError) as info:
        load_scenario_text("")
    assert str(info.value).startswith("<string>: file is empty")


# --------------------------------------------------------------------------------------------
# scenario.error, fingerprint
# --------------------------------------------------------------------------------------------


def test_error_at_a_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: t
        model: m
        backends:
          - onnxruntime
          - options: {x: 1}
            name: nosuch
        batch_sizes: [1]
        """,
    )
    s = load_scenario(path)
    err = s.error(("backends", 1, "name"), "unknown backend 'nosuch' (known: pytorch)")
    assert isinstance(err, ScenarioError)
    assert str(err) == f"{path}:6: backends.1.name: unknown backend 'nosuch' (known: pytorch)"
    # a str-shorthand backend has no 'name' key: the entry's own line
    assert str(s.error(("backends", 0, "name"), "x")) == f"{path}:4: backends.0.name: x"
    assert s.line_of(("batch_sizes", 0)) == 7
    assert s.line_of(()) == 1
    assert str(s.error((), "bad")) == f"{path}:1: bad"
    # a scenario made in code has no file
    bare = Scenario(name="x", model=ModelRef(name="m"), backends=(BackendEntry(name="p"),), batch_sizes=(1,))
    assert bare.line_of(("name",)) is None
    assert str(bare.error(("name",), "x")) == "<scenario>: name: x"


def test_fingerprint_is_stable_and_follows_content(tmp_path: Path) -> None:
    a = load_scenario(write(tmp_path, MINIMAL, "a.yaml"))
    same = load_scenario_text(
        "# reordered and spelled out, same content\nbatch_sizes: [1, 8]\nbackends:\n  - name: pytorch\n"
        "model: {name: m}\nname: t\nthreads: auto\n"
    )
    assert a.fingerprint() == load_scenario(tmp_path / "a.yaml").fingerprint()
    assert len(a.fingerprint()) == 64 and int(a.fingerprint(), 16) >= 0
    assert same.fingerprint() == a.fingerprint() and same == a and hash(same) == hash(a)
    changed = load_scenario_text(MINIMAL.replace("[1, 8]", "[1, 16]"))
    assert changed.fingerprint() != a.fingerprint()
    measured = load_scenario_text(MINIMAL + "measurement: {repeats: 2}\n")
    assert measured.fingerprint() != a.fingerprint()
    # the server generator's default leaves the fingerprint as it was; the other choice changes it
    assert load_scenario_text(MINIMAL + "loadgen: {generator: auto}\n").fingerprint() == a.fingerprint()
    assert load_scenario_text(MINIMAL + "loadgen: {generator: loadgen}\n").fingerprint() != a.fingerprint()


# --------------------------------------------------------------------------------------------
# expansion
# --------------------------------------------------------------------------------------------


def test_expansion_order_threads_and_duplicates() -> None:
    s = load_scenario_text(
        """\
name: order
model: {name: m, options: {size: 2}}
backends:
  - name: a
    options: {fixed: 1}
    sweep: {x: [1, 2]}
  - name: b
    precisions: [int8]
  - name: b
    precisions: [bf16, int8]
devices: [cpu, cuda]
precisions: [fp32, bf16]
batch_sizes: [4, 2]
"""
    )
    cells = expand_cells(s, cpu_count=5)
    keys = [(c.backend, c.backend_options.get("x"), c.device, c.precision, c.batch_size) for c in cells]
    expected = [
        ("a", x, device, precision, batch)
        for x in (1, 2)
        for device in ("cpu", "cuda")
        for precision in ("fp32", "bf16")
        for batch in (4, 2)
    ] + [("b", None, device, "int8", batch) for device in ("cpu", "cuda") for batch in (4, 2)]
    expected += [("b", None, device, "bf16", batch) for device in ("cpu", "cuda") for batch in (4, 2)]
    assert keys == expected  # the second b entry adds only its bf16 cells: its int8 ones are the first's
    assert len({c.id for c in cells}) == len(cells)
    assert all(c.threads == 5 for c in cells)  # threads: auto
    assert all(c.model == "m" and c.model_options == {"size": 2} for c in cells)
    assert cells[0] == Cell(
        model="m",
        backend="a",
        device="cpu",
        precision="fp32",
        batch_size=4,
        threads=5,
        load="single_stream",
        model_options={"size": 2},
        backend_options={"fixed": 1, "x": 1},
    )
    fixed = load_scenario_text(MINIMAL + "threads: 3\n")
    assert {c.threads for c in expand_cells(fixed, cpu_count=64)} == {3}
    assert s.cells(5) == cells
    with pytest.raises(ValueError, match="cpu_count"):
        expand_cells(s, cpu_count=0)


@settings(max_examples=50, deadline=None)
@given(
    batches=st.lists(st.integers(min_value=1, max_value=1_000_000), min_size=1, max_size=12, unique=True),
    precisions=st.lists(st.sampled_from(["fp32", "fp16", "bf16", "int8"]), min_size=1, max_size=4, unique=True),
    modes=st.integers(min_value=1, max_value=3),
)
def test_cells_per_backend_and_precision_equal_the_batch_sizes(
    batches: list[int], precisions: list[str], modes: int
) -> None:
    text = (
        "name: prop\nmodel: m\nbackends:\n  - name: p\n"
        f"    sweep: {{mode: [{', '.join(f'm{i}' for i in range(modes))}]}}\n"
        f"precisions: [{', '.join(precisions)}]\nbatch_sizes: [{', '.join(map(str, batches))}]\n"
    )
    s = load_scenario_text(text)
    assert list(s.batch_sizes) == batches
    cells = expand_cells(s, cpu_count=1)
    assert len(cells) == modes * len(precisions) * len(batches)
    assert len({c.id for c in cells}) == len(cells)
    assert [c.batch_size for c in cells[: len(batches)]] == batches


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_escapes_as_another_exception(text: str) -> None:
    try:
        load_scenario_text(text)
    except ScenarioError as exc:
        assert "Traceback" not in str(exc)


# --------------------------------------------------------------------------------------------
# model files: model: {onnx: FILE} and model: {torch_export: FILE}
# --------------------------------------------------------------------------------------------


def file_model_scenario(tmp_path: Path, model: str) -> Path:
    """A scenario in ``tmp_path/scenarios/`` whose model line is ``model``, with ``models/m.onnx``
    and ``models/m.pt2`` next to it (empty files: the schema checks only that they exist)."""
    (tmp_path / "scenarios" / "models").mkdir(parents=True, exist_ok=True)
    for name in ("m.onnx", "m.pt2"):
        (tmp_path / "scenarios" / "models" / name).write_bytes(b"")
    return write(tmp_path / "scenarios", f"name: t\nmodel: {model}\nbackends: [onnxruntime]\nbatch_sizes: [1]\n")


def test_onnx_shorthand_resolves_against_the_scenario_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = file_model_scenario(tmp_path, "{onnx: models/m.onnx, shapes: {ids: [batch, 16]}, int_high: 10}")
    monkeypatch.chdir(tmp_path)  # not the scenario's folder: the path must not depend on where bench runs
    scenario = load_scenario(Path("scenarios") / path.name)
    expected = str(tmp_path / "scenarios" / "models" / "m.onnx")
    assert scenario.model == ModelRef(
        name="onnx-file", options={"shapes": {"ids": ["batch", 16]}, "int_high": 10, "path": expected}
    )
    (cell,) = expand_cells(scenario, cpu_count=1)
    assert cell.model == "onnx-file" and cell.model_options["path"] == expected
    assert cell.model_options["shapes"] == {"ids": ["batch", 16]}


def test_torch_export_shorthand_and_the_long_form(tmp_path: Path) -> None:
    short = load_scenario(file_model_scenario(tmp_path, "{torch_export: models/m.pt2}"))
    assert short.model == ModelRef(
        name="torch-export-file", options={"path": str(tmp_path / "scenarios" / "models" / "m.pt2")}
    )
    long = load_scenario(file_model_scenario(tmp_path, "{name: torch-export-file, options: {path: models/m.pt2}}"))
    assert long.model == short.model  # the long form's relative path is resolved the same way


def test_model_file_paths_in_text_resolve_against_base_dir(tmp_path: Path) -> None:
    file_model_scenario(tmp_path, "{onnx: models/m.onnx}")
    text = "name: t\nmodel: {onnx: models/m.onnx}\nbackends: [onnxruntime]\nbatch_sizes: [1]\n"
    scenario = load_scenario_text(text, base_dir=tmp_path / "scenarios")
    assert scenario.model.options["path"] == str(tmp_path / "scenarios" / "models" / "m.onnx")
    with pytest.raises(ScenarioError, match=r"^<string>:2: model\.onnx: no such file"):
        load_scenario_text(text, base_dir=tmp_path)


def test_missing_model_file_names_file_line_and_key(tmp_path: Path) -> None:
    path = file_model_scenario(tmp_path, "{onnx: models/gone.onnx}")
    message = error_of(path)
    missing = tmp_path / "scenarios" / "models" / "gone.onnx"
    line = assert_line(message, path, 2, "model.onnx: no such file", str(missing))
    assert f"(relative to {tmp_path / 'scenarios'})" in line
    path = file_model_scenario(tmp_path, "{name: onnx-file, options: {path: gone.onnx}}")
    assert_line(error_of(path), path, 2, "model.options.path: no such file")
    path = file_model_scenario(tmp_path, "{onnx: models}")
    assert_line(error_of(path), path, 2, "model.onnx:", "is not a file")


@pytest.mark.parametrize(
    ("model", "key", "fragment"),
    [
        ("{onnx: models/m.onnx, shape: {}}", "model.shape", "unknown key 'shape'; did you mean 'shapes'?"),
        ("{onnx: models/m.onnx, device: cpu}", "model.device", "unknown key 'device'; remove it"),
        ("{onnx: models/m.onnx, name: x}", "model.name", "'name' and 'onnx' both pick the model"),
        (
            "{onnx: models/m.onnx, options: {int_high: 3}}",
            "model.options",
            "with 'onnx: FILE' the model's options sit beside it",
        ),
        ("{onnx: models/m.onnx, torch_export: models/m.pt2}", "model.torch_export", "give one model file"),
        ("{onnx: 3}", "model.onnx", "Input should be the path of the ONNX file (got 3)"),
    ],
)
def test_model_file_shorthand_stays_strict(tmp_path: Path, model: str, key: str, fragment: str) -> None:
    path = file_model_scenario(tmp_path, model)
    assert_line(error_of(path), path, 2, f"{key}: {fragment}")


def test_inputs_file_in_every_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scenarios" / "data").mkdir(parents=True)
    data = tmp_path / "scenarios" / "data" / "d.npz"
    data.write_bytes(b"")  # the schema checks only that it is a file; validation reads it
    monkeypatch.chdir(tmp_path)  # not the scenario's folder
    named = load_scenario(file_model_scenario(tmp_path, "{name: dlrm-small, inputs: data/d.npz}"))
    assert named.model == ModelRef(name="dlrm-small", inputs=str(data))
    short = load_scenario(file_model_scenario(tmp_path, "{onnx: models/m.onnx, int_high: 3, inputs: data/d.npz}"))
    onnx = str(tmp_path / "scenarios" / "models" / "m.onnx")
    assert short.model == ModelRef(name="onnx-file", options={"int_high": 3, "path": onnx}, inputs=str(data))
    long = load_scenario(
        file_model_scenario(tmp_path, "{name: onnx-file, options: {path: models/m.onnx}, inputs: data/d.npz}")
    )
    assert long.model.inputs == str(data)
    (cell,) = expand_cells(short, cpu_count=1)
    assert cell.input_data == str(data) and "input_data" in cell.config()


def test_without_inputs_cells_and_fingerprints_stay_as_they_were(tmp_path: Path) -> None:
    scenario = load_scenario(file_model_scenario(tmp_path, "dlrm-small"))
    (cell,) = expand_cells(scenario, cpu_count=1)
    assert cell.input_data is None and "input_data" not in cell.config()
    assert "inputs" not in scenario.model.model_dump()  # the fingerprint hashes this dump
    with_data = Cell(**{**cell.config(), "input_data": "/d.npz"})
    assert with_data.id != cell.id  # other data is other work


@pytest.mark.parametrize(
    ("model", "key", "fragment"),
    [
        ("{name: dlrm-small, inputs: nope.npz}", "model.inputs", "no such file"),
        ("{name: dlrm-small, inputs: models}", "model.inputs", "is not a file; give the path of the inputs (.npz)"),
        ("{name: dlrm-small, inputs: 3}", "model.inputs", "Input should be the path of the inputs (.npz) file"),
        ("{name: dlrm-small, input: models/m.onnx}", "model.input", "unknown key 'input'; did you mean 'inputs'?"),
        ("{onnx: models/m.onnx, input: x.npz}", "model.input", "unknown key 'input'; did you mean 'inputs'?"),
        (
            "{onnx: models/m.onnx, device: cpu}",
            "model.device",
            "allowed beside 'onnx': shapes, int_high, float_range, inputs",
        ),
    ],
)
def test_inputs_key_stays_strict(tmp_path: Path, model: str, key: str, fragment: str) -> None:
    path = file_model_scenario(tmp_path, model)
    assert_line(error_of(path), path, 2, f"{key}: ", fragment)


def test_model_options_may_nest_but_stay_plain_values() -> None:
    text = "name: t\nmodel: {name: m, options: {shapes: {x: [batch, 3]}, n: .inf}}\nbackends: [p]\nbatch_sizes: [1]\n"
    with pytest.raises(ScenarioError, match=r"model\.options\.n: Input should be a finite number"):
        load_scenario_text(text)
    s = load_scenario_text(text.replace(", n: .inf", ""))
    assert s.model.options == {"shapes": {"x": ["batch", 3]}}
