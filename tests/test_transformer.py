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
from bytelm.models import decoding
from bytelm.models.gpt2 import ARCHITECTURE_OPTIONS, GPT2Config, transformer
from bytelm.models.gpt2.transformer import GPT2, causal_attention
from bytelm.parallel import runtime
from conftest import byte_ids, load_config, normal, one_hot, rel_err

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
    # Cached decoding works in bfloat16 too, into a float32 cache.
    ids = np.argmax(x[:, :4], axis=-1).astype(np.int32)
    step_logits, cache = jax.jit(functools.partial(decoding.prefill, fast))(variables, ids, 4)
    chex.assert_type([step_logits, cache.layers[0].k], [jnp.float32, jnp.float32])
    assert float(np.abs(np.asarray(step_logits) - logits_ref[:, 3]).max()) < 0.02 * float(logits_ref.std()) + 1e-3


def test_fast_kernels_fall_back_on_a_cpu_with_one_line():
    cfg = load_config("gpt2_tiny")
    gpt2 = models.family_of(cfg.model)
    assert runtime.model_kernels(cfg, gpt2) == ({}, None)  # off by default
    cfg.runtime.fast_kernels = True
    kernels, warning = runtime.model_kernels(cfg, gpt2)
    assert kernels == {} and "no cuDNN attention on the cpu backend" in warning and "\n" not in warning
    problem = runtime._cudnn_attention_problem((1, 64, 4, 32))  # what a GPU without cuDNN would be told
    assert problem and "\n" not in problem
    mamba = load_config("mamba_tiny")
    mamba.runtime.fast_kernels = True
    warning = runtime.model_kernels(mamba, models.family_of(mamba.model))[1]
    assert warning == "runtime.fast_kernels applies to fused attention, which mamba has not; using its defaults"
    with pytest.raises(ConfigError, match="kernel options compute_dtype do not apply to model.name='mamba'"):
        models.build(mamba.model, compute_dtype="bfloat16")
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


# --- architecture options: each differs from GPT-2 in one place --------------------------------

OPTIONS = {
    "rope": {"positions": "rope"},
    "rmsnorm": {"norm": "rmsnorm"},
    "relu2": {"activation": "relu2"},
    "qk_norm": {"qk_norm": True},
    "no_biases": {"biases": False},
    "untied": {"tied_head": False},
    "zero_init": {"zero_init": True},
}
ALL_OPTIONS = {k: v for o in OPTIONS.values() for k, v in o.items() if k != "zero_init"}


def _shapes(config: GPT2Config) -> dict[str, tuple]:
    return {p: tuple(x.shape) for p, x in param_pack.flatten(models.abstract_variables(GPT2(config))).items()}


def test_the_default_options_are_gpt2_and_each_option_changes_only_its_own_parameters():
    tiny = load_config("gpt2_tiny").model  # a config file's model section: every option, at GPT-2's values
    assert {k: tiny[k] for k in ARCHITECTURE_OPTIONS} == {
        k: models.family("gpt2").defaults()[k] for k in ARCHITECTURE_OPTIONS
    }
    assert models.family_of(tiny).config(tiny).is_gpt2()
    gpt2 = _shapes(SMALL)
    assert SMALL.is_gpt2() and not dataclasses.replace(SMALL, qk_norm=True).is_gpt2()
    assert set(_shapes(dataclasses.replace(SMALL, positions="rope"))) == set(gpt2) - {"params/wpe"}
    rms = _shapes(dataclasses.replace(SMALL, norm="rmsnorm"))
    assert set(gpt2) - set(rms) == {"params/ln_f/bias"} | {f"params/h_{i}/ln_{j}/bias" for i in (0, 1) for j in (1, 2)}
    no_bias = _shapes(dataclasses.replace(SMALL, biases=False))
    assert set(no_bias) == {p for p in gpt2 if not p.endswith("bias")}
    assert _shapes(dataclasses.replace(SMALL, tied_head=False)) == {**gpt2, "params/head": (16, 256)}
    qk = _shapes(dataclasses.replace(SMALL, qk_norm=True))
    assert set(qk) - set(gpt2) == {f"params/h_{i}/attn/{n}_norm/scale" for i in (0, 1) for n in "qk"}
    assert qk["params/h_0/attn/q_norm/scale"] == (8,)
    assert _shapes(dataclasses.replace(SMALL, activation="relu2")) == gpt2


