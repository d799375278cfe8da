"""The loss over a fixed window set, with its standard error; the probe of one window."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import numpy as np

from bytelm.data import batches
from bytelm.parallel import mesh
from bytelm.reporting import probe

# Evaluation batches dispatched ahead of the one being read back: the host builds the next batch's
# one-hot tensors while the devices run this one (more would only hold more batches in memory).
EVAL_IN_FLIGHT = 1


def evaluate(
    eval_step,
    params,
    make: Callable[[np.ndarray], batches.Batch],
    starts: np.ndarray,
    batch_size: int,
    on_windows: Callable[[int], None] | None = None,
) -> dict:
    """Mean loss (nats per byte) over the windows at `starts` of whatever split `make` cuts them from,
    with its standard error.

    `make` is a `step.batch_maker` for the split at `batch_size`; `on_windows(n)` hears of each batch of
    `n` windows read back (a progress bar). Returns `loss`, `bpb` (bits per byte), `loss_stderr` (over
    windows), `windows` and `tokens` (the targets scored)."""
    sums, counts, in_flight = [], [], collections.deque()

    def collect() -> None:
        out, n = in_flight.popleft()
        s, c = mesh.to_host(out)
        sums.append(s[:n])
        counts.append(c[:n])
        if on_windows is not None:
            on_windows(n)

    for i in range(0, starts.size, batch_size):
        chunk = starts[i : i + batch_size]
        # The last batch repeats its last window up to the fixed shape (one compile); the repeats'
        # per-window results are dropped in `collect`.
        batch = make(np.pad(chunk, (0, batch_size - chunk.size), mode="edge"))
        in_flight.append((eval_step(params, batch), chunk.size))
        if len(in_flight) > EVAL_IN_FLIGHT:
            collect()
    while in_flight:
        collect()
    s, c = np.concatenate(sums), np.concatenate(counts)
    loss = float(s.sum() / c.sum())
    per_window = s / np.maximum(c, 1)
    stderr = float(per_window.std(ddof=1) / math.sqrt(per_window.size)) if per_window.size > 1 else float("nan")
    return {
        "loss": loss,
        "bpb": loss / math.log(2),
        "loss_stderr": stderr,
        "windows": int(starts.size),
        "tokens": int(c.sum()),
    }


def as_validation(ev: dict) -> dict:
    """An `evaluate` result on the validation split as the training log records it (`val_loss`, …)."""
    return {
        "val_loss": ev["loss"],
        "val_bpb": ev["bpb"],
        "val_loss_stderr": ev["loss_stderr"],
        "windows": ev["windows"],
        "tokens": ev["tokens"],
    }


def run_probe(forward, params, ids: np.ndarray, seq_len: int, positions: int) -> dict:
    """The probe report (`reporting.probe`) on the first window of `ids`; `forward` is `models.seen_forward`'s."""
    b = batches.make_batch(ids, np.zeros(1, dtype=np.int64), seq_len)
    logits, seen = forward(params, b.x)
    marks = seen.get("intermediates", {}).get("boundaries")
    marks = None if marks is None else np.asarray(marks[0])[0]
    return probe.report(np.asarray(logits[0]), b.x[0].argmax(-1), b.y[0].argmax(-1), b.mask[0], positions, marks)
