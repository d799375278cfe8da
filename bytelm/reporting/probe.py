"""The probe report: what the model predicts, byte by byte, on one fixed validation window.

Shown before and after training, it makes learning visible: the input, the target (the input
shifted by one) and the argmax prediction printed in aligned columns, and the top-5 guesses with
their probabilities at a few positions. Pure functions of logits: the caller runs the model.
"""

from __future__ import annotations

import numpy as np

from bytelm.data import tokenizer


def _log_softmax(logits_LxV: np.ndarray) -> np.ndarray:
    z = logits_LxV.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def probe_positions(length: int, count: int) -> list[int]:
    """`count` positions spread evenly over `[0, length)`, always including the last one."""
    if count <= 0 or length <= 0:
        return []
    return sorted({int(round(p)) for p in np.linspace(0, length - 1, min(count, length))})


def report(
    logits_LxV: np.ndarray,
    x_ids_L: np.ndarray,
    y_ids_L: np.ndarray,
    mask_L: np.ndarray,
    num_positions: int,
    boundaries_L: np.ndarray | None = None,
) -> dict:
    """The probe of one window: logits `[L, V]` for inputs `x_ids_L`, targets `y_ids_L`, mask `[L]`;
    `boundaries_L`, for a model that chunks its input, where its chunks start.

    Returns a JSON-ready dict: `loss` (mean nats over real targets), `input`, `target`,
    `prediction` (id lists), `top5` (per probed position: the five most likely next bytes), and
    `boundaries` (0/1 per input byte) when given.
    """
    n = int(mask_L.sum())
    logp_LxV = _log_softmax(np.asarray(logits_LxV)[:n])
    y = np.asarray(y_ids_L)[:n]
    loss = float(-logp_LxV[np.arange(n), y].mean()) if n else float("nan")
    top5 = []
    for pos in probe_positions(n, num_positions):
        best = np.argsort(-logp_LxV[pos], kind="stable")[:5]
        top5.append(
            {
                "position": pos,
                "context_tail": tokenizer.display(np.asarray(x_ids_L)[max(0, pos - 11) : pos + 1]),
                "target": tokenizer.display_token(int(y[pos])),
                "guesses": [
                    {"byte": tokenizer.display_token(int(b)), "id": int(b), "prob": float(np.exp(logp_LxV[pos, b]))}
                    for b in best
                ],
            }
        )
    out = {
        "loss": loss,
        "input": [int(i) for i in np.asarray(x_ids_L)[:n]],
        "target": [int(i) for i in y],
        "prediction": [int(i) for i in np.argmax(logp_LxV, axis=-1)],
        "top5": top5,
    }
    if boundaries_L is not None:
        out["boundaries"] = [int(b) for b in np.asarray(boundaries_L)[:n]]
        out["after_space"] = after_space_fraction(out["input"], out["boundaries"])
    return out


def after_space_fraction(ids: list[int], boundaries: list[int]) -> float:
    """Of the chunks that start after a window's first byte, the fraction whose previous byte is
    space-like (`tokenizer.space_like`): how often a chunk starts a word. NaN with no such chunk."""
    space = tokenizer.space_like()
    after = [bool(space[ids[t - 1]]) for t in range(1, len(ids)) if boundaries[t]]
    return float(np.mean(after)) if after else float("nan")


def format_report(rep: dict, title: str, width: int = 96) -> str:
    """The probe as text: aligned input/target/prediction rows wrapped at `width`, then the top-5."""
    rows = [("input", "input"), ("target", "target"), ("predict", "prediction")]
    if "boundaries" in rep:  # a chunking model: '^' under each byte that starts a chunk
        rows.insert(1, ("chunks", "boundaries"))
    cells = [
        ["^" if b else "" for b in rep[key]] if key == "boundaries" else [tokenizer.grid_cell(i) for i in rep[key]]
        for _, key in rows
    ]
    col_w = [max(len(c[j]) for c in cells) for j in range(len(cells[0]))]
    lines = [f"{title}: loss {rep['loss']:.4f} nats ({rep['loss'] / np.log(2):.3f} bits/byte) on one validation window"]
    start = 0
    while start < len(col_w):
        end, used = start, 0
        while end < len(col_w) and used + col_w[end] + 1 <= width - 8:
            used += col_w[end] + 1
            end += 1
        end = max(end, start + 1)
        for (label, _), row in zip(rows, cells, strict=True):
            lines.append(f"{label:>7} " + " ".join(row[j].ljust(col_w[j]) for j in range(start, end)))
        lines.append("")
        start = end
    correct = sum(int(a == b) for a, b in zip(rep["target"], rep["prediction"], strict=True))
    lines.append(f"argmax correct at {correct} of {len(rep['target'])} positions")
    if "boundaries" in rep:
        lines.append(
            f"{sum(rep['boundaries'])} chunks start in these {len(rep['boundaries'])} bytes; "
            f"{rep['after_space']:.0%} of those after the first follow a space-like byte"
        )
    for t in rep["top5"]:
        guesses = "  ".join(f"{tokenizer.grid_cell(g['id']):>4} {g['prob']:.2f}" for g in t["guesses"])
        lines.append(f"  pos {t['position']:>3} after '{t['context_tail']}' (next '{t['target']}'): {guesses}")
    return "\n".join(lines)
