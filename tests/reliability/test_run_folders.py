"""A run folder never lies: one writer at a time, neighbours that cannot break it, inputs that cannot
change under it, outputs and full disks that lose nothing, signals that say how to go on.

Every test drives the real CLI with the deterministic fake backend and reads the real journal,
manifest and parquet files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import harness
from conftest import ROOT, bench, fake_scenario, journal, run_dirs

pytestmark = pytest.mark.usefixtures("fake_plugin")


def _sigint_default() -> None:
    """In the child before bench starts: Ctrl-C's default, which a shell's background job
    (``make test &``) would otherwise pass on as ignored, so that the SIGINT test means something."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
        preexec_fn=_sigint_default,  # noqa: PLW1509 - only a signal disposition, no locks taken
    )


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _journal_len(run_dir: Path) -> int:
    try:
        return len(journal(run_dir))
    except (OSError, ValueError):
        return 0


def _interrupted_run(tmp_path: Path, batches: str = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", done: int = 1) -> Path:
    """A real run killed with SIGKILL once ``done`` cells are journaled."""
    scenario = fake_scenario(tmp_path, batches=batches, min_s=0.2, max_s=0.3)
    out_root = tmp_path / "r"
    proc = _start("run", str(scenario), "--out", str(out_root), "--no-report")
    found: list[Path] = []

    def journaled() -> bool:
        found[:] = [p.parent for p in out_root.glob("*/journal.jsonl")] if out_root.exists() else []
        return bool(found) and _journal_len(found[0]) >= done

    _wait_for(journaled, what=f"{done} journaled cell(s)")
    proc.kill()
    proc.communicate()
    return found[0]


def _ids(run_dir: Path) -> list[tuple[str, int]]:
    return [(r["cell_id"], r.get("repeat", 0)) for r in journal(run_dir)]


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


# -- 1. one writer per run folder ---------------------------------------------------------------
@pytest.mark.slow
def test_a_second_resume_is_refused_while_the_first_runs_and_no_cell_is_measured_twice(tmp_path: Path) -> None:
    run_dir = _interrupted_run(tmp_path)
    first = _start("run", "--resume", str(run_dir), "--no-report")
    _wait_for(lambda: _journal_len(run_dir) >= 2, what="the first resume to journal a cell")
    second = bench("run", "--resume", str(run_dir), "--no-report")
    assert second.returncode == 2, second.stderr
    assert f"process {first.pid}" in second.stderr and "bench run --resume" in second.stderr
    _no_traceback(second)

    # a reader works meanwhile and says the run is in progress
    report = bench("report", str(run_dir), "-o", str(tmp_path / "during.html"))
    assert report.returncode == 0, report.stderr
    assert "run in progress" in report.stderr
    assert "run in progress" in (tmp_path / "during.html").read_text()

    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    ids = _ids(run_dir)
    assert len(ids) == len(set(ids)) == 10
    assert len(harness.load_results(run_dir)) == 10


@pytest.mark.slow
def test_a_killed_writer_leaves_no_stale_lock(tmp_path: Path) -> None:
    run_dir = _interrupted_run(tmp_path, batches="[1, 2, 3]")
    assert (run_dir / ".lock").exists()  # the file stays; the kernel dropped the lock with the process
    resumed = bench("run", "--resume", str(run_dir), "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert len(set(_ids(run_dir))) == 3


# -- 2. a damaged neighbour costs only its own place ---------------------------------------------
def _corrupt_journal_middle(run_dir: Path) -> None:
    lines = (run_dir / "journal.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "journal.jsonl").write_text(lines[0] + "garbage{\n" + "".join(lines[1:]))


@pytest.mark.slow
def test_a_corrupt_sibling_breaks_neither_report_nor_history_nor_a_new_run(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2]")
    out_root = tmp_path / "r"
    for _ in range(2):
        done = bench("run", str(scenario), "--out", str(out_root), "--no-report")
        assert done.returncode == 0, done.stderr
    bad, good = run_dirs(out_root)
    _corrupt_journal_middle(bad)

    report = bench("report", str(good), "-o", str(tmp_path / "good.html"))
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "good.html").read_text()
    assert bad.name in html and "corrupt journal line" in html  # the neighbour is named, left out

    history = bench("history", str(out_root))
    assert history.returncode == 0, history.stderr
    assert f"{bad.name} left out" in history.stderr and "corrupt journal line" in history.stderr

    junit, summary = tmp_path / "ci" / "junit.xml", tmp_path / "ci" / "summary.md"
    fresh = bench(
        "run", str(scenario), "--out", str(out_root), "--reports-dir", str(tmp_path / "rep"),
        "--junit", str(junit), "--summary-md", str(summary),
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    assert "results:" in fresh.stdout and "report:" in fresh.stdout
    assert junit.is_file() and summary.is_file() and len(list((tmp_path / "rep").glob("*.html"))) == 1


# -- 3. inputs that change under a run ----------------------------------------------------------
def _tiny_onnx(path: Path, scale: float) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((4, 1), scale, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _file_model_run(tmp_path: Path) -> tuple[Path, Path]:
    """A finished two-cell run of ``model: {onnx: m.onnx}`` made from the scenario's own folder with
    a relative path, then made 'interrupted' by cutting its last journal line."""
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'bench[onnxruntime]')")
    folder = tmp_path / "project"
    folder.mkdir()
    _tiny_onnx(folder / "m.onnx", 1.0)
    scenario = fake_scenario(folder, batches="[1, 2]")
    scenario.write_text(scenario.read_text().replace("model: toy", "model: {onnx: m.onnx}"))
    done = bench("run", scenario.name, "--out", str(tmp_path / "r"), "--no-report", cwd=folder)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    lines = (run_dir / "journal.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "journal.jsonl").write_text(lines[0])
    return run_dir, folder


@pytest.mark.slow
def test_resume_refuses_a_changed_model_file_unless_allowed(tmp_path: Path) -> None:
    run_dir, folder = _file_model_run(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert str(folder / "m.onnx") in manifest["inputs"]
    _tiny_onnx(folder / "m.onnx", 2.0)  # another model under the same name

    refused = bench("run", "--resume", str(run_dir), "--no-report")
    assert refused.returncode == 2, refused.stderr
    assert str(folder / "m.onnx") in refused.stderr and "--allow-changed-inputs" in refused.stderr
    assert len(journal(run_dir)) == 1
    _no_traceback(refused)

    allowed = bench("run", "--resume", str(run_dir), "--no-report", "--allow-changed-inputs")
    assert allowed.returncode == 0, allowed.stderr
    assert len(journal(run_dir)) == 2
    changed = json.loads((run_dir / "manifest.json").read_text())["changed_inputs"]
    assert [c["path"] for c in changed] == [str(folder / "m.onnx")]


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs to start a run on one")
def test_resume_on_another_machine_is_refused_unless_allowed_and_keeps_the_runs_cells(tmp_path: Path) -> None:
    """threads: auto is the CPUs the run could use when it started: a resume under other CPUs (another
    machine, taskset, a smaller container) would plan other cells and measure every one again."""
    scenario = fake_scenario(tmp_path, batches="[1, 2, 3]")
    scenario.write_text(scenario.read_text().replace("threads: 1", "threads: auto"))
    one_cpu = min(os.sched_getaffinity(0))
    started = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(scenario), "--out", str(tmp_path / "r"), "--no-report"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {one_cpu}),  # an affinity mask only: no locks taken
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    lines = (run_dir / "journal.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "journal.jsonl").write_text(lines[0])  # as if killed after its first cell
    cpu = json.loads((run_dir / "manifest.json").read_text())["environment"]["cpu"]
    assert cpu["usable_cpus"] == 1

    refused = bench("run", "--resume", str(run_dir), "--no-report")
    assert refused.returncode == 2, refused.stderr
    assert f"the run started on another machine ({cpu['model']}, 1 usable CPUs)" in refused.stderr
    assert "--allow-changed-inputs" in refused.stderr and len(journal(run_dir)) == 1
    _no_traceback(refused)

    allowed = bench("run", "--resume", str(run_dir), "--no-report", "--allow-changed-inputs")
    assert allowed.returncode == 0, allowed.stderr
    records = journal(run_dir)
    assert len({r["cell_id"] for r in records}) == len(records) == 3  # the run's cells, none measured twice
    assert {r["config"]["threads"] for r in records} == {1}
    changed = json.loads((run_dir / "manifest.json").read_text())["changed_inputs"]
    assert changed[-1]["machine_before"] == f"{cpu['model']}, 1 usable CPUs"


# -- 8. resume from anywhere ------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_from_another_folder_finds_a_relative_model_file(tmp_path: Path) -> None:
    run_dir, folder = _file_model_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["scenario"]["path"] == str(folder / "fake.yaml")
    resumed = bench("run", "--resume", str(run_dir), "--no-report", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["config"]["batch_size"] for r in journal(run_dir)) == [1, 2]


# -- 4. outputs that cannot be written --------------------------------------------------------------
def test_unwritable_outputs_are_refused_before_the_sweep(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1]")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out_root = tmp_path / "r"
    for option, value in (
        ("--junit", str(blocker / "junit.xml")),
        ("--summary-md", str(blocker / "s.md")),
        ("--reports-dir", str(blocker / "reports")),
    ):
        proc = bench("run", str(scenario), "--out", str(out_root), option, value)
        assert proc.returncode == 2, (option, proc.stderr)
        assert option in proc.stderr and "cannot write there" in proc.stderr
        _no_traceback(proc)
    assert not out_root.exists(), "nothing ran"


@pytest.mark.slow
def test_an_output_that_breaks_during_the_run_keeps_the_summary_and_results(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2, 3]", min_s=0.3, max_s=0.4)
    ci = tmp_path / "ci"
    ci.mkdir()
    out_root = tmp_path / "r"
    proc = _start("run", str(scenario), "--out", str(out_root), "--no-report", "--summary-md", str(ci / "s.md"))
    _wait_for(lambda: bool(list(out_root.glob("*/journal.jsonl"))), what="the run folder")
    shutil.rmtree(ci)
    ci.write_text("now a file")  # the folder the summary goes to is gone
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "--summary-md" in err and "cannot write there" in err and "Traceback" not in err
    assert "results:" in out  # the summary was printed
    (run_dir,) = run_dirs(out_root)
    assert len(harness.load_results(run_dir)) == 3


@pytest.mark.slow
def test_report_compare_and_history_outputs_that_cannot_be_written_are_exit_2(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1]")
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for args in (
        ("report", str(run_dir), "-o", str(blocker / "x.html")),
        ("compare", str(run_dir), str(run_dir), "-o", str(blocker / "x.txt")),
        ("compare", str(run_dir), str(run_dir), "--json-out", str(blocker / "x.json")),
        ("history", str(tmp_path / "r"), "--html", str(blocker / "x.html")),
        ("report", str(run_dir), "--format", "svg", "-o", str(blocker / "charts")),
    ):
        if "--format" in args:
            pytest.importorskip(
                "matplotlib", reason="charts as files need the images extra: pip install 'bench[images]'"
            )
        proc = bench(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "cannot write there" in proc.stderr and str(blocker) in proc.stderr
        _no_traceback(proc)


@pytest.mark.slow
def test_recommend_says_when_nothing_was_measured_and_refuses_a_run_given_twice(tmp_path: Path) -> None:
    failed = bench("run", str(fake_scenario(tmp_path, faults="[raise]")), "--out", str(tmp_path / "f"), "--no-report")
    assert failed.returncode == 3, failed.stderr
    (run_dir,) = run_dirs(tmp_path / "f")
    nothing = bench("recommend", str(run_dir), "--p99-ms", "1", "--hourly-usd", "1")
    assert nothing.returncode == 2 and f"no measured cells in {run_dir} (1 failed)" in nothing.stderr, nothing.stderr
    twice = bench("recommend", str(run_dir), f"{run_dir}/", "--p99-ms", "1", "--hourly-usd", "1")
    assert twice.returncode == 2 and f"{run_dir}/ is given twice (also as {run_dir})" in twice.stderr, twice.stderr
    _no_traceback(nothing)


# -- 5. a full disk --------------------------------------------------------------------------------
DISK_FULL_DRIVER = """
import json, os, subprocess, sys, time
from pathlib import Path

mnt, scenario, report = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
out_root = mnt / "r"
cmd = [sys.executable, "-m", "harness"]
proc = subprocess.Popen([*cmd, "run", scenario, "--out", str(out_root), "--no-report"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    journals = list(out_root.glob("*/journal.jsonl"))
    if journals and journals[0].read_bytes().count(b"\\n") >= 2:
        break
    time.sleep(0.02)
run_dir = journals[0].parent
filler = mnt / "filler"
with open(filler, "wb") as fh:  # another process fills the disk
    try:
        while True:
            fh.write(b"\\0" * (1 << 16))
            fh.flush()
    except OSError:
        pass
out, err = proc.communicate(timeout=120)
lines = (run_dir / "journal.jsonl").read_bytes().split(b"\\n")
state = {"rc": proc.returncode, "err": err, "tail": lines[-1].decode(), "lines": len(lines) - 1,
         "parsed": all(json.loads(line) is not None for line in lines[:-1])}
filler.unlink()  # space freed
resumed = subprocess.run([*cmd, "run", "--resume", str(run_dir), "--no-report"], capture_output=True, text=True)
state.update(resume_rc=resumed.returncode, resume_err=resumed.stderr,
             records=[json.loads(l) for l in (run_dir / "journal.jsonl").read_text().splitlines()],
             results=len(__import__("harness").load_results(run_dir)),
             leftovers=[p.name for p in run_dir.rglob(".*tmp*")])
report.write_text(json.dumps(state))
"""


@pytest.mark.slow
def test_a_full_disk_stops_the_run_keeps_the_journal_whole_and_resume_completes(tmp_path: Path) -> None:
    if not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("needs unshare and mount to make a small tmpfs")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {tmp_path}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {probe.stderr.strip()}")
    scenario = fake_scenario(tmp_path, batches="[1, 2, 3, 4, 5, 6, 7, 8]", min_s=0.3, max_s=0.4)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DISK_FULL_DRIVER))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    report = tmp_path / "state.json"
    done = subprocess.run(
        ["unshare", "-rm", sys.executable, str(driver), str(mnt), str(scenario), str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    state = json.loads(report.read_text())
    assert state["rc"] == 2, state["err"]
    assert "disk full" in state["err"] and "MiB free" in state["err"] and "bench run --resume" in state["err"]
    assert "Traceback" not in state["err"]
    assert state["tail"] == "" and state["parsed"], "the journal ends on a whole line"
    assert 2 <= state["lines"] < 8
    assert state["resume_rc"] == 0, state["resume_err"]
    ids = [(r["cell_id"], r["repeat"]) for r in state["records"]]
    assert len(ids) == len(set(ids)) == 8 == state["results"]
    failed = [(r["status"], r.get("reason"), r.get("stderr_tail")) for r in state["records"] if r["status"] != "ok"]
    assert failed == [], "no cell recorded as failed for want of disk"
    assert state["leftovers"] == []


# -- 6. manifests of the wrong shape -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("content", ["[]", "null", '{"schema_version": 1}'])
def test_a_manifest_of_the_wrong_shape_is_a_clear_error_for_every_reader(tmp_path: Path, content: str) -> None:
    scenario = fake_scenario(tmp_path, batches="[1]")
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    (run_dir / "manifest.json").write_text(content)
    for args in (
        ("report", str(run_dir), "-o", str(tmp_path / "x.html")),
        ("compare", str(run_dir), str(run_dir)),
        ("recommend", str(run_dir), "--p99-ms", "5", "--hourly-usd", "1"),
        ("run", "--resume", str(run_dir)),
    ):
        proc = bench(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert f"{run_dir / 'manifest.json'}:" in proc.stderr
        _no_traceback(proc)
    history = bench("history", str(tmp_path / "r"))
    assert history.returncode == 2 and "left out" in history.stderr
    _no_traceback(history)


@pytest.mark.slow
def test_manifest_errors_name_the_key(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1]")
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (run_dir,) = run_dirs(tmp_path / "r")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["settings"]["repeats"] = "three"
    del manifest["scenario"]["name"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    proc = bench("report", str(run_dir), "-o", str(tmp_path / "x.html"))
    assert proc.returncode == 2
    assert "settings.repeats: input should be a valid integer" in proc.stderr
    assert "scenario.name: field required" in proc.stderr


# -- 13. incomplete runs say so ----------------------------------------------------------------------
@pytest.mark.slow
def test_an_interrupted_run_is_marked_incomplete_in_report_compare_and_recommend(tmp_path: Path) -> None:
    run_dir = _interrupted_run(tmp_path, batches="[1, 2, 3, 4]")
    n = _journal_len(run_dir)
    expected = f"run incomplete: {n} of 4 planned cells measured; finish it with: bench run --resume {run_dir}"
    report = bench("report", str(run_dir), "-o", str(tmp_path / "x.html"))
    assert report.returncode == 0 and expected in report.stderr
    assert expected in (tmp_path / "x.html").read_text()
    compare = bench("compare", str(run_dir), str(run_dir))
    assert expected in compare.stderr
    recommend = bench("recommend", str(run_dir), "--p99-ms", "50", "--hourly-usd", "1")
    assert expected in recommend.stderr

    with open(run_dir / "journal.jsonl", "a") as fh:
        fh.write('{"cell_id": "torn')  # a line cut by a kill
    torn = bench("report", str(run_dir), "-o", str(tmp_path / "y.html"))
    assert "torn last journal line" in torn.stderr and "torn last journal line" in (tmp_path / "y.html").read_text()


# -- 15 and 17. signals ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_sigterm_and_sigint_keep_finished_cells_and_name_the_resume(
    tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2, 3, 4, 5, 6]", min_s=0.3, max_s=0.4)
    out_root = tmp_path / "r"
    proc = _start("run", str(scenario), "--out", str(out_root), "--no-report")
    _wait_for(lambda: any(_journal_len(p.parent) >= 1 for p in out_root.glob("*/journal.jsonl")), what="a cell")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    (run_dir,) = run_dirs(out_root)
    assert proc.returncode == code, err
    assert word in err and f"bench run --resume {run_dir}" in err and "Traceback" not in err
    before = _ids(run_dir)
    resumed = bench("run", "--resume", str(run_dir), "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    ids = _ids(run_dir)
    assert ids[: len(before)] == before and len(ids) == len(set(ids)) == 6
