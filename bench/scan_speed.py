"""Mamba's training scan: mamba_tiny training tokens/s for each scan form (sequential, fused,
parallel, chunked) at several lengths, with XLA's memory plan for each compiled step."""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
import numpy as np

from bench.measure import summarize
from bench.training_speed import compile_train_step, time_steps
from bytelm.data import batches


def scan_config(mamba_config: ml_collections.ConfigDict, length: int, form: str) -> ml_collections.ConfigDict:
    """mamba_config at `length` with the scan form 'mode' or 'mode:CHUNK'."""
    mode, _, chunk = form.partition(":")
    cfg = ml_collections.ConfigDict(mamba_config.to_dict())
    cfg.model.seq_len, cfg.model.scan_mode, cfg.model.scan_chunk = length, mode, int(chunk or 0)
    return cfg


def bench_scan(
    mamba_config: ml_collections.ConfigDict,
    corpus_ids: np.ndarray,
    lengths: list[int],
    forms: list[str],
    repeats: int,
    log: Callable[[str], None],
    memory_budget_gb: float = 14.0,
) -> list[dict]:
    """Training-step tokens/s and XLA's memory plan of mamba_tiny per scan form
    ('sequential', 'fused', 'parallel', 'parallel:CHUNK').

    A form whose planned memory is over `memory_budget_gb` is compiled but not run (the unchunked
    associative scan at long lengths): its plan is the measurement, and the machine keeps its memory."""
    results = []
    for L in lengths:
        for form in forms:
            cfg = scan_config(mamba_config, L, form)
            b = batches.make_batch(corpus_ids, np.arange(cfg.train.batch_size) * (L + 1), L)
            compiled, state, r = compile_train_step(cfg, b)
            r = {"length": L, "form": form, **r}
            if r["memory_mb"] > memory_budget_gb * 1024:
                r["skipped"] = f"XLA plans {r['memory_mb'] / 1024:.1f} GB (run budget {memory_budget_gb:g} GB)"
                results.append(r)
                log(f"scan    L={L:<5} {form:<14} not run: {r['skipped']}")
                continue
            times = time_steps(compiled, state, b, repeats)
            tokens = cfg.train.batch_size * L
            r |= {"tokens_per_s": summarize([tokens / t for t in times["times"]]), "step_s": times["step_s"]}
            results.append(r)
            log(
                f"scan    L={L:<5} {form:<14} {r['tokens_per_s']['median']:>7,.0f} tok/s  "
                f"(step {1e3 * r['step_s']['median']:.0f} ms, spread {1e3 * r['step_s']['min']:.0f}-"
                f"{1e3 * r['step_s']['max']:.0f})  XLA memory {r['memory_mb']:,.0f} MB"
            )
    return results
