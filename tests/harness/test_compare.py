"""bench compare and bench history: matching, confidence intervals, corrections, verdicts, refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import bench, fake_scenario, journal, run_dirs, stub_manifest
from harness.analysis import comparison, history, intervals, render


def test_holm_adjusts_step_down_and_stays_monotone() -> None:
    assert intervals.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert intervals.holm([0.5]) == [0.5]
    assert intervals.holm([0.001] * 60)[0] == pytest.approx(0.06)


def test_change_points_find_a_level_shift_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    flat = list(1000 * np.exp(rng.normal(0, 0.01, 30)))
    assert history.change_points(flat) == []
    step = flat[:15] + [v * 0.85 for v in flat[15:]]
    assert history.change_points(step) == [15]
    small = flat[:15] + [v * 0.98 for v in flat[15:]]  # 2 %: under the 5 % threshold
    assert history.change_points(small) == []


def _history_run(root: Path, name: str, at: float, throughputs: list[float], machine: str = "CPU A",
                 **manifest: object) -> None:  # fmt: skip
    """A run folder of one cell measured ``len(throughputs)`` times (repeats), made at ``at``."""
    from harness.store import RunDir

    data = {**stub_manifest(name, "s"), "created_at": at, "environment": {"cpu": {"model": machine, "usable_cpus": 2}}}
    run = RunDir.create(root, name, {**data, **manifest})
    for repeat, value in enumerate(throughputs):
        run.append({"cell_id": "a", "label": "a", "repeat": repeat, "status": "ok", "throughput_sps": value,
                    "p99_ms": 1000 / value})  # fmt: skip


def test_history_is_one_point_per_run_the_mean_of_its_repeats(tmp_path: Path) -> None:
    _history_run(tmp_path, "r1", 0, [90.0, 100.0, 110.0], planned=3, finished_at=0.5)
    _history_run(tmp_path, "r2", 1, [60.0, 70.0, 80.0], planned=3, finished_at=1.5)
    _history_run(tmp_path, "r3", 2, [70.0], planned=2)  # killed after its first cell
    found = history.history(tmp_path)
    assert [(r["run"], r["throughput_sps"], r["repeats"]) for r in found.rows] == [
        ("r1", 100.0, 3), ("r2", 70.0, 3), ("r3", 70.0, 1)]  # fmt: skip
    assert history.history_changes(found.rows) == []  # three runs are too few for a change point, six repeats too
    documented = (Path(__file__).parents[2] / "docs" / "compare.md").read_text().split("## `bench history --json`")[1]
    assert all(f".{key}`" in documented for key in found.rows[0]), found.rows[0].keys()  # every field documented
    assert found.notes == [f"r3: run incomplete: 1 of 2 planned cells measured; finish it with: "
                           f"bench run --resume {tmp_path / 'r3'}"]  # fmt: skip


def _rows(values: list[float | None], **fields: object) -> list[dict[str, object]]:
    return [{"run": f"run{i:02d}", "commit": f"c{i}", "cell_id": "a", "label": "a", "quick": False,
             "machine": "CPU A", "trusted": True, "throughput_sps": 100.0, "p99_ms": v, **fields}
            for i, v in enumerate(values)]  # fmt: skip


def _p99_changes(rows: list[dict[str, object]]) -> list[tuple[str, float, str | None]]:
    return [(c["at_run"], round(c["change"], 3), c["machine"]) for c in history.history_changes(rows)
            if c["metric"] == "p99_ms"]  # fmt: skip


def test_history_changes_give_each_shift_against_the_level_before_it_at_the_run_it_started() -> None:
    assert _p99_changes(_rows([10.0] * 10 + [8.0] * 10 + [10.0] * 10)) == [("run10", -0.2, None), ("run20", 0.25, None)]
    assert _p99_changes(_rows([None, None] + [10.0] * 6 + [12.0] * 6)) == [("run08", 0.2, None)]  # no p99 in two runs
    documented = (Path(__file__).parents[2] / "docs" / "compare.md").read_text().split("## `bench history --json`")[1]
    change = history.history_changes(_rows([10.0] * 6 + [8.0] * 6))[0]
    assert all(f".{key}`" in documented for key in change), change.keys()  # every field documented


def test_history_changes_keep_machines_and_quick_runs_apart_and_skip_untrusted_cells() -> None:
    one, other = _rows([10.0] * 12), _rows([20.0] * 12, machine="CPU B")
    alternating = [row for pair in zip(one, other, strict=True) for row in pair]
    assert _p99_changes(alternating) == []
    shifted = _rows([10.0] * 6 + [20.0] * 6, machine="CPU B")
    assert _p99_changes(one + shifted) == [("run06", 1.0, "CPU B")]
    quick = _rows([20.0] * 12, quick=True)
    assert _p99_changes(one + quick) == []
    disturbed = _rows([10.0] * 6 + [14.0] * 6)
    for row in disturbed[6:]:
        row["trusted"] = False
    assert _p99_changes(disturbed) == []


def test_bootstrap_ci_covers_a_known_shift() -> None:
    rng = np.random.default_rng(2)
    base = [rng.lognormal(0, 0.05, 3000)]
    cand = [rng.lognormal(np.log(1.10), 0.05, 3000)]
    change, lo, hi, p = intervals.change_with_ci(base, cand, "p50", batch=1)
    assert lo < 0.10 < hi and change == pytest.approx(0.10, abs=0.01) and p < 0.01
    same, lo, hi, p = intervals.change_with_ci(base, [rng.lognormal(0, 0.05, 3000)], "p50", batch=1)
    assert lo < same < hi and abs(same) < 0.01 and p > 0.001  # the same distribution: a small change


def _slowed(run: Path, dest: Path, factor: float, cells: int | None = None) -> Path:
    """A copy of a real run whose first ``cells`` cells (all when None) got ``factor`` slower."""
    shutil.copytree(run, dest)
    records = journal(dest)
    for index, rec in enumerate(records):
        if rec.get("status") != "ok" or (cells is not None and index >= cells):
            continue
        lat = dest / rec["latency_file"]
        np.save(lat, (np.load(lat) * factor).astype(np.int64))
        rec["throughput_sps"] /= factor
        for key in ("p50_ms", "p99_ms"):
            rec[key] *= factor
    (dest / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (dest / "results.parquet").unlink(missing_ok=True)
    return dest


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_compare_flags_a_slowed_cell_and_leaves_the_rest(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2, 3]", service_ms=0.5, min_s=0.3, max_s=0.4)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (base,) = run_dirs(tmp_path / "r")
    same = bench("compare", str(base), str(base))
    assert same.returncode == 0, same.stderr
    assert "3 cells compared: 3 unchanged" in same.stdout
    cand = _slowed(base, tmp_path / "cand", 1.20, cells=1)
    slow = bench("compare", str(base), str(cand), "--format", "json")
    assert slow.returncode == 1, slow.stderr
    result = json.loads(slow.stdout)
    assert result["counts"] == {"regressed": 1, "unchanged": 2}
    (cell,) = [c for c in result["cells"] if c["verdict"] == "regressed"]
    p50 = cell["metrics"]["p50"]
    assert p50["change"] == pytest.approx(0.20, abs=0.01) and p50["ci_low"] < 0.2 < p50["ci_high"]
    assert p50["p_adjusted"] < 0.05 and p50["worse"] is True
    md = bench("compare", str(base), str(cand), "--format", "md", "-o", str(tmp_path / "c.md"))
    assert md.returncode == 1 and "**regression**" in (tmp_path / "c.md").read_text()
    html = bench("compare", str(base), str(cand), "--format", "html", "--json-out", str(tmp_path / "c.json"))
    assert '<section class="compare">' in html.stdout and "regressed" in html.stdout
    # the comparison as a section of the candidate's report: from the JSON written, or compared there
    for how in (("--comparison", str(tmp_path / "c.json")), ("--baseline", str(base))):
        page = tmp_path / f"report{how[0]}.html"
        assert bench("report", str(cand), *how, "-o", str(page)).returncode == 0
        section = page.read_text().split('<section class="compare">')[1].split("</section>")[0]
        assert "1 regressed, 2 unchanged" in section and "+20.0%" in section
    (tmp_path / "bad.json").write_text('{"cells": 3}')
    bad = bench("report", str(cand), "--comparison", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x.html"))
    assert bad.returncode == 2 and "not a comparison" in bad.stderr and "Traceback" not in bad.stderr
    faster = _slowed(base, tmp_path / "fast", 1 / 1.2)
    assert bench("compare", str(base), str(faster)).returncode == 0
    assert "3 improved" in bench("compare", str(base), str(faster)).stdout
    small = _slowed(base, tmp_path / "small", 1.02)  # under the 5 % threshold
    assert "3 unchanged" in bench("compare", str(base), str(small)).stdout


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_compare_refuses_what_cannot_be_compared(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (base,) = run_dirs(tmp_path / "r")
    other = tmp_path / "other.yaml"
    other.write_text(scenario.read_text().replace("name: fake", "name: other", 1))
    assert bench("run", str(other), "--out", str(tmp_path / "o"), "--no-report").returncode == 0
    (second,) = run_dirs(tmp_path / "o")
    mixed = bench("compare", str(base), str(second))
    assert mixed.returncode == 2 and "compare runs of one scenario" in mixed.stderr

    moved = tmp_path / "moved"
    shutil.copytree(base, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["environment"]["cpu"]["model"] = "Another CPU"
    manifest["environment"]["packages"]["numpy"] = "0.0.1"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    env = bench("compare", str(base), str(moved))
    assert env.returncode == 2 and "cpu.model" in env.stderr and "packages.numpy" in env.stderr
    assert bench("compare", str(base), str(moved), "--allow-env-mismatch").returncode == 0

    disjoint = tmp_path / "disjoint"
    shutil.copytree(base, disjoint)
    records = journal(disjoint)
    for rec in records:
        rec["cell_id"] = "000000000000"
    (disjoint / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    none = bench("compare", str(base), str(disjoint))
    assert none.returncode == 2 and "no cell in common" in none.stderr

    corrupt = tmp_path / "corrupt"
    shutil.copytree(base, corrupt)
    with open(corrupt / "journal.jsonl", "a") as fh:
        fh.write('{"cell_id": "abc", "truncated\n')
    broken = bench("compare", str(base), str(corrupt))
    assert broken.returncode in (0, 2) and "Traceback" not in broken.stderr
    bad = bench("compare", str(base), str(base), "--threshold", "0")
    assert bad.returncode == 2 and "--threshold" in bad.stderr
    for out in (mixed, env, none, bad):
        assert "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_history_lists_runs_and_finds_a_step(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, service_ms=0.5)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (base,) = run_dirs(tmp_path / "r")
    root = tmp_path / "hist"
    root.mkdir()
    manifest = json.loads((base / "manifest.json").read_text())
    for i in range(12):
        dest = _slowed(base, root / f"run{i:02d}", 1.0 if i < 6 else 1.3)
        (dest / "manifest.json").write_text(json.dumps({**manifest, "created_at": manifest["created_at"] + i}))
    done = bench("history", str(root), "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert len({r["run"] for r in found["runs"]}) == 12
    steps = {(c["metric"], c["at_run"]) for c in found["changes"]}
    assert ("throughput_sps", "run06") in steps
    text = bench("history", str(root), "--html", str(tmp_path / "h.html"))
    assert "12 runs" in text.stdout and "change point" in text.stdout
    page = (tmp_path / "h.html").read_text()
    assert "Throughput per run" in page and "run06" in page and "<script>alert" not in page
    empty = bench("history", str(tmp_path / "nope"))
    assert empty.returncode == 2 and "Traceback" not in empty.stderr


def _cell(change: float, lo: float, hi: float, p: float, worse: bool = True) -> comparison.CellComparison:
    cell = comparison.CellComparison("c", "c")
    cell.metrics["p50"] = comparison.MetricChange("p50", 1.0, 1 + change, change, lo, hi, p, p_adjusted=p, worse=worse)
    return cell


def test_verdicts_weigh_significance_and_how_large_a_change_may_be() -> None:
    def verdict(*args: float, worse: bool = True) -> str:
        cell = _cell(*args, worse=worse)
        comparison._decide([cell], threshold=0.05, alpha=0.05)
        return cell.verdict

    # significant, and a change as large as the threshold is within the interval: acted on
    assert verdict(0.04, 0.02, 0.06, 0.001) == "regressed"
    assert verdict(-0.08, -0.10, -0.06, 0.001, worse=False) == "improved"
    # significant but shown smaller than the threshold; small and not significant: no change that matters
    assert verdict(0.02, 0.01, 0.03, 0.0001) == "unchanged"
    assert verdict(0.01, -0.05, 0.07, 0.6) == "unchanged"
    # as large as the threshold, but within the noise
    assert verdict(0.06, -0.01, 0.13, 0.09) == "inconclusive"


def test_suspects_are_what_looks_slower_and_only_the_remeasurement_decides() -> None:
    slower = _cell(0.03, -0.05, 0.11, 0.40)  # one-sided p 0.20: looks slower, not significant
    faster = _cell(-0.03, -0.11, 0.05, 0.40, worse=False)
    noise = _cell(0.01, -0.07, 0.09, 0.80)
    cells = [slower, faster, noise]
    for i, cell in enumerate(cells):
        cell.cell_id = cell.label = f"c{i}"
    result = comparison.Comparison("a", "b", 0.05, 0.05, cells, [], [], [])
    assert comparison.suspects(result, screen_alpha=0.25) == ["c0"]
    assert comparison.suspects(result, screen_alpha=0.1) == []
    again = _cell(0.09, 0.06, 0.12, 1e-6)
    again.cell_id, again.verdict = "c0", "regressed"
    comparison.apply_confirmation(result, [again], {"repeats": 12, "baseline": "here"})
    assert [c.verdict for c in result.cells] == ["regressed", "unchanged", "unchanged"]
    assert result.cells[0].screen_verdict == "unchanged" and result.cells[0].label == "c0"
    assert result.confirmation == {"repeats": 12, "baseline": "here", "suspects": 1, "held": 1}
    assert "measured again; the sweep said unchanged" in render.render_text(result)
    assert "1 regression(s) held" in render.render_markdown(result)


def test_a_cell_whose_processes_scatter_gets_the_wide_interval_it_needs() -> None:
    def side(throughputs: list[float]) -> comparison.Side:
        return comparison.Side([], {"throughput": throughputs, "p50": [1e3 / t for t in throughputs], "p99": []})

    steady = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2]
    # two paces, as a shared machine gives: the candidate happened to draw more slow processes
    base_pace, cand_pace = [100.0, 98.0, 102.0, 70.0, 101.0, 99.0], [72.0, 100.0, 69.0, 101.0, 71.0, 99.0]
    cells = [(f"s{i}", f"steady {i}", 1, side(steady), side([v * 0.999 for v in steady])) for i in range(20)]
    cells += [("paces", "two paces", 1, side(base_pace), side(cand_pace)),
              ("slower", "steady, 10 % slower", 1, side(steady), side([v / 1.1 for v in steady]))]  # fmt: skip
    verdicts = {c.cell_id: c for c in comparison.judge_cells(cells, threshold=0.05, alpha=0.01)}
    assert verdicts["slower"].verdict == "regressed"
    paces = verdicts["paces"].metrics["throughput"]
    assert verdicts["paces"].verdict != "regressed" and paces.ci_high - paces.ci_low > 0.2, paces
    assert intervals.cell_spread([1.0], [1.0], 0.03) == 0.03  # one process a side: nothing to measure
    assert intervals.cell_spread(base_pace, cand_pace, 0.01) > 0.1


@pytest.mark.parametrize("size", [2, 3, 6])
def test_the_pooled_spread_reads_the_sd_whatever_the_number_of_processes(size: int) -> None:
    rng = np.random.default_rng(size)
    groups = [list(np.exp(rng.normal(0, 0.05, size))) for _ in range(400)]
    assert intervals.pooled_run_sigma(groups) == pytest.approx(0.05, rel=0.08)


@pytest.mark.parametrize("repeats", [2, 4])
def test_identical_code_makes_a_false_verdict_about_as_seldom_as_alpha_says(repeats: int) -> None:
    """alpha = 0.01 is the chance of any false verdict over 30 cells x 3 metrics compared: a spread
    read too small (the median deviation of a pair is 0.71 sd) made it 0.40 at two repeats."""
    rng = np.random.default_rng(repeats)

    def side() -> comparison.Side:
        v = np.exp(rng.normal(0, 0.05, repeats))
        return comparison.Side([], {"throughput": list(1000 * v), "p50": list(2 / v),
                                    "p99": list(5 * np.exp(rng.normal(0, 0.05, repeats)))})  # fmt: skip

    trials = 60
    false = sum(
        any(c.verdict in ("regressed", "improved")
            for c in comparison.judge_cells([(f"c{i}", "l", 1, side(), side()) for i in range(30)], 0.05, 0.01))
        for _ in range(trials)
    )  # fmt: skip
    assert false <= 2, f"{false} of {trials} comparisons of identical code gave a false verdict"


def test_the_code_of_an_older_commit_is_checked_out_and_removed() -> None:
    from harness.analysis import confirm

    parent = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=confirm.REPO, capture_output=True, text=True)
    if parent.returncode != 0:
        pytest.skip("not a git checkout with history: " + parent.stderr.strip())
    manifest = {"environment": {"git": {"commit": parent.stdout.strip(), "dirty": False}}}
    with confirm.code_of(manifest["environment"]) as code:
        assert code.available and code.path is not None
        # the worker is where that commit had it: harness/executors/ now, harness/ before
        assert any((code.path / "harness" / where).is_file() for where in ("executors/worker.py", "worker.py"))
        checkout = code.path
    assert not checkout.exists()
    with confirm.code_of({"git": {"commit": "0" * 40, "dirty": False}}) as code:
        assert not code.available and "not in this repository" in code.how
    with confirm.code_of({"git": {"commit": parent.stdout.strip(), "dirty": True}}) as code:
        assert not code.available and "uncommitted" in code.how


def test_an_installed_bench_without_git_measures_its_own_version_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import environment
    from harness.analysis import confirm

    monkeypatch.setattr(environment, "git_commit", lambda path=None: {"commit": None, "dirty": None})
    mine = environment.package_versions(("bench",))["bench"]
    run = {"environment": {"git": {"commit": None}, "packages": {"bench": mine}}}
    with confirm.code_of(run["environment"]) as code:
        assert code.available and code.path is None and "this installation" in code.how
    run["environment"]["packages"]["bench"] = "0.0.0"
    with confirm.code_of(run["environment"]) as code:
        assert not code.available and "bench 0.0.0" in code.how


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_confirm_remeasures_and_drops_a_regression_that_does_not_hold(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2]", service_ms=0.5, min_s=0.3, max_s=0.4)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (base,) = run_dirs(tmp_path / "r")
    # a candidate whose first cell looks 30 % slower, though the code is the same: measured again, it is not
    cand = _slowed(base, tmp_path / "c" / "cand", 1.30, cells=1)
    plain = bench("compare", str(base), str(cand))
    assert plain.returncode == 1 and "1 regressed" in plain.stdout
    # alpha 0.001: the re-measurement of the same code flags a change by chance once in 1000 runs
    confirmed = bench("compare", str(base), str(cand), "--confirm", "--confirm-repeats", "4", "--format", "json",
                      "--alpha", "0.001")  # fmt: skip
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    result = json.loads(confirmed.stdout)
    how = result["confirmation"]
    assert how["held"] == 0 and how["repeats"] == 4 and "this checkout" in how["baseline"]
    (cell,) = [c for c in result["cells"] if c["screen_verdict"] == "regressed"]
    assert cell["verdict"] != "regressed" and abs(cell["metrics"]["p50"]["change"]) < 0.2
    started = []
    for side in ("baseline", "candidate"):  # four processes a side of each suspect, and nothing else
        (run,) = run_dirs(tmp_path / "c" / ".confirm" / side)
        records = journal(run)
        assert len(records) == 4 * how["suspects"] and sorted({r["repeat"] for r in records}) == [0, 1, 2, 3]
        assert {r["cell_id"] for r in records} <= {c["cell_id"] for c in result["cells"]}
        started += [(r["started_at"], side) for r in records if r["cell_id"] == cell["cell_id"]]
    order = [side for _, side in sorted(started)]  # the sides alternate, process by process
    assert all(sorted(order[k : k + 2]) == ["baseline", "candidate"] for k in (0, 2, 4, 6)) and order[0] != order[2]

    elsewhere = tmp_path / "c" / "elsewhere"
    shutil.copytree(cand, elsewhere)
    manifest = json.loads((elsewhere / "manifest.json").read_text())
    manifest["environment"]["git"] = {"commit": "0" * 40, "dirty": False}
    (elsewhere / "manifest.json").write_text(json.dumps(manifest))
    refused = bench("compare", str(base), str(elsewhere), "--confirm")
    assert refused.returncode == 2 and "cannot measure the candidate" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_confirm_measures_the_baseline_with_its_own_code(tmp_path: Path) -> None:
    """The baseline side runs the baseline's checkout: here a copy whose fake backend is twice as
    fast, so the candidate (this checkout) is slower when both are measured again, and it holds."""
    from harness.analysis import confirm

    code = tmp_path / "basecode"
    for folder in ("harness", "plugins"):
        shutil.copytree(confirm.REPO / folder, code / folder, ignore=shutil.ignore_patterns("__pycache__"))
    fake = code / "plugins" / "fake.py"
    source = fake.read_text()
    assert 'service_ns=int(float(opts.get("service_ms", 1.0)) * 1e6)' in source
    fake.write_text(
        source.replace('float(opts.get("service_ms", 1.0)) * 1e6', 'float(opts.get("service_ms", 1.0)) * 5e5')
    )
    scenario = fake_scenario(tmp_path, batches="[1]", service_ms=1.0, min_s=0.3, max_s=0.4)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (base,) = run_dirs(tmp_path / "r")
    cand = _slowed(base, tmp_path / "c" / "cand", 1.30)
    held = bench("compare", str(base), str(cand), "--confirm", "--confirm-repeats", "2", "--baseline-code", str(code))
    assert held.returncode == 1, held.stdout + held.stderr
    assert "1 regression(s) held" in held.stderr and f"its code from {code}" in held.stdout
    runs = run_dirs(tmp_path / "c" / ".confirm" / "baseline")
    assert json.loads((runs[0] / "manifest.json").read_text())["settings"]["code_path"] == str(code.resolve())
    fast = [r["p50_ms"] for run in runs for r in journal(run)]
    assert fast and max(fast) < 0.8, "the baseline side ran the copy's faster fake backend"
    bad = bench("compare", str(base), str(cand), "--confirm", "--baseline-code", str(tmp_path))
    assert bad.returncode == 2 and "not a bench checkout" in bad.stderr


def test_every_field_of_the_json_is_documented() -> None:
    cell = _cell(0.1, 0.05, 0.15, 0.001)
    gone = comparison.NotMeasured("d", "d", "candidate", "ok", "", "timeout", "took too long", "regressed")
    result = comparison.Comparison("a", "b", 0.05, 0.01, [cell], [], [], [], {"repeats": 20}, [gone])
    data = json.loads(render.render(result, "json"))
    keys = set(data) | set(data["cells"][0]) | set(data["cells"][0]["metrics"]["p50"]) | set(data["not_measured"][0])
    doc = (Path(comparison.__file__).parents[2] / "docs" / "compare.md").read_text()
    assert [k for k in sorted(keys) if f"`{k}`" not in doc and f"`.{k}`" not in doc and f".{k}`" not in doc] == []
    assert render.render_html(render.comparison_from_dict(data)) == render.render_html(result)


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_run_repeats_override_the_scenario_for_a_nightly_gate(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path)
    done = bench("run", str(scenario), "--repeats", "2", "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (run,) = run_dirs(tmp_path / "r")
    assert sorted(r["repeat"] for r in journal(run)) == [0, 1]
    assert json.loads((run / "manifest.json").read_text())["settings"]["repeats"] == 2
    bad = bench("run", str(scenario), "--repeats", "0", "--out", str(tmp_path / "r"))
    assert bad.returncode == 2 and "--repeats" in bad.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_server_cells_issued_by_different_generators_are_not_judged(tmp_path: Path) -> None:
    extra = (
        "load: server\nloadgen: {target_qps: 200, latency_bound_ms: 20, min_duration_s: 1.0, min_query_count: 100}\n"
    )
    scenario = fake_scenario(tmp_path, service_ms=1.0, extra=extra)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (base,) = run_dirs(tmp_path / "r")
    assert comparison.generator_of(journal(base)[0]) == "bench"
    older = tmp_path / "older"  # the same run as a bench without the field would have stored it: LoadGen's
    shutil.copytree(base, older)
    records = journal(older)
    for record in records:
        record.pop("generator", None)
    (older / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (older / "results.parquet").unlink(missing_ok=True)
    assert comparison.generator_of(records[0]) == "loadgen"
    done = bench("compare", str(older), str(base), "--format", "json")
    assert done.returncode == 0, done.stderr
    (cell,) = json.loads(done.stdout)["cells"]
    assert cell["verdict"] == "inconclusive"
    assert "different generators (baseline loadgen, candidate bench)" in cell["note"]
    same = json.loads(bench("compare", str(base), str(base), "--format", "json").stdout)
    assert same["cells"][0]["verdict"] == "unchanged" and same["cells"][0]["note"] is None


def test_env_differences_compare_cuda_variables_only_where_both_runs_recorded_them() -> None:
    machine = {"cpu": {"model": "X", "usable_cpus": 2}, "memory_total_mb": 1.0, "gpus": [], "python": "3.11"}
    blocking = {**machine, "gpu_env": {"CUDA_LAUNCH_BLOCKING": "1", "CUDA_VISIBLE_DEVICES": "0"}}
    plain = {**machine, "gpu_env": {"CUDA_VISIBLE_DEVICES": "1"}}  # another GPU index is another machine's
    assert comparison.env_differences(plain, blocking, ()) == ["gpu_env.CUDA_LAUNCH_BLOCKING: None vs '1'"]
    assert comparison.env_differences(machine, blocking, ()) == []  # a run from before bench recorded them
