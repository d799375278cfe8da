"""Mamba-2 against Mamba and GPT-2: training tokens/s of each at about equal parameters, at windows of
256, 1024 and 4096 bytes, and Mamba-2 at several SSD chunk sizes.

Every case is the trainer's own step (`compile_train_step`) on the mesh `launch.train` uses (the
config's `runtime.mesh` over this machine's devices), fed as the trainer feeds it; the cases take
turns in `repeats` interleaved rounds of `steps` steps, so the machine's drift falls on all alike.
A step holds about 3072 tokens (mamba_tiny's 12 × 256), at least two windows. The GPT-2 is gpt2_tiny
narrowed to Mamba's size, with rotary positions so that its parameters do not grow with the window;
its attention is the einsum one (O(L²)). A case whose compiled step XLA plans above the memory budget
is compiled, not run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ml_collections
import numpy as np

from bench.measure import summarize
from bench.training_speed import compile_train_step, pipelined_runs
from bytelm import models
from bytelm.data import batches
from bytelm.parallel import mesh
from bytelm.training import step

TOKENS_PER_STEP = 3072
# gpt2_tiny at Mamba's size: width 96 (3 heads of 32), 4 layers, rotary positions (no wpe): 472,128 parameters.
GPT2_AT_MAMBA_SIZE = {"num_heads": 3, "head_dim": 32, "ffn_hidden": 384, "positions": "rope"}


def cases(configs: dict[str, ml_collections.ConfigDict], length: int, chunks: list[int]) -> dict:
    """label → config at `length` (batch: TOKENS_PER_STEP / length, even, at least 2)."""
    batch = max(2, 2 * round(TOKENS_PER_STEP / length / 2))
    out = {}

    def at(config, **model):
        c = ml_collections.ConfigDict(config.to_dict())
        c.model.update({"seq_len": length, **model})
        c.train.batch_size = batch
        return c

    out["gpt2 (gpt2_tiny at width 96, rotary)"] = at(configs["gpt2_tiny"], **GPT2_AT_MAMBA_SIZE)
    out["mamba (mamba_tiny, fused scan)"] = at(configs["mamba_tiny"])
    for chunk in chunks:
        out[f"mamba2 (mamba2_tiny, chunks of {chunk})"] = at(configs["mamba2_tiny"], chunk=chunk)
    return out


def _prepared(config, ids: np.ndarray, budget_gb: float) -> dict:
    L, B = config.model.seq_len, config.train.batch_size
    device_mesh = mesh.make_mesh(config.runtime.mesh)
    make = step.batch_maker(ids, L, B, device_mesh)
    batch = lambda i: make(batches.train_starts(ids.size, L, B, i, 0, None))
    compiled, state, info = compile_train_step(config, batch(0), device_mesh)
    params = models.count_params(models.abstract_variables(models.build(config.model)))
    row = {"length": L, "batch": B, "params": params, **info}
    if info["memory_mb"] > budget_gb * 1024:
        row["skipped"] = f"XLA plans {info['memory_mb'] / 1024:.1f} GB (run budget {budget_gb:g} GB)"
        return {"row": row}
    return {"row": row, "holder": [compiled, state, batch]}


def bench_ssd_speed(
    configs: dict, ids: np.ndarray, lengths: list[int], chunks: list[int], repeats: int, steps: int,
    log: Callable[[str], None], budget_gb: float = 14.0,
) -> list[dict]:  # fmt: skip
    rows = []
    for length in lengths:
        prepared = {}
        for label, config in cases(configs, length, chunks).items():
            t = time.perf_counter()
            prepared[label] = _prepared(config, ids, budget_gb)
            log(f"ssd     L={length:<5} {label}: compiled in {time.perf_counter() - t:.1f} s")
        rates = {label: [] for label, p in prepared.items() if "holder" in p}
        for _ in range(repeats):
            for label in rates:
                compiled, state, batch = prepared[label]["holder"]
                (run,), prepared[label]["holder"][1] = pipelined_runs(compiled, state, batch, steps, 1)
                rows_tokens = prepared[label]["row"]["batch"] * length
                rates[label].append(rows_tokens * steps / sum(run))
        mamba = np.median(rates.get("mamba (mamba_tiny, fused scan)", [np.nan]))
        for label, p in prepared.items():
            row = {"case": label, **p["row"]}
            if label in rates:
                row["tokens_per_s"] = summarize(rates[label])
                row["ratio_to_mamba"] = row["tokens_per_s"]["median"] / mamba
            rows.append(row)
            shown = f"{row['tokens_per_s']['median']:>9,.0f} tok/s" if label in rates else row["skipped"]
            log(f"ssd     L={length:<5} {label:<42} {shown}")
    return rows
