"""Measurements that tell the truth: warm-up first, compile timed apart, medians with their spread.

Sections (each returns JSON-ready records):
- `sample`: tokens/s of the fast and the reference sampler and the time to the first byte, for
  gpt2_tiny as configured (220 bytes), gpt2_tiny with seq_len 1024 (1000 bytes from a 6-byte
  prompt) and mamba_tiny (220 and 5000 bytes); for Mamba also the time per byte around byte 100
  and around byte 5000, which must stay flat.
- `scan`: mamba_tiny training tokens/s for the sequential, parallel and chunked scans at several
  lengths, with the process's peak memory after each.
Weights are freshly initialised: speed does not depend on what the weights learned.
This machine is shared and noisy: quote ratios measured in the same run, not absolute times.
"""

from __future__ import annotations

import dataclasses
import resource
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


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def scan_memory_estimate_gb(batch: int, length: int, d_inner: int, d_state: int, layers: int) -> float:
    """Rough training peak of an unchunked associative scan, from the `[b, l, d, n]` float32 tensors it
    keeps per layer; calibrated on this machine (measured 3.1 GB at l=256 and 10.5 GB at l=1024)."""
    return 13 * layers * batch * length * d_inner * d_state * 4 / 2**30  # ~13 live tensors per layer


def bench_scan(
    mamba_config: ml_collections.ConfigDict,
    corpus_ids: np.ndarray,
    lengths: list[int],
    forms: list[str],
    repeats: int,
    log: Callable[[str], None],
    memory_budget_gb: float = 14.0,
) -> list[dict]:
    """Training-step tokens/s of mamba_tiny per scan form ('sequential', 'parallel', 'parallel:CHUNK').

    The unchunked parallel form materialises `[b, l, d, n]` per layer; where its estimated peak is
    over `memory_budget_gb` it is recorded as skipped, with the estimate, instead of risking the
    machine's memory: that it does not fit is the measurement."""
    results = []
    for L in lengths:
        for form in forms:
            mode, _, chunk = form.partition(":")
            mc = mamba_config.model
            est = scan_memory_estimate_gb(
                mamba_config.train.batch_size, L, mc.expand * mc.d_model, mc.d_state, mc.num_layers
            )
            if mode == "parallel" and not chunk and est > memory_budget_gb:
                results.append({"length": L, "form": form, "skipped": f"estimated peak {est:.0f} GB, over the budget"})
                log(f"scan    L={L:<5} {form:<14} skipped: needs ~{est:.0f} GB > {memory_budget_gb:.0f} GB")
                continue
            cfg = ml_collections.ConfigDict(mamba_config.to_dict())
            cfg.model.seq_len, cfg.model.scan_mode, cfg.model.scan_chunk = L, mode, int(chunk or 0)
            model, opt = models.build(cfg.model), train.make_optimizer(cfg.train)
            params = models.init_variables(model, jax.random.key(0))
            state = train.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params))
            step, _ = train.make_steps(model, opt, cfg.train.batch_size, L)
            b = batches.make_batch(corpus_ids, np.arange(cfg.train.batch_size) * (L + 1), L)
            t = time.perf_counter()
            state, m = step(state, b)
            jax.block_until_ready(m)
            compile_s = time.perf_counter() - t
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                state, m = step(state, b)
                jax.block_until_ready(m)
                times.append(time.perf_counter() - t)
            tokens = cfg.train.batch_size * L
            r = {
                "length": L,
                "form": form,
                "tokens_per_s": summarize([tokens / t for t in times]),
                "step_s": summarize(times),
                "compile_s": compile_s,
                "peak_rss_mb": peak_rss_mb(),
            }
            results.append(r)
            log(
                f"scan    L={L:<5} {form:<14} {r['tokens_per_s']['median']:>7,.0f} tok/s  "
                f"(step {1e3 * r['step_s']['median']:.0f} ms, spread {1e3 * min(times):.0f}-{1e3 * max(times):.0f})"
                f"  peak RSS {r['peak_rss_mb']:,.0f} MB"
            )
    return results
