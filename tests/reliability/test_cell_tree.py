"""A cell is its worker's whole process tree: what the runtime starts is measured with it and dies
with it, and a cell that crashed, hung or was killed leaves the stacks of where it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, bench, fake_scenario, journal, run_dirs
from harness.executors import containment
from plugins.fake import SPAWN_ENV

STRATEGY_CHOICES = ("auto", containment.PROCESS_TREE)


@pytest.fixture(params=STRATEGY_CHOICES)
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test once with the strategy the machine allows and once with the process-tree fallback."""
    monkeypatch.setenv(containment.STRATEGY_ENV, request.param)
    return request.param


@pytest.fixture
def tag(tmp_path: Path) -> Iterator[str]:
    """A marker for the processes this test's cells start; any left alive are killed afterwards."""
    value = f"t{os.getpid()}x{abs(hash(tmp_path)) % 10**8}"
    yield value
    for pid in _alive_with_marker(value):
        os.kill(pid, signal.SIGKILL)


def _alive_with_marker(tag: str) -> list[int]:
    marker = f"{SPAWN_ENV}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()  # empty for a zombie
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _run(tmp_path: Path, faults: str, options: str, *, timeout: float = 30, memory_mb: int | None = None) -> dict:
    """One bench run of the fake backend through the CLI; its records by fault."""
    scenario = fake_scenario(tmp_path, faults=faults, timeout=timeout)
    text = scenario.read_text().replace("options: {service_ms: 0.2}", f"options: {{service_ms: 0.2, {options}}}")
    if memory_mb is not None:
        text = text.replace(f"timeout_s: {timeout}", f"timeout_s: {timeout}\n  memory_mb: {memory_mb}")
    scenario.write_text(text)
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert out.returncode in (0, 3), out.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    return {r["config"]["backend_options"]["fault"]: r for r in journal(run_dir)}


def _expected_accounting(strategy: str) -> str:
    return containment.available() if strategy == "auto" else strategy


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_what_an_ok_cell_started_dies_with_it(tmp_path: Path, tag: str, strategy: str) -> None:
    record = _run(tmp_path, "[spawn]", f"spawn_tag: {tag}, spawn_children: 3, spawn_mb: 16")["spawn"]
    assert record["status"] == "ok", record.get("reason")
    spawned = record["info"]["spawned"]
    assert len(spawned) == 4, "three sleeping children and the orphaned grandchild"
    assert [pid for pid in spawned if _alive(pid)] == []
    assert _alive_with_marker(tag) == []
    assert record["memory_accounting"] == _expected_accounting(strategy)
    assert record["peak_tree_mb"] > 16


@pytest.mark.usefixtures("fake_plugin")
def test_a_grandchild_over_the_cap_makes_the_cell_oom(tmp_path: Path, tag: str, strategy: str) -> None:
    record = _run(tmp_path, "[spawn]", f"spawn_tag: {tag}, spawn_mb: 600", memory_mb=300)["spawn"]
    assert record["status"] == "oom", record.get("reason")
    assert "cap of 300 MiB" in record["reason"]
    assert record["peak_tree_mb"] > 250, "the peak is the whole tree's, not the worker's ~50 MiB"
    assert record["memory_accounting"] == _expected_accounting(strategy)
    assert _alive_with_marker(tag) == []


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_timed_out_cell_takes_its_children_along(tmp_path: Path, tag: str, strategy: str) -> None:
    started = time.monotonic()
    record = _run(tmp_path, "[spawn]", f"spawn_tag: {tag}, spawn_then: hang", timeout=3)["spawn"]
    assert record["status"] == "timeout"
    assert _alive_with_marker(tag) == []
    assert time.monotonic() - started < 20


