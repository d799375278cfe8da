import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bytelm import models
from bytelm.artifacts import param_pack
from bytelm.errors import ConfigError
from bytelm.models import transformer
from bytelm.models.transformer import GPT2, GPT2Config, causal_attention
from bytelm.parallel import runtime
from conftest import byte_ids, load_config, normal, one_hot

SMALL = GPT2Config(seq_len=16, num_layers=2, num_heads=2, head_dim=8, ffn_hidden=32)


def test_gpt2_tiny_parameter_shapes_and_count():
    model = models.build(load_config("gpt2_tiny").model)
    shapes = {p: tuple(x.shape) for p, x in param_pack.flatten(models.abstract_variables(model)).items()}
    assert shapes["params/wte"] == (256, 128)
    assert shapes["params/wpe"] == (64, 128)
    assert shapes["params/h_0/attn/qkv/kernel"] == (128, 384)
    assert shapes["params/h_3/mlp/fc/kernel"] == (128, 512)
    assert shapes["params/h_3/mlp/proj/kernel"] == (512, 128)
    assert shapes["params/ln_f/scale"] == (128,)
    assert not any("head" in p for p in shapes)  # the output head is tied to wte
    # wte + wpe + 4 × (2 LN + qkv + proj + fc + proj) + ln_f, counted by hand.
    per_layer = 2 * 256 + (128 * 384 + 384) + (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128)
    assert models.count_params(models.abstract_variables(model)) == 256 * 128 + 64 * 128 + 4 * per_layer + 256
    assert models.count_params(models.abstract_variables(model)) == 834_304


def test_gpt2_initialisation_follows_gpt2():
    model = GPT2(GPT2Config(seq_len=64, num_layers=8, num_heads=4, head_dim=64, ffn_hidden=1024))
    flat = param_pack.flatten(models.init_variables(model, jax.random.key(0)))
    assert abs(float(jnp.std(flat["params/h_0/mlp/fc/kernel"])) - 0.02) < 0.001
    residual_std = 0.02 / math.sqrt(2 * 8)
    assert abs(float(jnp.std(flat["params/h_0/mlp/proj/kernel"])) - residual_std) < 0.0005
    assert abs(float(jnp.std(flat["params/h_0/attn/proj/kernel"])) - residual_std) < 0.0005
    assert float(np.abs(flat["params/h_0/attn/qkv/bias"]).max()) == 0.0
    np.testing.assert_array_equal(flat["params/ln_f/scale"], 1.0)


def test_logits_shape_and_input_contract():
    model = GPT2(SMALL)
    variables = models.init_variables(model, jax.random.key(0))
    x = one_hot(np.arange(10)[None])
    apply = jax.jit(model.apply)  # the checks fire while tracing
    chex.assert_shape(apply(variables, x), (1, 10, 256))
    with pytest.raises(AssertionError):
        apply(variables, np.zeros((1, 10, 255), np.float32))
    with pytest.raises(ValueError, match="exceeds model.seq_len"):
        apply(variables, np.zeros((1, 17, 256), np.float32))


def test_causality_changing_position_t_leaves_earlier_logits_unchanged():
    model = GPT2(SMALL)
    variables = models.init_variables(model, jax.random.key(1))
    ids = byte_ids(2, (2, 16))
    apply = jax.jit(model.apply)
    base = apply(variables, one_hot(ids))
    for t in (0, 5, 15):
        other = ids.copy()
        other[:, t] = (ids[:, t] + 1) % 256
        changed = apply(variables, one_hot(other))
        np.testing.assert_array_equal(changed[:, :t], base[:, :t])
        assert not np.allclose(changed[:, t], base[:, t])


def test_causality_by_gradient():
    """The logits at position t have zero gradient with respect to every input after t."""
    model = GPT2(SMALL)
    variables = models.init_variables(model, jax.random.key(1))
    x = one_hot(byte_ids(3, (1, 16)))
    grad = jax.jit(jax.grad(lambda x, t: jax.lax.dynamic_index_in_dim(model.apply(variables, x)[0], t).sum()))
    for t in (3, 9):
        g = np.asarray(grad(x, t))
        assert float(np.abs(g[0, t + 1 :]).max()) == 0.0
        assert float(np.abs(g[0, : t + 1]).max()) > 0.0


