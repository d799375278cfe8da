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
"""

from __future__ import annotations

import dataclasses
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bytelm.errors import ConfigError
from bytelm.tokenizer import VOCAB_SIZE

LAYER_NORM_EPS = 1e-5  # GPT-2's value
INIT_STD = 0.02  # GPT-2's initialiser: normal(0, 0.02) for every matrix


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Sizes of a GPT-2. Frozen and hashable, so it can be a static argument of `jax.jit`."""

    seq_len: int
    num_layers: int
    num_heads: int
    head_dim: int
    ffn_hidden: int
    vocab_size: int = VOCAB_SIZE

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    @classmethod
    def from_config(cls, model_config) -> GPT2Config:
        """Builds and validates the sizes from `config.model` (a ConfigDict)."""
        cfg = cls(
            seq_len=model_config.seq_len,
            num_layers=model_config.num_layers,
            num_heads=model_config.num_heads,
            head_dim=model_config.head_dim,
            ffn_hidden=model_config.ffn_hidden,
        )
        for field in ("seq_len", "num_layers", "num_heads", "head_dim", "ffn_hidden"):
            if getattr(cfg, field) < 1:
                raise ConfigError(f"model.{field} must be at least 1, got {getattr(cfg, field)}")
        return cfg


def _dense(features: int, std: float, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.normal(std), bias_init=nn.initializers.zeros, name=name)


def causal_attention(q_BxLxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array) -> jax.Array:
    """Softmax attention where query i sees keys 0..i+(S-L) (the last L of S positions are queries).

    With S = L this is plain causal attention; S > L is the cached-decoding case. Returns `[B, L, H, K]`.
    """
    L, S = q_BxLxHxK.shape[1], k_BxSxHxK.shape[1]
    scores_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxSxHxK) / math.sqrt(q_BxLxHxK.shape[-1])
    visible_LxS = jnp.arange(S)[None, :] <= jnp.arange(L)[:, None] + (S - L)
    scores_BxHxLxS = jnp.where(visible_LxS, scores_BxHxLxS, jnp.finfo(scores_BxHxLxS.dtype).min)
    weights_BxHxLxS = jax.nn.softmax(scores_BxHxLxS, axis=-1)
    return jnp.einsum("bhls,bshk->blhk", weights_BxHxLxS, v_BxSxHxK)


class CausalSelfAttention(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        c = self.config
        B, L, D = x_BxLxD.shape
        # One matmul for q, k and v, as GPT-2's c_attn: fewer, larger ops.
        qkv_BxLx3D = _dense(3 * D, INIT_STD, "qkv")(x_BxLxD)
        q, k, v = jnp.split(qkv_BxLx3D.reshape(B, L, 3, c.num_heads, c.head_dim), 3, axis=2)
        y_BxLxHxK = causal_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
        # Residual projections are scaled by 1/sqrt(2·layers), per GPT-2: each block adds two.
        return _dense(D, INIT_STD / math.sqrt(2 * c.num_layers), "proj")(y_BxLxHxK.reshape(B, L, D))


class MLP(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        c = self.config
        h_BxLxF = nn.gelu(_dense(c.ffn_hidden, INIT_STD, "fc")(x_BxLxD), approximate=True)
        return _dense(c.width, INIT_STD / math.sqrt(2 * c.num_layers), "proj")(h_BxLxF)


class Block(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        x_BxLxD = x_BxLxD + CausalSelfAttention(self.config, name="attn")(
            nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="ln_1")(x_BxLxD)
        )
        return x_BxLxD + MLP(self.config, name="mlp")(nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="ln_2")(x_BxLxD))


class GPT2(nn.Module):
    """`apply({'params': p}, x)` maps one-hot tokens `[B, L, V]` (L <= seq_len) to logits `[B, L, V]`."""

    config: GPT2Config

    @nn.compact
    def __call__(self, x_BxLxV: jax.Array) -> jax.Array:
        c = self.config
        B, L, V = x_BxLxV.shape
        chex.assert_shape(x_BxLxV, (None, None, c.vocab_size))
        if L > c.seq_len:
            raise ValueError(f"input length {L} exceeds model.seq_len {c.seq_len}")
        wte = self.param("wte", nn.initializers.normal(INIT_STD), (c.vocab_size, c.width))
        wpe = self.param("wpe", nn.initializers.normal(INIT_STD), (c.seq_len, c.width))
        # One-hot × embedding matrix: the input is the typed one-hot the pipeline builds.
        x_BxLxD = x_BxLxV.astype(wte.dtype) @ wte + wpe[:L]
        for i in range(c.num_layers):
            x_BxLxD = Block(c, name=f"h_{i}")(x_BxLxD)
        x_BxLxD = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="ln_f")(x_BxLxD)
        logits_BxLxV = x_BxLxD @ wte.T  # the head is tied to the token embedding
        chex.assert_shape(logits_BxLxV, (B, L, c.vocab_size))
        return logits_BxLxV
