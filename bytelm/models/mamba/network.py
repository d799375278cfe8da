"""Mamba (Gu & Dao 2023): a selective state-space language model over byte tokens.

Symbols follow the paper and mamba-minimal: b batch, l sequence length, d = d_inner channels,
n = d_state, Δ (dt) the input-dependent step size, A the (diagonal) state matrix, B and C the
input-dependent input and output projections, D the skip. The recurrence and its four forms (the
sequential reference, fused, parallel, chunked) are in `scans.py`; this file is the model around it,
top to bottom: initialisers, RMSNorm, the causal conv, the mixer, the block, the model (its config is
`MambaConfig` in `__init__.py`).
Initialisation follows the official `mamba_simple.py` (dt bias by inverse softplus of a log-uniform
draw in [1e-3, 1e-1], A_log = log(1..d_state), D = 1, PyTorch's Linear init); no re-init follows it.

Parameter paths (mamba_tiny: d_model 128, d_inner 256, d_state 16, d_conv 4, dt_rank 8):

    params/embedding                        [256, 128]   one-hot × embedding; the head is tied to it
    params/layers_i/norm/scale              [128]        RMSNorm before the mixer
    params/layers_i/mixer/in_proj/kernel    [128, 512]   x and the gate z
    params/layers_i/mixer/conv1d_kernel     [4, 256]     depthwise causal conv, and conv1d_bias [256]
    params/layers_i/mixer/x_proj/kernel     [256, 40]    → (Δ low-rank, B, C)
    params/layers_i/mixer/dt_proj/{kernel,bias}  [8, 256], [256]
    params/layers_i/mixer/A_log             [256, 16]    A = −exp(A_log)
    params/layers_i/mixer/D                 [256]
    params/layers_i/mixer/out_proj/kernel   [256, 128]
    params/norm_f/scale                     [128]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bytelm.data.tokenizer import one_hot
from bytelm.models.dropout import dropout
from bytelm.models.mamba import MambaConfig
from bytelm.models.mamba.scans import selective_scan, ssm_readout, ssm_step

RMS_NORM_EPS = 1e-5  # the official block's
DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4  # the official dt initialisation range


class LayerCache(NamedTuple):
    """One layer's decoding state: the last `d_conv − 1` conv inputs `[b, d_conv − 1, d]` and h in the
    scans' layout `[b, n, d]`."""

    conv: jax.Array
    ssm: jax.Array


def dt_bias_init(key, shape, dtype=jnp.float32):
    """Bias such that softplus(bias) is log-uniform in [DT_MIN, DT_MAX], as the official block."""
    dt = jnp.exp(jax.random.uniform(key, shape) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
    dt = jnp.maximum(dt, DT_INIT_FLOOR)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)  # the inverse of softplus


def uniform(limit: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -limit, limit)


def torch_linear_init(scale: float = 1.0):
    """PyTorch's default Linear/Conv init, U(±1/sqrt(fan_in)), optionally scaled."""
    return nn.initializers.variance_scaling(scale**2 / 3.0, "fan_in", "uniform")


def causal_conv(x_BxTxD: jax.Array, kernel_KxD: jax.Array, bias_D: jax.Array) -> jax.Array:
    """Depthwise conv over inputs that already hold the K − 1 earlier positions in front:
    `out[t] = Σ_k x[t + k] · kernel[k] + bias`, `[b, T − K + 1, d]` (PyTorch's `conv1d` with
    `groups = d`, padding K − 1 and the tail cut, as the official block)."""
    K, L = kernel_KxD.shape[0], x_BxTxD.shape[1] - kernel_KxD.shape[0] + 1
    return sum(x_BxTxD[:, k : k + L] * kernel_KxD[k] for k in range(K)) + bias_D


class RMSNorm(nn.Module):
    eps: float = RMS_NORM_EPS

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps) * scale


