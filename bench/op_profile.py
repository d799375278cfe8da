"""Where a training step's time goes, op by op: `python -m launch.benchmark --only=profile`.

The trainer's compiled train step for each config, run a few steps under `jax.profiler`; each XLA op's
time in the trace is summed under the JAX operation that made it (the `op_name` of the HLO
instruction's metadata: the module path and the primitive, `transpose(...)` marking the backward
pass), each op's own time only (a loop's body is not counted again in the loop). On XLA:CPU an op may
use both cores and ops may overlap, so the ops' sum and the step's wall time differ; the table gives
both. The step is built with the default kernels on one device, and every config is fed the first
config's corpus (Tiny Shakespeare for the defaults). This is the per-op profile behind BENCHMARKS.md's
Mamba-2 speeds.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from bench import training_speed
from bytelm.data import batches
from bytelm.errors import UsageError
from bytelm.parallel import mesh
from bytelm.training import step

# An HLO instruction of the compiled program's text and the op_name of its metadata (`%` optional:
# some print options leave it out).
_INSTRUCTION = re.compile(r"(?:^|\s)%?([\w.\-]+) = [^\n]*?metadata=\{[^}]*op_name=\"([^\"]+)\"", re.MULTILINE)
_SCOPE = re.compile(r"^jit\([^)]*\)/")


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name → the JAX operation that made it (its `op_name`, the outer `jit(...)/`
    dropped)."""
    return {m.group(1): _SCOPE.sub("", m.group(2)) for m in _INSTRUCTION.finditer(hlo_text)}


def short_name(op_name: str, depth: int = 3) -> str:
    """The last `depth` parts of an op's scope path, with transformations (`jvp(`, `jit(`, ...) and
    layer numbers (`layers_3` → `layers_*`) taken out, so that every layer's op adds up in one row;
    `(backward)` after an op of the backward pass."""
    backward = "transpose(" in op_name
    path = re.sub(r"\b[a-z_]+\(", "", op_name).replace(")", "")
    parts = [re.sub(r"^(\w+?)_\d+$", r"\1_*", p) for p in path.split("/") if p]
    return "/".join(parts[-depth:]) + (" (backward)" if backward else "")


def trace_self_times(folder: str | Path) -> collections.Counter:
    """Microseconds per trace event name in the trace under `folder`, each event's own time only: an
    event that encloses others on its thread (a `while` loop around its body's ops) counts what is
    left after them, so that nothing is counted twice."""
    paths = sorted(Path(folder).rglob("*.trace.json.gz"))
    if not paths:
        raise UsageError(f"jax.profiler wrote no trace under {folder}: the profile section needs its trace export")
    with gzip.open(paths[-1]) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    totals, threads = collections.Counter(), collections.defaultdict(list)
    for e in events:
        threads[(e.get("pid"), e.get("tid"))].append(e)
    for thread in threads.values():
        open_events: list[list] = []  # [end, name, own time] of the events enclosing the current one
        for e in sorted(thread, key=lambda e: (e["ts"], -e["dur"])):
            while open_events and open_events[-1][0] <= e["ts"]:
                _, name, own = open_events.pop()
                totals[name] += max(own, 0)
            if open_events:
                open_events[-1][2] -= e["dur"]  # the enclosing event's own time excludes this one
            open_events.append([e["ts"] + e["dur"], e["name"], e["dur"]])
        for _, name, own in open_events:
            totals[name] += max(own, 0)
    return totals


def profile_config(name: str, config: ml_collections.ConfigDict, ids: np.ndarray, steps: int, top: int) -> dict:
    """`steps` traced steps of `config`'s train step on `ids`: the step's wall milliseconds, the ops'
    summed milliseconds per step, and the `top` operations by time (ms per step, share of the ops' sum)."""
    L, B = config.model.seq_len, config.train.batch_size
    device_mesh = mesh.make_mesh("data=1", jax.devices()[:1])
    make = step.batch_maker(ids, L, B, device_mesh)
    batch = lambda i: make(batches.train_starts(ids.size, L, B, i, config.data.seed, None))  # noqa: E731
    compiled, state, info = training_speed.compile_train_step(config, batch(0), device_mesh)
    names = op_names(compiled.as_text())
    for i in range(3):  # warm-up: allocations, thread pools
        state, metrics = compiled(state, batch(i))
    jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):  # (stopped on every path)
            t = time.perf_counter()
            for i in range(steps):
                state, metrics = compiled(state, batch(3 + i))
            jax.block_until_ready(metrics)
            wall = time.perf_counter() - t
        times = trace_self_times(folder)
    grouped = collections.Counter()
    for instruction, us in times.items():
        if instruction in names:  # an op of the program (not Python's or the runtime's own events)
            grouped[short_name(names[instruction])] += us
    total = sum(grouped.values())
    if not total:
        raise UsageError(f"the profile of {name} matched no op of its program: this JAX's trace names its ops "
                         "otherwise than the compiled HLO text (bench/op_profile.py reads both)")  # fmt: skip
    rows = [{"op": op, "ms": us / steps / 1e3, "share": us / total} for op, us in grouped.most_common(top)]
    return {
        "config": name,
        "seq_len": L,
        "batch_size": B,
        "steps": steps,
        "step_ms": wall / steps * 1e3,
        "ops_ms": total / steps / 1e3,
        "compile_s": info["compile_s"],
        "rows": rows,
    }


def bench_profile(
    configs: dict[str, ml_collections.ConfigDict], ids: np.ndarray, steps: int, top: int, log: Callable[[str], None]
) -> list[dict]:
    """`profile_config` for each of `configs` (name → config)."""
    out = []
    for name, config in configs.items():
        r = profile_config(name, config, ids, steps, top)
        log(f"profile {name}: {r['step_ms']:.1f} ms a step, ops {r['ops_ms']:.1f} ms; top: {r['rows'][0]['op']}")
        out.append(r)
    return out
