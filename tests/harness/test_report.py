from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import bench, fake_scenario, gpu_check_module, run_dirs

RESOURCE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", re.I)


def assert_self_contained(html: str) -> None:
    """Nothing the page would fetch: no external script, style, image or font."""
    assert not RESOURCE.search(html), RESOURCE.search(html)


@pytest.mark.slow
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
    assert_self_contained(html)
    (run_dir,) = run_dirs(tmp_path / "r")
    second = bench("report", str(run_dir), str(run_dir), "-o", str(tmp_path / "two.html"))
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "two.html").read_text().count("<h2>Run ") == 2


def _runs(tmp_path: Path, n: int, name: str = "fake.yaml") -> list[Path]:
    scenario = fake_scenario(
        tmp_path, batches="[1, 2, 4]", name=name, extra="cost: {hourly_usd: 0.5}\nbudgets: {p99_ms: 50}\n"
    )
    # (the fake scenario's noise_threshold 1.0: a busy test machine leaves no cell untrusted)
    out = tmp_path / "r"
    for _ in range(n):
        done = bench("run", str(scenario), "--out", str(out), "--no-report")
        assert done.returncode == 0, done.stderr
    return run_dirs(out)


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_one_run_and_three_merged_runs(tmp_path: Path) -> None:
    runs = _runs(tmp_path, 3)
    one = bench("report", str(runs[0]), "-o", str(tmp_path / "one.html"))
    assert one.returncode == 0, one.stderr
    html = (tmp_path / "one.html").read_text()
    assert_self_contained(html)
    for section in (
        "<h3>Answers</h3>",
        "highest throughput",
        "cheapest per million inferences meeting every budget",
        "<h3>Budgets</h3>",
        "<h3>Results</h3>",
        "<h3>Environment</h3>",
        "<h3>Scenario as given</h3>",
    ):
        assert section in html, section
    charts = json.loads(re.search(r'<script id="chart-data" type="application/json">(.*?)</script>', html, re.S)[1])
    ids = [c["id"] for c in charts[0]]
    assert ids[:3] == ["throughput", "latency", "cdf"] and "cost" in ids and "pareto-latency" in ids
    assert "accuracy" not in ids and "load" not in ids  # no fidelity or server data: left out, not drawn empty
    assert "Hardware evaluation" not in html
    # the scenario's other runs in the same results folder: its trends, the change points searched
    assert "<h3>History</h3>" in html and "3 runs of this scenario" in html and "No change point" in html
    assert {"trend-throughput_sps", "trend-p99_ms"} <= set(ids) and [c["index"] for c in charts[0]] == list(
        range(len(ids))
    )
    assert len(html) < 5_000_000

    merged = bench("report", *map(str, runs), "-o", str(tmp_path / "three.html"))
    assert merged.returncode == 0, merged.stderr
    html = (tmp_path / "three.html").read_text()
    assert "<h2>Hardware evaluation</h2>" in html and html.count("<h2>Run ") == 3
    table = html.split("<h2>Hardware evaluation</h2>")[1].split("</table>")[0]
    assert all(run.name in table for run in runs)


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_a_stored_label_with_markup_comes_out_escaped(tmp_path: Path) -> None:
    (run_dir,) = _runs(tmp_path, 1)
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["label"] = "<script>alert(1)</script>"
    record["config"]["backend"] = "<script>alert(3)</script>"
    lines[0] = json.dumps(record)
    (run_dir / "journal.jsonl").write_text("\n".join(lines) + "\n")
    done = bench("report", str(run_dir), "-o", str(tmp_path / "x.html"))
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "x.html").read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # in the table
    assert "\\u003cscript\\u003ealert(3)" in html  # in the charts' JSON


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_bad_report_input_is_a_clear_error(tmp_path: Path) -> None:
    first = _runs(tmp_path, 1)[0]
    other = fake_scenario(tmp_path, name="other.yaml").read_text().replace("name: fake", "name: other", 1)
    (tmp_path / "other.yaml").write_text(other)
    assert bench("run", str(tmp_path / "other.yaml"), "--out", str(tmp_path / "o"), "--no-report").returncode == 0
    (second,) = run_dirs(tmp_path / "o")
    mixed = bench("report", str(first), str(second), "-o", str(tmp_path / "m.html"))
    assert mixed.returncode == 2 and "different scenarios" in mixed.stderr and "--allow-mixed" in mixed.stderr
    allowed = bench("report", str(first), str(second), "-o", str(tmp_path / "m.html"), "--allow-mixed")
    assert allowed.returncode == 0, allowed.stderr
    not_run = bench("report", str(tmp_path), "-o", str(tmp_path / "n.html"))
    assert not_run.returncode == 2 and "not a bench run folder" in not_run.stderr
    manifest = json.loads((first / "manifest.json").read_text())
    (first / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    newer = bench("report", str(first), "-o", str(tmp_path / "v.html"))
    assert newer.returncode == 2 and "newer than this bench understands" in newer.stderr
    assert "Traceback" not in mixed.stderr + not_run.stderr + newer.stderr


def _chromium() -> str:
    """Debian's chromium; `make setup-browser` (run by `make test`) installs it where it can."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed: `make setup-browser` installs it with apt-get, or says why it cannot")


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_the_report_draws_in_a_real_browser_offline(tmp_path: Path) -> None:
    browser = _chromium()
    run_dir, _ = _runs(tmp_path, 2)  # two runs: the report also draws the history's trend charts
    report = tmp_path / "page.html"
    assert bench("report", str(run_dir), "-o", str(report)).returncode == 0
    offline = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
               f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([browser, *offline, "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    canvases = re.findall(r"<canvas[^>]*>", dom.stdout)
    assert len(canvases) >= 6 and any("trend-p99_ms" in canvas for canvas in canvases)
    for canvas in canvases:
        assert 'data-drawn="1"' in canvas, f"a chart did not draw: {canvas}"
        assert not re.search(r'data-points="0"', canvas), canvas
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("rror" in line or "Uncaught" in line)]
    assert not console, console
    shot = tmp_path / "report.png"
    subprocess.run([browser, *offline, "--window-size=1280,3000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=False)  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_many_series_become_small_multiples_with_whole_distinct_legend_entries_in_a_real_browser(
    tmp_path: Path,
) -> None:
    """15 configurations: 15 lines across batch sizes, 30 in latency (each cell's p50 and p99). As
    drawn, each chart holds at most eight, every line appears in one chart of its family, no two
    legend entries of a chart read the same and none runs off the canvas."""
    browser = _chromium()
    values = ", ".join(f"{0.1 + 0.01 * i:.2f}" for i in range(15))
    scenario = fake_scenario(tmp_path, min_s=0.05, max_s=0.1)
    scenario.write_text(scenario.read_text().replace("options: {service_ms: 0.2}", f"sweep: {{service_ms: [{values}]}}")
                        .replace("    sweep:\n      fault: [none]\n", ""))  # fmt: skip
    done = bench("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report")
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "r")
    report = tmp_path / "page.html"
    assert bench("report", str(run_dir), "-o", str(report)).returncode == 0
    offline = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([browser, *offline, "--window-size=1280,2000", "--virtual-time-budget=5000", "--dump-dom",
                          report.as_uri()], capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    legends = _legends(dom.stdout)
    families: dict[str, list[str]] = {}
    for name, (texts, canvas) in legends.items():
        assert len(set(texts)) == len(texts), (name, texts)  # each entry tells its line apart
        assert len(texts) <= 8, (name, texts)  # a reader can still match a colour with its entry
        assert 'data-legend-cut="0"' in canvas, (name, canvas)  # and is drawn whole, inside the canvas
        families.setdefault(name.rsplit("-", 1)[0] if name[-1].isdigit() else name, []).extend(texts)
    assert len(families["throughput"]) == 15 and len(families["latency"]) == 30, families
    assert {t.split()[0] for t in families["latency"]} == {"p50", "p99"}


def _legends(dom: str) -> dict[str, tuple[list[str], str]]:
    """Each drawn chart's legend entries (as Chart.js laid them out) and its canvas tag, by chart id."""
    legends = {}
    for canvas in re.findall(r"<canvas[^>]*>", dom):
        found = re.search(r'data-legend="([^"]*)"', canvas)
        if found:
            chart = re.search(r'id="chart-\d+-([^"]+)"', canvas)
            legends[chart[1] if chart else canvas] = (json.loads(html.unescape(found[1])), canvas)
    return legends


def _config(backend: str, precision: str, batch: int, **options: str) -> dict:
    return {"model": "m", "backend": backend, "backend_options": options, "device": "cpu", "precision": precision,
            "batch_size": batch, "load": "single_stream", "load_options": {}}  # fmt: skip


def test_more_than_eight_lines_become_small_multiples_by_precision_or_else_even_chunks() -> None:
    from harness.report.charts import MAX_SERIES, Series, config_words, facet

    runtimes = [("pytorch", {"mode": "eager"}), ("pytorch", {"mode": "compile"}), ("onnxruntime", {}),
                ("openvino", {"hint": "latency"})]  # fmt: skip
    configs = [_config(b, p, 1, **o) for b, o in runtimes for p in ("fp32", "int8", "bf16")][:-1]
    lines = [Series(config_words(c), c) for c in configs]
    groups = facet(lines)
    assert [name for name, _ in groups] == ["fp32", "int8", "bf16"]  # the runtimes side by side
    assert sum(len(g) for _, g in groups) == 11 and all(len(g) <= MAX_SERIES for _, g in groups)
    # a latency chart's p50 and p99 of a configuration stay in one chart
    pairs = [Series((pct, *s.key), s.config, tag=pct) for s in lines for pct in ("p50", "p99")]
    for _, group in facet(pairs):
        keys = {tuple(w for w in s.key if w != s.tag) for s in group}
        assert len(group) == 2 * len(keys) <= MAX_SERIES
    # one option swept over 15 values: no facet splits it usefully, so even chunks in order
    sweep = [_config("fake", "fp32", 1, service_ms=f"{0.1 + 0.01 * i:.2f}") for i in range(15)]
    chunks = facet([Series(config_words(c), c) for c in sweep])
    assert [name for name, _ in chunks] == ["1 of 2", "2 of 2"] and [len(g) for _, g in chunks] == [8, 7]


def test_the_first_screen_answers_from_trusted_cells_and_marks_the_others_in_place() -> None:
    from harness.analysis.economics import latency_basis
    from harness.report.firstscreen import answers, heat_table

    def cell(backend: str, batch: int, sps: float, p99: float, **more: object) -> dict:
        return {"status": "ok", "label": f"m {backend} cpu fp32 b{batch}", "config": _config(backend, "fp32", batch),
                "throughput_sps": sps, "p99_ms": p99, "cost_per_million_usd": 1000 / sps,
                "instances_needed": math.ceil(100_000 / sps), **more}  # fmt: skip

    records = [
        cell("a", 1, 1000.0, 0.5), cell("a", 64, 20_000.0, 1.5),
        cell("b", 1, 5000.0, 0.1, noisy=True, noise_fraction=0.6),  # fastest, but the machine was busy
        {"status": "skipped", "label": "m b cpu fp32 b64", "config": _config("b", "fp32", 64), "reason": "no b64"},
    ]  # fmt: skip
    found = answers(records, latency_basis(records, 100_000.0, "cost.target_qps"))
    rows = {r["question"]: r for r in found["rows"]}
    assert rows["highest throughput"]["cell"] == "m a cpu fp32 b64"
    assert rows["lowest p99 latency per request"]["cell"] == "m a cpu fp32 b1"  # not b's untrusted 0.1 ms
    cheapest = rows["cheapest per million inferences"]
    # the fleet's 100,000/s over the 5 machines b64 needs: 20,000/s gather a batch of 64 in 3.15 ms
    assert cheapest["cell"] == "m a cpu fp32 b64" and "4.650 ms per request (estimate" in cheapest["how"]
    assert [u["cell"] for u in found["left_out"]] == ["m b cpu fp32 b1"] and "60%" in found["left_out"][0]["why"]
    table = heat_table(records)
    assert table is not None and table["columns"] == ["b1", "b64"] and table["shared"] == "m cpu fp32"
    (a, b) = table["rows"]
    assert a["name"] == "a" and [c["kind"] for c in a["cells"]] == ["ok", "ok"]
    assert a["cells"][1]["lines"] == ["20,000/s", "p99 1.5 ms"] and "background:" in a["cells"][1]["style"]
    assert [c["kind"] for c in b["cells"]] == ["untrusted", "status-skipped"]
    assert "UNTRUSTED: other processes used 60%" in b["cells"][0]["title"] and "no b64" in b["cells"][1]["title"]


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_the_charts_as_png_and_svg_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="charts as files need the images extra: pip install 'bench[images]'")
    (run_dir,) = _runs(tmp_path, 1)
    png = bench("report", str(run_dir), "--format", "png", "-o", str(tmp_path / "png"))
    assert png.returncode == 0, png.stderr
    written = [Path(line) for line in png.stdout.split()]
    assert {p.name for p in written} >= {"throughput.png", "latency.png", "cdf.png", "cost.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    svg = bench("report", str(run_dir), "--format", "svg", "--chart", "throughput", "-o", str(tmp_path / "svg"))
    assert svg.returncode == 0, svg.stderr
    text = (tmp_path / "svg" / "throughput.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "Throughput vs batch size" in text  # text as text
    unknown = bench("report", str(run_dir), "--format", "svg", "--chart", "nope", "-o", str(tmp_path / "svg"))
    assert unknown.returncode == 2 and "no such chart; it has throughput, latency" in unknown.stderr


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 12 cells on three runtimes: about 2 min on a quiet 2-CPU machine, far more on a busy one
def test_the_report_of_a_real_three_runtime_run_reads_at_a_glance_in_a_real_browser(tmp_path: Path) -> None:
    """rec.yaml --quick on PyTorch, ONNX Runtime and OpenVINO, one cell made untrusted in a copy of
    its journal: the first screen holds the heat table, every chart draws with at most eight lines
    whose legend entries differ, the untrusted cell is marked where it stands, and the page stays
    under 5 MB with nothing to fetch."""
    for runtime in ("torch", "onnxruntime", "openvino"):
        pytest.importorskip(runtime, reason="the default scenario measures three runtimes")
    browser = _chromium()
    done = bench("run", "scenarios/rec.yaml", "--quick", "--out", str(tmp_path / "r"), "--no-report", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (measured,) = run_dirs(tmp_path / "r")
    run_dir = tmp_path / "copy" / measured.name
    shutil.copytree(measured, run_dir)
    lines = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines() if line.strip()]
    ok = [rec for rec in lines if rec["status"] == "ok"]
    assert len({rec["config"]["backend"] for rec in ok}) == 3, [rec["label"] for rec in lines]
    for rec in ok:  # a busy test machine flags cells at random: one untrusted cell, chosen here
        rec["trusted"] = True
    ok[0]["trusted"], ok[0]["untrusted_reason"] = False, "a compile ran beside it in both attempts"
    (run_dir / "journal.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    report = tmp_path / "page.html"
    made = bench("report", str(run_dir), "-o", str(report))
    assert made.returncode == 0, made.stderr
    page = report.read_text()
    assert len(page.encode()) < 5_000_000
    assert_self_contained(page)
    offline = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"]  # fmt: skip
    dom = subprocess.run([browser, *offline, "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("rror" in line or "Uncaught" in line)]
    assert not console, console
    canvases = re.findall(r"<canvas[^>]*>", dom.stdout)
    assert len(canvases) >= 6
    for canvas in canvases:
        assert 'data-drawn="1"' in canvas, f"a chart did not draw: {canvas}"
        series = re.search(r'data-series="(\d+)"', canvas)
        assert series and 1 <= int(series[1]) <= 8, canvas
        ticks, bars = re.search(r'data-ticks="(\d+)"', canvas), re.search(r'data-bars="(\d+)"', canvas)
        assert ticks is None or (bars and ticks[1] == bars[1]), canvas  # every bar labelled
    for name, (texts, _) in _legends(dom.stdout).items():
        assert len(set(texts)) == len(texts), (name, texts)
    heat = re.search(r'<table class="heat"[^>]*>', dom.stdout)
    assert heat, "no heat table"
    top = int(re.search(r'data-top="(\d+)"', heat[0])[1])  # type: ignore[index]
    assert top + 150 < 1000, f"the heat table starts at {top} px: its header and first rows off the first screen"
    table = dom.stdout.split(heat[0], 1)[1].split("</table>", 1)[0]
    marked = re.findall(r'<td class="untrusted"[^>]*title="([^"]*)"', table)
    assert len(marked) == 1 and "UNTRUSTED: a compile ran beside it" in html.unescape(marked[0]), marked
    assert "1 cell left out" in dom.stdout and "&#9888;" in page
    shot = tmp_path / "first-screen.png"
    subprocess.run([browser, *offline, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120,
                   check=False)  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"screenshot of the first screen: {shot}")


@pytest.mark.slow
@pytest.mark.usefixtures("fake_plugin")
def test_gpu_energy_gets_its_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose cells carry NVML's energy (GPU cells) gets a bar per cell of joules per inference."""
    (run_dir,) = _runs(tmp_path, 1)
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    for index, record in enumerate(records):
        if record["status"] == "ok":
            record.update(gpu_energy_per_inference_j=0.01 * (index + 1), gpu_power_mean_w=70.0 + index,
                          gpu_compute_p50_ms=0.25 * (index + 1))  # fmt: skip
    (run_dir / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = tmp_path / "page.html"
    out = bench("report", str(run_dir), "-o", str(page))
    assert out.returncode == 0, out.stderr
    text = page.read_text()
    assert "GPU energy per inference (J, log scale)" in text
    assert "joules per inference" in text
    plain = tmp_path / "plain"
    plain.mkdir()
    (other,) = _runs(plain, 1)
    assert bench("report", str(other), "-o", str(tmp_path / "plain.html")).returncode == 0
    assert "GPU energy per inference" not in (tmp_path / "plain.html").read_text()  # no energy, no chart
    # the CUDA-event time per call is a column beside the wall clock's
    assert "gpu_compute_p50_ms <small>(ms)</small>" in text and 'data-v="0.25"' in text
    # benchmarks/gpu_check.py --report-dir renders its runs' reports and says whether the chart is there
    gpu_check = gpu_check_module()
    gpu_check.RUNS[:] = [run_dir, other]
    gpu_check.reports(tmp_path / "gpu-check")
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith(f"6. report {run_dir.name}: ") and said[0].endswith(": energy chart yes")
    assert said[1].endswith(": energy chart no") and (tmp_path / "gpu-check" / f"{other.name}.html").is_file()
