"""Sampling: tokens/s of the fast and the reference decoder and the time to the first byte, for each
config of `--sample_configs` as configured (220 bytes) and in the long case its context calls for
(`sample_cases`); for a model without a window also the time per byte around byte 100 and around
byte 5000, which must stay flat."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import ml_collections

from bench.measure import summarize
from bytelm import models
from bytelm.sampling.decoders import make_sampler
from bytelm.sampling.settings import SampleSettings

SETTINGS = SampleSettings(generate=0, temperature=0.85, top_k=24, repeat_penalty=1.25, repeat_window=24, seed=11)


def timed_generation(sampler, prompt: list[int], settings: SampleSettings) -> tuple[float, list[float]]:
    """Runs one generation; returns (total seconds, the time of every byte since the start)."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    sampler.continue_ids(list(prompt), settings, on_token=lambda _: stamps.append(time.perf_counter() - t0))
    return time.perf_counter() - t0, stamps


def _per_byte_ms(at: int, stamps: list[float], chunk: int) -> float:
    """Milliseconds per byte over the chunks around byte `at`."""
    lo, hi = max(at - 4 * chunk, 1), min(at + 4 * chunk, len(stamps) - 1)
    return 1e3 * (stamps[hi] - stamps[lo]) / (hi - lo)


def _decoder_figures(model, variables, decode: str, prompt_ids, settings, repeats: int, chunk: int) -> dict:
    sampler = make_sampler(model, variables, decode, chunk)
    total, stamps = timed_generation(sampler, prompt_ids, settings)  # cold: includes compilation
    runs = [timed_generation(sampler, prompt_ids, settings) for _ in range(repeats)]
    n = settings.generate
    out = {
        "bytes": n,
        "tokens_per_s": summarize([n / t for t, _ in runs]),
        "first_byte_s": summarize([st[0] for _, st in runs]),
        "first_byte_cold_s": stamps[0],
        "cold_total_s": total,
    }
    if decode == "fast" and n >= 5000:  # flat for a recurrent model
        out["per_byte_at_100_ms"] = summarize([_per_byte_ms(100, st, chunk) for _, st in runs])
        out["per_byte_at_5000_ms"] = summarize([_per_byte_ms(4990, st, chunk) for _, st in runs])
    return out


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
    out: dict = {"case": name, "prompt_bytes": len(prompt), "generate": generate}
    for decode in ("fast", "reference"):
        # The reference costs the same per byte at any length here (a padded window, or one
        # recurrent step), so a shorter run measures its rate where a long one would take minutes.
        n = generate if decode == "fast" or reference_generate is None else reference_generate
        settings = dataclasses.replace(SETTINGS, generate=n)
        out[decode] = _decoder_figures(model, variables, decode, list(prompt), settings, repeats, stream_chunk)
    out["speedup"] = out["fast"]["tokens_per_s"]["median"] / out["reference"]["tokens_per_s"]["median"]
    return out


def sample_cases(configs: dict[str, ml_collections.ConfigDict]) -> list[tuple]:
    """For each config: 220 bytes as configured, and the long case its context calls for: a window model
    (`max_context`) at seq_len 1024 with 1000 bytes, a model without a window 5000 bytes (its time per
    byte must stay flat)."""
    cases = []
    for name, config in configs.items():
        cases.append((config.model, f"{name} 220 bytes", b"ROMEO:", 220, None))
        if models.build(config.model).max_context:
            long = ml_collections.ConfigDict(config.model.to_dict())
            long.seq_len = 1024
            cases.append((long, f"{name} seq_len 1024, 1000 bytes", b"ROMEO:", 1000, 200))
        else:
            cases.append((config.model, f"{name} 5000 bytes", b"ROMEO:", 5000, 1000))
    return cases


def bench_sample(configs: dict[str, ml_collections.ConfigDict], repeats: int, log: Callable[[str], None]) -> list[dict]:
    results = []
    for model_config, name, prompt, n, ref_n in sample_cases(configs):
        r = sample_case(model_config, name, prompt, n, repeats, reference_generate=ref_n)
        results.append(r)
        log(
            f"sample  {name:<36} fast {r['fast']['tokens_per_s']['median']:>9,.0f} tok/s  reference "
            f"{r['reference']['tokens_per_s']['median']:>7,.0f} tok/s  ×{r['speedup']:.1f}  first byte "
            f"{1e3 * r['fast']['first_byte_s']['median']:.1f} ms (reference "
            f"{1e3 * r['reference']['first_byte_s']['median']:.1f} ms)"
        )
    return results
