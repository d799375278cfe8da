"""Mamba-2 over byte tokens, top to bottom: the mixer, the residual block, the model, and decoding.

The mixer follows state-spaces/mamba `mamba_ssm/modules/mamba2.py` (`Mamba2.forward`'s unfused path and
`Mamba2.step`; symbols as in `__init__.py`):

    in_proj     [d] → [z: E | x: E | B: G·N | C: G·N | Δ: H]   (one matmul, no bias; "Order: [z, x, B, C, dt]")
    conv1d      a depthwise causal conv of width K, with bias, then SiLU, over x, B and C only
    Δ           softplus(Δ + dt_bias) per head
    A           −exp(A_log) per head, in float32
    SSD         y = the recurrence of `ssd.py` over (x, Δ, A, B, C), + D_h · x (the undiscretised x)
    norm        the gated RMSNorm, norm_before_gate=False: rmsnorm(y · silu(z)) · w, per group of E/G
    out_proj    [E] → [d], no bias

Blocks are pre-norm residual (RMSNorm, eps 1e-5), with a final norm and the head tied to the embedding
(`mixer_seq_simple.py`). Initialisation is the official one: dt_bias the inverse softplus of a
log-uniform draw in [1e-3, 1e-1] floored at 1e-4 (`mamba2.py` L119-127), A_log = log U(1, 16) (L132-136),
D = 1, the gated norm's weight 1, PyTorch's Linear and Conv1d inits, out_proj scaled by 1/sqrt(layers)
(`_init_weights`, one residual per layer), the embedding N(0, 0.02). Departures: D is per head only
(`D_has_hdim=False`, the default), `d_ssm` is all of E (no gated-MLP part), and there is no `dt_limit`
(the default (0, inf) clamps nothing). Dropout (`embed_dropout`, `resid_dropout`, 0 by default) is
bytelm's, for small corpora; the official block has none.

Parameter paths (mamba2_tiny), per layer i:

    params/embedding                        [V, d]           the head is tied to it
    params/layers_i/norm/scale              [d]              the block's pre-norm
    params/layers_i/mixer/in_proj/kernel    [d, 2E + 2GN + H]
    params/layers_i/mixer/conv1d_kernel     [K, E + 2GN]     and conv1d_bias [E + 2GN]
    params/layers_i/mixer/dt_bias, A_log, D [H] each
    params/layers_i/mixer/norm/scale        [E]              the gated RMSNorm's weight
    params/layers_i/mixer/out_proj/kernel   [E, d]
    params/norm_f/scale                     [d]

Decoding (`bytelm.models.decoding`): a layer's cache is the conv's last K − 1 inputs and the SSM state
`[b, H, P, N]`; `prefill` is the forward pass with Δ = 0 after the prompt (the padding neither decays
nor adds to the state), `step` one position of `ssd.ssd_step`, the same recurrence SSD computes.
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
from bytelm.models.mamba.network import RMSNorm, causal_conv, dt_bias_init, torch_linear_init, uniform
from bytelm.models.mamba2 import Mamba2Config
from bytelm.models.mamba2.ssd import ssd, ssd_step

NORM_EPS = 1e-5  # the gated norm's and the blocks' (the official eps)
A_INIT_RANGE = (1.0, 16.0)  # A = −U(1, 16) per head, as the official A_init_range


class LayerCache(NamedTuple):
    """One layer's decoding state: the conv's last K − 1 inputs `[b, K − 1, E + 2GN]` and the SSM state
    `[b, H, P, N]`."""

    conv: jax.Array
    ssm: jax.Array


def _a_log_init(key, shape, dtype=jnp.float32):
    return jnp.log(jax.random.uniform(key, shape, dtype, *A_INIT_RANGE))


class GatedRMSNorm(nn.Module):
    """rmsnorm(y · silu(z)) · scale, the mean of squares taken per group of E / groups channels (the
    official `rms_norm_ref` with norm_before_gate=False, group_size=E/G). `[..., E]` in and out."""

    groups: int
    eps: float = NORM_EPS

    @nn.compact
    def __call__(self, y, z):
        scale = self.param("scale", nn.initializers.ones, (y.shape[-1],))
        x = (y * jax.nn.silu(z)).astype(jnp.float32)
        # One group is the whole row: XLA:CPU runs a reduction over an added axis of one much more slowly.
        grouped = x.reshape(*x.shape[:-1], self.groups, -1) if self.groups > 1 else x
        normed = grouped * jax.lax.rsqrt(jnp.mean(jnp.square(grouped), axis=-1, keepdims=True) + self.eps)
        return normed.reshape(x.shape) * scale


class Mamba2Mixer(nn.Module):
    """in_proj → causal conv → SiLU → SSD (+ D·x) → gated RMSNorm → out_proj (the module docstring)."""

    config: Mamba2Config

    def setup(self):
        c = self.config
        H, GN = c.nheads, c.ngroups * c.d_state
        self.in_proj = nn.Dense(2 * c.d_inner + 2 * GN + H, use_bias=False, kernel_init=torch_linear_init())
        conv_init = uniform(1 / math.sqrt(c.d_conv))  # PyTorch's Conv1d init, fan_in = K (depthwise)
        self.conv_kernel = self.param("conv1d_kernel", conv_init, (c.d_conv, c.conv_dim))
        self.conv_bias = self.param("conv1d_bias", conv_init, (c.conv_dim,))
        self.dt_bias = self.param("dt_bias", dt_bias_init, (H,))
        self.A_log = self.param("A_log", _a_log_init, (H,))
        self.D = self.param("D", nn.initializers.ones, (H,))
        self.norm = GatedRMSNorm(c.ngroups)
        self.out_proj = nn.Dense(c.d_model, use_bias=False, kernel_init=torch_linear_init(1 / math.sqrt(c.num_layers)))

    def _split(self, zxbcdt):
        """in_proj's output → z `[..., E]`, the conv's input xBC `[..., E + 2GN]`, Δ before softplus `[..., H]`."""
        c = self.config
        return jnp.split(zxbcdt, [c.d_inner, c.d_inner + c.conv_dim], axis=-1)

    def _heads(self, xBC):
        """The conv's output → x `[..., H, P]`, B and C `[..., G, N]`."""
        c = self.config
        x, B, C = jnp.split(xBC, [c.d_inner, c.d_inner + c.ngroups * c.d_state], axis=-1)
        lead = x.shape[:-1]
        return x.reshape(*lead, c.nheads, c.headdim), *(v.reshape(*lead, c.ngroups, c.d_state) for v in (B, C))

    def _out(self, y, x, z):
        """+ D·x, the gated norm, out_proj: `[..., H, P]` → `[..., d]`."""
        c = self.config
        y = (y + self.D[:, None] * x).reshape(*x.shape[:-2], c.d_inner)
        return self.out_proj(self.norm(y, z))

    def __call__(self, h_BxLxD, length=None):
        """`[b, l, d]` → `[b, l, d]`; with `length` (a prefill), also the layer's cache after the first
        `length` positions."""
        c = self.config
        z, xBC, dt = self._split(self.in_proj(h_BxLxD))
        padded = jnp.pad(xBC, ((0, 0), (c.d_conv - 1, 0), (0, 0)))  # causal: only past inputs
        x, B, C = self._heads(jax.nn.silu(causal_conv(padded, self.conv_kernel, self.conv_bias)))
        dt = jax.nn.softplus((dt + self.dt_bias).astype(jnp.float32))
        if length is not None:  # Δ = 0 after the prompt: those steps neither decay nor add to the state
            dt = jnp.where(jnp.arange(dt.shape[1])[:, None] < length, dt, 0.0)
        A = -jnp.exp(self.A_log.astype(jnp.float32))
        y, state = ssd(x, dt, A, B, C, mode=c.scan_mode, chunk=c.chunk)
        out = self._out(y, x, z)
        if length is None:
            return out
        return out, LayerCache(jax.lax.dynamic_slice_in_dim(padded, length, c.d_conv - 1, axis=1), state)

    def step(self, h_BxD, cache: LayerCache):
        """One position: `[b, d]` and the layer's cache → `[b, d]` and the new cache."""
        z, xBC, dt = self._split(self.in_proj(h_BxD))
        window = jnp.concatenate([cache.conv, xBC[:, None]], axis=1)  # [b, K, E + 2GN]
        x, B, C = self._heads(jax.nn.silu(causal_conv(window, self.conv_kernel, self.conv_bias)[:, 0]))
        dt = jax.nn.softplus((dt + self.dt_bias).astype(jnp.float32))
        state, y = ssd_step(cache.ssm, x, dt, -jnp.exp(self.A_log.astype(jnp.float32)), B, C)
        return self._out(y, x, z), LayerCache(window[:, 1:], state)


