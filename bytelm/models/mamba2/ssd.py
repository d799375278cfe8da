"""Mamba-2's state-space recurrence, in its chunked matmul form (SSD) and one position at a time.

Per head h (A_h a negative scalar, Δ_t,h > 0) and head channel p, with the state h_t ∈ R^N,

    h_t = exp(Δ_t·A_h) · h_{t−1} + Δ_t · x_t · B_t,      y_t = C_t · h_t,      h_{−1} = state0

(zero-order hold for A, Euler for B, as the official code; the skip D·x is the caller's). B and C are
shared by the heads of a group: head h uses group h // (H/G). Shapes: b batch, l length, H heads, P
head channels, G groups, N state size, Q chunk.

    chunked      SSD (Dao & Gu 2024, the paper's Listing 1, state-spaces/mamba `ssd_minimal.py`): the
                 length cut into chunks of Q; within a chunk, y = (C Bᵀ ∘ L) X with L the decays between
                 positions (a masked Q × Q product); the chunks' states are carried by one more product
    sequential   one `ssd_step` per position with `jax.lax.scan`: the obviously-correct reference, and
                 the model's one-token decoding step

Departures from `ssd_minimal.py`, each for a reason: any length (padded after discretising with x·Δ = 0
and Δ·A = 0, so padded steps neither decay nor add and the final state stays exact, where the official
reference asserts a multiple of Q); B and C kept per group (heads reshaped to (G, H/G)) instead of
broadcast to every head; each 3- and 4-operand einsum split into 2-operand products, so the contraction
order is fixed rather than left to opt_einsum; the cumulative sums, decays and states in float32. For
XLA:CPU's sake (BENCHMARKS.md, Mamba-2): the chunks are laid out heads first, so that the masked
products are plain batched matmuls, with batch and group as one axis (no axis of one where G = 1, which
XLA:CPU transposes slowly); cumulative sums are products with a triangular matrix (`cumsum`);
and the within-chunk product has its own backward (`masked_mix`).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

MATMUL_CUMSUM = 256  # the longest cumulative sum taken as a matmul


def cumsum(a: jax.Array, axis: int = -1) -> jax.Array:
    """`jnp.cumsum` along `axis`, as a product with a triangular matrix of ones up to `MATMUL_CUMSUM`
    positions: XLA:CPU lowers a cumulative sum to a reduce-window whose cost grows with the square of the
    length, where a short one (a chunk, the chunks of a window) costs less as a matmul; a long one (the
    chunks of a long prompt) as what it is."""
    T = a.shape[axis]
    if T > MATMUL_CUMSUM:
        return jnp.cumsum(a, axis=axis)
    summed = jnp.moveaxis(a, axis, -1) @ jnp.triu(jnp.ones((T, T), a.dtype))  # out[j] = Σ_{k<=j} a[k]
    return jnp.moveaxis(summed, -1, axis)


def segsum(a: jax.Array) -> jax.Array:
    """Segment sums `[..., T, T]` of `a` `[..., T]`: out[i, j] = a_{j+1} + … + a_i for i >= j, −inf above
    the diagonal, so that exp(out) is the decay from position j to i and 0 where i < j.

    The stable form: the sums are cumulative sums of masked copies, not differences of one cumulative
    sum (which cancel badly when it is large), and the −inf is put in *before* the exp, so no
    inf · 0 ever reaches a gradient."""
    T = a.shape[-1]
    below = jnp.tril(jnp.ones((T, T), bool), -1)
    sums = cumsum(jnp.where(below, a[..., :, None], 0.0), axis=-2)  # [i, j] = Σ_{j<k<=i} a_k
    return jnp.where(jnp.tril(jnp.ones((T, T), bool)), sums, -jnp.inf)


def _check(x, dt, A, B, C) -> tuple[int, ...]:
    b, l, H, P = x.shape
    G, N = B.shape[-2:]
    chex.assert_shape(dt, (b, l, H))
    chex.assert_shape(A, (H,))
    chex.assert_shape([B, C], (b, l, G, N))
    if H % G:
        raise ValueError(f"{G} groups do not divide {H} heads")
    return b, l, H, P, G, N


def ssd_step(state_BxHxPxN, x_BxHxP, dt_BxH, A_H, B_BxGxN, C_BxGxN):
    """One position of the recurrence: the new state `[b, H, P, N]` and y `[b, H, P]`."""
    H, G = x_BxHxP.shape[1], B_BxGxN.shape[1]
    B_BxHxN, C_BxHxN = (jnp.repeat(a, H // G, axis=1) for a in (B_BxGxN, C_BxGxN))  # head h: group h // (H/G)
    decay_BxH = jnp.exp(dt_BxH * A_H)
    state = state_BxHxPxN * decay_BxH[..., None, None] + (dt_BxH[..., None] * x_BxHxP)[..., None] * B_BxHxN[:, :, None]
    return state, jnp.einsum("bhpn,bhn->bhp", state, C_BxHxN)


def ssd_sequential(x, dt, A, B, C, state0=None):
    """The reference: `ssd_step` at every position with `jax.lax.scan`. Returns y `[b, l, H, P]` and the
    final state `[b, H, P, N]` (arguments as `ssd`)."""
    b, l, H, P, G, N = _check(x, dt, A, B, C)
    state0 = jnp.zeros((b, H, P, N), jnp.float32) if state0 is None else state0

    def step(state, inputs):
        return ssd_step(state, *inputs[:2], A, *inputs[2:])

    time_major = [jnp.moveaxis(a, 1, 0) for a in (x, dt, B, C)]
    state, y = jax.lax.scan(step, state0, time_major)
    return jnp.moveaxis(y, 0, 1), state


@jax.custom_vjp
def masked_mix(CB, L, X):
    """The within-chunk product y_r = (CB ∘ L_r) X_r for every head r of a group: CB `[z, c, Q, Q]`
    (C·Bᵀ, shared by the group's heads; z = b·G), L and X head-major, `[R, z, c, Q, Q]` and `[R, z, c, Q, P]`.

    Its own backward for one reason: autodiff's gradient of the broadcast CB is a strided reduction over
    the heads, which XLA:CPU runs several times slower than a sum of the heads' slices."""
    return (CB * L) @ X


def _masked_mix_fwd(CB, L, X):
    M = CB * L
    return M @ X, (CB, L, X, M)


def _masked_mix_bwd(residuals, dY):
    CB, L, X, M = residuals
    dM = dY @ jnp.swapaxes(X, -1, -2)
    dCB_heads = dM * L
    dCB = functools.reduce(jnp.add, [dCB_heads[r] for r in range(dCB_heads.shape[0])])  # one elementwise sum
    return dCB, dM * CB, jnp.swapaxes(M, -1, -2) @ dY


masked_mix.defvjp(_masked_mix_fwd, _masked_mix_bwd)


def _head_major(x, dt, A, B, C, chunk: int):
    """Discretised and padded inputs in chunks, heads first: X `[R, z, c, Q, P]`, the log decays a
    `[R, z, c, Q]`, B and C `[z, c, Q, N]` (R heads per group, c chunks, z = b·G: batch and group are one
    axis, which spares XLA:CPU an axis of one where G = 1)."""
    b, l, H, P = x.shape
    G, N = B.shape[-2:]
    R, pad = H // G, (-l) % chunk
    X = (x * dt[..., None]).astype(jnp.float32)  # discretised: the input x·Δ and the log decay Δ·A
    a = (dt * A).astype(jnp.float32)
    if pad:  # after discretising: a padded step adds nothing (X = 0) and decays nothing (a = 0)
        X, a, B, C = (jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2)) for v in (X, a, B, C))
    c = (l + pad) // chunk
    X = jnp.transpose(X.reshape(b, c, chunk, G, R, P), (4, 0, 3, 1, 2, 5)).reshape(R, b * G, c, chunk, P)
    a = jnp.transpose(a.reshape(b, c, chunk, G, R), (4, 0, 3, 1, 2)).reshape(R, b * G, c, chunk)
    B, C = (
        jnp.transpose(v.reshape(b, c, chunk, G, N), (0, 3, 1, 2, 4)).reshape(b * G, c, chunk, N).astype(jnp.float32)
        for v in (B, C)
    )
    return X, a, B, C


