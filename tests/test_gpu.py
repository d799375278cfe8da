"""Checks that need a GPU: `bench/gpu_check.sh` runs them (with the GPU benchmark) on a lent machine.

On a machine without one, every test here skips, saying so: they test GPU kernels (cuDNN attention,
bfloat16 matmuls) and the GPU's own numerics, which a CPU cannot stand in for; the CPU suite tests the
same code paths' logic (tests/test_transformer.py: the xla attention path and bfloat16 compute).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bytelm import models
from bytelm.models.gpt2 import GPT2Config
from bytelm.models.gpt2.transformer import GPT2
from bytelm.models.mamba import MambaConfig
from bytelm.models.mamba.network import Mamba
from bytelm.models.mamba.scans import selective_scan
from bytelm.sampling.decoders import make_sampler
from bytelm.sampling.fast import FastSampler
from bytelm.sampling.settings import SampleSettings
from bytelm.training.loop import train_and_evaluate
from conftest import byte_ids, load_config, normal, one_hot, rel_err

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (bench/gpu_check.sh runs these)")

GPT = GPT2Config(seq_len=128, num_layers=2, num_heads=4, head_dim=64, ffn_hidden=1024)


def test_cudnn_attention_equals_the_einsum_attention_in_bfloat16():
    ref = GPT2(dataclasses.replace(GPT, compute_dtype="bfloat16"))
    fast = GPT2(dataclasses.replace(GPT, compute_dtype="bfloat16", attention="cudnn"))
    variables = models.init_variables(ref, jax.random.key(0))
    x = one_hot(byte_ids(1, (4, 128)))
    logits, logits_ref = np.asarray(jax.jit(fast.apply)(variables, x)), np.asarray(jax.jit(ref.apply)(variables, x))
    assert float(np.abs(logits - logits_ref).max()) < 0.02 * float(logits_ref.std()) + 1e-3
    g = jax.jit(jax.grad(lambda v: fast.apply(v, x).sum()))(variables)
    g_ref = jax.jit(jax.grad(lambda v: ref.apply(v, x).sum()))(variables)
    assert rel_err(g["params"]["wte"], g_ref["params"]["wte"]) < 0.05


def test_fast_kernels_train_and_sample_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("BYTELM_DATA_MIRROR", str(tmp_path / "none"))  # (the corpus is the file below)
    corpus_file = tmp_path / "text.txt"
    corpus_file.write_bytes(b"To be, or not to be, that is the question.\n" * 400)
    cfg = load_config("gpt2_tiny")
    cfg.data.file, cfg.runtime.fast_kernels, cfg.runtime.mesh = str(corpus_file), True, "data=1"
    cfg.train.steps, cfg.train.eval_every, cfg.train.progress, cfg.sample.generate = 60, 30, "none", 40
    lines = []
    summary = train_and_evaluate(cfg, str(tmp_path / "run"), out=lines.append)
    assert any("cudnn attention, bfloat16 matmuls" in line for line in lines), lines[:2]
    assert summary["final_val_loss"] < 2.0  # from 5.5: a repeated sentence is learned in 60 steps
    assert (tmp_path / "run" / "params.json").exists()


MAMBA = MambaConfig(seq_len=64, d_model=64, num_layers=2, d_state=8, dt_rank="4")


@pytest.mark.parametrize("model", [GPT2(GPT), Mamba(MAMBA)], ids=["gpt2", "mamba"])
def test_the_fast_sampler_equals_the_reference_on_the_gpu(model):
    variables = models.init_variables(model, jax.random.key(3))
    settings = SampleSettings(generate=200, temperature=0.9, top_k=20, seed=4)
    prompt = list(b"ROMEO:")
    reference = make_sampler(model, variables, "reference").continue_ids(prompt, settings)
    assert FastSampler(model, variables, chunk=32).continue_ids(prompt, settings) == reference


@pytest.mark.parametrize("mode, chunk", [("parallel", 0), ("parallel", 64)])
def test_the_parallel_scan_equals_the_fused_scan_on_the_gpu(mode, chunk):
    b, length, d, n = 4, 1024, 128, 16
    x, B, C = normal(0, (b, length, d)), normal(1, (b, length, n)), normal(2, (b, length, n))
    dt = np.log1p(np.exp(normal(3, (b, length, d)) - 1.0)).astype(np.float32)
    A, D = -np.exp(normal(4, (d, n))), normal(5, (d,))
    fused = jax.jit(functools.partial(selective_scan, mode="fused"))(x, dt, A, B, C, D)
    fast = jax.jit(functools.partial(selective_scan, mode=mode, chunk=chunk))(x, dt, A, B, C, D)
    assert rel_err(fast, fused) < 1e-4
    grad = lambda m, c: jax.grad(lambda x: jnp.sum(selective_scan(x, dt, A, B, C, D, mode=m, chunk=c) ** 2))(x)
    assert (
        rel_err(jax.jit(grad, static_argnums=(0, 1))(mode, chunk), jax.jit(grad, static_argnums=(0, 1))("fused", 0))
        < 1e-3
    )
