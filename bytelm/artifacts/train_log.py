"""The training log, `DIR/train_log.json`: a superset of the TorchLean TrainLog schema.

TorchLean's fields, so tools that read it keep working:
  title   str                      the run's name
  steps   [first, last]            the first and last training step logged
  series  [{name, values, color}]  at least `loss` (one value per step) and `val_loss` (one value
                                   per evaluation); each series also carries `steps`, the step of
                                   every value, since the two series have different lengths
  notes   ["key=value", ...]       including `prompt=` and `generated=`
Our own fields:
  records      [{step, loss, lr, grad_norm, tokens_per_s, wall_s}]  one per training step
  evaluations  [{step, val_loss, val_bpb, val_loss_stderr, windows, tokens}]
  probes       {"before": probe report, "after": probe report}
  summary      {params, steps, final_train_loss, final_val_loss, val_bpb, tokens_per_s, wall_s, ...}
  sample       {prompt, generated, settings}
Non-finite numbers are written as the strings "NaN", "Infinity" and "-Infinity".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from bytelm.errors import BytelmError

COLORS = {"loss": "#1f77b4", "val_loss": "#ff7f0e"}


def make_log(
    title: str,
    records: list[dict],
    evaluations: list[dict],
    probes: dict,
    summary: dict,
    sample: dict | None,
    notes: dict[str, Any],
) -> dict:
    """Assembles the log document from its parts (write it with `atomic_io.atomic_write_json`)."""
    steps = [r["step"] for r in records]
    series = [
        {"name": "loss", "values": [r["loss"] for r in records], "color": COLORS["loss"], "steps": steps},
        {
            "name": "val_loss",
            "values": [e["val_loss"] for e in evaluations],
            "color": COLORS["val_loss"],
            "steps": [e["step"] for e in evaluations],
        },
    ]
    all_notes = dict(notes)
    if sample is not None:
        all_notes["prompt"] = sample["prompt"]
        all_notes["generated"] = sample["generated"]
    return {
        "title": title,
        "steps": [steps[0], steps[-1]] if steps else [0, 0],
        "series": series,
        "notes": [f"{k}={v}" for k, v in all_notes.items()],
        "records": records,
        "evaluations": evaluations,
        "probes": probes,
        "summary": summary,
        "sample": sample,
    }


class LogError(BytelmError):
    """A file is not a readable bytelm training log."""


def read(path: str | os.PathLike) -> dict:
    """A training log from disk, checked to hold a `series` list."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LogError(f"no training log at {path}: pass a run's train_log.json") from None
    except IsADirectoryError:
        raise LogError(f"{path} is a directory: pass its train_log.json") from None
    except OSError as e:
        raise LogError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError:
        raise LogError(f"{path} is not valid JSON: is it a bytelm train_log.json?") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("series"), list):
        raise LogError(f"{path} is not a bytelm training log (it has no 'series' list)")
    return doc


def number(value: Any) -> float:
    """A logged number; the strings "NaN", "Infinity" and "-Infinity" mean what they say."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def series_points(log: dict, name: str) -> tuple[list[float], list[float], str | None]:
    """(steps, values, warning) of the series `name`: empty if absent; the common part, with a
    warning, when its steps and values differ in length."""
    for s in log.get("series") or []:
        if isinstance(s, dict) and s.get("name") == name:
            values = s.get("values") if isinstance(s.get("values"), list) else []
            steps = s.get("steps") if isinstance(s.get("steps"), list) else list(range(1, len(values) + 1))
            warning = None
            if len(steps) != len(values):
                warning = f"series {name!r} has {len(values)} values but {len(steps)} steps: using the common part"
            n = min(len(steps), len(values))
            return [number(x) for x in steps[:n]], [number(v) for v in values[:n]], warning
    return [], [], None
