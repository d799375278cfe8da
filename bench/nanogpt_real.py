"""Real nanoGPT (github.com/karpathy/nanoGPT) as its users run it on a CPU, in its own process.

The checkout is the user's (`--nanogpt_dir`); nothing of it is copied into this repository. Its
scripts run from a temporary folder that links to them, so neither its `data/` nor its `out-*`
folders change: nanoGPT's own `data/shakespeare_char/prepare.py` turns our corpus file into its
`train.bin` / `val.bin` (the first 90% of the characters / the last 10%: our validation split plus
one byte), then `train.py` runs the README's CPU recipe:

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
      --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
      --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

Its figures are its own log's: the per-iteration times it prints, and its validation loss at each
evaluation (every 250 iterations, a mean over 20 random batches, as it reports them).
"""

from __future__ import annotations

import importlib.util
import re
import statistics
import sys
import tempfile
from pathlib import Path

from bench.processes import timed_process
from bytelm.errors import UsageError

NEEDED = (
    "train.py",
    "model.py",
    "configurator.py",
    "config/train_shakespeare_char.py",
    "data/shakespeare_char/prepare.py",
)
CPU_RECIPE = (
    "--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 "
    "--n_layer=4 --n_head=4 --n_embd=128 --max_iters={iters} --lr_decay_iters={iters} --dropout=0.0"
)
EVAL_LINE = r"^step (\d+): train loss [0-9.]+, val loss ([0-9.]+)"
ITER_LINE = re.compile(r"^iter (\d+): loss ([0-9.]+), time ([0-9.]+)ms")


def check_checkout(nanogpt_dir: str) -> Path:
    """The checkout's path, or a one-line `UsageError` saying what is missing and how to get it."""
    if not nanogpt_dir:
        raise UsageError("--peer=nanogpt needs --nanogpt_dir=PATH: git clone https://github.com/karpathy/nanoGPT")
    root = Path(nanogpt_dir).expanduser().resolve()
    missing = [f for f in NEEDED if not (root / f).is_file()]
    if missing:
        raise UsageError(f"--nanogpt_dir={nanogpt_dir} is not a nanoGPT checkout (no {missing[0]}): "
                         "git clone https://github.com/karpathy/nanoGPT")  # fmt: skip
    return root


def check_modules() -> None:
    """A one-line `UsageError` when nanoGPT's scripts could not import what they need."""
    for module in ("torch", "numpy", "requests"):  # prepare.py imports requests even with the file at hand
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"--peer=nanogpt needs {module}: pip install -e '.[bench]'")


def _stage(root: Path, corpus_file: Path, folder: Path) -> None:
    """Links nanoGPT's scripts into `folder`, with our corpus as its input.txt."""
    for name in ("train.py", "model.py", "configurator.py", "config"):
        (folder / name).symlink_to(root / name)
    data = folder / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    (data / "prepare.py").symlink_to(root / "data/shakespeare_char/prepare.py")
    (data / "input.txt").symlink_to(corpus_file.resolve())


def run(nanogpt_dir: str, corpus_file: Path, iters: int = 2000) -> dict:
    """Prepares the data and trains nanoGPT's CPU recipe for `iters` iterations; its wall time (the
    training process alone: preparing the data is a one-off), per-iteration times and curve."""
    root = check_checkout(nanogpt_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _stage(root, corpus_file, folder)
        timed_process([sys.executable, "data/shakespeare_char/prepare.py"], folder)
        cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", *CPU_RECIPE.format(iters=iters).split()]
        out = timed_process([*cmd, f"--out_dir={folder / 'out'}"], folder, EVAL_LINE)
    iterations = [m for m in map(ITER_LINE.match, out["lines"]) if m]
    times = [float(m[3]) for m in iterations[10:]]  # its first iterations warm up, as it says itself
    return {
        "peer": "nanoGPT " + (_commit(root) or "checkout"),
        "command": "python train.py config/train_shakespeare_char.py " + CPU_RECIPE.format(iters=iters),
        "iters": iters,
        "wall_s": out["wall_s"],
        "iter_ms": {"median": statistics.median(times), "min": min(times), "max": max(times)},
        "tokens_per_s": 12 * 64 / (statistics.median(times) / 1e3),
        "curve": out["curve"],
        "final_val_loss": out["curve"][-1]["val_loss"] if out["curve"] else float("nan"),
    }


def _commit(root: Path) -> str | None:
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (root / ".git" / ref[5:]).read_text().strip()
        return ref[:8]
    except OSError:
        return None
