"""Bad input through the real command line: exit code 2, one clear message, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import bench

GOOD = """\
name: ok
model: dlrm-small
backends: [pytorch]
batch_sizes: [1, 8]
"""


def _assert_clean_error(out, *fragments: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("bench: error: ") or out.stderr.startswith("Usage:"), out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, out.stderr)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (GOOD + "batch_sise: [2]\n", ["bad.yaml:5", "batch_sise", "did you mean 'batch_sizes'"]),
        (GOOD.replace("[1, 8]", "one"), ["bad.yaml:4", "batch_sizes"]),
        (GOOD.replace("[1, 8]", "[1, -8]"), ["bad.yaml:4", "batch_sizes.1", "greater than 0"]),
        (GOOD.replace("pytorch", "pytroch"), ["bad.yaml:3", "backends.0", "unknown backend 'pytroch'", "pytorch"]),
        (GOOD.replace("dlrm-small", "dlrm-smal"), ["bad.yaml:2", "model", "unknown model 'dlrm-smal'"]),
        (GOOD + "seed: !!python/object/apply:os.system ['echo pwned']\n", ["bad.yaml:5"]),
    ],
    ids=["unknown-key", "wrong-type", "negative-batch", "unknown-backend", "unknown-model", "python-tag"],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_scenarios_exit_2(tmp_path: Path, text: str, fragments: list[str], command: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = bench(command, str(path), *(["--out", str(tmp_path / "r")] if command == "run" else []))
    _assert_clean_error(out, *fragments)
    assert not (tmp_path / "r").exists(), "nothing may be created for an invalid scenario"


def test_missing_file(tmp_path: Path) -> None:
    _assert_clean_error(bench("validate", str(tmp_path / "nope.yaml")), "nope.yaml")


def test_50_mb_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as fh:
        fh.write(GOOD.encode())
        fh.seek(50 * 1024 * 1024)
        fh.write(b"\n")
    _assert_clean_error(bench("validate", str(path)), "huge.yaml", "limit")


def test_yaml_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    _assert_clean_error(bench("validate", str(path)), "bomb.yaml", "alias")


def test_validate_reports_cells_and_skips() -> None:
    out = bench("validate", "scenarios/rec.yaml")
    assert out.returncode == 0, out.stderr
    assert "48 cells: 44 to run here, 4 skipped" in out.stdout
    assert "skipped dlrm-small onnxruntime cpu bf16 b1: bf16 on CPU: onnxruntime's CPU provider" in out.stdout
    assert "scenarios/rec.yaml: valid" in out.stdout


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    _assert_clean_error(bench("run", "--resume", str(tmp_path)), "not a bench run folder")


def test_run_without_scenario() -> None:
    _assert_clean_error(bench("run"), "give a SCENARIO file")


def test_report_of_a_non_run(tmp_path: Path) -> None:
    _assert_clean_error(bench("report", str(tmp_path)), str(tmp_path))


def test_list_backends_and_models() -> None:
    backends = bench("list", "backends")
    assert backends.returncode == 0
    assert "pytorch" in backends.stdout and "available" in backends.stdout
    models = bench("list", "models")
    assert "dlrm-small" in models.stdout


def test_help_imports_no_runtime() -> None:
    out = bench("--help")
    assert out.returncode == 0
    probe = bench(
        "list", "backends", env={"PYTHONWARNINGS": "ignore"}
    )  # the CLI process itself must not import torch to list backends
    assert probe.returncode == 0
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from harness.cli import cli; "
        "CliRunner().invoke(cli, ['list', 'backends']); CliRunner().invoke(cli, ['--help']); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch','onnxruntime','openvino','tensorrt','pandas','numpy'))))"
    )
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True)
    assert json.loads(result.stdout) == []


def test_model_options_the_model_refuses_are_scenario_errors(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(
        "name: bad\nmodel: {name: minilm-l6, options: {seq_len: 4}}\nbackends: [pytorch]\nbatch_sizes: [1]\n"
    )
    out = bench("validate", str(scenario))
    _assert_clean_error(out, "option seq_len must be an integer from 8 to 512")
    assert f"{scenario}:2: model:" in out.stderr


def test_a_truncated_onnx_model_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    (tmp_path / "cut.onnx").write_bytes(b"garbage, not protobuf")
    scenario = tmp_path / "cut.yaml"
    scenario.write_text("name: cut\nmodel: {onnx: cut.onnx}\nbackends: [onnxruntime]\nbatch_sizes: [1]\n")
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"))
    _assert_clean_error(out, "not a readable ONNX model")
    assert not (tmp_path / "r").exists()


def test_options_that_mean_nothing_without_another_are_refused_not_ignored(tmp_path: Path) -> None:
    from conftest import stub_manifest
    from harness.store import RunDir

    run = RunDir.create(tmp_path, "r1", stub_manifest("r1"))
    run.update_manifest(planned=0, finished_at=1.0)
    run.release()  # a finished run: no warning before the error
    (tmp_path / "c.json").write_text("{}")
    _assert_clean_error(bench("compare", str(run.path), str(run.path), "--confirm-repeats", "5", "--screen-alpha",
                              "0.2"), "--confirm-repeats, --screen-alpha go with --confirm")  # fmt: skip
    _assert_clean_error(bench("compare", str(run.path), str(run.path), "--baseline-code", str(tmp_path)),
                        "--baseline-code goes with --confirm")  # fmt: skip
    both = bench("report", str(run.path), "--baseline", str(run.path), "--comparison", str(tmp_path / "c.json"))
    _assert_clean_error(both, "give --baseline RUN_DIR or --comparison FILE, not both")
    scenario = tmp_path / "ok.yaml"
    scenario.write_text(GOOD)
    _assert_clean_error(bench("validate", str(scenario), "--ray-address", "10.0.0.1:6379"),
                        "--ray-address goes with --executor ray")  # fmt: skip
    (tmp_path / "a-file").write_text("")
    _assert_clean_error(bench("report", str(run.path), "-o", str(tmp_path / "a-file" / "r.html")),
                        f"-o {tmp_path / 'a-file' / 'r.html'}: cannot write there")  # fmt: skip
