"""Whole training processes, timed as a user would time them: wall time from start to exit, and the
moment each evaluation line reached stdout."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from bytelm.errors import BytelmError

REPO = Path(__file__).resolve().parent.parent


def timed_process(cmd: list[str], cwd: Path, eval_line: str | None = None, env: dict | None = None) -> dict:
    """Runs `cmd` in `cwd` to the end, reading its output as it comes. `eval_line` is a regex with the
    groups (step, val_loss) (None: no curve). Returns `{wall_s, curve: [{t_s, step, val_loss}], lines}`; a failed
    process raises a one-line `BytelmError` with its last line."""
    pattern = re.compile(eval_line) if eval_line else None
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    curve, lines = [], []
    t0 = time.perf_counter()
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:  # fmt: skip
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = pattern.search(line) if pattern else None
            if m:
                curve.append({"t_s": time.perf_counter() - t0, "step": int(m[1]), "val_loss": float(m[2])})
        code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        raise BytelmError(f"{' '.join(cmd[:4])} … failed (exit {code}): {(lines or ['no output'])[-1]}")
    return {"wall_s": wall, "curve": curve, "lines": lines}


def time_to(curve: list[dict], target: float) -> float | None:
    """Seconds from the start to the first evaluation at or below `target` (None: never)."""
    return next((p["t_s"] for p in curve if p["val_loss"] <= target), None)
