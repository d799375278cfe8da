"""A trained run scored on a whole split of its corpus (or on another file), as papers report it:
loss in nats and bits per byte with its standard error, the window set named, written to the run.

Windows are the non-overlapping tiles of each file's piece of the split (every byte scored once,
with the context of its own window), or with `stride` < seq_len sliding windows that score only
their last `stride` bytes (each byte scored once, with at least `seq_len - stride` bytes of context).
The model, its kernels and the device mesh are the run's own, so `--split=val` gives the training
log's whole-split validation loss (`data.final_eval_windows=0`) to the bit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from bytelm import models
from bytelm.artifacts import param_pack, run_dir
from bytelm.atomic_io import atomic_write_json
from bytelm.data import batches, corpus
from bytelm.errors import ConfigError
from bytelm.parallel import mesh, runtime
from bytelm.training import evaluation, step

SPLIT_NAMES = ("train", "val", "test")


def window_set(sizes: list[int], seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(starts, first scored position or None, a description) of the windows over pieces `sizes`."""
    if stride in (0, seq_len):
        return batches.eval_starts(sizes, seq_len, 0), None, f"non-overlapping windows of {seq_len} bytes"
    if not 0 < stride < seq_len:
        raise ConfigError(f"--stride must lie in (0, seq_len = {seq_len}], got {stride}")
    starts, first = batches.sliding_starts(sizes, seq_len, stride)
    return starts, first, f"windows of {seq_len} bytes every {stride} bytes, each scoring its last {stride}"


def scored_maker(make: Callable, starts_all: np.ndarray, first: np.ndarray | None) -> Callable:
    """`make` (a batch maker), with each window's targets before its first scored position masked."""
    if first is None:
        return make
    where = {int(s): int(f) for s, f in zip(starts_all, first, strict=True)}

    def scored(starts: np.ndarray) -> batches.Batch:
        b = make(starts)
        keep = np.arange(b.mask.shape[1])[None, :] >= np.array([where[int(s)] for s in starts])[:, None]
        return b._replace(mask=b.mask * keep.astype(np.float32))

    return scored


def evaluate_run(
    checkpoint_dir: str | Path,
    split: str = "test",
    file: str = "",
    stride: int = 0,
    batch_size: int = 0,
    out: Callable[[str], None] = print,
) -> dict:
    """Scores the run in `checkpoint_dir` on `split` of its corpus (or on all of `file`), writes
    `eval_<split>.json` (or `eval_file.json`; `_stride<S>` before `.json` with sliding windows) in
    it and returns what it wrote."""
    path = Path(checkpoint_dir)
    config = run_dir.read_config(path)
    if split not in SPLIT_NAMES:
        raise ConfigError(f"--split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    if file:
        ids = corpus.load_all(_file_config(config.data, file), config.model.seq_len)
        source = file
    else:
        data = corpus.load(config.data, config.model.seq_len)
        ids, source = data.split(split), data.path
    if ids.size < 2:
        raise ConfigError(
            f"the run's corpus has no {split} split: give it one (data.{split}_bytes or data.{split}_fraction), "
            "or score a file with --file"
        )
    seq_len, b = config.model.seq_len, batch_size or config.train.eval_batch_size
    starts, first, described = window_set(ids.piece_sizes, seq_len, stride)
    kernels, _ = runtime.model_kernels(config, models.family_of(config.model))
    model = models.build(config.model, **kernels)
    params = param_pack.load_pack(path / run_dir.PARAMS_FILE, models.abstract_variables(model))
    device_mesh = mesh.make_mesh(config.runtime.mesh)
    eval_step = step.make_steps(model, None, b, seq_len, device_mesh=device_mesh)[1]  # (no optimizer needed)
    rep = mesh.replicated(device_mesh)
    params = mesh.put(params, jax.tree_util.tree_map(lambda _: rep, params))
    make = scored_maker(step.batch_maker(ids, seq_len, b, device_mesh), starts, first)
    t0 = time.perf_counter()
    with _bar(starts.size) as advance:
        ev = evaluation.evaluate(eval_step, params, make, starts, b, on_windows=advance)
    result = _result(ev, "file" if file else split, source, ids, described, stride, seq_len)
    result["seconds"] = time.perf_counter() - t0
    written = path / run_dir.eval_file(result["split"], stride if first is not None else 0)
    if jax.process_index() == 0:
        atomic_write_json(written, result)
    out(
        f"{result['split']} ({result['bytes']:,} bytes, {result['windows']:,} {described}): loss "
        f"{result['loss']:.4f} ± {result['loss_stderr']:.4f} nats ({result['bpb']:.4f} bits/byte) "
        f"→ {written}"
    )
    return result


def _file_config(data_config, file: str):
    """The run's data section pointed at `file` (a file, folder or glob), read as the run read its own."""
    c = data_config.copy_and_resolve_references()
    c.file = file
    return c


def _result(ev: dict, split: str, source: str, ids, described: str, stride: int, seq_len: int) -> dict:
    return {
        "split": split,
        "corpus": source,
        "bytes": int(ids.size),
        "pieces": ids.piece_sizes,
        "seq_len": seq_len,
        "stride": stride or seq_len,
        "window_set": described,
        "windows": ev["windows"],
        "tokens_scored": ev["tokens"],
        "loss": ev["loss"],
        "bpb": ev["bpb"],
        "loss_stderr": ev["loss_stderr"],
    }


class _bar:
    """A tqdm bar over the windows on a terminal; nothing otherwise. Closed on every way out."""

    def __init__(self, total: int):
        self.total, self.bar = total, None

    def __enter__(self) -> Callable[[int], None]:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="window", dynamic_ncols=True)
        return lambda n: self.bar.update(n) if self.bar is not None else None

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
