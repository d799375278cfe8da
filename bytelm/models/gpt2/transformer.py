"""GPT-2: a causal transformer over byte tokens, in the order a reader meets it.

The architecture is GPT-2's exactly (Radford et al. 2019), so a parameter pack maps one-to-one onto
a GPT-2 of the same sizes:

    bytelm path                 GPT-2 (HF) name        shape (gpt2_tiny)
    params/wte                  wte.weight             [256, 128]   token embedding, tied head
    params/wpe                  wpe.weight             [64, 128]    learned absolute positions
    params/h_i/ln_1/{scale,bias}  h.i.ln_1               [128]
    params/h_i/attn/qkv/kernel  h.i.attn.c_attn        [128, 384]   (q, k, v) concatenated
    params/h_i/attn/proj/kernel h.i.attn.c_proj        [128, 128]
    params/h_i/ln_2/{scale,bias}  h.i.ln_2               [128]
    params/h_i/mlp/fc/kernel    h.i.mlp.c_fc           [128, 512]
    params/h_i/mlp/proj/kernel  h.i.mlp.c_proj         [512, 128]
    params/ln_f/{scale,bias}    ln_f                   [128]

(every dense layer also has a `bias`). Shapes in names: B batch, L sequence, D width, H heads,
K head_dim, V vocabulary (256).

The architecture options (rotary positions, RMSNorm, ReLU², QK-norm, biases, an untied head, zero
init) and their GPT-2 defaults are declared with the config in `bytelm/models/gpt2/__init__.py`.

Decoding (`bytelm.models.decoding`): the prompt runs once through the cached forward, and each new
byte costs attention over the cached keys and values while the context fits the training window.
Past it both position kinds mean the same thing: the model sees the last `seq_len` bytes, as in
training, so `step` re-runs the cropped window (kept in the cache) at a forward pass per byte. Rotary
positions would let a cache slide on, but a sliding cache is another function
(each layer's window reaches `seq_len` further back, as in sliding-window attention), not the model
run on the cropped window, so it is not what we sample.

Kernels (`GPT2Config.attention`, `compute_dtype`; chosen by `config.runtime.fast_kernels`, never by
the model config, so a pack does not depend on them): the default is float32 with the attention
written out below (`causal_attention`); the fast path is bfloat16 matmuls over float32 parameters,
with the residual stream, layer-norm statistics, softmax and logits in float32, and attention
through `jax.nn.dot_product_attention` (cuDNN's fused kernel on a GPU). Cached decoding uses
`causal_attention` (the samplers build the model with the default kernels).
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
from bytelm.models.gpt2 import GPT2Config

LAYER_NORM_EPS = 1e-5  # GPT-2's value, for its LayerNorm and for RMSNorm in its place
INIT_STD = 0.02  # GPT-2's initialiser: normal(0, 0.02) for every matrix
QK_NORM_EPS = 1e-6  # the RMSNorm of each head's q and k (`qk_norm`)


def _dense(features: int, std: float, name: str, config: GPT2Config) -> nn.Dense:
    # `dtype` is the matmul's; the kernel and bias are stored (and updated) in float32. std 0 is a zero init.
    return nn.Dense(
        features,
        use_bias=config.biases,
        kernel_init=nn.initializers.normal(std) if std else nn.initializers.zeros,
        bias_init=nn.initializers.zeros,
        dtype=config.compute_dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _norm(config: GPT2Config, name: str | None = None) -> nn.Module:
    """The pre-norm of a block and the final norm: GPT-2's LayerNorm, or RMSNorm."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=LAYER_NORM_EPS, dtype=config.compute_dtype, name=name)
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_bias=config.biases, dtype=config.compute_dtype, name=name)


def _out_std(config: GPT2Config) -> float:
    # Residual projections are scaled by 1/sqrt(2·layers), per GPT-2: each block adds two.
    return 0.0 if config.zero_init else INIT_STD / math.sqrt(2 * config.num_layers)


