"""The report's charts as PNG or SVG files, for slides and pull requests: the same chart
definitions the page hands Chart.js (harness.report.charts), drawn by matplotlib.

Why matplotlib and not a screenshot of the page: SVG. Chart.js draws on a canvas, so a browser
gives only pixels, and a headless browser is a system package many machines (CI runners, servers
without root) lack; matplotlib is a pip install (``bench[images]``), writes true vector SVG with
its text kept as text, and needs no display. What it reads is the Chart.js config itself (datasets,
colours, line patterns, point shapes, hollow untrusted points, axes, titles), so a chart cannot
say one thing on the page and another in a file. A family of small multiples is one file, a grid
of its charts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UsageError
from harness.output.files import write

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: image formats written
FORMATS = ("png", "svg")
#: pixels per inch of a PNG: charts sized like the page's (1100 px wide) at twice the detail
DPI = 200
#: size of a chart alone, inches (the page's 2:1 line charts)
SINGLE_IN = (11.0, 5.5)
#: size of one small multiple, inches
SMALL_IN = (6.0, 4.6)
#: Chart.js point styles as matplotlib markers
_MARKERS = {"circle": "o", "triangle": "^", "rect": "s", "rectRot": "D", "star": "*", "crossRot": "x",
            "rectRounded": "s"}  # fmt: skip


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "charts as PNG or SVG need matplotlib: pip install 'bench[images]' (or open the HTML report)"
        ) from None
    matplotlib.use("Agg")  # no display: files only
    return matplotlib


def _dash(pattern: Sequence[float] | None) -> Any:
    return "-" if not pattern else (0, tuple(v / 2 for v in pattern))  # Chart.js px, matplotlib line widths


def _lines(ax: Axes, config: Mapping[str, Any], errorbars: bool, small: bool) -> None:
    for ds in config["data"]["datasets"]:
        points = [p for p in ds["data"] if p.get("x") is not None and p.get("y") is not None]
        if not points:
            continue
        xs, ys = [float(p["x"]) for p in points], [float(p["y"]) for p in points]
        color = ds.get("borderColor") or ds.get("backgroundColor") or "#1f77b4"
        radius = ds.get("pointRadius", 3)
        marker = _MARKERS.get(ds.get("pointStyle", "circle"), "o") if radius else None
        if ds.get("showLine", True):
            ax.plot(xs, ys, color=color, linestyle=_dash(ds.get("borderDash")), linewidth=1.6, label=ds["label"],
                    marker=None)  # fmt: skip
            label = None
        else:
            label = ds["label"]
        if marker:
            fill = ds.get("pointBackgroundColor", ds.get("backgroundColor", color))
            faces = fill if isinstance(fill, list) else [fill] * len(points)
            edge = ds.get("pointBorderColor", color)
            ax.scatter(xs, ys, s=(radius * 2.2) ** 2, marker=marker, facecolors=faces, edgecolors=edge,
                       linewidths=1.2, zorder=3, label=label)  # fmt: skip
        if errorbars:
            for p in points:
                if p.get("lo") is not None and p.get("hi") is not None:
                    ax.vlines(float(p["x"]), float(p["lo"]), float(p["hi"]), colors=color, linewidth=1.0)
    legend = config["options"]["plugins"].get("legend", {})
    if legend.get("display", True) and ax.get_legend_handles_labels()[0]:
        if small or legend.get("position") == "bottom":
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        else:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _bars(ax: Axes, config: Mapping[str, Any]) -> None:
    labels = list(config["data"]["labels"])
    where = {label: i for i, label in enumerate(labels)}
    for ds in config["data"]["datasets"]:
        ys = [where[p["y"]] for p in ds["data"]]
        xs = [float(p["x"]) for p in ds["data"]]
        ax.barh(ys, xs, color=ds.get("backgroundColor"), edgecolor=ds.get("borderColor"), linewidth=1.0,
                label=ds["label"], height=0.75)  # fmt: skip
    ax.set_yticks(range(len(labels)), labels, fontsize=8)  # every bar labelled
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the first label on top, as on the page
    if config["options"]["plugins"].get("legend", {}).get("display"):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _axes(ax: Axes, config: Mapping[str, Any]) -> None:
    from matplotlib.ticker import FuncFormatter

    for name in ("x", "y"):
        scale = config["options"].get("scales", {}).get(name) or {}
        if scale.get("type") == "logarithmic":
            (ax.set_xscale if name == "x" else ax.set_yscale)("log")
            axis = ax.xaxis if name == "x" else ax.yaxis
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))  # 0.01, not 10^-2
        title = (scale.get("title") or {}).get("text")
        if title:
            (ax.set_xlabel if name == "x" else ax.set_ylabel)(title, fontsize=9)
        low, high = scale.get("min"), scale.get("max")
        if low is not None or high is not None:
            (ax.set_xlim if name == "x" else ax.set_ylim)(low, high)
    ax.grid(True, which="major", color="#e1e4e8", linewidth=0.6)
    ax.tick_params(labelsize=8)
    plugins = config["options"]["plugins"]
    subtitle = plugins.get("subtitle") or {}
    lines = subtitle.get("text") if subtitle.get("display") else []
    lines = [lines] if isinstance(lines, str) else list(lines or [])
    lines = [line.replace(" (hover for why)", "") for line in lines]  # a file has no hover
    title = plugins.get("title", {}).get("text", "")
    ax.set_title("\n".join([title, *lines]), fontsize=9, loc="center")


def draw(charts: Sequence[Mapping[str, Any]], target: Path, fmt: str) -> Path:
    """One family of charts (a chart alone, or its small multiples as a grid) into ``target``."""
    matplotlib = _matplotlib()
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in an SVG: searchable, editable
    matplotlib.rcParams["svg.hashsalt"] = "bench"  # and the same chart gives the same file
    n = len(charts)
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    bar = charts[0]["config"]["type"] == "bar"
    if bar:
        size = (SINGLE_IN[0], max(3.0, float(charts[0].get("height") or 400) / 90))
    elif n == 1:
        size = SINGLE_IN
    else:
        size = (SMALL_IN[0] * cols, SMALL_IN[1] * rows)
    fig = Figure(figsize=size, layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    for i, chart in enumerate(charts):
        ax = grid[i // cols][i % cols]
        config = chart["config"]
        if config["type"] == "bar":
            _bars(ax, config)
        else:
            _lines(ax, config, bool(chart.get("errorbars")), small=n > 1)
        _axes(ax, config)
    for j in range(n, rows * cols):
        grid[j // cols][j % cols].set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
    return write(target, buf.getvalue(), "-o")  # atomic; a folder that cannot be written is exit 2


def write_images(charts: Sequence[Mapping[str, Any]], folder: Path, fmt: str,
                 names: Sequence[str] = ()) -> list[Path]:  # fmt: skip
    """Every chart family of ``charts`` (or those ``names`` picks) as ``folder/<family>.<fmt>``."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: charts are written as {' or '.join(FORMATS)}")
    families: dict[str, list[Mapping[str, Any]]] = {}
    for chart in charts:
        families.setdefault(str(chart.get("family") or chart["id"]), []).append(chart)
    unknown = [n for n in names if n not in families]
    if unknown:
        raise UsageError(f"--chart {', '.join(unknown)}: this run has no such chart; it has {', '.join(families)}")
    return [draw(families[name], folder / f"{name}.{fmt}", fmt) for name in (names or list(families))]
