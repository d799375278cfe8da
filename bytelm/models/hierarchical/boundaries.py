"""Where a chunk starts: three rules behind one interface, each giving the boundary probability p_t
`[B, L]` in [0, 1] and the boundary b_t `[B, L]` (p_0 = 1: the window's first byte starts a chunk).

    fixed    every `chunk_ratio`-th byte (Hourglass, MEGABYTE's patches): p = b, no gradient
    space    SpaceByte's rule (kjslag/spacebyte `spacebyte.py`, patch_method 'utf8'): the first byte of
             each run of space-like bytes, which are ASCII that is not a letter or a digit, and UTF-8
             lead bytes (0b11xxxxxx); p = b, no gradient
    learned  H-Net's routing (`dc.py`, `RoutingModule`): p_t = (1 − cos(W_q h_t, W_k h_{t−1})) / 2 on the
             encoder's output, b_t = [p_t ≥ ½], W_q and W_k starting as the identity

A boundary depends on bytes up to its own only (the tests check it by perturbation and by gradient).
Departure from `dc.py`: the paper's assignment of q to h_t and k to h_{t−1}, where the code applies
its `q_proj` to h_{t−1} (the two are the same function with W_q and W_k exchanged), and b_t = [p_t ≥ ½]
where the code's argmax leaves a tie at exactly ½ unselected.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bytelm.data import tokenizer

SPACE_LIKE = tokenizer.space_like().astype(np.float32)  # [256]: 1 for SpaceByte's space-like bytes


def fixed(batch: int, length: int, ratio: int, start=0):
    """b_t = [(start + t) mod ratio = 0]: p, b `[batch, length]`."""
    b = jnp.broadcast_to((start + jnp.arange(length)) % ratio == 0, (batch, length))
    return b.astype(jnp.float32), b


def space(x_BxLxV: jax.Array, previous_space_B=None):
    """SpaceByte's boundaries from the one-hot bytes; `previous_space_B` is whether the byte before the
    window was space-like (None: the window starts the text, whose first byte starts a chunk)."""
    s = x_BxLxV @ SPACE_LIKE  # [B, L]: 1 where the byte is space-like
    before = jnp.ones_like(s[:, :1]) if previous_space_B is None else previous_space_B[:, None]
    b = (s > 0) & (jnp.concatenate([before, s[:, :-1]], axis=1) == 0)
    if previous_space_B is None:
        b = b.at[:, 0].set(True)
    return b.astype(jnp.float32), b


def cosine_probability(q, k) -> jax.Array:
    """(1 − cos(q, k)) / 2 over the last axis, clipped to [0, 1] (rounding can overshoot)."""
    cos = jnp.sum(q * k, -1) * jax.lax.rsqrt(jnp.sum(q * q, -1) * jnp.sum(k * k, -1) + 1e-12)
    return jnp.clip((1.0 - cos) / 2.0, 0.0, 1.0)


class Router(nn.Module):
    """H-Net's learned rule: W_q and W_k `[D, D]`, starting as the identity."""

    @nn.compact
    def __call__(self, h_BxLxD, previous_BxD=None):
        """p, b `[B, L]`; `previous_BxD` is h at the byte before the window (None: p_0 = 1)."""
        D = h_BxLxD.shape[-1]
        identity = lambda key, shape, dtype=jnp.float32: jnp.eye(D, dtype=dtype)
        q = nn.Dense(D, use_bias=False, kernel_init=identity, name="q_proj")(h_BxLxD)
        k_proj = nn.Dense(D, use_bias=False, kernel_init=identity, name="k_proj")
        k = k_proj(h_BxLxD)
        if previous_BxD is None:
            p = jnp.pad(cosine_probability(q[:, 1:], k[:, :-1]), ((0, 0), (1, 0)), constant_values=1.0)
        else:
            p = cosine_probability(q, jnp.concatenate([k_proj(previous_BxD)[:, None], k[:, :-1]], axis=1))
        return p, p >= 0.5


def ratio_loss(p_BxL, b_BxL, target: float) -> jax.Array:
    """H-Net's ratio loss (eq. 10): N/(N−1) · ((N−1)·F·G + (1−F)·(1−G)), F the fraction of bytes chosen
    as boundaries (no gradient), G the mean probability; 1 when F = G = 1/N, larger away from it."""
    N, F, G = target, jnp.mean(b_BxL.astype(jnp.float32)), jnp.mean(p_BxL)
    return N / (N - 1.0) * ((N - 1.0) * F * G + (1.0 - F) * (1.0 - G))