def rotary(x_BxLxHxK: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding (Su et al. 2021), half-split pairing: channel i < K/2 and i + K/2
    form a pair rotated by the angle `position · base^(−2i/K)`. `positions` `[L]` (or `[B, L]`, a row
    each) may be any integers (they need not start at 0). Returns `[B, L, H, K]` in the input's dtype."""
    half = x_BxLxHxK.shape[-1] // 2
    inv_freq_K2 = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = (positions.astype(jnp.float32)[..., None] * inv_freq_K2)[..., None, :]  # [(B,) L, 1, K/2]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxLxHxK.dtype)


class KVCache(NamedTuple):
    """One layer's keys and values for positions 0..seq_len−1: `[B, seq_len, H, K]` each (rotary
    keys stored rotated)."""

    k: jax.Array
    v: jax.Array


def causal_attention(
    q_BxLxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array, pos=None, drop=lambda w: w
) -> jax.Array:
    """Softmax attention where the query at absolute position p sees the keys at positions <= p.

    Without `pos`, queries and keys are the same L positions (plain causal attention). With `pos`
    (cached decoding), the L queries sit at pos..pos+L−1 and the S >= L keys at 0..S−1; slots after
    a query's position hold stale or no data and are masked out. `pos` is a scalar, or `[B]` when each
    row is at its own position. Returns `[B, L, H, K]`.
    """
    L, S = q_BxLxHxK.shape[1], k_BxSxHxK.shape[1]
    q_pos = jnp.arange(L) + (0 if pos is None else jnp.asarray(pos)[..., None])  # [L] or [B, L]
    visible_LxS = jnp.arange(S) <= q_pos[..., None]
    if visible_LxS.ndim == 3:  # a row each: [B, 1 (heads), L, S]
        visible_LxS = visible_LxS[:, None]
    scores_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxSxHxK) / math.sqrt(q_BxLxHxK.shape[-1])
    # The softmax runs in float32 whatever the compute dtype (a no-op cast in float32).
    scores_BxHxLxS = scores_BxHxLxS.astype(jnp.float32)
    scores_BxHxLxS = jnp.where(visible_LxS, scores_BxHxLxS, jnp.finfo(jnp.float32).min)
    weights_BxHxLxS = drop(jax.nn.softmax(scores_BxHxLxS, axis=-1)).astype(v_BxSxHxK.dtype)
    return jnp.einsum("bhls,bshk->blhk", weights_BxHxLxS, v_BxSxHxK)


class CausalSelfAttention(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, cache: KVCache | None = None, pos=0):
        c = self.config
        B, L, D = x_BxLxD.shape
        # One matmul for q, k and v, as GPT-2's c_attn: fewer, larger ops.
        qkv_BxLx3D = _dense(3 * D, INIT_STD, "qkv", c)(x_BxLxD)
        q, k, v = (a[:, :, 0] for a in jnp.split(qkv_BxLx3D.reshape(B, L, 3, c.num_heads, c.head_dim), 3, axis=2))
        if c.qk_norm:  # over each head's K channels, with a learned scale
            q = nn.RMSNorm(epsilon=QK_NORM_EPS, dtype=c.compute_dtype, name="q_norm")(q)
            k = nn.RMSNorm(epsilon=QK_NORM_EPS, dtype=c.compute_dtype, name="k_norm")(k)
        if cache is None:
            if c.positions == "rope":
                q, k = (rotary(a, jnp.arange(L), c.rope_base) for a in (q, k))
            if c.attention != "einsum":  # the same [B, L, H, K] layout and causal mask
                y_BxLxHxK = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=c.attention)
            else:
                y_BxLxHxK = causal_attention(q, k, v, drop=lambda w: dropout(w, c.attn_dropout, self))
        else:
            y_BxLxHxK, cache = self._cached(q, k, v, cache, pos)
        out = _dense(D, _out_std(c), "proj", c)(y_BxLxHxK.reshape(B, L, D))
        return out, cache

    def _cached(self, q, k, v, cache: KVCache, pos):
        """Writes this call's keys and values at their positions, then attends over the cache. `pos` is
        a scalar, or `[B]` (one new position per row, L = 1: a hierarchical model's chunks)."""
        if self.config.positions == "rope":  # rotated at their own positions, as the full forward does
            positions = jnp.asarray(pos)[..., None] + jnp.arange(q.shape[1])
            q, k = (rotary(a, positions, self.config.rope_base) for a in (q, k))
        k, v = k.astype(cache.k.dtype), v.astype(cache.v.dtype)  # (the cache keeps its own dtype)
        if jnp.ndim(pos) == 0:
            cache = KVCache(
                *(jax.lax.dynamic_update_slice_in_dim(c, a, pos, axis=1) for c, a in zip(cache, (k, v), strict=True))
            )
        else:  # each row's one new key and value at its own slot
            if k.shape[1] != 1:
                raise ValueError(f"a position per row takes one new position per row, not {k.shape[1]}")
            at = (jnp.arange(cache.k.shape[1]) == pos[:, None])[:, :, None, None]
            cache = KVCache(jnp.where(at, k, cache.k), jnp.where(at, v, cache.v))
        return causal_attention(q, cache.k, cache.v, pos), cache


