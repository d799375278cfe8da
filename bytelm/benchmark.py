"""Measurements that tell the truth: warm-up first, compile timed apart, medians with their spread.

Sections (each returns JSON-ready records):
- `sample`: tokens/s of the fast and the reference sampler and the time to the first byte, for
  gpt2_tiny as configured (220 bytes), gpt2_tiny with seq_len 1024 (1000 bytes from a 6-byte
  prompt) and mamba_tiny (220 and 5000 bytes); for Mamba also the time per byte around byte 100
  and around byte 5000, which must stay flat.
- `train`: training tokens/s through the trainer's own step, compile time, XLA's memory plan, FLOPs
  per token and the achieved fraction of a float32 matmul ceiling measured in the same run.
- `pack`: parameter-pack save and load rates for a ~100M-parameter tree.
- `scan`: mamba_tiny training tokens/s for each scan form (sequential, fused, parallel, chunked)
  at several lengths, with XLA's memory plan for each compiled step.
Weights are freshly initialised: speed does not depend on what the weights learned.
This machine is shared and noisy: quote ratios measured in the same run, not absolute times.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bytelm import batches, models, param_pack, runtime, sampling, train
from bytelm import mesh as mesh_lib


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


def matmul_ceiling_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """The float32 matmul rate this machine reaches now (`[n, n] @ [n, n]`, GFLOP/s): the ceiling
    that a model's achieved FLOP rate is compared with, measured in the same run."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, a))
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return {"n": n, "gflops": summarize(rates)}


def model_flops_per_token(model_config) -> float | None:
    """Training FLOPs per token by nanoGPT's count (6 × non-embedding-lookup parameters + attention
    12·layers·width·seq_len), the figure MFU is quoted against. None for families without a formula."""
    if model_config.name != "gpt2":
        return None
    c = models.transformer.GPT2Config.from_config(model_config)
    per_layer = c.width * 3 * c.width + c.width * c.width + 2 * c.width * c.ffn_hidden  # the four matmuls
    matmul_params = c.num_layers * per_layer + c.vocab_size * c.width  # + the tied head
    return 6 * matmul_params + 12 * c.num_layers * c.width * c.seq_len


def xla_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled program, by XLA's cost analysis (None where it gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per device
        cost = cost[0] if cost else {}
    return float(cost["flops"]) if cost and "flops" in cost else None


