"""Mamba-2: SSD against its sequential reference, a float64 recurrence and Mamba-1's scan; the init; causality.
(Decoding against the full forward and the fast sampler are tests/test_fast_sampling.py's, for every
family; the export's parity with transformers is test_cli.py's and test_export.py's.)"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bytelm import models
from bytelm.artifacts import param_pack
from bytelm.errors import ConfigError
from bytelm.models.mamba.scans import selective_scan
from bytelm.models.mamba2.network import GatedRMSNorm
from bytelm.models.mamba2.ssd import segsum, ssd
from conftest import byte_ids, load_config, normal, one_hot, rel_err

Q = 8  # the chunk of these tests
LENGTHS = [1, Q - 1, Q, Q + 1, 3 * Q + 5]


def _inputs(seed: int, length: int, groups: int, heads: int = 4, P: int = 3, N: int = 5, b: int = 2):
    """x, Δ (positive, some large), A (negative, up to −16 as A_log's init range), B, C and a state."""
    dt = np.log1p(np.exp(normal(seed + 1, (b, length, heads)) - 1.0)).astype(np.float32)
    A = -np.exp(np.random.default_rng(seed).uniform(0, math.log(16), heads)).astype(np.float32)
    return (
        normal(seed, (b, length, heads, P)), dt, A, normal(seed + 2, (b, length, groups, N)),
        normal(seed + 3, (b, length, groups, N)), normal(seed + 4, (b, heads, P, N)),
    )  # fmt: skip


def _float64_recurrence(x, dt, A, B, C, state):
    """The recurrence of ssd.py written out in NumPy, float64: y `[b, l, H, P]` and the final state."""
    x, dt, A, B, C, h = (np.asarray(a, np.float64) for a in (x, dt, A, B, C, state))
    H, G = x.shape[2], B.shape[2]
    Bh, Ch = np.repeat(B, H // G, axis=2), np.repeat(C, H // G, axis=2)  # head h reads group h // (H/G)
    ys = []
    for t in range(x.shape[1]):
        h = h * np.exp(dt[:, t] * A)[..., None, None] + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None]
        ys.append(np.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    return np.stack(ys, axis=1), h


@functools.cache
def _run(mode: str):
    return jax.jit(lambda x, dt, A, B, C, s: ssd(x, dt, A, B, C, mode=mode, chunk=Q, state0=s))


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("length", LENGTHS)
def test_ssd_and_the_sequential_form_equal_a_float64_recurrence(length, groups):
    inputs = _inputs(length, length, groups)
    y64, h64 = _float64_recurrence(*inputs)
    for mode in ("chunked", "sequential"):
        y, h = _run(mode)(*inputs)
        assert rel_err(y, y64) < 2e-6 and rel_err(h, h64) < 2e-6, (mode, rel_err(y, y64), rel_err(h, h64))


def _grads(mode: str, inputs, x64: bool = False):
    """The gradients of every input (x, Δ, A, B, C, the initial state) of a loss on y and the final state."""
    w_y = np.cos(np.arange(np.prod(inputs[0].shape))).reshape(inputs[0].shape)
    w_h = np.sin(np.arange(np.prod(inputs[5].shape))).reshape(inputs[5].shape)

    def loss(*args):
        y, h = ssd(*args[:5], mode=mode, chunk=Q, state0=args[5])
        return jnp.sum(y * w_y) + jnp.sum(h * w_h)

    args = [np.asarray(a, np.float64 if x64 else np.float32) for a in inputs]
    return jax.jit(jax.grad(loss, argnums=tuple(range(6))))(*args)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("length", LENGTHS)
def test_ssd_gradients_of_every_input_equal_the_float64_sequential_ones(length, groups):
    inputs = _inputs(100 + length, length, groups)
    with jax.enable_x64(True):
        reference = [np.asarray(g) for g in _grads("sequential", inputs, x64=True)]
    for mode in ("chunked", "sequential"):
        for name, g, r in zip("x dt A B C state".split(), _grads(mode, inputs), reference, strict=True):
            assert np.all(np.isfinite(g)) and rel_err(g, r) < 1e-5, (mode, name, rel_err(g, r))


def test_ssd_with_one_group_is_mamba1s_scan_with_a_and_dt_repeated_per_head():
    """state-spaces/mamba tests its SSD against Mamba-1's `selective_scan` so: A `[H]` becomes `[H·P, N]`,
    Δ `[b, l, H]` becomes `[b, l, H·P]`, B and C the single group's."""
    x, dt, A, B, C, _ = _inputs(7, 3 * Q + 5, 1)
    b, l, H, P = x.shape
    N = B.shape[-1]
    y, _ = _run("chunked")(x, dt, A, B, C, np.zeros((b, H, P, N), np.float32))
    mamba1 = jax.jit(functools.partial(selective_scan, mode="sequential"))(
        x.reshape(b, l, H * P), np.repeat(dt, P, axis=-1), np.repeat(A, P)[:, None] * np.ones((1, N), np.float32),
        B[:, :, 0], C[:, :, 0], np.zeros(H * P, np.float32),
    )  # fmt: skip
    assert rel_err(y.reshape(b, l, H * P), mamba1) < 1e-5


def test_the_segment_sums_are_masked_before_the_exp():
    a = np.array([-1.0, -2.0, -3.0], np.float32)
    s = np.asarray(segsum(a))
    assert s[2, 0] == -5.0 and s[2, 2] == 0.0 and s[1, 0] == -2.0 and np.isneginf(s[0, 1])
    g = jax.grad(lambda a: jnp.sum(jnp.exp(segsum(a))))(a)  # no inf · 0 in the backward pass
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("groups", [1, 2])
def test_the_gated_norm_equals_a_float64_norm_per_group(groups):
    y, z = normal(7, (2, 5, 12)), normal(8, (2, 5, 12))
    norm = GatedRMSNorm(groups)
    scale = normal(9, (12,))
    got = np.asarray(norm.apply({"params": {"scale": scale}}, y, z))
    g = np.asarray(y, np.float64) * np.asarray(z, np.float64) / (1 + np.exp(-np.asarray(z, np.float64)))
    g = g.reshape(2, 5, groups, 12 // groups)  # each group of 12 / groups channels normalised alone
    want = (g / np.sqrt(np.mean(g**2, axis=-1, keepdims=True) + 1e-5)).reshape(2, 5, 12) * np.asarray(scale)
    assert rel_err(got, want) < 1e-5


def test_initialisation_invariants():
    config = load_config("mamba2_tiny").model
    flat = param_pack.flatten(models.init_variables(models.build(config), jax.random.key(0)))
    mixer = "params/layers_0/mixer"
    A = np.exp(np.asarray(flat[f"{mixer}/A_log"]))  # A = −U(1, 16)
    assert A.shape == (2,) and A.min() >= 1.0 and A.max() <= 16.0
    dt = np.log1p(np.exp(np.asarray(flat[f"{mixer}/dt_bias"], np.float64)))  # softplus: log-uniform in [1e-3, 1e-1]
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    np.testing.assert_array_equal(flat[f"{mixer}/D"], 1.0)
    np.testing.assert_array_equal(flat[f"{mixer}/norm/scale"], 1.0)
    assert flat[f"{mixer}/in_proj/kernel"].shape == (128, 2 * 256 + 2 * 16 + 2)  # z, x, B, C, Δ
    assert flat[f"{mixer}/conv1d_kernel"].shape == (4, 256 + 2 * 16)  # over x, B and C only
    out = np.asarray(flat[f"{mixer}/out_proj/kernel"])  # PyTorch's Linear init, scaled by 1/sqrt(layers)
    assert abs(out.max() - 1 / math.sqrt(256) / 2) < 0.01 and not any("head" in p for p in flat)


def test_mamba2_tiny_is_mamba_tiny_sized():
    count = lambda name: models.count_params(models.abstract_variables(models.build(load_config(name).model)))
    assert abs(count("mamba2_tiny") / count("mamba_tiny") - 1) < 0.1


def test_causality_by_gradients_and_rows_independent():
    config = load_config("mamba2_tiny").model
    config.update({"num_layers": 1, "d_model": 32, "headdim": 16, "d_state": 8, "chunk": 8})
    model = models.build(config)
    variables = models.init_variables(model, jax.random.key(1))
    x = one_hot(byte_ids(3, (2, 21)))
    grad = jax.jit(jax.grad(lambda x, t: model.apply(variables, x)[0, t].sum()))
    for t in (0, 7, 8, 20):
        g = np.asarray(grad(x, t))
        assert float(np.abs(g[0, t + 1 :]).max(initial=0.0)) == 0.0 and float(np.abs(g[1]).max()) == 0.0
        assert float(np.abs(g[0, : t + 1]).max()) > 0.0


def test_bad_sizes_are_one_line_config_errors():
    config = load_config("mamba2_tiny").model
    config.headdim = 48
    with pytest.raises(ConfigError, match="model.headdim=48 must divide expand × d_model = 256"):
        models.build(config)
    config.headdim, config.ngroups = 32, 3
    with pytest.raises(ConfigError, match="model.ngroups=3 must divide the 8 heads"):
        models.build(config)


@pytest.mark.parametrize("name", ["mamba2_tiny", "mamba_tiny"])
def test_state_space_dropout_drops_only_in_training_with_a_key_and_the_rest_is_unchanged(name):
    """Both state-space families' embedding and residual dropout, each rate alone: the same parameter
    tree, no change without a `dropout` key (evaluation, sampling, decoding) or at rate 0, a function of
    the key in training, and a rate outside [0, 1) refused in one line."""
    small = {"num_layers": 2, "d_model": 32, "seq_len": 16}
    small |= {"headdim": 16, "d_state": 8, "chunk": 8} if name == "mamba2_tiny" else {"d_state": 4}
    config = load_config(name).model
    config.update(small)
    plain = models.build(config)
    variables = models.init_variables(plain, jax.random.key(0))
    x = one_hot(byte_ids(5, (2, 16)))
    reference = jax.jit(plain.apply)(variables, x)
    # Rate 0 drops nothing (to rounding: another compiled function may order its sums otherwise).
    no_rate = jax.jit(lambda k: plain.apply(variables, x, rngs={"dropout": k}))
    np.testing.assert_allclose(no_rate(jax.random.key(1)), reference, atol=1e-5)
    assert models.family_of(config).dropout_fields == ("embed_dropout", "resid_dropout")
    for field in ("embed_dropout", "resid_dropout"):
        model = models.build({**config.to_dict(), field: 0.3})
        assert jax.tree.structure(models.init_variables(model, jax.random.key(0))) == jax.tree.structure(variables)
        np.testing.assert_array_equal(jax.jit(model.apply)(variables, x), reference)  # no key: no dropout
        train = jax.jit(lambda k, model=model: model.apply(variables, x, rngs={"dropout": k}))
        a, b = train(jax.random.key(1)), train(jax.random.key(2))
        assert not np.allclose(a, reference, atol=1e-3) and not np.allclose(a, b, atol=1e-3), field
        np.testing.assert_array_equal(a, train(jax.random.key(1)))
        with pytest.raises(ConfigError, match=rf"model.{field}=1.0 must lie in \[0, 1\)"):
            models.build({**config.to_dict(), field: 1.0})
