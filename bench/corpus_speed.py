"""A large corpus against Tiny Shakespeare: the same training command, whole processes side by side.

A corpus of `size_gb` GB is made by repeating Tiny Shakespeare (valid UTF-8, so it is checked).
Each round trains the config for `steps` steps on each corpus in turn, as a user runs it
(`launch.train`, a fresh process); the first large run also checks the corpus's UTF-8 (its
throughput is reported), the later ones find the check remembered. Measured per process: peak
resident memory (the child's own `ru_maxrss`) and the wall time from its start to the end of its
first training step. A run before the rounds fills the compilation cache that all of them share.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.measure import summarize

FIRST_STEP = re.compile(r"^step\s+1/")
CHECKED = re.compile(r"checked the corpus is UTF-8: ([\d,.]+) MB at ([\d,.]+) MB/s")


def make_corpus(source: Path, path: Path, size_gb: float) -> int:
    """Writes `source` repeated to at least `size_gb` GB at `path`; returns its size in bytes."""
    chunk = source.read_bytes() * 64
    with open(path, "wb") as f:
        while f.tell() < size_gb * 1e9:
            f.write(chunk)
        return f.tell()


def run_training(config_file: str, corpus: Path, workdir: Path, flags: list[str]) -> dict:
    """One `launch.train` process: peak RSS (MB), seconds to its first step's end, its UTF-8 check."""
    cmd = [sys.executable, "-m", "launch.train", f"--config={config_file}", f"--workdir={workdir}", "--overwrite",
           f"--config.data.file={corpus}", *flags]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_step, checked, lines = None, None, []
    for line in proc.stdout:
        lines.append(line)
        if first_step is None and FIRST_STEP.match(line):
            first_step = time.perf_counter() - t0
        if m := CHECKED.search(line):
            checked = {"mb": float(m.group(1).replace(",", "")), "mb_per_s": float(m.group(2).replace(",", ""))}
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or first_step is None:
        raise RuntimeError(f"training on {corpus} failed ({proc.returncode}): {''.join(lines)[-1500:]}{err[-1500:]}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "first_step_s": first_step, "check": checked}


def bench_corpus(config_file: str, source: Path, size_gb: float, steps: int, rounds: int, log: Callable) -> dict:
    """The large-corpus section: `rounds` interleaved pairs of runs, and the first UTF-8 check."""
    with tempfile.TemporaryDirectory(prefix="bytelm-bench-corpus-") as tmp:
        tmp = Path(tmp)
        big = tmp / "big.txt"
        size = make_corpus(source, big, size_gb)
        flags = [f"--config.train.steps={steps}", "--config.sample.generate=0", "--config.train.progress=lines",
                 "--config.train.log_every=1", f"--config.data.check_cache_dir={tmp / 'checks'}",
                 f"--config.runtime.compilation_cache_dir={tmp / 'jax'}"]  # fmt: skip
        run_training(config_file, source, tmp / "warm", flags)  # fills the shared compilation cache
        first = run_training(config_file, big, tmp / "big", flags)
        log(f"corpus  {size / 1e9:.2f} GB: UTF-8 checked at {first['check']['mb_per_s']:,.0f} MB/s")
        pairs = []
        for _ in range(rounds):
            small = run_training(config_file, source, tmp / "small", flags)
            large = run_training(config_file, big, tmp / "big", flags)
            pairs.append({"small": small, "large": large})
            log(
                f"corpus  peak RSS {large['peak_rss_mb']:,.0f} vs {small['peak_rss_mb']:,.0f} MB; first step "
                f"{large['first_step_s']:.1f} vs {small['first_step_s']:.1f} s"
            )
    return {
        "corpus_bytes": size,
        "steps": steps,
        "first_check": first["check"],
        "first_run": first,
        "rss_extra_mb": summarize([p["large"]["peak_rss_mb"] - p["small"]["peak_rss_mb"] for p in pairs]),
        "first_step_extra_s": summarize([p["large"]["first_step_s"] - p["small"]["first_step_s"] for p in pairs]),
        "small_rss_mb": summarize([p["small"]["peak_rss_mb"] for p in pairs]),
        "small_first_step_s": summarize([p["small"]["first_step_s"] for p in pairs]),
        "pairs": pairs,
    }
