"""What every section measures with: medians and spread, XLA's plan of a compiled program, the
float32 matmul ceiling, and the model's FLOPs per token."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

from bytelm import models


def summarize(values: list[float]) -> dict:
    """Median and spread (min, max) of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def compiled_memory_mb(compiled) -> float:
    """XLA's own plan for one call of a compiled step: arguments + outputs + temporaries − aliased
    (donated) buffers, in MB. Per program and deterministic, unlike the process's peak RSS."""
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return total / 2**20


def xla_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled program, by XLA's cost analysis (None where it gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per device
        cost = cost[0] if cost else {}
    return float(cost["flops"]) if cost and "flops" in cost else None


def matmul_ceiling_gflops(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> dict:
    """The matmul rate this machine reaches now (`[n, n] @ [n, n]` in `dtype`, GFLOP/s): the ceiling
    that a model's achieved FLOP rate is compared with, measured in the same run."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, a))
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return {"n": n, "gflops": summarize(rates)}


def model_flops_per_token(model_config) -> float | None:
    """Training FLOPs per token by the family's count (GPT-2: nanoGPT's, 6 × the matmul parameters +
    attention's 12·layers·width·seq_len), the figure MFU is quoted against; None where it has none."""
    family = models.family_of(model_config)
    return family.flops_per_token(family.config(model_config))