@pytest.mark.usefixtures("fake_plugin")
def test_the_kernel_oom_killer_at_the_cgroup_cap_is_told_apart(tmp_path: Path) -> None:
    if containment.available() == containment.PROCESS_TREE:
        pytest.skip("no cgroup can be created here (no writable cgroup v2 memory controller nor v1 memory cgroup)")
    record = _run(tmp_path, "[alloc]", "alloc_mb: 1024", memory_mb=200)["alloc"]
    assert record["status"] == "oom"
    assert record["memory_accounting"].startswith("cgroup-")
    assert "kernel's OOM killer" in record["reason"]
    assert "cap of 200 MiB" in record["reason"]
    assert record["exit_code"] == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_an_in_process_run_leaves_no_zombie_and_no_subreaper(tmp_path: Path, tag: str) -> None:
    from harness.planning import RunOptions
    from harness.runner import run_scenario
    from harness.scenario import load_scenario

    scenario = fake_scenario(tmp_path, faults="[spawn, none]")
    scenario.write_text(scenario.read_text().replace("service_ms: 0.2", f"service_ms: 0.2, spawn_tag: {tag}"))
    run = run_scenario(load_scenario(scenario), RunOptions(out_root=tmp_path / "r", command="bench run"))
    assert [r["status"] for r in run.records()] == ["ok", "ok"]
    assert _alive_with_marker(tag) == []
    me = os.getpid()
    zombies = [
        entry.name
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _ppid_state(int(entry.name)) == (me, "Z")
    ]
    assert zombies == []
    assert not containment.is_child_subreaper()


def _ppid_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_hung_and_crashed_cells_leave_their_stacks(tmp_path: Path) -> None:
    by_fault = _run(tmp_path, "[hang, segfault]", "fault_at: run", timeout=3)
    hang = by_fault["hang"]
    assert hang["status"] == "timeout"
    assert "fake.py" in hang["stderr_tail"]
    assert "in _fail" in hang["stderr_tail"], hang["stderr_tail"]
    assert "in run" in hang["stderr_tail"]
    segfault = by_fault["segfault"]
    assert segfault["status"] == "crashed"
    assert "Fatal Python error: Segmentation fault" in segfault["stderr_tail"], segfault["stderr_tail"]
    assert "fake.py" in segfault["stderr_tail"]
    assert "in _fail" in segfault["stderr_tail"]


@pytest.mark.usefixtures("fake_plugin")
def test_a_cell_the_harness_kills_for_memory_leaves_where_it_allocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(containment.STRATEGY_ENV, containment.PROCESS_TREE)  # the harness's kill, not the kernel's
    record = _run(tmp_path, "[alloc]", "alloc_mb: 1024", memory_mb=200)["alloc"]
    assert record["status"] == "oom"
    assert "passed the cap of 200 MiB" in record["reason"]
    assert "in _allocate" in record["stderr_tail"], record["stderr_tail"]


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_cgroup_left_by_a_killed_run_is_removed_by_the_next(tmp_path: Path, tag: str) -> None:
    folder = containment.cgroup_folder()
    if folder is None:
        pytest.skip("no cgroup can be created here (no writable cgroup v2 memory controller nor v1 memory cgroup)")
    scenario = fake_scenario(tmp_path, faults="[spawn]", timeout=60)
    scenario.write_text(
        scenario.read_text().replace("service_ms: 0.2", f"service_ms: 0.2, spawn_tag: {tag}, spawn_then: hang")
    )
    killed = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(scenario), "--out", str(tmp_path / "r"), "--no-report"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while len(_alive_with_marker(tag)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)  # no chance to clean up: the cgroup and what is in it stay
    killed.wait()
    left = list(folder.glob(f"bench-{killed.pid}-*"))
    assert len(left) == 1
    assert _alive_with_marker(tag), "the cell's processes outlived the killed run, in its cgroup"

    out = bench("run", str(fake_scenario(tmp_path, name="next.yaml")), "--out", str(tmp_path / "r2"), "--no-report")
    assert out.returncode == 0, out.stderr
    assert not left[0].exists()
    assert _alive_with_marker(tag) == []


@pytest.mark.parametrize(
    ("point", "root", "own", "expected"),
    [
        ("/sys/fs/cgroup", "/", "/user.slice/a.scope", "/sys/fs/cgroup/user.slice/a.scope"),
        ("/sys/fs/cgroup/memory", "/docker/abc", "/docker/abc", "/sys/fs/cgroup/memory"),
        ("/sys/fs/cgroup/memory", "/docker/abc", "/docker/abc/x", "/sys/fs/cgroup/memory/x"),
        ("/sys/fs/cgroup/memory", "/docker/abc", "/docker/abcd", None),
        ("/sys/fs/cgroup", "/", "/", "/sys/fs/cgroup"),
    ],
)
def test_a_cgroup_is_found_under_its_hierarchy_s_mount(point: str, root: str, own: str, expected: str | None) -> None:
    found = containment._folder(point, root, own)
    assert (str(found) if found else None) == expected
