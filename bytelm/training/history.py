"""What a run has logged so far (records, evaluations, probes, timings) and how a step is recorded.

The history is plain JSON-ready data: a checkpoint saves it whole (`to_meta`) and a resumed run
takes it back (`from_meta`), so the training log of a resumed run has every step exactly once.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable

from bytelm.errors import BytelmError
from bytelm.parallel import mesh


class TrainingDiverged(BytelmError):
    """The loss or gradient norm became non-finite."""


@dataclasses.dataclass
class History:
    """`records`: one dict per step; `evaluations`: one per evaluation; `probes`: the probe reports;
    `timing`: `train_seconds`, `compile_s`, `wall_offset` (wall time before a resume), `skipped`."""

    records: list[dict] = dataclasses.field(default_factory=list)
    evaluations: list[dict] = dataclasses.field(default_factory=list)
    probes: dict = dataclasses.field(default_factory=dict)
    timing: dict = dataclasses.field(
        default_factory=lambda: {"train_seconds": 0.0, "compile_s": float("nan"), "wall_offset": 0.0, "skipped": 0}
    )

    def to_meta(self) -> dict:
        """The checkpoint's JSON: the log so far."""
        return {"records": self.records, "evaluations": self.evaluations, "probes": self.probes, "timing": self.timing}

    @classmethod
    def from_meta(cls, meta: dict) -> History:
        """The history a checkpoint saved; the wall times of the steps to come continue from its last."""
        history = cls(meta["records"], meta["evaluations"], meta["probes"], meta["timing"])
        history.timing["wall_offset"] = history.records[-1]["wall_s"] if history.records else 0.0
        return history


class StepRecorder:
    """Turns each step's metrics into a record: its time, the learning rate, and a divergence check.

    `record(step, metrics)` blocks on that step only (the next one is already queued). The first step
    of a process counts as compile time (compiling overlapped with the step-0 evaluation, plus its first
    run); `pause()` after an evaluation or a save keeps that time out of the training time."""

    def __init__(self, history: History, rates, tokens_per_step: int, start: int, compile_s: float):
        # rates: count → {'lr': …[, 'muon_lr': …]} (`optimizer.logged_rates`)
        self.history, self.rates, self.tokens_per_step = history, rates, tokens_per_step
        self.start, self.compile_s = start, compile_s
        self.t0 = self.t_last = time.perf_counter()

    def pause(self) -> None:
        self.t_last = time.perf_counter()

    def record(self, step: int, metrics: dict, last_checkpoint: Callable[[], int | None]) -> dict:
        """Appends and returns the record of `step`; raises `TrainingDiverged` (naming the last good
        checkpoint) when its loss or gradient norm is not finite and the step was not skipped."""
        m = mesh.to_host(metrics)
        now = time.perf_counter()
        dt, self.t_last = now - self.t_last, now
        timing = self.history.timing
        if step == self.start + 1:
            timing["compile_s"] = self.compile_s + dt
        else:
            timing["train_seconds"] += dt
        loss, gnorm, skipped = float(m["loss"]), float(m["grad_norm"]), bool(m.get("skipped", False))
        if not skipped and not (math.isfinite(loss) and math.isfinite(gnorm)):
            last = last_checkpoint()
            raise TrainingDiverged(
                f"training diverged at step {step}: loss {loss}, grad norm {gnorm}; params.json and the last "
                f"good checkpoint ({'step ' + str(last) if last is not None else 'none yet'}) are untouched "
                "(try a lower --config.train.lr, or --config.train.max_grad_norm_skip to skip such steps)"
            )
        timing["skipped"] += skipped
        rec = {
            "step": step,
            "loss": loss,
            **{name: float(rate) for name, rate in self.rates(step - 1).items()},
            "grad_norm": gnorm,
            "tokens_per_s": self.tokens_per_step / dt,
            "wall_s": timing["wall_offset"] + now - self.t0,
        }
        rec |= {k: float(v) for k, v in m.items() if k.startswith("model/")}  # what the model sowed
        if skipped:
            rec["skipped"] = True
        self.history.records.append(rec)
        return rec


def summarize(history: History, n_params: int, steps: int, tokens_per_step: int, train_wall: float) -> dict:
    """The run's summary: final losses (the train loss as the mean of the last 50 steps), tokens/s
    (excluding each process's first, compiling step), timings and skips. `wall_s` is set by the caller."""
    records, timing, last_eval = history.records, history.timing, history.evaluations[-1]
    last = records[-min(len(records), 50) :]
    train_seconds = timing["train_seconds"]
    timed_steps = max(len(records) - 1, 0)
    return {
        "params": n_params,
        "steps": steps,
        "final_train_loss": statistics.fmean([r["loss"] for r in last if not r.get("skipped")] or [math.nan]),
        "final_train_loss_steps": len(last),
        "final_val_loss": last_eval["val_loss"],
        "final_val_loss_stderr": last_eval["val_loss_stderr"],
        "val_bpb": last_eval["val_bpb"],
        "tokens_per_s": timed_steps * tokens_per_step / train_seconds if train_seconds > 0 else float("nan"),
        "first_step_s": timing["compile_s"],
        "train_wall_s": train_wall,
        "wall_s": float("nan"),
        "skipped_steps": timing["skipped"],
    }


def summary_line(summary: dict) -> str:
    """The summary as the one line training prints."""
    s = summary
    return (
        f"summary: {s['params']:,} params, {s['steps']} steps, train loss {s['final_train_loss']:.4f} "
        f"(mean of last {s['final_train_loss_steps']}), val loss {s['final_val_loss']:.4f} ({s['val_bpb']:.3f} "
        f"bits/byte), {s['tokens_per_s']:,.0f} tok/s, first step {s['first_step_s']:.1f}s, wall {s['wall_s']:.1f}s"
        + (f", {s['skipped_steps']} steps skipped" if s["skipped_steps"] else "")
    )
