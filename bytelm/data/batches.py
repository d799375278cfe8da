"""Windows of byte ids and the typed one-hot `(x, y)` pairs the train step consumes.

A window is `seq_len + 1` consecutive ids; `x` is its first `seq_len` ids and `y` the same shifted
by one, so `y[t]` is the byte that follows `x[..t]`. A window that runs past the end of its split
is padded with `PAD_ID` (a space) and the padded targets are masked out of the loss.

Where the windows come from is explicit and depends only on (data seed, step):
- `data.windows = N > 0`: a fixed bank of N window starts drawn once from the data seed, and each
  step picks `batch_size` of them;
- `data.windows = 0`: fresh random starts anywhere in the training split at every step.
Nothing is held between steps, so a run can be resumed at any step and see the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import chex
import numpy as np

from bytelm.data.tokenizer import VOCAB_SIZE, one_hot

PAD_ID = 32  # a space: harmless if a padded position is ever shown


class Batch(NamedTuple):
    """One batch, a pytree that passes straight into a jitted step.

    `x`, `y`: one-hot float32 `[batch, seq_len, 256]`; `mask`: float32 `[batch, seq_len]`, 1 where
    `y` is a real next byte and 0 on padding."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray


def windows(ids: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cuts `[n]` ids at `starts` (`[batch]`) into int32 windows `[batch, seq_len + 1]`, padded
    with `PAD_ID`, and their lengths `[batch]` (how many ids are real)."""
    out = np.full((starts.size, seq_len + 1), PAD_ID, dtype=np.int32)
    lengths = np.zeros(starts.size, dtype=np.int32)
    for i, s in enumerate(starts):
        piece = ids[s : s + seq_len + 1]
        out[i, : piece.size] = piece
        lengths[i] = piece.size
    return out, lengths


def make_batch(ids: np.ndarray, starts: np.ndarray, seq_len: int) -> Batch:
    """The one-hot batch of the windows of `ids` at `starts`."""
    w, lengths = windows(ids, starts, seq_len)
    # Target t is real when window position t + 1 holds a real id.
    mask = (np.arange(seq_len)[None, :] + 1 < lengths[:, None]).astype(np.float32)
    return Batch(x=one_hot(w[:, :-1]), y=one_hot(w[:, 1:]), mask=mask)


def max_start(n: int, seq_len: int) -> int:
    """The largest window start that keeps a full window inside `n` ids (0 if none fits)."""
    return max(0, n - (seq_len + 1))


def window_bank(n: int, seq_len: int, num_windows: int, seed: int) -> np.ndarray:
    """The fixed bank of `num_windows` window starts (`[num_windows]` int64) for `data.windows`."""
    rng = np.random.default_rng([seed, 0x5EED])
    return rng.integers(0, max_start(n, seq_len) + 1, size=num_windows)


def train_starts(n: int, seq_len: int, batch_size: int, step: int, seed: int, bank: np.ndarray | None) -> np.ndarray:
    """Window starts `[batch_size]` for training step `step`: a pure function of its arguments."""
    rng = np.random.default_rng([seed, step])
    if bank is not None:
        return bank[rng.integers(0, bank.size, size=batch_size)]
    return rng.integers(0, max_start(n, seq_len) + 1, size=batch_size)


def eval_starts(sizes: int | Sequence[int], seq_len: int, num_windows: int) -> np.ndarray:
    """Starts of up to `num_windows` non-overlapping windows spread evenly over a split whose pieces
    (one per file) have `sizes` ids, in the split's positions.

    Windows tile each piece with stride `seq_len` (each id is predicted once, and no window crosses
    into the next piece); when there are more tiles than `num_windows`, an evenly spaced subset is
    kept, so the set is fixed for a run. `num_windows = 0` keeps every tile. A piece's last tile may
    be short (padded and masked)."""
    sizes = [int(sizes)] if np.isscalar(sizes) else [int(n) for n in sizes]
    offsets = np.cumsum([0, *sizes])
    tiles = np.concatenate(
        [at + np.arange(0, max(n - 1, 1), seq_len) for at, n in zip(offsets, sizes, strict=False) if n >= 2]
        or [np.zeros(0, np.int64)]
    )
    if num_windows and tiles.size > num_windows:
        tiles = tiles[np.linspace(0, tiles.size - 1, num_windows).round().astype(np.int64)]
    return tiles


def sliding_starts(sizes: Sequence[int], seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows every `stride` ids over each piece, as papers score fixed-window models: (starts
    `[n]`, first scored position `[n]`). A piece's first window scores all its targets, each later
    one only its last `stride` (the targets no earlier window scored), so each id is scored once
    with up to `seq_len - stride` ids of context before it."""
    starts, first = [], []
    for at, n in zip(np.cumsum([0, *sizes]), sizes, strict=False):
        s = 0
        while n >= 2:
            starts.append(at + s)
            first.append(0 if s == 0 else seq_len - stride)
            if s + seq_len >= n - 1:  # this window reached the piece's last target
                break
            s += stride
    return np.asarray(starts, np.int64), np.asarray(first, np.int64)


def assert_batch(batch: Batch, batch_size: int, seq_len: int) -> None:
    """Fails loudly, naming the expected shapes, if `batch` is not the train step's contract."""
    chex.assert_shape(batch.x, (batch_size, seq_len, VOCAB_SIZE))
    chex.assert_shape(batch.y, (batch_size, seq_len, VOCAB_SIZE))
    chex.assert_shape(batch.mask, (batch_size, seq_len))
    chex.assert_type([batch.x, batch.y, batch.mask], [np.float32, np.float32, np.float32])
