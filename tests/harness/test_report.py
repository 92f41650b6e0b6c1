from __future__ import annotations

from pathlib import Path

import pytest

from conftest import bench, fake_scenario, run_dirs


@pytest.mark.usefixtures("fake_plugin")
def test_report_renders_and_escapes(tmp_path: Path) -> None:
    scenario = fake_scenario(tmp_path, faults="[none, raise]")
    text = scenario.read_text().replace("name: fake\n", "name: fake\ndescription: '<script>alert(1)</script>'\n", 1)
    scenario.write_text(text.replace("min_duration_s", "# <script>alert(2)</script>\n  min_duration_s"))
    out = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "rep"))
    assert out.returncode == 0, out.stderr
    (report,) = (tmp_path / "rep").glob("*.html")
    html = report.read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "injected failure in the fake backend" in html
    assert "throughput_sps" in html and "samples/s" in html
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched
    (run_dir,) = run_dirs(tmp_path / "r")
    second = bench("report", str(run_dir), str(run_dir), "-o", str(tmp_path / "two.html"))
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "two.html").read_text().count("<h2>Run ") == 2