def ssd_chunked(x, dt, A, B, C, chunk: int, state0=None):
    """SSD over chunks of `chunk` positions (arguments and results as `ssd`)."""
    b, l, H, P, G, N = _check(x, dt, A, B, C)
    R = H // G
    X, a, B, C = _head_major(x, dt, A, B, C, chunk)
    a_cum = cumsum(a)
    # 1. Within each chunk: y_i = Σ_{j<=i} (C_i · B_j) decay(j → i) X_j, a masked Q × Q product.
    y_diag = masked_mix(C @ jnp.swapaxes(B, -1, -2), jnp.exp(segsum(a)), X)
    # 2. Each chunk's own contribution to the state at its end.
    decay_to_end = jnp.exp(a_cum[..., -1:] - a_cum)  # [R, z, c, Q]
    states = jnp.einsum("zcjn,rzcjp->rzcpn", B, X * decay_to_end[..., None])
    # 3. The states at the chunks' starts: the incoming state and each chunk's, decayed across chunks.
    first = jnp.zeros((R, b * G, 1, P, N), jnp.float32)
    if state0 is not None:
        first = jnp.transpose(state0.reshape(b, G, R, P, N), (2, 0, 1, 3, 4)).reshape(R, b * G, 1, P, N)
        first = first.astype(jnp.float32)
    states = jnp.concatenate([first, states], axis=2)  # [R, z, c + 1, P, N]
    across = jnp.exp(segsum(jnp.pad(a_cum[..., -1], [(0, 0)] * 2 + [(1, 0)])))  # [R, z, c + 1, c + 1]
    states = jnp.einsum("rzyc,rzcpn->rzypn", across, states)
    starts, final = states[:, :, :-1], states[:, :, -1]
    # 4. What the state at a chunk's start gives each position of it.
    y_state = jnp.einsum("zcin,rzcpn->rzcip", C, starts) * jnp.exp(a_cum)[..., None]
    y = (y_diag + y_state).reshape(R, b, G, -1, chunk, P)
    y = jnp.transpose(y, (1, 3, 4, 2, 0, 5)).reshape(b, -1, H, P)[:, :l]
    return y, jnp.transpose(final.reshape(R, b, G, P, N), (1, 2, 0, 3, 4)).reshape(b, H, P, N)


def ssd(x, dt, A, B, C, *, mode: str = "chunked", chunk: int = 64, state0=None):
    """The recurrence of the module docstring.

    Args:
      x: `[b, l, H, P]`; dt: `[b, l, H]` (already positive); A: `[H]` (negative); B, C: `[b, l, G, N]`;
      state0: `[b, H, P, N]` or None (zeros).
      mode: 'chunked' (SSD, chunks of `chunk` positions) or 'sequential' (the reference).
    Returns:
      y `[b, l, H, P]` (float32, without the skip D·x) and the final state `[b, H, P, N]`.
    """
    if mode == "chunked":
        return ssd_chunked(x, dt, A, B, C, chunk, state0)
    if mode == "sequential":
        return ssd_sequential(x, dt, A, B, C, state0)
    raise ValueError(f"unknown SSD mode {mode!r}: choose chunked or sequential")
