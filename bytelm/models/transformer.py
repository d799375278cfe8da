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

Architecture options (`config.model`; `ARCHITECTURE_DEFAULTS` are GPT-2's, so a config that leaves
them alone is GPT-2 exactly and exports to transformers):

    positions   'learned' (wpe) | 'rope': rotary q and k (`rotary`, base `rope_base`), no wpe
    norm        'layernorm' | 'rmsnorm' (no mean, no bias)
    activation  'gelu' (tanh approximation) | 'relu2': relu(x)²
    qk_norm     RMS-normalise each head's q and k (with a learned scale [K]) before the dot product
    biases      dense and layer-norm biases (off: none anywhere)
    tied_head   logits from wte (off: a separate `head` [D, V])
    zero_init   output projections (attn/proj, mlp/proj and an untied head) start at zero

Past the training window both position kinds mean the same thing when sampling: the model sees the
last `seq_len` bytes, as in training (`bytelm.sampling` crops, and its fast sampler re-runs the
cropped window). Rotary positions would let a cache slide on, but a sliding cache is another function
(each layer's window reaches `seq_len` further back, as in sliding-window attention), not the model
run on the cropped window, so it is not what we sample.

Kernels (`GPT2Config.attention`, `compute_dtype`; chosen by `config.runtime.fast_kernels`, never by
the model config, so a pack does not depend on them): the default is float32 with the attention
written out below (`causal_attention`); the fast path is bfloat16 matmuls over float32 parameters,
with the residual stream, layer-norm statistics, softmax and logits in float32, and attention
through `jax.nn.dot_product_attention` (cuDNN's fused kernel on a GPU). Cached decoding always uses
`causal_attention`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bytelm.data.tokenizer import VOCAB_SIZE
from bytelm.errors import ConfigError, check_at_least

LAYER_NORM_EPS = 1e-5  # GPT-2's value
INIT_STD = 0.02  # GPT-2's initialiser: normal(0, 0.02) for every matrix
# 'einsum': `causal_attention` below; 'xla' and 'cudnn': `jax.nn.dot_product_attention`'s implementations.
ATTENTION_KERNELS = ("einsum", "xla", "cudnn")
COMPUTE_DTYPES = ("float32", "bfloat16")
RMS_NORM_EPS = 1e-6
# The architecture options and GPT-2's value of each (module docstring); `choices` lists string options.
ARCHITECTURE_DEFAULTS = {
    "positions": "learned",
    "rope_base": 10000.0,
    "norm": "layernorm",
    "activation": "gelu",
    "qk_norm": False,
    "biases": True,
    "tied_head": True,
    "zero_init": False,
}
ARCHITECTURE_CHOICES = {
    "positions": ("learned", "rope"),
    "norm": ("layernorm", "rmsnorm"),
    "activation": ("gelu", "relu2"),
}


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Sizes of a GPT-2. Frozen and hashable, so it can be a static argument of `jax.jit`."""

    seq_len: int
    num_layers: int
    num_heads: int
    head_dim: int
    ffn_hidden: int
    vocab_size: int = VOCAB_SIZE
    attention: str = "einsum"  # one of ATTENTION_KERNELS (training and prefill-free forward passes)
    compute_dtype: str = "float32"  # matmul dtype; parameters stay float32 either way
    positions: str = "learned"  # the architecture options: ARCHITECTURE_DEFAULTS
    rope_base: float = 10000.0
    norm: str = "layernorm"
    activation: str = "gelu"
    qk_norm: bool = False
    biases: bool = True
    tied_head: bool = True
    zero_init: bool = False

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def dtype(self) -> jnp.dtype:
        return jnp.dtype(self.compute_dtype)

    def is_gpt2(self) -> bool:
        """True when every architecture option is GPT-2's own."""
        return all(getattr(self, f) == v for f, v in ARCHITECTURE_DEFAULTS.items())

    @classmethod
    def from_config(cls, model_config, attention: str = "einsum", compute_dtype: str = "float32") -> GPT2Config:
        """Builds and validates the sizes and options from `config.model` (a ConfigDict or dict), with
        the kernels; an option the config lacks (a run saved before it existed) is GPT-2's."""
        options = {f: type(v)(model_config.get(f, v)) for f, v in ARCHITECTURE_DEFAULTS.items()}
        cfg = cls(
            seq_len=model_config["seq_len"],
            num_layers=model_config["num_layers"],
            num_heads=model_config["num_heads"],
            head_dim=model_config["head_dim"],
            ffn_hidden=model_config["ffn_hidden"],
            attention=attention,
            compute_dtype=compute_dtype,
            **options,
        )
        sizes = ("seq_len", "num_layers", "num_heads", "head_dim", "ffn_hidden")
        check_at_least("model", {f: getattr(cfg, f) for f in sizes})
        for field, choices in ARCHITECTURE_CHOICES.items():
            if getattr(cfg, field) not in choices:
                raise ConfigError(f"model.{field}={getattr(cfg, field)!r}: choose one of {', '.join(choices)}")
        if cfg.positions == "rope" and (cfg.head_dim % 2 or cfg.rope_base <= 1):
            raise ConfigError(
                f"rotary positions need an even model.head_dim and model.rope_base > 1, got "
                f"{cfg.head_dim} and {cfg.rope_base}"
            )
        if attention not in ATTENTION_KERNELS or compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(
                f"attention {attention!r} / compute dtype {compute_dtype!r}: expected one of "
                f"{', '.join(ATTENTION_KERNELS)} / {', '.join(COMPUTE_DTYPES)}"
            )
        return cfg


def _dense(features: int, std: float, name: str, config: GPT2Config) -> nn.Dense:
    # `dtype` is the matmul's; the kernel and bias are stored (and updated) in float32. std 0 is a zero init.
    return nn.Dense(
        features,
        use_bias=config.biases,
        kernel_init=nn.initializers.normal(std) if std else nn.initializers.zeros,
        bias_init=nn.initializers.zeros,
        dtype=config.dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _norm(config: GPT2Config, name: str | None = None) -> nn.Module:
    """The pre-norm of a block and the final norm: GPT-2's LayerNorm, or RMSNorm."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=LAYER_NORM_EPS, dtype=config.dtype, name=name)
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_bias=config.biases, dtype=config.dtype, name=name)


def _out_std(config: GPT2Config) -> float:
    # Residual projections are scaled by 1/sqrt(2·layers), per GPT-2: each block adds two.
    return 0.0 if config.zero_init else INIT_STD / math.sqrt(2 * config.num_layers)


def rotary(x_BxLxHxK: jax.Array, positions_L: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding (Su et al. 2021), half-split pairing: channel i < K/2 and i + K/2
    form a pair rotated by the angle `position · base^(−2i/K)`. `positions_L` may be any integers
    (they need not start at 0). Returns `[B, L, H, K]` in the input's dtype."""
    half = x_BxLxHxK.shape[-1] // 2
    inv_freq_K2 = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_Lx1xK2 = (positions_L.astype(jnp.float32)[:, None] * inv_freq_K2)[:, None, :]
    cos, sin = jnp.cos(angle_Lx1xK2), jnp.sin(angle_Lx1xK2)
    x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxLxHxK.dtype)


class KVCache(NamedTuple):
    """One layer's keys and values for positions 0..seq_len−1: `[B, seq_len, H, K]` each (rotary
    keys stored rotated)."""

    k: jax.Array
    v: jax.Array


def causal_attention(q_BxLxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array, pos=None) -> jax.Array:
    """Softmax attention where the query at absolute position p sees the keys at positions <= p.

    Without `pos`, queries and keys are the same L positions (plain causal attention). With `pos`
    (cached decoding), the L queries sit at pos..pos+L−1 and the S >= L keys at 0..S−1; slots after
    a query's position hold stale or no data and are masked out. Returns `[B, L, H, K]`.
    """
    L, S = q_BxLxHxK.shape[1], k_BxSxHxK.shape[1]
    q_pos = jnp.arange(L) + (0 if pos is None else pos)
    visible_LxS = jnp.arange(S)[None, :] <= q_pos[:, None]
    scores_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxSxHxK) / math.sqrt(q_BxLxHxK.shape[-1])
    # The softmax runs in float32 whatever the compute dtype (a no-op cast in float32).
    scores_BxHxLxS = scores_BxHxLxS.astype(jnp.float32)
    scores_BxHxLxS = jnp.where(visible_LxS, scores_BxHxLxS, jnp.finfo(jnp.float32).min)
    weights_BxHxLxS = jax.nn.softmax(scores_BxHxLxS, axis=-1).astype(v_BxSxHxK.dtype)
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
            q = nn.RMSNorm(epsilon=RMS_NORM_EPS, dtype=c.dtype, name="q_norm")(q)
            k = nn.RMSNorm(epsilon=RMS_NORM_EPS, dtype=c.dtype, name="k_norm")(k)
        if cache is None:
            if c.positions == "rope":
                q, k = (rotary(a, jnp.arange(L), c.rope_base) for a in (q, k))
            if c.attention != "einsum":  # the same [B, L, H, K] layout and causal mask
                y_BxLxHxK = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=c.attention)
            else:
                y_BxLxHxK = causal_attention(q, k, v)
        else:
            y_BxLxHxK, cache = self._cached(q, k, v, cache, pos)
        out = _dense(D, _out_std(c), "proj", c)(y_BxLxHxK.reshape(B, L, D))
        return out, cache

    def _cached(self, q, k, v, cache: KVCache, pos):
        """Writes this call's keys and values at their positions, then attends over the cache."""
        if self.config.positions == "rope":  # rotated at their own positions, as the full forward does
            positions = pos + jnp.arange(q.shape[1])
            q, k = (rotary(a, positions, self.config.rope_base) for a in (q, k))
        cache = KVCache(  # (the cache keeps its own dtype whatever the compute dtype)
            jax.lax.dynamic_update_slice_in_dim(cache.k, k.astype(cache.k.dtype), pos, axis=1),
            jax.lax.dynamic_update_slice_in_dim(cache.v, v.astype(cache.v.dtype), pos, axis=1),
        )
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
        a, cache = CausalSelfAttention(self.config, name="attn")(_norm(self.config, "ln_1")(x_BxLxD), cache, pos)
        x_BxLxD = x_BxLxD + a
        x_BxLxD = x_BxLxD + MLP(self.config, name="mlp")(_norm(self.config, "ln_2")(x_BxLxD))
        return x_BxLxD, cache


