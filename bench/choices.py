"""Choices: the measurements behind the defaults whose comments point to "BENCHMARKS.md, Choices".

Each choice is measured against its alternatives in the same run, and reported as a rate per value
with its spread and the ratio to the chosen value (above 1: faster than the chosen one):

    eval batch        validation windows/s at `train.eval_batch_size` 32 and 128
    CPU devices       training tokens/s of the config on one host device and on two (`runtime.cpu_devices`)
    matmul dtype      matmul GFLOP/s in float32 and bfloat16 (what `runtime.fast_kernels` falls back from)
    fused unroll      mamba_tiny's training step with the fused scan at unroll 1, 4 and 8 (`mamba.FUSED_UNROLL`)
    streaming         the fast decoder's tokens/s streaming 16 or 64 bytes per call, or one call for all
    checkpoint save   saves/s of gpt2_tiny's train state from host copies or from device arrays
    start-up          runs/s of the tiny runtime check with an empty and a warm compilation cache
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from bench.measure import matmul_ceiling_gflops, summarize
from bench.sampling_speed import SETTINGS, timed_generation
from bench.training_speed import compile_train_step, pipelined_runs
from bytelm import models
from bytelm.data import batches, corpus
from bytelm.errors import BytelmError
from bytelm.parallel import mesh
from bytelm.sampling.decoders import make_sampler
from bytelm.training import checkpoints, evaluation, optimizer, step

REPO = Path(__file__).resolve().parent.parent


def _choice(name: str, unit: str, chosen, rates: dict, note: str = "", fmt: str = ",.0f") -> dict:
    """One table entry: `rates` maps each value to its measured rates (higher is better)."""
    rates, chosen = {str(k): v for k, v in rates.items()}, str(chosen)
    base = summarize(rates[chosen])["median"]
    values = [{"value": str(v), "rate": summarize(r), "ratio": summarize(r)["median"] / base} for v, r in rates.items()]
    return {"choice": name, "unit": unit, "chosen": str(chosen), "values": values, "note": note, "fmt": fmt}


def _interleaved(measure: dict[str, Callable[[], float]], repeats: int, warm_up: bool = True) -> dict[str, list]:
    """Each value's rates from `repeats` rounds that take every value in turn, so that the machine's
    drift falls on all of them alike; each is called once first to compile and warm up."""
    if warm_up:
        for fn in measure.values():
            fn()
    rates: dict[str, list] = {k: [] for k in measure}
    for _ in range(repeats):
        for k, fn in measure.items():
            rates[k].append(fn())
    return rates


def _timed(fn: Callable[[], object], work: float) -> float:
    """`work` units per second of one call of `fn`."""
    t = time.perf_counter()
    fn()
    return work / (time.perf_counter() - t)


def _eval_batch(config, ids: np.ndarray, repeats: int) -> dict:
    model = models.build(config.model)
    params = models.init_variables(model, jax.random.key(0))
    seq_len, device_mesh = config.model.seq_len, mesh.make_mesh(config.runtime.mesh)
    starts = batches.eval_starts(ids.size, seq_len, 256)
    measure = {}
    for size in (32, 128):
        opt = optimizer.make_optimizer(config.train, models.family_of(config.model))
        _, eval_step = step.make_steps(model, opt, size, seq_len, 0.0, device_mesh)
        make = step.batch_maker(ids, seq_len, size, device_mesh)
        measure[str(size)] = functools.partial(
            _timed, functools.partial(evaluation.evaluate, eval_step, params, make, starts, size), starts.size
        )
    rates = _interleaved(measure, repeats)
    return _choice("eval batch (train.eval_batch_size)", "windows/s", config.train.eval_batch_size, rates)


def _cpu_devices(config, ids: np.ndarray, repeats: int) -> dict:
    name = "CPU devices (runtime.cpu_devices)"
    if jax.device_count() < 2:
        return _choice(name, "tokens/s", 1, {1: [float("nan")]}, "one device here: not measured")
    tc, seq_len, measure = config.train, config.model.seq_len, {}
    for n in (1, 2):
        device_mesh = mesh.make_mesh("data=-1", jax.devices()[:n])
        make = step.batch_maker(ids, seq_len, tc.batch_size, device_mesh)
        batch = lambda i, make=make: make(batches.train_starts(ids.size, seq_len, tc.batch_size, i, 0, None))
        compiled, state, _ = compile_train_step(config, batch(0), device_mesh)
        measure[str(n)] = functools.partial(_round_of_steps, compiled, [state], batch, tc.batch_size * seq_len)
    rates = _interleaved(measure, repeats, warm_up=False)  # each run has its own warm-up steps
    return _choice(name, "tokens/s", 2, rates, f"{config.name}, 20 steps a round")


def _round_of_steps(compiled, holder: list, batch, tokens_per_step: int, steps: int = 20) -> float:
    """Tokens/s of one round of `steps` pipelined steps; `holder[0]` is the state, donated and replaced."""
    (runs,), holder[0] = pipelined_runs(compiled, holder[0], batch, steps, 1)
    return tokens_per_step * steps / sum(runs)


def _matmul_dtype(repeats: int) -> dict:
    measure = {
        name: lambda dtype=dtype: matmul_ceiling_gflops(1024, 3, dtype)["gflops"]["median"]
        for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))
    }
    rates = _interleaved(measure, repeats, warm_up=False)  # each call warms up its own matmul
    return _choice("matmul dtype on this backend (runtime.fast_kernels)", "GFLOP/s", "float32", rates, fmt=",.1f")


def _fused_unroll(mamba, ids: np.ndarray, repeats: int) -> dict:
    """mamba_tiny's whole training step with the fused scan at each unroll, on one device."""
    family, tc = models.family_of(mamba.model), mamba.train
    c = family.config(mamba.model)
    b = batches.make_batch(ids, np.arange(tc.batch_size) * (c.seq_len + 1), c.seq_len)
    measure = {}
    for unroll in (1, 4, 8):
        model = family.build(dataclasses.replace(c, scan_mode="fused", scan_unroll=unroll))
        compiled, state, _ = compile_train_step(mamba, b, model=model)
        measure[str(unroll)] = functools.partial(_steps_on_one_batch, compiled, [state], b, tc.batch_size * c.seq_len)
    rates = _interleaved(measure, repeats)
    note = f"mamba_tiny training steps: batch {tc.batch_size}, length {c.seq_len}"
    return _choice("fused scan unroll (mamba.FUSED_UNROLL)", "tokens/s", c.scan_unroll, rates, note)