def bench_train(
    config: ml_collections.ConfigDict,
    corpus_ids: np.ndarray,
    steps: int,
    repeats: int,
    log: Callable[[str], None],
    ceiling_gflops: float | None = None,
) -> dict:
    """Training tokens/s of `config` through the trainer's own step (`train.make_steps`), fed as the
    trainer feeds it: a fresh host batch per step, the metrics of step n read after step n+1 is
    queued. Compile time is timed apart (`lower().compile()`); then 5 warm-up steps; then `repeats`
    runs of `steps` steps, each giving one tokens/s figure."""
    tc, seq_len = config.train, config.model.seq_len
    kernels, kernel_warning = runtime.model_kernels(config)
    if kernel_warning:
        log(f"warning: {kernel_warning}")
    model, opt = models.build(config.model, **kernels), train.make_optimizer(tc)
    params = models.init_variables(model, jax.random.key(tc.seed))
    mesh = mesh_lib.build(config.runtime.mesh)
    state, shardings = train.place_state(params, opt, mesh, config.runtime.fsdp_min_size)
    train_step, _ = train.make_steps(model, opt, tc.batch_size, seq_len, tc.max_grad_norm_skip, mesh, shardings)
    make = train.batch_maker(corpus_ids, seq_len, tc.batch_size, mesh)

    def batch(i: int) -> batches.Batch:
        return make(batches.train_starts(corpus_ids.size, seq_len, tc.batch_size, i, config.data.seed, None))

    t = time.perf_counter()
    compiled = train_step.lower(state, batch(0)).compile()
    compile_s = time.perf_counter() - t

    def run(first: int, n: int):
        nonlocal state
        pending, step_s, t_last = None, [], time.perf_counter()
        for i in range(first, first + n):
            state, metrics = compiled(state, batch(i))
            if pending is not None:
                float(pending["loss"])  # the trainer reads step i−1's loss once step i is queued
                now = time.perf_counter()
                step_s.append(now - t_last)
                t_last = now
            pending = metrics
        float(pending["loss"])
        step_s.append(time.perf_counter() - t_last)
        return step_s

    run(0, 5)
    tokens = tc.batch_size * seq_len
    runs = [run(5 + r * steps, steps) for r in range(repeats)]
    per_run = [steps * tokens / sum(s) for s in runs]
    all_steps = [s for r in runs for s in r]
    out = {
        "config": config.name,
        "kernels": kernels or {"attention": "einsum", "compute_dtype": "float32"},
        "devices": mesh.size,
        "params": models.count_params(params),
        "tokens_per_step": tokens,
        "steps_per_run": steps,
        "tokens_per_s": summarize(per_run),
        "step_ms": summarize([1e3 * s for s in all_steps]),
        "compile_s": compile_s,
        "memory_mb": compiled_memory_mb(compiled),
        # XLA counts one device's share of a partitioned program: times the devices, for the whole step.
        "xla_flops_per_token": (xla_flops(compiled) or float("nan")) * mesh.size / tokens,
        "model_flops_per_token": model_flops_per_token(config.model),
    }
    if out["model_flops_per_token"] and ceiling_gflops:
        achieved = out["model_flops_per_token"] * out["tokens_per_s"]["median"] / 1e9
        out["achieved_gflops"] = achieved
        out["ceiling_fraction"] = achieved / ceiling_gflops
    log(
        f"train   {config.name:<12} {out['tokens_per_s']['median']:>8,.0f} tok/s [{min(per_run):,.0f}–"
        f"{max(per_run):,.0f}]  step {out['step_ms']['median']:.1f} ms  compile {compile_s:.1f} s  "
        f"XLA memory {out['memory_mb']:,.0f} MB"
        + (f"  {100 * out['ceiling_fraction']:.1f}% of the f32 matmul ceiling" if "ceiling_fraction" in out else "")
    )
    return out


def bench_pack(params_millions: float, repeats: int, folder, log: Callable[[str], None]) -> dict:
    """Parameter-pack save and load rates (MB/s of float32 weights) for a ~`params_millions` M tree:
    GPT-2-small-like leaves (768-wide matrices), so the per-leaf overhead is realistic."""
    rng = np.random.default_rng(0)
    width, n_leaves = 768, max(1, round(params_millions * 1e6 / (768 * 3072)))
    tree = {"params": {f"w_{i}": rng.standard_normal((width, 4 * width), dtype=np.float32) for i in range(n_leaves)}}
    size_mb = sum(a.nbytes for a in tree["params"].values()) / 1e6
    path = os.path.join(folder, "bench_pack.json")
    save_s, load_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        param_pack.save_pack(path, tree, {"name": "bench"})
        save_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        param_pack.load_pack(path)
        load_s.append(time.perf_counter() - t)
    file_mb = os.path.getsize(path) / 1e6
    os.remove(path)
    out = {
        "params": n_leaves * width * 4 * width,
        "weights_mb": size_mb,
        "file_mb": file_mb,
        "save_mb_per_s": summarize([size_mb / s for s in save_s]),
        "load_mb_per_s": summarize([size_mb / s for s in load_s]),
    }
    log(
        f"pack    {out['params'] / 1e6:.1f}M params ({size_mb:,.0f} MB, file {file_mb:,.0f} MB): save "
        f"{out['save_mb_per_s']['median']:,.0f} MB/s, load {out['load_mb_per_s']['median']:,.0f} MB/s"
    )
    return out