class MLP(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        c = self.config
        h_BxLxF = _dense(c.ffn_hidden, INIT_STD, "fc", c)(x_BxLxD)
        h_BxLxF = jnp.square(jax.nn.relu(h_BxLxF)) if c.activation == "relu2" else nn.gelu(h_BxLxF, approximate=True)
        return _dense(c.width, _out_std(c), "proj", c)(h_BxLxF)


class Block(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, cache: KVCache | None = None, pos=0):
        # The residual stream stays float32: a bfloat16 branch output is promoted when it is added.
        c = self.config
        a, cache = CausalSelfAttention(c, name="attn")(_norm(c, "ln_1")(x_BxLxD), cache, pos)
        x_BxLxD = x_BxLxD + dropout(a, c.resid_dropout, self)
        x_BxLxD = x_BxLxD + dropout(MLP(c, name="mlp")(_norm(c, "ln_2")(x_BxLxD)), c.resid_dropout, self)
        return x_BxLxD, cache


class DecodeCache(NamedTuple):
    """GPT-2's decoding state: `pos` int32 [] (the ids consumed so far), `window` int32 `[B, seq_len]`
    (id p at slot p while p < seq_len, then the last seq_len ids) and each layer's keys and values."""

    pos: jax.Array
    window: jax.Array
    layers: tuple[KVCache, ...]


class GPT2(nn.Module):
    """GPT-2 over one-hot bytes.

    `apply(variables, x)`: one-hot tokens `[B, L, V]` (L <= seq_len) → logits `[B, L, V]`. Decoding
    follows `bytelm.models.decoding`: `empty_cache`, `prefill` (one cached forward over the prompt's
    last seq_len ids) and `step` (one cached position while the context fits the window, the window
    re-run once it does not).
    """

    config: GPT2Config

    def setup(self):
        c = self.config
        self.wte = self.param("wte", nn.initializers.normal(INIT_STD), (c.vocab_size, c.width))
        if c.positions == "learned":
            self.wpe = self.param("wpe", nn.initializers.normal(INIT_STD), (c.seq_len, c.width))
        self.h = [Block(c) for _ in range(c.num_layers)]  # named h_0, h_1, …
        self.ln_f = _norm(c)
        if not c.tied_head:
            head_init = nn.initializers.zeros if c.zero_init else nn.initializers.normal(INIT_STD)
            self.head = self.param("head", head_init, (c.width, c.vocab_size))

    def __call__(self, x_BxLxV: jax.Array) -> jax.Array:
        L = x_BxLxV.shape[1]
        if L > self.config.seq_len:
            raise ValueError(f"input length {L} exceeds model.seq_len {self.config.seq_len}")
        return self._forward(x_BxLxV, None, 0)[0]

    @property
    def max_context(self) -> int:
        return self.config.seq_len

    def empty_cache(self, batch: int, dtype=jnp.float32) -> DecodeCache:
        """Nothing consumed: zeroed keys and values `[batch, seq_len, H, K]` for every layer."""
        c = self.config
        shape = (batch, c.seq_len, c.num_heads, c.head_dim)
        layers = tuple(KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(c.num_layers))
        return DecodeCache(jnp.zeros((), jnp.int32), jnp.zeros((batch, c.seq_len), jnp.int32), layers)

    def prefill(self, ids_BxT: jax.Array, length: jax.Array) -> tuple[jax.Array, DecodeCache]:
        """One cached forward over the last min(length, seq_len) ids of the prompt `ids[:, :length]`
        (from position 0: a longer prompt is cropped, as the reference crops it). Returns the logits
        `[B, V]` after the prompt and the cache. Causal: the padding after `length` cannot reach them,
        and its keys and values are overwritten by later bytes before any query can see them."""
        L, cache = self.config.seq_len, self.empty_cache(ids_BxT.shape[0])
        T = min(ids_BxT.shape[1], L)
        start = jnp.maximum(length - L, 0)
        window_BxT = jax.lax.dynamic_slice_in_dim(ids_BxT, start, T, axis=1)
        logits_BxTxV, layers = self._forward(one_hot(window_BxT, jnp), cache.layers, 0)
        logits_BxV = jax.lax.dynamic_index_in_dim(logits_BxTxV, jnp.minimum(length, L) - 1, axis=1, keepdims=False)
        window = jax.lax.dynamic_update_slice_in_dim(cache.window, window_BxT, 0, axis=1)
        return logits_BxV, DecodeCache(jnp.asarray(length, jnp.int32), window, layers)

    def step(self, ids_B: jax.Array, cache: DecodeCache) -> tuple[jax.Array, DecodeCache]:
        """The logits `[B, V]` after one more id per row (the id at position `cache.pos`)."""
        return nn.cond(cache.pos < self.config.seq_len, GPT2._cached_step, GPT2._window_step, self, ids_B, cache)

    def _cached_step(self, ids_B, cache: DecodeCache):
        logits_Bx1xV, layers = self._forward(one_hot(ids_B[:, None], jnp), cache.layers, cache.pos)
        window = jax.lax.dynamic_update_slice_in_dim(cache.window, ids_B[:, None], cache.pos, axis=1)
        return logits_Bx1xV[:, 0], DecodeCache(cache.pos + 1, window, layers)

    def _window_step(self, ids_B, cache: DecodeCache):
        # Past seq_len the positions shift with every byte, so no cached key still holds: re-run the window.
        window = jnp.concatenate([cache.window[:, 1:], ids_B[:, None]], axis=1)
        logits_BxLxV = self._forward(one_hot(window, jnp), None, 0)[0]
        return logits_BxLxV[:, -1], DecodeCache(cache.pos + 1, window, cache.layers)

    def _forward(self, x_BxLxV, cache, pos):
        """Logits `[B, L, V]` for one-hot tokens at positions pos..pos+L−1; with `cache` (per-layer
        keys and values) those positions attend to the earlier ones cached there, and the new cache
        comes back too."""
        c = self.config
        B, L, V = x_BxLxV.shape
        chex.assert_shape(x_BxLxV, (None, None, c.vocab_size))
        # One-hot × embedding matrix: the input is the typed one-hot the pipeline builds.
        x_BxLxD = x_BxLxV.astype(self.wte.dtype) @ self.wte
        if c.positions == "learned":
            x_BxLxD = x_BxLxD + jax.lax.dynamic_slice_in_dim(self.wpe, pos, L)
        x_BxLxD = dropout(x_BxLxD, c.embed_dropout, self)
        new_cache = []
        for i, block in enumerate(self.h):
            x_BxLxD, layer_cache = block(x_BxLxD, None if cache is None else cache[i], pos)
            new_cache.append(layer_cache)
        x_BxLxD = self.ln_f(x_BxLxD)
        # Tied: the head is the token embedding. Logits come back float32 in any compute dtype.
        head_DxV = self.wte.T if c.tied_head else self.head
        logits_BxLxV = (x_BxLxD @ head_DxV.astype(c.compute_dtype)).astype(jnp.float32)
        chex.assert_shape(logits_BxLxV, (B, L, c.vocab_size))
        return logits_BxLxV, tuple(new_cache)
