"""Training: tokens/s through the trainer's own step, compile time, XLA's memory plan, FLOPs per token
and the achieved fraction of a float32 matmul ceiling measured in the same run; and the recipe end to
end (`train_and_evaluate` as `launch.train` runs it)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from bench.measure import compiled_memory_mb, model_flops_per_token, summarize, xla_flops
from bytelm import models
from bytelm.data import batches
from bytelm.parallel import mesh, runtime
from bytelm.training import optimizer, step
from bytelm.training.loop import train_and_evaluate


def compile_train_step(
    config: ml_collections.ConfigDict, batch, device_mesh=None, kernels: dict | None = None, model=None
):
    """The trainer's train step for `config` (or for `model` with `config`'s recipe), compiled for
    `batch` (`lower().compile()`), a fresh state for it, and `{compile_s, memory_mb}`. With
    `device_mesh` the state is laid out on it."""
    model = model or models.build(config.model, **(kernels or {}))
    device_mesh = device_mesh or mesh.make_mesh("data=1", jax.devices()[:1])
    opt = optimizer.make_optimizer(config.train, models.family_of(config.model), device_mesh)
    params = models.init_variables(model, jax.random.key(config.train.seed))
    state, shardings = step.place_state(params, opt, device_mesh, config.runtime.fsdp_min_size)
    tc = config.train
    train_step, _ = step.make_steps(
        model, opt, tc.batch_size, config.model.seq_len, tc.max_grad_norm_skip, device_mesh, shardings
    )
    t = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    return compiled, state, {"compile_s": time.perf_counter() - t, "memory_mb": compiled_memory_mb(compiled)}


def time_steps(compiled, state, batch, repeats: int) -> dict:
    """Seconds per call of `compiled` on one batch, `repeats` times after one warm-up call
    (allocations, caches): `{"step_s": summary, "times": [...]}`."""
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return {"step_s": summarize(times[1:]), "times": times[1:]}


def pipelined_runs(compiled, state, batch: Callable[[int], batches.Batch], steps: int, repeats: int):
    """Step seconds of `repeats` runs of `steps` steps after 5 warm-up steps, fed as the trainer
    feeds it: a fresh host batch per step, the metrics of step n read after step n+1 is queued.
    Returns (the runs' step seconds, the state after them: the one passed in is donated)."""

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
    return [run(5 + r * steps, steps) for r in range(repeats)], state


def bench_train(
    config: ml_collections.ConfigDict,
    corpus_ids: np.ndarray,
    steps: int,
    repeats: int,
    log: Callable[[str], None],
    ceiling_gflops: float | None = None,
    device_mesh=None,
) -> dict:
    """Training tokens/s of `config` through the trainer's own step on `device_mesh` (default: the
    config's `runtime.mesh`); compile time is timed apart; each of `repeats` runs of `steps` steps
    gives one tokens/s figure."""
    tc, seq_len = config.train, config.model.seq_len
    kernels, kernel_warning = runtime.model_kernels(config, models.family_of(config.model))
    if kernel_warning:
        log(f"warning: {kernel_warning}")
    device_mesh = device_mesh or mesh.make_mesh(config.runtime.mesh)
    make = step.batch_maker(corpus_ids, seq_len, tc.batch_size, device_mesh)

    def batch(i: int) -> batches.Batch:
        return make(batches.train_starts(corpus_ids.size, seq_len, tc.batch_size, i, config.data.seed, None))

    compiled, state, plan = compile_train_step(config, batch(0), device_mesh, kernels)
    tokens = tc.batch_size * seq_len
    runs, state = pipelined_runs(compiled, state, batch, steps, repeats)
    out = {
        "config": config.name,
        "kernels": kernels or {"attention": "einsum", "compute_dtype": "float32"},
        "devices": device_mesh.size,
        "params": models.count_params(state.params),
        "tokens_per_step": tokens,
        "steps_per_run": steps,
        "tokens_per_s": summarize([steps * tokens / sum(s) for s in runs]),
        "step_ms": summarize([1e3 * s for r in runs for s in r]),
        **plan,
        # XLA counts one device's share of a partitioned program: times the devices, for the whole step.
        "xla_flops_per_token": (xla_flops(compiled) or float("nan")) * device_mesh.size / tokens,
        "model_flops_per_token": model_flops_per_token(config.model),
    }
    if out["model_flops_per_token"] and ceiling_gflops:
        out["achieved_gflops"] = out["model_flops_per_token"] * out["tokens_per_s"]["median"] / 1e9
        out["ceiling_fraction"] = out["achieved_gflops"] / ceiling_gflops
    t = out["tokens_per_s"]
    log(
        f"train   {config.name:<12} {t['median']:>8,.0f} tok/s [{t['min']:,.0f}–{t['max']:,.0f}]  step "
        f"{out['step_ms']['median']:.1f} ms  compile {out['compile_s']:.1f} s  XLA memory {out['memory_mb']:,.0f} MB"
        + (f"  {100 * out['ceiling_fraction']:.1f}% of the f32 matmul ceiling" if "ceiling_fraction" in out else "")
    )
    return out


def recipe(config: ml_collections.ConfigDict, log: Callable[[str], None]) -> dict:
    """The full training recipe of `config` (its own step count, evaluations and checkpoints) in a
    temporary workdir, as `launch.train` runs it; the figures are the run's own summary."""
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.train.progress, cfg.sample.generate = "none", 0
    with tempfile.TemporaryDirectory() as workdir:
        s = train_and_evaluate(cfg, workdir, out=lambda line: None)
    out = {
        k: s[k] for k in ("steps", "final_val_loss", "final_val_loss_stderr", "tokens_per_s", "train_wall_s", "wall_s")
    }
    out["final_eval_windows"] = config.data.final_eval_windows  # the peer evaluates the same windows
    log(
        f"recipe  {config.name} {s['steps']} steps: val {s['final_val_loss']:.4f}, wall {s['wall_s']:.1f} s "
        f"(training {s['train_wall_s']:.1f} s), {s['tokens_per_s']:,.0f} tok/s"
    )
    return out