def _steps_on_one_batch(compiled, holder: list, batch, tokens_per_step: int, steps: int = 3) -> float:
    """Tokens/s of `steps` steps on `batch`; `holder[0]` is the state, donated and replaced."""
    t = time.perf_counter()
    for _ in range(steps):
        holder[0], metrics = compiled(holder[0], batch)
    jax.block_until_ready(metrics)
    return tokens_per_step * steps / (time.perf_counter() - t)


def _streaming(config, repeats: int) -> dict:
    model = models.build(config.model)
    variables = models.init_variables(model, jax.random.key(0))
    settings = dataclasses.replace(SETTINGS, generate=220)
    measure = {}
    for chunk, label in ((16, "16"), (64, "64"), (220, "one call")):
        sampler = make_sampler(model, variables, "fast", chunk)
        measure[label] = lambda sampler=sampler: 220 / timed_generation(sampler, list(b"ROMEO:"), settings)[0]
    rates = _interleaved(measure, repeats)
    chosen = str(config.sample.stream_chunk)
    return _choice(
        "fast decoder streaming (sample.stream_chunk)", "tokens/s", chosen, rates, f"{config.name}, 220 bytes"
    )


def _checkpoint_save(config, repeats: int) -> dict:
    model = models.build(config.model)
    opt = optimizer.make_optimizer(config.train, models.family_of(config.model))
    params = models.init_variables(model, jax.random.key(0))
    state, _ = step.place_state(params, opt, mesh.make_mesh(config.runtime.mesh), config.runtime.fsdp_min_size)
    with tempfile.TemporaryDirectory() as folder, checkpoints.open_manager(Path(folder), 1) as mngr:
        counter = iter(range(1, 10_000))

        def device_arrays() -> None:  # orbax given the device arrays themselves
            args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({}))
            mngr.save(next(counter), args=args, force=True)
            mngr.wait_until_finished()

        measure = {
            "host copies": lambda: _timed(lambda: checkpoints.save(mngr, next(counter), state, {}), 1),
            "device arrays": lambda: _timed(device_arrays, 1),
        }
        rates = _interleaved(measure, repeats)
    return _choice("checkpoint save (training.checkpoints.save)", "saves/s", "host copies", rates, fmt=",.2f")


def _run_quietly(cmd: list[str], env: dict) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BytelmError(f"the start-up run failed (exit {proc.returncode}): {last}")


def _start_up(corpus_path: Path | str, repeats: int) -> dict:
    """The tiny runtime check as a user runs it: a fresh cache folder, then the same folder again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    rates = {"empty cache": [], "warm cache": []}
    for _ in range(max(1, min(repeats, 2))):  # whole processes: two rounds say enough
        with tempfile.TemporaryDirectory() as folder:
            cmd = [
                sys.executable, "-m", "launch.train", f"--config={REPO}/configs/gpt2_tiny.py",
                "--config.train.steps=1", "--config.data.windows=1", "--config.sample.generate=0",
                f"--config.data.file={Path(corpus_path).resolve()}", f"--workdir={folder}/run", "--overwrite",
                f"--config.runtime.compilation_cache_dir={folder}/cache",
            ]  # fmt: skip
            for label in rates:  # the first run fills the folder's cache, the second finds it
                rates[label].append(_timed(functools.partial(_run_quietly, cmd, env), 1))
    note = "the runtime check: launch.train of gpt2_tiny for one step, whole process"
    return _choice("start-up (runtime.compilation_cache_dir)", "runs/s", "warm cache", rates, note, fmt=",.3f")


def bench_choices(
    config: ml_collections.ConfigDict, scan: ml_collections.ConfigDict, repeats: int, log: Callable[[str], None]
) -> list[dict]:
    """Every choice of the module docstring, measured in this run."""
    data = corpus.load(config.data, config.model.seq_len)
    ids = data.train.to_array()
    rows = [
        _eval_batch(config, ids, repeats),
        _cpu_devices(config, ids, repeats),
        _matmul_dtype(repeats),
        _fused_unroll(scan, ids, repeats),
        _streaming(config, repeats),
        _checkpoint_save(config, repeats),
        _start_up(data.path, repeats),
    ]
    for r in rows:
        log("choice  " + r["choice"] + ": " + ", ".join(f"{v['value']} ×{v['ratio']:.2f}" for v in r["values"]))
    return rows