class GPT2(nn.Module):
    """GPT-2 over one-hot bytes.

    `apply(variables, x)`: one-hot tokens `[B, L, V]` (L <= seq_len) → logits `[B, L, V]`.

    `apply(variables, x, cache, pos, method=GPT2.decode)`: cached decoding. The L tokens sit at
    absolute positions pos..pos+L−1 and attend to the keys and values of the earlier positions in
    `cache` (start from `empty_cache`); returns `(logits [B, L, V], cache)`. The prompt is one such
    call (prefill); after it each new token costs attention over the cache instead of a forward pass
    over the whole window. The cache only holds while pos + L <= seq_len: past that the window
    shifts (the module docstring).
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

    def decode(self, x_BxLxV: jax.Array, cache: tuple[KVCache, ...], pos) -> tuple[jax.Array, tuple[KVCache, ...]]:
        return self._forward(x_BxLxV, cache, pos)

    def _forward(self, x_BxLxV, cache, pos):
        c = self.config
        B, L, V = x_BxLxV.shape
        chex.assert_shape(x_BxLxV, (None, None, c.vocab_size))
        # One-hot × embedding matrix: the input is the typed one-hot the pipeline builds.
        x_BxLxD = x_BxLxV.astype(self.wte.dtype) @ self.wte
        if c.positions == "learned":
            x_BxLxD = x_BxLxD + jax.lax.dynamic_slice_in_dim(self.wpe, pos, L)
        new_cache = []
        for i, block in enumerate(self.h):
            x_BxLxD, layer_cache = block(x_BxLxD, None if cache is None else cache[i], pos)
            new_cache.append(layer_cache)
        x_BxLxD = self.ln_f(x_BxLxD)
        # Tied: the head is the token embedding. Logits come back float32 in any compute dtype.
        head_DxV = self.wte.T if c.tied_head else self.head
        logits_BxLxV = (x_BxLxD @ head_DxV.astype(c.dtype)).astype(jnp.float32)
        chex.assert_shape(logits_BxLxV, (B, L, c.vocab_size))
        return logits_BxLxV, tuple(new_cache)


def empty_cache(config: GPT2Config, batch: int, dtype=jnp.float32) -> tuple[KVCache, ...]:
    """Zeroed keys and values for every layer: `num_layers × (k, v)` of `[batch, seq_len, H, K]`."""
    shape = (batch, config.seq_len, config.num_heads, config.head_dim)
    return tuple(KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.num_layers))
