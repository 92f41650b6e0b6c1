"""bench compare and bench history: matching, confidence intervals, corrections, verdicts, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import bench, fake_scenario, journal, run_dirs
from harness import compare


def test_holm_adjusts_step_down_and_stays_monotone() -> None:
    assert compare.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert compare.holm([0.5]) == [0.5]
    assert compare.holm([0.001] * 60)[0] == pytest.approx(0.06)


def test_change_points_find_a_level_shift_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    flat = list(1000 * np.exp(rng.normal(0, 0.01, 30)))
    assert compare.change_points(flat) == []
    step = flat[:15] + [v * 0.85 for v in flat[15:]]
    assert compare.change_points(step) == [15]
    small = flat[:15] + [v * 0.98 for v in flat[15:]]  # 2 %: under the 5 % threshold
    assert compare.change_points(small) == []


def test_bootstrap_ci_covers_a_known_shift() -> None:
    rng = np.random.default_rng(2)
    base = [rng.lognormal(0, 0.05, 3000)]
    cand = [rng.lognormal(np.log(1.10), 0.05, 3000)]
    change, lo, hi, p = compare.change_with_ci(base, cand, "p50", batch=1)
    assert lo < 0.10 < hi and change == pytest.approx(0.10, abs=0.01) and p < 0.01
    same, lo, hi, p = compare.change_with_ci(base, [rng.lognormal(0, 0.05, 3000)], "p50", batch=1)
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
    html = bench("compare", str(base), str(cand), "--format", "html")
    assert '<section class="compare">' in html.stdout and "regressed" in html.stdout
    faster = _slowed(base, tmp_path / "fast", 1 / 1.2)
    assert bench("compare", str(base), str(faster)).returncode == 0
    assert "3 improved" in bench("compare", str(base), str(faster)).stdout
    small = _slowed(base, tmp_path / "small", 1.02)  # under the 5 % threshold
    assert "3 unchanged" in bench("compare", str(base), str(small)).stdout


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


@pytest.mark.usefixtures("fake_plugin")
def test_confirm_remeasures_and_drops_a_regression_that_does_not_hold(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, batches="[1, 2]", service_ms=0.5, min_s=0.3, max_s=0.4)
    assert bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    (base,) = run_dirs(tmp_path / "r")
    # a candidate whose first cell looks 30 % slower, though the code is the same: measured again, it is not
    cand = _slowed(base, tmp_path / "c" / "cand", 1.30, cells=1)
    plain = bench("compare", str(base), str(cand))
    assert plain.returncode == 1 and "1 regressed" in plain.stdout
    confirmed = bench("compare", str(base), str(cand), "--confirm")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert "confirm: 0 of 1 regression(s) held" in confirmed.stderr
    assert "regressed" not in confirmed.stdout.split("\n", 3)[3]
    (again,) = run_dirs(tmp_path / "c" / ".confirm")
    assert len(journal(again)) == 1, "only the regressed cell is measured again"