def test_causal_attention_matches_a_loop_reference():
    q, k, v = normal(4, (2, 5, 3, 4)), normal(5, (2, 5, 3, 4)), normal(6, (2, 5, 3, 4))
    out = jax.jit(causal_attention)(q, k, v)
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    for i in range(5):  # query i against the keys 0..i, written out in NumPy
        s = np.einsum("bhk,bshk->bhs", q[:, i], k[:, : i + 1]) / 2.0
        w = np.exp(s - s.max(-1, keepdims=True))
        ref = np.einsum("bhs,bshk->bhk", w / w.sum(-1, keepdims=True), v[:, : i + 1])
        np.testing.assert_allclose(out[:, i], ref, rtol=1e-5, atol=1e-6)


def _kernel_variants(**kernels):
    """SMALL with the default kernels and with `kernels`, one set of variables, random one-hot inputs."""
    ref, fast = GPT2(SMALL), GPT2(dataclasses.replace(SMALL, **kernels))
    variables = models.init_variables(ref, jax.random.key(5))
    x = one_hot(byte_ids(6, (3, 16)))
    return ref, fast, variables, x


def test_xla_attention_kernel_matches_the_written_out_attention():
    """`jax.nn.dot_product_attention` (the fast path; 'cudnn' differs only in its implementation
    string) takes the same layout and causal mask as `causal_attention`."""
    ref, fast, variables, x = _kernel_variants(attention="xla")
    np.testing.assert_allclose(
        jax.jit(fast.apply)(variables, x), jax.jit(ref.apply)(variables, x), rtol=1e-5, atol=1e-5
    )
    g_ref = jax.jit(jax.grad(lambda v: ref.apply(v, x).sum()))(variables)
    g_fast = jax.jit(jax.grad(lambda v: fast.apply(v, x).sum()))(variables)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_fast, g_ref)


def test_bfloat16_compute_keeps_float32_parameters_gradients_and_logits():
    ref, fast, variables, x = _kernel_variants(compute_dtype="bfloat16")
    assert jax.tree_util.tree_structure(models.init_variables(fast, jax.random.key(5))) == (
        jax.tree_util.tree_structure(variables)
    )
    chex.assert_trees_all_equal_dtypes(models.init_variables(fast, jax.random.key(5)), variables)
    logits, logits_ref = jax.jit(fast.apply)(variables, x), jax.jit(ref.apply)(variables, x)
    chex.assert_type(logits, jnp.float32)
    # bfloat16 keeps 8 significant bits: the logits agree to about 1% of their spread.
    logits, logits_ref = np.asarray(logits), np.asarray(logits_ref)
    assert float(np.abs(logits - logits_ref).max()) < 0.02 * float(logits_ref.std()) + 1e-3
    grads = jax.jit(jax.grad(lambda v: fast.apply(v, x).sum()))(variables)
    chex.assert_trees_all_equal_dtypes(grads, variables)
    cache = transformer.empty_cache(SMALL, 3)  # cached decoding works in bfloat16 too, into a float32 cache
    step_logits, cache = jax.jit(functools.partial(fast.apply, method=fast.decode))(variables, x[:, :4], cache, 0)
    chex.assert_type([step_logits, cache[0].k], [jnp.float32, jnp.float32])
    assert float(np.abs(np.asarray(step_logits) - logits_ref[:, :4]).max()) < 0.02 * float(logits_ref.std()) + 1e-3


def test_fast_kernels_fall_back_on_a_cpu_with_one_line():
    cfg = load_config("gpt2_tiny")
    assert runtime.model_kernels(cfg) == ({}, None)  # off by default
    cfg.runtime.fast_kernels = True
    kernels, warning = runtime.model_kernels(cfg)
    assert kernels == {} and "no cuDNN attention on the cpu backend" in warning and "\n" not in warning
    problem = runtime._cudnn_attention_problem((1, 64, 4, 32))  # what a GPU without cuDNN would be told
    assert problem and "\n" not in problem
    cfg.model.name = "mamba"
    assert runtime.model_kernels(cfg)[1].startswith("runtime.fast_kernels applies to gpt2 only")
    with pytest.raises(ConfigError, match="gpt2 only"):
        models.build(cfg.model, compute_dtype="bfloat16")
    with pytest.raises(ConfigError, match="compute dtype 'float16'"):
        models.build(load_config("gpt2_tiny").model, compute_dtype="float16")


def test_bad_sizes_are_config_errors():
    cfg = load_config("gpt2_tiny")
    cfg.model.num_layers = 0
    with pytest.raises(ConfigError, match="num_layers"):
        models.build(cfg.model)
    cfg.model.name = "gpt5"
    with pytest.raises(ConfigError, match="unknown model.name"):
        models.build(cfg.model)