class MambaMixer(nn.Module):
    """The Mamba block: in_proj → causal conv → SiLU → selective scan → gate by SiLU(z) → out_proj."""

    config: MambaConfig

    def setup(self):
        c = self.config
        d, n = c.d_inner, c.d_state
        self.in_proj = nn.Dense(2 * d, use_bias=False, kernel_init=torch_linear_init())
        # Depthwise conv: PyTorch's init with fan_in = d_conv (one input channel per group).
        conv_init = uniform(1 / math.sqrt(c.d_conv))
        self.conv_kernel = self.param("conv1d_kernel", conv_init, (c.d_conv, d))
        self.conv_bias = self.param("conv1d_bias", conv_init, (d,))
        self.x_proj = nn.Dense(c.rank + 2 * n, use_bias=False, kernel_init=torch_linear_init())
        self.dt_proj = nn.Dense(d, kernel_init=uniform(c.rank**-0.5), bias_init=dt_bias_init)
        # S4D-real: A_log[i, n] = log(n + 1), so A = −(1, 2, …, d_state) in every channel.
        self.A_log = self.param("A_log", lambda k, s: jnp.log(jnp.broadcast_to(jnp.arange(1, n + 1.0), s)), (d, n))
        self.D = self.param("D", nn.initializers.ones, (d,))
        # The residual projection is scaled by 1/sqrt(num_layers), as the official init does.
        self.out_proj = nn.Dense(c.d_model, use_bias=False, kernel_init=torch_linear_init(1 / math.sqrt(c.num_layers)))

    def _ssm_inputs(self, x_conv):
        """SiLU'd conv output `[..., d]` → (Δ `[..., d]`, B `[..., n]`, C `[..., n]`)."""
        c = self.config
        dt_low, B, C = jnp.split(self.x_proj(x_conv), [c.rank, c.rank + c.d_state], axis=-1)
        return jax.nn.softplus(self.dt_proj(dt_low)), B, C

    def __call__(self, h_BxLxD, length=None):
        """Args: `[b, l, d_model]`. Returns: `[b, l, d_model]`; with `length` (a prefill), also the
        layer's decoding state after the first `length` positions."""
        c = self.config
        x, z = jnp.split(self.in_proj(h_BxLxD), 2, axis=-1)  # [b, l, d] each
        xp = jnp.pad(x, ((0, 0), (c.d_conv - 1, 0), (0, 0)))  # causal: only past inputs
        x = jax.nn.silu(causal_conv(xp, self.conv_kernel, self.conv_bias))
        dt, B, C = self._ssm_inputs(x)
        if length is not None:  # Δ = 0 after the prompt: those steps neither decay nor add to the state
            dt = jnp.where(jnp.arange(x.shape[1])[:, None] < length, dt, 0.0)
        A = -jnp.exp(self.A_log)
        y, h = selective_scan(
            x, dt, A, B, C, self.D, mode=c.scan_mode, chunk=c.scan_chunk, unroll=c.scan_unroll, return_state=True
        )
        out = self.out_proj(y * jax.nn.silu(z))
        if length is None:
            return out
        # The conv's window: the last d_conv − 1 inputs of the prompt (xp is x shifted by d_conv − 1).
        conv = jax.lax.dynamic_slice_in_dim(xp, length, c.d_conv - 1, axis=1)
        return out, LayerCache(conv, jnp.swapaxes(h, 1, 2))

    def step(self, h_BxD, cache: LayerCache):
        """One position: `[b, d_model]` and the layer's cache → output `[b, d_model]` and the new cache.

        The same conv and recurrence as `__call__`, one position at a time (`scans.ssm_step`)."""
        x, z = jnp.split(self.in_proj(h_BxD), 2, axis=-1)
        window = jnp.concatenate([cache.conv, x[:, None]], axis=1)  # [b, d_conv, d]
        x = jax.nn.silu(causal_conv(window, self.conv_kernel, self.conv_bias)[:, 0])
        dt, B, C = self._ssm_inputs(x)
        ssm = ssm_step(cache.ssm, x, dt, -jnp.exp(self.A_log).T, B)
        y = ssm_readout(ssm, C) + self.D * x
        return self.out_proj(y * jax.nn.silu(z)), LayerCache(window[:, 1:], ssm)


class ResidualBlock(nn.Module):
    config: MambaConfig

    def setup(self):
        self.norm = RMSNorm()
        self.mixer = MambaMixer(self.config)

    def __call__(self, h, length=None):
        if length is None:
            return h + dropout(self.mixer(self.norm(h)), self.config.resid_dropout, self)
        out, cache = self.mixer(self.norm(h), length)
        return h + out, cache

    def step(self, h, cache: LayerCache):
        out, cache = self.mixer.step(self.norm(h), cache)
        return h + out, cache


class Mamba(nn.Module):
    """`apply(variables, x)` maps one-hot tokens `[B, L, V]` (any L) to logits `[B, L, V]`. Decoding
    follows `bytelm.models.decoding`: `prefill` is the same forward pass with the state kept, `step`
    one recurrent position; the context is unbounded (`max_context` None)."""

    config: MambaConfig
    max_context = None

    def setup(self):
        c = self.config
        self.embedding = self.param("embedding", nn.initializers.normal(0.02), (c.vocab_size, c.d_model))
        self.layers = [ResidualBlock(c) for _ in range(c.num_layers)]  # named layers_0, layers_1, …
        self.norm_f = RMSNorm()

    def __call__(self, x_BxLxV):
        chex.assert_shape(x_BxLxV, (None, None, self.config.vocab_size))
        h = dropout(x_BxLxV.astype(self.embedding.dtype) @ self.embedding, self.config.embed_dropout, self)
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h) @ self.embedding.T  # the head is tied to the embedding

    def empty_cache(self, batch: int, dtype=jnp.float32) -> tuple[LayerCache, ...]:
        """The state before the first token: zeros, as h_{−1} = 0 and the conv pads with zeros."""
        c = self.config
        return tuple(
            LayerCache(
                jnp.zeros((batch, c.d_conv - 1, c.d_inner), dtype), jnp.zeros((batch, c.d_state, c.d_inner), dtype)
            )
            for _ in range(c.num_layers)
        )

    def prefill(self, ids_BxT, length) -> tuple[jax.Array, tuple[LayerCache, ...]]:
        """The forward pass over the prompt `ids[:, :length]` (padding after it masked out of the state):
        the logits `[B, V]` after it and every layer's state."""
        h = one_hot(ids_BxT, jnp) @ self.embedding
        cache = []
        for layer in self.layers:
            h, layer_cache = layer(h, length)
            cache.append(layer_cache)
        h_BxD = jax.lax.dynamic_index_in_dim(h, length - 1, axis=1, keepdims=False)
        return self.norm_f(h_BxD) @ self.embedding.T, tuple(cache)

    def step(self, ids_B, cache: tuple[LayerCache, ...]):
        """One more token per row (ids `[B]`) and the per-layer caches → logits `[B, V]` and new caches."""
        h = one_hot(ids_B, jnp) @ self.embedding
        new = []
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            h, layer_cache = layer.step(h, layer_cache)
            new.append(layer_cache)
        return self.norm_f(h) @ self.embedding.T, tuple(new)