class ResidualBlock(nn.Module):
    config: Mamba2Config

    def setup(self):
        self.norm = RMSNorm(NORM_EPS)
        self.mixer = Mamba2Mixer(self.config)

    def __call__(self, h, length=None):
        if length is None:
            return h + dropout(self.mixer(self.norm(h)), self.config.resid_dropout, self)
        out, cache = self.mixer(self.norm(h), length)
        return h + out, cache

    def step(self, h, cache: LayerCache):
        out, cache = self.mixer.step(self.norm(h), cache)
        return h + out, cache


class Mamba2(nn.Module):
    """`apply(variables, x)`: one-hot tokens `[B, L, V]` (any L) → logits `[B, L, V]`. Decoding follows
    `bytelm.models.decoding` (the module docstring); the context is unbounded (`max_context` None)."""

    config: Mamba2Config
    max_context = None

    def setup(self):
        c = self.config
        self.embedding = self.param("embedding", nn.initializers.normal(0.02), (c.vocab_size, c.d_model))
        self.layers = [ResidualBlock(c) for _ in range(c.num_layers)]  # named layers_0, layers_1, …
        self.norm_f = RMSNorm(NORM_EPS)

    def __call__(self, x_BxLxV):
        chex.assert_shape(x_BxLxV, (None, None, self.config.vocab_size))
        h = dropout(x_BxLxV.astype(self.embedding.dtype) @ self.embedding, self.config.embed_dropout, self)
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h) @ self.embedding.T  # the head is tied to the embedding

    def empty_cache(self, batch: int, dtype=jnp.float32) -> tuple[LayerCache, ...]:
        """The state before the first token: zeros (the conv pads with zeros, h_{−1} = 0)."""
        c = self.config
        conv = (batch, c.d_conv - 1, c.conv_dim)
        ssm = (batch, c.nheads, c.headdim, c.d_state)
        return tuple(LayerCache(jnp.zeros(conv, dtype), jnp.zeros(ssm, dtype)) for _ in range(c.num_layers))

    def prefill(self, ids_BxT, length) -> tuple[jax.Array, tuple[LayerCache, ...]]:
        """The forward pass over the prompt `ids[:, :length]`: the logits `[B, V]` after it and every
        layer's cache."""
        h = one_hot(ids_BxT, jnp) @ self.embedding
        cache = []
        for layer in self.layers:
            h, layer_cache = layer(h, length)
            cache.append(layer_cache)
        h_BxD = jax.lax.dynamic_index_in_dim(h, length - 1, axis=1, keepdims=False)
        return self.norm_f(h_BxD) @ self.embedding.T, tuple(cache)

    def step(self, ids_B, cache: tuple[LayerCache, ...]):
        """One more token per row (ids `[B]`) → logits `[B, V]` and the new caches."""
        h = one_hot(ids_B, jnp) @ self.embedding
        new = []
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            h, layer_cache = layer.step(h, layer_cache)
            new.append(layer_cache)
        return self.norm_f(h) @ self.embedding.T, tuple(new)