def test_zero_init_starts_the_output_projections_and_an_untied_head_at_zero():
    config = dataclasses.replace(SMALL, zero_init=True, tied_head=False)
    flat = param_pack.flatten(models.init_variables(GPT2(config), jax.random.key(0)))
    zero = {p for p, x in flat.items() if not np.any(np.asarray(x))}
    assert {"params/head", "params/h_0/attn/proj/kernel", "params/h_1/mlp/proj/kernel"} <= zero
    assert "params/h_0/attn/qkv/kernel" not in zero and "params/h_0/mlp/fc/kernel" not in zero
    logits = GPT2(config).apply(models.init_variables(GPT2(config), jax.random.key(0)), one_hot(np.arange(5)[None]))
    np.testing.assert_array_equal(logits, 0.0)  # a zero head: uniform predictions at step 0


def _rotate_pairwise(x_LxK: np.ndarray, positions, base: float) -> np.ndarray:
    """Rotary positions written out: the pair (i, i + K/2) rotated by a 2×2 matrix, angle p·base^(−2i/K)."""
    L, K = x_LxK.shape
    out = np.empty_like(x_LxK, dtype=np.float64)
    for t in range(L):
        for i in range(K // 2):
            a = positions[t] * base ** (-2 * i / K)
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            out[t, [i, i + K // 2]] = rot @ x_LxK[t, [i, i + K // 2]]
    return out


def test_rotary_positions_match_the_pairwise_rotation_and_depend_only_on_the_offset():
    x = normal(0, (1, 6, 1, 8))
    got = np.asarray(transformer.rotary(jnp.asarray(x), jnp.arange(3, 9), 100.0))[0, :, 0]
    np.testing.assert_allclose(got, _rotate_pairwise(x[0, :, 0], list(range(3, 9)), 100.0), atol=1e-5)
    q, k = normal(1, (1, 1, 1, 8)), normal(2, (1, 1, 1, 8))

    def score(m, n):
        rq, rk = (transformer.rotary(jnp.asarray(a), jnp.asarray([p]), 10000.0) for a, p in ((q, m), (k, n)))
        return float(jnp.sum(rq * rk))

    assert score(7, 3) == pytest.approx(score(40, 36), abs=1e-5) and score(7, 3) != pytest.approx(score(7, 4))


def test_rotary_qk_norm_attention_matches_a_direct_formula():
    """The attention layer with rotary positions and QK-norm, written out in NumPy: q and k RMS-normalised
    per head with their learned scales, rotated pairwise, causal softmax, output projection."""
    config = dataclasses.replace(SMALL, positions="rope", qk_norm=True, rope_base=50.0)
    attn = transformer.CausalSelfAttention(config)
    x = normal(3, (1, 7, 16))
    variables = attn.init(jax.random.key(0), x)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
    p["q_norm"]["scale"], p["k_norm"]["scale"] = normal(4, (8,)) + 1, normal(5, (8,)) + 1
    variables = {"params": jax.tree_util.tree_map(jnp.asarray, p)}
    qkv = x[0] @ p["qkv"]["kernel"] + p["qkv"]["bias"]
    out = np.zeros((7, 16))
    for h in range(2):
        q, k, v = (qkv[:, j * 16 + h * 8 : j * 16 + h * 8 + 8] for j in range(3))
        rms = lambda a, s: a / np.sqrt(np.mean(a**2, axis=-1, keepdims=True) + 1e-6) * s
        q, k = rms(q, p["q_norm"]["scale"]), rms(k, p["k_norm"]["scale"])
        q, k = _rotate_pairwise(q, range(7), 50.0), _rotate_pairwise(k, range(7), 50.0)
        s = q @ k.T / math.sqrt(8) + np.triu(np.full((7, 7), -np.inf), 1)
        w = np.exp(s - s.max(-1, keepdims=True))
        out[:, h * 8 : h * 8 + 8] = (w / w.sum(-1, keepdims=True)) @ v
    expected = out @ p["proj"]["kernel"] + p["proj"]["bias"]
    got, _ = attn.apply(variables, jnp.asarray(x, jnp.float32))
    assert rel_err(got[0], expected) < 1e-5


def test_relu2_and_rmsnorm_match_their_formulas():
    config = dataclasses.replace(SMALL, activation="relu2", norm="rmsnorm", biases=False)
    x = normal(6, (1, 3, 16))
    mlp = transformer.MLP(config)
    variables = mlp.init(jax.random.key(0), x)
    p = variables["params"]
    expected = np.maximum(x @ np.asarray(p["fc"]["kernel"]), 0) ** 2 @ np.asarray(p["proj"]["kernel"])
    assert rel_err(mlp.apply(variables, x), expected) < 1e-5
    norm = transformer._norm(config)
    scale = normal(7, (16,))
    got = norm.apply({"params": {"scale": scale}}, x)
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + transformer.LAYER_NORM_EPS) * scale
    assert rel_err(got, expected) < 1e-5


# The options that change what the cache holds or how it is read, each alone, and every option at once
# (test_fast_sampling.py runs that model through the protocol again, past the window).
CACHE_OPTIONS = ("rope", "qk_norm", "zero_init")


@pytest.mark.parametrize("options", [*(OPTIONS[k] for k in CACHE_OPTIONS), ALL_OPTIONS], ids=[*CACHE_OPTIONS, "all"])
def test_cached_decoding_equals_the_full_forward_for_every_option(options):
    model = GPT2(dataclasses.replace(SMALL, num_layers=1, **options))  # (one block: a compile is seconds)
    variables = models.init_variables(model, jax.random.key(1))
    ids = byte_ids(2, (2, 16))
    full = np.asarray(jax.jit(model.apply)(variables, one_hot(ids)))
    step = jax.jit(functools.partial(decoding.step, model))
    logits, cache = jax.jit(functools.partial(decoding.prefill, model))(variables, ids[:, :4], 3)  # 3 of 4 ids
    got = [np.asarray(logits)]
    for t in range(3, 15):
        logits, cache = step(variables, ids[:, t], cache)
        got.append(np.asarray(logits))
    got = np.stack(got, axis=1)  # the logits after positions 2..14
    assert rel_err(got, full[:, 2:15]) < 1e-5 if np.any(full) else np.array_equal(got, full[:, 2:15])


def test_bad_architecture_options_are_config_errors():
    cfg = load_config("gpt2_tiny")
    for field, value, match in [("norm", "batchnorm", "model.norm"), ("positions", "alibi", "model.positions")]:
        bad = load_config("gpt2_tiny")
        bad.model[field] = value
        with pytest.raises(ConfigError, match=match):
            models.build(bad.model)
    cfg.model.positions, cfg.model.head_dim = "rope", 7
    with pytest.raises(ConfigError, match="even model.head_dim"):
        models.build(cfg.model)


def test_dropout_drops_only_in_training_with_a_key_and_none_at_rate_zero():
    model = GPT2(dataclasses.replace(SMALL, embed_dropout=0.2, resid_dropout=0.3, attn_dropout=0.1))
    variables = models.init_variables(GPT2(SMALL), jax.random.key(0))  # the same tree: dropout has no weights
    x = one_hot(byte_ids(7, (2, 16)))
    plain = jax.jit(GPT2(SMALL).apply)(variables, x)
    np.testing.assert_array_equal(jax.jit(model.apply)(variables, x), plain)  # no key: evaluation, sampling
    train = jax.jit(lambda v, x, k: model.apply(v, x, rngs={"dropout": k}))
    a, b = train(variables, x, jax.random.key(1)), train(variables, x, jax.random.key(2))
    assert not np.allclose(a, plain) and not np.allclose(a, b)
    np.testing.assert_array_equal(a, train(variables, x, jax.random.key(1)))  # a function of the key alone
    with pytest.raises(ConfigError, match="model.resid_dropout=1.0 must lie in"):
        models.build({**load_config("gpt2_tiny").model.to_dict(), "resid_dropout": 1.0})
