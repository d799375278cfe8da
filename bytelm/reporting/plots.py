"""Loss curves as a PNG: train and validation loss against step, for one run or several.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global figure state), into
memory, then written atomically. The right axis reads the same curves in bits per byte
(nats / ln 2), the unit in which byte-level models are usually compared.
"""

from __future__ import annotations

import io
import math
import os
import threading
from pathlib import Path

import numpy as np

from bytelm.artifacts import train_log
from bytelm.atomic_io import atomic_write_bytes

SMOOTH_STEPS = 25  # the train curve's centred mean, over this many steps; the raw curve stays faint
FIGSIZE = (9.0, 5.0)
DPI = 110


def _centred_mean(values: list[float], window: int) -> np.ndarray:
    """The mean over a window centred on each step (shorter at the ends): no lag behind the curve."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 3:
        return v
    window = min(window, v.size)
    kernel = np.ones(window)
    return np.convolve(v, kernel, mode="same") / np.convolve(np.ones_like(v), kernel, mode="same")


def _import_matplotlib():
    # Imported on first use: matplotlib's import is a noticeable part of a short run's start-up, and
    # training draws only at the end.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg, Figure


def preload() -> None:
    """Starts matplotlib's imports on a side thread, so that a later `render` finds them done
    (the trainer calls it as its final evaluation keeps the devices busy)."""
    threading.Thread(target=_import_matplotlib, daemon=True).start()


def render(runs: list[tuple[str, dict]]) -> tuple[bytes, list[str]]:
    """A PNG of every run's train loss (faint raw, solid running mean) and validation loss (dashed,
    with markers), and the warnings met while reading the logs."""
    FigureCanvasAgg, Figure = _import_matplotlib()

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    warnings = []
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for (name, log), color in zip(runs, colors, strict=True):
        steps, loss, w1 = train_log.series_points(log, "loss")
        vsteps, vloss, w2 = train_log.series_points(log, "val_loss")
        warnings += [f"{name}: {w}" for w in (w1, w2) if w]
        if steps:
            ax.plot(steps, loss, color=color, alpha=0.25, linewidth=0.8)
            smooth = _centred_mean(loss, SMOOTH_STEPS)
            ax.plot(steps, smooth, color=color, linewidth=1.6, label=f"{name} train (mean of {SMOOTH_STEPS})")
        if vsteps:
            ax.plot(vsteps, vloss, color=color, linestyle="--", marker="o", markersize=4, label=f"{name} validation")
        if not steps and not vsteps:
            warnings.append(f"{name}: the log has no loss or val_loss values")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per byte)")
    ln2 = math.log(2)
    right = ax.secondary_yaxis("right", functions=(lambda nats: nats / ln2, lambda bits: bits * ln2))
    right.set_ylabel("bits per byte")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(" vs ".join(name for name, _ in runs) if len(runs) <= 4 else f"{len(runs)} runs")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue(), warnings


def write(out: str | os.PathLike, runs: list[tuple[str, dict]]) -> list[str]:
    """Renders `runs` (name, log) to the PNG `out`, atomically; returns the warnings."""
    png, warnings = render(runs)
    atomic_write_bytes(out, png)
    return warnings


def run_names(paths: list[str]) -> list[str]:
    """The folder of each log, or its whole path where two folders share a name."""
    names = [Path(p).resolve().parent.name or p for p in paths]
    return [n if names.count(n) == 1 else p for n, p in zip(names, paths, strict=True)]


def plot_logs(paths: list[str], out: str | os.PathLike) -> list[str]:
    """Reads every training log in `paths` (each labelled by its folder) and draws them into the PNG
    `out`; returns the warnings."""
    runs = [(name, train_log.read(p)) for name, p in zip(run_names(paths), paths, strict=True)]
    return write(out, runs)
