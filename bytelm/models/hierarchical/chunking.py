"""Chunk and dechunk: from bytes to a fixed number of chunk slots and back, with static shapes.

chunk     the bytes where b_t, in order, gathered into S slots `[B, S, D]`; a window with more
          boundaries than slots keeps the first S (the rest is overflow: counted, and those bytes
          belong to the last chunk, their targets scored as every other's)
dechunk   H-Net's smoothing (`dc.py`, `DeChunkLayer`): z̄_s = p_s·z_s + (1 − p_s)·z̄_{s−1} over the
          slots, p_s the boundary probability of slot s's byte, then each byte takes z̄ of the chunk
          that started at or before it. The official code runs the EMA through a Mamba-2 kernel as
          Δ = log(1/(1 − p)), which needs p clamped to [1e-4, 1 − 1e-4]; here it is an associative
          scan, which needs no clamp, so a hard boundary (p = 1) passes its chunk through exactly
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def slot_positions(b_BxL: jax.Array, slots: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The byte position of each slot's chunk `[B, S]` (0 where a slot is unused), which slots hold a
    chunk `[B, S]`, and the number of boundaries `[B]` (beyond S: overflow)."""
    B, L = b_BxL.shape
    rank = jnp.cumsum(b_BxL, axis=1) - 1  # the slot of a boundary byte
    target = jnp.where(b_BxL & (rank < slots), rank, slots)  # slot `slots` is out of range: dropped
    positions = (
        jnp.zeros((B, slots), jnp.int32)
        .at[jnp.arange(B)[:, None], target]
        .set(jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L)), mode="drop")
    )
    count = jnp.sum(b_BxL, axis=1)
    return positions, jnp.arange(slots) < count[:, None], count


def chunk(h_BxLxD: jax.Array, positions_BxS: jax.Array) -> jax.Array:
    """The slots' inputs: h at each chunk's first byte, `[B, S, D]`."""
    return jnp.take_along_axis(h_BxLxD, positions_BxS[..., None], axis=1)


def _combine(left, right):
    """Composes z ↦ a·z + c (left first): the EMA's associative operator."""
    return right[0] * left[0], right[0] * left[1] + right[1]


def ema(z_BxSxD: jax.Array, p_BxS: jax.Array) -> jax.Array:
    """z̄_s = p_s·z_s + (1 − p_s)·z̄_{s−1}, z̄_{−1} = 0, over the slots."""
    a, c = (1.0 - p_BxS)[..., None], p_BxS[..., None] * z_BxSxD
    return jax.lax.associative_scan(_combine, (jnp.broadcast_to(a, z_BxSxD.shape), c), axis=1)[1]


def smooth(z_BxSxD, p_BxL, positions_BxS) -> jax.Array:
    """The EMA over the slots `[B, S, D]`, each slot weighted by its byte's boundary probability."""
    return ema(z_BxSxD, jnp.take_along_axis(p_BxL, positions_BxS, axis=1))


def dechunk(smoothed_BxSxD, b_BxL) -> jax.Array:
    """Each byte's smoothed chunk output `[B, L, D]`: the slot of the last boundary at or before the
    byte (the last slot for the bytes after an overflow)."""
    slot_of = jnp.clip(jnp.cumsum(b_BxL, axis=1) - 1, 0, smoothed_BxSxD.shape[1] - 1)
    return jnp.take_along_axis(smoothed_BxSxD, slot_of[..., None], axis=1)
