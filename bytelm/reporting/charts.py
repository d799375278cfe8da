"""Line charts as inline SVG for the report page, drawn by matplotlib (round ticks, log axes, legends).

matplotlib's object API on an SVG canvas (no pyplot, no global figure): text stays text
(`svg.fonttype: none`), so the page is small and its numbers can be searched and copied; each chart
salts matplotlib's element ids with its own name, so several charts share one page without their
ids colliding; and the SVG carries no date, so the same log gives the same page.
"""

from __future__ import annotations

import io
import math
import re
from typing import NamedTuple

MARKERS_BELOW = 60  # a series with fewer points (the evaluations) gets a marker at each
DPI = 100  # pixels per inch: a chart of 720 × 260 pixels is 7.2 × 2.6 inches


class Series(NamedTuple):
    name: str
    color: str
    xs: list[float]
    ys: list[float]


def _tick(value: float, _position=None) -> str:
    """A tick label: ticks sit at round numbers, so the shortest form reads best (0.0005, 2.5, 16,000)."""
    if value == 0:
        return "0"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.6g}"


def line_chart(
    series: list[Series],
    title: str,
    width_px: int,
    height_px: int,
    *,
    log_y: bool = False,
    log_x: bool = False,
    x_label: str = "step",
) -> str:
    """An SVG `<svg>` element: every series as a line against step, named in a legend when there are
    several. Non-finite values are left out; a chart with none left says so. `log_x` draws x on a log axis
    (positive values: wall times). `log_y` is honoured when
    every value is positive and they span a decade or more (within less, a log axis has no labelled
    tick). The root carries `role="img"` and `aria-label` = `title`; each line the id `series-NAME`.

    matplotlib reads `svg.fonttype` and `svg.hashsalt` from its settings while it draws, so they are
    set for this drawing only (`rc_context` restores them on the way out)."""
    from matplotlib import rc_context, ticker
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    with rc_context({"svg.fonttype": "none", "svg.hashsalt": f"bytelm-{title}", "font.size": 9}):
        fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
        FigureCanvasSVG(fig)
        ax = fig.add_subplot(1, 1, 1)
        finite = [(s, [(x, y) for x, y in zip(s.xs, s.ys, strict=False) if math.isfinite(y)]) for s in series]
        for s, points in finite:
            if points:
                xs, ys = zip(*points, strict=True)
                marker = "o" if len(points) < MARKERS_BELOW else None
                (line,) = ax.plot(xs, ys, color=s.color, linewidth=1.4, marker=marker, markersize=3.5, label=s.name)
                line.set_gid(f"series-{s.name}")
        values = [y for _, points in finite for _, y in points]
        if not values:
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center")
        elif log_y and min(values) > 0 and max(values) >= 10 * min(values):  # a decade or more
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())  # decades only: 0.1, 1, 10
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_tick))
        if log_x:  # wall times from seconds to many minutes: a decade per major tick
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        else:
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=x_label == "step"))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(_tick))
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
        if values and len(series) > 1:  # a single series is named by the title
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and doctype: the element goes inline
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)  # RDF boilerplate
    # Sized in pixels as asked (matplotlib writes points); the viewBox scales the drawing to it.
    size = f'role="img" aria-label="{_attr(title)}" width="{width_px}" height="{height_px}"'
    return re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', rf"<svg {size} \1", svg, count=1)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
