"""Measurements that tell the truth: warm-up first, compile timed apart, medians with their spread.

Sections (each returns JSON-ready records):
- `sample`: tokens/s of the fast and the reference sampler and the time to the first byte, for
  gpt2_tiny as configured (220 bytes), gpt2_tiny with seq_len 1024 (1000 bytes from a 6-byte
  prompt) and mamba_tiny (220 and 5000 bytes); for Mamba also the time per byte around byte 100
  and around byte 5000, which must stay flat.
- `scan`: mamba_tiny training tokens/s for each scan form (sequential, fused, parallel, chunked)
  at several lengths, with XLA's memory plan for each compiled step.
Weights are freshly initialised: speed does not depend on what the weights learned.
This machine is shared and noisy: quote ratios measured in the same run, not absolute times.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bytelm import batches, models, sampling, train


def summarize(values: list[float]) -> dict:
    """Median and spread (min, max) of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _timed_generation(sampler, prompt: list[int], settings: sampling.SampleSettings) -> tuple[float, list[float]]:
    """Runs one generation; returns (total seconds, the time of every byte since the start)."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    sampler.continue_ids(list(prompt), settings, on_token=lambda _: stamps.append(time.perf_counter() - t0))
    return time.perf_counter() - t0, stamps


def sample_case(
    model_config,
    name: str,
    prompt: bytes,
    generate: int,
    repeats: int,
    *,
    reference_generate: int | None = None,
    stream_chunk: int = 16,
) -> dict:
    """Fast vs reference on one model: tokens/s (warm), time to first byte (cold and warm)."""
    model = models.build(model_config)
    variables = models.init_variables(model, jax.random.key(0))
    settings = sampling.SampleSettings(
        generate=generate, temperature=0.85, top_k=24, repeat_penalty=1.25, repeat_window=24, seed=11
    )
    prompt_ids = list(prompt)
    out: dict = {"case": name, "prompt_bytes": len(prompt_ids), "generate": generate}
    for decode in ("fast", "reference"):
        # The reference costs the same per byte at any length here (a padded window, or one
        # recurrent step), so a shorter run measures its rate where a long one would take minutes.
        n = generate if decode == "fast" or reference_generate is None else reference_generate
        s = dataclasses.replace(settings, generate=n)
        sampler = sampling.make_sampler(model, variables, decode, stream_chunk)
        total, stamps = _timed_generation(sampler, prompt_ids, s)  # cold: includes compilation
        cold_ttfb = stamps[0]
        runs = [_timed_generation(sampler, prompt_ids, s) for _ in range(repeats)]
        out[decode] = {
            "bytes": n,
            "tokens_per_s": summarize([n / t for t, _ in runs]),
            "first_byte_s": summarize([st[0] for _, st in runs]),
            "first_byte_cold_s": cold_ttfb,
            "cold_total_s": total,
        }
        if decode == "fast" and generate >= 5000:
            # Time per byte in the chunks around byte 100 and byte 5000: flat for a recurrent model.
            def per_byte(at: int, stamps: list[float]) -> float:
                lo, hi = max(at - 4 * stream_chunk, 1), min(at + 4 * stream_chunk, len(stamps) - 1)
                return (stamps[hi] - stamps[lo]) / (hi - lo)

            out["fast"]["per_byte_at_100_ms"] = summarize([1e3 * per_byte(100, st) for _, st in runs])
            out["fast"]["per_byte_at_5000_ms"] = summarize([1e3 * per_byte(4990, st) for _, st in runs])
    out["speedup"] = out["fast"]["tokens_per_s"]["median"] / out["reference"]["tokens_per_s"]["median"]
    return out


def bench_sample(configs: dict[str, ml_collections.ConfigDict], repeats: int, log: Callable[[str], None]) -> list[dict]:
    gpt, mamba = configs["gpt2_tiny"], configs["mamba_tiny"]
    long_gpt = ml_collections.ConfigDict(gpt.model.to_dict())
    long_gpt.seq_len = 1024
    cases = [
        (gpt.model, "gpt2_tiny 220 bytes", b"ROMEO:", 220, None),
        (long_gpt, "gpt2_tiny seq_len 1024, 1000 bytes", b"ROMEO:", 1000, 200),
        (mamba.model, "mamba_tiny 220 bytes", b"ROMEO:", 220, None),
        (mamba.model, "mamba_tiny 5000 bytes", b"ROMEO:", 5000, 1000),
    ]
    results = []
    for model_config, name, prompt, n, ref_n in cases:
        r = sample_case(model_config, name, prompt, n, repeats, reference_generate=ref_n)
        results.append(r)
        log(
            f"sample  {name:<36} fast {r['fast']['tokens_per_s']['median']:>9,.0f} tok/s  reference "
            f"{r['reference']['tokens_per_s']['median']:>7,.0f} tok/s  ×{r['speedup']:.1f}  first byte "
            f"{1e3 * r['fast']['first_byte_s']['median']:.1f} ms (reference "
            f"{1e3 * r['reference']['first_byte_s']['median']:.1f} ms)"
        )
    return results


def compiled_memory_mb(compiled) -> float:
    """XLA's own plan for one call of a compiled step: arguments + outputs + temporaries − aliased
    (donated) buffers, in MB. Per program and deterministic, unlike the process's peak RSS."""
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return total / 2**20


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
            mode, _, chunk = form.partition(":")
            cfg = ml_collections.ConfigDict(mamba_config.to_dict())
            cfg.model.seq_len, cfg.model.scan_mode, cfg.model.scan_chunk = L, mode, int(chunk or 0)
            model, opt = models.build(cfg.model), train.make_optimizer(cfg.train)
            params = models.init_variables(model, jax.random.key(0))
            state = train.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params))
            step, _ = train.make_steps(model, opt, cfg.train.batch_size, L)
            b = batches.make_batch(corpus_ids, np.arange(cfg.train.batch_size) * (L + 1), L)
            t = time.perf_counter()
            compiled = step.lower(state, b).compile()
            compile_s = time.perf_counter() - t
            r = {"length": L, "form": form, "compile_s": compile_s, "memory_mb": compiled_memory_mb(compiled)}
            if r["memory_mb"] > memory_budget_gb * 1024:
                r["skipped"] = f"XLA plans {r['memory_mb'] / 1024:.1f} GB (run budget {memory_budget_gb:g} GB)"
                results.append(r)
                log(f"scan    L={L:<5} {form:<14} not run: {r['skipped']}")
                continue
            times = []
            for _ in range(repeats + 1):  # the first call is a warm-up (allocations, caches)
                t = time.perf_counter()
                state, m = compiled(state, b)
                jax.block_until_ready(m)
                times.append(time.perf_counter() - t)
            times = times[1:]
            tokens = cfg.train.batch_size * L
            r |= {"tokens_per_s": summarize([tokens / t for t in times]), "step_s": summarize(times)}
            results.append(r)
            log(
                f"scan    L={L:<5} {form:<14} {r['tokens_per_s']['median']:>7,.0f} tok/s  "
                f"(step {1e3 * r['step_s']['median']:.0f} ms, spread {1e3 * min(times):.0f}-{1e3 * max(times):.0f})"
                f"  XLA memory {r['memory_mb']:,.0f} MB"
            )
    return results
