"""Splits of a corpus: training, validation and test bytes, as views of memory-mapped files.

A `Split` is a sequence of pieces, each a contiguous range of one file, read from the map one window
at a time: nothing copies a split, and what a read mapped is unmapped again (see `_release`). It
behaves like a 1-D uint8 array for what windows need (`size`, and a slice `split[a:b]`), with one
rule: a slice never crosses from one piece into the next, it stops at
the piece's end. So a window that would straddle two files is cut at the first one's end and padded
(its padding masked out of the loss), exactly like a window at the end of a split.

How a corpus of several files is cut (files in sorted order):
- by fractions (`data.val_fraction`, `data.test_fraction`): every file is laid out as
  [train | validation | test], the last `round(n * test_fraction)` bytes of each file its test part
  and the `round(n * val_fraction)` before them its validation part. Adding a file changes no
  other file's parts.
- by sizes (`data.train_bytes`, `val_bytes`, `test_bytes`, as the standard benchmarks give them):
  the files' concatenation is cut from its start, training first; bytes past the three are unused,
  so files added after the others (in sorted order) change nothing either.
"""

from __future__ import annotations

import dataclasses
import mmap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Piece:
    """Bytes `[start, stop)` of file `path`, read through `data` (the file's whole map)."""

    path: Path
    data: np.ndarray  # uint8 [file size], read-only, a view of `mm`
    mm: mmap.mmap
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


class Split:
    """Ids `[size]` (uint8) made of `pieces`, sliceable like an array (see the module's rule)."""

    def __init__(self, name: str, pieces: Sequence[Piece]):
        self.name = name
        self.pieces = tuple(p for p in pieces if p.size > 0)
        self.offsets = np.cumsum([0, *(p.size for p in self.pieces)])  # [pieces + 1]

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    @property
    def piece_sizes(self) -> list[int]:
        return [p.size for p in self.pieces]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: slice) -> np.ndarray:
        """`self[a:b]`: a copy of ids a.. of the piece that holds position a, up to b or that piece's end."""
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a Split is read in slices, split[a:b]")
        a = 0 if index.start is None else int(index.start)
        b = self.size if index.stop is None else min(int(index.stop), self.size)
        if a < 0 or a >= b:
            return np.zeros(0, np.uint8)
        i = int(np.searchsorted(self.offsets, a, side="right")) - 1
        p, local = self.pieces[i], a - int(self.offsets[i])
        lo, hi = p.start + local, min(p.start + local + (b - a), p.stop)
        out = p.data[lo:hi].copy()
        _release(p.mm, lo, hi)
        return out

    def to_array(self) -> np.ndarray:
        """The whole split as one array (a copy): for small splits and tests."""
        return np.concatenate([p.data[p.start : p.stop] for p in self.pieces]) if self.pieces else np.zeros(0, np.uint8)


# The kernel maps a file's cached pages in large folios (up to 2 MiB, aligned to their size) on a
# fault, so one 65-byte window can add a MiB or two to resident memory; random windows would make
# the whole map resident over a run. Each read drops the aligned 2 MiB blocks it touched from this
# process's page tables (MADV_DONTNEED: the kernel keeps the pages cached), about 10 us a window.
_RELEASE_BLOCK = 2 << 20


def _release(mm: mmap.mmap, lo: int, hi: int) -> None:
    start = lo // _RELEASE_BLOCK * _RELEASE_BLOCK
    stop = min(-(-hi // _RELEASE_BLOCK) * _RELEASE_BLOCK, mm.size())
    if stop > start:
        mm.madvise(mmap.MADV_DONTNEED, start, stop - start)


def by_fractions(sizes: Sequence[int], val_fraction: float, test_fraction: float) -> list[tuple[int, int, int]]:
    """Per file of `sizes` bytes: (train, val, test) byte counts, laid out in that order."""
    out = []
    for n in sizes:
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        out.append((max(n - n_val - n_test, 0), min(n_val, n - n_test), n_test))
    return out


def by_sizes(sizes: Sequence[int], wanted: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Per file: (train, val, test) byte counts that cut the files' concatenation at `wanted`
    (train, val, test bytes from its start); the caller has checked that they fit."""
    bounds = np.cumsum([0, *wanted])  # where each split starts and ends in the concatenation
    out, at = [], 0
    for n in sizes:
        parts = tuple(int(max(0, min(at + n, bounds[k + 1]) - max(at, bounds[k]))) for k in range(len(SPLITS)))
        out.append(parts)
        at += n
    return out


def make_splits(files: Sequence[tuple[Path, np.ndarray, mmap.mmap]], counts) -> dict[str, Split]:
    """The three `Split`s of `files` (path, map view, map), each file cut by its (train, val, test)."""
    pieces: dict[str, list[Piece]] = {name: [] for name in SPLITS}
    for (path, data, mm), parts in zip(files, counts, strict=True):
        at = 0
        for name, n in zip(SPLITS, parts, strict=True):
            pieces[name].append(Piece(path, data, mm, at, at + n))
            at += n
    return {name: Split(name, pieces[name]) for name in SPLITS}
