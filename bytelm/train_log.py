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

from typing import Any

COLORS = {"loss": "#1f77b4", "val_loss": "#ff7f0e"}


def build(
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
