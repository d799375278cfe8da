"""The run report: one self-contained HTML page (no scripts, fonts or network) for a run directory.

It shows what the run's files hold: the config, the summary as pills, SVG charts (matplotlib's,
`charts.py`) of every series in the log and of the learning rate, gradient norm and tokens/s per
step, the last steps as a table, the probe reports before and after training with input, target
and prediction aligned by position, the prompt and the generated text, and a table of every
parameter leaf with its statistics and a tiny histogram (a 16-bar sparkline per leaf, drawn
directly: a figure per leaf would cost more than the rest of the page). A missing or inconsistent
file is a warning on the page, never a crash: the page is most useful exactly when a run went wrong.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bytelm.artifacts import param_pack, run_dir
from bytelm.artifacts.train_log import number
from bytelm.atomic_io import atomic_write_text
from bytelm.data import tokenizer
from bytelm.reporting import browser
from bytelm.reporting.charts import Series, line_chart

LAST_STEPS = 20  # rows of the step table
HIST_BINS = 16
CHART_W, CHART_H = 720, 260
SMALL_W, SMALL_H = 340, 170
# Per-step fields charted beside the losses, and whether on a log axis (a gradient norm spans decades);
# every `model/*` field a model sows (a hierarchical model's boundary fraction, ...) is charted after them.
RECORD_CHARTS = {"lr": False, "grad_norm": True, "tokens_per_s": False}
MODEL_PREFIX = "model/"
RECORD_COLOR = "#6a51a3"

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;
 color:#1d2230;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
.muted{color:#667}.pills{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}
.pill{background:#eef2fb;border:1px solid #d3dbef;border-radius:14px;padding:3px 12px}
.pill b{font-weight:600}
.warn{background:#fff4e5;border:1px solid #f0c27b;border-radius:6px;padding:6px 10px;margin:4px 0}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #eaeaf0;padding:3px 8px;text-align:right}
th{background:#f6f7fb}td.l,th.l{text-align:left}pre{background:#f6f7fb;padding:10px;border-radius:6px;overflow:auto}
.probe{overflow-x:auto}.probe td{font-family:ui-monospace,Menlo,monospace;padding:1px 3px;text-align:center;border:none}
.probe th{text-align:left;background:none;font-weight:600;padding-right:8px}
.probe td.miss{background:#fde2e2}.probe td.hit{background:#e3f5e3}.probe td.cut{color:#6a51a3;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:12px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    """A number for the page: integers with thousands separators, others to `digits` decimals."""
    if value is None:
        return "–"
    x = number(value)
    if not math.isfinite(x):
        return str(x)
    if x.is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1e7 or abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:,.{digits}f}"


def _read_json(path: Path, what: str, warnings: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        warnings.append(f"{what} {path.name} is missing")
    except (OSError, ValueError) as e:
        warnings.append(f"{what} {path.name} could not be read: {e}")
    return None


# --- Charts ----------------------------------------------------------------------------------------


def _histogram_svg(leaf: np.ndarray) -> str:
    values = np.asarray(leaf, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ""
    counts, _ = np.histogram(values, bins=HIST_BINS)
    top = max(int(counts.max()), 1)
    bars = "".join(
        f'<rect x="{i * 5}" y="{20 - 20 * c / top:.1f}" width="4" height="{20 * c / top:.1f}" fill="#5b7fc7"/>'
        for i, c in enumerate(counts)
    )
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{HIST_BINS * 5}" height="20" class="hist">{bars}</svg>'


# --- Sections ------------------------------------------------------------------------------------


def _pills(log: dict | None) -> str:
    s = (log or {}).get("summary") or {}
    items = [
        ("parameters", _fmt(s.get("params"))),
        ("steps", _fmt(s.get("steps"))),
        ("final train loss", _fmt(s.get("final_train_loss"))),
        ("final val loss", _fmt(s.get("final_val_loss"))),
        ("bits per byte", _fmt(s.get("val_bpb"))),
        ("tokens/s", _fmt(s.get("tokens_per_s"), 0)),
        ("wall time", f"{_fmt(s.get('wall_s'), 1)} s"),
    ]
    return (
        '<div class="pills">' + "".join(f'<span class="pill">{k} <b>{_esc(v)}</b></span>' for k, v in items) + "</div>"
    )


def _charts(log: dict, warnings: list[str]) -> str:
    lines = []
    for s in log.get("series") or []:
        values, steps = s.get("values") or [], s.get("steps")
        if steps is None:
            steps = list(range(1, len(values) + 1))
        if len(steps) != len(values):
            warnings.append(
                f"series {s.get('name')!r} has {len(values)} values but {len(steps)} steps: "
                "the chart shows the common part"
            )
        n = min(len(steps), len(values))
        color = s.get("color") or "#333"
        lines.append(Series(str(s.get("name")), color, [number(x) for x in steps[:n]], [number(v) for v in values[:n]]))
    main = line_chart(lines, "loss (nats per byte)", CHART_W, CHART_H)
    records = log.get("records") or []
    steps = [number(r.get("step")) for r in records]
    sown = sorted({f for r in records for f in r if f.startswith(MODEL_PREFIX)})
    charted = list(RECORD_CHARTS.items()) + [(f, False) for f in sown]
    small = [
        line_chart([Series(field, RECORD_COLOR, steps, [number(r.get(field)) for r in records])], field,
                   SMALL_W, SMALL_H, log_y=log_y)
        for field, log_y in charted
        if any(field in r for r in records)
    ]  # fmt: skip
    return f'<div class="charts" id="charts">{main}{"".join(small)}</div>'


def _last_steps(log: dict) -> str:
    records = (log.get("records") or [])[-LAST_STEPS:]
    if not records:
        return '<p class="muted">no steps logged</p>'
    fields = list(records[0].keys())
    head = "".join(f"<th>{_esc(f)}</th>" for f in fields)
    rows = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(r.get(f)))}</td>" for f in fields) + "</tr>" for r in records)
    return f'<table id="last-steps"><tr>{head}</tr>{rows}</table>'


def _probe(rep: dict, title: str) -> str:
    rows = {k: rep.get(k) or [] for k in ("input", "target", "prediction")}
    n = min(len(v) for v in rows.values())
    show = tokenizer.grid_cell
    cells = {
        "input": "".join(f"<td>{_esc(show(i))}</td>" for i in rows["input"][:n]),
        "target": "".join(f"<td>{_esc(show(i))}</td>" for i in rows["target"][:n]),
        "prediction": "".join(
            f'<td class="{"hit" if p == t else "miss"}">{_esc(show(p))}</td>'
            for p, t in zip(rows["prediction"][:n], rows["target"][:n], strict=True)
        ),
    }
    if rep.get("boundaries"):  # a chunking model: each byte that starts a chunk, marked
        marks = rep["boundaries"][:n]
        cells = {"chunks": "".join(f'<td class="{"cut" if m else ""}">{"▼" if m else ""}</td>' for m in marks), **cells}
    correct = sum(int(p == t) for p, t in zip(rows["prediction"][:n], rows["target"][:n], strict=True))
    table = "".join(f"<tr><th>{k}</th>{v}</tr>" for k, v in cells.items())
    top5 = "".join(
        f'<tr><td>{t["position"]}</td><td class="l"><code>{_esc(t["context_tail"])}</code></td>'
        f'<td><code>{_esc(t["target"])}</code></td><td class="l">'
        + ", ".join(f"<code>{_esc(show(g['id']))}</code> {g['prob']:.2f}" for g in t["guesses"])
        + "</td></tr>"
        for t in rep.get("top5") or []
    )
    chunks = ""
    if rep.get("boundaries"):
        chunks = (
            f", {sum(rep['boundaries'])} chunks ({_fmt(rep.get('after_space'), 2)} of them after a space-like byte)"
        )
    return (
        f"<h3>{_esc(title)}: loss {_fmt(rep.get('loss'))} nats, argmax right at {correct} of {n} positions{chunks}</h3>"
        f'<div class="probe"><table>{table}</table></div>'
        '<table><tr><th>pos</th><th class="l">context</th><th>next</th><th class="l">top-5 guesses</th></tr>'
        f"{top5}</table>"
    )


def _parameters(path: Path, warnings: list[str]) -> str:
    try:
        flat = param_pack.flatten(param_pack.load_pack(path))
    except param_pack.ParamPackError as e:
        warnings.append(f"parameter pack: {e}")
        return '<p class="muted">no parameter table: the pack could not be read</p>'
    rows = []
    for p, leaf in flat.items():
        st = param_pack.leaf_stats(leaf)
        cells = [p, str(list(leaf.shape)), str(leaf.dtype), _fmt(leaf.size)]
        cells += [_fmt(st[k]) for k in ("mean", "std", "min", "max")]
        tds = "".join(f'<td class="{"l" if i < 3 else ""}">{_esc(c)}</td>' for i, c in enumerate(cells))
        rows.append(f"<tr>{tds}<td>{_histogram_svg(leaf)}</td></tr>")
    total = sum(int(v.size) for v in flat.values())
    head = "".join(
        f'<th class="{"l" if i < 3 else ""}">{h}</th>'
        for i, h in enumerate(("path", "shape", "dtype", "count", "mean", "std", "min", "max", "histogram"))
    )
    table = f'<table id="parameters"><tr>{head}</tr>{"".join(rows)}</table>'
    return f"{table}<p>{total:,} parameters in {len(flat)} leaves</p>"


def render(workdir: str | Path) -> tuple[str, list[str], dict | None]:
    """The page for `workdir` as HTML text, the warnings shown on it, and the parsed log."""
    workdir = Path(workdir)
    warnings: list[str] = []
    config = _read_json(workdir / run_dir.CONFIG_FILE, "config", warnings)
    log = _read_json(workdir / run_dir.LOG_FILE, "training log", warnings)
    if log is not None and not isinstance(log, dict):
        warnings.append(f"training log {run_dir.LOG_FILE} is not a JSON object")
        log = None
    name = (log or {}).get("title") or (config or {}).get("name") or workdir.name
    body = [f'<h1>{_esc(name)}</h1><div class="muted">{_esc(workdir.resolve())}</div>', _pills(log)]
    sections = []
    if log is not None:
        sections.append(f"<h2>Training curves</h2>{_charts(log, warnings)}")
        sections.append(f"<h2>Last {LAST_STEPS} steps</h2>{_last_steps(log)}")
        probes = log.get("probes") or {}
        if probes:
            sections.append("<h2>Probe: one validation window</h2>")
            sections += [_probe(probes[k], f"{k} training") for k in ("before", "after") if k in probes]
        sample = log.get("sample")
        if sample:
            settings = ", ".join(f"{k}={v}" for k, v in (sample.get("settings") or {}).items())
            sections.append(
                f'<h2>Sample</h2><p class="muted">{_esc(settings)}</p>'
                f'<pre id="sample"><b>{_esc(sample.get("prompt", ""))}</b>{_esc(sample.get("generated", ""))}</pre>'
            )
        else:
            warnings.append("no sample in the log (sample.generate was 0): try python -m launch.sample")
    if (workdir / run_dir.PARAMS_FILE).exists():
        sections.append(f"<h2>Parameters</h2>{_parameters(workdir / run_dir.PARAMS_FILE, warnings)}")
    else:
        warnings.append(f"parameter pack {run_dir.PARAMS_FILE} is missing")
    if config is not None:
        sections.append(
            "<h2>Config</h2><details><summary>config.json</summary>"
            f'<pre id="config">{_esc(json.dumps(config, indent=1))}</pre></details>'
        )
    body += [f'<div class="warn">warning: {_esc(w)}</div>' for w in warnings]
    body += sections
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(name)} · bytelm run report</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
    return page, warnings, log


def text_summary(log: dict | None, page_path: Path, warnings: list[str]) -> str:
    """The pills and the last losses as a few lines for the terminal."""
    s = (log or {}).get("summary") or {}
    lines = [
        f"{(log or {}).get('title', 'run')}: {_fmt(s.get('params'))} params, {_fmt(s.get('steps'))} steps, "
        f"{_fmt(s.get('tokens_per_s'), 0)} tok/s, {_fmt(s.get('wall_s'), 1)} s",
        f"  final train loss {_fmt(s.get('final_train_loss'))}, val loss {_fmt(s.get('final_val_loss'))} "
        f"({_fmt(s.get('val_bpb'), 3)} bits/byte)",
    ]
    for r in ((log or {}).get("records") or [])[-3:]:
        lines.append(f"  step {r.get('step')}: loss {_fmt(r.get('loss'))}")
    lines += [f"  warning: {w}" for w in warnings]
    lines.append(f"report: {page_path}")
    return "\n".join(lines)


def write_report(workdir: str | Path, screenshot: bool = False) -> str:
    """Writes `workdir/report.html` (and with `screenshot`, `report.png` from headless Chromium),
    atomically; returns what the terminal shows: the summary, the last losses and the paths."""
    workdir = Path(workdir)
    page, warnings, log = render(workdir)
    path = workdir / run_dir.REPORT_FILE
    atomic_write_text(path, page)
    text = text_summary(log, path, warnings)
    if screenshot:
        browser.screenshot(path, workdir / run_dir.SCREENSHOT_FILE)
        text += f"\nscreenshot: {workdir / run_dir.SCREENSHOT_FILE}"
    return text
